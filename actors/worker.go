package actors

import (
	"context"

	"github.com/affinity-go/affinity/messages"
)

// Worker is the user code behind one worker incarnation.
//
// Handle is never called concurrently beyond the pool's Capacity (with the
// default Capacity of 1, never concurrently at all). ctx is the caller's
// context: honour its cancellation. call is valid only during the call.
// Returning an error marked with Fatal taints the worker; panicking taints it
// too, and the caller gets ErrWorkerFailed. A Worker that is an io.Closer is
// closed when its incarnation ends (restart, removal, shutdown), once the
// last call running on it has returned.
type Worker interface {
	Handle(ctx context.Context, call messages.Call) (any, error)
}

// StreamWorker is implemented by workers that answer streaming calls. send
// delivers one item to the caller; it blocks while the caller is not reading
// and returns an error once the stream was cancelled, after which
// HandleStream should return.
type StreamWorker interface {
	HandleStream(ctx context.Context, call messages.Call, send func(item any) error) error
}

// SessionReleaser is implemented by workers that keep per-session state and
// want to drop it when a session ends (closed, owner gone, or expired). It
// runs inside the worker actor, between calls.
type SessionReleaser interface {
	ReleaseSession(ctx context.Context, session string, source messages.CleanupSource)
}

// HealthChecker is implemented by workers that can tell they are unhealthy.
// A non-nil error taints the worker. It runs inside the worker actor, between
// calls, every Config.HealthInterval.
type HealthChecker interface {
	CheckHealth(ctx context.Context) error
}

// WorkerFunc adapts a function to Worker, for stateless workers and tests.
type WorkerFunc func(ctx context.Context, call messages.Call) (any, error)

// Handle implements Worker.
func (f WorkerFunc) Handle(ctx context.Context, call messages.Call) (any, error) { return f(ctx, call) }
