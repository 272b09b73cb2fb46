package actors

import (
	"github.com/asynkron/protoactor-go/actor"
)

// sessionMailbox is a session actor's protoactor mailbox. Messages are
// processed one at a time, in order, as in any mailbox, but on the goroutine
// that posted to an idle mailbox rather than on a goroutine started for it:
// a session actor's turn is a short routing decision that never blocks, and
// a goroutine hand-off would cost more than the decision. A poster that
// finds more than inlineBudget messages waiting hands the rest to a
// goroutine the runtime owns, so no caller is captured by another's burst.
//
// A mailbox is detached when its actor passivates or closes: what is posted
// afterwards, or still queued then, goes to the session record (orphan), so
// nothing sent to a session that just left is lost.
type sessionMailbox struct {
	queues
	rec      *sessionRec
	detached bool // guarded by mu
	// own is the call whose caller is running this turn, while the actor
	// handles it (see post). Only the turn's goroutine touches it.
	own *envelope
}

var _ actor.Mailbox = (*sessionMailbox)(nil)

// inlineBudget is how many messages a posting goroutine processes before
// handing the turn to a goroutine of its own.
const inlineBudget = 64

// PostUserMessage implements actor.Mailbox. An idle mailbox with nothing
// queued runs the message at once, without queueing it.
func (m *sessionMailbox) PostUserMessage(msg any) { m.post(msg, nil) }

// post posts msg; own, when set, is msg: a call whose caller blocks until
// it is answered. When that call is handled at once, on the caller's
// goroutine, the session actor may leave running it to the caller
// (envelope.runOn).
func (m *sessionMailbox) post(msg any, own *envelope) {
	m.mu.Lock()
	if m.detached {
		m.mu.Unlock()
		m.rec.orphan(msg)
		return
	}
	if !m.scheduled && !m.suspended && m.user.n == 0 && m.system.n == 0 {
		m.scheduled = true
		m.mu.Unlock()
		m.own = own
		m.invokeUser(msg)
		m.own = nil
		m.process(inlineBudget - 1)
		return
	}
	m.user.push(msg)
	run := !m.scheduled && !m.suspended
	if run {
		m.scheduled = true
	}
	m.mu.Unlock()
	if run {
		m.process(inlineBudget)
	}
}

// PostSystemMessage implements actor.Mailbox.
func (m *sessionMailbox) PostSystemMessage(msg any) {
	m.mu.Lock()
	m.system.push(msg)
	run := !m.scheduled
	m.scheduled = true
	m.mu.Unlock()
	if run {
		m.process(inlineBudget)
	}
}

// RegisterHandlers implements actor.Mailbox. The dispatcher is not used.
func (m *sessionMailbox) RegisterHandlers(invoker actor.MessageInvoker, _ actor.Dispatcher) {
	m.invoker = invoker
}

// Start implements actor.Mailbox.
func (m *sessionMailbox) Start() {}

// UserMessageCount implements actor.Mailbox.
func (m *sessionMailbox) UserMessageCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.user.n
}

// detach sends everything posted from now on, and everything still queued,
// to the record. Called from inside the actor's turn.
func (m *sessionMailbox) detach() {
	m.mu.Lock()
	m.detached = true
	m.mu.Unlock()
}

// process runs a turn until both queues are empty. Past budget messages
// (budget > 0) the rest of the turn moves to a goroutine of its own.
func (m *sessionMailbox) process(budget int) {
	for n := 0; ; n++ {
		if budget > 0 && n == budget {
			rt := m.rec.rt
			rt.wg.Add(1)
			go func() {
				defer rt.wg.Done()
				m.process(0)
			}()
			return
		}
		msg, system, detached, ok := m.next(&m.detached)
		switch {
		case !ok:
			return
		case system:
			m.invoker.InvokeSystemMessage(msg)
		case detached:
			m.rec.orphan(msg)
		default:
			m.invokeUser(msg)
		}
	}
}

// invokeUser runs the actor on one message. A panic there is a bug in the
// runtime: the call that caused it is answered (protoactor drops the
// message), and the panic goes to the actor's supervisor, which restarts
// the actor with its state intact.
func (m *sessionMailbox) invokeUser(msg any) {
	m.queues.invokeUser(msg, func(r, msg any) {
		if env, ok := msg.(*envelope); ok && env.state.CompareAndSwap(envNew, envDone) {
			env.refuse(&callError{sentinel: ErrInternal, pool: env.pool.cfg.Name, session: env.call.Session,
				worker: -1, detail: "session actor panicked", cause: newPanicError(r)})
		}
	})
}
