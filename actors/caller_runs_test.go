package actors

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/messages"
)

// goid is the current goroutine's id, read from its stack header
// ("goroutine 12 [running]:").
func goid() uint64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
	f := strings.Fields(string(buf[:n]))
	id, _ := strconv.ParseUint(f[1], 10, 64)
	return id
}

// goidWorker answers each call with the id of the goroutine that ran it.
var goidWorker = WorkerFunc(func(context.Context, messages.Call) (any, error) { return goid(), nil })

func TestCallRunsOnItsCallerWhenTheWorkerIsIdle(t *testing.T) {
	start := func(t *testing.T, capacity int, ownGoroutine bool) *Runtime {
		rt, err := Start(Config{Pools: []PoolConfig{{Name: "p", Size: 1, Capacity: capacity, OwnGoroutineOnly: ownGoroutine,
			NewWorker: func(context.Context, WorkerInfo) (Worker, error) { return goidWorker, nil }}}})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, rt.Shutdown(context.Background())) })
		return rt
	}
	cancellable, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, capacity := range []int{1, 4} {
		for _, tc := range []struct {
			name         string
			ownGoroutine bool
			ctx          context.Context
			opts         []CallOption
			onCaller     bool
		}{
			{"context that cannot be cancelled", false, context.Background(), nil, true},
			{"WithoutCancel", false, context.WithoutCancel(cancellable), nil, true},
			{"cancellable context: the caller may leave, a worker runs it", false, cancellable, nil, false},
			{"cancellable context with RunOnCaller", false, cancellable, []CallOption{RunOnCaller()}, true},
			{"OwnGoroutineOnly", true, context.Background(), nil, false},
			{"OwnGoroutineOnly with RunOnCaller", true, cancellable, []CallOption{RunOnCaller()}, false},
		} {
			t.Run(fmt.Sprintf("capacity %d/%s", capacity, tc.name), func(t *testing.T) {
				rt := start(t, capacity, tc.ownGoroutine)
				s := rt.Session("s")
				w := rt.pools[0].workerByID(0)
				for i := 0; i < 3; i++ { // the first call binds, the others hit
					waitIdleWorker(t, w)
					v, err := s.Call(tc.ctx, i, tc.opts...)
					require.NoError(t, err)
					assert.Equal(t, tc.onCaller, v.(uint64) == goid(), "call %d ran on the caller's goroutine", i)
				}
				waitIdleWorker(t, w)
				ref := messages.Ref{Session: "s", Pool: "p", Worker: 0, Incarnation: 1}
				v, err := rt.CallRef(tc.ctx, ref, "by ref", tc.opts...)
				require.NoError(t, err)
				assert.Equal(t, tc.onCaller, v.(uint64) == goid(), "the call by ref ran on the caller's goroutine")
			})
		}
	}
}

// waitIdleWorker waits until w has no turn going and no call running: its
// start (or last call) is over.
func waitIdleWorker(t *testing.T, w *worker) {
	t.Helper()
	require.Eventually(t, func() bool {
		w.mailbox.mu.Lock()
		defer w.mailbox.mu.Unlock()
		return !w.mailbox.scheduled && w.inflight.Load() == 0
	}, 5*time.Second, 100*time.Microsecond)
}

// A call with RunOnCaller that runs on its caller returns the worker's
// answer when the worker returns, even though its context ended meanwhile;
// one that has to wait for its worker still returns as soon as its
// context ends.
func TestRunOnCallerReturnsWhenTheWorkerDoes(t *testing.T) {
	entered := make(chan struct{}, 1)
	rt, err := Start(Config{Pools: []PoolConfig{{Name: "p", Size: 1, Capacity: 2, Affinity: StrictQueue,
		NewWorker: func(context.Context, WorkerInfo) (Worker, error) {
			return WorkerFunc(func(ctx context.Context, c messages.Call) (any, error) {
				if c.Payload != "slow" {
					return c.Payload, nil
				}
				entered <- struct{}{}
				<-ctx.Done() // the caller left: the worker winds up
				return goid(), nil
			}), nil
		}}}})
	require.NoError(t, err)
	defer func() { require.NoError(t, rt.Shutdown(context.Background())) }()

	ctx, cancel := context.WithCancel(context.Background())
	caller := goid()
	waitIdleWorker(t, rt.pools[0].workerByID(0))
	go func() {
		<-entered
		cancel()
	}()
	v, err := rt.Session("a").Call(ctx, "slow", RunOnCaller())
	require.NoError(t, err, "the call ran on its caller: its answer is the worker's")
	assert.Equal(t, caller, v, "it ran on the caller's goroutine")

	// Both slots taken by calls that do not end by themselves: a third
	// call waits, and leaves when its context ends.
	hold, release := context.WithCancel(context.Background())
	defer release()
	var wg sync.WaitGroup
	for _, s := range []string{"b", "c"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = rt.Session(s).Call(hold, "slow", RunOnCaller())
		}()
		<-entered
	}
	waitCtx, stop := context.WithCancel(context.Background())
	go func() {
		assert.Eventually(t, func() bool { return rt.Stats().Pools["p"].Queued == 1 }, 5*time.Second, time.Millisecond)
		stop()
	}()
	_, err = rt.Session("b").Call(waitCtx, "quick", RunOnCaller())
	require.ErrorIs(t, err, context.Canceled)
	release()
	wg.Wait()
}

// Calls that run on their callers' goroutines are still turns of the worker
// actor: never two at once on a worker of Capacity 1, and each answer goes
// to its own caller.
func TestCallerRunCallsAreOneAtATimeAndAnswerTheirCaller(t *testing.T) {
	const workers, sessions, callers, calls = 3, 12, 24, 300
	type key struct {
		worker int
		inc    uint64
	}
	var (
		mu      sync.Mutex
		running = map[key]int{}
		overlap atomic.Int64
	)
	rt, err := Start(Config{Pools: []PoolConfig{{Name: "p", Size: workers, Affinity: StrictQueue,
		NewWorker: func(context.Context, WorkerInfo) (Worker, error) {
			return WorkerFunc(func(_ context.Context, c messages.Call) (any, error) {
				k := key{c.Worker, c.Incarnation}
				mu.Lock()
				running[k]++
				if running[k] > 1 {
					overlap.Add(1)
				}
				mu.Unlock()
				runtime.Gosched() // give another caller the chance to overlap
				mu.Lock()
				running[k]--
				mu.Unlock()
				return c.Payload, nil
			}), nil
		}}}})
	require.NoError(t, err)
	defer func() { require.NoError(t, rt.Shutdown(context.Background())) }()

	// Each session is driven by two goroutines at once.
	last := make([][2]atomic.Int64, sessions)
	var wg sync.WaitGroup
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			sess, lane := c%sessions, c/sessions
			s := rt.Session(fmt.Sprint("s", sess))
			for i := 1; i <= calls; i++ {
				v, err := s.Call(context.Background(), i)
				if !assert.NoError(t, err) {
					return
				}
				if v.(int) != i || last[sess][lane].Swap(int64(i)) != int64(i-1) {
					t.Errorf("session %d lane %d: call %d got the answer to %d", sess, lane, i, v)
				}
			}
		}(c)
	}
	wg.Wait()
	assert.Zero(t, overlap.Load(), "calls overlapped on one worker")
	st := rt.Stats().Pools["p"]
	assert.Equal(t, uint64(callers*calls), st.Executed)
	assert.Zero(t, st.Inflight)
	assert.Zero(t, st.Queued)
}
