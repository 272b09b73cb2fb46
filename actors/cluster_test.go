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

	"github.com/asynkron/protoactor-go/cluster/clusterproviders/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/messages"
)

// tally is a cluster test worker: it counts calls per session, and answers
// with where it ran and the count, so a test can see state follow a session.
type tally struct{ n map[string]int }

func (w *tally) Handle(_ context.Context, c messages.Call) (any, error) {
	switch c.Payload {
	case "panic":
		panic("tally corrupted")
	case "ref":
		return c.NewRef("obj"), nil
	}
	w.n[c.Session]++
	return fmt.Sprintf("%s/%d/%d/%d", c.Member, c.Worker, c.Incarnation, w.n[c.Session]), nil
}

func newTally(context.Context, WorkerInfo) (Worker, error) { return &tally{n: map[string]int{}}, nil }

// testCluster starts n members of one in-process cluster (protoactor's
// test provider), in parallel since each start sleeps a second.
type testCluster struct {
	t       *testing.T
	agent   *test.InMemAgent
	members []*Runtime
	mode    Affinity
}

func startTestCluster(t *testing.T, n int, mode Affinity) *testCluster {
	t.Helper()
	tc := &testCluster{t: t, agent: test.NewInMemAgent(), mode: mode}
	tc.add(n)
	t.Cleanup(tc.stop)
	return tc
}

func (tc *testCluster) config() Config {
	return Config{
		Pools:   []PoolConfig{{Name: "p", Size: 2, Affinity: tc.mode, NewWorker: newTally}},
		Cluster: &ClusterConfig{Name: "affinity-test", Provider: test.NewTestProvider(tc.agent)},
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
			assert.NoError(tc.t, rt.Shutdown(context.Background()))
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
func splitResult(t *testing.T, s string) (member string, worker int, inc uint64, n int) {
	t.Helper()
	parts := strings.Split(s, "/")
	require.Len(t, parts, 4, s)
	_, err := fmt.Sscanf(parts[1]+" "+parts[2]+" "+parts[3], "%d %d %d", &worker, &inc, &n)
	require.NoError(t, err, s)
	return parts[0], worker, inc, n
}
