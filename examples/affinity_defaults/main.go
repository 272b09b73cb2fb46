// Command affinity_defaults shows one pool with a default affinity mode and
// how single calls override it with actors.WithAffinity.
//
// The pool's default is strict_queue. A session binds to a worker on its
// first call and stays there. While that worker is busy, a hint call detours
// to another worker (the binding does not move), a strict_fail_fast call
// fails at once with ErrWorkerBusy, and a strict_queue call waits for the
// bound worker and runs there once it is free.
//
//	go run ./examples/affinity_defaults
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

const poolName = "models"

// step is an ordinary request: the worker counts it in the session's state.
type step struct{}

// hold is a slow request: it runs until release is closed, which keeps its
// worker busy (capacity 1) for as long as the example needs.
type hold struct {
	started chan<- struct{}
	release <-chan struct{}
}

// reply tells the caller where the call ran and what state it found.
type reply struct {
	Worker      int
	Incarnation uint64
	N           int // calls of this session this worker incarnation has seen, this one included
}

// counter is a stateful worker: it remembers how many calls each session
// made on it. With Capacity 1 the runtime never calls it concurrently, so the
// map needs no lock.
type counter struct {
	seen map[string]int
}

func newCounter(context.Context, actors.WorkerInfo) (actors.Worker, error) {
	return &counter{seen: make(map[string]int)}, nil
}

func (c *counter) Handle(ctx context.Context, call messages.Call) (any, error) {
	c.seen[call.Session]++
	if h, ok := call.Payload.(hold); ok {
		close(h.started)
		select {
		case <-h.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return reply{Worker: call.Worker, Incarnation: call.Incarnation, N: c.seen[call.Session]}, nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "affinity_defaults:", err)
		os.Exit(1)
	}
}

func run() error {
	// One deadline bounds the whole example, so a bug can never hang it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	rt, err := actors.Start(actors.Config{Pools: []actors.PoolConfig{{
		Name:      poolName,
		Size:      3,
		Affinity:  actors.StrictQueue, // the pool's default; calls may override it
		NewWorker: newCounter,
	}}})
	if err != nil {
		return err
	}
	fmt.Printf("pool %q: 3 workers, capacity 1 each, default affinity %s\n\n", poolName, actors.StrictQueue)

	runErr := demo(ctx, rt)
	if err := rt.Shutdown(ctx); err != nil {
		return errors.Join(runErr, fmt.Errorf("shutdown: %w", err))
	}
	return runErr
}

func demo(ctx context.Context, rt *actors.Runtime) error {
	s := rt.Session("alice")

	// 1-3: the first call binds, the next ones follow the binding.
	r, err := call(ctx, s, step{})
	if err != nil {
		return err
	}
	bound := r.Worker
	say(1, "first call (pool default)", "worker %d, n=%d: alice had no binding, so she was bound to the worker with the fewest sessions", r.Worker, r.N)
	for i := 2; i <= 3; i++ {
		if r, err = call(ctx, s, step{}); err != nil {
			return err
		}
		say(i, "call (pool default)", "worker %d, n=%d: %s", r.Worker, r.N, stayed(r.Worker, bound))
	}

	// 4: keep the bound worker busy with a slow call of the same session.
	started, release := make(chan struct{}), make(chan struct{})
	holdDone := make(chan result, 1)
	go func() {
		r, err := call(ctx, s, hold{started: started, release: release})
		holdDone <- result{r, err}
	}()
	// Whatever happens below, let the slow call finish and wait for it.
	released := false
	defer func() {
		if !released {
			close(release)
			<-holdDone
		}
	}()
	select {
	case <-started:
	case res := <-holdDone:
		return fmt.Errorf("slow call ended early: %v", res.err)
	case <-ctx.Done():
		return ctx.Err()
	}
	say(4, "slow call (pool default)", "running on worker %d: with capacity 1, alice's bound worker is now busy", bound)

	// 5: hint detours without moving the binding.
	r, err = call(ctx, s, step{}, actors.WithAffinity(actors.Hint))
	if err != nil {
		return err
	}
	w, _, _ := s.Binding(poolName)
	say(5, "WithAffinity(Hint)", "worker %d, n=%d: the bound worker was busy, so hint ran it on a free worker that has no state for alice; her binding is still worker %d",
		r.Worker, r.N, w)

	// 6: strict_fail_fast refuses at once.
	t0 := time.Now()
	_, err = call(ctx, s, step{}, actors.WithAffinity(actors.StrictFailFast))
	if !errors.Is(err, actors.ErrWorkerBusy) {
		return fmt.Errorf("strict_fail_fast: want ErrWorkerBusy, got %v", err)
	}
	say(6, "WithAffinity(StrictFailFast)", "ErrWorkerBusy after %v: the bound worker was busy and this mode never waits; the caller decides when to retry",
		time.Since(t0).Round(time.Microsecond))

	// 7: strict_queue waits in the bound worker's queue.
	queuedDone := make(chan result, 1)
	t0 = time.Now()
	go func() {
		r, err := call(ctx, s, step{}, actors.WithAffinity(actors.StrictQueue))
		queuedDone <- result{r, err}
	}()
	if err := waitFor(ctx, func() bool { return rt.Stats().Pools[poolName].Queued == 1 }); err != nil {
		<-queuedDone // the runtime answers it on shutdown or when ctx ends
		return err
	}
	say(7, "WithAffinity(StrictQueue)", "waiting: 1 call queued for worker %d, the only worker that holds alice's state", bound)

	// 8: free the worker; the queued call runs there next.
	time.Sleep(50 * time.Millisecond) // make the wait visible in the output
	close(release)
	released = true
	hr := <-holdDone
	qr := <-queuedDone
	if hr.err != nil {
		return fmt.Errorf("slow call: %w", hr.err)
	}
	if qr.err != nil {
		return fmt.Errorf("strict_queue call: %w", qr.err)
	}
	say(8, "release the slow call", "it finished on worker %d (n=%d); the queued call then ran on worker %d after waiting %v, n=%d: alice's state was all there",
		hr.r.Worker, hr.r.N, qr.r.Worker, time.Since(t0).Round(time.Millisecond), qr.r.N)

	// 9: the binding never moved.
	w, inc, _ := s.Binding(poolName)
	say(9, "s.Binding", "worker %d (incarnation %d): detours and waits never move a session; only a restarted or removed worker does", w, inc)
	return nil
}

type result struct {
	r   reply
	err error
}

func call(ctx context.Context, s *actors.Session, req any, opts ...actors.CallOption) (reply, error) {
	v, err := s.Call(ctx, req, opts...)
	if err != nil {
		return reply{}, err
	}
	return v.(reply), nil
}

// say prints one numbered step: what was done, what happened and why.
func say(n int, what, format string, args ...any) {
	fmt.Printf("%d. %-29s -> %s\n", n, what, fmt.Sprintf(format, args...))
}

func stayed(worker, bound int) string {
	if worker == bound {
		return "same worker as before: calls follow the session's binding"
	}
	return fmt.Sprintf("UNEXPECTED: bound to worker %d", bound)
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
