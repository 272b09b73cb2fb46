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

// load is the shape of a parallel benchmark: how many goroutines call, how
// many sessions they spread their calls over, and how many no-op workers
// serve them.
type load struct {
	name                       string
	callers, sessions, workers int
}

var loads = []load{
	{name: "c64-s1k-w8", callers: 64, sessions: 1000, workers: 8},
	{name: "c256-s100k-w16", callers: 256, sessions: 100_000, workers: 16},
}

// workers is the pool size of the benchmarks that are not about load.
const workers = 8

// runCallers spreads b.N calls over l.callers goroutines (RunParallel runs
// GOMAXPROCS*parallelism of them); each call names a session. It reports
// the 99th percentile of a sample of the calls' latencies as p99-ns.
func runCallers(b *testing.B, l load, call func(session int) error) {
	b.Helper()
	var next atomic.Int64
	var lat latencies
	b.SetParallelism(max(1, l.callers/procs()))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		h := new(histogram)
		defer lat.add(h)
		i := int(next.Add(1)) * 7919
		for pb.Next() {
			i++
			var start time.Time
			if i%sampleEvery == 0 {
				start = time.Now()
			}
			if err := call(i % l.sessions); err != nil {
				b.Error(err)
				return
			}
			if i%sampleEvery == 0 {
				h.record(time.Since(start))
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(lat.all.quantile(0.99).Nanoseconds()), "p99-ns")
}

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

func sessionID(i int) string { return fmt.Sprint("session-", i) }

// BenchmarkParallel compares per-call time and p99 latency under each load:
// Affinity's hint and strict_queue sessions (called with a context that
// cannot be cancelled, so an idle worker's call runs on its caller, and with
// one that can), sticky channels (the limit for affinity routing),
// protoactor's consistent-hash router, and a shared channel pool (no
// affinity at all).
func BenchmarkParallel(b *testing.B) {
	for _, l := range loads {
		b.Run(l.name, func(b *testing.B) {
			for _, mode := range []actors.Affinity{actors.Hint, actors.StrictQueue} {
				b.Run("affinity/"+mode.String(), func(b *testing.B) { benchAffinity(b, l, mode, false) })
			}
			// The same calls with contexts that can be cancelled (and never
			// are): the caller may leave, so a worker goroutine runs each call
			// and the caller waits for its reply.
			for _, mode := range []actors.Affinity{actors.Hint, actors.StrictQueue} {
				b.Run("affinity-cancellable/"+mode.String(), func(b *testing.B) { benchAffinity(b, l, mode, true) })
			}
			// And with actors.RunOnCaller, as a server that waits for each
			// call anyway would make them: the caller may run the call.
			for _, mode := range []actors.Affinity{actors.Hint, actors.StrictQueue} {
				b.Run("affinity-runoncaller/"+mode.String(), func(b *testing.B) {
					benchAffinity(b, l, mode, true, actors.RunOnCaller())
				})
			}
			b.Run("sticky-channels", func(b *testing.B) {
				pool := newStickyChannels(l.workers)
				b.Cleanup(pool.close)
				runCallers(b, l, func(i int) error {
					_, err := pool.call(i, i)
					return err
				})
			})
			b.Run("protoactor-consistent-hash", func(b *testing.B) { benchHashRouter(b, l) })
			b.Run("channel-pool", func(b *testing.B) {
				pool := newChannelPool(l.workers)
				b.Cleanup(pool.close)
				runCallers(b, l, func(i int) error {
					_, err := pool.call(i)
					return err
				})
			})
		})
	}
}

// benchAffinity calls with context.Background(), or, when cancellable,
// with a cancellable context per session, as a server's requests each
// bring their own; opts go with every call.
func benchAffinity(b *testing.B, l load, mode actors.Affinity, cancellable bool, opts ...actors.CallOption) {
	rt := newAffinity(b, mode, l.workers)
	ss := make([]*actors.Session, l.sessions)
	ctxs := make([]context.Context, l.sessions)
	for i := range ss {
		ctxs[i] = context.Background()
		if cancellable {
			var cancel context.CancelFunc
			ctxs[i], cancel = context.WithCancel(ctxs[i])
			b.Cleanup(cancel)
		}
		ss[i] = rt.Session(sessionID(i))
		// Steady state: each session's actor is activated and bound before
		// the clock starts, as it is after a session's first call.
		if _, err := ss[i].Call(ctxs[i], i); err != nil {
			b.Fatal(err)
		}
	}
	runCallers(b, l, func(i int) error {
		_, err := ss[i].Call(ctxs[i], i, opts...)
		return err
	})
}

func benchHashRouter(b *testing.B, l load) {
	system := quietSystem()
	props := router.NewConsistentHashPool(l.workers, actor.WithProducer(func() actor.Actor { return echo{} }))
	pid := system.Root.Spawn(props)
	b.Cleanup(func() { system.Root.Stop(pid); system.Shutdown() })
	msgs := make([]hashed, l.sessions)
	for i := range msgs {
		msgs[i] = hashed{key: sessionID(i)}
	}
	runCallers(b, l, func(i int) error {
		_, err := system.Root.RequestFuture(pid, &msgs[i], 10*time.Second).Result()
		return err
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

// stickyChannels is the limit for affinity routing: one channel per worker,
// each session hashed to its worker, answers on pooled reply channels.
type stickyChannels struct {
	reqs []chan chanReq
	wg   sync.WaitGroup
}

func newStickyChannels(n int) *stickyChannels {
	p := &stickyChannels{reqs: make([]chan chanReq, n)}
	for i := range p.reqs {
		p.reqs[i] = make(chan chanReq, stickyBuffer)
		p.wg.Add(1)
		go func(reqs <-chan chanReq) {
			defer p.wg.Done()
			for r := range reqs {
				r.reply <- r.payload
			}
		}(p.reqs[i])
	}
	return p
}

// stickyBuffer lets callers queue at a busy worker, as a worker's mailbox does.
const stickyBuffer = 64

func (p *stickyChannels) call(session int, payload any) (any, error) {
	reply := replies.Get().(chan any)
	p.reqs[session%len(p.reqs)] <- chanReq{payload: payload, reply: reply}
	v := <-reply
	replies.Put(reply)
	return v, nil
}

func (p *stickyChannels) close() {
	for _, c := range p.reqs {
		close(c)
	}
	p.wg.Wait()
}
