package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/affinity-go/affinity/messages"
	"github.com/affinity-go/affinity/supervisor"
)

// Affinity modes, re-exported from messages for convenience.
type Affinity = messages.Affinity

const (
	DefaultAffinity = messages.DefaultAffinity
	Hint            = messages.Hint
	StrictQueue     = messages.StrictQueue
	StrictFailFast  = messages.StrictFailFast
)

// ParseAffinity parses "hint", "strict_queue" or "strict_fail_fast".
func ParseAffinity(s string) (Affinity, error) { return messages.ParseAffinity(s) }

// WorkerInfo tells a factory which worker it is building.
type WorkerInfo struct {
	Pool        string
	ID          int
	Incarnation uint64 // numbered per worker from 1
	Restart     bool   // an incarnation after the first: the state is gone
}

// WorkerFactory builds the user code behind one worker incarnation. It runs
// inside the worker actor; an error at Start fails Start, an error on restart
// counts as a failed restart.
type WorkerFactory func(ctx context.Context, info WorkerInfo) (Worker, error)

// Defaults for zero-valued configuration fields.
const (
	DefaultCapacity       = 1
	DefaultQueueSize      = 1000
	DefaultQueueTimeout   = 10 * time.Second
	DefaultSessionIdleTTL = 30 * time.Minute
	// DefaultSessionPassivateAfter: an idle session actor is passivated
	// (stopped, its bindings kept in a compact record) after this long.
	DefaultSessionPassivateAfter = time.Minute
	DefaultHealthInterval        = 10 * time.Second
	DefaultHealthTimeout         = 2 * time.Second
	// MinHealthInterval keeps health checks from flooding worker mailboxes.
	MinHealthInterval = time.Millisecond
)

// PoolConfig describes one named pool. Zero values take the documented
// defaults.
type PoolConfig struct {
	Name      string        // required, unique
	Size      int           // workers at start; >= 1
	NewWorker WorkerFactory // required
	// Affinity is the pool's default mode; calls may override it.
	// Zero means Hint.
	Affinity Affinity
	// Capacity is how many calls one worker runs at once. Default 1. Above
	// 1, the worker's Handle must be safe for that many concurrent calls.
	Capacity int
	// QueueSize bounds the calls waiting in this pool. Default 1000.
	QueueSize int
	// QueueTimeout bounds how long a call waits; a context deadline wins
	// when earlier. Default 10 s.
	QueueTimeout time.Duration
	// MaxCalls recycles a worker after that many calls. 0: never.
	MaxCalls int
	// MaxAge recycles a worker older than this (checked after each call and
	// at each health tick). 0: never.
	MaxAge time.Duration
	// Restart overrides the runtime's restart policy for this pool.
	Restart *supervisor.Policy
	// OwnGoroutineOnly runs every call on the worker's own goroutines.
	// Without it, a call of the blocking API whose context cannot be
	// cancelled (Done() == nil), or made with RunOnCaller, runs on its
	// caller's goroutine when its worker can take it at once and its
	// mailbox is idle: the caller would only wait for it, and the goroutine
	// hand-offs are most of a short call's cost. With Capacity 1 the call is
	// still one turn of the worker actor, in order, one at a time; with
	// Capacity > 1 the worker actor begins it and the caller runs it, as a
	// runner goroutine of the worker would. Set this when a worker's state
	// is tied to its goroutine or OS thread (for example after
	// runtime.LockOSThread).
	OwnGoroutineOnly bool
}

// Config configures a Runtime. Only Pools is required.
type Config struct {
	Pools []PoolConfig
	// DefaultPool is used by calls that name no pool. Default: Pools[0].
	DefaultPool string
	// SessionIdleTTL ends sessions idle for this long (source "expired").
	// 0 means DefaultSessionIdleTTL; negative disables expiry.
	SessionIdleTTL time.Duration
	// SessionPassivateAfter stops the actor of a session idle for this
	// long, keeping its bindings; the next message activates a new one.
	// 0 means DefaultSessionPassivateAfter; negative disables passivation.
	SessionPassivateAfter time.Duration
	// HealthInterval is how often workers implementing HealthChecker are
	// checked. 0 means DefaultHealthInterval.
	HealthInterval time.Duration
	// HealthTimeout bounds one health check. 0 means DefaultHealthTimeout.
	HealthTimeout time.Duration
	// Restart is the restart policy for tainted workers.
	Restart supervisor.Policy
	// Logger receives the runtime's and the actor system's logs. Nil: silent.
	Logger *zerolog.Logger
	// LogSessionCleanup logs each session cleanup at debug level.
	LogSessionCleanup bool
	// OnEvent, when set, receives every event synchronously. It must be fast
	// and must not block or call back into the runtime.
	OnEvent func(messages.Event)
	// PublishEvents also publishes every event on the actor system's event
	// stream (Runtime.ActorSystem().EventStream).
	PublishEvents bool
	// RecordTimings makes each pool keep histograms of its calls' execution
	// and waiting times (PoolStats.Exec, PoolStats.Wait). Without an event
	// subscriber a random sample of one call in TimingSampleEvery is timed,
	// which keeps the cost to a few nanoseconds per call.
	RecordTimings bool
	// Cluster, when set, makes the runtime a member of a protoactor cluster
	// (see ClusterConfig). Nil: a single process.
	Cluster *ClusterConfig
}

// validated fills defaults and reports every problem at once.
func (c Config) validated() (Config, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Pools) == 0 {
		bad("no pools configured")
	}
	pools := make([]PoolConfig, len(c.Pools))
	seen := make(map[string]bool, len(c.Pools))
	for i, p := range c.Pools {
		where := fmt.Sprintf("pool %d (%q)", i, p.Name)
		switch {
		case p.Name == "":
			bad("pool %d: empty name", i)
		case seen[p.Name]:
			bad("%s: duplicate name", where)
		}
		seen[p.Name] = true
		if p.Size < 1 {
			bad("%s: size %d, want >= 1", where, p.Size)
		}
		if p.NewWorker == nil {
			bad("%s: nil NewWorker factory", where)
		}
		if !p.Affinity.Valid() {
			bad("%s: %v", where, fmt.Errorf("%w: %d", messages.ErrInvalidAffinity, uint8(p.Affinity)))
		}
		if p.Affinity == DefaultAffinity {
			p.Affinity = Hint
		}
		if p.Capacity < 0 || p.QueueSize < 0 || p.QueueTimeout < 0 || p.MaxCalls < 0 || p.MaxAge < 0 {
			bad("%s: negative capacity, queue size, queue timeout, max calls or max age", where)
		}
		if p.Capacity == 0 {
			p.Capacity = DefaultCapacity
		}
		if p.QueueSize == 0 {
			p.QueueSize = DefaultQueueSize
		}
		if p.QueueTimeout == 0 {
			p.QueueTimeout = DefaultQueueTimeout
		}
		if p.Restart != nil {
			if err := p.Restart.Validate(); err != nil {
				bad("%s: %v", where, err)
			}
		}
		pools[i] = p
	}
	c.Pools = pools
	if c.DefaultPool == "" && len(pools) > 0 {
		c.DefaultPool = pools[0].Name
	} else if c.DefaultPool != "" && !seen[c.DefaultPool] {
		bad("default pool %q is not configured", c.DefaultPool)
	}
	if c.SessionIdleTTL == 0 {
		c.SessionIdleTTL = DefaultSessionIdleTTL
	}
	if c.SessionPassivateAfter == 0 {
		c.SessionPassivateAfter = DefaultSessionPassivateAfter
	}
	if c.HealthInterval < 0 || c.HealthTimeout < 0 {
		bad("negative health interval or timeout")
	} else if c.HealthInterval > 0 && c.HealthInterval < MinHealthInterval {
		bad("health interval %v below the minimum %v", c.HealthInterval, MinHealthInterval)
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = DefaultHealthInterval
	}
	if c.HealthTimeout == 0 {
		c.HealthTimeout = DefaultHealthTimeout
	}
	if err := c.Restart.Validate(); err != nil {
		bad("%v", err)
	}
	if c.Cluster != nil {
		c.Cluster.validate(bad)
		cc := c.Cluster.withDefaults()
		c.Cluster = &cc
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return c, nil
}
