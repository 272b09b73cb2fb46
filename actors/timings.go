package actors

import (
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"
)

// TimingBuckets are the upper bounds of the timing histograms in PoolStats:
// from 10 µs (a call's own cost) to 30 s (a long wait in a queue).
var TimingBuckets = [...]time.Duration{
	10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond,
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second, 30 * time.Second,
}

// Histogram is a snapshot of durations observed by a pool
// (Config.RecordTimings): of every call when events are subscribed, else of
// a random sample of one call in TimingSampleEvery.
type Histogram struct {
	// Counts[i] is how many durations were <= TimingBuckets[i] and above the
	// bucket before; the last element counts those above every bound.
	Counts []uint64
	Count  uint64
	Sum    time.Duration
}

// histogram records durations with one atomic add per field: the writers
// are workers finishing calls, on every core. Its count is the sum of its
// buckets, so a snapshot is always consistent.
type histogram struct {
	counts [len(TimingBuckets) + 1]atomic.Uint64 // the last: above every bound
	sum    atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	i, _ := slices.BinarySearch(TimingBuckets[:], d) // first bound >= d; len: above all
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

func (h *histogram) snapshot() Histogram {
	s := Histogram{Counts: make([]uint64, len(h.counts)), Sum: time.Duration(h.sum.Load())}
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
		s.Count += s.Counts[i]
	}
	return s
}

// TimingSampleEvery: with Config.RecordTimings and no event subscriber,
// one call in this many (at random) is timed. A clock reading costs about
// 45 ns on today's machines, and a timed call takes three: timing every
// call would add a fifth to a call's cost.
const TimingSampleEvery = 16

// madeAt stamps a new call when it is to be timed: always when events
// are wanted (they carry durations), else a sample of calls for the
// timing histograms; the zero time otherwise.
func (rt *Runtime) madeAt() time.Time {
	if rt.wantEvents || (rt.cfg.RecordTimings && rand.Uint32()%TimingSampleEvery == 0) {
		return time.Now()
	}
	return time.Time{}
}

// poolTimings are a pool's histograms, when Config.RecordTimings is set.
type poolTimings struct {
	exec histogram // a call's run on its worker
	wait histogram // from the call being made to its start on a worker
}
