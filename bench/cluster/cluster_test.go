//go:build !race

package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/test"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

// payload is what every call carries and gets back.
var payload = []byte("0123456789abcdef")

// echoWorker answers a call with its payload, or with the member it runs
// on when asked where it is.
type echoWorker struct{}

func (echoWorker) Handle(_ context.Context, c messages.Call) (any, error) {
	if s, ok := c.Payload.(string); ok && s == "where" {
		return c.Member, nil
	}
	return c.Payload, nil
}

func newEcho(context.Context, actors.WorkerInfo) (actors.Worker, error) { return echoWorker{}, nil }

func pools() []actors.PoolConfig {
	return []actors.PoolConfig{{Name: "echo", Size: 4, Affinity: actors.StrictQueue, NewWorker: newEcho}}
}

// startMembers starts n Affinity members of one cluster and waits until
// each sees all of them.
func startMembers(b *testing.B, n int, passivate time.Duration) []*actors.Runtime {
	agent := test.NewInMemAgent()
	members := make([]*actors.Runtime, n)
	for i := range members {
		rt, err := actors.Start(actors.Config{Pools: pools(), SessionPassivateAfter: passivate,
			Cluster: &actors.ClusterConfig{Name: "bench-affinity", Provider: test.NewTestProvider(agent)}})
		if err != nil {
			b.Fatal(err)
		}
		members[i] = rt
	}
	b.Cleanup(func() {
		for _, rt := range members {
			_ = rt.Shutdown(context.Background())
		}
	})
	for _, rt := range members {
		waitFor(b, func() bool { return rt.ClusterMembers() == n })
	}
	return members
}

// waitFor polls cond: membership settles through protoactor's provider,
// which offers no event a benchmark's setup could wait on more simply.
func waitFor(b *testing.B, cond func() bool) {
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatal("cluster did not settle within 20 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sessionOn returns a session, called from `from`, whose worker lives on
// the member with id `on` (remote) or, with on == from's id, on from itself.
func sessionOn(b *testing.B, from *actors.Runtime, on string) *actors.Session {
	for i := range 1000 {
		s := from.Session("bench-" + strconv.Itoa(i))
		where, err := s.Call(context.Background(), "where")
		if err != nil {
			b.Fatal(err)
		}
		if where == on {
			return s
		}
	}
	b.Fatalf("no session placed on %s", on)
	return nil
}

func callLoop(b *testing.B, s *actors.Session) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := s.Call(ctx, payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClusterCall is one caller making sequential calls:
//   - affinity-remote: a session whose worker lives on the other member;
//   - protoactor-grain-remote: protoactor's cluster.Request from the same
//     kind of member to an echo grain living on the other member;
//   - affinity-local: a session whose worker lives on the calling member;
//   - affinity-single-process: the same call on a runtime without a cluster.
func BenchmarkClusterCall(b *testing.B) {
	b.Run("affinity-remote", func(b *testing.B) {
		m := startMembers(b, 2, 0)
		callLoop(b, sessionOn(b, m[0], m[1].ActorSystem().ID))
	})
	b.Run("protoactor-grain-remote", func(b *testing.B) {
		c := startGrainMembers(b, 2)
		id := grainOn(b, c[0], c[1].ActorSystem.Address())
		msg := wrapperspb.Bytes(payload)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if _, err := c[0].Request(id, "echo", msg, cluster.WithContext(c[0].ActorSystem.Root)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("affinity-local", func(b *testing.B) {
		m := startMembers(b, 2, 0)
		callLoop(b, sessionOn(b, m[0], m[0].ActorSystem().ID))
	})
	b.Run("affinity-single-process", func(b *testing.B) {
		rt, err := actors.Start(actors.Config{Pools: pools()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = rt.Shutdown(context.Background()) })
		callLoop(b, rt.Session("bench"))
	})
}

// echoGrain answers every message with itself.
type echoGrain struct{}

func (echoGrain) Receive(ctx actor.Context) {
	if m, ok := ctx.Message().(*wrapperspb.BytesValue); ok {
		ctx.Respond(m)
	}
}

// startGrainMembers starts n plain protoactor cluster members with an echo
// grain kind, configured as Affinity configures its own.
func startGrainMembers(b *testing.B, n int) []*cluster.Cluster {
	agent := test.NewInMemAgent()
	members := make([]*cluster.Cluster, n)
	for i := range members {
		system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
			return slog.New(slog.NewTextHandler(io.Discard, nil))
		}))
		kind := cluster.NewKind("echo", actor.PropsFromProducer(func() actor.Actor { return echoGrain{} }))
		cfg := cluster.Configure("bench-grains", test.NewTestProvider(agent), disthash.New(),
			remote.Configure("127.0.0.1", 0), cluster.WithKinds(kind))
		members[i] = cluster.New(system, cfg)
		members[i].StartMember()
	}
	b.Cleanup(func() {
		for _, c := range members {
			c.Shutdown(false)
		}
	})
	for _, c := range members {
		waitFor(b, func() bool { return len(c.MemberList.Members().Members()) == n })
	}
	return members
}

// grainOn returns an identity whose echo grain lives at address.
func grainOn(b *testing.B, c *cluster.Cluster, address string) string {
	for i := range 1000 {
		id := "bench-" + strconv.Itoa(i)
		if pid := c.Get(id, "echo"); pid != nil && pid.Address == address {
			return id
		}
	}
	b.Fatalf("no grain placed on %s", address)
	return ""
}

// clusterSessions is how many sessions BenchmarkClusterIdleSessions binds;
// AFFINITY_CLUSTER_SESSIONS overrides it for a quick look.
func clusterSessions() int {
	if n, err := strconv.Atoi(os.Getenv("AFFINITY_CLUSTER_SESSIONS")); err == nil && n > 0 {
		return n
	}
	return 100_000
}

// BenchmarkClusterIdleSessions reports the heap idle sessions cost in a
// three-member cluster: each op starts three members in this process, calls
// each of 100,000 sessions once (from the members in turn, 16 callers), waits
// until the session actors are passivated, and measures the live heap
// against the members' own before the sessions existed. B/session is the
// whole cluster's cost per session (its grain, its lease record, the
// directory's replicas on every member); B/session/member is a third of it.
func BenchmarkClusterIdleSessions(b *testing.B) {
	var perSession float64
	for range b.N {
		perSession += clusterSessionCost(b)
	}
	perSession /= float64(b.N)
	b.ReportMetric(perSession, "B/session")
	b.ReportMetric(perSession/3, "B/session/member")
}

func clusterSessionCost(b *testing.B) float64 {
	const passivate = 2 * time.Second
	members := startMembers(b, 3, passivate)
	n := clusterSessions()
	baseline := liveHeap()
	const callers = 16
	var wg sync.WaitGroup
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += callers {
				rt := members[i%3]
				if _, err := rt.Session(fmt.Sprint("idle-", i)).Call(context.Background(), "where"); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Passivation has no event: poll the members' stats until no session
	// actor is live.
	deadline := time.Now().Add(10 * passivate)
	for live := -1; live != 0; {
		live = 0
		for _, rt := range members {
			live += rt.Stats().SessionActors
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d session actors still live %v after the calls", live, 10*passivate)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cost := (float64(liveHeap()) - float64(baseline)) / float64(n)
	runtime.KeepAlive(members)
	return cost
}

// liveHeap returns the live heap after full collections.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
