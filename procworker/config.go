package procworker

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"time"

	"github.com/rs/zerolog"

	"github.com/affinity-go/affinity/actors"
)

// Defaults for zero-valued Config fields.
const (
	DefaultStartTimeout      = 30 * time.Second
	DefaultHeartbeatInterval = time.Second
	DefaultMissedHeartbeats  = 3
	DefaultStopGrace         = 5 * time.Second
	DefaultStreamWindow      = 64
	maxStreamWindow          = 1 << 20
)

// Config describes the process behind each worker of a pool. Only Command
// is required; zero values take the documented defaults.
type Config struct {
	// Command is the program to run, looked up in PATH when it has no
	// slash (exec.LookPath), once, by Factory.
	Command string
	Args    []string
	// Env is added to the host's environment. The runtime adds
	// AFFINITY_POOL, AFFINITY_WORKER and AFFINITY_INCARNATION.
	Env []string
	// Dir is the working directory; "" is the host's.
	Dir string
	// StartTimeout bounds the wait for the ready frame. Default 30 s (a
	// worker may load a model before it is ready).
	StartTimeout time.Duration
	// HeartbeatInterval is how often the host pings the process. Default
	// 1 s; negative disables heartbeats (and the MaxAge and MaxRSS checks,
	// which run on the same tick).
	HeartbeatInterval time.Duration
	// MissedHeartbeats is how many intervals may pass without a pong
	// before the worker is tainted (ErrHeartbeat). Default 3.
	MissedHeartbeats int
	// MaxCalls recycles the process after that many calls (it finishes
	// the call; the taint reaches the worker actor as a message, so a call
	// already queued for it may still run: use PoolConfig.MaxCalls for an
	// exact bound). 0: never.
	MaxCalls int
	// MaxAge recycles the process once it is older than this, checked on
	// each heartbeat tick. 0: never.
	MaxAge time.Duration
	// MaxRSS recycles the process once its resident memory (VmRSS in
	// /proc/PID/status) exceeds this many bytes, checked on each heartbeat
	// tick. 0: never. Linux only.
	MaxRSS int64
	// StopGrace is how long a stop waits after closing stdin before
	// SIGTERM, and after SIGTERM before SIGKILL. Default 5 s.
	StopGrace time.Duration
	// MaxFrame bounds the length of a frame read from the process; a
	// longer one taints it (ErrProtocol). Default DefaultMaxFrame (16 MiB).
	MaxFrame int
	// StreamWindow is how many items of a streaming call the process may
	// send ahead of the consumer: the host grants more as the consumer
	// takes them, so a slow consumer holds the process back instead of
	// filling the host's memory. It applies to processes that announce
	// credit in their ready frame (the Python kit does); more items than
	// granted taint the worker (ErrProtocol). Default 64; negative: no
	// window, the process sends freely.
	StreamWindow int
	// Logger receives the process's stderr, line by line, at info level,
	// and lifecycle messages, tagged with pool, worker, incarnation and
	// pid. The zero Logger is silent.
	Logger zerolog.Logger
}

// Factory validates cfg and returns the factory of a pool whose workers
// are processes running cfg.Command. Each incarnation is a new process: the
// factory starts it and returns once it is ready (or fails with
// ErrStartTimeout, or ErrExited if it died first). Every problem in cfg is
// reported at once, wrapped in ErrInvalidConfig.
func Factory(cfg Config) (actors.WorkerFactory, error) {
	cfg, err := cfg.validated()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, info actors.WorkerInfo) (actors.Worker, error) {
		return start(ctx, &cfg, info)
	}, nil
}

func (c Config) validated() (Config, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Command == "" {
		bad("empty Command")
	} else if path, err := exec.LookPath(c.Command); err != nil {
		bad("Command: %v", err)
	} else {
		c.Command = path
	}
	if c.StartTimeout < 0 || c.MissedHeartbeats < 0 || c.MaxCalls < 0 || c.MaxAge < 0 ||
		c.MaxRSS < 0 || c.StopGrace < 0 || c.MaxFrame < 0 {
		bad("negative StartTimeout, MissedHeartbeats, MaxCalls, MaxAge, MaxRSS, StopGrace or MaxFrame")
	}
	if c.StreamWindow > maxStreamWindow {
		bad("StreamWindow %d above the maximum %d", c.StreamWindow, maxStreamWindow)
	}
	if c.MaxFrame > 0 && c.MaxFrame < 64 {
		bad("MaxFrame %d below the minimum 64", c.MaxFrame)
	}
	if c.HeartbeatInterval < 0 && (c.MaxAge > 0 || c.MaxRSS > 0) {
		bad("MaxAge and MaxRSS are checked on heartbeat ticks: they need heartbeats")
	}
	if c.MaxRSS > 0 && !rssSupported {
		bad("MaxRSS is not supported on this system")
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = DefaultStartTimeout
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.MissedHeartbeats == 0 {
		c.MissedHeartbeats = DefaultMissedHeartbeats
	}
	if c.StopGrace == 0 {
		c.StopGrace = DefaultStopGrace
	}
	if c.MaxFrame == 0 {
		c.MaxFrame = DefaultMaxFrame
	}
	if c.StreamWindow == 0 {
		c.StreamWindow = DefaultStreamWindow
	}
	c.Args = append([]string(nil), c.Args...) // the caller may reuse its slices
	c.Env = append([]string(nil), c.Env...)
	if len(errs) > 0 {
		return c, fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return c, nil
}
