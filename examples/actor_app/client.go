package main

import (
	"fmt"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

// client is the application's actor. It reaches sessions only by sending
// messages to their PIDs (ctx.Request) and reacts to the replies in
// Receive, so it never blocks. Each step sends its requests and registers a
// handler per Tag; once a step has no reply, stream or event outstanding,
// the client sends itself nextStep and the following step begins.
type client struct {
	rt   *actors.Runtime
	done chan<- clientResult

	steps    []step
	tag      uint64
	pending  map[uint64]replyHandler // calls in flight, by Tag
	inStep   bool                    // a step has started and not yet completed
	finished bool
	sub      *eventstream.Subscription

	count        map[string]int            // each session's counter, as its worker reported it
	where        map[string]where          // the worker incarnation each session's state lives on
	restarts     map[int]uint64            // newest incarnation seen in a WorkerRestarted event
	release      chan struct{}             // closed to let step 3's held call finish
	onBusy       func(actor.Context) error // step 3's continuation once the held call runs
	awaitRestart *where                    // step 4 waits for a newer incarnation of this worker
	stream       *streamState
	docLen       int
}

type (
	replyHandler func(actor.Context, *messages.CallReply) error
	step         struct {
		title string
		run   func(actor.Context)
	}
	// where is a worker incarnation: state lives in one and dies with it.
	where struct {
		worker int
		inc    uint64
	}
	streamState struct {
		tag   uint64
		items []any
	}
	// clientResult tells main how the walkthrough ended, and alice's count
	// for step 7 (main never reads the actor's fields).
	clientResult struct {
		err   error
		alice int
	}
	nextStep    struct{} // the client to itself: the current step is complete
	holdStarted struct{} // the held call, from its worker: it is running now
)

func newClient(rt *actors.Runtime, done chan<- clientResult) *client {
	c := &client{rt: rt, done: done, pending: map[uint64]replyHandler{},
		count: map[string]int{}, where: map[string]where{}, restarts: map[int]uint64{}}
	c.steps = []step{
		{"2. Calls in flight: the client sends 3 counts each to alice and bob with ctx.Request, without waiting", c.inFlight},
		{"3. strict_fail_fast on a busy worker: alice's worker is held by a call that waits for the client", c.failFast},
		{"4. A worker panics: bob's counter dies with it, and strict calls refuse to pretend otherwise", c.crash},
		{"5. A streaming call, throttled to one item ahead of the acks: StreamItem messages, then exactly one StreamEnd", c.streaming},
		{"6. A ref: an object in one worker incarnation, reached with CallRequest.Ref", c.ref},
	}
	return c
}

func (c *client) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*actor.Stopped); ok {
		ctx.ActorSystem().EventStream.Unsubscribe(c.sub) // no more events for a stopped actor
		return
	}
	if c.finished {
		return // a failed walkthrough ignores whatever was still on its way
	}
	if err := c.handle(ctx); err != nil {
		c.finish(ctx, err)
		return
	}
	c.maybeNext(ctx)
}

func (c *client) handle(ctx actor.Context) error {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.subscribe(ctx)
		ctx.Send(ctx.Self(), nextStep{})
	case nextStep:
		c.next(ctx)
	case *messages.CallReply:
		return c.reply(ctx, m)
	case holdStarted:
		if c.onBusy == nil {
			return unexpected("a held call started outside step 3")
		}
		return c.onBusy(ctx)
	case messages.WorkerRestarted:
		return c.workerRestarted(ctx, m)
	case *messages.StreamItem:
		return c.streamItem(ctx, m)
	case *messages.StreamEnd:
		return c.streamEnd(m)
	}
	return nil
}

// subscribe forwards the runtime's WorkerRestarted events (published on the
// actor system's event stream with Config.PublishEvents) to this actor's
// mailbox: the handler runs on the publisher's goroutine, so it only sends.
func (c *client) subscribe(ctx actor.Context) {
	self, root := ctx.Self(), ctx.ActorSystem().Root
	c.sub = ctx.ActorSystem().EventStream.SubscribeWithPredicate(
		func(ev any) { root.Send(self, ev) },
		func(ev any) bool { _, ok := ev.(messages.WorkerRestarted); return ok })
}

// call sends one tagged request to a session by id and registers what to do
// with its reply. The PID names the session, not an activation: it is valid
// before the session's first call and after the session passivated.
func (c *client) call(ctx actor.Context, session string, req *messages.CallRequest, then replyHandler) uint64 {
	c.tag++
	req.Tag = c.tag
	c.pending[req.Tag] = then
	ctx.Request(c.rt.SessionPID(session), req)
	return req.Tag
}

func (c *client) reply(ctx actor.Context, r *messages.CallReply) error {
	then, ok := c.pending[r.Tag]
	if !ok {
		return fmt.Errorf("reply with unknown tag %d", r.Tag)
	}
	delete(c.pending, r.Tag)
	return then(ctx, r)
}

// maybeNext ends the current step once nothing it started is outstanding:
// no reply, no stream, no awaited event. The client tells itself so with a
// message rather than starting the next step inside this one's handler.
func (c *client) maybeNext(ctx actor.Context) {
	if !c.inStep || c.finished || len(c.pending) > 0 || c.stream != nil || c.awaitRestart != nil {
		return
	}
	c.inStep = false
	ctx.Send(ctx.Self(), nextStep{})
}

func (c *client) next(ctx actor.Context) {
	if len(c.steps) == 0 {
		c.finish(ctx, nil)
		return
	}
	s := c.steps[0]
	c.steps, c.inStep = c.steps[1:], true
	fmt.Printf("\n%s\n", s.title)
	s.run(ctx)
}

// finish reports the outcome once and stops the actor. A held call is let go
// first, so a failure cannot leave a worker blocked.
func (c *client) finish(ctx actor.Context, err error) {
	c.finished = true
	if c.release != nil {
		close(c.release)
		c.release = nil
	}
	c.done <- clientResult{err: err, alice: c.count["alice"]}
	ctx.Stop(ctx.Self())
}

// counted checks a count reply: one more than before, on the incarnation
// holding the session's counter (strict_queue never runs it elsewhere).
func (c *client) counted(session, why string) replyHandler {
	return func(_ actor.Context, r *messages.CallReply) error {
		if r.Err != nil {
			return fmt.Errorf("%s: %w", session, r.Err)
		}
		n, _ := r.Value.(int)
		at := where{r.Worker, r.Incarnation}
		if prev, seen := c.where[session]; n != c.count[session]+1 || (seen && prev != at) {
			return unexpected("%s: count %d on worker %d incarnation %d, after count %d on %+v", session, n, r.Worker, r.Incarnation, c.count[session], prev)
		}
		c.count[session], c.where[session] = n, at
		say(fmt.Sprintf("%s <- CallReply tag %d", session, r.Tag), "count %d on worker %d, incarnation %d: %s", n, r.Worker, r.Incarnation, why)
		return nil
	}
}
