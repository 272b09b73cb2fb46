package procworker

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/affinity-go/affinity/actors"
)

// Sentinel errors. A worker taints itself with one of them (wrapped with
// detail), and the call that was running gets actors.ErrWorkerFailed
// wrapping the same error, so both errors.Is tests work.
var (
	// ErrInvalidConfig wraps every problem Factory finds in a Config.
	ErrInvalidConfig = errors.New("procworker: invalid config")
	// ErrStartTimeout: the process did not send its ready frame within
	// Config.StartTimeout.
	ErrStartTimeout = errors.New("procworker: worker process not ready in time")
	// ErrExited: the process exited (see ExitError for the code or signal).
	ErrExited = errors.New("procworker: worker process exited")
	// ErrProtocol: the process sent something the protocol does not allow
	// (garbage, an oversized frame, an unknown type, a reply to no call).
	ErrProtocol = errors.New("procworker: protocol violation")
	// ErrHeartbeat: the process missed Config.MissedHeartbeats pongs in a
	// row.
	ErrHeartbeat = errors.New("procworker: worker process missed heartbeats")
	// ErrClosed: the worker was stopped (its incarnation ended).
	ErrClosed = errors.New("procworker: worker closed")
	// ErrRemote: the process answered a call with an error; *RemoteError
	// carries it.
	ErrRemote = errors.New("procworker: error raised by the worker")
)

// RemoteError is an error the worker process returned for one call (an
// exception in Python). Type is the worker's name for its kind. A remote
// error marked fatal reaches the caller wrapped with actors.Fatal and
// taints the worker.
type RemoteError struct {
	Type    string `json:"type"`
	Message string `json:"message"`
	Fatal   bool   `json:"fatal,omitempty"`
}

func (e *RemoteError) Error() string {
	if e.Type == "" {
		return "worker error: " + e.Message
	}
	return "worker error: " + e.Type + ": " + e.Message
}

// Unwrap makes every RemoteError match ErrRemote.
func (e *RemoteError) Unwrap() error { return ErrRemote }

// ExitError says how a worker process ended: exit code, or the signal
// that killed it (so a SIGSEGV is told apart from a SIGKILL).
type ExitError struct {
	Pid    int
	Code   int            // -1 when killed by a signal
	Signal syscall.Signal // 0 when it exited by itself
	Core   bool           // a core was dumped
}

func (e *ExitError) Error() string {
	if e.Signal != 0 {
		msg := fmt.Sprintf("worker process %d killed by signal %s (%v)", e.Pid, signalName(e.Signal), e.Signal)
		if e.Core {
			msg += ", core dumped"
		}
		return msg
	}
	return fmt.Sprintf("worker process %d exited with code %d", e.Pid, e.Code)
}

// Unwrap makes every ExitError match ErrExited, and actors.ErrWorkerExited,
// which has the runtime report the taint with reason exited.
func (e *ExitError) Unwrap() []error { return []error{ErrExited, actors.ErrWorkerExited} }
