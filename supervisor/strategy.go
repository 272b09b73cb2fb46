package supervisor

import (
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/messages"
)

// Taint is the failure value a worker actor escalates with when it takes
// itself out of service for a reason other than a panic (a panic escalates
// with whatever value was passed to panic).
type Taint struct {
	Reason messages.TaintReason
	Err    error
}

func (t *Taint) Error() string {
	if t.Err == nil {
		return "worker tainted: " + t.Reason.String()
	}
	return fmt.Sprintf("worker tainted: %s: %v", t.Reason, t.Err)
}

func (t *Taint) Unwrap() error { return t.Err }

// ReasonOf maps an escalated failure value to a taint reason.
func ReasonOf(failure any) messages.TaintReason {
	if t, ok := failure.(*Taint); ok {
		return t.Reason
	}
	return messages.TaintPanic
}

// DecisionFunc observes each decision, e.g. to mark a worker failed. It runs
// in the supervisor actor and must not block.
type DecisionFunc func(child *actor.PID, reason messages.TaintReason, d Decision)

// Strategy is a protoactor SupervisorStrategy that restarts a failed child
// after the backoff its Tracker decides, or stops it once it has restarted
// too often. One Strategy serves one supervisor actor.
type Strategy struct {
	policy     Policy
	onDecision DecisionFunc
	now        func() time.Time

	mu       sync.Mutex // HandleFailure runs on the supervisor; timers fire elsewhere
	trackers map[string]*Tracker
	pending  map[*time.Timer]struct{}
	stopped  bool
}

var _ actor.SupervisorStrategy = (*Strategy)(nil)

// NewStrategy returns a strategy applying p. onDecision may be nil.
func NewStrategy(p Policy, onDecision DecisionFunc) *Strategy {
	return &Strategy{
		policy:     p.WithDefaults(),
		onDecision: onDecision,
		now:        time.Now,
		trackers:   make(map[string]*Tracker),
		pending:    make(map[*time.Timer]struct{}),
	}
}

// HandleFailure implements actor.SupervisorStrategy.
func (s *Strategy) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason any, _ any) {
	taint := ReasonOf(reason)
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		sup.StopChildren(child)
		return
	}
	tr, ok := s.trackers[child.Id]
	if !ok {
		tr = NewTracker(s.policy)
		s.trackers[child.Id] = tr
	}
	d := tr.Decide(s.now(), taint)
	s.mu.Unlock()

	if s.onDecision != nil {
		s.onDecision(child, taint, d)
	}
	switch {
	case d.Directive == Fail:
		sup.StopChildren(child)
	case d.Delay <= 0:
		sup.RestartChildren(child)
	default:
		s.restartLater(sup, child, d.Delay)
	}
}

func (s *Strategy) restartLater(sup actor.Supervisor, child *actor.PID, delay time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return // Stop ran while the failure was being handled
	}
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		s.mu.Lock()
		_, live := s.pending[t]
		delete(s.pending, t)
		s.mu.Unlock()
		if live {
			sup.RestartChildren(child)
		}
	})
	s.pending[t] = struct{}{}
}

// Forget drops a child's history, e.g. after it was removed from the pool.
func (s *Strategy) Forget(child *actor.PID) {
	s.mu.Lock()
	delete(s.trackers, child.Id)
	s.mu.Unlock()
}

// Stop cancels pending restarts; later failures stop the child at once.
func (s *Strategy) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	for t := range s.pending {
		t.Stop()
		delete(s.pending, t)
	}
}
