package actors

import (
	"context"
	"errors"
	"strings"

	"github.com/affinity-go/affinity/internal/wire"
)

// Errors cross members as a code naming the sentinel they wrap, so that
// errors.Is works on the caller's member as it does in one process.
var wireSentinels = []error{
	nil, // 0: no sentinel (the worker's own error)
	ErrWorkerBusy, ErrSessionWorkerUnavailable, ErrNoWorkersAvailable, ErrPoolSaturated,
	ErrQueueTimeout, ErrPoolNotFound, ErrRefLost, ErrWorkerFailed, ErrShutdown,
	ErrInvalidConfig, ErrInvalidArgument, ErrStreamingUnsupported, ErrSessionClosed,
	ErrInternal, ErrPayloadNotPortable, context.Canceled, context.DeadlineExceeded,
}

// Codes with a meaning of their own between members, past the sentinels.
const (
	codeStaleLease int32 = 100 + iota // the member holds no such lease
	codeLeaving                       // the member is leaving the cluster
	codeNotReady                      // the member has not finished joining
)

func encodeError(err error) *wire.Error {
	if err == nil {
		return nil
	}
	for code, s := range wireSentinels {
		if s != nil && errors.Is(err, s) {
			return &wire.Error{Code: int32(code), Text: err.Error()}
		}
	}
	return &wire.Error{Text: err.Error()}
}

// remoteError is an error that came from another member.
type remoteError struct {
	sentinel error // nil when the worker's own error
	text     string
}

func (e *remoteError) Error() string { return e.text }
func (e *remoteError) Unwrap() error { return e.sentinel }

func decodeError(e *wire.Error) error {
	if e == nil {
		return nil
	}
	if int(e.Code) > 0 && int(e.Code) < len(wireSentinels) {
		s := wireSentinels[e.Code]
		if !strings.Contains(e.Text, s.Error()) {
			return &remoteError{sentinel: s, text: s.Error() + ": " + e.Text}
		}
		return &remoteError{sentinel: s, text: e.Text}
	}
	return &remoteError{text: e.Text}
}
