package supervisor

import (
	"errors"
	"fmt"
	"time"

	"github.com/affinity-go/affinity/messages"
)

// ErrInvalidPolicy is returned by Policy.Validate.
var ErrInvalidPolicy = errors.New("supervisor: invalid restart policy")

// Policy bounds restarts. The zero value is usable: every field has a default.
type Policy struct {
	// MaxRestarts within Window before the worker is reported failed.
	// Default 10. Negative means unlimited.
	MaxRestarts int
	// Window over which restarts are counted. Default 1 minute.
	Window time.Duration
	// InitialBackoff before the first restart in a window; it doubles with
	// each further restart up to MaxBackoff. Default 10 ms.
	InitialBackoff time.Duration
	// MaxBackoff caps the backoff. Default 5 s (or InitialBackoff, if larger).
	MaxBackoff time.Duration
}

// WithDefaults returns p with zero fields replaced by their defaults.
func (p Policy) WithDefaults() Policy {
	if p.MaxRestarts == 0 {
		p.MaxRestarts = 10
	}
	if p.Window == 0 {
		p.Window = time.Minute
	}
	if p.InitialBackoff == 0 {
		p.InitialBackoff = 10 * time.Millisecond
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = max(5*time.Second, p.InitialBackoff) // an unset cap never undercuts the start
	}
	return p
}

// Validate reports negative durations and a backoff cap below the initial
// backoff.
func (p Policy) Validate() error {
	p = p.WithDefaults()
	switch {
	case p.Window < 0:
		return fmt.Errorf("%w: negative window %v", ErrInvalidPolicy, p.Window)
	case p.InitialBackoff < 0 || p.MaxBackoff < 0:
		return fmt.Errorf("%w: negative backoff", ErrInvalidPolicy)
	case p.MaxBackoff < p.InitialBackoff:
		return fmt.Errorf("%w: max backoff %v below initial backoff %v", ErrInvalidPolicy, p.MaxBackoff, p.InitialBackoff)
	}
	return nil
}

// Directive is what to do with a tainted worker.
type Directive uint8

const (
	// Restart the worker after Decision.Delay.
	Restart Directive = iota
	// Fail stops the worker for good; the pool runs degraded.
	Fail
)

func (d Directive) String() string {
	if d == Restart {
		return "restart"
	}
	return "fail"
}

// Decision is the outcome of Tracker.Decide.
type Decision struct {
	Directive Directive
	Delay     time.Duration
	// Restarts is the number of failure restarts counted in the window,
	// including this one.
	Restarts int
}

// Tracker holds one worker's restart history. It is not safe for concurrent
// use; the supervisor actor owns it.
type Tracker struct {
	policy   Policy
	failures []time.Time
}

// NewTracker returns a tracker applying p (defaults filled in).
func NewTracker(p Policy) *Tracker { return &Tracker{policy: p.WithDefaults()} }

// Decide records a taint at now and says what to do.
func (t *Tracker) Decide(now time.Time, reason messages.TaintReason) Decision {
	t.forget(now)
	if reason == messages.TaintRecycle {
		return Decision{Directive: Restart, Restarts: len(t.failures)}
	}
	t.failures = append(t.failures, now)
	n := len(t.failures)
	if t.policy.MaxRestarts >= 0 && n > t.policy.MaxRestarts {
		return Decision{Directive: Fail, Restarts: n - 1}
	}
	delay := t.policy.InitialBackoff
	for i := 1; i < n && delay < t.policy.MaxBackoff; i++ {
		if delay > t.policy.MaxBackoff/2 {
			delay = t.policy.MaxBackoff // doubling would pass the cap (or overflow)
			break
		}
		delay *= 2
	}
	if delay > t.policy.MaxBackoff {
		delay = t.policy.MaxBackoff
	}
	return Decision{Directive: Restart, Delay: delay, Restarts: n}
}

// forget drops the failures that have left the window ending at now.
func (t *Tracker) forget(now time.Time) {
	cutoff := now.Add(-t.policy.Window)
	kept := t.failures[:0]
	for _, at := range t.failures {
		if at.After(cutoff) {
			kept = append(kept, at)
		}
	}
	t.failures = kept
}
