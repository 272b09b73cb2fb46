package actors

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/messages"
)

// TestChaos runs many sessions, each owned by one goroutine making calls one
// after another in random modes and pools, with ref calls, streams, panics,
// fatal errors, cancels, session closes, recycling, health checks and
// resizes going on, and checks:
//   - every call returns (none is lost),
//   - a strict call that succeeds ran on its session's bound incarnation,
//     and a ref call on its ref's incarnation (none is misrouted),
//   - the executions the workers saw match the runtime's counters,
//   - after Shutdown the pools are empty, no goroutine is left (TestMain),
//     and the heap is back near where it started.
//
// It is short by default (1,000 sessions, 8 operations each); AFFINITY_SOAK=2m
// (any duration) makes it a soak of 2,000 sessions for that long.
func TestChaos(t *testing.T) {
	soak := time.Duration(0)
	if v := os.Getenv("AFFINITY_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "AFFINITY_SOAK")
		soak = d
	}
	sessions, opsPerSession := 1000, 8
	if soak > 0 {
		sessions = 2000
	}
	baseline := heapAlloc()

	w := &world{}
	rt, err := Start(Config{Pools: []PoolConfig{
		{Name: "a", Size: 4, Affinity: Hint, NewWorker: w.factory, QueueSize: 256, QueueTimeout: 50 * time.Millisecond},
		{Name: "b", Size: 3, Affinity: StrictQueue, NewWorker: w.factory, Capacity: 2, MaxCalls: 50},
	}, Restart: fastRestarts, HealthInterval: 2 * time.Millisecond,
		SessionIdleTTL: -1}) // expiry would reset bindings behind the owners' backs
	require.NoError(t, err)

	deadline := time.Now().Add(soak)
	var calls, misrouted atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < sessions; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(i)))
			s := rt.Session(fmt.Sprint("chaos-", i))
			var refs []messages.Ref
			for n := 0; n < opsPerSession || time.Now().Before(deadline); n++ {
				calls.Add(1)
				pool := []string{"a", "b"}[r.Intn(2)]
				mode := allModes[r.Intn(3)]
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+r.Intn(50))*time.Millisecond)
				var onCaller CallOption // none
				switch r.Intn(3) {
				case 0:
					// A context that cannot be cancelled: the call may run
					// on this goroutine (bounded by the queue timeout).
					ctx = context.WithoutCancel(ctx)
				case 1:
					onCaller = RunOnCaller() // the same, with a context that can end
				}
				o := op{ID: i*1_000_000 + n, Ref: "r", Panic: r.Intn(60) == 0, Fatal: r.Intn(80) == 0}
				switch k := r.Intn(30); {
				case k == 0:
					s.Close()
				case k == 1 && i == 0:
					_ = rt.Resize(ctx, "a", 1+r.Intn(5))
				case k == 2:
					if st, err := s.Stream(ctx, op{ID: o.ID, Items: 2}, WithPool(pool), WithAffinity(mode)); err == nil {
						_, _ = st.Recv()
						st.Close()
					}
				case k < 8 && len(refs) > 0:
					ref := refs[r.Intn(len(refs))]
					v, err := rt.CallRef(ctx, ref, o, WithAffinity(mode), onCaller)
					if err == nil && (v.(result).Worker != ref.Worker || v.(result).Incarnation != ref.Incarnation) {
						misrouted.Add(1)
						t.Errorf("ref call ran on %d/%d, ref is %d/%d", v.(result).Worker, v.(result).Incarnation, ref.Worker, ref.Incarnation)
					}
				default:
					worker, inc, bound := s.Binding(pool)
					v, err := s.Call(ctx, o, WithPool(pool), WithAffinity(mode), onCaller)
					if err != nil {
						break
					}
					res := v.(result)
					if mode != Hint && bound && (res.Worker != worker || res.Incarnation != inc) {
						misrouted.Add(1)
						t.Errorf("%s call of %s ran on %d/%d, bound to %d/%d", mode, s.ID(), res.Worker, res.Incarnation, worker, inc)
					}
					if res.Ref.Valid() && r.Intn(4) == 0 {
						refs = append(refs, res.Ref)
					}
				}
				cancel()
			}
		}(i)
	}
	wg.Wait()
	assert.Zero(t, misrouted.Load())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, rt.Shutdown(ctx))
	st := rt.Stats()
	var executed uint64
	for name, ps := range st.Pools {
		assert.Zero(t, ps.Queued, "pool %s", name)
		assert.Zero(t, ps.Inflight, "pool %s", name)
		executed += ps.Executed
	}
	assert.Equal(t, uint64(len(w.executions())), executed, "every execution counted once")
	t.Logf("%d calls over %d sessions; executed %d; restarts a=%d b=%d",
		calls.Load(), sessions, executed, st.Pools["a"].Restarts, st.Pools["b"].Restarts)

	// The runtime is no longer referenced: its memory (sessions, workers,
	// envelopes) must be collectable, so the heap returns near its start.
	require.Eventually(t, func() bool { return heapAlloc() < baseline+8<<20 }, 10*time.Second, 10*time.Millisecond,
		"heap stayed above baseline %d", baseline)
}

func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
