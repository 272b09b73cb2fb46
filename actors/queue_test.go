package actors

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/messages"
)

func TestQueueTimeoutNeverExecutes(t *testing.T) {
	for _, mode := range []Affinity{Hint, StrictQueue} {
		t.Run(mode.String(), func(t *testing.T) {
			w := &world{}
			rt := onePool(t, w, 1, mode, func(pc *PoolConfig) { pc.QueueTimeout = 20 * time.Millisecond })
			s := rt.Session("s")
			_, release, done := occupy(t, s)
			_, err := call(t, s, op{ID: 5})
			require.ErrorIs(t, err, ErrQueueTimeout)
			waitQueued(t, rt, "p", 0)
			release()
			require.NoError(t, <-done)
			// Any later call runs after whatever was queued before it: once it
			// has run, the timed-out call would have run too.
			_, err = call(t, s, op{ID: 6})
			require.NoError(t, err)
			assert.False(t, w.ran(5), "a timed-out call never runs")
			assert.Equal(t, uint64(1), rt.Stats().Pools["p"].QueueTimeouts)
		})
	}
}

func TestContextDeadlineWinsOverQueueTimeout(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 1, StrictQueue) // queue timeout 10 s
	s := rt.Session("s")
	_, release, done := occupy(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := s.Call(ctx, op{ID: 5})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	release()
	require.NoError(t, <-done)
	_, err = call(t, s, op{ID: 6})
	require.NoError(t, err)
	assert.False(t, w.ran(5))
}

func TestCancelledWaiterNeverExecutes(t *testing.T) {
	for _, mode := range []Affinity{Hint, StrictQueue} {
		t.Run(mode.String(), func(t *testing.T) {
			w := &world{}
			rt := onePool(t, w, 1, mode)
			s := rt.Session("s")
			_, release, done := occupy(t, s)
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				_, err := s.Call(ctx, op{ID: 5})
				errc <- err
			}()
			waitQueued(t, rt, "p", 1)
			cancel()
			require.ErrorIs(t, <-errc, context.Canceled)
			waitQueued(t, rt, "p", 0)
			release()
			require.NoError(t, <-done)
			_, err := call(t, s, op{ID: 6})
			require.NoError(t, err)
			assert.False(t, w.ran(5), "a cancelled call never runs")
			assert.Equal(t, uint64(1), rt.Stats().Pools["p"].Cancelled)
		})
	}
}

func TestCancelledBeforeDispatchNeverExecutes(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 1, StrictQueue)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := rt.Session("s").Call(ctx, op{ID: 1})
	require.ErrorIs(t, err, context.Canceled)
	_, err = call(t, rt.Session("s"), op{ID: 2})
	require.NoError(t, err)
	assert.False(t, w.ran(1))
}

func TestSaturation(t *testing.T) {
	w := &world{}
	var events eventLog
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 1, Affinity: StrictQueue, QueueSize: 2, NewWorker: w.factory}}, OnEvent: events.add})
	s := rt.Session("s")
	_, release, done := occupy(t, s)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := call(t, s, op{ID: 10 + i})
			assert.NoError(t, err)
		}(i)
	}
	waitQueued(t, rt, "p", 2)
	_, err := call(t, s, op{ID: 20})
	require.ErrorIs(t, err, ErrPoolSaturated)
	_, err = call(t, rt.Session("other"), op{ID: 21}, WithAffinity(Hint))
	require.ErrorIs(t, err, ErrPoolSaturated, "the queue bound is per pool")
	release()
	require.NoError(t, <-done)
	wg.Wait()
	assert.False(t, w.ran(20) || w.ran(21))
	assert.Equal(t, uint64(2), rt.Stats().Pools["p"].Saturated)
	assert.Len(t, events.of("pool_saturated"), 2)
}

func collect(t *testing.T, st *Stream) ([]any, error) {
	t.Helper()
	var items []any
	for {
		v, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return items, nil
			}
			return items, err
		}
		items = append(items, v)
	}
}

func TestStreaming(t *testing.T) {
	ctx := context.Background()
	for _, mode := range allModes {
		t.Run(mode.String()+" free", func(t *testing.T) {
			w := &world{}
			rt := onePool(t, w, 2, mode)
			s := rt.Session("s")
			first, err := call(t, s, op{})
			require.NoError(t, err)
			st, err := s.Stream(ctx, op{Items: 5})
			require.NoError(t, err)
			id, inc := st.Worker()
			assert.Equal(t, first.Worker, id, "same affinity selection as calls")
			assert.Equal(t, first.Incarnation, inc)
			items, err := collect(t, st)
			require.NoError(t, err)
			assert.Equal(t, []any{0, 1, 2, 3, 4}, items)
		})
	}
	for _, mode := range []Affinity{StrictQueue, StrictFailFast} {
		t.Run(mode.String()+" busy never waits", func(t *testing.T) {
			w := &world{}
			rt := onePool(t, w, 2, mode)
			s := rt.Session("s")
			_, release, done := occupy(t, s)
			_, err := s.Stream(ctx, op{Items: 1})
			require.ErrorIs(t, err, ErrWorkerBusy)
			release()
			require.NoError(t, <-done)
		})
	}
	t.Run("hint busy detours, none free fails", func(t *testing.T) {
		w := &world{}
		rt := onePool(t, w, 2, Hint)
		s := rt.Session("s")
		busy, release, done := occupy(t, s)
		st, err := s.Stream(ctx, op{Items: 2})
		require.NoError(t, err)
		id, _ := st.Worker()
		assert.NotEqual(t, busy, id)
		_, err = collect(t, st)
		require.NoError(t, err)
		_, release2, done2 := occupy(t, rt.Session("other"))
		_, err = s.Stream(ctx, op{Items: 1})
		require.ErrorIs(t, err, ErrNoWorkersAvailable)
		release()
		release2()
		require.NoError(t, <-done)
		require.NoError(t, <-done2)
	})
	t.Run("strict unbound with nothing free", func(t *testing.T) {
		w := &world{}
		rt := onePool(t, w, 1, StrictQueue)
		_, release, done := occupy(t, rt.Session("a"))
		_, err := rt.Session("b").Stream(ctx, op{Items: 1})
		require.ErrorIs(t, err, ErrNoWorkersAvailable)
		release()
		require.NoError(t, <-done)
	})
	t.Run("close stops the stream and frees the worker", func(t *testing.T) {
		w := &world{}
		rt := onePool(t, w, 1, StrictFailFast)
		s := rt.Session("s")
		st, err := s.Stream(ctx, op{Items: 1000})
		require.NoError(t, err)
		v, err := st.Recv()
		require.NoError(t, err)
		assert.Equal(t, 0, v)
		st.Close()
		require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Inflight == 0 }, 10*time.Second, time.Millisecond)
		_, err = call(t, s, op{})
		require.NoError(t, err, "worker is free again")
		_, err = collect(t, st)
		require.ErrorIs(t, err, context.Canceled)
	})
	t.Run("cancelling the context stops it", func(t *testing.T) {
		w := &world{}
		rt := onePool(t, w, 1, StrictQueue)
		s := rt.Session("s")
		cctx, cancel := context.WithCancel(ctx)
		st, err := s.Stream(cctx, op{Items: 1, Block: make(chan struct{})})
		require.NoError(t, err)
		_, err = st.Recv()
		require.NoError(t, err)
		cancel()
		_, err = collect(t, st)
		require.ErrorIs(t, err, context.Canceled)
		require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Inflight == 0 }, 10*time.Second, time.Millisecond)
	})
	t.Run("panic mid-stream", func(t *testing.T) {
		w := &world{}
		rt := onePool(t, w, 1, StrictQueue)
		st, err := rt.Session("s").Stream(ctx, op{Items: 2, Panic: true})
		require.NoError(t, err)
		items, err := collect(t, st)
		require.ErrorIs(t, err, ErrWorkerFailed)
		assert.Len(t, items, 2)
	})
	t.Run("worker without streaming support", func(t *testing.T) {
		rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 1, NewWorker: func(context.Context, WorkerInfo) (Worker, error) {
			return WorkerFunc(func(context.Context, messages.Call) (any, error) { return nil, nil }), nil
		}}}})
		st, err := rt.Session("s").Stream(ctx, nil)
		require.NoError(t, err)
		_, err = st.Recv()
		require.ErrorIs(t, err, ErrStreamingUnsupported)
	})
	t.Run("on a ref", func(t *testing.T) {
		w := &world{}
		rt := onePool(t, w, 2, Hint)
		r, err := call(t, rt.Session("s"), op{Ref: "k"})
		require.NoError(t, err)
		st, err := rt.StreamRef(ctx, r.Ref, op{Items: 3})
		require.NoError(t, err)
		id, _ := st.Worker()
		assert.Equal(t, r.Worker, id)
		items, err := collect(t, st)
		require.NoError(t, err)
		assert.Len(t, items, 3)
	})
}

func TestCapacityAboveOne(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 1, StrictFailFast, func(pc *PoolConfig) { pc.Capacity = 3 })
	s := rt.Session("s")
	var releases []func()
	var dones []<-chan error
	for i := 0; i < 3; i++ {
		_, release, done := occupy(t, s)
		releases = append(releases, release)
		dones = append(dones, done)
	}
	_, err := call(t, s, op{ID: 9})
	require.ErrorIs(t, err, ErrWorkerBusy, "capacity reached")
	for i, release := range releases {
		release()
		require.NoError(t, <-dones[i])
	}
	_, err = call(t, s, op{ID: 10, Panic: true})
	require.ErrorIs(t, err, ErrWorkerFailed)
	require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Restarts == 1 }, 10*time.Second, time.Millisecond)
}

func TestCapacityAboveOneTaintedMidCall(t *testing.T) {
	w := &world{}
	slow := supervisorPolicy(time.Hour)
	rt := onePool(t, w, 1, Hint, func(pc *PoolConfig) { pc.Capacity = 2; pc.Restart = &slow })
	s := rt.Session("s")
	_, release, done := occupy(t, s)
	_, err := call(t, s, op{Panic: true})
	require.ErrorIs(t, err, ErrWorkerFailed)
	release()
	err = <-done
	require.ErrorIs(t, err, ErrWorkerFailed, "its incarnation was tainted while it ran")
	assert.Contains(t, err.Error(), "tainted while the call ran")
}
