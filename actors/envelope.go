package actors

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/messages"
)

// Envelope states. Exactly one party moves a call out of each state, which
// is what gives every call exactly one outcome:
//   - new -> waiting/claimed/done by the session actor, new -> abandoned by
//     the caller;
//   - waiting -> claimed/done/abandoned under the pool lock;
//   - claimed -> running/abandoned/done are CAS races between the executor,
//     the caller and the cleanup of a stopped worker.
const (
	envNew uint32 = iota
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

// envelope carries one call from its caller through the session actor to
// the worker actor that runs it. Envelopes of the blocking API are pooled: a
// caller recycles one only after receiving its reply, which is the last
// touch, and never one that may still sit in a session's waiting list.
type envelope struct {
	ctx  context.Context
	call messages.Call
	sess *sessionRec
	pool *pool
	mode Affinity

	ref    *messages.Ref
	stream *Stream // a streaming call of the blocking API

	// target is the worker a parked call waits for; -1: any (hint).
	target int
	// bindOnRun: a hint call parked while its session had no binding in
	// this pool binds to whichever worker runs it.
	bindOnRun bool
	ran       bool      // a worker began running it
	made      time.Time // when the call was made, if it is timed (see madeAt); else zero
	retries   uint8
	// runOn: claimed on this worker, to be run by the caller itself (see
	// Runtime.call). runner: the worker actor that began it in a turn the
	// caller ran (mailbox.runHere), for the caller to run it after that
	// turn (Capacity > 1).
	runOn   *worker
	runner  *workerActor
	timeout time.Duration // the request's own bound on waiting; 0: the pool's
	timer   *time.Timer   // a shorter queue timeout of its own while parked
	// In the pool's deadline list while parked with the pool's timeout.
	tprev, tnext *envelope
	deadline     time.Duration // since the runtime started
	// lingering: it may still be linked in its session's waiting list
	// (it timed out there), so it must not be recycled.
	lingering bool

	state      atomic.Uint32
	prev, next *envelope
	list       *envList

	// The caller's end: a channel (blocking API) or an actor (message API).
	replyCh chan reply
	replyTo *actor.PID
	noReply bool // a request sent without a sender: the outcome goes nowhere
	tag     uint64
	astream *actorStream  // a streaming call of the message API
	remote  *remoteOrigin // a call from another cluster member
}

var envelopes = sync.Pool{New: func() any { return &envelope{replyCh: make(chan reply, 1)} }}

func getEnvelope() *envelope { return envelopes.Get().(*envelope) }

func putEnvelope(e *envelope) {
	*e = envelope{replyCh: e.replyCh}
	envelopes.Put(e)
}

// envList is an intrusive FIFO of envelopes: O(1) push, pop and removal, no
// allocation. Each list has one owner that serializes access to it.
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

// finish delivers the call's one outcome. It is the last touch of env by
// whoever answers it.
func (e *envelope) finish(val any, err error) {
	e.state.Store(envDone)
	e.sess.active.Add(-1)
	switch {
	case e.stream != nil:
		e.stream.end(err)
	case e.astream != nil:
		e.astream.end(err)
	case e.noReply:
	case e.remote != nil:
		e.sess.rt.member.sendReply(e, val, err)
	case e.replyTo != nil:
		r := &messages.CallReply{Tag: e.tag, Value: val, Err: err, Worker: -1}
		if e.ran {
			r.Worker, r.Incarnation = e.call.Worker, e.call.Incarnation
		}
		e.sess.rt.system.Root.Send(e.replyTo, r)
	default:
		e.replyCh <- reply{val: val, err: err}
	}
}

// refuse answers a call the session did not route anywhere. A streaming
// call of the blocking API learns it from Session.Stream's return.
func (e *envelope) refuse(err error) {
	if st := e.stream; st != nil {
		e.state.Store(envDone)
		e.sess.active.Add(-1)
		st.cancel(nil)
		e.replyCh <- reply{err: err}
		return
	}
	e.finish(nil, err)
}
