package bench

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

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

// BenchmarkIdleSessions reports what one idle bound session costs in heap:
// each op starts a pool of 8 no-op workers, makes one call in each of
// 100,000 sessions from 8 goroutines, and measures the live heap against the
// runtime's own before the sessions existed, twice: right after the calls,
// while the session actors are live (B/live-session), and once every actor
// has been passivated (B/session), the state an idle session stays in. An
// op takes seconds, mostly waiting for passivation, so with the default
// -benchtime the benchmark runs it once per -count.
func BenchmarkIdleSessions(b *testing.B) {
	var live, idle float64
	for i := 0; i < b.N; i++ {
		l, d := idleSessionCost(b)
		live, idle = live+l, idle+d
	}
	b.ReportMetric(live/float64(b.N), "B/live-session")
	b.ReportMetric(idle/float64(b.N), "B/session")
}

// passivateAfter is short enough for the benchmark to wait for it, and long
// enough that no session passivates before the live heap is measured.
const passivateAfter = 2 * time.Second

func idleSessionCost(b *testing.B) (live, idle float64) {
	// Not newAffinity: its cleanup would keep every op's runtime reachable
	// until the benchmark ends.
	rt, err := actors.Start(actors.Config{SessionPassivateAfter: passivateAfter, Pools: []actors.PoolConfig{{
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
	live = (float64(liveHeap()) - float64(baseline)) / idleSessions
	if n := waitPassivated(rt, 10*passivateAfter); n > 0 {
		b.Fatalf("%d session actors still live %v after the calls", n, 10*passivateAfter)
	}
	idle = (float64(liveHeap()) - float64(baseline)) / idleSessions
	runtime.KeepAlive(rt) // the sessions are reachable through rt only
	return live, idle
}

// waitPassivated polls Stats (passivation has no event) until no session
// actor is live or the time is up, and returns how many still are.
func waitPassivated(rt *actors.Runtime, limit time.Duration) int {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(limit)
	for {
		n := rt.Stats().SessionActors
		if n == 0 {
			return 0
		}
		select {
		case <-tick.C:
		case <-deadline:
			return n
		}
	}
}
