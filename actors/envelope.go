package actors

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/affinity-go/affinity/messages"
)

// Envelope states. waiting<->abandoned and waiting->claimed change under the
// pool lock; claimed->running/abandoned/done are CAS races between the
// executor, the caller and the cleanup of a stopped worker: exactly one wins,
// which is what gives every call exactly one outcome.
const (
	envIdle uint32 = iota
	envWaiting
	envClaimed
	envRunning
	envDone
	envAbandoned
)

type reply struct {
	val any
	err error
}

// envelope carries one call from its caller to the worker actor that runs it.
// Envelopes are pooled: a caller recycles one only after receiving its reply,
// which is the executor's last touch.
type envelope struct {
	ctx  context.Context
	call messages.Call
	sess *Session
	pool *pool
	mode Affinity

	ref    *messages.Ref
	stream *Stream

	// bindOnRun: a hint call queued while its session had no binding in this
	// pool binds to whichever worker runs it.
	bindOnRun bool

	state      atomic.Uint32
	prev, next *envelope
	list       *envList

	replyCh chan reply
}

var envelopes = sync.Pool{New: func() any { return &envelope{replyCh: make(chan reply, 1)} }}

func getEnvelope() *envelope { return envelopes.Get().(*envelope) }

func putEnvelope(e *envelope) {
	*e = envelope{replyCh: e.replyCh}
	envelopes.Put(e)
}

// envList is an intrusive FIFO of envelopes: O(1) push, pop and removal, no
// allocation. Guarded by the pool lock.
type envList struct {
	head, tail *envelope
	n          int
}

func (l *envList) push(e *envelope) {
	e.list, e.prev, e.next = l, l.tail, nil
	if l.tail != nil {
		l.tail.next = e
	} else {
		l.head = e
	}
	l.tail = e
	l.n++
}

func (l *envList) remove(e *envelope) {
	if e.list != l {
		return
	}
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next, e.list = nil, nil, nil
	l.n--
}

func (l *envList) pop() *envelope {
	e := l.head
	if e != nil {
		l.remove(e)
	}
	return e
}

// drain empties a list of waiting calls and returns them in order, marked
// done while the pool lock is still held, so a caller giving up at the same
// moment sees they are no longer waiting and waits for the answer instead.
func (l *envList) drain() []*envelope {
	if l.n == 0 {
		return nil
	}
	out := make([]*envelope, 0, l.n)
	for e := l.pop(); e != nil; e = l.pop() {
		e.state.Store(envDone)
		out = append(out, e)
	}
	return out
}

// finish delivers the call's one outcome. It is the last touch of env by
// whoever answers it.
func (e *envelope) finish(val any, err error) {
	if st := e.stream; st != nil {
		e.state.Store(envDone)
		st.end(err)
		return
	}
	e.state.Store(envDone)
	e.replyCh <- reply{val: val, err: err}
}
