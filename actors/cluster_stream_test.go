//go:build !race

// Built without -race like cluster_test.go, for the same reason.

package actors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/messages"
)

// HandleStream makes tally a StreamWorker. "items:N" streams N tally
// answers whose count is the item's index; "flood" streams ints until the
// stream stops (see floodOf); "bad-item" sends a value that cannot cross
// members.
func (w *tally) HandleStream(_ context.Context, c messages.Call, send func(any) error) error {
	w.n[c.Session]++
	payload, _ := c.Payload.(string)
	switch payload {
	case "flood":
		return floodOf(c.Session).run(send)
	case "bad-item":
		return send(struct{ x int }{1})
	}
	var n int
	if _, err := fmt.Sscanf(payload, "items:%d", &n); err != nil {
		return fmt.Errorf("bad stream payload %q", payload)
	}
	for i := range n {
		if err := send(fmt.Sprintf("%s/%d/%d/%d", c.Member, c.Worker, c.Incarnation, i)); err != nil {
			return err
		}
	}
	return nil
}

// flood counts what a "flood" stream's worker did, per session.
type flood struct {
	sending atomic.Int64 // sends begun
	sent    atomic.Int64 // sends that returned
	ended   chan error   // the send error that stopped it
}

var floods sync.Map // session id -> *flood

func newFlood(session string) *flood {
	f := &flood{ended: make(chan error, 1)}
	floods.Store(session, f)
	return f
}

func floodOf(session string) *flood {
	f, _ := floods.LoadOrStore(session, &flood{ended: make(chan error, 1)})
	return f.(*flood)
}

func (f *flood) run(send func(any) error) error {
	for i := 0; ; i++ {
		f.sending.Add(1)
		if err := send(i); err != nil {
			select {
			case f.ended <- err:
			default:
			}
			return err
		}
		f.sent.Add(1)
	}
}

// stopped waits for the flood's worker to stop, and returns why.
func (f *flood) stopped(t *testing.T) error {
	t.Helper()
	select {
	case err := <-f.ended:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the flood's worker did not stop")
		return nil
	}
}

// waitSending waits until n sends of the flood have begun.
func (f *flood) waitSending(t *testing.T, n int64) {
	t.Helper()
	require.Eventually(t, func() bool { return f.sending.Load() >= n }, 10*time.Second, time.Millisecond,
		"sends begun: %d, want %d", f.sending.Load(), n)
}

// readAll reads a stream to its end and returns its items.
func readAll(t *testing.T, st *Stream) []string {
	t.Helper()
	var items []string
	for {
		item, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return items
		}
		require.NoError(t, err, "after %d items", len(items))
		items = append(items, item.(string))
	}
}

// recvUntilError reads a stream until it fails and returns that error.
func recvUntilError(t *testing.T, st *Stream) error {
	t.Helper()
	for {
		if _, err := st.Recv(); err != nil {
			return err
		}
	}
}

// assertInOrder checks that items are n tally answers from member, in order.
func assertInOrder(t *testing.T, items []string, n int, member string) {
	t.Helper()
	require.Len(t, items, n)
	for i, item := range items {
		m, _, _, k := splitResult(t, item)
		require.Equal(t, i, k, "item %d: %s", i, item)
		require.Equal(t, member, m, "item %d ran elsewhere", i)
	}
}

// place binds session id in pool p from live[0], and returns its home
// member and a member that does not hold it.
func place(t testing.TB, live []*Runtime, id string) (home, away *Runtime) {
	t.Helper()
	member, _, err := callIn(t, live[0], "p", id, "count")
	require.NoError(t, err)
	for _, rt := range live {
		if rt.member.id == member {
			home = rt
		} else if away == nil {
			away = rt
		}
	}
	require.NotNil(t, home, "session %s lives on an unknown member %s", id, member)
	require.NotNil(t, away)
	return home, away
}

func TestClusterStreamsCrossMembers(t *testing.T) {
	tc := startTestCluster(t, 3, StrictQueue)
	ctx := context.Background()
	const w = clusterStreamWindow

	t.Run("a stream from every member yields every item in order", func(t *testing.T) {
		const n = 5 * w // the reader acks many times
		var home string
		for i, rt := range tc.members { // the first call of the session is a stream
			st, err := rt.Session("st").Stream(ctx, fmt.Sprint("items:", n))
			require.NoError(t, err)
			items := readAll(t, st)
			if i == 0 {
				home, _, _, _ = splitResult(t, items[0])
			}
			assertInOrder(t, items, n, home)
			worker, _ := st.Worker()
			assert.GreaterOrEqual(t, worker, 0, "the stream names its worker")
		}
		_, calls, err := callIn(t, tc.members[0], "p", "st", "count")
		require.NoError(t, err)
		assert.Equal(t, 4, calls, "the three streams ran on the session's worker, with its state")
	})

	t.Run("items made faster than they are sent go together, in order, then the end", func(t *testing.T) {
		const n = 10_000
		home, away := place(t, tc.members, "st-batched")
		before := away.member.itemMessages.Load()
		st, err := away.Session("st-batched").Stream(ctx, fmt.Sprint("items:", n), WithStreamWindow(1024))
		require.NoError(t, err)
		items := readAll(t, st)
		assertInOrder(t, items, n, home.member.id)
		messages := away.member.itemMessages.Load() - before
		assert.Less(t, messages, int64(n), "%d items came in %d messages", n, messages)
		t.Logf("%d items came in %d messages", n, messages)
	})

	t.Run("a ref's stream from other members", func(t *testing.T) {
		out, err := tc.members[0].Session("st-ref").Call(ctx, "ref")
		require.NoError(t, err)
		ref := out.(messages.Ref)
		for _, rt := range tc.members {
			if rt.member.id == ref.Member {
				continue
			}
			st, err := rt.StreamRef(ctx, ref, "items:100")
			require.NoError(t, err)
			assertInOrder(t, readAll(t, st), 100, ref.Member)
			worker, inc := st.Worker()
			assert.Equal(t, ref.Worker, worker)
			assert.Equal(t, ref.Incarnation, inc)
		}
	})

	t.Run("busy worker: ErrWorkerBusy, and ErrNoWorkersAvailable in hint", func(t *testing.T) {
		home, away := place(t, tc.members, "st-busy")
		held := make(chan error, 1)
		go func() { _, err := home.Session("st-busy").Call(ctx, "hold"); held <- err }()
		<-holdStarted
		_, err := away.Session("st-busy").Stream(ctx, "items:1")
		assert.ErrorIs(t, err, ErrWorkerBusy, "strict_queue: a stream never waits")
		holdRelease <- struct{}{}
		require.NoError(t, <-held)

		// Two hint sessions on one member's two workers, both held.
		ids := hintPair(t, home)
		for _, id := range ids {
			go func() { _, err := home.Session(id).Call(ctx, "hold", WithPool("hint")); held <- err }()
			<-holdStarted
		}
		_, err = away.Session(ids[0]).Stream(ctx, "items:1", WithPool("hint"))
		assert.ErrorIs(t, err, ErrNoWorkersAvailable, "hint: no free worker")
		for range ids {
			holdRelease <- struct{}{}
			require.NoError(t, <-held)
		}
	})

	t.Run("close or cancel mid-stream frees the worker on the other member", func(t *testing.T) {
		for _, how := range []string{"close", "cancel"} {
			id := "st-stop-" + how
			home, away := place(t, tc.members, id)
			f := newFlood(id)
			sctx, cancel := context.WithCancel(ctx)
			st, err := away.Session(id).Stream(sctx, "flood")
			require.NoError(t, err)
			for range 10 {
				_, err := st.Recv()
				require.NoError(t, err)
			}
			if how == "close" {
				st.Close()
			} else {
				cancel()
			}
			assert.ErrorIs(t, recvUntilError(t, st), context.Canceled, how)
			assert.ErrorIs(t, f.stopped(t), context.Canceled, "%s: the worker's send fails", how)
			require.Eventually(t, func() bool { return home.Stats().Pools["p"].Inflight == 0 }, 10*time.Second, time.Millisecond)
			_, err = away.Session(id).Call(ctx, "count", WithAffinity(StrictFailFast))
			assert.NoError(t, err, "%s: the worker is free", how)
			cancel()
		}
	})

	t.Run("a slow reader is not run ahead of by more than the window", func(t *testing.T) {
		id := "st-slow"
		_, away := place(t, tc.members, id)
		f := newFlood(id)
		st, err := away.Session(id).Stream(ctx, "flood")
		require.NoError(t, err)
		f.waitSending(t, w+1) // the reader took nothing: send w+1 waits
		assert.EqualValues(t, w+1, f.sending.Load())
		assert.EqualValues(t, w, f.sent.Load())
		for range w / 2 { // half a window taken: one ack
			_, err := st.Recv()
			require.NoError(t, err)
		}
		f.waitSending(t, w+w/2+1)
		assert.EqualValues(t, w+w/2+1, f.sending.Load())
		assert.EqualValues(t, w+w/2, f.sent.Load())
		st.Close()
		assert.ErrorIs(t, f.stopped(t), context.Canceled)
	})

	t.Run("WithStreamWindow sets the window across members", func(t *testing.T) {
		id := "st-window"
		_, away := place(t, tc.members, id)
		f := newFlood(id)
		st, err := away.Session(id).Stream(ctx, "flood", WithStreamWindow(4))
		require.NoError(t, err)
		f.waitSending(t, 5)
		assert.EqualValues(t, 5, f.sending.Load())
		assert.EqualValues(t, 4, f.sent.Load())
		for i := range 2 { // half of this window: one ack
			item, err := st.Recv()
			require.NoError(t, err)
			assert.Equal(t, i, item)
		}
		f.waitSending(t, 7)
		assert.EqualValues(t, 7, f.sending.Load())
		assert.EqualValues(t, 6, f.sent.Load())
		st.Close()
		assert.ErrorIs(t, f.stopped(t), context.Canceled)
	})

	t.Run("an item that cannot cross members ends the stream", func(t *testing.T) {
		_, away := place(t, tc.members, "st-bad")
		st, err := away.Session("st-bad").Stream(ctx, "bad-item")
		require.NoError(t, err)
		_, err = st.Recv()
		assert.ErrorIs(t, err, ErrPayloadNotPortable)
		t.Log(err)
	})

	// Last: it takes a member out of the cluster.
	t.Run("the caller's member shutting down stops its streams at the worker", func(t *testing.T) {
		id := "st-caller-leaves"
		home, away := place(t, tc.members, id)
		f := newFlood(id)
		st, err := away.Session(id).Stream(ctx, "flood")
		require.NoError(t, err)
		f.waitSending(t, w+1)
		require.NoError(t, away.Shutdown(ctx))
		assert.ErrorIs(t, recvUntilError(t, st), ErrShutdown)
		assert.ErrorIs(t, f.stopped(t), context.Canceled, "the worker's send fails")
		require.Eventually(t, func() bool { return home.Stats().Pools["p"].Inflight == 0 }, 10*time.Second, time.Millisecond)
	})
}

// The message API's StreamRequest from a member that does not hold the
// session: its items reach the requesting actor in order, a Window paces
// the worker on the other member, and a cancel or a receiver that stops
// frees that worker.
func TestClusterMessageAPIStreams(t *testing.T) {
	tc := startTestCluster(t, 3, StrictQueue)
	const w = clusterStreamWindow
	items := func(t *testing.T, out chan any, tag uint64, from uint64, n int) []any {
		t.Helper()
		var got []any
		for seq := from; seq < from+uint64(n); seq++ {
			item, ok := next(t, out).(*messages.StreamItem)
			require.True(t, ok, "item %d", seq)
			require.Equal(t, tag, item.Tag)
			require.Equal(t, seq, item.Seq, "in order")
			got = append(got, item.Item)
		}
		return got
	}

	t.Run("unthrottled, from every member, past many acks", func(t *testing.T) {
		home, _ := place(t, tc.members, "mst")
		const n = 5 * w
		for i, rt := range tc.members {
			user, out := spawnUser(t, rt, "mst")
			rt.ActorSystem().Root.Send(user, &messages.StreamRequest{Tag: uint64(i + 1), Payload: fmt.Sprint("items:", n)})
			for k, item := range items(t, out, uint64(i+1), 0, n) {
				m, _, _, seq := splitResult(t, item.(string))
				require.Equal(t, home.member.id, m, "ran on the session's worker")
				require.Equal(t, k, seq)
			}
			end := next(t, out).(*messages.StreamEnd)
			require.NoError(t, end.Err)
			require.EqualValues(t, n, end.Items)
		}
	})

	t.Run("a window paces the worker on the other member; a cancel stops it", func(t *testing.T) {
		id := "mst-window"
		home, away := place(t, tc.members, id)
		f := newFlood(id)
		user, out := spawnUser(t, away, id)
		root := away.ActorSystem().Root
		root.Send(user, &messages.StreamRequest{Tag: 7, Window: 3, Payload: "flood"})
		items(t, out, 7, 0, 3)
		f.waitSending(t, 4)
		assert.EqualValues(t, 3, f.sent.Load(), "the fourth send waits for an ack")
		root.Send(user, &messages.StreamAck{Tag: 7, Items: 2})
		items(t, out, 7, 3, 2)
		f.waitSending(t, 6)
		assert.EqualValues(t, 5, f.sent.Load())
		root.Send(user, &messages.CancelStream{Tag: 7})
		end := next(t, out).(*messages.StreamEnd)
		require.ErrorIs(t, end.Err, context.Canceled)
		require.EqualValues(t, 5, end.Items)
		assert.ErrorIs(t, f.stopped(t), context.Canceled, "the worker's send fails")
		require.Eventually(t, func() bool { return home.Stats().Pools["p"].Inflight == 0 }, 10*time.Second, time.Millisecond)
	})

	t.Run("a throttled stream's receiver that stops frees the worker", func(t *testing.T) {
		id := "mst-gone"
		home, away := place(t, tc.members, id)
		f := newFlood(id)
		user, out := spawnUser(t, away, id)
		root := away.ActorSystem().Root
		root.Send(user, &messages.StreamRequest{Tag: 1, Window: 1, Payload: "flood"})
		items(t, out, 1, 0, 1)
		require.NoError(t, root.StopFuture(user).Wait())
		assert.ErrorIs(t, f.stopped(t), context.Canceled)
		require.Eventually(t, func() bool { return home.Stats().Pools["p"].Inflight == 0 }, 10*time.Second, time.Millisecond)
		_, err := away.Session(id).Call(context.Background(), "count", WithAffinity(StrictFailFast))
		assert.NoError(t, err, "the worker is free")
	})

	t.Run("on a ref, and refused by a busy worker", func(t *testing.T) {
		id := "mst-ref"
		home, away := place(t, tc.members, id)
		out0, err := home.Session(id).Call(context.Background(), "ref")
		require.NoError(t, err)
		ref := out0.(messages.Ref)
		user, out := spawnUser(t, away, id)
		root := away.ActorSystem().Root
		root.Send(user, &messages.StreamRequest{Tag: 2, Ref: &ref, Payload: "items:10"})
		for _, item := range items(t, out, 2, 0, 10) {
			m, worker, inc, _ := splitResult(t, item.(string))
			require.Equal(t, ref.Member, m)
			require.Equal(t, ref.Worker, worker)
			require.Equal(t, ref.Incarnation, inc)
		}
		require.NoError(t, next(t, out).(*messages.StreamEnd).Err)

		held := make(chan error, 1)
		go func() { _, err := home.Session(id).Call(context.Background(), "hold"); held <- err }()
		<-holdStarted
		root.Send(user, &messages.StreamRequest{Tag: 3, Payload: "items:1"})
		end := next(t, out).(*messages.StreamEnd)
		assert.ErrorIs(t, end.Err, ErrWorkerBusy, "strict_queue: a stream never waits")
		assert.Zero(t, end.Items)
		holdRelease <- struct{}{}
		require.NoError(t, <-held)
	})
}

// hintPair returns two sessions bound, in pool "hint", to the two workers
// of member rt.
func hintPair(t *testing.T, rt *Runtime) []string {
	t.Helper()
	byWorker := map[int]string{}
	for s := 0; len(byWorker) < 2; s++ {
		require.Less(t, s, 200, "no two hint sessions on the workers of member %s", rt.member.id)
		id := fmt.Sprint("st-hint-", s)
		out, err := rt.Session(id).Call(context.Background(), "count", WithPool("hint"))
		require.NoError(t, err)
		member, worker, _, _ := splitResult(t, out.(string))
		if member == rt.member.id {
			byWorker[worker] = id
		}
	}
	return []string{byWorker[0], byWorker[1]}
}

// without returns live less rt.
func without(live []*Runtime, rt *Runtime) []*Runtime {
	var out []*Runtime
	for _, r := range live {
		if r != rt {
			out = append(out, r)
		}
	}
	return out
}

func TestClusterStreamsAndCrashes(t *testing.T) {
	tc := startTestCluster(t, 4, StrictQueue)
	ctx := context.Background()
	live := tc.members
	settle := func() {
		for _, rt := range live {
			tc.waitMembers(rt, len(live))
		}
	}

	t.Run("the caller's member crashing frees the worker", func(t *testing.T) {
		id := "crash-caller"
		home, caller := place(t, live, id)
		f := newFlood(id)
		st, err := caller.Session(id).Stream(ctx, "flood")
		require.NoError(t, err)
		defer st.Close()
		f.waitSending(t, clusterStreamWindow+1) // waiting for an ack that will never come
		// Its connections drop, as with a process killed; the failure
		// detector has not noticed yet.
		caller.member.c.Remote.Shutdown(false)
		require.Eventually(t, func() bool { return home.Stats().Pools["p"].Inflight == 0 }, 10*time.Second, time.Millisecond,
			"the worker still runs the stream of a reader that is gone")
		assert.ErrorIs(t, f.stopped(t), context.Canceled, "the worker's send fails")
		assert.Contains(t, home.member.members(), caller.member.id, "freed by the watch, before the topology changed")
		tc.crash(caller)
		live = without(live, caller)
		settle()
	})

	t.Run("the session's member crashing ends the stream with ErrWorkerFailed", func(t *testing.T) {
		id := "crash-home"
		home, caller := place(t, live, id)
		newFlood(id)
		st, err := caller.Session(id).Stream(ctx, "flood")
		require.NoError(t, err)
		for range 10 {
			_, err := st.Recv()
			require.NoError(t, err)
		}
		tc.crash(home)
		err = recvUntilError(t, st)
		assert.ErrorIs(t, err, ErrWorkerFailed)
		t.Log(err)
		live = without(live, home)
		settle()
	})

	t.Run("the session's member leaving ends the stream with ErrWorkerFailed", func(t *testing.T) {
		id := "leave-home"
		home, caller := place(t, live, id)
		f := newFlood(id)
		st, err := caller.Session(id).Stream(ctx, "flood")
		require.NoError(t, err)
		for range 10 {
			_, err := st.Recv()
			require.NoError(t, err)
		}
		left := make(chan error, 1)
		go func() { left <- home.Shutdown(ctx) }()
		err = recvUntilError(t, st)
		assert.ErrorIs(t, err, ErrWorkerFailed)
		assert.ErrorIs(t, f.stopped(t), context.Canceled, "the worker's send fails")
		require.NoError(t, <-left)
		t.Log(err)
	})
}

// BenchmarkClusterStream is the cost of one stream item read on a member
// that does not hold the session, and on the one that does.
func BenchmarkClusterStream(b *testing.B) {
	tc := startTestCluster(b, 2, StrictQueue)
	home, away := place(b, tc.members, "bench-stream")
	for _, c := range []struct {
		name   string
		rt     *Runtime
		window int
	}{
		{"across members", away, 0},
		{"across members, window 1024", away, 1024},
		{"on the session's member", home, 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			var opts []CallOption
			if c.window > 0 {
				opts = append(opts, WithStreamWindow(c.window))
			}
			st, err := c.rt.Session("bench-stream").Stream(context.Background(), fmt.Sprint("items:", b.N), opts...)
			require.NoError(b, err)
			for range b.N {
				if _, err := st.Recv(); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := st.Recv(); !errors.Is(err, io.EOF) {
				b.Fatal(err)
			}
		})
	}
}
