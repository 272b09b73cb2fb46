package actors

import (
	"context"
	"errors"
	"fmt"
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
