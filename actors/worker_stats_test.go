package actors

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/messages"
)

func TestStatsPerWorker(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 2, StrictQueue)
	for i := range 4 {
		_, err := call(t, rt.Session(string(rune('a'+i))), op{})
		require.NoError(t, err)
	}
	ps := rt.Stats().Pools["p"]
	require.Len(t, ps.Workers, 2)
	var calls uint64
	var bound int
	for i, ws := range ps.Workers {
		assert.Equal(t, i, ws.ID)
		assert.Equal(t, "ready", ws.State)
		assert.Equal(t, uint64(1), ws.Incarnation)
		assert.Empty(t, ws.LastTaint)
		calls += ws.Calls
		bound += ws.Bound
	}
	assert.Equal(t, uint64(4), calls)
	assert.Equal(t, 4, bound, "each session is bound to one worker")

	// A panic taints the worker; the snapshot says why, and shows the new
	// incarnation once it is back.
	r, err := call(t, rt.Session("a"), op{})
	require.NoError(t, err)
	_, err = call(t, rt.Session("a"), op{Panic: true})
	require.ErrorIs(t, err, ErrWorkerFailed)
	require.Eventually(t, func() bool {
		ws := rt.Stats().Pools["p"].Workers[r.Worker]
		return ws.State == "ready" && ws.Incarnation == 2
	}, 10*time.Second, time.Millisecond)
	ws := rt.Stats().Pools["p"].Workers[r.Worker]
	assert.True(t, strings.HasPrefix(ws.LastTaint, "panic: "), ws.LastTaint)
	assert.False(t, strings.HasPrefix(ws.LastTaint, "panic: panic"), "no doubled prefix: %s", ws.LastTaint)
	assert.Zero(t, ws.Bound, "the restarted incarnation holds no session")
}

func TestStatsWaitingAndInflight(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 1, StrictQueue)
	block, started := make(chan struct{}), make(chan int, 1)
	done := make(chan error, 2)
	go func() { _, err := call(t, rt.Session("a"), op{Block: block, Started: started}); done <- err }()
	<-started
	go func() { _, err := call(t, rt.Session("b"), op{}); done <- err }()
	require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Workers[0].Waiting == 1 }, 10*time.Second, time.Millisecond)
	ws := rt.Stats().Pools["p"].Workers[0]
	assert.GreaterOrEqual(t, ws.Inflight, 1)
	close(block)
	require.NoError(t, <-done)
	require.NoError(t, <-done)
}

// The waiting time of a call that queued behind another is in its
// CallExecuted event.
func TestCallExecutedWaited(t *testing.T) {
	var mu sync.Mutex
	waited := map[string]time.Duration{}
	w := &world{}
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 1, Affinity: StrictQueue, NewWorker: w.factory}},
		OnEvent: func(e messages.Event) {
			if ex, ok := e.(messages.CallExecuted); ok {
				mu.Lock()
				waited[ex.Session] = ex.Waited
				mu.Unlock()
			}
		}})
	block, started := make(chan struct{}), make(chan int, 1)
	done := make(chan error, 2)
	go func() {
		_, err := rt.Session("first").Call(context.Background(), op{Block: block, Started: started})
		done <- err
	}()
	<-started
	go func() { _, err := rt.Session("second").Call(context.Background(), op{}); done <- err }()
	require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Queued == 1 }, 10*time.Second, time.Millisecond)
	// Hold the queued call for a known time: it was made before it was
	// seen queued, and starts after the release.
	const hold = 5 * time.Millisecond
	<-time.After(hold)
	close(block)
	require.NoError(t, <-done)
	require.NoError(t, <-done)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(waited) == 2 }, 10*time.Second, time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	assert.Positive(t, waited["first"])
	assert.GreaterOrEqual(t, waited["second"], hold, "it waited at least while the first call was held")
	assert.Greater(t, waited["second"], waited["first"])
}

func TestStatsByModeAndTimings(t *testing.T) {
	w := &world{}
	// With an event subscriber every call is timed.
	rt := start(t, Config{RecordTimings: true, OnEvent: func(messages.Event) {}, Pools: []PoolConfig{{Name: "p", Size: 2, Affinity: Hint, NewWorker: w.factory}}})
	for i := range 3 {
		_, err := call(t, rt.Session("h"), op{})
		require.NoError(t, err, i)
	}
	_, err := call(t, rt.Session("s"), op{}, WithAffinity(StrictQueue))
	require.NoError(t, err)
	ps := rt.Stats().Pools["p"]
	assert.Equal(t, uint64(1), ps.DispatchedByMode[Hint][messages.OutcomeBound])
	assert.Equal(t, uint64(2), ps.DispatchedByMode[Hint][messages.OutcomeHit])
	assert.Equal(t, uint64(1), ps.DispatchedByMode[StrictQueue][messages.OutcomeBound])
	assert.Equal(t, uint64(2), ps.Dispatched[messages.OutcomeBound], "the totals add the modes up")

	for _, h := range []Histogram{ps.Exec, ps.Wait} {
		assert.Equal(t, uint64(4), h.Count)
		assert.Len(t, h.Counts, len(TimingBuckets)+1)
		var n uint64
		for _, c := range h.Counts {
			n += c
		}
		assert.Equal(t, h.Count, n, "every observation is in one bucket")
		assert.Positive(t, h.Sum)
	}

	plain := onePool(t, w, 1, Hint)
	_, err = call(t, plain.Session("x"), op{})
	require.NoError(t, err)
	assert.Zero(t, plain.Stats().Pools["p"].Exec.Count, "no timings unless asked for")
}

// Without an event subscriber, timings are a random sample of the calls.
func TestTimingsSampleCalls(t *testing.T) {
	w := &world{}
	rt := start(t, Config{RecordTimings: true, Pools: []PoolConfig{{Name: "p", Size: 2, Affinity: Hint, NewWorker: w.factory}}})
	const calls = 1600
	s := rt.Session("s")
	for range calls {
		_, err := call(t, s, op{})
		require.NoError(t, err)
	}
	ps := rt.Stats().Pools["p"]
	// Binomial(1600, 1/16): mean 100, standard deviation 9.7; the bounds
	// are 7 deviations away, so this cannot fail by chance in practice.
	assert.InDelta(t, calls/TimingSampleEvery, ps.Exec.Count, 68, "timed calls")
	assert.Equal(t, ps.Exec.Count, ps.Wait.Count, "a timed call has both timings")
	assert.Equal(t, uint64(calls), ps.Executed)
}
