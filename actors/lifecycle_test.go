package actors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/affinity-go/affinity/messages"
)

func TestResizeUp(t *testing.T) {
	w := &world{}
	var events eventLog
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 2, NewWorker: w.factory}}, OnEvent: events.add})
	require.NoError(t, rt.Resize(context.Background(), "p", 4))
	st := rt.Stats().Pools["p"]
	assert.Equal(t, 4, st.Size)
	assert.Equal(t, 4, st.Ready)
	perWorker := map[int]int{}
	for i := 0; i < 8; i++ {
		r, err := call(t, rt.Session(fmt.Sprint("s", i)), op{})
		require.NoError(t, err)
		perWorker[r.Worker]++
	}
	assert.Equal(t, map[int]int{0: 2, 1: 2, 2: 2, 3: 2}, perWorker, "new workers take new sessions")
	require.Len(t, events.of("pool_resized"), 1)
	assert.Equal(t, messages.PoolResized{Pool: "p", From: 2, To: 4}, events.of("pool_resized")[0])
}

func TestResizeDownDrains(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 2, StrictQueue)
	// Bind a session to worker 1 (the one a shrink to 1 removes).
	var s *Session
	for i := 0; ; i++ {
		s = rt.Session(fmt.Sprint("s", i))
		r, err := call(t, s, op{})
		require.NoError(t, err)
		if r.Worker == 1 {
			break
		}
	}
	_, release, running := occupy(t, s)
	queued := make(chan error, 1)
	go func() {
		_, err := call(t, s, op{ID: 50})
		queued <- err
	}()
	waitQueued(t, rt, "p", 1)

	resized := make(chan error, 1)
	go func() { resized <- rt.Resize(context.Background(), "p", 1) }()
	require.ErrorIs(t, <-queued, ErrSessionWorkerUnavailable, "queued calls of a removed worker fail")
	select {
	case err := <-resized:
		t.Fatalf("resize returned before the running call finished: %v", err)
	default:
	}
	release()
	require.NoError(t, <-running, "in-flight calls on a removed worker finish")
	require.NoError(t, <-resized)
	assert.False(t, w.ran(50))
	assert.Equal(t, 1, rt.Stats().Pools["p"].Size)

	_, err := call(t, s, op{})
	require.ErrorIs(t, err, ErrSessionWorkerUnavailable, "strict session of a removed worker")
	r, err := call(t, s, op{}, WithAffinity(Hint))
	require.NoError(t, err)
	assert.Equal(t, 0, r.Worker, "hint rebinds to a remaining worker")
}

// Start rejects size 0, and so does Resize: a pool cannot scale to zero.
func TestResizeToZeroRejected(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 1, Hint)
	require.ErrorIs(t, rt.Resize(context.Background(), "p", 0), ErrInvalidArgument)
	assert.Equal(t, 1, rt.Stats().Pools["p"].Size, "a rejected resize changes nothing")
	require.NoError(t, rt.Resize(context.Background(), "p", 1), "resizing to the current size is fine")
	require.NoError(t, rt.Resize(context.Background(), "p", 0+2))
	require.NoError(t, rt.Resize(context.Background(), "p", 1))
	r, err := call(t, rt.Session("s"), op{})
	require.NoError(t, err)
	assert.Equal(t, 0, r.Worker)
}

func TestResizeBadInput(t *testing.T) {
	rt := onePool(t, &world{}, 1, Hint)
	require.ErrorIs(t, rt.Resize(context.Background(), "nope", 1), ErrPoolNotFound)
	require.ErrorIs(t, rt.Resize(context.Background(), "p", -1), ErrInvalidArgument)
	//lint:ignore SA1012 a nil context is exactly the bad input under test
	require.ErrorIs(t, rt.Resize(nil, "p", 1), ErrInvalidArgument)
}

func TestCleanupSources(t *testing.T) {
	t.Run("manual", func(t *testing.T) {
		w := &world{}
		var events eventLog
		rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 2, NewWorker: w.factory}}, OnEvent: events.add})
		s := rt.Session("s")
		_, err := call(t, s, op{})
		require.NoError(t, err)
		s.Close()
		s.Close() // idempotent
		require.Eventually(t, func() bool { return len(w.releasedSessions()) == 1 }, 10*time.Second, time.Millisecond)
		assert.Equal(t, []string{"s"}, w.releasedSessions())
		require.Len(t, events.of("session_cleanup"), 1)
		assert.Equal(t, messages.SessionCleanup{Session: "s", Source: messages.CleanupManual, Workers: 1}, events.of("session_cleanup")[0])
		assert.Equal(t, uint64(1), rt.Stats().Cleanups[messages.CleanupManual])

		// The handle keeps working: a fresh session with the same id.
		r, err := call(t, s, op{})
		require.NoError(t, err)
		assert.Zero(t, r.Hits)
	})
	t.Run("owner_down", func(t *testing.T) {
		w := &world{}
		var events eventLog
		rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 2, NewWorker: w.factory}}, OnEvent: events.add})
		owner, cancel := context.WithCancel(context.Background())
		ctx, s := rt.AutoSession(owner)
		assert.True(t, strings.HasPrefix(s.ID(), "auto-"))
		a, err := rt.Call(ctx, op{})
		require.NoError(t, err)
		b, err := rt.Call(ctx, op{})
		require.NoError(t, err)
		assert.Equal(t, a.(result).Worker, b.(result).Worker, "affinity applies after the first call")
		assert.Equal(t, 1, b.(result).Hits)
		cancel()
		require.Eventually(t, func() bool { return len(events.of("session_cleanup")) == 1 }, 10*time.Second, time.Millisecond)
		assert.Equal(t, messages.CleanupOwnerDown, events.of("session_cleanup")[0].(messages.SessionCleanup).Source)
		require.Eventually(t, func() bool { return len(w.releasedSessions()) == 1 }, 10*time.Second, time.Millisecond)
	})
	t.Run("expired", func(t *testing.T) {
		w := &world{}
		var events eventLog
		rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 2, NewWorker: w.factory}}, OnEvent: events.add,
			SessionIdleTTL: 20 * time.Millisecond})
		_, err := call(t, rt.Session("idle"), op{})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return len(events.of("session_cleanup")) == 1 }, 10*time.Second, time.Millisecond)
		assert.Equal(t, messages.CleanupExpired, events.of("session_cleanup")[0].(messages.SessionCleanup).Source)
		assert.Equal(t, 0, rt.Stats().Sessions)
	})
	t.Run("busy sessions do not expire", func(t *testing.T) {
		w := &world{}
		rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 1, NewWorker: w.factory}}, SessionIdleTTL: 5 * time.Millisecond})
		s := rt.Session("busy")
		_, release, done := occupy(t, s)
		_, err := call(t, rt.Session("idle"), op{}, WithAffinity(StrictFailFast))
		require.ErrorIs(t, err, ErrWorkerBusy, "the only worker is busy") // the session exists all the same
		// Once the idle session has expired, the expiry pass has seen the busy one too.
		require.Eventually(t, func() bool { return rt.Stats().Cleanups[messages.CleanupExpired] >= 1 }, 10*time.Second, time.Millisecond)
		require.Eventually(t, func() bool { return rt.Stats().Sessions == 1 }, 10*time.Second, time.Millisecond)
		assert.Equal(t, uint64(1), rt.Stats().Cleanups[messages.CleanupExpired])
		sh := rt.sessions.shard("busy")
		sh.mu.RLock()
		_, alive := sh.m["busy"]
		sh.mu.RUnlock()
		assert.True(t, alive, "the busy session is still there")
		release()
		require.NoError(t, <-done)
	})
	t.Run("rt.Call: the context owns an auto-session", func(t *testing.T) {
		w := &world{}
		var events eventLog
		rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 2, NewWorker: w.factory}}, OnEvent: events.add})
		owner, cancel := context.WithCancel(context.Background())
		a, err := rt.Call(owner, op{})
		require.NoError(t, err)
		b, err := rt.Call(context.WithValue(owner, testKey{}, 1), op{})
		require.NoError(t, err)
		assert.Equal(t, a.(result).Worker, b.(result).Worker)
		assert.Equal(t, 1, b.(result).Hits, "same session: the worker kept its state")
		other, cancelOther := context.WithCancel(context.Background())
		defer cancelOther()
		c, err := rt.Call(other, op{})
		require.NoError(t, err)
		assert.Zero(t, c.(result).Hits, "another owner, another session")
		assert.Len(t, events.of("session_created"), 2)
		cancel()
		require.Eventually(t, func() bool { return len(events.of("session_cleanup")) == 1 }, 10*time.Second, time.Millisecond)
		assert.Equal(t, messages.CleanupOwnerDown, events.of("session_cleanup")[0].(messages.SessionCleanup).Source)
	})
	t.Run("rt.Call without a session", func(t *testing.T) {
		w := &world{}
		var events eventLog
		rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 1, NewWorker: w.factory}}, OnEvent: events.add})
		_, err := rt.Call(context.Background(), op{})
		require.NoError(t, err)
		// A context that never ends could never reuse it: cleaned at once.
		require.Len(t, events.of("session_cleanup"), 1)
		assert.Equal(t, 0, rt.Stats().Sessions)
	})
}

func TestCleanupDebugLogOnlyWhenConfigured(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		t.Run(fmt.Sprint(enabled), func(t *testing.T) {
			var buf syncBuffer
			log := zerolog.New(&buf).Level(zerolog.DebugLevel)
			rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 1, NewWorker: (&world{}).factory}},
				Logger: &log, LogSessionCleanup: enabled})
			s := rt.Session("s")
			_, err := call(t, s, op{})
			require.NoError(t, err)
			s.Close()
			assert.Equal(t, enabled, strings.Contains(buf.String(), `"message":"session cleanup"`), buf.String())
		})
	}
}

type testKey struct{}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestProtoactorLogsReachZerolog(t *testing.T) {
	var buf syncBuffer
	log := zerolog.New(&buf).Level(zerolog.InfoLevel)
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 1, NewWorker: (&world{}).factory}}, Logger: &log})
	_, err := call(t, rt.Session("s"), op{Panic: true})
	require.ErrorIs(t, err, ErrWorkerFailed)
	require.Eventually(t, func() bool { return strings.Contains(buf.String(), `"component":"protoactor"`) }, 10*time.Second, time.Millisecond)
}

func TestHealthCheckTaints(t *testing.T) {
	w := &world{}
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 2, Affinity: StrictQueue, NewWorker: w.factory}},
		HealthInterval: 5 * time.Millisecond, Restart: fastRestarts})
	s := rt.Session("s")
	r, err := call(t, s, op{})
	require.NoError(t, err)
	w.unhealthy.Store(r.Worker, true)
	require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Tainted[messages.TaintHealthCheck] >= 1 }, 10*time.Second, time.Millisecond)
	w.unhealthy.Store(r.Worker, false)
	_, err = call(t, s, op{})
	require.ErrorIs(t, err, ErrSessionWorkerUnavailable)
	require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Ready == 2 }, 10*time.Second, time.Millisecond)
}

func TestRecycleLimits(t *testing.T) {
	t.Run("max calls", func(t *testing.T) {
		w := &world{}
		rt := onePool(t, w, 1, Hint, func(pc *PoolConfig) { pc.MaxCalls = 3 })
		s := rt.Session("s")
		incs := map[uint64]int{}
		for i := 0; i < 9; i++ {
			var r result
			require.Eventually(t, func() bool {
				var err error
				r, err = call(t, s, op{})
				return err == nil
			}, 10*time.Second, time.Millisecond)
			incs[r.Incarnation]++
		}
		for inc, n := range incs {
			assert.LessOrEqual(t, n, 3, "incarnation %d ran more than MaxCalls", inc)
		}
		assert.GreaterOrEqual(t, rt.Stats().Pools["p"].Tainted[messages.TaintRecycle], uint64(2))
	})
	t.Run("max age", func(t *testing.T) {
		w := &world{}
		rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 1, NewWorker: w.factory, MaxAge: 10 * time.Millisecond}},
			HealthInterval: 5 * time.Millisecond, Restart: fastRestarts})
		require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Restarts >= 2 }, 10*time.Second, time.Millisecond)
		assert.Zero(t, rt.Stats().Pools["p"].Failed, "recycling never uses up the restart budget")
	})
}

func TestEventsAndCounters(t *testing.T) {
	w := &world{}
	var events eventLog
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 2, Affinity: Hint, NewWorker: w.factory}},
		OnEvent: events.add, PublishEvents: true, Restart: fastRestarts})
	var streamed sync.Map
	sub := rt.ActorSystem().EventStream.Subscribe(func(ev any) {
		if e, ok := ev.(messages.Event); ok {
			streamed.Store(e.Kind(), true)
		}
	})
	defer rt.ActorSystem().EventStream.Unsubscribe(sub)

	s := rt.Session("s")
	_, err := call(t, s, op{})
	require.NoError(t, err)
	_, err = call(t, s, op{Panic: true})
	require.ErrorIs(t, err, ErrWorkerFailed)
	require.Eventually(t, func() bool { return len(events.of("worker_restarted")) == 1 }, 10*time.Second, time.Millisecond)

	d := events.of("call_dispatched")
	require.Len(t, d, 2)
	assert.Equal(t, messages.OutcomeBound, d[0].(messages.CallDispatched).Outcome)
	assert.Equal(t, messages.OutcomeHit, d[1].(messages.CallDispatched).Outcome)
	x := events.of("call_executed")
	require.Len(t, x, 2)
	assert.NoError(t, x[0].(messages.CallExecuted).Err)
	assert.ErrorIs(t, x[1].(messages.CallExecuted).Err, ErrWorkerFailed)
	require.Len(t, events.of("worker_tainted"), 1)
	assert.Equal(t, messages.TaintPanic, events.of("worker_tainted")[0].(messages.WorkerTainted).Reason)
	assert.Len(t, events.of("session_created"), 1)

	st := rt.Stats().Pools["p"]
	assert.Equal(t, uint64(2), st.Executed)
	assert.Equal(t, uint64(1), st.ExecErrors)
	assert.Equal(t, uint64(1), st.Tainted[messages.TaintPanic])
	assert.Equal(t, uint64(1), st.Restarts)
	for _, kind := range []string{"call_dispatched", "call_executed", "worker_tainted", "worker_restarted", "session_created"} {
		_, ok := streamed.Load(kind)
		assert.True(t, ok, "%s published on the actor system's event stream", kind)
	}
}

func TestBadConfig(t *testing.T) {
	factory := (&world{}).factory
	cases := map[string]Config{
		"no pools":        {},
		"empty name":      {Pools: []PoolConfig{{Size: 1, NewWorker: factory}}},
		"duplicate name":  {Pools: []PoolConfig{{Name: "a", Size: 1, NewWorker: factory}, {Name: "a", Size: 1, NewWorker: factory}}},
		"zero size":       {Pools: []PoolConfig{{Name: "a", NewWorker: factory}}},
		"negative size":   {Pools: []PoolConfig{{Name: "a", Size: -1, NewWorker: factory}}},
		"nil factory":     {Pools: []PoolConfig{{Name: "a", Size: 1}}},
		"bad affinity":    {Pools: []PoolConfig{{Name: "a", Size: 1, NewWorker: factory, Affinity: Affinity(9)}}},
		"negative queue":  {Pools: []PoolConfig{{Name: "a", Size: 1, NewWorker: factory, QueueSize: -1}}},
		"unknown default": {Pools: []PoolConfig{{Name: "a", Size: 1, NewWorker: factory}}, DefaultPool: "b"},
		"bad policy":      {Pools: []PoolConfig{{Name: "a", Size: 1, NewWorker: factory}}, Restart: supervisorPolicy(-time.Second)},
		"health flood":    {Pools: []PoolConfig{{Name: "a", Size: 1, NewWorker: factory}}, HealthInterval: time.Microsecond},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			rt, err := Start(cfg)
			require.ErrorIs(t, err, ErrInvalidConfig)
			assert.Nil(t, rt)
		})
	}
	t.Run("factory error fails start", func(t *testing.T) {
		w := &world{}
		w.failBuild.Store(true)
		rt, err := Start(Config{Pools: []PoolConfig{{Name: "a", Size: 2, NewWorker: w.factory}}})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "factory refused")
		assert.Nil(t, rt)
	})
	t.Run("parse affinity", func(t *testing.T) {
		_, err := ParseAffinity("sticky")
		require.ErrorIs(t, err, ErrInvalidAffinity)
		a, err := ParseAffinity("strict_queue")
		require.NoError(t, err)
		assert.Equal(t, StrictQueue, a)
	})
}

func TestBadCallInput(t *testing.T) {
	rt := onePool(t, &world{}, 1, Hint)
	//lint:ignore SA1012 a nil context is exactly the bad input under test
	_, err := rt.Session("s").Call(nil, op{})
	require.ErrorIs(t, err, ErrInvalidArgument)
	//lint:ignore SA1012 as above
	_, err = rt.Call(nil, op{})
	require.ErrorIs(t, err, ErrInvalidArgument)
	_, err = rt.Session("").Call(context.Background(), op{})
	require.ErrorIs(t, err, ErrInvalidArgument)
}

func TestShutdown(t *testing.T) {
	w := &world{}
	rt, err := Start(Config{Pools: []PoolConfig{{Name: "p", Size: 1, Affinity: StrictQueue, NewWorker: w.factory}}})
	require.NoError(t, err)
	s := rt.Session("s")
	_, release, running := occupy(t, s)
	waiting := make(chan error, 1)
	go func() {
		_, err := call(t, s, op{ID: 9})
		waiting <- err
	}()
	waitQueued(t, rt, "p", 1)

	shut := make(chan error, 2)
	go func() { shut <- rt.Shutdown(context.Background()) }()
	require.ErrorIs(t, <-waiting, ErrShutdown, "waiting calls fail with ErrShutdown")
	_, err = call(t, s, op{})
	require.ErrorIs(t, err, ErrShutdown, "no new calls")
	go func() { shut <- rt.Shutdown(context.Background()) }()
	release()
	require.NoError(t, <-running, "running calls finish")
	require.NoError(t, <-shut)
	require.NoError(t, <-shut)
	require.NoError(t, rt.Shutdown(context.Background()), "idempotent")

	_, err = call(t, rt.Session("later"), op{})
	require.ErrorIs(t, err, ErrShutdown)
	_, err = rt.Session("later").Stream(context.Background(), op{})
	require.ErrorIs(t, err, ErrShutdown)
	require.ErrorIs(t, rt.Resize(context.Background(), "p", 2), ErrShutdown)
	assert.False(t, w.ran(9))
	goleak.VerifyNone(t, goleak.IgnoreCurrent())
}

func TestShutdownLeavesNoGoroutines(t *testing.T) {
	before := goleak.IgnoreCurrent()
	w := &world{}
	rt, err := Start(Config{Pools: []PoolConfig{
		{Name: "a", Size: 4, NewWorker: w.factory, Capacity: 2},
		{Name: "b", Size: 2, Affinity: StrictQueue, NewWorker: w.factory},
	}, HealthInterval: time.Millisecond, SessionIdleTTL: time.Millisecond})
	require.NoError(t, err)
	owner, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, _ := rt.AutoSession(owner)
			for j := 0; j < 50; j++ {
				_, _ = rt.Call(ctx, op{Panic: j == 25 && i == 0}, WithPool([]string{"a", "b"}[j%2]))
			}
		}(i)
	}
	wg.Wait()
	require.NoError(t, rt.Shutdown(context.Background()))
	goleak.VerifyNone(t, before)
}

var _ = errors.New

// Queued calls are claimed by workers while their dispatch event is built:
// run under -race, this catches the event reading the call unlocked.
func TestEventsWhileCallsQueue(t *testing.T) {
	w := &world{}
	var queued atomic.Int64
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 2, NewWorker: w.factory}},
		OnEvent: func(ev messages.Event) {
			if d, ok := ev.(messages.CallDispatched); ok && d.Outcome == messages.OutcomeQueued {
				queued.Add(1)
			}
		}})
	// Every session bound first, then both workers busy: every goroutine's
	// first call has to wait (a bound hint call with no free worker is
	// queued), and the rest race with the workers claiming queued calls.
	for g := 0; g < 16; g++ {
		_, err := call(t, rt.Session(fmt.Sprint("s", g)), op{})
		require.NoError(t, err)
	}
	_, release0, _ := occupy(t, rt.Session("a"))
	_, release1, _ := occupy(t, rt.Session("b"))
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				_, err := call(t, rt.Session(fmt.Sprint("s", g)), op{})
				assert.NoError(t, err)
			}
		}(g)
	}
	waitQueued(t, rt, "p", 16)
	release0()
	release1()
	wg.Wait()
	assert.GreaterOrEqual(t, queued.Load(), int64(16), "each goroutine's first call had to wait")
}

// closingWorker records its Close and whether a call was running then.
type closingWorker struct {
	running         atomic.Int32
	closed          atomic.Bool
	closedWhileBusy atomic.Bool
}

func (c *closingWorker) Handle(ctx context.Context, call messages.Call) (any, error) {
	c.running.Add(1)
	defer c.running.Add(-1)
	switch p := call.Payload.(type) {
	case chan struct{}: // block until closed
		select {
		case <-p:
		case <-ctx.Done():
		}
	case error:
		return nil, Fatal(p)
	}
	return nil, nil
}

func (c *closingWorker) Close() error {
	c.closedWhileBusy.Store(c.running.Load() > 0)
	c.closed.Store(true)
	return nil
}

// With Capacity above 1, a tainted incarnation's Close waits for the calls
// still running on it.
func TestCloseWaitsForTheIncarnationsCalls(t *testing.T) {
	var mu sync.Mutex
	var made []*closingWorker
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 1, Capacity: 2, Affinity: Hint,
		NewWorker: func(context.Context, WorkerInfo) (Worker, error) {
			mu.Lock()
			defer mu.Unlock()
			made = append(made, &closingWorker{})
			return made[len(made)-1], nil
		}}}, Restart: fastRestarts})
	first := func() *closingWorker { mu.Lock(); defer mu.Unlock(); return made[0] }

	release := make(chan struct{})
	blocked := make(chan error, 1)
	go func() {
		_, err := rt.Session("a").Call(context.Background(), release)
		blocked <- err
	}()
	require.Eventually(t, func() bool { return first().running.Load() == 1 }, 10*time.Second, time.Millisecond)
	_, err := rt.Session("b").Call(context.Background(), errors.New("corrupt"))
	require.ErrorIs(t, err, ErrWorkerFailed)
	require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Restarts == 1 }, 10*time.Second, time.Millisecond)
	require.False(t, first().closed.Load(), "restarted, but a call still runs on the old incarnation: not closed yet")

	close(release)
	require.ErrorIs(t, <-blocked, ErrWorkerFailed, "its incarnation was tainted while it ran")
	require.Eventually(t, func() bool { return first().closed.Load() }, 10*time.Second, time.Millisecond)
	require.False(t, first().closedWhileBusy.Load())
}
