package actors

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/affinity-go/affinity/messages"
)

func noopFactory(context.Context, WorkerInfo) (Worker, error) {
	return WorkerFunc(func(_ context.Context, c messages.Call) (any, error) { return c.Payload, nil }), nil
}

func benchRuntime(b *testing.B, mode Affinity, workers int) *Runtime {
	rt, err := Start(Config{Pools: []PoolConfig{{Name: "p", Size: workers, Affinity: mode, NewWorker: noopFactory, QueueSize: 100000}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rt.Shutdown(context.Background()) })
	return rt
}

// BenchmarkCallParallel: 64 concurrent callers over 1,000 sessions and 8
// no-op workers.
func BenchmarkCallParallel(b *testing.B) {
	for _, mode := range []Affinity{Hint, StrictQueue} {
		b.Run(mode.String(), func(b *testing.B) {
			rt := benchRuntime(b, mode, 8)
			sessions := make([]*Session, 1000)
			for i := range sessions {
				sessions[i] = rt.Session(fmt.Sprint("s", i))
			}
			var next atomic.Int64
			ctx := context.Background()
			b.SetParallelism(32) // 64 goroutines on 2 cores
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1))
				for pb.Next() {
					s := sessions[i%len(sessions)]
					i += 7
					if _, err := s.Call(ctx, i); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkCallSequential: one caller, one session, round trip.
func BenchmarkCallSequential(b *testing.B) {
	rt := benchRuntime(b, Hint, 1)
	s := rt.Session("s")
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Call(ctx, i); err != nil {
			b.Fatal(err)
		}
	}
}
