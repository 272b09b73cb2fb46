// Command multi_session runs two pools in one runtime and walks through the
// cases where affinity matters most: choosing the pool per call, overriding
// the mode per call, workers that panic or return a fatal error, refs to
// objects living in one worker incarnation, and streaming calls.
//
//	go run ./examples/multi_session
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

const (
	hintPool   = "hint_pool"
	strictPool = "strict_pool"
)

// Requests the worker understands.
type (
	note    struct{}              // count this call in the session's state
	crash   struct{}              // panic: the worker is tainted and restarted
	corrupt struct{}              // return a Fatal error: same, without a panic
	newDoc  struct{ key string }  // create a document and return a ref to it
	addLine struct{ text string } // append to the ref's document
	count   struct{ n int }       // streaming: send n items
)

// hold keeps its worker busy until release is closed, reporting the worker
// id on started once it runs.
type hold struct {
	started chan<- int
	release <-chan struct{}
}

// reply tells the caller where a call ran and what state it found there.
type reply struct {
	Worker      int
	Incarnation uint64
	N           int // calls of this session seen by this worker incarnation, this one included
}

var errCorrupt = errors.New("document index corrupted")

// docWorker keeps per-session counters and documents in memory: state that
// a restart loses. With Capacity 1 (the default) the runtime never calls it
// concurrently, so its maps need no lock.
type docWorker struct {
	seen map[string]int
	docs map[string][]string
}

func newDocWorker(context.Context, actors.WorkerInfo) (actors.Worker, error) {
	return &docWorker{seen: make(map[string]int), docs: make(map[string][]string)}, nil
}

func (d *docWorker) Handle(ctx context.Context, call messages.Call) (any, error) {
	d.seen[call.Session]++
	here := reply{Worker: call.Worker, Incarnation: call.Incarnation, N: d.seen[call.Session]}
	switch req := call.Payload.(type) {
	case note:
		return here, nil
	case crash:
		panic("simulated bug")
	case corrupt:
		// Fatal: this incarnation's memory cannot be trusted any more.
		return nil, actors.Fatal(errCorrupt)
	case newDoc:
		d.docs[req.key] = nil
		return call.NewRef(req.key), nil
	case addLine:
		if call.Ref == nil {
			return nil, errors.New("addLine needs a ref")
		}
		doc, ok := d.docs[call.Ref.Key]
		if !ok {
			return nil, fmt.Errorf("no document %q", call.Ref.Key)
		}
		d.docs[call.Ref.Key] = append(doc, req.text)
		here.N = len(d.docs[call.Ref.Key])
		return here, nil
	case hold:
		req.started <- call.Worker
		select {
		case <-req.release:
			return here, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("unknown request %T", call.Payload)
}

func (d *docWorker) HandleStream(ctx context.Context, call messages.Call, send func(any) error) error {
	req, ok := call.Payload.(count)
	if !ok {
		return fmt.Errorf("unknown stream request %T", call.Payload)
	}
	for i := 1; i <= req.n; i++ {
		if err := send(fmt.Sprintf("chunk %d/%d from worker %d", i, req.n, call.Worker)); err != nil {
			return err // the caller stopped reading
		}
	}
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "multi_session:", err)
		os.Exit(1)
	}
}

func run() error {
	// One deadline bounds the whole example, so a bug can never hang it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	rt, err := actors.Start(actors.Config{
		Pools: []actors.PoolConfig{
			{Name: hintPool, Size: 2, Affinity: actors.Hint, NewWorker: newDocWorker},
			{Name: strictPool, Size: 2, Affinity: actors.StrictQueue, NewWorker: newDocWorker},
		},
		DefaultPool: hintPool, // calls without WithPool go here
	})
	if err != nil {
		return err
	}
	fmt.Printf("%s: 2 workers, default hint; %s: 2 workers, default strict_queue; calls without WithPool go to %s\n",
		hintPool, strictPool, hintPool)

	runErr := demo(ctx, rt)
	if err := rt.Shutdown(ctx); err != nil {
		return errors.Join(runErr, fmt.Errorf("shutdown: %w", err))
	}
	return runErr
}

func demo(ctx context.Context, rt *actors.Runtime) error {
	for _, section := range []func(context.Context, *actors.Runtime) error{
		poolSelection, overrides, panics, fatalErrors, refs, streams,
	} {
		if err := section(ctx, rt); err != nil {
			return err
		}
	}
	return nil
}

// poolSelection: one session, one binding per pool.
func poolSelection(ctx context.Context, rt *actors.Runtime) error {
	header("Pool selection with WithPool")
	bob := rt.Session("bob")
	r, err := call(ctx, bob, note{})
	if err != nil {
		return err
	}
	say("bob: Call (no pool named)", "%s worker %d: the runtime's default pool", hintPool, r.Worker)
	if r, err = call(ctx, bob, note{}, actors.WithPool(strictPool)); err != nil {
		return err
	}
	say("bob: WithPool(strict_pool)", "%s worker %d, n=%d: a binding is per (session, pool), so bob now has one in each pool", strictPool, r.Worker, r.N)
	hw, _, _ := bob.Binding(hintPool)
	sw, _, _ := bob.Binding(strictPool)
	say("bob: Binding", "%s: worker %d, %s: worker %d", hintPool, hw, strictPool, sw)
	_, err = call(ctx, bob, note{}, actors.WithPool("gpu_pool"))
	if !errors.Is(err, actors.ErrPoolNotFound) {
		return unexpected("unknown pool", actors.ErrPoolNotFound, err)
	}
	say("bob: WithPool(gpu_pool)", "ErrPoolNotFound: the runtime has no such pool")
	return nil
}

// overrides: per-call modes while bob's strict_pool worker is busy.
func overrides(ctx context.Context, rt *actors.Runtime) error {
	header("Per-call overrides in multi-pool mode")
	bob := rt.Session("bob")
	busy, release, err := occupy(ctx, bob, actors.WithPool(strictPool))
	if err != nil {
		return err
	}
	defer release() // idempotent; covers the early returns
	say("bob: slow call in strict_pool", "running on worker %d, which is now busy", busy)

	t0 := time.Now()
	_, err = call(ctx, bob, note{}, actors.WithPool(strictPool), actors.WithAffinity(actors.StrictFailFast))
	if !errors.Is(err, actors.ErrWorkerBusy) {
		return unexpected("strict_fail_fast", actors.ErrWorkerBusy, err)
	}
	say("bob: strict_pool + StrictFailFast", "ErrWorkerBusy after %v: the override beats the pool's strict_queue default", since(t0))

	r, err := call(ctx, bob, note{}, actors.WithPool(strictPool), actors.WithAffinity(actors.Hint))
	if err != nil {
		return err
	}
	w, _, _ := bob.Binding(strictPool)
	say("bob: strict_pool + Hint", "ran on worker %d (n=%d, no state there): a hint detour; bob stays bound to worker %d", r.Worker, r.N, w)

	if r, err = call(ctx, bob, note{}, actors.WithPool(hintPool)); err != nil {
		return err
	}
	say("bob: WithPool(hint_pool)", "worker %d at once, n=%d: a busy worker in one pool does not affect the other", r.Worker, r.N)
	if err := release(); err != nil {
		return fmt.Errorf("slow call: %w", err)
	}
	say("bob: slow call released", "it finished; worker %d is free again", busy)
	return nil
}

// panics: a panicking worker, then a strict and a hint session bound to it.
func panics(ctx context.Context, rt *actors.Runtime) error {
	header("A worker panics (strict_pool)")
	carol := rt.Session("carol")
	r, err := call(ctx, carol, note{}, actors.WithPool(strictPool))
	if err != nil {
		return err
	}
	target := r.Worker
	// Find a second session bound to the same worker; it will call with a
	// Hint override. (Bindings are balanced, so not every name lands there.)
	dave, err := sessionOn(ctx, rt, strictPool, target, "dave", "dan", "dora", "dex")
	if err != nil {
		return err
	}
	say("carol and "+dave.ID(), "both bound to %s worker %d; carol calls with the pool default (strict_queue), %s with WithAffinity(Hint)", strictPool, target, dave.ID())

	restarts := rt.Stats().Pools[strictPool].Restarts
	_, err = call(ctx, carol, crash{}, actors.WithPool(strictPool))
	if !errors.Is(err, actors.ErrWorkerFailed) {
		return unexpected("panicking call", actors.ErrWorkerFailed, err)
	}
	say("carol: a call that panics", "ErrWorkerFailed: the call running when the worker panicked always gets an error")
	if err := waitRestarted(ctx, rt, strictPool, restarts); err != nil {
		return err
	}
	say("supervisor", "restarted worker %d as a new incarnation, with empty memory", target)

	_, err = call(ctx, carol, note{}, actors.WithPool(strictPool))
	if !errors.Is(err, actors.ErrSessionWorkerUnavailable) {
		return unexpected("strict call after restart", actors.ErrSessionWorkerUnavailable, err)
	}
	say("carol: strict_queue call", "ErrSessionWorkerUnavailable: her state died with the old incarnation; a strict call never runs silently on a worker that lost it")

	r, err = call(ctx, dave, note{}, actors.WithPool(strictPool), actors.WithAffinity(actors.Hint))
	if err != nil {
		return err
	}
	w, inc, _ := dave.Binding(strictPool)
	say(dave.ID()+": Hint call", "ran on worker %d, n=%d: hint rebinds transparently (now worker %d, incarnation %d) and starts from empty state", r.Worker, r.N, w, inc)

	// The documented way back for a strict session: one hint call rebinds it
	// (closing the session works too).
	if _, err = call(ctx, carol, note{}, actors.WithPool(strictPool), actors.WithAffinity(actors.Hint)); err != nil {
		return err
	}
	if r, err = call(ctx, carol, note{}, actors.WithPool(strictPool)); err != nil {
		return err
	}
	say("carol: one Hint call, then strict", "worker %d, n=%d: the hint call rebound her, strict calls work again (on new state)", r.Worker, r.N)
	return nil
}

// fatalErrors: a worker returning actors.Fatal(err).
func fatalErrors(ctx context.Context, rt *actors.Runtime) error {
	header("A worker returns actors.Fatal(err) (hint_pool)")
	erin := rt.Session("erin")
	r, err := call(ctx, erin, note{})
	if err != nil {
		return err
	}
	say("erin: call", "%s worker %d, incarnation %d, n=%d", hintPool, r.Worker, r.Incarnation, r.N)
	restarts := rt.Stats().Pools[hintPool].Restarts
	_, err = call(ctx, erin, corrupt{})
	if !errors.Is(err, errCorrupt) || !errors.Is(err, actors.ErrWorkerFailed) || !actors.IsFatal(err) {
		return unexpected("fatal call", errCorrupt, err)
	}
	say("erin: call returning Fatal", "ErrWorkerFailed wrapping the worker's own error (%q: errors.Is holds for both), and the worker is tainted",
		err)
	if err := waitRestarted(ctx, rt, hintPool, restarts); err != nil {
		return err
	}
	tainted := rt.Stats().Pools[hintPool].Tainted[messages.TaintFatalError]
	say("supervisor", "restarted worker %d (%s taints so far: %d)", r.Worker, messages.TaintFatalError, tainted)
	if r, err = call(ctx, erin, note{}); err != nil {
		return err
	}
	say("erin: call (pool default: hint)", "worker %d, incarnation %d, n=%d: rebound transparently, state starts over", r.Worker, r.Incarnation, r.N)
	return nil
}

// refs: a handle to an object living in one worker incarnation.
func refs(ctx context.Context, rt *actors.Runtime) error {
	header("Refs (strict_pool)")
	frank := rt.Session("frank")
	v, err := frank.Call(ctx, newDoc{key: "draft"}, actors.WithPool(strictPool))
	if err != nil {
		return err
	}
	ref := v.(messages.Ref)
	say("frank: newDoc", "the worker returned call.NewRef(%q): pool %s, worker %d, incarnation %d", ref.Key, ref.Pool, ref.Worker, ref.Incarnation)
	for _, line := range []string{"hello", "world"} {
		v, err := rt.CallRef(ctx, ref, addLine{text: line})
		if err != nil {
			return err
		}
		r := v.(reply)
		say("rt.CallRef(ref, addLine)", "worker %d, incarnation %d, document has %d line(s): the ref carries its pool and reaches that incarnation", r.Worker, r.Incarnation, r.N)
	}
	restarts := rt.Stats().Pools[strictPool].Restarts
	if _, err := rt.CallRef(ctx, ref, crash{}); !errors.Is(err, actors.ErrWorkerFailed) {
		return unexpected("panicking ref call", actors.ErrWorkerFailed, err)
	}
	say("rt.CallRef(ref, crash)", "ErrWorkerFailed: the worker holding the document panicked")
	if err := waitRestarted(ctx, rt, strictPool, restarts); err != nil {
		return err
	}
	if _, err := rt.CallRef(ctx, ref, addLine{text: "again"}); !errors.Is(err, actors.ErrRefLost) {
		return unexpected("ref call after restart", actors.ErrRefLost, err)
	}
	say("rt.CallRef after restart", "ErrRefLost: the document lived in the old incarnation; a ref never moves, in any mode")
	return nil
}

// streams: Session.Stream, and a stream on a busy strict_queue worker.
func streams(ctx context.Context, rt *actors.Runtime) error {
	header("Streaming")
	grace := rt.Session("grace")
	st, err := grace.Stream(ctx, count{n: 3})
	if err != nil {
		return err
	}
	defer st.Close()
	var items []any
	for {
		item, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		items = append(items, item)
	}
	say("grace: Stream in hint_pool", "Recv gave %q, then io.EOF", items)

	busy, release, err := occupy(ctx, grace, actors.WithPool(strictPool))
	if err != nil {
		return err
	}
	defer release()
	t0 := time.Now()
	if _, err := grace.Stream(ctx, count{n: 3}, actors.WithPool(strictPool)); !errors.Is(err, actors.ErrWorkerBusy) {
		return unexpected("stream on a busy worker", actors.ErrWorkerBusy, err)
	}
	say("grace: Stream in strict_pool", "ErrWorkerBusy after %v while worker %d is busy: streams never wait, even under strict_queue", since(t0), busy)
	return release()
}

// sessionOn returns the first of names whose session binds to worker in
// pool. The ones that bound elsewhere are closed, but only at the end: while
// open they count in the balancing that steers the next binding.
func sessionOn(ctx context.Context, rt *actors.Runtime, pool string, worker int, names ...string) (*actors.Session, error) {
	var others []*actors.Session
	defer func() {
		for _, s := range others {
			s.Close()
		}
	}()
	for _, name := range names {
		s := rt.Session(name)
		r, err := call(ctx, s, note{}, actors.WithPool(pool))
		if err != nil {
			return nil, err
		}
		if r.Worker == worker {
			return s, nil
		}
		others = append(others, s)
	}
	return nil, fmt.Errorf("no session bound to %s worker %d", pool, worker)
}

// occupy starts a slow call of s and returns once a worker runs it. release
// lets it finish and returns its error; it may be called more than once.
func occupy(ctx context.Context, s *actors.Session, opts ...actors.CallOption) (worker int, release func() error, err error) {
	started := make(chan int, 1)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := s.Call(ctx, hold{started: started, release: stop}, opts...)
		done <- err
	}()
	var (
		released bool
		result   error
	)
	release = func() error {
		if !released {
			released = true
			close(stop)
			result = <-done
		}
		return result
	}
	select {
	case worker = <-started:
		return worker, release, nil
	case err := <-done:
		released, result = true, err
		return -1, release, fmt.Errorf("slow call ended before it started: %w", err)
	}
}

// waitRestarted waits until pool has restarted a worker since the restart
// count was before, and all its workers are ready again.
func waitRestarted(ctx context.Context, rt *actors.Runtime, pool string, before uint64) error {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		ps := rt.Stats().Pools[pool]
		if ps.Restarts > before && ps.Ready == ps.Size {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to restart a worker: %w", pool, ctx.Err())
		case <-t.C:
		}
	}
}

func call(ctx context.Context, s *actors.Session, req any, opts ...actors.CallOption) (reply, error) {
	v, err := s.Call(ctx, req, opts...)
	if err != nil {
		return reply{}, err
	}
	return v.(reply), nil
}

func unexpected(what string, want, got error) error {
	return fmt.Errorf("%s: want %v, got %v", what, want, got)
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Microsecond) }

func header(title string) { fmt.Printf("\n%s\n", title) }

// say prints one step: what was done, what happened and why.
func say(what, format string, args ...any) {
	fmt.Printf("  %-34s -> %s\n", what, fmt.Sprintf(format, args...))
}
