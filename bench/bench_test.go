package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/router"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

// The load of every parallel benchmark: 64 callers, 1,000 sessions, 8
// workers whose work is a no-op.
const (
	callers  = 64
	sessions = 1000
	workers  = 8
)

// runCallers spreads b.N calls over 64 goroutines (RunParallel runs
// GOMAXPROCS*parallelism of them); each call names a session.
func runCallers(b *testing.B, call func(session int) error) {
	b.Helper()
	var next atomic.Int64
	b.SetParallelism(max(1, callers/testingProcs()))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)) * 7919
		for pb.Next() {
			i++
			if err := call(i % sessions); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func testingProcs() int { return max(1, int(procs())) }

func noop(_ context.Context, c messages.Call) (any, error) { return c.Payload, nil }

func newAffinity(b *testing.B, mode actors.Affinity, size int) *actors.Runtime {
	rt, err := actors.Start(actors.Config{Pools: []actors.PoolConfig{{
		Name: "bench", Size: size, Affinity: mode, QueueSize: 1 << 20,
		NewWorker: func(context.Context, actors.WorkerInfo) (actors.Worker, error) { return actors.WorkerFunc(noop), nil },
	}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rt.Shutdown(context.Background()) })
	return rt
}

// BenchmarkParallel compares per-call time under 64 concurrent callers.
func BenchmarkParallel(b *testing.B) {
	for _, mode := range []actors.Affinity{actors.Hint, actors.StrictQueue} {
		b.Run("affinity/"+mode.String(), func(b *testing.B) {
			rt := newAffinity(b, mode, workers)
			ss := make([]*actors.Session, sessions)
			for i := range ss {
				ss[i] = rt.Session(fmt.Sprint("session-", i))
			}
			ctx := context.Background()
			runCallers(b, func(i int) error {
				_, err := ss[i].Call(ctx, i)
				return err
			})
		})
	}
	b.Run("protoactor-consistent-hash", func(b *testing.B) {
		system := quietSystem()
		props := router.NewConsistentHashPool(workers, actor.WithProducer(func() actor.Actor { return echo{} }))
		pid := system.Root.Spawn(props)
		b.Cleanup(func() { system.Root.Stop(pid); system.Shutdown() })
		msgs := make([]hashed, sessions)
		for i := range msgs {
			msgs[i] = hashed{key: fmt.Sprint("session-", i)}
		}
		runCallers(b, func(i int) error {
			_, err := system.Root.RequestFuture(pid, &msgs[i], 10*time.Second).Result()
			return err
		})
	})
	b.Run("channel-pool", func(b *testing.B) {
		pool := newChannelPool(workers)
		b.Cleanup(pool.close)
		runCallers(b, func(i int) error {
			_, err := pool.call(i)
			return err
		})
	})
}

// BenchmarkSequential compares one caller's round trip to one worker.
func BenchmarkSequential(b *testing.B) {
	b.Run("affinity", func(b *testing.B) {
		s := newAffinity(b, actors.Hint, 1).Session("s")
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := s.Call(ctx, i); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("protoactor-request-future", func(b *testing.B) {
		system := quietSystem()
		pid := system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return echo{} }))
		b.Cleanup(func() { system.Root.Stop(pid); system.Shutdown() })
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := system.Root.RequestFuture(pid, i, 10*time.Second).Result(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func quietSystem() *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
}

// echo answers every request with itself.
type echo struct{}

func (echo) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *hashed, int:
		ctx.Respond(m)
	}
}

// hashed routes by session key through the consistent-hash router.
type hashed struct{ key string }

func (h *hashed) Hash() string { return h.key }

// channelPool is the practical limit: workers reading one shared channel,
// answering on a pooled per-call channel.
type channelPool struct {
	reqs chan chanReq
	wg   sync.WaitGroup
}

type chanReq struct {
	payload any
	reply   chan any
}

var replies = sync.Pool{New: func() any { return make(chan any, 1) }}

func newChannelPool(n int) *channelPool {
	p := &channelPool{reqs: make(chan chanReq)}
	for i := 0; i < n; i++ {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for r := range p.reqs {
				r.reply <- r.payload
			}
		}()
	}
	return p
}

func (p *channelPool) call(payload any) (any, error) {
	reply := replies.Get().(chan any)
	p.reqs <- chanReq{payload: payload, reply: reply}
	v := <-reply
	replies.Put(reply)
	return v, nil
}

func (p *channelPool) close() {
	close(p.reqs)
	p.wg.Wait()
}
