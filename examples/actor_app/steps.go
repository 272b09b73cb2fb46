package main

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

// The client's steps. Each sends requests and registers reply handlers; the
// handlers check the outcome, print it and may send further requests.

// Step 2: six calls in flight at once. Each session binds to a worker on its
// first call, and its calls run there in order, so replies of one session
// arrive in order with a growing count. Replies of different sessions may
// interleave: the Tag says which request each one answers.
func (c *client) inFlight(ctx actor.Context) {
	for range 3 {
		for _, s := range []string{"alice", "bob"} {
			c.call(ctx, s, &messages.CallRequest{Payload: count{}}, c.counted(s, "the counter lives on this worker incarnation"))
		}
	}
	say("client -> 6 CallRequests", "tags 1-6 sent in one Receive; each reply is a message, matched by its Tag")
	say("", "a session's replies come in order; alice's and bob's may interleave (two workers)")
}

// Step 3: alice's worker runs a call that waits for the client. The worker
// tells the client it started (a message), so the fail-fast call is sent
// only while the worker is certainly busy.
func (c *client) failFast(ctx actor.Context) {
	c.release = make(chan struct{})
	self, root := ctx.Self(), ctx.ActorSystem().Root
	started := func() { root.Send(self, holdStarted{}) } // on the worker; Send never blocks
	c.call(ctx, "alice", &messages.CallRequest{Payload: hold{started: started, release: c.release}}, c.holdDone)
	c.onBusy = c.busyNow
}

func (c *client) busyNow(ctx actor.Context) error {
	c.onBusy = nil
	say("alice's worker -> holdStarted", "the held call is running: worker %d is at capacity (1 call)", c.where["alice"].worker)
	req := &messages.CallRequest{Affinity: actors.StrictFailFast, Payload: count{}}
	c.call(ctx, "alice", req, c.failedFast)
	return nil
}

func (c *client) failedFast(ctx actor.Context, r *messages.CallReply) error {
	if !errors.Is(r.Err, actors.ErrWorkerBusy) {
		return unexpected("strict_fail_fast call on a busy worker: want ErrWorkerBusy, got %v", r.Err)
	}
	say(fmt.Sprintf("alice <- CallReply tag %d", r.Tag), "errors.Is(Err, ErrWorkerBusy): strict_fail_fast refuses at once instead of waiting (%v)", r.Err)
	// The pool's own mode, strict_queue, waits for the same worker instead.
	c.call(ctx, "alice", &messages.CallRequest{Payload: count{}}, c.counted("alice", "strict_queue waited for the held call, then ran on the same worker"))
	close(c.release) // the example, not a timer, decides when the held call ends
	c.release = nil
	say("client closes release", "the held call may finish; the waiting strict_queue call runs after it")
	return nil
}

func (c *client) holdDone(_ actor.Context, r *messages.CallReply) error {
	if r.Err != nil {
		return fmt.Errorf("held call: %w", r.Err)
	}
	say(fmt.Sprintf("alice <- CallReply tag %d", r.Tag), "%v: the held call finished first, calls of a session on one worker keep their order", r.Value)
	return nil
}

// Step 4: a panic taints bob's worker; the pool supervisor restarts it as a
// new incarnation with empty memory.
func (c *client) crash(ctx actor.Context) {
	c.call(ctx, "bob", &messages.CallRequest{Payload: crash{}}, c.crashed)
}

func (c *client) crashed(ctx actor.Context, r *messages.CallReply) error {
	var pe *actors.PanicError
	if !errors.Is(r.Err, actors.ErrWorkerFailed) || !errors.As(r.Err, &pe) {
		return unexpected("panicking call: want ErrWorkerFailed with a *PanicError, got %v", r.Err)
	}
	say(fmt.Sprintf("bob <- CallReply tag %d", r.Tag), "errors.Is(Err, ErrWorkerFailed); errors.As gives *PanicError{Value: %q}, whose Stack shows where: %s",
		fmt.Sprint(pe.Value), panicSite(pe.Stack))
	lost := c.where["bob"]
	c.awaitRestart = &lost
	return c.checkRestarted(ctx)
}

// panicSite picks the worker's frame out of a panic stack.
func panicSite(stack []byte) string {
	const frame = "main.(*counter).Handle"
	if bytes.Contains(stack, []byte(frame)) {
		return frame
	}
	return "(frame not found)"
}

// workerRestarted records the event and resumes step 4 if it waits for it.
// The event may even arrive before the crash reply: both orders work.
func (c *client) workerRestarted(ctx actor.Context, ev messages.WorkerRestarted) error {
	c.restarts[ev.Worker] = max(c.restarts[ev.Worker], ev.Incarnation)
	return c.checkRestarted(ctx)
}

// checkRestarted continues step 4 once the lost incarnation's worker runs a
// newer one.
func (c *client) checkRestarted(ctx actor.Context) error {
	lost := c.awaitRestart
	if lost == nil || c.restarts[lost.worker] <= lost.inc {
		return nil // not yet: the WorkerRestarted event will call again
	}
	c.awaitRestart = nil
	say("event WorkerRestarted", "the supervisor restarted worker %d as incarnation %d, with empty memory", lost.worker, c.restarts[lost.worker])
	return c.afterRestart(ctx, *lost)
}

// afterRestart: the worker is back, but bob's counter is not. A strict call
// says so; one hint call rebinds bob and starts his state afresh.
func (c *client) afterRestart(ctx actor.Context, lost where) error {
	c.call(ctx, "bob", &messages.CallRequest{Payload: count{}}, func(ctx actor.Context, r *messages.CallReply) error {
		if !errors.Is(r.Err, actors.ErrSessionWorkerUnavailable) {
			return unexpected("strict call after the restart: want ErrSessionWorkerUnavailable, got %v", r.Err)
		}
		say(fmt.Sprintf("bob <- CallReply tag %d", r.Tag), "errors.Is(Err, ErrSessionWorkerUnavailable): the worker is back but bob's counter is not; strict never starts afresh silently")
		c.call(ctx, "bob", &messages.CallRequest{Affinity: actors.Hint, Payload: count{}}, c.rebound(lost))
		return nil
	})
	return nil
}

func (c *client) rebound(lost where) replyHandler {
	return func(ctx actor.Context, r *messages.CallReply) error {
		n, _ := r.Value.(int)
		if r.Err != nil || n != 1 || (where{r.Worker, r.Incarnation}) == lost {
			return unexpected("hint call after the restart: count %v on worker %d incarnation %d, err %v", r.Value, r.Worker, r.Incarnation, r.Err)
		}
		c.count["bob"], c.where["bob"] = n, where{r.Worker, r.Incarnation}
		say(fmt.Sprintf("bob <- CallReply tag %d (hint)", r.Tag), "count 1 on worker %d, incarnation %d: a hint call rebinds the session, its state starts over", r.Worker, r.Incarnation)
		c.call(ctx, "bob", &messages.CallRequest{Payload: count{}}, c.counted("bob", "strict calls work again, on the new binding"))
		return nil
	}
}

// Step 5: a streaming call never waits for a busy worker; alice's is free.
// With Window 1 the worker sends each item only once the one before was
// acknowledged: a slow receiver holds the worker back instead of growing
// its own mailbox.
func (c *client) streaming(ctx actor.Context) {
	c.tag++
	c.stream = &streamState{tag: c.tag}
	ctx.Request(c.rt.SessionPID("alice"), &messages.StreamRequest{Tag: c.tag, Window: 1, Payload: countTo{n: 3}})
}

func (c *client) streamItem(ctx actor.Context, m *messages.StreamItem) error {
	if c.stream == nil || m.Tag != c.stream.tag || m.Seq != uint64(len(c.stream.items)) {
		return unexpected("stream item tag %d seq %d", m.Tag, m.Seq)
	}
	c.stream.items = append(c.stream.items, m.Item)
	say(fmt.Sprintf("alice <- StreamItem seq %d", m.Seq), "%v; acknowledged, so the worker may send the next", m.Item)
	ctx.Request(c.rt.SessionPID("alice"), &messages.StreamAck{Tag: m.Tag, Items: m.Seq + 1})
	return nil
}

func (c *client) streamEnd(m *messages.StreamEnd) error {
	if c.stream == nil || m.Tag != c.stream.tag || m.Err != nil || m.Items != 3 || len(c.stream.items) != 3 {
		return unexpected("stream end %+v", m)
	}
	c.stream = nil
	say("alice <- StreamEnd", "Err nil, Items %d: the stream ended cleanly after every item", m.Items)
	return nil
}

// Step 6: a worker returns a ref to an object in its memory; calls with
// CallRequest.Ref run on exactly that incarnation, in any mode.
func (c *client) ref(ctx actor.Context) {
	c.call(ctx, "alice", &messages.CallRequest{Payload: openDoc{key: "diary"}}, func(ctx actor.Context, r *messages.CallReply) error {
		ref, ok := r.Value.(messages.Ref)
		if r.Err != nil || !ok {
			return unexpected("openDoc: %v, %v", r.Value, r.Err)
		}
		say(fmt.Sprintf("alice <- CallReply tag %d", r.Tag), "a messages.Ref %q to worker %d, incarnation %d (pool %s)", ref.Key, ref.Worker, ref.Incarnation, ref.Pool)
		for i := 1; i <= 2; i++ {
			req := &messages.CallRequest{Ref: &ref, Payload: write{text: fmt.Sprint("entry ", i)}}
			c.call(ctx, "alice", req, c.wrote(ref))
		}
		return nil
	})
}

func (c *client) wrote(ref messages.Ref) replyHandler {
	return func(_ actor.Context, r *messages.CallReply) error {
		n, _ := r.Value.(int)
		if r.Err != nil || n != c.docLen+1 || r.Worker != ref.Worker || r.Incarnation != ref.Incarnation {
			return unexpected("ref call: %v on worker %d incarnation %d, err %v", r.Value, r.Worker, r.Incarnation, r.Err)
		}
		c.docLen = n
		say(fmt.Sprintf("alice <- CallReply tag %d (ref)", r.Tag), "the diary has %d entries, on worker %d incarnation %d: where the ref lives", n, r.Worker, r.Incarnation)
		return nil
	}
}
