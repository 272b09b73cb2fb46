//go:build unix

package procworker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

func TestFactoryValidatesConfig(t *testing.T) {
	_, err := Factory(Config{})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "empty Command")

	_, err = Factory(Config{Command: "no-such-command-affinity", StartTimeout: -1, MaxRSS: -5, MaxFrame: 10})
	require.ErrorIs(t, err, ErrInvalidConfig)
	for _, want := range []string{"Command", "negative", "MaxFrame"} {
		require.ErrorContains(t, err, want, "every problem is reported at once")
	}

	_, err = Factory(Config{Command: "true", HeartbeatInterval: -1, MaxAge: time.Minute})
	require.ErrorIs(t, err, ErrInvalidConfig)

	f, err := Factory(Config{Command: "true"})
	require.NoError(t, err)
	require.NotNil(t, f)
}

// startOne runs a factory directly, as the worker actor does.
func startOne(t *testing.T, cfg Config) (*worker, error) {
	t.Helper()
	f, err := Factory(cfg)
	require.NoError(t, err)
	w, err := f(testCtx(t), actors.WorkerInfo{Pool: "p", ID: 0, Incarnation: 1})
	if err != nil {
		return nil, err
	}
	pw := w.(*worker)
	t.Cleanup(func() { _ = pw.Close() })
	return pw, nil
}

func TestStartFailures(t *testing.T) {
	cfg := fakeConfig("noready")
	cfg.StartTimeout = 200 * time.Millisecond
	_, err := startOne(t, cfg)
	require.ErrorIs(t, err, ErrStartTimeout)

	_, err = startOne(t, fakeConfig("badready"))
	require.ErrorIs(t, err, ErrProtocol)
	require.ErrorContains(t, err, "first frame is result")

	_, err = startOne(t, Config{Command: "sh", Args: []string{"-c", "exit 7"}})
	var ee *ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 7, ee.Code)
	require.ErrorIs(t, err, ErrExited)

	// A failed first start fails the runtime's Start with the reason.
	f, err := Factory(Config{Command: "sh", Args: []string{"-c", "exit 7"}})
	require.NoError(t, err)
	_, err = actors.Start(actors.Config{Pools: []actors.PoolConfig{{Name: "p", Size: 1, NewWorker: f}}})
	require.ErrorIs(t, err, ErrExited)
}

// TestExitTaints covers a process that dies, in a call or between calls,
// by a signal or with an exit code: the taint names how, the call gets
// ErrWorkerFailed, and the restart is a new process that strict sessions
// and refs do not silently reach.
func TestExitTaints(t *testing.T) {
	for _, tc := range []struct {
		name    string
		kill    func(t *testing.T, h *harness, s *actors.Session, pid int) error // returns the call's error, if a call died
		signal  syscall.Signal
		code    int
		message string
	}{
		{name: "SIGSEGV in a call", signal: syscall.SIGSEGV, message: "killed by signal SIGSEGV",
			kill: func(t *testing.T, h *harness, s *actors.Session, _ int) error {
				_, err := s.Call(testCtx(t), op("segv"))
				return err
			}},
		{name: "SIGABRT in a call", signal: syscall.SIGABRT, message: "killed by signal SIGABRT",
			kill: func(t *testing.T, h *harness, s *actors.Session, _ int) error {
				_, err := s.Call(testCtx(t), op("abort"))
				return err
			}},
		{name: "exit code in a call", code: 3, message: "exited with code 3",
			kill: func(t *testing.T, h *harness, s *actors.Session, _ int) error {
				_, err := s.Call(testCtx(t), op("exit", "code", 3))
				return err
			}},
		{name: "SIGKILL between calls", signal: syscall.SIGKILL, message: "killed by signal SIGKILL",
			kill: func(t *testing.T, h *harness, s *actors.Session, pid int) error {
				require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
				return nil
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startPool(t, pyConfig(t), 1, actors.StrictQueue)
			ctx := testCtx(t)
			s := h.rt.Session("s")
			before, err := As[hitsReply](s.Call(ctx, op("hits")))
			require.NoError(t, err)
			refv, err := s.Call(ctx, op("newdoc"))
			require.NoError(t, err)

			callErr := tc.kill(t, h, s, before.Pid)
			if callErr != nil {
				require.ErrorIs(t, callErr, actors.ErrWorkerFailed)
				require.ErrorIs(t, callErr, ErrExited)
				require.ErrorContains(t, callErr, tc.message)
			}
			taint := h.waitTaint(t, 1)
			var ee *ExitError
			require.ErrorAs(t, taint.Err, &ee)
			require.Equal(t, tc.signal, ee.Signal)
			if tc.signal == 0 {
				require.Equal(t, tc.code, ee.Code)
			}
			require.Contains(t, taint.Err.Error(), tc.message)
			require.Equal(t, messages.TaintExited, taint.Reason, "during a call or between calls (the process watcher's), an exit is reported as one")

			h.waitRestarts(t, 1)
			_, err = s.Call(ctx, op("hits"))
			require.ErrorIs(t, err, actors.ErrSessionWorkerUnavailable)
			_, err = h.rt.CallRef(ctx, refv.(messages.Ref), op("append", "text", "x"))
			require.ErrorIs(t, err, actors.ErrRefLost)
			after, err := As[hitsReply](s.Call(ctx, op("hits"), actors.WithAffinity(actors.Hint)))
			require.NoError(t, err)
			require.NotEqual(t, before.Pid, after.Pid)
			require.Equal(t, uint64(2), after.Incarnation)
			require.Len(t, h.tainted(), 1)
		})
	}
}

func TestHeartbeatsMissedTaint(t *testing.T) {
	cfg := fakeConfig("")
	cfg.HeartbeatInterval, cfg.MissedHeartbeats = 20*time.Millisecond, 3
	h := startPool(t, cfg, 1, actors.StrictQueue)
	ctx := testCtx(t)
	_, err := h.rt.Session("s").Call(ctx, op("mute")) // stops answering pings, and this call
	require.ErrorIs(t, err, actors.ErrWorkerFailed)
	require.ErrorIs(t, err, ErrHeartbeat)
	taint := h.waitTaint(t, 1)
	require.ErrorIs(t, taint.Err, ErrHeartbeat)
	require.ErrorContains(t, taint.Err, "no pong for")
	h.waitRestarts(t, 1)
}

func TestBadInputTaints(t *testing.T) {
	for _, tc := range []struct{ op, reason string }{
		{"garbage", "frame shorter than its header"},
		{"oversize", "frame larger than the limit"},
		{"unknown", "unknown frame type 42"},
		{"stray", "which is not running"},
		{"item", "item frame for a plain call"},
	} {
		t.Run(tc.op, func(t *testing.T) {
			h := startPool(t, fakeConfig(""), 1, actors.StrictQueue)
			_, err := h.rt.Session("s").Call(testCtx(t), op(tc.op))
			require.ErrorIs(t, err, actors.ErrWorkerFailed)
			require.ErrorIs(t, err, ErrProtocol)
			require.ErrorContains(t, err, tc.reason)
			taint := h.waitTaint(t, 1)
			require.ErrorIs(t, taint.Err, ErrProtocol)
			h.waitRestarts(t, 1)
		})
	}
}

func TestRecycling(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tweak func(*Config)
		calls int // calls made before waiting for the recycle
		why   string
	}{
		{"max calls", func(c *Config) { c.MaxCalls = 3 }, 3, "MaxCalls"},
		{"max age", func(c *Config) { c.MaxAge = 100 * time.Millisecond }, 1, "MaxAge"},
		{"max rss", func(c *Config) { c.MaxRSS = 1 << 20 }, 1, "MaxRSS"}, // any Python is above 1 MiB
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := pyConfig(t)
			tc.tweak(&cfg)
			h := startPool(t, cfg, 1, actors.Hint)
			ctx := testCtx(t)
			s := h.rt.Session("s")
			var first hitsReply
			for i := range tc.calls {
				r, err := As[hitsReply](s.Call(ctx, op("hits")))
				require.NoError(t, err, "recycling never fails a call")
				if i == 0 {
					first = r
				}
			}
			taint := h.waitTaint(t, 1)
			require.Equal(t, messages.TaintRecycle, taint.Reason)
			require.ErrorIs(t, taint.Err, actors.ErrRecycle)
			require.ErrorContains(t, taint.Err, tc.why)
			h.waitRestarts(t, 1)
			require.Eventually(t, func() bool { return !alive(first.Pid) }, 10*time.Second, 5*time.Millisecond,
				"the old process was stopped")
			r, err := As[hitsReply](s.Call(ctx, op("hits")))
			require.NoError(t, err)
			require.GreaterOrEqual(t, r.Incarnation, uint64(2))
		})
	}
}

func TestGracefulStop(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		signal syscall.Signal // how the process must end
	}{
		{"stdin closed", fakeConfig(""), 0},
		{"SIGTERM after grace", fakeConfig("termable"), syscall.SIGTERM},
		{"SIGKILL after grace", fakeConfig("stubborn"), syscall.SIGKILL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.StopGrace = 100 * time.Millisecond
			w, err := startOne(t, cfg)
			require.NoError(t, err)
			start := time.Now()
			require.NoError(t, w.Close())
			took := time.Since(start)
			var ee *ExitError
			require.ErrorAs(t, w.exitErr, &ee)
			require.Equal(t, tc.signal, ee.Signal, "%v", ee)
			require.False(t, alive(w.pid))
			switch tc.signal {
			case 0:
				require.Less(t, took, cfg.StopGrace, "no signal needed")
			case syscall.SIGKILL:
				require.GreaterOrEqual(t, took, 2*cfg.StopGrace)
			}
			require.NoError(t, w.Close(), "Close is idempotent")
		})
	}
}

func TestCloseBeforeTaintIsQuiet(t *testing.T) {
	// A worker closed by the runtime (shutdown) must not report its own
	// exit as a failure.
	w, err := startOne(t, fakeConfig(""))
	require.NoError(t, err)
	taints := make(chan error, 1)
	w.SetTaint(func(err error) { taints <- err })
	require.NoError(t, w.Close())
	select {
	case err := <-taints:
		t.Fatalf("closing tainted the worker: %v", err)
	default:
	}
	require.ErrorIs(t, w.CheckHealth(context.Background()), ErrExited)
	_, err = w.Handle(context.Background(), messages.Call{Payload: 1})
	require.True(t, actors.IsFatal(err))
}

func TestExitErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		e    ExitError
		want string
	}{
		{ExitError{Pid: 1, Code: 2}, "worker process 1 exited with code 2"},
		{ExitError{Pid: 1, Code: -1, Signal: syscall.SIGSEGV, Core: true}, "worker process 1 killed by signal SIGSEGV (segmentation fault), core dumped"},
		{ExitError{Pid: 1, Code: -1, Signal: syscall.Signal(63)}, "signal 63"},
	} {
		require.Contains(t, tc.e.Error(), tc.want)
		require.True(t, errors.Is(&tc.e, ErrExited))
	}
	require.True(t, strings.HasPrefix(fmt.Sprint(&RemoteError{Message: "m"}), "worker error: m"))
}
