package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/messages"
	"github.com/affinity-go/affinity/supervisor"
)

var allModes = []Affinity{Hint, StrictQueue, StrictFailFast}

// Row "free": every mode runs on the bound worker, call after call.
func TestAffinityFreePreferredRunsThere(t *testing.T) {
	for _, mode := range allModes {
		t.Run(mode.String(), func(t *testing.T) {
			w := &world{}
			rt := onePool(t, w, 3, mode)
			s := rt.Session("s")
			first, err := call(t, s, op{ID: 1})
			require.NoError(t, err)
			for i := 0; i < 20; i++ {
				r, err := call(t, s, op{ID: 2 + i})
				require.NoError(t, err)
				assert.Equal(t, first.Worker, r.Worker)
				assert.Equal(t, i+1, r.Hits, "state kept across calls")
			}
			st := rt.Stats().Pools["p"]
			assert.Equal(t, uint64(1), st.Dispatched[messages.OutcomeBound])
			assert.Equal(t, uint64(20), st.Dispatched[messages.OutcomeHit])
		})
	}
}

// Row "not bound yet": first bindings are balanced across workers.
func TestAffinityFirstBindingBalanced(t *testing.T) {
	for _, mode := range allModes {
		t.Run(mode.String(), func(t *testing.T) {
			w := &world{}
			rt := onePool(t, w, 4, mode)
			perWorker := map[int]int{}
			for i := 0; i < 40; i++ {
				r, err := call(t, rt.Session(fmt.Sprint("s", i)), op{ID: i})
				require.NoError(t, err)
				perWorker[r.Worker]++
			}
			assert.Equal(t, map[int]int{0: 10, 1: 10, 2: 10, 3: 10}, perWorker)
		})
	}
}

// Row "busy", per mode.
func TestAffinityBusyPreferred(t *testing.T) {
	t.Run("hint detours without moving the binding", func(t *testing.T) {
		w := &world{}
		rt := onePool(t, w, 2, Hint)
		s := rt.Session("s")
		first, err := call(t, s, op{ID: 1})
		require.NoError(t, err)
		busy, release, done := occupy(t, s)
		require.Equal(t, first.Worker, busy)

		r, err := call(t, s, op{ID: 2})
		require.NoError(t, err)
		assert.NotEqual(t, busy, r.Worker, "ran on the other, free worker")
		assert.Zero(t, r.Hits, "the detour worker has no state for the session")
		bound, _, ok := s.Binding("p")
		require.True(t, ok)
		assert.Equal(t, busy, bound, "binding unchanged by a detour")
		assert.Equal(t, uint64(1), rt.Stats().Pools["p"].Dispatched[messages.OutcomeDetour])

		release()
		require.NoError(t, <-done)
		r, err = call(t, s, op{ID: 3})
		require.NoError(t, err)
		assert.Equal(t, busy, r.Worker, "back on the bound worker once it is free")
	})

	t.Run("hint waits for the first worker to free up", func(t *testing.T) {
		w := &world{}
		rt := onePool(t, w, 2, Hint)
		s := rt.Session("s")
		_, release0, done0 := occupy(t, s)
		_, release1, done1 := occupy(t, rt.Session("other"))
		errc := make(chan error, 1)
		var r result
		go func() {
			var err error
			r, err = call(t, s, op{ID: 7})
			errc <- err
		}()
		waitQueued(t, rt, "p", 1)
		assert.False(t, w.ran(7))
		release1() // the other session's worker frees up first
		require.NoError(t, <-errc)
		require.NoError(t, <-done1)
		other, _, _ := rt.Session("other").Binding("p")
		assert.Equal(t, other, r.Worker, "ran on the first worker to free up")
		release0()
		require.NoError(t, <-done0)
	})

	t.Run("hint: a freed worker prefers waiting calls bound to it", func(t *testing.T) {
		w := &world{}
		rt := onePool(t, w, 2, Hint)
		a, b := rt.Session("a"), rt.Session("b")
		wa, releaseA, doneA := occupy(t, a)
		wb, releaseB, doneB := occupy(t, b)
		require.NotEqual(t, wa, wb)
		gotA := make(chan result, 1)
		go func() {
			r, err := call(t, a, op{ID: 100})
			assert.NoError(t, err)
			gotA <- r
		}()
		waitQueued(t, rt, "p", 1) // a's call waits longest
		holdB, startedB := make(chan struct{}), make(chan int, 1)
		defer close(holdB)
		go func() { _, _ = call(t, b, op{ID: 101, Block: holdB, Started: startedB}) }()
		waitQueued(t, rt, "p", 2)
		releaseB()
		require.NoError(t, <-doneB)
		select {
		case id := <-startedB:
			assert.Equal(t, wb, id, "b's worker took b's call")
		case r := <-gotA:
			t.Fatalf("a's call ran first (on worker %d) though b's worker freed up", r.Worker)
		case <-time.After(10 * time.Second):
			t.Fatal("b's call never started")
		}
		releaseA()
		require.NoError(t, <-doneA)
		assert.Equal(t, wa, (<-gotA).Worker)
		assert.Zero(t, rt.Stats().Pools["p"].Dispatched[messages.OutcomeDetour])
	})

	t.Run("strict_queue waits FIFO for the bound worker", func(t *testing.T) {
		w := &world{}
		rt := onePool(t, w, 2, StrictQueue)
		s := rt.Session("s")
		busy, release, done := occupy(t, s)
		results := make([]chan result, 3)
		for i := range results {
			results[i] = make(chan result, 1)
			go func(i int) {
				r, err := call(t, s, op{ID: 10 + i})
				assert.NoError(t, err)
				results[i] <- r
			}(i)
			waitQueued(t, rt, "p", i+1) // enqueue in a known order
		}
		assert.Empty(t, filter(w.executions(), func(e execution) bool { return e.ID >= 10 }), "nothing ran while the worker was busy")
		release()
		require.NoError(t, <-done)
		for i := range results {
			r := <-results[i]
			assert.Equal(t, busy, r.Worker)
		}
		var order []int
		for _, e := range filter(w.executions(), func(e execution) bool { return e.ID >= 10 }) {
			order = append(order, e.ID)
		}
		assert.Equal(t, []int{10, 11, 12}, order, "FIFO")
	})

	t.Run("strict_fail_fast fails at once", func(t *testing.T) {
		w := &world{}
		rt := onePool(t, w, 2, StrictFailFast)
		s := rt.Session("s")
		_, release, done := occupy(t, s)
		_, err := call(t, s, op{ID: 2})
		require.ErrorIs(t, err, ErrWorkerBusy)
		assert.False(t, w.ran(2))
		assert.Contains(t, err.Error(), "session s")
		assert.Contains(t, err.Error(), "worker ", "names the busy worker")
		release()
		require.NoError(t, <-done)
		_, err = call(t, s, op{ID: 3})
		require.NoError(t, err)
	})
}

func filter(es []execution, keep func(execution) bool) []execution {
	var out []execution
	for _, e := range es {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// taintAndHold makes the session's bound worker panic with restarts held off
// for an hour, so the worker stays tainted for the rest of the test.
func taintAndHold(t *testing.T, mode Affinity) (*world, *Runtime, *Session, result) {
	w := &world{}
	slow := supervisorPolicy(time.Hour)
	rt := onePool(t, w, 2, mode, func(pc *PoolConfig) { pc.Restart = &slow })
	s := rt.Session("s")
	first, err := call(t, s, op{ID: 1})
	require.NoError(t, err)
	_, err = call(t, s, op{ID: 2, Panic: true})
	require.ErrorIs(t, err, ErrWorkerFailed, "the running call gets an error, not silence")
	require.Equal(t, 1, rt.Stats().Pools["p"].Ready)
	return w, rt, s, first
}

// Row "tainted, restarting, or gone".
func TestAffinityTaintedPreferred(t *testing.T) {
	t.Run("hint rebinds", func(t *testing.T) {
		_, rt, s, first := taintAndHold(t, Hint)
		r, err := call(t, s, op{ID: 3})
		require.NoError(t, err)
		assert.NotEqual(t, first.Worker, r.Worker)
		bound, _, _ := s.Binding("p")
		assert.Equal(t, r.Worker, bound, "rebound to the new worker")
		assert.Equal(t, uint64(1), rt.Stats().Pools["p"].Dispatched[messages.OutcomeRebind])
		assert.Equal(t, uint64(1), rt.Stats().Pools["p"].Rebinds)
		assert.Equal(t, uint64(2), rt.Stats().Pools["p"].Bindings)
	})
	for _, mode := range []Affinity{StrictQueue, StrictFailFast} {
		t.Run(mode.String()+" strict + taint", func(t *testing.T) {
			w, _, s, _ := taintAndHold(t, mode)
			_, err := call(t, s, op{ID: 3})
			require.ErrorIs(t, err, ErrSessionWorkerUnavailable)
			assert.False(t, w.ran(3))
		})
	}
}

// restartBound crashes the session's bound worker and waits for its next
// incarnation to be up.
func restartBound(t *testing.T, mode Affinity) (*world, *Runtime, *Session, result) {
	w := &world{}
	rt := onePool(t, w, 2, mode)
	s := rt.Session("s")
	first, err := call(t, s, op{ID: 1})
	require.NoError(t, err)
	_, err = call(t, s, op{ID: 2, Panic: true})
	require.ErrorIs(t, err, ErrWorkerFailed)
	require.Eventually(t, func() bool {
		st := rt.Stats().Pools["p"]
		return st.Restarts == 1 && st.Ready == 2
	}, 10*time.Second, time.Millisecond)
	return w, rt, s, first
}

func TestAffinityRestartedPreferred(t *testing.T) {
	for _, mode := range []Affinity{StrictQueue, StrictFailFast} {
		t.Run(mode.String()+" strict + restart", func(t *testing.T) {
			w, rt, s, first := restartBound(t, mode)
			_, err := call(t, s, op{ID: 3})
			require.ErrorIs(t, err, ErrSessionWorkerUnavailable, "new incarnation lost the state: never run there silently")
			assert.False(t, w.ran(3))

			// The documented way out: one hint call rebinds, strict works again.
			r, err := call(t, s, op{ID: 4}, WithAffinity(Hint))
			require.NoError(t, err)
			assert.NotEqual(t, first.Incarnation, r.Incarnation)
			_, err = call(t, s, op{ID: 5})
			require.NoError(t, err)
			_ = rt
		})
	}
	t.Run("hint rebinds to a fresh incarnation", func(t *testing.T) {
		_, _, s, first := restartBound(t, Hint)
		r, err := call(t, s, op{ID: 3})
		require.NoError(t, err)
		assert.NotEqual(t, first.Incarnation, r.Incarnation)
		assert.Zero(t, r.Hits, "state was lost with the old incarnation")
	})
}

// A strict call waiting for a worker that gets tainted fails at once.
func TestStrictQueueWaiterFailsWhenWorkerTainted(t *testing.T) {
	w := &world{}
	slow := supervisorPolicy(time.Hour)
	rt := onePool(t, w, 2, StrictQueue, func(pc *PoolConfig) { pc.Restart = &slow })
	s := rt.Session("s")
	block, started := make(chan struct{}), make(chan int, 1)
	panicErr := make(chan error, 1)
	go func() {
		_, err := call(t, s, op{ID: 1, Block: block, Started: started, Panic: true})
		panicErr <- err
	}()
	<-started
	waiter := make(chan error, 1)
	go func() {
		_, err := call(t, s, op{ID: 2})
		waiter <- err
	}()
	waitQueued(t, rt, "p", 1)
	close(block)
	require.ErrorIs(t, <-panicErr, ErrWorkerFailed)
	require.ErrorIs(t, <-waiter, ErrSessionWorkerUnavailable)
	assert.False(t, w.ran(2))
}

func TestPerCallOverrides(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 2, StrictQueue)
	s := rt.Session("s")
	_, release, done := occupy(t, s)
	_, err := call(t, s, op{ID: 1}, WithAffinity(StrictFailFast))
	require.ErrorIs(t, err, ErrWorkerBusy)
	r, err := call(t, s, op{ID: 2}, WithAffinity(Hint))
	require.NoError(t, err, "hint override detours")
	bound, _, _ := s.Binding("p")
	assert.NotEqual(t, bound, r.Worker)
	release()
	require.NoError(t, <-done)

	_, err = call(t, s, op{ID: 3}, WithAffinity(Affinity(42)))
	require.ErrorIs(t, err, ErrInvalidArgument)
	require.ErrorIs(t, err, ErrInvalidAffinity)
	_, err = call(t, s, op{ID: 3}, WithPool("nope"))
	require.ErrorIs(t, err, ErrPoolNotFound)
}

func TestMultiPoolBindingPerSessionAndPool(t *testing.T) {
	w := &world{}
	rt := start(t, Config{Pools: []PoolConfig{
		{Name: "hint_pool", Size: 3, Affinity: Hint, NewWorker: w.factory},
		{Name: "strict_pool", Size: 3, Affinity: StrictQueue, NewWorker: w.factory},
	}})
	// Skew strict_pool so the two pools bind session s to different ids.
	for i := 0; i < 2; i++ {
		_, err := call(t, rt.Session(fmt.Sprint("pre", i)), op{}, WithPool("strict_pool"))
		require.NoError(t, err)
	}
	s := rt.Session("s")
	a, err := call(t, s, op{ID: 1}) // default pool = first
	require.NoError(t, err)
	b, err := call(t, s, op{ID: 2}, WithPool("strict_pool"))
	require.NoError(t, err)
	ha, _, _ := s.Binding("hint_pool")
	hb, _, _ := s.Binding("strict_pool")
	assert.Equal(t, a.Worker, ha)
	assert.Equal(t, b.Worker, hb)
	assert.NotEqual(t, ha, hb)

	// strict_pool's default (strict_queue) applies there; hint_pool's there.
	_, release, done := occupy(t, s, WithPool("strict_pool"))
	_, err = call(t, s, op{ID: 3}, WithPool("strict_pool"), WithAffinity(StrictFailFast))
	require.ErrorIs(t, err, ErrWorkerBusy)
	_, err = call(t, s, op{ID: 4}) // hint_pool is untouched by strict_pool's busy worker
	require.NoError(t, err)
	release()
	require.NoError(t, <-done)
}

func TestConcurrentFirstCallsBindOnce(t *testing.T) {
	for _, mode := range allModes {
		t.Run(mode.String(), func(t *testing.T) {
			w := &world{}
			rt := onePool(t, w, 4, mode)
			for round := 0; round < 20; round++ {
				s := rt.Session(fmt.Sprint("s", round))
				var wg sync.WaitGroup
				start := make(chan struct{})
				for i := 0; i < 8; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						_, _ = s.Call(context.Background(), op{})
					}()
				}
				close(start)
				wg.Wait()
				bound, _, ok := s.Binding("p")
				require.True(t, ok)
				// Every other worker holds no binding of this session: the
				// bound-session counts add up to one per session.
				_ = bound
			}
			total := 0
			rt.pools[0].mu.Lock()
			for _, wk := range rt.pools[0].workers {
				total += wk.bound
			}
			rt.pools[0].mu.Unlock()
			assert.Equal(t, 20, total, "each session bound exactly once")
		})
	}
}

func TestStrictConcurrentFirstCallsRunOnOneWorker(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 4, StrictQueue)
	s := rt.Session("s")
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			_, err := call(t, s, op{ID: i})
			assert.NoError(t, err)
		}(i)
	}
	close(start)
	wg.Wait()
	workers := map[int]bool{}
	for _, e := range w.executions() {
		workers[e.Worker] = true
	}
	assert.Len(t, workers, 1, "strict calls of one session all ran on its one worker")
}

func TestPerSessionOrder(t *testing.T) {
	for _, mode := range allModes {
		t.Run(mode.String(), func(t *testing.T) {
			w := &world{}
			rt := onePool(t, w, 2, mode)
			s := rt.Session("s")
			for i := 0; i < 50; i++ {
				_, err := call(t, s, op{ID: i})
				require.NoError(t, err)
			}
			for i, e := range w.executions() {
				require.Equal(t, i, e.ID)
			}
		})
	}
}

func TestRefs(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 3, Hint)
	s := rt.Session("s")
	r, err := call(t, s, op{ID: 1, Ref: "model"})
	require.NoError(t, err)
	ref := r.Ref
	require.True(t, ref.Valid())
	assert.Equal(t, messages.Ref{Session: "s", Pool: "p", Worker: r.Worker, Incarnation: r.Incarnation, Key: "model"}, ref)

	ctx := context.Background()
	for i := 0; i < 10; i++ {
		v, err := rt.CallRef(ctx, ref, op{ID: 10 + i})
		require.NoError(t, err)
		assert.Equal(t, r.Worker, v.(result).Worker)
	}
	assert.True(t, filter(w.executions(), func(e execution) bool { return e.ID == 10 })[0].Ref)

	t.Run("busy ref waits under hint, never moves", func(t *testing.T) {
		_, release, done := occupy(t, s)
		got := make(chan result, 1)
		go func() {
			v, err := rt.CallRef(ctx, ref, op{ID: 30})
			assert.NoError(t, err)
			got <- v.(result)
		}()
		waitQueued(t, rt, "p", 1)
		_, err := rt.CallRef(ctx, ref, op{ID: 31}, WithAffinity(StrictFailFast))
		require.ErrorIs(t, err, ErrWorkerBusy)
		release()
		require.NoError(t, <-done)
		assert.Equal(t, ref.Worker, (<-got).Worker)
	})

	t.Run("ref keeps its pool; a conflicting pool is refused", func(t *testing.T) {
		_, err := rt.CallRef(ctx, ref, op{}, WithPool("other"))
		require.ErrorIs(t, err, ErrInvalidArgument)
		_, err = rt.CallRef(ctx, messages.Ref{}, op{})
		require.ErrorIs(t, err, ErrInvalidArgument)
	})

	t.Run("lost after restart", func(t *testing.T) {
		_, err := rt.CallRef(ctx, ref, op{ID: 40, Panic: true})
		require.ErrorIs(t, err, ErrWorkerFailed)
		_, err = rt.CallRef(ctx, ref, op{ID: 41})
		require.ErrorIs(t, err, ErrRefLost, "while tainted")
		require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Ready == 3 }, 10*time.Second, time.Millisecond)
		_, err = rt.CallRef(ctx, ref, op{ID: 42})
		require.ErrorIs(t, err, ErrRefLost, "after restart: new incarnation")
		assert.False(t, w.ran(41) || w.ran(42))
	})
}

func TestRefLostForRemovedWorker(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 2, StrictQueue)
	var ref messages.Ref
	for i := 0; ; i++ {
		r, err := call(t, rt.Session(fmt.Sprint("s", i)), op{Ref: "x"})
		require.NoError(t, err)
		if r.Worker == 1 {
			ref = r.Ref
			break
		}
	}
	require.NoError(t, rt.Resize(context.Background(), "p", 1))
	_, err := rt.CallRef(context.Background(), ref, op{})
	require.ErrorIs(t, err, ErrRefLost)
}

func TestFatalErrorTaints(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 2, StrictQueue)
	s := rt.Session("s")
	_, err := call(t, s, op{ID: 1})
	require.NoError(t, err)
	_, err = call(t, s, op{ID: 2, Fatal: true})
	require.ErrorIs(t, err, ErrWorkerFailed)
	assert.True(t, IsFatal(err), "and the worker's own error")
	_, err = call(t, s, op{ID: 3})
	require.ErrorIs(t, err, ErrSessionWorkerUnavailable)
	require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Restarts == 1 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, uint64(1), rt.Stats().Pools["p"].Tainted[messages.TaintFatalError])
}

// A taint caused by ErrWorkerExited, from a call or a health check, is
// reported as exited.
func TestExitedWorkerTaintReason(t *testing.T) {
	w := &world{}
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 2, Affinity: StrictQueue, NewWorker: w.factory}},
		HealthInterval: 5 * time.Millisecond, Restart: fastRestarts})
	s := rt.Session("s")
	_, err := call(t, s, op{Exited: true})
	require.ErrorIs(t, err, ErrWorkerFailed)
	require.ErrorIs(t, err, ErrWorkerExited)
	require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Tainted[messages.TaintExited] == 1 }, 10*time.Second, time.Millisecond)
	assert.Zero(t, rt.Stats().Pools["p"].Tainted[messages.TaintFatalError])

	r, err := call(t, rt.Session("other"), op{})
	require.NoError(t, err)
	w.unhealthy.Store(r.Worker, "exited")
	require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Tainted[messages.TaintExited] >= 2 }, 10*time.Second, time.Millisecond)
	w.unhealthy.Delete(r.Worker)
	assert.Zero(t, rt.Stats().Pools["p"].Tainted[messages.TaintHealthCheck])
}

func TestRestartBudgetExhaustedRunsDegraded(t *testing.T) {
	w := &world{}
	budget := supervisor.Policy{MaxRestarts: 1, Window: time.Hour, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
	var events eventLog
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 2, Affinity: Hint, NewWorker: w.factory, Restart: &budget}}, OnEvent: events.add})
	s := rt.Session("s")
	r, err := call(t, s, op{})
	require.NoError(t, err)
	for i := 0; i < 2; i++ {
		require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Ready == 2 }, 10*time.Second, time.Millisecond)
		ref := messages.Ref{Session: "s", Pool: "p", Worker: r.Worker, Incarnation: currentIncarnation(rt, r.Worker), Key: "k"}
		_, err = rt.CallRef(context.Background(), ref, op{Panic: true})
		require.ErrorIs(t, err, ErrWorkerFailed)
	}
	require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Failed == 1 }, 10*time.Second, time.Millisecond)
	st := rt.Stats().Pools["p"]
	assert.Equal(t, 1, st.Size)
	assert.Equal(t, 1, st.Ready)
	assert.Len(t, events.of("worker_failed"), 1)
	// Hint still works on the surviving worker.
	r2, err := call(t, s, op{})
	require.NoError(t, err)
	assert.NotEqual(t, r.Worker, r2.Worker)
}

func currentIncarnation(rt *Runtime, id int) uint64 {
	p := rt.pools[0]
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.workers[id].incarnation
}

// eventLog collects events for assertions.
type eventLog struct {
	mu     sync.Mutex
	events []messages.Event
}

func (l *eventLog) add(ev messages.Event) {
	l.mu.Lock()
	l.events = append(l.events, ev)
	l.mu.Unlock()
}

func (l *eventLog) of(kind string) []messages.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []messages.Event
	for _, ev := range l.events {
		if ev.Kind() == kind {
			out = append(out, ev)
		}
	}
	return out
}

var _ = errors.Is

// Row "not bound yet" when no worker is free.
func TestAffinityUnboundNoneFree(t *testing.T) {
	t.Run("hint waits and binds where it runs", func(t *testing.T) {
		w := &world{}
		rt := onePool(t, w, 2, Hint)
		_, release0, done0 := occupy(t, rt.Session("x"))
		w1, release1, done1 := occupy(t, rt.Session("y"))
		s := rt.Session("new")
		got := make(chan result, 1)
		go func() {
			r, err := call(t, s, op{ID: 1})
			assert.NoError(t, err)
			got <- r
		}()
		waitQueued(t, rt, "p", 1)
		_, _, bound := s.Binding("p")
		assert.False(t, bound, "not bound while waiting")
		release1()
		require.NoError(t, <-done1)
		r := <-got
		assert.Equal(t, w1, r.Worker)
		b, _, ok := s.Binding("p")
		require.True(t, ok)
		assert.Equal(t, w1, b, "bound to the worker that ran it")
		release0()
		require.NoError(t, <-done0)
	})
	t.Run("strict_queue binds to the least-loaded worker and waits", func(t *testing.T) {
		w := &world{}
		rt := onePool(t, w, 2, StrictQueue)
		// Two sessions on worker 0, one on worker 1: worker 1 is least loaded.
		var on0, on1 []*Session
		for i := 0; len(on0) < 2 || len(on1) < 1; i++ {
			s := rt.Session(fmt.Sprint("pre", i))
			r, err := call(t, s, op{})
			require.NoError(t, err)
			if r.Worker == 0 {
				on0 = append(on0, s)
			} else {
				on1 = append(on1, s)
			}
		}
		require.Len(t, on1, 1, "balanced binding alternates")
		_, release0, done0 := occupy(t, on0[0])
		_, release1, done1 := occupy(t, on1[0])
		s := rt.Session("new")
		errc := make(chan error, 1)
		go func() {
			_, err := call(t, s, op{ID: 1})
			errc <- err
		}()
		waitQueued(t, rt, "p", 1)
		b, _, ok := s.Binding("p")
		require.True(t, ok)
		assert.Equal(t, 1, b)
		release0()
		require.NoError(t, <-done0)
		release1()
		require.NoError(t, <-done1)
		require.NoError(t, <-errc)
		assert.Equal(t, 1, filter(w.executions(), func(e execution) bool { return e.ID == 1 })[0].Worker)
	})
	t.Run("strict_fail_fast refuses without binding", func(t *testing.T) {
		w := &world{}
		rt := onePool(t, w, 1, StrictFailFast)
		_, release, done := occupy(t, rt.Session("x"))
		s := rt.Session("new")
		_, err := call(t, s, op{ID: 1})
		require.ErrorIs(t, err, ErrWorkerBusy)
		_, _, bound := s.Binding("p")
		assert.False(t, bound)
		release()
		require.NoError(t, <-done)
	})
}
