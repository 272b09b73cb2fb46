package actors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/messages"
)

// selfTainting hands its taint function to the test, per incarnation.
type selfTainting struct {
	inc    uint64
	taints chan<- func(error)
}

func (s *selfTainting) Handle(_ context.Context, c messages.Call) (any, error) {
	return c.Incarnation, nil
}

func (s *selfTainting) SetTaint(taint func(error)) { s.taints <- taint }

func TestSelfTainterTaintsBetweenCalls(t *testing.T) {
	for _, tc := range []struct {
		cause  error
		reason messages.TaintReason
	}{
		{errors.New("child process stopped answering"), messages.TaintHealthCheck},
		{fmt.Errorf("child process exited: %w", ErrWorkerExited), messages.TaintExited},
		{fmt.Errorf("rss above the limit: %w", ErrRecycle), messages.TaintRecycle},
	} {
		t.Run(tc.reason.String(), func(t *testing.T) {
			taints := make(chan func(error), 4)
			var mu sync.Mutex
			var events []messages.WorkerTainted
			rt := start(t, Config{
				Pools: []PoolConfig{{Name: "p", Size: 1, Affinity: StrictQueue,
					NewWorker: func(_ context.Context, info WorkerInfo) (Worker, error) {
						return &selfTainting{inc: info.Incarnation, taints: taints}, nil
					}}},
				Restart: fastRestarts,
				OnEvent: func(e messages.Event) {
					if ev, ok := e.(messages.WorkerTainted); ok {
						mu.Lock()
						events = append(events, ev)
						mu.Unlock()
					}
				},
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s := rt.Session("s")
			v, err := s.Call(ctx, "x")
			require.NoError(t, err)
			require.Equal(t, uint64(1), v)
			first := <-taints

			// From another goroutine, twice: only the first counts.
			done := make(chan struct{})
			go func() { defer close(done); first(tc.cause); first(tc.cause) }()
			<-done
			second := <-taints // the restart wired a new function
			require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Restarts == 1 }, 10*time.Second, time.Millisecond)

			_, err = s.Call(ctx, "x")
			require.ErrorIs(t, err, ErrSessionWorkerUnavailable, "strict session: its worker restarted")
			v, err = s.Call(ctx, "x", WithAffinity(Hint))
			require.NoError(t, err)
			require.Equal(t, uint64(2), v)

			first(tc.cause) // stale: an earlier incarnation's function
			_ = second
			v, err = s.Call(ctx, "x")
			require.NoError(t, err)
			require.Equal(t, uint64(2), v, "a stale taint must not restart the new incarnation")

			st := rt.Stats().Pools["p"]
			require.Equal(t, uint64(1), st.Tainted[tc.reason])
			mu.Lock()
			defer mu.Unlock()
			require.Len(t, events, 1)
			require.Equal(t, tc.reason, events[0].Reason)
			require.ErrorIs(t, events[0].Err, tc.cause)
		})
	}
}

// selfTaintingStreamer streams numbers until its send fails, or until
// done is closed; it hands its taint function to the test.
type selfTaintingStreamer struct {
	selfTainting
	done <-chan struct{}
}

func (s *selfTaintingStreamer) HandleStream(ctx context.Context, _ messages.Call, send func(any) error) error {
	for i := 0; ; i++ {
		select {
		case <-s.done:
			return nil
		default:
		}
		if err := send(i); err != nil {
			return nil // as a worker that takes a failed send for a reader that left
		}
	}
}

// A self-taint reaches a Capacity 1 worker's mailbox only after its
// running call: a stream stuck on a reader that stopped reading is
// interrupted at once instead, so the worker restarts without waiting for
// that reader, who gets ErrWorkerFailed after the items it was sent.
// Recycling lets the stream finish.
func TestSelfTaintInterruptsAStreamStuckOnItsReader(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cause     error
		interrupt bool
	}{
		{"exited", fmt.Errorf("child process exited: %w", ErrWorkerExited), true},
		{"recycle", fmt.Errorf("rss above the limit: %w", ErrRecycle), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			taints := make(chan func(error), 4)
			done := make(chan struct{})
			rt := startTainting(t, 1, func(inc uint64) Worker {
				return &selfTaintingStreamer{selfTainting{inc: inc, taints: taints}, done}
			})
			st := stuckStream(t, rt)
			(<-taints)(tc.cause)
			if !tc.interrupt {
				close(done)
				var err error
				for err == nil {
					_, err = st.Recv()
				}
				require.ErrorIs(t, err, io.EOF, "a recycled worker finishes its stream")
				require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Restarts == 1 }, 10*time.Second, time.Millisecond)
				return
			}
			require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Restarts == 1 }, 10*time.Second, time.Millisecond,
				"the worker restarts while its reader still holds the stream")
			want := 0
			for ; ; want++ {
				v, err := st.Recv()
				if err != nil {
					require.ErrorIs(t, err, ErrWorkerFailed)
					require.ErrorIs(t, err, tc.cause)
					break
				}
				require.Equal(t, want, v, "the items sent before the taint, in order")
			}
			require.Equal(t, streamBuffer, want, "every item already sent is delivered first")
		})
	}
}

// The same for a stream of the message API waiting for its receiver's acks.
func TestSelfTaintInterruptsAThrottledActorStream(t *testing.T) {
	taints := make(chan func(error), 4)
	rt := startTainting(t, 1, func(inc uint64) Worker {
		return &selfTaintingStreamer{selfTainting{inc: inc, taints: taints}, nil}
	})
	user, out := spawnUser(t, rt, "s")
	rt.ActorSystem().Root.Send(user, &messages.StreamRequest{Tag: 1, Window: 2})
	for seq := uint64(0); seq < 2; seq++ {
		require.Equal(t, seq, next(t, out).(*messages.StreamItem).Seq)
	}
	cause := errors.New("child process stopped answering")
	(<-taints)(cause) // the worker waits for an ack that never comes

	end := next(t, out).(*messages.StreamEnd)
	require.ErrorIs(t, end.Err, ErrWorkerFailed)
	require.ErrorIs(t, end.Err, cause)
	require.Equal(t, uint64(2), end.Items)
	require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Restarts == 1 }, 10*time.Second, time.Millisecond)
}

// fatalCaller fails every plain call with a fatal error, tainting its
// worker, and streams as selfTaintingStreamer.
type fatalCaller struct{ selfTaintingStreamer }

func (*fatalCaller) Handle(context.Context, messages.Call) (any, error) {
	return nil, Fatal(errors.New("state corrupted"))
}

// With Capacity above 1, a taint by another call interrupts the streams
// running on the worker too: their outcome is ErrWorkerFailed either way.
func TestTaintInterruptsTheStreamsOfAConcurrentWorker(t *testing.T) {
	taints := make(chan func(error), 4)
	rt := startTainting(t, 2, func(inc uint64) Worker {
		return &fatalCaller{selfTaintingStreamer{selfTainting{inc: inc, taints: taints}, nil}}
	})
	st := stuckStream(t, rt)

	_, err := rt.Session("t").Call(context.Background(), "corrupt")
	require.ErrorIs(t, err, ErrWorkerFailed)
	for {
		if _, err = st.Recv(); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, ErrWorkerFailed)
	require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Restarts == 1 }, 10*time.Second, time.Millisecond)
}

// startTainting starts pool "p" of one worker of the given capacity, made
// by newWorker for each incarnation, with fast restarts.
func startTainting(t *testing.T, capacity int, newWorker func(inc uint64) Worker) *Runtime {
	return start(t, Config{
		Pools: []PoolConfig{{Name: "p", Size: 1, Capacity: capacity, Affinity: StrictQueue,
			NewWorker: func(_ context.Context, info WorkerInfo) (Worker, error) { return newWorker(info.Incarnation), nil }}},
		Restart: fastRestarts,
	})
}

// stuckStream opens a stream in session "s" and waits until its worker
// has filled the stream's buffer and waits for a reader that never came.
func stuckStream(t *testing.T, rt *Runtime) *Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	st, err := rt.Session("s").Stream(ctx, "numbers")
	require.NoError(t, err)
	t.Cleanup(st.Close)
	require.Eventually(t, func() bool { return len(st.items) == streamBuffer }, 10*time.Second, time.Millisecond,
		"the worker fills the stream's buffer, then waits for its reader")
	return st
}
