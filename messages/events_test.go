package messages

import (
	"fmt"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
)

// enumNames checks the names of an enum, then that the count constant covers
// exactly them and that the first value past the end prints as "unknown".
func enumNames[E ~uint8](t *testing.T, count int, want []string) {
	t.Helper()
	assert.Equal(t, len(want), count, "count constant")
	for i, name := range want {
		assert.Equal(t, name, fmt.Sprint(E(i)), "value %d", i)
	}
	assert.Equal(t, "unknown", fmt.Sprint(E(count)))
	assert.Equal(t, "unknown", fmt.Sprint(E(255)))
}

func TestOutcomeString(t *testing.T) {
	enumNames[Outcome](t, OutcomeCount, []string{"hit", "bound", "detour", "rebind", "queued", "failed"})
	assert.Equal(t, "failed", OutcomeFailed.String())
}

func TestCleanupSourceString(t *testing.T) {
	enumNames[CleanupSource](t, CleanupSourceCount, []string{"manual", "owner_down", "expired", "shutdown"})
	assert.Equal(t, "owner_down", CleanupOwnerDown.String())
}

func TestTaintReasonString(t *testing.T) {
	enumNames[TaintReason](t, TaintReasonCount, []string{"panic", "fatal_error", "health_check", "recycle", "start_failed", "exited"})
	assert.Equal(t, "start_failed", TaintStartFailed.String())
}

func TestEventKindsAndLevels(t *testing.T) {
	tests := []struct {
		ev    Event
		kind  string
		level zerolog.Level
	}{
		// Per-call events are trace so that a normal log level stays quiet.
		{CallDispatched{}, "call_dispatched", zerolog.TraceLevel},
		{CallExecuted{}, "call_executed", zerolog.TraceLevel},
		{SessionCreated{}, "session_created", zerolog.TraceLevel},
		{SessionCleanup{}, "session_cleanup", zerolog.DebugLevel},
		{WorkerRestarted{}, "worker_restarted", zerolog.InfoLevel},
		{PoolResized{}, "pool_resized", zerolog.InfoLevel},
		{PoolSaturated{}, "pool_saturated", zerolog.WarnLevel},
		{WorkerTainted{}, "worker_tainted", zerolog.WarnLevel},
		{WorkerFailed{}, "worker_failed", zerolog.ErrorLevel},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		assert.Equal(t, tt.kind, tt.ev.Kind(), "%T", tt.ev)
		assert.Equal(t, tt.level, tt.ev.Level(), "%T", tt.ev)
		assert.False(t, seen[tt.ev.Kind()], "kind %q used twice", tt.ev.Kind())
		seen[tt.ev.Kind()] = true
	}
}
