//go:build !race

// In-process clusters cannot run under the race detector: every protoactor
// remote start writes gRPC's process-global logger (remote.Start calls
// grpclog.SetLoggerV2), which the gRPC servers of members already running
// read. That is a data race inside protoactor, not in this package, and
// only when several members share a process; .ci/run runs these tests
// without -race, and the multi-process cluster test runs race-enabled
// members, one per process.

package actors

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/internal/wire"
	"github.com/affinity-go/affinity/messages"
)

// tally is a cluster test worker: it counts calls per session, and answers
// with where it ran and the count, so a test can see state follow a session.
type tally struct{ n map[string]int }

// A "hold" call signals holdStarted, then waits for holdRelease.
var holdStarted, holdRelease = make(chan struct{}, 1), make(chan struct{})

func (w *tally) Handle(_ context.Context, c messages.Call) (any, error) {
	switch c.Payload {
	case "panic":
		panic("tally corrupted")
	case "ref":
		return c.NewRef("obj"), nil
	case "hold":
		holdStarted <- struct{}{}
		<-holdRelease
	}
	w.n[c.Session]++
	return fmt.Sprintf("%s/%d/%d/%d", c.Member, c.Worker, c.Incarnation, w.n[c.Session]), nil
}

func newTally(context.Context, WorkerInfo) (Worker, error) { return &tally{n: map[string]int{}}, nil }

// testCluster starts n members of one in-process cluster (protoactor's
// test provider), in parallel since each start sleeps a second.
type testCluster struct {
	t       testing.TB
	agent   *test.InMemAgent
	members []*Runtime
	mode    Affinity
	timeout time.Duration // ClusterConfig.RequestTimeout
}

func startTestCluster(t testing.TB, n int, mode Affinity) *testCluster {
	t.Helper()
	return startTestClusterTimeout(t, n, mode, 2*time.Second)
}

func startTestClusterTimeout(t testing.TB, n int, mode Affinity, requestTimeout time.Duration) *testCluster {
	t.Helper()
	tc := &testCluster{t: t, agent: test.NewInMemAgent(), mode: mode, timeout: requestTimeout}
	tc.add(n)
	t.Cleanup(tc.stop)
	return tc
}

func (tc *testCluster) config() Config {
	return Config{
		Pools: []PoolConfig{
			{Name: "p", Size: 2, Affinity: tc.mode, NewWorker: newTally},
			{Name: "hint", Size: 2, Affinity: Hint, NewWorker: newTally},
		},
		Cluster: &ClusterConfig{Name: "affinity-test", Provider: test.NewTestProvider(tc.agent), RequestTimeout: tc.timeout},
	}
}

// add starts n more members.
func (tc *testCluster) add(n int) []*Runtime {
	tc.t.Helper()
	out := make([]*Runtime, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = Start(tc.config())
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(tc.t, err)
	}
	tc.members = append(tc.members, out...)
	for _, rt := range tc.members {
		tc.waitMembers(rt, len(tc.members))
	}
	return out
}

func (tc *testCluster) waitMembers(rt *Runtime, n int) {
	tc.t.Helper()
	require.Eventually(tc.t, func() bool { return len(rt.member.members()) == n }, 20*time.Second, 10*time.Millisecond,
		"member %s sees %d members, want %d", rt.member.id, len(rt.member.members()), n)
}

func (tc *testCluster) stop() {
	var wg sync.WaitGroup
	for _, rt := range tc.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			assert.NoError(tc.t, rt.Shutdown(context.Background()))
			tc.t.Logf("member %s shut down in %v", rt.member.id, time.Since(start))
		}()
	}
	wg.Wait()
}

func TestClusterSessionStateFollowsTheSessionFromEveryMember(t *testing.T) {
	tc := startTestCluster(t, 3, StrictQueue)
	ctx := context.Background()
	perMember := map[string]int{}
	for s := range 30 {
		id := fmt.Sprint("s", s)
		var first string
		for call := 1; call <= 3; call++ {
			rt := tc.members[(s+call)%3] // each call from another member
			out, err := rt.Session(id).Call(ctx, "count")
			require.NoError(t, err)
			member, worker, inc, n := splitResult(t, out.(string))
			assert.Equal(t, call, n, "session %s call %d: %s", id, call, out)
			where := fmt.Sprintf("%s/%d/%d", member, worker, inc)
			if first == "" {
				first = where
				perMember[member]++
			}
			assert.Equal(t, first, where, "session %s moved", id)
		}
	}
	assert.Len(t, perMember, 3, "sessions spread over all members: %v", perMember)
}

// splitResult parses a tally answer: member/worker/incarnation/count.
func splitResult(t testing.TB, s string) (member string, worker int, inc uint64, n int) {
	t.Helper()
	parts := strings.Split(s, "/")
	require.Len(t, parts, 4, s)
	_, err := fmt.Sscanf(parts[1]+" "+parts[2]+" "+parts[3], "%d %d %d", &worker, &inc, &n)
	require.NoError(t, err, s)
	return parts[0], worker, inc, n
}

// callIn calls session id in pool from rt and returns where it ran.
func callIn(t testing.TB, rt *Runtime, pool, id string, payload any) (member string, n int, err error) {
	t.Helper()
	out, err := rt.Session(id).Call(context.Background(), payload, WithPool(pool))
	if err != nil {
		return "", 0, err
	}
	member, _, _, n = splitResult(t, out.(string))
	return member, n, nil
}

func TestClusterJoinKeepsSessionsAndTakesItsShareOfNewOnes(t *testing.T) {
	tc := startTestCluster(t, 2, StrictQueue)
	homes := map[string]string{}
	for s := range 40 {
		id := fmt.Sprint("old-", s)
		member, _, err := callIn(t, tc.members[s%2], "p", id, "count")
		require.NoError(t, err)
		homes[id] = member
	}
	joined := tc.add(1)[0]
	for s := range 40 {
		id := fmt.Sprint("old-", s)
		for _, rt := range tc.members { // from every member, the new one too
			member, _, err := callIn(t, rt, "p", id, "count")
			require.NoError(t, err, "session %s after a join", id)
			assert.Equal(t, homes[id], member, "session %s moved on a join", id)
		}
	}
	const fresh = 3000
	count := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := g; s < fresh; s += 16 {
				member, _, err := callIn(t, tc.members[s%3], "p", fmt.Sprint("new-", s), "count")
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				count[member]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	share := float64(count[joined.member.id]) / fresh
	assert.InDelta(t, 1.0/3, share, 0.1/3, "the new member's share of new sessions: %v", count)
}

// placed binds n sessions per pool from every member in turn and returns
// each session's home member and call count.
type placed struct {
	home  map[string]string // "pool/session" -> member id
	calls map[string]int
}

func placeSessions(t *testing.T, tc *testCluster, n int) placed {
	t.Helper()
	pl := placed{home: map[string]string{}, calls: map[string]int{}}
	for _, pool := range []string{"p", "hint"} {
		for s := range n {
			id := fmt.Sprint(pool, "-", s)
			member, c, err := callIn(t, tc.members[s%len(tc.members)], pool, id, "count")
			require.NoError(t, err)
			pl.home[pool+"/"+id], pl.calls[pool+"/"+id] = member, c
		}
	}
	return pl
}

// A session's first call, made while members are still joining (for the
// second protoactor's StartMember sleeps, others already call them), waits
// for one to be ready rather than failing once two have refused the lease.
func TestClusterFirstCallWaitsForAJoiningMember(t *testing.T) {
	tc := startTestCluster(t, 3, StrictQueue)
	for _, rt := range tc.members {
		rt.member.ready.Store(false)
	}
	t.Cleanup(func() { // before tc.stop: cleanups run last first
		for _, rt := range tc.members {
			rt.member.ready.Store(true)
		}
	})
	done := callAsync(tc.members[0], "first-while-joining", "count")
	require.Eventually(t, func() bool {
		for _, rt := range tc.members {
			if rt.member.grantsRefusedJoining.Load() == 0 {
				return false
			}
		}
		return true
	}, 10*time.Second, time.Millisecond, "every member refused the lease once")
	ready := tc.members[2]
	ready.member.ready.Store(true)
	r := waitOutcome(t, done)
	require.NoError(t, r.err)
	member, _, _, n := splitResult(t, r.out.(string))
	assert.Equal(t, ready.member.id, member, "the lease went to the member that became ready")
	assert.Equal(t, 1, n)
}

func TestClusterGracefulLeave(t *testing.T) {
	tc := startTestCluster(t, 3, StrictQueue)
	pl := placeSessions(t, tc, 60)
	leaving := tc.members[2]
	gone := leaving.member.id
	stay := tc.members[:2]

	var ref messages.Ref
	for s := 0; ref.Member != gone; s++ {
		out, err := stay[0].Session(fmt.Sprint("ref-", s)).Call(context.Background(), "ref")
		require.NoError(t, err)
		ref = out.(messages.Ref)
	}
	var inFlight string
	for key, home := range pl.home {
		if home == gone && strings.HasPrefix(key, "p/") {
			inFlight = strings.TrimPrefix(key, "p/")
			break
		}
	}
	require.NotEmpty(t, inFlight, "no strict session on the leaving member")
	held := make(chan error, 1)
	go func() { _, _, err := callIn(t, stay[0], "p", inFlight, "hold"); held <- err }()
	<-holdStarted
	left := make(chan error, 1)
	go func() { left <- leaving.Shutdown(context.Background()) }()
	require.Eventually(t, leaving.closed.Load, 10*time.Second, time.Millisecond)
	holdRelease <- struct{}{}
	require.NoError(t, <-held, "an in-flight call finishes")
	require.NoError(t, <-left)
	for _, rt := range stay {
		tc.waitMembers(rt, 2)
	}

	_, err := stay[1].CallRef(context.Background(), ref, "count")
	assert.ErrorIs(t, err, ErrRefLost)
	for key, home := range pl.home {
		pool, id, _ := strings.Cut(key, "/")
		for i, rt := range stay {
			member, n, err := callIn(t, rt, pool, id, "count")
			switch {
			case home != gone:
				if assert.NoError(t, err, key) {
					assert.Equal(t, home, member, key)
					assert.Equal(t, pl.calls[key]+i+1, n, "%s keeps its state", key)
				}
			case pool == "p":
				assert.ErrorIs(t, err, ErrSessionWorkerUnavailable, key)
			default: // hint: rebinds on a member that stays, and starts afresh
				if assert.NoError(t, err, key) {
					assert.NotEqual(t, gone, member, key)
					assert.Equal(t, i+1, n, key)
				}
			}
		}
	}
}

// crash cuts a member off as a crash would: the others stop hearing from it
// and it leaves the membership (the failure detector's verdict), while its
// process, here its runtime, lives on unreachable.
func (tc *testCluster) crash(rt *Runtime) {
	id := rt.member.id
	for _, other := range tc.members {
		if other != rt {
			other.member.c.Remote.BlockList().Block(id)
		}
	}
	rt.member.c.Remote.Shutdown(false)
	tc.agent.DeregisterService(id)
}

func TestClusterCrash(t *testing.T) {
	tc := startTestCluster(t, 3, StrictQueue)
	pl := placeSessions(t, tc, 60)
	crashed := tc.members[2]
	gone := crashed.member.id
	stay := tc.members[:2]
	var inFlight string
	for key, home := range pl.home {
		if home == gone && strings.HasPrefix(key, "p/") {
			inFlight = strings.TrimPrefix(key, "p/")
			break
		}
	}
	require.NotEmpty(t, inFlight, "no strict session on the member to crash")
	held := make(chan error, 1)
	go func() { _, _, err := callIn(t, stay[0], "p", inFlight, "hold"); held <- err }()
	<-holdStarted
	waiting := make(chan error, 1) // queued behind the held call, at the crashed member
	go func() { _, _, err := callIn(t, stay[1], "p", inFlight, "count"); waiting <- err }()
	require.Eventually(t, func() bool { return crashed.Stats().Pools["p"].Queued == 1 }, 10*time.Second, time.Millisecond)

	start := time.Now()
	tc.crash(crashed)
	assert.ErrorIs(t, <-held, ErrWorkerFailed, "the in-flight call")
	assert.ErrorIs(t, <-waiting, ErrWorkerFailed, "a call waiting at the crashed member")
	t.Logf("calls at the crashed member failed %v after the failure was detected", time.Since(start))
	holdRelease <- struct{}{} // let the cut-off worker finish, for its shutdown
	for _, rt := range stay {
		tc.waitMembers(rt, 2)
	}
	for key, home := range pl.home {
		pool, id, _ := strings.Cut(key, "/")
		for i, rt := range stay {
			member, n, err := callIn(t, rt, pool, id, "count")
			switch {
			case home != gone:
				if assert.NoError(t, err, key) {
					assert.Equal(t, home, member, key)
					assert.Equal(t, pl.calls[key]+i+1, n, "%s keeps its state", key)
				}
			case pool == "p":
				assert.ErrorIs(t, err, ErrSessionWorkerUnavailable, key)
			default:
				if assert.NoError(t, err, key) {
					assert.NotEqual(t, gone, member, key)
					assert.Equal(t, i+1, n, key)
				}
			}
		}
	}
}

func TestClusterMessageAPIAndPortability(t *testing.T) {
	tc := startTestCluster(t, 3, StrictQueue)
	home, _, err := callIn(t, tc.members[0], "p", "api", "count")
	require.NoError(t, err)
	for _, rt := range tc.members { // the actor message API, from every member
		res, err := rt.ActorSystem().Root.RequestFuture(rt.SessionPID("api"), &messages.CallRequest{Payload: "count"}, 10*time.Second).Result()
		require.NoError(t, err)
		r := res.(*messages.CallReply)
		require.NoError(t, r.Err)
		member, _, _, _ := splitResult(t, r.Value.(string))
		assert.Equal(t, home, member)
	}
	var away *Runtime // a member that does not hold the session
	for _, rt := range tc.members {
		if rt.member.id != home {
			away = rt
		}
	}
	type local struct{ x int }
	_, err = away.Session("api").Call(context.Background(), local{1})
	assert.ErrorIs(t, err, ErrPayloadNotPortable, "a Go struct cannot cross members")
	st, err := away.Session("api").Stream(context.Background(), "items:3")
	if assert.NoError(t, err, "streams cross members") {
		assert.Len(t, readAll(t, st), 3)
	}
	_, err = away.Session("api").Call(context.Background(), []byte("raw"))
	assert.NoError(t, err, "bytes cross")
}

// A call whose reply, or the call itself, is lost between members (with a
// broken connection, which protoactor's remote layer reports to no one)
// fails with ErrWorkerFailed once an audit finds that the other member has
// no record of it, rather than waiting forever on a context without a
// deadline. A call still running there is audited and left alone.
func TestClusterLostCallsFailAndRunningOnesDoNot(t *testing.T) {
	tc := startTestClusterTimeout(t, 2, StrictQueue, 300*time.Millisecond)
	caller, home := tc.members[0], tc.members[1].member
	id := sessionHomedOn(t, caller, home.id) // its first call: count 1

	held := callAsync(caller, id, "hold")
	<-holdStarted
	release := sync.OnceFunc(func() { holdRelease <- struct{}{} })
	t.Cleanup(release) // on failure too: shutting down waits for the call
	require.Eventually(t, func() bool { return home.auditedKnown.Load() >= 2 }, 10*time.Second, 5*time.Millisecond,
		"the running call was audited twice")
	release()
	r := waitOutcome(t, held)
	require.NoError(t, r.err, "a call still running is not failed by an audit")
	_, _, _, n := splitResult(t, r.out.(string))
	assert.Equal(t, 2, n)

	for _, lose := range []struct {
		name  string
		match func(any) bool
		ran   bool
	}{
		{"reply", func(msg any) bool { _, ok := msg.(*wire.Reply); return ok }, true},
		{"call", func(msg any) bool { _, ok := msg.(*wire.Call); return ok }, false},
	} {
		home.testDrop.Store(&lose.match)
		r := waitOutcome(t, callAsync(caller, id, "count"))
		home.testDrop.Store(nil)
		require.ErrorIs(t, r.err, ErrWorkerFailed, "a call whose %s was lost", lose.name)
		assert.Contains(t, r.err.Error(), "has no record of the call")
		_, next, err := callIn(t, caller, "p", id, "count")
		require.NoError(t, err, "the session after a lost %s", lose.name)
		if lose.ran {
			n++
		}
		n++
		assert.Equal(t, n, next, "a lost %s: the call ran: %v", lose.name, lose.ran)
	}
	assert.Equal(t, int64(2), caller.member.callsLost.Load())
}

// sessionHomedOn binds new sessions from rt until one lands on member and
// returns its id.
func sessionHomedOn(t *testing.T, rt *Runtime, member string) string {
	t.Helper()
	for s := range 100 {
		id := fmt.Sprint("homed-", s)
		where, _, err := callIn(t, rt, "p", id, "count")
		require.NoError(t, err)
		if where == member {
			return id
		}
	}
	t.Fatalf("no session of 100 landed on member %s", member)
	return ""
}

type remoteOutcome struct {
	out any
	err error
}

func callAsync(rt *Runtime, id string, payload any) <-chan remoteOutcome {
	done := make(chan remoteOutcome, 1)
	go func() {
		out, err := rt.Session(id).Call(context.Background(), payload, WithPool("p"))
		done <- remoteOutcome{out, err}
	}()
	return done
}

// waitOutcome fails the test if the call has no outcome within 10 s.
func waitOutcome(t *testing.T, done <-chan remoteOutcome) remoteOutcome {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the call had no outcome after 10 s")
		return remoteOutcome{}
	}
}

// A session's first call, when the member chosen for it has just died but
// is still in the topology, binds it on another member once the topology
// drops the dead one, within the call's RequestTimeout: the grain's queries
// (on activation) and its lease offer wait in short turns, not for the
// whole timeout each.
func TestClusterFirstCallPassesOverAJustDeadMember(t *testing.T) {
	for _, tt := range []struct {
		name string
		kill func(rt *Runtime)
	}{
		{"dead before the grain asks", func(rt *Runtime) { rt.member.c.Remote.Shutdown(false) }},
		{"deaf to the lease offer", func(rt *Runtime) {
			drop := func(msg any) bool { _, ok := msg.(*wire.Grant); return ok }
			rt.member.testDrop.Store(&drop)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc := startTestCluster(t, 3, StrictQueue)
			caller, dead := tc.members[0], tc.members[2]
			id := sessionChosenFor(t, caller, dead)
			tt.kill(dead) // still in the topology
			done := callAsync(caller, id, "count")
			require.Eventually(t, func() bool {
				var n int64
				for _, rt := range tc.members {
					n += rt.member.turnsUnanswered.Load()
				}
				return n > 0
			}, 10*time.Second, time.Millisecond, "the grain waited for the dead member")
			tc.agent.DeregisterService(dead.member.id)
			r := waitOutcome(t, done)
			require.NoError(t, r.err)
			member, _, _, n := splitResult(t, r.out.(string))
			assert.NotEqual(t, dead.member.id, member)
			assert.Equal(t, 1, n)
		})
	}
}

// sessionChosenFor returns a new session whose lease would go to member
// chosen and whose grain lives elsewhere.
func sessionChosenFor(t *testing.T, rt, chosen *Runtime) string {
	t.Helper()
	none := func(string) bool { return false }
	for s := range 1000 {
		id := fmt.Sprint("fresh-", s)
		to, _, _ := rt.member.choose(id, none)
		grainAt := rt.member.owners.GetByClusterIdentity(cluster.NewClusterIdentity(id, sessionKind))
		if to == chosen.member.id && grainAt != chosen.member.address {
			return id
		}
	}
	t.Fatalf("no session of 1000 would go to member %s with its grain elsewhere", chosen.member.id)
	return ""
}
