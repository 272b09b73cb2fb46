package messages

import (
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Event is implemented by every event the runtime publishes. Events are plain
// values; subscribers must not block (they run on the call path).
type Event interface {
	// Kind names the event for logs and metrics.
	Kind() string
	// Level is the log level the event deserves when logged.
	Level() zerolog.Level
}

// Outcome says how a dispatch related to its session's binding.
type Outcome uint8

const (
	OutcomeHit    Outcome = iota // ran (or was sent) to the bound worker
	OutcomeBound                 // first call of the session in this pool: bound now
	OutcomeDetour                // hint: bound worker busy, ran elsewhere, binding kept
	OutcomeRebind                // hint: bound worker gone, bound to another
	OutcomeQueued                // waiting for a worker
	OutcomeFailed                // refused: busy, unavailable, saturated, ...
	outcomeCount
)

// OutcomeCount is the number of outcomes, for counter arrays.
const OutcomeCount = int(outcomeCount)

var outcomeNames = [...]string{"hit", "bound", "detour", "rebind", "queued", "failed"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// CleanupSource says why a session ended.
type CleanupSource uint8

const (
	CleanupManual    CleanupSource = iota // Session.Close
	CleanupOwnerDown                      // the owning context ended
	CleanupExpired                        // idle longer than the TTL
	CleanupShutdown                       // the runtime shut down
	cleanupCount
)

// CleanupSourceCount is the number of cleanup sources, for counter arrays.
const CleanupSourceCount = int(cleanupCount)

var cleanupNames = [...]string{"manual", "owner_down", "expired", "shutdown"}

func (s CleanupSource) String() string {
	if int(s) < len(cleanupNames) {
		return cleanupNames[s]
	}
	return "unknown"
}

// TaintReason says why a worker was taken out of service.
type TaintReason uint8

const (
	TaintPanic       TaintReason = iota // user code panicked
	TaintFatalError                     // user code returned an error marked fatal
	TaintHealthCheck                    // the health check failed
	TaintRecycle                        // max calls or max age reached
	TaintStartFailed                    // the worker factory failed on restart
	TaintExited                         // the worker's own process (or connection) ended
	taintCount
)

// TaintReasonCount is the number of taint reasons, for counter arrays.
const TaintReasonCount = int(taintCount)

var taintNames = [...]string{"panic", "fatal_error", "health_check", "recycle", "start_failed", "exited"}

// TaintText describes a taint in one line: its reason and the first line
// of its cause ("panic: model corrupted", "health_check: no pong for 3s").
func TaintText(reason TaintReason, cause error) string {
	if cause == nil {
		return reason.String()
	}
	msg, _, _ := strings.Cut(cause.Error(), "\n")
	if strings.HasPrefix(msg, reason.String()+": ") { // a PanicError says "panic: ..." itself
		return msg
	}
	return reason.String() + ": " + msg
}

func (r TaintReason) String() string {
	if int(r) < len(taintNames) {
		return taintNames[r]
	}
	return "unknown"
}

// CallDispatched: a call was routed (or refused) by the session actor.
type CallDispatched struct {
	Pool        string
	Session     string
	Worker      int // chosen worker, else the preferred one that refused or queued it; -1: none
	Incarnation uint64
	Affinity    Affinity
	Outcome     Outcome
	Stream      bool
}

// CallExecuted: a worker finished a call.
type CallExecuted struct {
	Pool        string
	Session     string
	Worker      int
	Incarnation uint64
	Duration    time.Duration
	Waited      time.Duration // from the call being made to its start on this worker
	Err         error
}

// PoolSaturated: a call was refused because the pool's wait queue was full.
type PoolSaturated struct {
	Pool    string
	Session string
	Queued  int
}

// WorkerTainted: a worker was taken out of service and will be restarted.
type WorkerTainted struct {
	Pool        string
	Worker      int
	Incarnation uint64
	Reason      TaintReason
	Err         error
}

// WorkerRestarted: a worker started a new incarnation.
type WorkerRestarted struct {
	Pool        string
	Worker      int
	Incarnation uint64
}

// WorkerFailed: a worker exceeded its restart budget and was stopped; the
// pool runs degraded without it.
type WorkerFailed struct {
	Pool     string
	Worker   int
	Restarts int
}

// PoolResized: a pool's size changed.
type PoolResized struct {
	Pool     string
	From, To int
}

// SessionCreated: a session was created.
type SessionCreated struct {
	Session string
	Auto    bool
}

// SessionCleanup: a session ended and its workers were told to release it.
type SessionCleanup struct {
	Session string
	Source  CleanupSource
	Workers int // how many workers were told to release state
}

func (CallDispatched) Kind() string  { return "call_dispatched" }
func (CallExecuted) Kind() string    { return "call_executed" }
func (PoolSaturated) Kind() string   { return "pool_saturated" }
func (WorkerTainted) Kind() string   { return "worker_tainted" }
func (WorkerRestarted) Kind() string { return "worker_restarted" }
func (WorkerFailed) Kind() string    { return "worker_failed" }
func (PoolResized) Kind() string     { return "pool_resized" }
func (SessionCreated) Kind() string  { return "session_created" }
func (SessionCleanup) Kind() string  { return "session_cleanup" }

func (CallDispatched) Level() zerolog.Level  { return zerolog.TraceLevel }
func (CallExecuted) Level() zerolog.Level    { return zerolog.TraceLevel }
func (PoolSaturated) Level() zerolog.Level   { return zerolog.WarnLevel }
func (WorkerTainted) Level() zerolog.Level   { return zerolog.WarnLevel }
func (WorkerRestarted) Level() zerolog.Level { return zerolog.InfoLevel }
func (WorkerFailed) Level() zerolog.Level    { return zerolog.ErrorLevel }
func (PoolResized) Level() zerolog.Level     { return zerolog.InfoLevel }
func (SessionCreated) Level() zerolog.Level  { return zerolog.TraceLevel }
func (SessionCleanup) Level() zerolog.Level  { return zerolog.DebugLevel }
