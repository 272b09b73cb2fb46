// Command actor_app is a protoactor application whose actors use Affinity
// sessions only through messages: a client actor sends tagged requests to
// session PIDs with ctx.Request and handles the replies in its own Receive,
// so it never blocks (it never calls Session.Call). It walks through what a
// session does with each call and prints why, checking every outcome: the
// command exits 1 if one differs from what it explains.
//
//	go run ./examples/actor_app
//
// Files: worker.go is the user code a pool runs, client.go the client actor,
// steps.go what the client does step by step.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

const pool = "counters"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "actor_app:", err)
		os.Exit(1)
	}
}

func run() error {
	rt, err := start()
	if err != nil {
		return err
	}
	runErr := walkthrough(rt)
	return errors.Join(runErr, shutdown(rt)) // shut down even after a failure
}

// Step 1: a runtime with one strict_queue pool, and the client actor spawned
// in the runtime's own actor system (where the session actors live).
func start() (*actors.Runtime, error) {
	fmt.Println("1. Start a runtime: pool", pool, "has 2 workers in strict_queue mode, each keeping a counter per session")
	rt, err := actors.Start(actors.Config{
		Pools: []actors.PoolConfig{{Name: pool, Size: 2, Affinity: actors.StrictQueue, NewWorker: newCounter}},
		// Events also go to the actor system's event stream, where the client
		// actor learns that a worker restarted (step 4) without polling.
		PublishEvents: true,
	})
	if err != nil {
		return nil, err // a bad config wraps actors.ErrInvalidConfig
	}
	say("actors.Start", "ready; rt.ActorSystem() is the protoactor system the sessions live in")
	return rt, nil
}

func walkthrough(rt *actors.Runtime) error {
	done := make(chan clientResult, 1) // the client reports once, and never waits for main
	props := actor.PropsFromProducer(func() actor.Actor { return newClient(rt, done) })
	pid := rt.ActorSystem().Root.Spawn(props)
	say("Root.Spawn(client)", "client actor %s; from here on it drives the walkthrough by messages", pid.Id)

	// A bound on the whole walkthrough, so a bug fails the command instead of
	// hanging it; the steps themselves wait on messages, never on time.
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	var res clientResult
	select {
	case res = <-done:
	case <-timer.C:
		rt.ActorSystem().Root.Stop(pid)
		return errors.New("the client actor did not finish within 30s")
	}
	if res.err != nil {
		return res.err
	}
	return fromOutside(rt, res.alice)
}

// Step 7: code that is not an actor sends the same message and blocks on a
// future for the one reply.
func fromOutside(rt *actors.Runtime, alice int) error {
	fmt.Println("\n7. Outside any actor: Root.RequestFuture sends the same CallRequest and waits for its one reply")
	req := &messages.CallRequest{Tag: 100, Payload: count{}}
	res, err := rt.ActorSystem().Root.RequestFuture(rt.SessionPID("alice"), req, 5*time.Second).Result()
	if err != nil {
		return fmt.Errorf("RequestFuture: %w", err)
	}
	r, ok := res.(*messages.CallReply)
	if !ok || r.Err != nil || r.Tag != 100 || r.Value != alice+1 {
		return unexpected("RequestFuture reply %#v", res)
	}
	say("main <- CallReply tag 100", "count %v on worker %d, incarnation %d: alice's counter, whoever calls", r.Value, r.Worker, r.Incarnation)
	return nil
}

// Step 8: Shutdown fails waiting calls with ErrShutdown, lets running ones
// finish, and stops every actor and goroutine; the context bounds the wait.
func shutdown(rt *actors.Runtime) error {
	fmt.Println("\n8. Shut down")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	st := rt.Stats().Pools[pool]
	say("rt.Shutdown", "done: %d calls executed, %d worker restart(s), %d panic taint(s)",
		st.Executed, st.Restarts, st.Tainted[messages.TaintPanic])
	return nil
}

// say prints one step: what happened, and why.
func say(what, format string, args ...any) {
	fmt.Printf("  %-36s -> %s\n", what, fmt.Sprintf(format, args...))
}

// unexpected turns an outcome that differs from the walkthrough's
// explanation into the command's error.
func unexpected(format string, args ...any) error {
	return fmt.Errorf("unexpected: "+format, args...)
}
