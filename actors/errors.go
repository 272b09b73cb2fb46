package actors

import (
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/affinity-go/affinity/messages"
)

// Sentinel errors. Every error the runtime returns wraps one of these (or the
// caller's context error), so test them with errors.Is.
var (
	// ErrWorkerBusy: the preferred worker is at capacity and the call may not
	// wait (strict_fail_fast, or any streaming call).
	ErrWorkerBusy = errors.New("affinity: worker busy")
	// ErrSessionWorkerUnavailable: a strict call's bound worker is tainted,
	// restarting, removed, or restarted since the session bound to it.
	ErrSessionWorkerUnavailable = errors.New("affinity: session worker unavailable")
	// ErrNoWorkersAvailable: no worker can take the call (a streaming call
	// found none free, or the pool has no live worker).
	ErrNoWorkersAvailable = errors.New("affinity: no workers available")
	// ErrPoolSaturated: the pool's wait queue is full.
	ErrPoolSaturated = errors.New("affinity: pool saturated")
	// ErrQueueTimeout: the call waited longer than the pool's queue timeout.
	// It was removed from the queue and will never run.
	ErrQueueTimeout = errors.New("affinity: queue timeout")
	// ErrPoolNotFound: the call named a pool the runtime does not have.
	ErrPoolNotFound = errors.New("affinity: pool not found")
	// ErrRefLost: the worker incarnation holding the ref is gone.
	ErrRefLost = errors.New("affinity: ref lost")
	// ErrWorkerFailed: the worker running the call panicked or was tainted
	// while the call ran.
	ErrWorkerFailed = errors.New("affinity: worker failed")
	// ErrShutdown: the runtime is shutting down or has shut down.
	ErrShutdown = errors.New("affinity: runtime shut down")
	// ErrInvalidConfig wraps every configuration problem found by Start.
	ErrInvalidConfig = errors.New("affinity: invalid config")
	// ErrInvalidArgument: a call was made with bad input (nil context,
	// invalid affinity, a ref that conflicts with the named pool, ...).
	ErrInvalidArgument = errors.New("affinity: invalid argument")
	// ErrStreamingUnsupported: a streaming call reached a worker that does
	// not implement StreamWorker.
	ErrStreamingUnsupported = errors.New("affinity: worker does not support streaming")
	// ErrSessionClosed: the call was waiting in its session when the session
	// was closed. It never ran.
	ErrSessionClosed = errors.New("affinity: session closed")
	// ErrInternal: a bug in the runtime (a session actor panicked) cost
	// this call; the panic is in the error (see PanicError).
	ErrInternal = errors.New("affinity: internal error")
	// ErrInvalidAffinity is messages.ErrInvalidAffinity, re-exported.
	ErrInvalidAffinity = messages.ErrInvalidAffinity
)

// fatalError marks a worker error as fatal: the call fails with it and the
// worker is tainted and restarted.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return "fatal: " + e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// Fatal marks err as fatal. A worker returning it is tainted and restarted
// (its state is lost); the caller gets an error that is both ErrWorkerFailed
// and err for errors.Is. Fatal(nil) is nil.
func Fatal(err error) error {
	if err == nil {
		return nil
	}
	return &fatalError{err: err}
}

// IsFatal reports whether err was marked with Fatal.
func IsFatal(err error) bool {
	var f *fatalError
	return errors.As(err, &f)
}

// callError adds where a call failed to a sentinel, keeping errors.Is intact
// for the sentinel and, when set, for the cause (e.g. the worker's own error).
type callError struct {
	sentinel error
	pool     string
	session  string
	worker   int // -1: none
	detail   string
	cause    error
}

func (e *callError) Error() string {
	msg := e.sentinel.Error() + " (pool " + e.pool
	if e.worker >= 0 {
		msg += fmt.Sprintf(", worker %d", e.worker)
	}
	if e.session != "" {
		msg += ", session " + e.session
	}
	msg += ")"
	if e.detail != "" {
		msg += ": " + e.detail
	}
	if e.cause != nil {
		msg += ": " + e.cause.Error()
	}
	return msg
}

func (e *callError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.sentinel}
	}
	return []error{e.sentinel, e.cause}
}

// fail wraps sentinel with where env was headed.
func (e *envelope) fail(sentinel error, detail string) *callError {
	return &callError{sentinel: sentinel, pool: e.pool.cfg.Name, session: e.call.Session, worker: e.call.Worker, detail: detail}
}

// PanicError is a panic recovered from user code (or, with ErrInternal,
// from the runtime), with the stack of the goroutine that panicked. The
// error a caller gets for a panicking worker wraps it: reach it with
// errors.As. If the panic value is an error, PanicError unwraps to it.
type PanicError struct {
	Value any
	Stack []byte
}

func newPanicError(v any) *PanicError { return &PanicError{Value: v, Stack: debug.Stack()} }

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Unwrap returns the panic value when it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}
