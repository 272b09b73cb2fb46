package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/metrics"
)

// BenchmarkMetricsOverhead measures the metrics' whole cost on the hot
// path: the small parallel load (64 callers, hint sessions) against a
// runtime without metrics and one with Config.RecordTimings and its
// Prometheus collector registered and scraped ten times a second. The two
// runtimes take turns in rounds of 20,000 calls within one benchmark, so
// that background load on a shared machine hits both alike; it reports
// each side's time per call and their ratio (on/off).
func BenchmarkMetricsOverhead(b *testing.B) {
	l := loads[0]
	off, on := newMetricsRuntime(b, l, false), newMetricsRuntime(b, l, true)
	const round = 20_000
	var tOff, tOn time.Duration
	b.ResetTimer()
	for r, done := 0, 0; done < b.N; r, done = r+1, done+round {
		n := min(round, b.N-done)
		if r%2 == 0 { // alternate which side goes first
			tOff += off(n)
			tOn += on(n)
		} else {
			tOn += on(n)
			tOff += off(n)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(tOff.Nanoseconds())/float64(b.N), "off-ns/call")
	b.ReportMetric(float64(tOn.Nanoseconds())/float64(b.N), "on-ns/call")
	b.ReportMetric(float64(tOn)/float64(tOff), "on/off")
}

// newMetricsRuntime starts a runtime for BenchmarkMetricsOverhead and
// returns a function that makes n calls over l.callers goroutines and
// returns how long they took.
func newMetricsRuntime(b *testing.B, l load, withMetrics bool) func(n int) time.Duration {
	rt, err := actors.Start(actors.Config{RecordTimings: withMetrics, Pools: []actors.PoolConfig{{
		Name: "bench", Size: l.workers, Affinity: actors.Hint, QueueSize: 1 << 20,
		NewWorker: func(context.Context, actors.WorkerInfo) (actors.Worker, error) { return actors.WorkerFunc(noop), nil },
	}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rt.Shutdown(context.Background()) })
	if withMetrics {
		reg := prometheus.NewRegistry()
		if err := metrics.Register(reg, rt); err != nil {
			b.Fatal(err)
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { // a Prometheus server scraping, faster than any would
			defer close(done)
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					if _, err := reg.Gather(); err != nil {
						b.Error(err)
					}
				}
			}
		}()
		b.Cleanup(func() { close(stop); <-done })
	}
	ss := make([]*actors.Session, l.sessions)
	ctx := context.Background()
	for i := range ss {
		ss[i] = rt.Session(sessionID(i))
		if _, err := ss[i].Call(ctx, i); err != nil {
			b.Fatal(err)
		}
	}
	return func(n int) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for c := range l.callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1); i <= int64(n); i = next.Add(1) {
					if _, err := ss[(int(i)*7919+c)%len(ss)].Call(ctx, i); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
}
