package actors

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/affinity-go/affinity/messages"
)

func TestSmoke(t *testing.T) {
	defer goleak.VerifyNone(t)
	rt, err := Start(Config{Pools: []PoolConfig{{Name: "p", Size: 2, NewWorker: func(ctx context.Context, info WorkerInfo) (Worker, error) {
		return WorkerFunc(func(ctx context.Context, c messages.Call) (any, error) { return c.Worker, nil }), nil
	}}}})
	require.NoError(t, err)
	s := rt.Session("a")
	v, err := s.Call(context.Background(), 1)
	require.NoError(t, err)
	for i := 0; i < 100; i++ {
		v2, err := s.Call(context.Background(), 1)
		require.NoError(t, err)
		require.Equal(t, v, v2)
	}
	require.NoError(t, rt.Shutdown(context.Background()))
}
