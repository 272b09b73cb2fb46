// Command actor_app is a protoactor application whose actors use Affinity
// sessions only through messages: a client actor sends requests to session
// PIDs with ctx.Request and handles the replies in its own Receive, so it
// never blocks. It walks through what a session does with each call and
// prints why.
//
//	go run ./examples/actor_app
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

// Requests the notebook worker understands.
type (
	note    struct{ text string } // append to the session's notes
	crash   struct{}              // panic: the worker is tainted and restarted
	openDoc struct{ key string }  // create a document, return a ref to it
	// hold keeps the worker busy: it calls started, then waits for release.
	hold struct {
		started func()
		release <-chan struct{}
	}
)

// notebook keeps notes per session and documents reachable by refs: state
// that lives in this worker incarnation's memory only.
type notebook struct {
	notes map[string][]string
	docs  map[string][]string
}

func newNotebook(context.Context, actors.WorkerInfo) (actors.Worker, error) {
	return &notebook{notes: map[string][]string{}, docs: map[string][]string{}}, nil
}

func (n *notebook) Handle(ctx context.Context, c messages.Call) (any, error) {
	if c.Ref != nil {
		text := c.Payload.(note).text
		n.docs[c.Ref.Key] = append(n.docs[c.Ref.Key], text)
		return len(n.docs[c.Ref.Key]), nil
	}
	switch p := c.Payload.(type) {
	case note:
		n.notes[c.Session] = append(n.notes[c.Session], p.text)
		return len(n.notes[c.Session]), nil
	case hold:
		p.started()
		select {
		case <-p.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return "held", nil
	case crash:
		panic("notebook corrupted")
	case openDoc:
		n.docs[p.key] = nil
		return c.NewRef(p.key), nil
	}
	return nil, fmt.Errorf("unknown request %T", c.Payload)
}

// HandleStream sends the session's notes, one item each.
func (n *notebook) HandleStream(_ context.Context, c messages.Call, send func(any) error) error {
	for _, text := range n.notes[c.Session] {
		if err := send(text); err != nil {
			return err
		}
	}
	return nil
}

// ReleaseSession drops a session's notes when the session ends.
func (n *notebook) ReleaseSession(_ context.Context, session string, _ messages.CleanupSource) {
	delete(n.notes, session)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "actor_app:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	rt, err := actors.Start(actors.Config{Pools: []actors.PoolConfig{{
		Name: "notebooks", Size: 2, Affinity: actors.StrictQueue, NewWorker: newNotebook,
	}}})
	if err != nil {
		return err
	}
	defer func() { _ = rt.Shutdown(ctx) }()

	fmt.Println("A strict_queue pool of 2 notebook workers; every session is an actor with a PID.")
	system := rt.ActorSystem()
	done := make(chan error, 1)
	client := &client{rt: rt, done: done}
	system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return client }))
	select {
	case err := <-done:
		if err != nil {
			return err
		}
	case <-time.After(30 * time.Second):
		return errors.New("the client actor did not finish within 30s")
	}
	return fromOutside(rt)
}

// fromOutside shows that code which is not an actor can use the same
// messages, blocking on RequestFuture.
func fromOutside(rt *actors.Runtime) error {
	fmt.Println("\n6. Outside any actor, RequestFuture works with the same messages:")
	res, err := rt.ActorSystem().Root.RequestFuture(rt.SessionPID("carol"),
		&messages.CallRequest{Payload: note{"from main"}}, 5*time.Second).Result()
	if err != nil {
		return err
	}
	r, ok := res.(*messages.CallReply)
	if !ok || r.Err != nil {
		return fmt.Errorf("RequestFuture: unexpected reply %#v", res)
	}
	say("carol <- CallRequest (future)", "%v note(s), worker %d: one reply, as for an actor", r.Value, r.Worker)
	return nil
}

func say(what, format string, args ...any) {
	fmt.Printf("  %-34s -> %s\n", what, fmt.Sprintf(format, args...))
}

// expect turns an outcome that differs from the walkthrough's into the
// example's error, so a change in behaviour cannot pass unnoticed.
func expect(ok bool, format string, args ...any) error {
	if ok {
		return nil
	}
	return fmt.Errorf("unexpected: "+format, args...)
}

// joined lists items for printing.
func joined(items []any) string {
	s := make([]string, len(items))
	for i, it := range items {
		s[i] = fmt.Sprint(it)
	}
	return strings.Join(s, ", ")
}
