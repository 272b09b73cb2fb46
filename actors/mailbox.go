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
	mu        sync.Mutex
	user      ring
	system    ring
	suspended bool
	scheduled bool // a turn is pending or running
	invoker   actor.MessageInvoker

	// wake holds at most one turn (sent only when scheduled goes true) plus
	// the false that stops the goroutine, so sends never block.
	wake chan bool
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

// stop ends the goroutine after the current turn. Messages posted later are
// never processed: the actor has stopped and workerStopped answered its calls.
func (m *mailbox) stop() { m.wake <- false }

// process runs one turn: system messages first, then user messages unless
// suspended, until both are empty.
func (m *mailbox) process() {
	for i := 1; ; i++ {
		if i%throughput == 0 {
			runtime.Gosched()
		}
		m.mu.Lock()
		if msg, ok := m.system.pop(); ok {
			switch msg.(type) {
			case *actor.SuspendMailbox:
				m.suspended = true
				m.mu.Unlock()
			case *actor.ResumeMailbox:
				m.suspended = false
				m.mu.Unlock()
			default:
				m.mu.Unlock()
				m.invoker.InvokeSystemMessage(msg)
			}
			continue
		}
		if m.suspended || m.user.n == 0 {
			m.scheduled = false
			m.mu.Unlock()
			return
		}
		msg, _ := m.user.pop()
		m.mu.Unlock()
		m.invokeUser(msg)
	}
}

func (m *mailbox) invokeUser(msg any) {
	defer func() {
		if r := recover(); r != nil {
			m.invoker.EscalateFailure(r, msg)
		}
	}()
	m.invoker.InvokeUserMessage(msg)
}

// ring is a growable FIFO of messages.
type ring struct {
	buf     []any
	head, n int
}

func (r *ring) push(v any) {
	if r.n == len(r.buf) {
		grown := make([]any, max(16, 2*len(r.buf)))
		for i := 0; i < r.n; i++ {
			grown[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = grown, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = v
	r.n++
}

func (r *ring) pop() (any, bool) {
	if r.n == 0 {
		return nil, false
	}
	v := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return v, true
}
