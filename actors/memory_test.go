package actors

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/messages"
)

// settledHeap returns the live heap after a full collection. Two cycles let
// objects freed by finalizers or sync.Pool victim caches go too.
func settledHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestIdleSessionMemory checks the target of 512 bytes per idle bound
// session, with 1,000,000 sessions: idle session actors passivate, and what
// stays is their records (bindings included) in the runtime's table. It
// also reports what a session costs while its actor is live. It allocates a
// few GB and takes a while, so it runs only with AFFINITY_MEMORY_TEST=1.
func TestIdleSessionMemory(t *testing.T) {
	if os.Getenv("AFFINITY_MEMORY_TEST") != "1" {
		t.Skip("set AFFINITY_MEMORY_TEST=1 to measure 1,000,000 idle sessions")
	}
	const sessions = 1_000_000
	live := sessionHeap(t, sessions, -1)
	t.Logf("live session actors (passivation off): %.1f B/session", live)
	idle := sessionHeap(t, sessions, 200*time.Millisecond)
	t.Logf("idle, passivated sessions: %.1f B/session", idle)
	require.LessOrEqual(t, idle, 512.0)
}

// sessionHeap binds n sessions with one call each and returns the live heap
// they cost per session, once passivated unless passivate < 0.
func sessionHeap(t *testing.T, n int, passivate time.Duration) float64 {
	const callers = 8
	noop := func(context.Context, WorkerInfo) (Worker, error) {
		return WorkerFunc(func(context.Context, messages.Call) (any, error) { return nil, nil }), nil
	}
	var baseline, after uint64
	// The runtime lives only in this function, so that after it returns
	// what the runtime held for the sessions must be garbage (Go maps never
	// shrink: a live runtime keeps its session tables at their peak size).
	func() {
		rt, err := Start(Config{Pools: []PoolConfig{{Name: "p", Size: 8, Affinity: Hint, NewWorker: noop}},
			SessionPassivateAfter: passivate})
		require.NoError(t, err)
		baseline = settledHeap()

		// Every session is created by a call and kept only by the runtime:
		// what the heap grows by is what the runtime spends on idle sessions.
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		for g := 0; g < callers; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				ctx := context.Background()
				for i := g; i < n; i += callers {
					if _, err := rt.Session("user-"+strconv.Itoa(i)).Call(ctx, nil); err != nil {
						errs <- err
						return
					}
				}
			}(g)
		}
		wg.Wait()
		close(errs)
		require.NoError(t, <-errs)
		if passivate > 0 {
			require.Eventually(t, func() bool { return rt.Stats().SessionActors == 0 }, 5*time.Minute, 100*time.Millisecond,
				"idle session actors passivate")
		} else {
			require.Equal(t, n, rt.Stats().SessionActors)
		}

		after = settledHeap()
		runtime.KeepAlive(rt)
		st := rt.Stats()
		require.Equal(t, n, st.Sessions)
		require.Equal(t, uint64(n), st.Pools["p"].Bindings, "every session bound once")
		for _, i := range []int{0, 1, n / 2, n - 1} {
			_, _, ok := rt.Session("user-" + strconv.Itoa(i)).Binding("p")
			require.True(t, ok, "session user-%d kept its binding", i)
		}

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.NoError(t, rt.Shutdown(ctx))
	}()
	released := settledHeap()
	t.Logf("heap: baseline %d B, with %d sessions %d B, after Shutdown %d B", baseline, n, after, released)
	slack := max((int64(after)-int64(baseline))/20, 4<<20) // 5% of the sessions' cost, at least 4 MB
	require.LessOrEqual(t, int64(released), int64(baseline)+slack, "sessions released after Shutdown")
	return float64(int64(after)-int64(baseline)) / float64(n)
}
