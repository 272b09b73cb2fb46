package bench

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/affinity-go/affinity/actors"
)

// idleSessions is how many sessions BenchmarkIdleSessions binds; the
// heavier 1,000,000-session check is actors.TestIdleSessionMemory.
const idleSessions = 100_000

// liveHeap returns the live heap after full collections (two, so that
// sync.Pool victim caches are emptied too).
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkIdleSessions reports what one idle bound session costs in heap
// (B/session): each op starts a pool of 8 no-op workers, makes one call in
// each of 100,000 sessions from 8 goroutines, and measures the live heap
// against the runtime's own before the sessions existed. The op's time is
// that of creating and binding the sessions.
func BenchmarkIdleSessions(b *testing.B) {
	var total float64
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		total += idleSessionCost(b)
	}
	b.ReportMetric(total/float64(b.N), "B/session")
}

func idleSessionCost(b *testing.B) float64 {
	// Not newAffinity: its cleanup would keep every op's runtime reachable
	// until the benchmark ends.
	rt, err := actors.Start(actors.Config{Pools: []actors.PoolConfig{{
		Name: "bench", Size: workers, Affinity: actors.Hint,
		NewWorker: func(context.Context, actors.WorkerInfo) (actors.Worker, error) { return actors.WorkerFunc(noop), nil },
	}}})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := rt.Shutdown(context.Background()); err != nil {
			b.Error(err)
		}
	}()
	baseline := liveHeap()
	b.StartTimer()
	var wg sync.WaitGroup
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			ctx := context.Background()
			for i := g; i < idleSessions; i += workers {
				if _, err := rt.Session("user-"+strconv.Itoa(i)).Call(ctx, nil); err != nil {
					b.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	b.StopTimer()
	after := liveHeap()
	runtime.KeepAlive(rt) // the sessions are reachable through rt only
	return (float64(after) - float64(baseline)) / idleSessions
}
