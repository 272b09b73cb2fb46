package actors

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/messages"
)

// WithStreamWindow bounds how far a stream's worker runs ahead of Recv.
func TestStreamWindowBoundsTheWorkersLead(t *testing.T) {
	rt := onePool(t, &world{}, 1, StrictQueue)
	ctx := context.Background()
	for _, window := range []int{1, 3, streamBuffer * 2} {
		var sending atomic.Int64
		st, err := rt.Session("s").Stream(ctx, op{Items: 1000, Sending: &sending}, WithStreamWindow(window))
		require.NoError(t, err)
		// window items wait for Recv; the next send has begun and waits.
		require.Eventually(t, func() bool { return sending.Load() == int64(window)+1 }, 10*time.Second, time.Millisecond)
		require.Never(t, func() bool { return sending.Load() > int64(window)+1 }, 50*time.Millisecond, 5*time.Millisecond,
			"window %d: no send past the window", window)
		for i := range window + 1 {
			item, err := st.Recv()
			require.NoError(t, err)
			require.Equal(t, i, item)
		}
		require.Eventually(t, func() bool { return sending.Load() == 2*int64(window)+2 }, 10*time.Second, time.Millisecond)
		st.Close()
		require.Eventually(t, func() bool { return rt.Stats().Pools["p"].Inflight == 0 }, 10*time.Second, time.Millisecond,
			"the worker is free again")
	}
}

func TestStreamWindowOutOfRangeIsRefused(t *testing.T) {
	rt := onePool(t, &world{}, 1, StrictQueue)
	ctx := context.Background()
	for _, n := range []int{0, -1, maxStreamWindow + 1} {
		_, err := rt.Session("s").Stream(ctx, op{Items: 1}, WithStreamWindow(n))
		require.ErrorIs(t, err, ErrInvalidArgument, "window %d", n)
		_, err = rt.StreamRef(ctx, validRef(t, rt), op{Items: 1}, WithStreamWindow(n))
		require.ErrorIs(t, err, ErrInvalidArgument, "window %d, on a ref", n)
	}
	st, err := rt.Session("s").Stream(ctx, op{Items: 2}, WithStreamWindow(maxStreamWindow))
	require.NoError(t, err)
	for range 2 {
		_, err := st.Recv()
		require.NoError(t, err)
	}
}

// validRef returns a ref to session "s"'s worker.
func validRef(t *testing.T, rt *Runtime) messages.Ref {
	t.Helper()
	res, err := call(t, rt.Session("s"), op{Ref: "obj"})
	require.NoError(t, err)
	return res.Ref
}
