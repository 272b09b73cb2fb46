package actors

import (
	"context"
	"io"
)

// streamBuffer is how many items a worker may send ahead of the reader.
const streamBuffer = 16

// Stream is the caller's end of a streaming call. Recv returns items in the
// order the worker sent them, then io.EOF (or the worker's error). Close (or
// cancelling the call's context) stops the stream and frees the worker.
// A Stream is meant for one reading goroutine.
type Stream struct {
	ctx         context.Context
	cancel      context.CancelCauseFunc
	items       chan any
	err         error // set before items is closed
	worker      int
	incarnation uint64
	acks        *streamAcks // set when the worker is on another cluster member
	window      int         // WithStreamWindow's; 0: the default
}

// Worker returns the id and incarnation of the worker serving the stream.
func (s *Stream) Worker() (id int, incarnation uint64) { return s.worker, s.incarnation }

// Recv returns the next item, io.EOF once the worker finished, the worker's
// error if it failed (ErrWorkerFailed if it was tainted meanwhile), or the
// context's error once cancelled.
func (s *Stream) Recv() (any, error) {
	select {
	case item, ok := <-s.items:
		return s.outcome(item, ok)
	case <-s.ctx.Done():
		select { // items already delivered come before the cancel
		case item, ok := <-s.items:
			return s.outcome(item, ok)
		default:
			return nil, context.Cause(s.ctx) // the worker's loss, or the caller's own cancel
		}
	}
}

func (s *Stream) outcome(item any, ok bool) (any, error) {
	switch {
	case ok:
		if s.acks != nil {
			s.acks.took()
		}
		return item, nil
	case s.err != nil:
		return nil, s.err
	}
	return nil, io.EOF
}

// Close cancels the stream. It is safe to call more than once.
func (s *Stream) Close() { s.cancel(nil) }

// send is the worker's side.
func (s *Stream) send(item any) error {
	select {
	case s.items <- item:
		return nil
	case <-s.ctx.Done():
		return context.Cause(s.ctx)
	}
}

// end records the stream's outcome; called once by whoever answers the call.
func (s *Stream) end(err error) {
	s.err = err
	close(s.items)
	s.cancel(nil)
}
