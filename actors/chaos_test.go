package actors

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestChaosEveryCallAnswered mixes every kind of call with panics, stream
// cancels, session closes, short deadlines, recycling, health checks and
// resizes, and checks that every call returns and the pools end empty.
func TestChaosEveryCallAnswered(t *testing.T) {
	w := &world{}
	rt, err := Start(Config{Pools: []PoolConfig{
		{Name: "a", Size: 4, Affinity: Hint, NewWorker: w.factory, QueueSize: 64, QueueTimeout: 50 * time.Millisecond},
		{Name: "b", Size: 3, Affinity: StrictQueue, NewWorker: w.factory, Capacity: 2, MaxCalls: 50},
	}, Restart: fastRestarts, HealthInterval: 2 * time.Millisecond, SessionIdleTTL: 20 * time.Millisecond})
	require.NoError(t, err)

	const callers, opsPerCaller = 32, 300
	var answered atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < callers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(g)))
			for i := 0; i < opsPerCaller; i++ {
				s := rt.Session(fmt.Sprint("s", r.Intn(100)))
				opts := []CallOption{WithPool([]string{"a", "b"}[r.Intn(2)]), WithAffinity(allModes[r.Intn(3)])}
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.Intn(20))*time.Millisecond)
				switch r.Intn(25) {
				case 0:
					_, _ = s.Call(ctx, op{Panic: true}, opts...)
				case 1:
					if st, err := s.Stream(ctx, op{Items: 3}, opts...); err == nil {
						_, _ = st.Recv()
						st.Close()
					}
				case 2:
					s.Close()
				case 3:
					if g == 0 {
						_ = rt.Resize(ctx, "a", 1+r.Intn(5))
					}
				default:
					_, _ = s.Call(ctx, op{}, opts...)
				}
				cancel()
				answered.Add(1)
			}
		}(g)
	}
	wg.Wait()
	assert.Equal(t, int64(callers*opsPerCaller), answered.Load(), "every operation returned")
	for name, ps := range rt.Stats().Pools {
		assert.Zero(t, ps.Queued, "pool %s", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, rt.Shutdown(ctx))
	for name, ps := range rt.Stats().Pools {
		assert.Zero(t, ps.Inflight, "pool %s", name)
	}
}
