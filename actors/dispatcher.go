package actors

import (
	"github.com/asynkron/protoactor-go/actor"
)

// pinnedDispatcher runs one worker actor's mailbox on a goroutine of its own
// that lives as long as the worker.
//
// protoactor's default dispatcher starts a goroutine each time an idle
// mailbox gets a message. A worker's mailbox goes idle after nearly every
// call when callers wait for replies, so that start-up (and the stack growth
// of running user code on a fresh stack) was most of a call's cost. Here the
// mailbox loop is handed to a parked goroutine instead.
type pinnedDispatcher struct {
	// run holds at most one mailbox turn (the mailbox schedules only on its
	// idle->running transition) plus the nil that stops the goroutine, so
	// sends never block.
	run chan func()
}

var _ actor.Dispatcher = (*pinnedDispatcher)(nil)

// newPinnedDispatcher starts the goroutine; it ends after stop.
func newPinnedDispatcher(rt *Runtime) *pinnedDispatcher {
	d := &pinnedDispatcher{run: make(chan func(), 2)}
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		for fn := range d.run {
			if fn == nil {
				return
			}
			fn()
		}
	}()
	return d
}

// Schedule implements actor.Dispatcher.
func (d *pinnedDispatcher) Schedule(fn func()) { d.run <- fn }

// stop ends the goroutine after the current turn. Turns scheduled later
// never run: the worker has stopped and workerStopped answered its calls.
func (d *pinnedDispatcher) stop() { d.run <- nil }

// Throughput implements actor.Dispatcher: messages per turn before yielding.
func (d *pinnedDispatcher) Throughput() int { return 300 }
