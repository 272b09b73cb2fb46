package actors

import (
	"errors"

	"github.com/affinity-go/affinity/messages"
)

// ErrRecycle marks a cause passed to a SelfTainter's taint function as
// recycling (a limit such as memory was reached) rather than a failure:
// the worker is restarted at once without using up its restart budget.
var ErrRecycle = errors.New("affinity: worker recycled")

// ErrWorkerExited marks an error as the end of what the worker stands
// for: its process exited, or its connection closed. A taint whose cause
// wraps it, whether from a Fatal call error, a failed health check or a
// SelfTainter, is reported with reason exited (messages.TaintExited), so
// crashes of the process behind a worker can be told from the rest.
var ErrWorkerExited = errors.New("affinity: worker exited")

// taintReason is the reason of a taint caused by err: exited when err
// wraps ErrWorkerExited, else otherwise.
func taintReason(err error, otherwise messages.TaintReason) messages.TaintReason {
	if errors.Is(err, ErrWorkerExited) {
		return messages.TaintExited
	}
	return otherwise
}

// SelfTainter is implemented by workers that can learn they are broken
// outside of any call, for example a child process that exited or stopped
// answering heartbeats. Without it such a worker would only be tainted by
// the next call or health check.
//
// SetTaint is called once per incarnation, inside the worker actor, after
// the factory built the worker and before its first call. taint may be
// called from any goroutine, any number of times, and never blocks: it
// posts a message to the worker actor, which takes the incarnation out of
// service (a later call of taint, or one after a restart, is ignored). A
// cause wrapping ErrRecycle is reported with reason recycle, one wrapping
// ErrWorkerExited with reason exited, any other with reason health_check.
type SelfTainter interface {
	SetTaint(taint func(cause error))
}

// selfTaintMsg carries a SelfTainter's cause to its worker actor.
type selfTaintMsg struct {
	inc   uint64
	cause error
}

// wireSelfTaint hands a SelfTainter its taint function, bound to this
// incarnation.
func (a *workerActor) wireSelfTaint() {
	st, ok := a.impl.(SelfTainter)
	if !ok {
		return
	}
	root, pid, inc := a.w.pool.rt.system.Root, a.self, a.inc
	st.SetTaint(func(cause error) {
		// The taint waits in the mailbox behind a running call: with
		// Capacity 1, behind a stream that may wait on a slow consumer.
		// Such a stream is interrupted here and now (this incarnation's
		// only), unless the worker only asks to be recycled.
		if !errors.Is(cause, ErrRecycle) {
			a.interruptStreams(cause)
		}
		root.Send(pid, &selfTaintMsg{inc: inc, cause: cause})
	})
}

// selfTaint runs in the worker actor: stale messages (an earlier
// incarnation's) are dropped.
func (a *workerActor) selfTaint(m *selfTaintMsg) {
	if m.inc != a.inc || a.dead() {
		return
	}
	reason := taintReason(m.cause, messages.TaintHealthCheck)
	if errors.Is(m.cause, ErrRecycle) {
		reason = messages.TaintRecycle
	}
	a.taintNow(reason, m.cause)
}
