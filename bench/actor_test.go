package bench

import (
	"testing"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

// BenchmarkActorRoundTrip measures what an actor app pays per call: an actor
// sends a request with ctx.Request and gets the reply in its own mailbox,
// then sends the next one. Compare it with BenchmarkSequential's
// protoactor-request-future (a caller blocking on RequestFuture to a plain
// actor) and with the same actor-to-actor exchange against a plain echo actor.
func BenchmarkActorRoundTrip(b *testing.B) {
	b.Run("affinity-session", func(b *testing.B) {
		rt := newAffinity(b, actors.Hint, 1)
		target := rt.SessionPID("s")
		runDriver(b, rt.ActorSystem(), target, func(i int) any { return &messages.CallRequest{Tag: uint64(i), Payload: i} })
	})
	b.Run("protoactor-actor-request", func(b *testing.B) {
		system := quietSystem()
		pid := system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return echo{} }))
		b.Cleanup(func() { system.Root.Stop(pid); system.Shutdown() })
		runDriver(b, system, pid, func(i int) any { return i })
	})
}

// runDriver spawns an actor that makes b.N requests to target one after the
// other, each sent when the previous reply arrives, and waits until it is done.
func runDriver(b *testing.B, system *actor.ActorSystem, target *actor.PID, request func(int) any) {
	done := make(chan error, 1)
	d := &driver{target: target, request: request, n: b.N, done: done}
	b.ReportAllocs()
	b.ResetTimer()
	pid := system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return d }))
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	system.Root.Stop(pid)
}

type driver struct {
	target  *actor.PID
	request func(int) any
	n, sent int
	done    chan<- error
}

func (d *driver) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		d.next(ctx)
	case *messages.CallReply:
		if m.Err != nil {
			d.done <- m.Err
			return
		}
		d.next(ctx)
	case int:
		d.next(ctx)
	}
}

func (d *driver) next(ctx actor.Context) {
	if d.sent == d.n {
		d.done <- nil
		return
	}
	ctx.Request(d.target, d.request(d.sent))
	d.sent++
}
