package actors_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

// counter keeps per-session state in the worker's memory.
type counter struct{ seen map[string]int }

func (c *counter) Handle(_ context.Context, call messages.Call) (any, error) {
	c.seen[call.Session]++
	return fmt.Sprintf("worker %d has seen %s %d times", call.Worker, call.Session, c.seen[call.Session]), nil
}

func newCounter(context.Context, actors.WorkerInfo) (actors.Worker, error) {
	return &counter{seen: map[string]int{}}, nil
}

func Example() {
	ctx := context.Background()
	rt, err := actors.Start(actors.Config{Pools: []actors.PoolConfig{
		{Name: "counters", Size: 2, Affinity: actors.StrictQueue, NewWorker: newCounter},
	}})
	if err != nil {
		panic(err)
	}
	defer func() { _ = rt.Shutdown(ctx) }()

	alice, bob := rt.Session("alice"), rt.Session("bob")
	for i := 0; i < 2; i++ {
		out, _ := alice.Call(ctx, nil)
		fmt.Println(out)
	}
	out, _ := bob.Call(ctx, nil)
	fmt.Println(out)

	_, err = alice.Call(ctx, nil, actors.WithPool("models"))
	fmt.Println(errors.Is(err, actors.ErrPoolNotFound))
	// Output:
	// worker 0 has seen alice 1 times
	// worker 0 has seen alice 2 times
	// worker 1 has seen bob 1 times
	// true
}

func ExampleParseAffinity() {
	mode, err := actors.ParseAffinity("strict_fail_fast")
	fmt.Println(mode, err)
	_, err = actors.ParseAffinity("sticky")
	fmt.Println(errors.Is(err, actors.ErrInvalidAffinity))
	// Output:
	// strict_fail_fast <nil>
	// true
}

// fragile panics on "crash", as a worker whose state got corrupted might.
type fragile struct{}

func (fragile) Handle(_ context.Context, call messages.Call) (any, error) {
	if call.Payload == "crash" {
		panic("state corrupted")
	}
	return "ok", nil
}

// A watcher sees every taint and restart, with no OnEvent configured.
func ExampleRuntime_WatchWorkers() {
	ctx := context.Background()
	rt, err := actors.Start(actors.Config{Pools: []actors.PoolConfig{{Name: "models", Size: 1,
		NewWorker: func(context.Context, actors.WorkerInfo) (actors.Worker, error) { return fragile{}, nil }}}})
	if err != nil {
		panic(err)
	}
	defer func() { _ = rt.Shutdown(ctx) }()
	events := make(chan messages.Event, 4)
	stop := rt.WatchWorkers(func(ev messages.Event) { events <- ev })
	defer stop()

	_, err = rt.Session("alice").Call(ctx, "crash")
	fmt.Println(errors.Is(err, actors.ErrWorkerFailed))
	tainted := (<-events).(messages.WorkerTainted)
	fmt.Println("tainted:", messages.TaintText(tainted.Reason, tainted.Err))
	restarted := (<-events).(messages.WorkerRestarted)
	fmt.Println("restarted as incarnation", restarted.Incarnation)
	// Output:
	// true
	// tainted: panic: state corrupted
	// restarted as incarnation 2
}
