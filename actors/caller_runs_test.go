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
	start := func(t *testing.T, ownGoroutine bool) *Runtime {
		rt, err := Start(Config{Pools: []PoolConfig{{Name: "p", Size: 1, OwnGoroutineOnly: ownGoroutine,
			NewWorker: func(context.Context, WorkerInfo) (Worker, error) { return goidWorker, nil }}}})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, rt.Shutdown(context.Background())) })
		return rt
	}
	cancellable, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tc := range []struct {
		name         string
		ownGoroutine bool
		ctx          context.Context
		onCaller     bool
	}{
		{"context that cannot be cancelled", false, context.Background(), true},
		{"WithoutCancel", false, context.WithoutCancel(cancellable), true},
		{"cancellable context: the caller may leave, a worker runs it", false, cancellable, false},
		{"OwnGoroutineOnly", true, context.Background(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := start(t, tc.ownGoroutine)
			s := rt.Session("s")
			mb := rt.pools[0].workerByID(0).mailbox
			for i := 0; i < 3; i++ { // the first call binds, the others hit
				// The worker is idle once its start (or last call) is over.
				require.Eventually(t, func() bool {
					mb.mu.Lock()
					defer mb.mu.Unlock()
					return !mb.scheduled
				}, 5*time.Second, 100*time.Microsecond)
				v, err := s.Call(tc.ctx, i)
				require.NoError(t, err)
				assert.Equal(t, tc.onCaller, v.(uint64) == goid(), "call %d ran on the caller's goroutine", i)
			}
		})
	}
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
