package supervisor

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/messages"
)

// t0 is an arbitrary fixed instant: Decide is pure, so tests drive the clock.
var t0 = time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)

func TestPolicyWithDefaults(t *testing.T) {
	defaults := Policy{MaxRestarts: 10, Window: time.Minute, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 5 * time.Second}
	tests := []struct {
		name string
		in   Policy
		want Policy
	}{
		{"zero value gets every default", Policy{}, defaults},
		{
			"explicit values are kept",
			Policy{MaxRestarts: 3, Window: time.Hour, InitialBackoff: time.Second, MaxBackoff: time.Minute},
			Policy{MaxRestarts: 3, Window: time.Hour, InitialBackoff: time.Second, MaxBackoff: time.Minute},
		},
		{
			"only zero fields are filled",
			Policy{MaxRestarts: 2, MaxBackoff: time.Second},
			Policy{MaxRestarts: 2, Window: time.Minute, InitialBackoff: 10 * time.Millisecond, MaxBackoff: time.Second},
		},
		{
			// Negative MaxRestarts means unlimited and must survive defaulting.
			"negative max restarts is kept",
			Policy{MaxRestarts: -1},
			Policy{MaxRestarts: -1, Window: time.Minute, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 5 * time.Second},
		},
		{
			"an unset cap never undercuts the initial backoff",
			Policy{InitialBackoff: 10 * time.Second},
			Policy{MaxRestarts: 10, Window: time.Minute, InitialBackoff: 10 * time.Second, MaxBackoff: 10 * time.Second},
		},
		{
			// Negative durations are left for Validate to reject, not hidden.
			"negative durations are kept",
			Policy{Window: -time.Second, InitialBackoff: -time.Second, MaxBackoff: -time.Second},
			Policy{MaxRestarts: 10, Window: -time.Second, InitialBackoff: -time.Second, MaxBackoff: -time.Second},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.in.WithDefaults())
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	valid := []struct {
		name string
		p    Policy
	}{
		{"zero value", Policy{}},
		{"explicit", Policy{MaxRestarts: 3, Window: time.Hour, InitialBackoff: time.Second, MaxBackoff: time.Minute}},
		{"unlimited restarts", Policy{MaxRestarts: -1}},
		{"initial equals max backoff", Policy{InitialBackoff: time.Second, MaxBackoff: time.Second}},
	}
	for _, tt := range valid {
		t.Run("valid/"+tt.name, func(t *testing.T) {
			assert.NoError(t, tt.p.Validate())
		})
	}

	invalid := []struct {
		name    string
		p       Policy
		mention string // part of the message that tells the user what is wrong
	}{
		{"negative window", Policy{Window: -time.Second}, "negative window"},
		{"negative initial backoff", Policy{InitialBackoff: -time.Millisecond}, "negative backoff"},
		{"negative max backoff", Policy{MaxBackoff: -time.Millisecond}, "negative backoff"},
		{"max below initial", Policy{InitialBackoff: time.Second, MaxBackoff: time.Millisecond}, "max backoff 1ms below initial backoff 1s"},
		// Validation applies to the effective policy, so an initial backoff
		// above the default cap is reported too.
	}
	for _, tt := range invalid {
		t.Run("invalid/"+tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			require.ErrorIs(t, err, ErrInvalidPolicy)
			assert.Contains(t, err.Error(), tt.mention)
		})
	}
}

func TestDirectiveString(t *testing.T) {
	assert.Equal(t, "restart", Restart.String())
	assert.Equal(t, "fail", Fail.String())
}

func TestTrackerBackoffDoublesUpToCap(t *testing.T) {
	tr := NewTracker(Policy{MaxRestarts: -1, Window: time.Hour, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 75 * time.Millisecond})
	want := []time.Duration{10, 20, 40, 75, 75, 75}
	for i, w := range want {
		d := tr.Decide(t0.Add(time.Duration(i)*time.Second), messages.TaintPanic)
		assert.Equal(t, Decision{Directive: Restart, Delay: w * time.Millisecond, Restarts: i + 1}, d, "failure %d", i+1)
	}
}

func TestTrackerBackoffNeverOverflows(t *testing.T) {
	// A cap near the largest duration ("no real cap") must not make the
	// doubling wrap around to a zero or negative delay, which would turn
	// backoff into an immediate restart loop.
	tr := NewTracker(Policy{MaxRestarts: -1, Window: time.Hour, InitialBackoff: time.Nanosecond, MaxBackoff: math.MaxInt64})
	var prev time.Duration
	for i := range 100 {
		d := tr.Decide(t0, messages.TaintPanic)
		require.Equal(t, Restart, d.Directive)
		require.GreaterOrEqual(t, d.Delay, prev, "failure %d: delay went down", i+1)
		prev = d.Delay
	}
	assert.Equal(t, time.Duration(math.MaxInt64), prev)
}

func TestTrackerRestartBudget(t *testing.T) {
	for _, max := range []int{1, 3, 10} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			tr := NewTracker(Policy{MaxRestarts: max, Window: time.Minute})
			for i := 1; i <= max; i++ {
				d := tr.Decide(t0.Add(time.Duration(i)*time.Millisecond), messages.TaintPanic)
				require.Equal(t, Restart, d.Directive, "restart %d of %d must be allowed", i, max)
				require.Equal(t, i, d.Restarts)
			}
			d := tr.Decide(t0.Add(time.Second), messages.TaintPanic)
			assert.Equal(t, Decision{Directive: Fail, Restarts: max}, d)
		})
	}
}

func TestTrackerDefaultBudget(t *testing.T) {
	// The zero policy allows 10 restarts a minute, the first after 10 ms.
	tr := NewTracker(Policy{})
	first := tr.Decide(t0, messages.TaintPanic)
	assert.Equal(t, Decision{Directive: Restart, Delay: 10 * time.Millisecond, Restarts: 1}, first)
	for i := 2; i <= 10; i++ {
		require.Equal(t, Restart, tr.Decide(t0, messages.TaintPanic).Directive, "restart %d", i)
	}
	assert.Equal(t, Fail, tr.Decide(t0, messages.TaintPanic).Directive)
}

func TestTrackerForgetsFailuresOutsideWindow(t *testing.T) {
	p := Policy{MaxRestarts: 2, Window: time.Minute, InitialBackoff: 10 * time.Millisecond, MaxBackoff: time.Second}
	tr := NewTracker(p)
	steps := []struct {
		at   time.Duration
		want Decision
	}{
		{0, Decision{Restart, 10 * time.Millisecond, 1}},
		{10 * time.Second, Decision{Restart, 20 * time.Millisecond, 2}},
		// The failure at 0 has left the window; the one at 10s still counts.
		{65 * time.Second, Decision{Restart, 20 * time.Millisecond, 2}},
		// Three failures inside one window: budget exhausted.
		{66 * time.Second, Decision{Fail, 0, 2}},
	}
	for _, s := range steps {
		assert.Equal(t, s.want, tr.Decide(t0.Add(s.at), messages.TaintPanic), "at %v", s.at)
	}

	// After a quiet window the history is gone: budget and backoff reset.
	tr = NewTracker(p)
	tr.Decide(t0, messages.TaintPanic)
	tr.Decide(t0, messages.TaintPanic)
	assert.Equal(t, Decision{Restart, 10 * time.Millisecond, 1}, tr.Decide(t0.Add(2*time.Minute), messages.TaintPanic))

	// A failure exactly one window old no longer counts.
	tr = NewTracker(p)
	tr.Decide(t0, messages.TaintPanic)
	assert.Equal(t, 1, tr.Decide(t0.Add(time.Minute), messages.TaintPanic).Restarts)
}

func TestTrackerRecycleIsFreeAndImmediate(t *testing.T) {
	tr := NewTracker(Policy{MaxRestarts: 1, Window: time.Minute, InitialBackoff: 10 * time.Millisecond, MaxBackoff: time.Second})

	// Many recycles do not use the budget of one failure restart.
	for i := range 50 {
		d := tr.Decide(t0.Add(time.Duration(i)*time.Millisecond), messages.TaintRecycle)
		require.Equal(t, Decision{Directive: Restart, Delay: 0, Restarts: 0}, d, "recycle %d", i+1)
	}
	d := tr.Decide(t0.Add(time.Second), messages.TaintPanic)
	require.Equal(t, Decision{Directive: Restart, Delay: 10 * time.Millisecond, Restarts: 1}, d)

	// A recycle after a failure reports the failures in the window, and does
	// not advance the backoff or the count.
	d = tr.Decide(t0.Add(2*time.Second), messages.TaintRecycle)
	assert.Equal(t, Decision{Directive: Restart, Delay: 0, Restarts: 1}, d)

	// Once that failure has left the window, a recycle reports none.
	d = tr.Decide(t0.Add(2*time.Minute), messages.TaintRecycle)
	assert.Equal(t, Decision{Directive: Restart, Delay: 0, Restarts: 0}, d)

	// ...and the budget is whole again.
	d = tr.Decide(t0.Add(2*time.Minute), messages.TaintPanic)
	assert.Equal(t, Decision{Directive: Restart, Delay: 10 * time.Millisecond, Restarts: 1}, d)
}

func TestTrackerEveryNonRecycleReasonCounts(t *testing.T) {
	for _, r := range []messages.TaintReason{messages.TaintPanic, messages.TaintFatalError, messages.TaintHealthCheck, messages.TaintStartFailed, messages.TaintExited} {
		t.Run(r.String(), func(t *testing.T) {
			tr := NewTracker(Policy{MaxRestarts: 1})
			require.Equal(t, Restart, tr.Decide(t0, r).Directive)
			assert.Equal(t, Fail, tr.Decide(t0, r).Directive)
		})
	}
}

func TestTrackerUnlimitedRestarts(t *testing.T) {
	tr := NewTracker(Policy{MaxRestarts: -1, Window: time.Hour, MaxBackoff: time.Second})
	for i := 1; i <= 1000; i++ {
		d := tr.Decide(t0, messages.TaintPanic)
		require.Equal(t, Restart, d.Directive, "failure %d", i)
		require.Equal(t, i, d.Restarts)
		require.LessOrEqual(t, d.Delay, time.Second)
	}
}

func TestReasonOf(t *testing.T) {
	tests := []struct {
		name    string
		failure any
		want    messages.TaintReason
	}{
		{"taint panic", &Taint{Reason: messages.TaintPanic}, messages.TaintPanic},
		{"taint fatal error", &Taint{Reason: messages.TaintFatalError, Err: errors.New("x")}, messages.TaintFatalError},
		{"taint health check", &Taint{Reason: messages.TaintHealthCheck}, messages.TaintHealthCheck},
		{"taint recycle", &Taint{Reason: messages.TaintRecycle}, messages.TaintRecycle},
		{"taint start failed", &Taint{Reason: messages.TaintStartFailed}, messages.TaintStartFailed},
		{"string panic", "boom", messages.TaintPanic},
		{"error panic", errors.New("boom"), messages.TaintPanic},
		{"int panic", 42, messages.TaintPanic},
		{"nil", nil, messages.TaintPanic},
		// Only *Taint is the escalation protocol; a Taint value is user data.
		{"taint value", Taint{Reason: messages.TaintRecycle}, messages.TaintPanic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, ReasonOf(tt.failure))
		})
	}
}

func TestTaintError(t *testing.T) {
	cause := errors.New("disk full")
	withErr := &Taint{Reason: messages.TaintFatalError, Err: cause}
	assert.Equal(t, "worker tainted: fatal_error: disk full", withErr.Error())
	assert.Same(t, cause, withErr.Unwrap())
	assert.ErrorIs(t, withErr, cause)

	bare := &Taint{Reason: messages.TaintRecycle}
	assert.Equal(t, "worker tainted: recycle", bare.Error())
	assert.NoError(t, bare.Unwrap())

	// A wrapped taint is still found with errors.As.
	var got *Taint
	require.ErrorAs(t, fmt.Errorf("pool p: %w", withErr), &got)
	assert.Same(t, withErr, got)
}
