package supervisor

import (
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/internal/leaktest"
	"github.com/affinity-go/affinity/messages"
)

// No protoactor goroutine is ignored: these tests send nothing to stopped
// actors, so the dead-letter log throttle (the one protoactor goroutine that
// outlives its work, by up to a second) never starts, and mailbox goroutines
// end once their queues are empty.
func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

// wait bounds every wait on an actor; nothing here should take near as long.
const wait = 5 * time.Second

type (
	panicWith struct{ value any }      // the child panics with value
	ping      struct{ reply chan int } // the child replies with its incarnation
	spawn     struct{ reply chan *actor.PID }
)

// decision is one call of the strategy's DecisionFunc.
type decision struct {
	child  *actor.PID
	reason messages.TaintReason
	d      Decision
	at     time.Time
}

// harness is an actor system with a parent supervised by a Strategy. The
// parent spawns children that report each incarnation on started and their
// end on stopped.
type harness struct {
	t         *testing.T
	system    *actor.ActorSystem
	strategy  *Strategy
	parent    *actor.PID
	produced  atomic.Int64     // producer calls: one per (re)incarnation
	started   chan incarnation // a child instance received Started
	stopped   chan *actor.PID  // a child instance received Stopped
	decisions chan decision
	onDecide  func(decision) // runs in the supervisor, before the directive is carried out
	gone      chan struct{}  // the parent stopped
}

type incarnation struct {
	pid *actor.PID
	n   int64
	at  time.Time
}

type childActor struct {
	h *harness
	n int64
}

func (c *childActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.h.started <- incarnation{pid: ctx.Self(), n: c.n, at: time.Now()}
	case *actor.Stopped:
		c.h.stopped <- ctx.Self()
	case *panicWith:
		panic(m.value)
	case *ping:
		m.reply <- int(c.n)
	}
}

type parentActor struct{ h *harness }

func (p *parentActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *spawn:
		props := actor.PropsFromProducer(func() actor.Actor {
			return &childActor{h: p.h, n: p.h.produced.Add(1)}
		})
		m.reply <- ctx.Spawn(props)
	case *actor.Stopped:
		close(p.h.gone)
	}
}

func newHarness(t *testing.T, p Policy) *harness {
	t.Helper()
	h := &harness{
		t:         t,
		started:   make(chan incarnation, 100),
		stopped:   make(chan *actor.PID, 100),
		decisions: make(chan decision, 100),
		gone:      make(chan struct{}),
	}
	h.strategy = NewStrategy(p, func(child *actor.PID, reason messages.TaintReason, d Decision) {
		dec := decision{child: child, reason: reason, d: d, at: time.Now()}
		if h.onDecide != nil {
			h.onDecide(dec)
		}
		h.decisions <- dec
	})
	h.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
	props := actor.PropsFromProducer(func() actor.Actor { return &parentActor{h: h} }, actor.WithSupervisor(h.strategy))
	h.parent = h.system.Root.Spawn(props)
	t.Cleanup(func() {
		h.strategy.Stop()
		h.system.Root.Stop(h.parent) // stops the children first
		select {
		case <-h.gone:
		case <-time.After(wait):
			t.Error("parent did not stop")
		}
		h.system.Shutdown()
	})
	return h
}

// spawnChild spawns a child and waits for its first incarnation.
func (h *harness) spawnChild() *actor.PID {
	h.t.Helper()
	reply := make(chan *actor.PID, 1)
	h.system.Root.Send(h.parent, &spawn{reply: reply})
	pid := recv(h.t, reply, "spawned child")
	inc := recv(h.t, h.started, "first incarnation")
	require.True(h.t, inc.pid.Equal(pid))
	return pid
}

func (h *harness) decision() decision {
	h.t.Helper()
	return recv(h.t, h.decisions, "supervisor decision")
}

// incarnationOf asks the child which incarnation answers its mailbox.
func (h *harness) incarnationOf(pid *actor.PID) int {
	h.t.Helper()
	reply := make(chan int, 1)
	h.system.Root.Send(pid, &ping{reply: reply})
	return recv(h.t, reply, "ping reply")
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func (h *harness) pending() int {
	h.strategy.mu.Lock()
	defer h.strategy.mu.Unlock()
	return len(h.strategy.pending)
}

func TestStrategyRestartsPanickingChild(t *testing.T) {
	h := newHarness(t, Policy{MaxRestarts: 5, InitialBackoff: 20 * time.Millisecond, MaxBackoff: time.Second})
	child := h.spawnChild()

	h.system.Root.Send(child, &panicWith{value: "boom"})
	dec := h.decision()
	assert.True(t, dec.child.Equal(child), "decision for %v, want %v", dec.child, child)
	assert.Equal(t, messages.TaintPanic, dec.reason)
	assert.Equal(t, Decision{Directive: Restart, Delay: 20 * time.Millisecond, Restarts: 1}, dec.d)

	inc := recv(t, h.started, "restarted incarnation")
	assert.True(t, inc.pid.Equal(child), "the same PID is restarted")
	assert.Equal(t, int64(2), inc.n, "restart builds a new actor instance")
	assert.GreaterOrEqual(t, inc.at.Sub(dec.at), 20*time.Millisecond, "restart waited for the backoff")
	assert.Equal(t, 2, h.incarnationOf(child), "the mailbox resumed on the new instance")

	// The second failure in the window backs off twice as long.
	h.system.Root.Send(child, &panicWith{value: errors.New("boom again")})
	dec = h.decision()
	assert.Equal(t, Decision{Directive: Restart, Delay: 40 * time.Millisecond, Restarts: 2}, dec.d)
	inc = recv(t, h.started, "second restart")
	assert.Equal(t, int64(3), inc.n)
	assert.GreaterOrEqual(t, inc.at.Sub(dec.at), 40*time.Millisecond)
	assert.Equal(t, int64(3), h.produced.Load())
}

func TestStrategyReportsTaintReason(t *testing.T) {
	cause := errors.New("unhealthy")
	tests := []struct {
		taint *Taint
		delay time.Duration
	}{
		{&Taint{Reason: messages.TaintFatalError, Err: cause}, time.Millisecond},
		{&Taint{Reason: messages.TaintHealthCheck, Err: cause}, time.Millisecond},
		{&Taint{Reason: messages.TaintStartFailed}, time.Millisecond},
		// Recycling restarts at once, through RestartChildren directly.
		{&Taint{Reason: messages.TaintRecycle}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.taint.Reason.String(), func(t *testing.T) {
			h := newHarness(t, Policy{InitialBackoff: time.Millisecond})
			child := h.spawnChild()
			h.system.Root.Send(child, &panicWith{value: tt.taint})
			dec := h.decision()
			assert.Equal(t, tt.taint.Reason, dec.reason)
			assert.Equal(t, Restart, dec.d.Directive)
			assert.Equal(t, tt.delay, dec.d.Delay)
			assert.Equal(t, int64(2), recv(t, h.started, "restart").n)
		})
	}
}

func TestStrategyRecycleDoesNotUseBudget(t *testing.T) {
	h := newHarness(t, Policy{MaxRestarts: 1, InitialBackoff: time.Millisecond})
	child := h.spawnChild()
	for i := range 5 {
		h.system.Root.Send(child, &panicWith{value: &Taint{Reason: messages.TaintRecycle}})
		require.Equal(t, Decision{Directive: Restart}, h.decision().d, "recycle %d", i+1)
		recv(t, h.started, "recycled incarnation")
	}
	h.system.Root.Send(child, &panicWith{value: "boom"})
	assert.Equal(t, Decision{Directive: Restart, Delay: time.Millisecond, Restarts: 1}, h.decision().d)
	assert.Equal(t, int64(7), recv(t, h.started, "restart after panic").n)
}

func TestStrategyStopsChildAfterBudget(t *testing.T) {
	h := newHarness(t, Policy{MaxRestarts: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	child := h.spawnChild()
	for i := 1; i <= 2; i++ {
		h.system.Root.Send(child, &panicWith{value: "boom"})
		require.Equal(t, Decision{Directive: Restart, Delay: time.Millisecond, Restarts: i}, h.decision().d)
		recv(t, h.started, "restart")
	}

	h.system.Root.Send(child, &panicWith{value: "boom"})
	dec := h.decision()
	assert.True(t, dec.child.Equal(child))
	assert.Equal(t, Decision{Directive: Fail, Restarts: 2}, dec.d)
	stopped := recv(t, h.stopped, "child stopped")
	assert.True(t, stopped.Equal(child))
	// Stopped is the last message an instance sees: no restart can follow.
	assert.Equal(t, int64(3), h.produced.Load(), "one start and two restarts")
	assert.Empty(t, h.started)
}

func TestStrategyForgetResetsBudget(t *testing.T) {
	h := newHarness(t, Policy{MaxRestarts: 1, InitialBackoff: time.Millisecond})
	child := h.spawnChild()
	h.system.Root.Send(child, &panicWith{value: "boom"})
	require.Equal(t, Restart, h.decision().d.Directive)
	recv(t, h.started, "restart")

	h.strategy.Forget(child)
	h.system.Root.Send(child, &panicWith{value: "boom"})
	assert.Equal(t, Decision{Directive: Restart, Delay: time.Millisecond, Restarts: 1}, h.decision().d)
	recv(t, h.started, "restart after forget")
}

func TestStrategyChildrenHaveSeparateBudgets(t *testing.T) {
	h := newHarness(t, Policy{MaxRestarts: 1, InitialBackoff: time.Millisecond})
	a, b := h.spawnChild(), h.spawnChild()
	for _, pid := range []*actor.PID{a, b} {
		h.system.Root.Send(pid, &panicWith{value: "boom"})
		dec := h.decision()
		require.True(t, dec.child.Equal(pid))
		assert.Equal(t, Decision{Directive: Restart, Delay: time.Millisecond, Restarts: 1}, dec.d)
		recv(t, h.started, "restart")
	}
}

func TestStrategyStopCancelsPendingRestart(t *testing.T) {
	const backoff = 100 * time.Millisecond
	h := newHarness(t, Policy{InitialBackoff: backoff, MaxBackoff: backoff})
	child := h.spawnChild()

	h.system.Root.Send(child, &panicWith{value: "boom"})
	require.Equal(t, Decision{Directive: Restart, Delay: backoff, Restarts: 1}, h.decision().d)
	// The DecisionFunc runs before the restart is scheduled; wait for the timer.
	require.Eventually(t, func() bool { return h.pending() == 1 }, wait, time.Millisecond)

	h.strategy.Stop()
	assert.Zero(t, h.pending())
	// Watch for well past the backoff: the restart must never come.
	assert.Never(t, func() bool { return h.produced.Load() > 1 }, 3*backoff, 5*time.Millisecond)
}

func TestStrategyStopDuringFailureHandling(t *testing.T) {
	// Stop can run on another goroutine (runtime shutdown) while the
	// supervisor is handling a failure, after the decision but before the
	// delayed restart is scheduled. That restart must not happen either.
	const backoff = 50 * time.Millisecond
	h := newHarness(t, Policy{InitialBackoff: backoff, MaxBackoff: backoff})
	h.onDecide = func(decision) { h.strategy.Stop() }
	child := h.spawnChild()

	h.system.Root.Send(child, &panicWith{value: "boom"})
	require.Equal(t, Restart, h.decision().d.Directive)
	assert.Never(t, func() bool { return h.produced.Load() > 1 }, 3*backoff, 5*time.Millisecond)
	assert.Zero(t, h.pending())
}

func TestStrategyStoppedStopsFailingChildAtOnce(t *testing.T) {
	h := newHarness(t, Policy{InitialBackoff: time.Millisecond})
	child := h.spawnChild()
	h.strategy.Stop()

	h.system.Root.Send(child, &panicWith{value: "boom"})
	stopped := recv(t, h.stopped, "child stopped")
	assert.True(t, stopped.Equal(child))
	assert.Empty(t, h.decisions, "no decision is made once stopped")
	assert.Equal(t, int64(1), h.produced.Load())
}
