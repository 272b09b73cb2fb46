package actors

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/affinity-go/affinity/messages"
)

// request sends msg to pid from outside any actor and waits for the one
// reply.
func request(t *testing.T, rt *Runtime, pid *actor.PID, msg any) any {
	t.Helper()
	reply, err := rt.ActorSystem().Root.RequestFuture(pid, msg, 10*time.Second).Result()
	require.NoError(t, err)
	return reply
}

func TestSessionPIDAnswersCallRequests(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 2, StrictQueue)
	s := rt.Session("s")
	require.NotNil(t, s.PID())
	assert.Equal(t, s.PID().String(), rt.SessionPID("s").String(), "a session's address is its id")

	first := request(t, rt, s.PID(), &messages.CallRequest{Tag: 7, Payload: op{ID: 1}}).(*messages.CallReply)
	require.NoError(t, first.Err)
	assert.Equal(t, uint64(7), first.Tag)
	r := first.Value.(result)
	assert.Equal(t, r.Worker, first.Worker)
	assert.Equal(t, r.Incarnation, first.Incarnation)

	// The blocking API and the message API reach the same session actor:
	// one binding, one state.
	again, err := call(t, s, op{ID: 2})
	require.NoError(t, err)
	assert.Equal(t, r.Worker, again.Worker)
	assert.Equal(t, 1, again.Hits, "the worker saw the message call of this session")
	bw, _, ok := s.Binding("p")
	require.True(t, ok)
	assert.Equal(t, r.Worker, bw)
}

func TestSessionMessageErrorsAreSentinels(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 1, StrictFailFast)
	pid := rt.SessionPID("s")
	_, release, _ := occupy(t, rt.Session("s"))

	busy := request(t, rt, pid, &messages.CallRequest{Payload: op{ID: 1}}).(*messages.CallReply)
	require.ErrorIs(t, busy.Err, ErrWorkerBusy)
	assert.Nil(t, busy.Value)
	assert.Equal(t, -1, busy.Worker, "no worker ran it")

	missing := request(t, rt, pid, &messages.CallRequest{Pool: "nope"}).(*messages.CallReply)
	require.ErrorIs(t, missing.Err, ErrPoolNotFound)
	bad := request(t, rt, pid, &messages.CallRequest{Affinity: 9}).(*messages.CallReply)
	require.ErrorIs(t, bad.Err, ErrInvalidArgument)
	wrongRef := request(t, rt, pid, &messages.CallRequest{Ref: &messages.Ref{Session: "other", Pool: "p", Incarnation: 1}}).(*messages.CallReply)
	require.ErrorIs(t, wrongRef.Err, ErrInvalidArgument)
	release()
	assert.False(t, w.ran(1))
}

// sessionUser is an actor app's actor: it talks to a session by messages
// only, and forwards every reply it gets to the test.
type sessionUser struct {
	session *actor.PID
	out     chan any
}

func (u *sessionUser) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.CallRequest, *messages.StreamRequest, *messages.StreamAck, *messages.CancelStream:
		ctx.Request(u.session, m) // never waits: the reply comes to this mailbox
	case *messages.CallReply, *messages.StreamItem, *messages.StreamEnd:
		u.out <- m
	}
}

func spawnUser(t *testing.T, rt *Runtime, session string) (*actor.PID, chan any) {
	t.Helper()
	out := make(chan any, 64)
	pid := rt.ActorSystem().Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return &sessionUser{session: rt.SessionPID(session), out: out}
	}))
	t.Cleanup(func() { rt.ActorSystem().Root.Stop(pid) })
	return pid, out
}

func next(t *testing.T, out chan any) any {
	t.Helper()
	select {
	case m := <-out:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no reply")
	}
	return nil
}

func TestActorGetsOneReplyPerRequest(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 1, StrictQueue)
	user, out := spawnUser(t, rt, "s")
	_, release, _ := occupy(t, rt.Session("s"))

	// Three requests wait in the session's mailbox behind the running call;
	// the actor is free meanwhile, and each gets one reply, in order.
	for tag := uint64(1); tag <= 3; tag++ {
		rt.ActorSystem().Root.Send(user, &messages.CallRequest{Tag: tag, Payload: op{ID: int(tag)}})
	}
	waitQueued(t, rt, "p", 3)
	release()
	for tag := uint64(1); tag <= 3; tag++ {
		r := next(t, out).(*messages.CallReply)
		require.NoError(t, r.Err)
		assert.Equal(t, tag, r.Tag, "FIFO within the session")
	}
	select {
	case extra := <-out:
		t.Fatalf("unexpected extra reply %#v", extra)
	default:
	}
}

func TestActorRefCallAndWorkerFailure(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 2, StrictQueue, func(pc *PoolConfig) {
		p := supervisorPolicy(time.Millisecond)
		pc.Restart = &p
	})
	user, out := spawnUser(t, rt, "s")
	root := rt.ActorSystem().Root

	root.Send(user, &messages.CallRequest{Tag: 1, Payload: op{Ref: "obj"}})
	made := next(t, out).(*messages.CallReply)
	require.NoError(t, made.Err)
	ref := made.Value.(result).Ref

	root.Send(user, &messages.CallRequest{Tag: 2, Ref: &ref, Payload: op{ID: 2}})
	onRef := next(t, out).(*messages.CallReply)
	require.NoError(t, onRef.Err)
	assert.Equal(t, ref.Worker, onRef.Worker)

	root.Send(user, &messages.CallRequest{Tag: 3, Payload: op{Panic: true}})
	crashed := next(t, out).(*messages.CallReply)
	require.ErrorIs(t, crashed.Err, ErrWorkerFailed)
	var perr *PanicError
	require.ErrorAs(t, crashed.Err, &perr, "the panic travels in the reply")
	assert.Equal(t, ref.Worker, crashed.Worker, "the reply names the worker that ran it")

	root.Send(user, &messages.CallRequest{Tag: 4, Ref: &ref})
	require.ErrorIs(t, next(t, out).(*messages.CallReply).Err, ErrRefLost)
	root.Send(user, &messages.CallRequest{Tag: 5})
	require.ErrorIs(t, next(t, out).(*messages.CallReply).Err, ErrSessionWorkerUnavailable)
	root.Send(user, &messages.CallRequest{Tag: 6, Affinity: Hint, Payload: op{ID: 6}})
	require.NoError(t, next(t, out).(*messages.CallReply).Err, "hint rebinds")
}

func TestActorStream(t *testing.T) {
	rt := onePool(t, &world{}, 1, Hint)
	user, out := spawnUser(t, rt, "s")
	root := rt.ActorSystem().Root

	root.Send(user, &messages.StreamRequest{Tag: 9, Payload: op{Items: 3}})
	for i := 0; i < 3; i++ {
		item := next(t, out).(*messages.StreamItem)
		assert.Equal(t, uint64(9), item.Tag)
		assert.Equal(t, uint64(i), item.Seq)
		assert.Equal(t, i, item.Item)
	}
	end := next(t, out).(*messages.StreamEnd)
	require.NoError(t, end.Err)
	assert.Equal(t, uint64(3), end.Items)

	// A stream that blocks until cancelled: CancelStream ends it, and the
	// worker is free again.
	root.Send(user, &messages.StreamRequest{Tag: 10, Payload: op{Items: 1, Block: make(chan struct{})}})
	require.IsType(t, &messages.StreamItem{}, next(t, out))
	root.Send(user, &messages.CancelStream{Tag: 10})
	cancelled := next(t, out).(*messages.StreamEnd)
	require.ErrorIs(t, cancelled.Err, context.Canceled)
	_, err := call(t, rt.Session("s"), op{})
	require.NoError(t, err)

	// Streams never wait: a busy worker refuses at once.
	_, release, _ := occupy(t, rt.Session("other"))
	root.Send(user, &messages.StreamRequest{Tag: 11, Payload: op{Items: 1}})
	refused := next(t, out).(*messages.StreamEnd)
	require.ErrorIs(t, refused.Err, ErrNoWorkersAvailable)
	release()
}

// A throttled stream sends at most Window items ahead of the receiver's
// acks, and ends when its receiver stops or its session closes.
func TestActorStreamWindow(t *testing.T) {
	rt := onePool(t, &world{}, 1, Hint)
	user, out := spawnUser(t, rt, "s")
	root := rt.ActorSystem().Root
	var sending atomic.Int64
	receive := func(seq uint64) {
		t.Helper()
		item := next(t, out).(*messages.StreamItem)
		require.Equal(t, seq, item.Seq)
	}

	root.Send(user, &messages.StreamRequest{Tag: 1, Window: 3, Payload: op{Items: 100, Sending: &sending}})
	for seq := uint64(0); seq < 3; seq++ {
		receive(seq)
	}
	require.Eventually(t, func() bool { return sending.Load() == 4 }, 10*time.Second, time.Millisecond,
		"the fourth send has begun, and waits")
	root.Send(user, &messages.StreamAck{Tag: 1, Items: 2})
	receive(3)
	receive(4)
	require.Eventually(t, func() bool { return sending.Load() == 6 }, 10*time.Second, time.Millisecond)
	root.Send(user, &messages.StreamAck{Tag: 1, Items: 1}) // below the last ack: nothing changes
	root.Send(user, &messages.CancelStream{Tag: 1})
	end := next(t, out).(*messages.StreamEnd)
	require.ErrorIs(t, end.Err, context.Canceled)
	require.Equal(t, uint64(5), end.Items, "two acked, three ahead: five sent of a hundred")

	// A receiver that stops ends its throttled streams: the worker is free.
	other, otherOut := spawnUser(t, rt, "s")
	root.Send(other, &messages.StreamRequest{Tag: 2, Window: 1, Payload: op{Items: 100}})
	require.IsType(t, &messages.StreamItem{}, next(t, otherOut))
	require.NoError(t, root.StopFuture(other).Wait())
	_, err := call(t, rt.Session("s"), op{ID: 7})
	require.NoError(t, err, "the single worker was freed")

	// Closing the session ends its throttled streams too.
	root.Send(user, &messages.StreamRequest{Tag: 3, Window: 1, Payload: op{Items: 100}})
	receive(0)
	rt.Session("s").Close()
	closed := next(t, out).(*messages.StreamEnd)
	require.ErrorIs(t, closed.Err, ErrSessionClosed)
	require.Equal(t, uint64(1), closed.Items)
}

// Sessions sharing a worker are served in turn: one session's backlog
// does not hold back another session's call.
func TestSessionsSharingAWorkerAreServedInTurn(t *testing.T) {
	w := &world{}
	rt := onePool(t, w, 1, StrictQueue)
	_, release, _ := occupy(t, rt.Session("a"))

	var wg sync.WaitGroup
	launch := func(s *Session, id int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := call(t, s, op{ID: id})
			assert.NoError(t, err)
		}()
	}
	// Session a queues ten calls, then session b one.
	for i := 1; i <= 10; i++ {
		launch(rt.Session("a"), i)
		waitQueued(t, rt, "p", i)
	}
	launch(rt.Session("b"), 100)
	waitQueued(t, rt, "p", 11)
	release()
	wg.Wait()
	var order []int
	for _, e := range w.executions() {
		if e.ID > 0 {
			order = append(order, e.ID)
		}
	}
	assert.Equal(t, []int{1, 100, 2, 3, 4, 5, 6, 7, 8, 9, 10}, order,
		"b's call runs after one of a's, not after all ten")
}

// Calls keep coming while the actor passivates: none is lost.
func TestPassivationRacesWithCalls(t *testing.T) {
	w := &world{}
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 2, Affinity: StrictQueue, NewWorker: w.factory}},
		SessionPassivateAfter: time.Millisecond})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := rt.Session("shared")
			for i := 0; i < 300; i++ {
				_, err := call(t, s, op{})
				require.NoError(t, err)
			}
		}()
	}
	wg.Wait()
	bw, _, ok := rt.Session("shared").Binding("p")
	require.True(t, ok)
	for _, e := range w.executions() {
		assert.Equal(t, bw, e.Worker, "one binding through every activation")
	}
}

func TestCloseFailsWaitingCalls(t *testing.T) {
	w := &world{}
	var events eventLog
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 1, Affinity: StrictQueue, NewWorker: w.factory}},
		OnEvent: events.add})
	s := rt.Session("s")
	_, release, running := occupy(t, s)
	waiting := make(chan error, 1)
	go func() {
		_, err := call(t, s, op{ID: 5})
		waiting <- err
	}()
	waitQueued(t, rt, "p", 1)
	s.Close()
	require.ErrorIs(t, <-waiting, ErrSessionClosed)
	release()
	require.NoError(t, <-running, "a running call finishes")
	assert.False(t, w.ran(5))
	assert.Equal(t, 0, rt.Stats().Pools["p"].Queued)
}

// Defect: Close on a handle used again after an earlier Close did nothing.
func TestCloseWorksEveryTime(t *testing.T) {
	w := &world{}
	var events eventLog
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 1, Affinity: StrictQueue, NewWorker: w.factory}},
		OnEvent: events.add})
	s := rt.Session("s")
	for round := 1; round <= 3; round++ {
		r, err := call(t, s, op{})
		require.NoError(t, err)
		assert.Equal(t, 0, r.Hits, "round %d starts afresh", round)
		s.Close()
		require.Eventually(t, func() bool { return len(w.releasedSessions()) == round }, 10*time.Second, time.Millisecond,
			"round %d: the worker is told to release", round)
		_, _, ok := s.Binding("p")
		assert.False(t, ok, "round %d: the binding is gone", round)
	}
	assert.Len(t, events.of("session_cleanup"), 3)
	assert.Equal(t, uint64(3), rt.Stats().Cleanups[messages.CleanupManual])
}

// Defect: Binding on a closed handle created a live session again.
func TestBindingNeverCreates(t *testing.T) {
	rt := onePool(t, &world{}, 1, Hint)
	s := rt.Session("s")
	_, _, ok := s.Binding("p")
	assert.False(t, ok)
	assert.Equal(t, 0, rt.Stats().Sessions, "reading created nothing")
	_, err := call(t, s, op{})
	require.NoError(t, err)
	s.Close()
	require.Eventually(t, func() bool { return rt.Stats().Sessions == 0 }, 10*time.Second, time.Millisecond)
	_, _, ok = s.Binding("p")
	assert.False(t, ok)
	_, _, ok = s.Binding("nope")
	assert.False(t, ok)
	assert.Equal(t, 0, rt.Stats().Sessions, "reading a closed handle created nothing")
	assert.Equal(t, 0, rt.Stats().SessionActors)
}

// Defect: an unbound strict_queue call got ErrNoWorkersAvailable while the
// pool's only worker was restarting; it has no state to lose and waits.
// strict_fail_fast gives ErrWorkerBusy, as the mode table says.
func TestUnboundStrictCallWhileOnlyWorkerRestarts(t *testing.T) {
	w := &world{}
	restart := make(chan struct{})
	policy := supervisorPolicy(time.Millisecond)
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 1, Affinity: StrictQueue, Restart: &policy,
		NewWorker: func(ctx context.Context, info WorkerInfo) (Worker, error) {
			if info.Restart {
				<-restart // hold the restart until the test has looked
			}
			return w.factory(ctx, info)
		}}}})
	_, err := call(t, rt.Session("crash"), op{Panic: true})
	require.ErrorIs(t, err, ErrWorkerFailed)
	require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Ready == 0 }, 10*time.Second, time.Millisecond)

	_, err = call(t, rt.Session("fresh-ff"), op{}, WithAffinity(StrictFailFast))
	require.ErrorIs(t, err, ErrWorkerBusy)

	done := make(chan error, 1)
	go func() {
		r, err := call(t, rt.Session("fresh"), op{})
		if err == nil && r.Incarnation != 2 {
			err = errors.New("ran on the wrong incarnation")
		}
		done <- err
	}()
	waitQueued(t, rt, "p", 1)
	close(restart)
	require.NoError(t, <-done)
	bw, inc, ok := rt.Session("fresh").Binding("p")
	require.True(t, ok, "it bound where it ran")
	assert.Equal(t, 0, bw)
	assert.Equal(t, uint64(2), inc)
}

// Incarnations are numbered per worker from 1, and the factory is told
// whether a start is a restart.
func TestIncarnationsPerWorker(t *testing.T) {
	var mu sync.Mutex
	var infos []WorkerInfo
	w := &world{}
	policy := supervisorPolicy(time.Millisecond)
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 3, Restart: &policy,
		NewWorker: func(ctx context.Context, info WorkerInfo) (Worker, error) {
			mu.Lock()
			infos = append(infos, info)
			mu.Unlock()
			return w.factory(ctx, info)
		}}}})
	r, err := call(t, rt.Session("s"), op{Panic: true})
	require.ErrorIs(t, err, ErrWorkerFailed)
	_ = r
	require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Restarts == 1 }, 10*time.Second, time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, infos, 4)
	for _, info := range infos[:3] {
		assert.Equal(t, uint64(1), info.Incarnation, "worker %d", info.ID)
		assert.False(t, info.Restart)
	}
	assert.Equal(t, uint64(2), infos[3].Incarnation)
	assert.True(t, infos[3].Restart)
}

// A panicking worker keeps its stack: in the caller's error, in the
// WorkerTainted event, with one "panic:" prefix.
func TestPanicKeepsStack(t *testing.T) {
	w := &world{}
	var events eventLog
	rt := start(t, Config{Pools: []PoolConfig{{Name: "p", Size: 1, NewWorker: w.factory}}, OnEvent: events.add})
	_, err := call(t, rt.Session("s"), op{Panic: true})
	require.ErrorIs(t, err, ErrWorkerFailed)
	var perr *PanicError
	require.ErrorAs(t, err, &perr)
	assert.Equal(t, "boom", perr.Value)
	assert.Contains(t, string(perr.Stack), "testWorker).Handle", "the stack shows where it panicked")
	assert.Equal(t, 1, strings.Count(err.Error(), "panic:"), err.Error())

	tainted := events.of("worker_tainted")
	require.Len(t, tainted, 1)
	var evPanic *PanicError
	require.ErrorAs(t, tainted[0].(messages.WorkerTainted).Err, &evPanic)
	assert.Same(t, perr, evPanic)
}

// Defect: Shutdown left a goroutine waiting for the workers when its
// context ended first.
func TestShutdownWithExpiredContextLeavesNothingBehind(t *testing.T) {
	before := goleak.IgnoreCurrent()
	w := &world{}
	rt, err := Start(Config{Pools: []PoolConfig{{Name: "p", Size: 1, NewWorker: w.factory}}})
	require.NoError(t, err)
	block := make(chan struct{})
	started := make(chan int, 1)
	done := make(chan error, 1)
	go func() {
		_, err := rt.Session("s").Call(context.Background(), op{Block: block, Started: started})
		done <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, rt.Shutdown(ctx), context.DeadlineExceeded, "the running call outlives the context")
	close(block)
	require.NoError(t, <-done)
	require.ErrorIs(t, rt.Shutdown(context.Background()), context.DeadlineExceeded,
		"a later Shutdown reports the one shutdown's outcome")
	goleak.VerifyNone(t, before)
}
