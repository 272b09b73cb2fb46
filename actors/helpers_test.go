package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/affinity-go/affinity/internal/leaktest"
	"github.com/affinity-go/affinity/messages"
	"github.com/affinity-go/affinity/supervisor"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m, protoactorClusterLeaks...) }

// protoactorClusterLeaks are goroutines protoactor's cluster leaves behind
// after a member's shutdown: the test provider's TTL reporter ranges over a
// ticker it only stops (so it never ends), and gossip throttles sleep out
// their period.
var protoactorClusterLeaks = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/cluster/clusterproviders/test.(*Provider).startTtlReport.func1"),
	goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/cluster.(*Gossiper).StartGossiping.NewThrottle.func3.1"),
	goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/cluster.NewGossipActor.NewThrottleWithLogger.func2.1"),
	// gRPC client connections protoactor's remote opened towards a member
	// that crashed: they keep reconnecting, and protoactor's shutdown does
	// not close them.
	goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	goleak.IgnoreTopFunction("google.golang.org/grpc.(*addrConn).resetTransport"),
	// An endpoint writer towards a member that is gone sleeps between
	// connection attempts inside its Receive.
	goleak.IgnoreAnyFunction("github.com/asynkron/protoactor-go/remote.(*endpointWriter).initialize"),
}

// op is the payload test workers understand.
type op struct {
	ID      int
	Block   chan struct{} // wait until closed (or the call's ctx ends)
	Started chan int      // receives the worker id when the call starts
	Panic   bool
	PanicIf *atomic.Bool // checked once unblocked: panic if set by then
	Fatal   bool
	Exited  bool          // fail with a fatal error wrapping ErrWorkerExited
	Ref     string        // return call.NewRef(Ref)
	Items   int           // streaming: number of items to send
	Sending *atomic.Int64 // streaming: counts the sends begun
}

// result is what test workers return.
type result struct {
	Worker      int
	Incarnation uint64
	Hits        int // calls this incarnation saw for the session before this one
	Ref         messages.Ref
}

// execution is one call a test worker ran.
type execution struct {
	ID          int
	Session     string
	Worker      int
	Incarnation uint64
	Ref         bool
}

// world records what test workers did; it is shared by all incarnations.
type world struct {
	mu        sync.Mutex
	execs     []execution
	released  []string
	unhealthy sync.Map // worker id -> true, or the one incarnation (uint64) to fail
	built     atomic.Int64
	failBuild atomic.Bool
}

func (w *world) executions() []execution {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]execution(nil), w.execs...)
}

func (w *world) ran(id int) bool {
	for _, e := range w.executions() {
		if e.ID == id {
			return true
		}
	}
	return false
}

func (w *world) releasedSessions() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.released...)
}

type testWorker struct {
	w    *world
	info WorkerInfo
	mu   sync.Mutex
	hits map[string]int
}

func (w *world) factory(ctx context.Context, info WorkerInfo) (Worker, error) {
	if w.failBuild.Load() {
		return nil, errors.New("factory refused")
	}
	w.built.Add(1)
	return &testWorker{w: w, info: info, hits: make(map[string]int)}, nil
}

func (tw *testWorker) Handle(ctx context.Context, c messages.Call) (any, error) {
	o, _ := c.Payload.(op)
	tw.w.mu.Lock()
	tw.w.execs = append(tw.w.execs, execution{ID: o.ID, Session: c.Session, Worker: c.Worker, Incarnation: c.Incarnation, Ref: c.Ref != nil})
	tw.w.mu.Unlock()
	tw.mu.Lock()
	hits := tw.hits[c.Session]
	tw.hits[c.Session]++
	tw.mu.Unlock()
	if o.Started != nil {
		o.Started <- c.Worker
	}
	if o.Block != nil {
		select {
		case <-o.Block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if o.Panic || (o.PanicIf != nil && o.PanicIf.Load()) {
		panic("boom")
	}
	if o.Fatal {
		return nil, Fatal(errors.New("broken"))
	}
	if o.Exited {
		return nil, Fatal(fmt.Errorf("connection closed: %w", ErrWorkerExited))
	}
	res := result{Worker: c.Worker, Incarnation: c.Incarnation, Hits: hits}
	if o.Ref != "" {
		res.Ref = c.NewRef(o.Ref)
	}
	return res, nil
}

func (tw *testWorker) HandleStream(ctx context.Context, c messages.Call, send func(any) error) error {
	o, _ := c.Payload.(op)
	tw.w.mu.Lock()
	tw.w.execs = append(tw.w.execs, execution{ID: o.ID, Session: c.Session, Worker: c.Worker, Incarnation: c.Incarnation, Ref: c.Ref != nil})
	tw.w.mu.Unlock()
	if o.Started != nil {
		o.Started <- c.Worker
	}
	for i := 0; i < o.Items; i++ {
		if o.Sending != nil {
			o.Sending.Add(1)
		}
		if err := send(i); err != nil {
			return err
		}
	}
	if o.Block != nil {
		select {
		case <-o.Block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if o.Panic || (o.PanicIf != nil && o.PanicIf.Load()) {
		panic("stream boom")
	}
	return nil
}

func (tw *testWorker) ReleaseSession(_ context.Context, session string, _ messages.CleanupSource) {
	tw.w.mu.Lock()
	tw.w.released = append(tw.w.released, session)
	tw.w.mu.Unlock()
	tw.mu.Lock()
	delete(tw.hits, session)
	tw.mu.Unlock()
}

// CheckHealth fails when the worker's id is marked unhealthy: true marks
// every incarnation, an incarnation number marks only that one, "exited"
// fails every incarnation with an error wrapping ErrWorkerExited.
func (tw *testWorker) CheckHealth(context.Context) error {
	switch v, _ := tw.w.unhealthy.Load(tw.info.ID); v {
	case true, tw.info.Incarnation:
		return errors.New("unhealthy")
	case "exited":
		return fmt.Errorf("process gone: %w", ErrWorkerExited)
	}
	return nil
}

// start starts a runtime for a test and shuts it down at the end.
func start(t *testing.T, cfg Config) *Runtime {
	t.Helper()
	rt, err := Start(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, rt.Shutdown(ctx))
	})
	return rt
}

// onePool starts a runtime with one pool "p" of the given size and mode,
// with a fast restart policy.
func onePool(t *testing.T, w *world, size int, mode Affinity, tweak ...func(*PoolConfig)) *Runtime {
	pc := PoolConfig{Name: "p", Size: size, Affinity: mode, NewWorker: w.factory}
	for _, f := range tweak {
		f(&pc)
	}
	return start(t, Config{Pools: []PoolConfig{pc}, Restart: fastRestarts})
}

var fastRestarts = supervisorPolicy(time.Millisecond)

// call runs a call with a test timeout.
func call(t *testing.T, s *Session, o op, opts ...CallOption) (result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := s.Call(ctx, o, opts...)
	r, _ := v.(result)
	return r, err
}

// occupy starts a blocking call on s and returns once it runs, with the
// worker it runs on, a release function, and the channel of its outcome.
func occupy(t *testing.T, s *Session, opts ...CallOption) (worker int, release func(), done <-chan error) {
	t.Helper()
	block, started := make(chan struct{}), make(chan int, 1)
	errc := make(chan error, 1)
	go func() {
		_, err := call(t, s, op{ID: -1, Block: block, Started: started}, opts...)
		errc <- err
	}()
	select {
	case worker = <-started:
	case err := <-errc:
		t.Fatalf("occupying call failed: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("occupying call never started")
	}
	var once sync.Once
	release = func() { once.Do(func() { close(block) }) }
	t.Cleanup(release)
	return worker, release, errc
}

// waitQueued waits until the pool has n calls waiting.
func waitQueued(t *testing.T, rt *Runtime, pool string, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return rt.Stats().Pools[pool].Queued == n }, 10*time.Second, time.Millisecond)
}

func supervisorPolicy(backoff time.Duration) supervisor.Policy {
	return supervisor.Policy{InitialBackoff: backoff, MaxBackoff: backoff, MaxRestarts: 100, Window: time.Minute}
}
