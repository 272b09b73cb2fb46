//go:build unix

package procworker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

func TestPythonKitCalls(t *testing.T) {
	h := startPool(t, pyConfig(t), 1, actors.StrictQueue)
	ctx := testCtx(t)
	s := h.rt.Session("alice")

	// JSON in, JSON out; state per session in the process.
	for want := 1; want <= 3; want++ {
		r, err := As[hitsReply](s.Call(ctx, op("hits")))
		require.NoError(t, err)
		require.Equal(t, want, r.Hits)
		require.Equal(t, uint64(1), r.Incarnation, "the call metadata reaches the process")
	}

	// Raw bytes pass through untouched, both ways.
	v, err := s.Call(ctx, []byte{1, 2, 3, 0xff})
	require.NoError(t, err)
	require.Equal(t, []byte{0xff, 3, 2, 1}, v)

	// json.RawMessage goes as is.
	v, err = s.Call(ctx, json.RawMessage(`{"op":"echo","x":[1,2]}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"op":"echo","x":[1,2]}`, string(v.(json.RawMessage)))

	// An exception is a RemoteError; the worker stays.
	_, err = s.Call(ctx, op("boom"))
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	require.ErrorIs(t, err, ErrRemote)
	require.Equal(t, "ValueError", re.Type)
	require.Equal(t, "boom", re.Message)
	require.NotErrorIs(t, err, actors.ErrWorkerFailed)

	// Refs: the object stays in the process.
	ref, err := s.Call(ctx, op("newdoc"))
	require.NoError(t, err)
	r := ref.(messages.Ref)
	require.Equal(t, "alice", r.Session)
	for want := 1; want <= 2; want++ {
		n, err := As[int](h.rt.CallRef(ctx, r, op("append", "text", "line")))
		require.NoError(t, err)
		require.Equal(t, want, n)
	}

	// Streams: a generator's items, then the end.
	st, err := s.Stream(ctx, op("count", "n", 5))
	require.NoError(t, err)
	var items []int
	for {
		v, err := st.Recv()
		if err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
		n, err := As[int](v, nil)
		require.NoError(t, err)
		items = append(items, n)
	}
	require.Equal(t, []int{0, 1, 2, 3, 4}, items)

	// A stream the caller closes early: the process is told to stop, and
	// the worker takes the next call.
	st, err = s.Stream(ctx, op("forever"))
	require.NoError(t, err)
	_, err = st.Recv()
	require.NoError(t, err)
	st.Close()
	_, err = s.Call(ctx, op("hits"))
	require.NoError(t, err)

	// Release: closing the session drops its state in the process.
	s.Close()
	rr, err := As[hitsReply](s.Call(ctx, op("hits")))
	require.NoError(t, err)
	require.Equal(t, 1, rr.Hits, "the release hook dropped the session's counter")
	require.Empty(t, h.tainted())
}

func TestPythonKitFatalRestartsTheProcess(t *testing.T) {
	h := startPool(t, pyConfig(t), 1, actors.StrictQueue)
	ctx := testCtx(t)
	s := h.rt.Session("bob")
	first, err := As[hitsReply](s.Call(ctx, op("hits")))
	require.NoError(t, err)
	ref, err := s.Call(ctx, op("newdoc"))
	require.NoError(t, err)

	_, err = s.Call(ctx, op("fatal"))
	require.ErrorIs(t, err, actors.ErrWorkerFailed)
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, "FatalError", re.Type)

	h.waitRestarts(t, 1)
	_, err = s.Call(ctx, op("hits"))
	require.ErrorIs(t, err, actors.ErrSessionWorkerUnavailable)
	_, err = h.rt.CallRef(ctx, ref.(messages.Ref), op("append", "text", "x"))
	require.ErrorIs(t, err, actors.ErrRefLost)

	second, err := As[hitsReply](s.Call(ctx, op("hits"), actors.WithAffinity(actors.Hint)))
	require.NoError(t, err)
	require.NotEqual(t, first.Pid, second.Pid, "a new incarnation is a new process")
	require.Equal(t, uint64(2), second.Incarnation)
	require.Equal(t, 1, second.Hits)
	require.Eventually(t, func() bool { return !alive(first.Pid) }, 10*time.Second, 5*time.Millisecond)
}

func TestHeartbeatsAnsweredDuringALongCall(t *testing.T) {
	cfg := pyConfig(t)
	cfg.HeartbeatInterval, cfg.MissedHeartbeats = 20*time.Millisecond, 2
	h := startPool(t, cfg, 1, actors.StrictQueue)
	ctx := testCtx(t)
	// 400 ms is 20 intervals: without the reader thread it would miss ten
	// times the allowed pongs.
	v, err := As[string](h.rt.Session("s").Call(ctx, op("sleep", "s", 0.4)))
	require.NoError(t, err)
	require.Equal(t, "slept", v)
	require.Empty(t, h.tainted())
}

func TestStderrIsLoggedWithTheWorker(t *testing.T) {
	var logs syncBuffer
	cfg := pyConfig(t)
	cfg.Logger = logs.logger()
	h := startPool(t, cfg, 1, actors.Hint)
	ctx := testCtx(t)
	_, err := h.rt.Session("s").Call(ctx, op("print", "text", "hello from python"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return logs.find("hello from python") != nil }, 10*time.Second, 5*time.Millisecond)
	line := logs.find("hello from python")
	require.Equal(t, "p", line["pool"])
	require.EqualValues(t, 0, line["worker"])
	require.EqualValues(t, 1, line["incarnation"])
	require.Equal(t, "stderr", line["stream"])
	require.Equal(t, "info", line["level"])
}

func TestCallCancelledWhileTheProcessWorks(t *testing.T) {
	h := startPool(t, fakeConfig(""), 1, actors.StrictQueue)
	ctx := testCtx(t)
	s := h.rt.Session("s")
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err := s.Call(short, op("sleep", "MS", 300))
	require.True(t, errors.Is(err, context.DeadlineExceeded), "got %v", err)
	// The late result of the abandoned call is dropped, not a protocol
	// violation: the next call works on the same process.
	v, err := As[map[string]any](s.Call(ctx, op("echo")))
	require.NoError(t, err)
	require.Equal(t, "echo", v["op"])
	require.Empty(t, h.tainted())
}

// TestConcurrentCallsOnOneProcess: with Capacity 2 two calls share the
// process, and replies are matched by id whatever their order.
func TestConcurrentCallsOnOneProcess(t *testing.T) {
	h := startPool(t, fakeConfig(""), 1, actors.StrictQueue, func(pc *actors.PoolConfig) { pc.Capacity = 2 })
	ctx := testCtx(t)
	slow := make(chan error, 1)
	go func() {
		v, err := As[string](h.rt.Session("a").Call(ctx, op("sleep", "MS", 300)))
		if err == nil && v != "slept" {
			err = fmt.Errorf("slow call got %q", v)
		}
		slow <- err
	}()
	// The fast call is answered while the slow one still runs.
	for range 3 {
		v, err := As[map[string]any](h.rt.Session("b").Call(ctx, op("echo", "n", 1)))
		require.NoError(t, err)
		require.Equal(t, "echo", v["op"])
	}
	require.NoError(t, <-slow)
	require.Empty(t, h.tainted())
}

// The Python kit sends a windowed stream's items only on credit: two,
// then one per credit frame, while its reader still answers pings.
func TestPythonKitWaitsForStreamCredit(t *testing.T) {
	needPython(t)
	cmd := exec.Command("python3", kitScript())
	cmd.Env = append(os.Environ(), noBytecode...)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	in := bufio.NewReader(stdout)
	next := func() frame {
		t.Helper()
		f, err := readFrame(in, DefaultMaxFrame)
		require.NoError(t, err)
		return f
	}
	send := func(f frame) {
		t.Helper()
		_, err := stdin.Write(appendFrame(nil, f))
		require.NoError(t, err)
	}
	ready := next()
	require.Equal(t, frameReady, ready.typ)
	require.Contains(t, string(ready.body), `"credit": true`)

	meta, _ := json.Marshal(callMeta{Session: "s", Pool: "p", Incarnation: 1, Window: 2})
	send(frame{typ: frameCall, flags: flagStream, id: 7, body: appendCallBody(nil, meta, []byte(`{"op":"count","n":10}`))})
	for i := 0; i < 2; i++ {
		require.Equal(t, frameItem, next().typ)
	}
	for item := 2; item < 4; item++ {
		send(frame{typ: framePing, id: uint64(item)})
		pong := next()
		require.Equal(t, framePong, pong.typ, "no item before credit: item %d", item)
		send(frame{typ: frameCredit, id: 7, body: binary32(nil, 1)})
		it := next()
		require.Equal(t, frameItem, it.typ)
		require.Equal(t, strconv.Itoa(item), string(it.body))
	}
	send(frame{typ: frameCredit, id: 7, body: binary32(nil, 100)})
	for item := 4; item < 10; item++ {
		require.Equal(t, strconv.Itoa(item), string(next().body))
	}
	require.Equal(t, frameEnd, next().typ)
}

// Behind a windowed stream the process is held back by the consumer, and
// every item arrives, in order.
func TestPythonKitStreamsThroughAWindow(t *testing.T) {
	cfg := pyConfig(t)
	cfg.StreamWindow = 4
	h := startPool(t, cfg, 1, actors.StrictQueue)
	st, err := h.rt.Session("s").Stream(testCtx(t), op("count", "n", 1000))
	require.NoError(t, err)
	for want := 0; want < 1000; want++ {
		v, err := st.Recv()
		require.NoError(t, err)
		require.Equal(t, strconv.Itoa(want), string(v.(json.RawMessage)))
	}
	_, err = st.Recv()
	require.ErrorIs(t, err, io.EOF)
	require.Empty(t, h.tainted())
}

// A process that announced credit and sends beyond it is tainted: the
// window bounds the host's memory, whatever the process does. The stream,
// stuck on a consumer that does not read, ends with ErrWorkerFailed after
// the items it holds, whatever the capacity: with Capacity 1 the stream
// call holds the worker actor, and the taint interrupts it.
func TestStreamBeyondItsCreditTaints(t *testing.T) {
	for _, capacity := range []int{1, 2} {
		t.Run(fmt.Sprint("capacity ", capacity), func(t *testing.T) {
			cfg := fakeConfig("credit")
			cfg.StreamWindow = 4
			h := startPool(t, cfg, 1, actors.StrictQueue, func(pc *actors.PoolConfig) { pc.Capacity = capacity })
			// Nobody reads: at most the window and the stream's buffer are granted.
			st, err := h.rt.Session("s").Stream(testCtx(t), op("flood", "n", 1000))
			require.NoError(t, err)
			defer st.Close()
			taint := h.waitTaint(t, 1)
			require.ErrorIs(t, taint.Err, ErrProtocol)
			require.ErrorContains(t, taint.Err, "beyond the")
			for err == nil {
				_, err = st.Recv()
			}
			require.ErrorIs(t, err, actors.ErrWorkerFailed)
			require.ErrorIs(t, err, ErrProtocol)
		})
	}
}
