package bench

import (
	"math/bits"
	"sync"
	"time"
)

// Latency percentiles come from a log-linear histogram: 32 buckets per power
// of two, so a reported figure is within about 3% of the true one. Each
// caller fills its own histogram without locks; they are merged at the end.

const (
	subBuckets = 32
	histSize   = subBuckets + 59*subBuckets
	// sampleEvery: one call in this many is timed, so that reading the clock
	// adds almost nothing to the per-call time of any contender.
	sampleEvery = 16
)

type histogram struct {
	counts [histSize]uint64
	n      uint64
}

func bucket(ns uint64) int {
	if ns < subBuckets {
		return int(ns)
	}
	shift := bits.Len64(ns) - 6 // keeps the top 6 bits: 32..63
	return subBuckets + shift*subBuckets + int(ns>>shift) - subBuckets
}

// lowerBound is the smallest latency that falls in bucket i.
func lowerBound(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	shift := (i - subBuckets) / subBuckets
	return uint64(subBuckets+(i-subBuckets)%subBuckets) << shift
}

func (h *histogram) record(d time.Duration) {
	h.counts[bucket(uint64(max(d, 0)))]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the lower bound of the bucket holding quantile q.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen > rank {
			return time.Duration(lowerBound(i))
		}
	}
	return time.Duration(lowerBound(histSize - 1))
}

// latencies collects the callers' histograms of one benchmark run.
type latencies struct {
	mu  sync.Mutex
	all histogram
}

func (l *latencies) add(h *histogram) {
	l.mu.Lock()
	l.all.merge(h)
	l.mu.Unlock()
}
