// Package supervisor decides what happens to a tainted worker: restart it
// after a backoff, or give up and report it failed once it has restarted too
// often within a window.
//
// # Decision and mechanism
//
// The decision is pure: Tracker.Decide takes the time, the taint reason and
// the worker's restart history and returns a Decision. Strategy plugs that
// decision into protoactor's supervision (it implements
// actor.SupervisorStrategy), so a pool supervisor actor restarts its worker
// children through protoactor's own restart path: the failed actor's mailbox
// is suspended, its producer builds a new instance (a new incarnation), and
// the mailbox resumes.
//
// Recycling (max calls, max age) is planned maintenance, not a failure: it
// restarts at once and does not use up the restart budget.
package supervisor
