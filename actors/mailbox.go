package actors

import (
	"runtime"
	"sync"

	"github.com/asynkron/protoactor-go/actor"
)

// mailbox is a worker actor's protoactor mailbox, processed on one goroutine
// the worker owns for its whole life.
//
// protoactor's default mailbox starts a goroutine (through its dispatcher)
// each time an idle mailbox gets a message, and allocates for it. A worker's
// mailbox goes idle after nearly every call when callers wait for replies,
// so that start-up, the stack growth of running user code on a fresh stack,
// and the allocation were most of a call's cost. Here a parked goroutine is
// woken instead. The semantics are protoactor's: system messages first,
// Suspend/Resume handled by the mailbox, and a panic escalated to the
// supervisor with the message that caused it.
type mailbox struct {
	queues

	// wake holds at most one turn (sent only when scheduled goes true) plus
	// the false that stops the goroutine, so sends never block.
	wake chan bool
	// inline is the message a caller's goroutine is handling in runHere,
	// while it does; only the turn's goroutine touches it.
	inline any
}

var _ actor.Mailbox = (*mailbox)(nil)

// throughput is how many messages a turn handles before yielding the
// processor, as protoactor's dispatcher does.
const throughput = 300

// newMailbox starts the mailbox goroutine; it ends after stop.
func newMailbox(rt *Runtime) *mailbox {
	m := &mailbox{wake: make(chan bool, 2)}
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		for <-m.wake {
			m.process()
		}
	}()
	return m
}

// PostUserMessage implements actor.Mailbox.
func (m *mailbox) PostUserMessage(msg any) {
	m.mu.Lock()
	m.user.push(msg)
	wake := !m.scheduled && !m.suspended
	if wake {
		m.scheduled = true
	}
	m.mu.Unlock()
	if wake {
		m.wake <- true
	}
}

// PostSystemMessage implements actor.Mailbox.
func (m *mailbox) PostSystemMessage(msg any) {
	m.mu.Lock()
	m.system.push(msg)
	wake := !m.scheduled
	m.scheduled = true
	m.mu.Unlock()
	if wake {
		m.wake <- true
	}
}

// RegisterHandlers implements actor.Mailbox. The dispatcher is not used:
// the mailbox runs on its own goroutine.
func (m *mailbox) RegisterHandlers(invoker actor.MessageInvoker, _ actor.Dispatcher) {
	m.invoker = invoker
}

// Start implements actor.Mailbox.
func (m *mailbox) Start() {}

// UserMessageCount implements actor.Mailbox.
func (m *mailbox) UserMessageCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.user.n
}

// runHere runs msg as a turn of this mailbox on the calling goroutine, if
// the mailbox is idle (no turn pending, nothing queued, not suspended), and
// reports whether it did. What is posted meanwhile is left to the mailbox
// goroutine, so the caller runs its own message only.
func (m *mailbox) runHere(msg any) bool {
	m.mu.Lock()
	if m.scheduled || m.suspended || m.user.n != 0 || m.system.n != 0 {
		m.mu.Unlock()
		return false
	}
	m.scheduled = true
	m.mu.Unlock()
	m.inline = msg
	m.invokeUser(msg, nil)
	m.inline = nil
	m.mu.Lock()
	more := m.system.n != 0 || (!m.suspended && m.user.n != 0)
	m.scheduled = more
	m.mu.Unlock()
	if more {
		m.wake <- true
		// The caller's own call is done; the worker goroutine runs the
		// rest. Callers that run calls themselves rarely block, so without
		// a yield it would wait for this one's time slice to end, holding
		// the worker (and every call waiting for it) meanwhile.
		runtime.Gosched()
	}
	return true
}

// stop ends the goroutine after the current turn. Messages posted later are
// never processed: the actor has stopped and workerStopped answered its calls.
func (m *mailbox) stop() { m.wake <- false }

// process runs one turn, until both queues are empty.
func (m *mailbox) process() {
	for i := 1; ; i++ {
		if i%throughput == 0 {
			runtime.Gosched()
		}
		msg, system, _, ok := m.next(nil)
		switch {
		case !ok:
			return
		case system:
			m.invoker.InvokeSystemMessage(msg)
		default:
			m.invokeUser(msg, nil)
		}
	}
}

// queues is what both mailboxes share: the system and user queues, the
// suspend state, and the turn flag, guarded by mu.
type queues struct {
	mu        sync.Mutex
	user      ring[any]
	system    ring[any]
	suspended bool
	scheduled bool // a turn is pending or running
	invoker   actor.MessageInvoker
}

// next returns the next message of a turn (system messages first, then user
// messages unless suspended), handling Suspend and Resume itself. ok false
// ends the turn. detached is whether the mailbox was detached when a user
// message was taken (see sessionMailbox).
func (q *queues) next(detachedFlag *bool) (msg any, system, detached, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		msg, ok = q.system.pop()
		if !ok {
			break
		}
		switch msg.(type) {
		case *actor.SuspendMailbox:
			q.suspended = true
		case *actor.ResumeMailbox:
			q.suspended = false
		default:
			return msg, true, false, true
		}
	}
	if q.suspended || q.user.n == 0 {
		q.scheduled = false
		return nil, false, false, false
	}
	msg, _ = q.user.pop()
	if detachedFlag != nil {
		detached = *detachedFlag
	}
	return msg, false, detached, true
}

// invokeUser runs the actor on one user message; a panic goes to the
// actor's supervisor with the message that caused it, as in protoactor.
func (q *queues) invokeUser(msg any, onPanic func(r, msg any)) {
	defer func() {
		if r := recover(); r != nil {
			if onPanic != nil {
				onPanic(r, msg)
			}
			q.invoker.EscalateFailure(r, msg)
		}
	}()
	q.invoker.InvokeUserMessage(msg)
}

// ring is a growable FIFO.
type ring[T any] struct {
	buf     []T
	head, n int
}

func (r *ring[T]) push(v T) {
	if r.n == len(r.buf) {
		grown := make([]T, max(8, 2*len(r.buf)))
		for i := 0; i < r.n; i++ {
			grown[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = grown, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = v
	r.n++
}

func (r *ring[T]) pop() (v T, ok bool) {
	if r.n == 0 {
		return v, false
	}
	var zero T
	v = r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return v, true
}

// at returns the i-th element from the head.
func (r *ring[T]) at(i int) T { return r.buf[(r.head+i)%len(r.buf)] }

// removeAt removes the i-th element from the head, keeping the order.
func (r *ring[T]) removeAt(i int) T {
	v := r.at(i)
	for j := i; j > 0; j-- {
		r.buf[(r.head+j)%len(r.buf)] = r.buf[(r.head+j-1)%len(r.buf)]
	}
	r.pop()
	return v
}
