package main

import (
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

// client is the application's actor. It talks to sessions only with
// ctx.Request and reacts to their replies in Receive; each step of the
// walkthrough starts when the previous one has had all its replies.
type client struct {
	rt   *actors.Runtime
	done chan<- error

	tag      uint64
	handlers map[uint64]func(actor.Context, *messages.CallReply) error
	steps    []func(actor.Context) error

	// state the steps share
	count   map[string]int // notes per session, as the workers reported them
	worker  map[string]int // the worker each session is bound to
	release chan struct{}  // lets the held call of step 2 finish
	items   []any          // step 4's stream
}

// holdStarted is what the held call sends the client once it runs.
type holdStarted struct{}

func (c *client) Receive(ctx actor.Context) {
	var err error
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.handlers = map[uint64]func(actor.Context, *messages.CallReply) error{}
		c.count, c.worker = map[string]int{}, map[string]int{}
		c.steps = []func(actor.Context) error{c.inFlight, c.failFast, c.crash, c.stream, c.refs}
		err = c.next(ctx)
	case *messages.CallReply:
		err = c.reply(ctx, m)
	case holdStarted:
		err = c.busyNow(ctx)
	case *messages.StreamItem:
		c.items = append(c.items, m.Item)
	case *messages.StreamEnd:
		err = c.streamEnd(ctx, m)
	}
	if err != nil {
		c.finish(ctx, err)
	}
}

// request sends one CallRequest to a session by id and registers what to
// do with its reply.
func (c *client) request(ctx actor.Context, session string, req *messages.CallRequest, then func(actor.Context, *messages.CallReply) error) {
	c.tag++
	req.Tag = c.tag
	c.handlers[req.Tag] = then
	ctx.Request(c.rt.SessionPID(session), req)
}

func (c *client) reply(ctx actor.Context, r *messages.CallReply) error {
	then, ok := c.handlers[r.Tag]
	if !ok {
		return fmt.Errorf("reply with unknown tag %d", r.Tag)
	}
	delete(c.handlers, r.Tag)
	if err := then(ctx, r); err != nil {
		return err
	}
	if len(c.handlers) == 0 && c.items == nil {
		return c.next(ctx)
	}
	return nil
}

func (c *client) next(ctx actor.Context) error {
	if len(c.steps) == 0 {
		c.finish(ctx, nil)
		return nil
	}
	step := c.steps[0]
	c.steps = c.steps[1:]
	return step(ctx)
}

func (c *client) finish(ctx actor.Context, err error) {
	c.done <- err
	ctx.Stop(ctx.Self())
}

// Step 1: six calls in flight at once. Each session's calls run in order on
// the worker its first call bound it to.
func (c *client) inFlight(ctx actor.Context) error {
	fmt.Println("\n1. The client sends 3 notes each to alice and bob without waiting (ctx.Request):")
	for i := 1; i <= 3; i++ {
		for _, s := range []string{"alice", "bob"} {
			c.request(ctx, s, &messages.CallRequest{Payload: note{fmt.Sprintf("%s-%d", s, i)}}, c.noted(s))
		}
	}
	return nil
}

// noted checks a note's reply: one more note, on the session's worker.
func (c *client) noted(session string) func(actor.Context, *messages.CallReply) error {
	return func(_ actor.Context, r *messages.CallReply) error {
		if r.Err != nil {
			return r.Err
		}
		n := r.Value.(int)
		bound, seen := c.worker[session]
		if err := expect(n == c.count[session]+1 && (!seen || bound == r.Worker),
			"%s: note %d on worker %d", session, n, r.Worker); err != nil {
			return err
		}
		c.count[session], c.worker[session] = n, r.Worker
		say(fmt.Sprintf("%s <- CallReply #%d", session, r.Tag),
			"note %d, worker %d incarnation %d: strict_queue keeps the session on its worker, in order", n, r.Worker, r.Incarnation)
		return nil
	}
}

// Step 2: strict_fail_fast does not wait for a busy worker.
func (c *client) failFast(ctx actor.Context) error {
	fmt.Println("\n2. alice's worker is held busy; a strict_fail_fast call fails at once instead of waiting:")
	c.release = make(chan struct{})
	self, root := ctx.Self(), ctx.ActorSystem().Root
	started := func() { root.Send(self, holdStarted{}) } // runs on the worker
	c.request(ctx, "alice", &messages.CallRequest{Payload: hold{started: started, release: c.release}},
		func(_ actor.Context, r *messages.CallReply) error {
			say("alice <- CallReply (hold)", "%v after the client released it", r.Value)
			return r.Err
		})
	return nil
}

func (c *client) busyNow(ctx actor.Context) error {
	req := &messages.CallRequest{Affinity: messages.StrictFailFast, Payload: note{"urgent"}}
	c.request(ctx, "alice", req, func(_ actor.Context, r *messages.CallReply) error {
		if err := expect(errors.Is(r.Err, actors.ErrWorkerBusy), "fail-fast call: %v", r.Err); err != nil {
			return err
		}
		say("alice <- CallReply (fail fast)", "%v: errors.Is(err, ErrWorkerBusy)", r.Err)
		close(c.release) // never blocks: the held call may finish now
		return nil
	})
	return nil
}

// Step 3: a worker panic, then what each mode does with the lost state.
func (c *client) crash(ctx actor.Context) error {
	fmt.Println("\n3. bob's worker panics; its state is gone, and each mode says so in its own way:")
	c.request(ctx, "bob", &messages.CallRequest{Payload: crash{}}, func(ctx actor.Context, r *messages.CallReply) error {
		var pe *actors.PanicError
		if err := expect(errors.Is(r.Err, actors.ErrWorkerFailed) && errors.As(r.Err, &pe), "crash: %v", r.Err); err != nil {
			return err
		}
		say("bob <- CallReply (crash)", "ErrWorkerFailed; errors.As gives the panic %q and its stack", fmt.Sprint(pe.Value))
		c.request(ctx, "bob", &messages.CallRequest{Payload: note{"bob-4"}}, c.strictAfterCrash)
		return nil
	})
	return nil
}

func (c *client) strictAfterCrash(ctx actor.Context, r *messages.CallReply) error {
	if err := expect(errors.Is(r.Err, actors.ErrSessionWorkerUnavailable), "strict call after crash: %v", r.Err); err != nil {
		return err
	}
	say("bob <- CallReply (strict_queue)", "ErrSessionWorkerUnavailable: never run silently on a fresh worker")
	req := &messages.CallRequest{Affinity: messages.Hint, Payload: note{"bob-again"}}
	c.request(ctx, "bob", req, func(_ actor.Context, r *messages.CallReply) error {
		if err := expect(r.Err == nil && r.Value == 1, "hint call after crash: %v %v", r.Value, r.Err); err != nil {
			return err
		}
		c.count["bob"], c.worker["bob"] = 1, r.Worker
		say("bob <- CallReply (hint)", "note 1 on worker %d incarnation %d: hint rebinds and starts afresh", r.Worker, r.Incarnation)
		return nil
	})
	return nil
}

// Step 4: a streaming call delivers items as messages, then an end message.
func (c *client) stream(ctx actor.Context) error {
	fmt.Println("\n4. A streaming call: each item is a StreamItem message, then one StreamEnd:")
	c.items = []any{}
	c.tag++
	ctx.Request(c.rt.SessionPID("alice"), &messages.StreamRequest{Tag: c.tag})
	return nil
}

func (c *client) streamEnd(ctx actor.Context, end *messages.StreamEnd) error {
	items := c.items
	c.items = nil
	if err := expect(end.Err == nil && end.Items == uint64(c.count["alice"]) && len(items) == c.count["alice"],
		"stream: %d items, end %+v", len(items), end); err != nil {
		return err
	}
	say("alice <- StreamItem x"+fmt.Sprint(len(items)), "%s", joined(items))
	say("alice <- StreamEnd", "Err %v, Items %d", end.Err, end.Items)
	return c.next(ctx)
}

// Step 5: a ref reaches the one worker incarnation holding its object.
func (c *client) refs(ctx actor.Context) error {
	fmt.Println("\n5. A ref: an object in one worker incarnation, reached by CallRequest.Ref:")
	c.request(ctx, "alice", &messages.CallRequest{Payload: openDoc{"diary"}}, func(ctx actor.Context, r *messages.CallReply) error {
		if r.Err != nil {
			return r.Err
		}
		ref := r.Value.(messages.Ref)
		say("alice <- CallReply (openDoc)", "ref %q on worker %d incarnation %d", ref.Key, ref.Worker, ref.Incarnation)
		for i := 1; i <= 2; i++ {
			c.request(ctx, "alice", &messages.CallRequest{Ref: &ref, Payload: note{fmt.Sprint("entry ", i)}},
				func(_ actor.Context, r *messages.CallReply) error {
					if err := expect(r.Err == nil && r.Worker == ref.Worker, "ref call: %v on %d", r.Err, r.Worker); err != nil {
						return err
					}
					say("alice <- CallReply (ref)", "diary has %v entries, on worker %d: where the ref lives", r.Value, r.Worker)
					return nil
				})
		}
		return nil
	})
	return nil
}
