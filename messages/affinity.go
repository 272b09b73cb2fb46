package messages

import (
	"errors"
	"fmt"
)

// ErrInvalidAffinity is returned when an affinity mode is not one of the
// documented names or values.
var ErrInvalidAffinity = errors.New("affinity: invalid affinity mode")

// Affinity says what a call does when its session's preferred worker cannot
// take it right now. The zero value means "use the pool's default".
type Affinity uint8

const (
	// DefaultAffinity defers to the pool's configured mode (Hint when unset).
	DefaultAffinity Affinity = iota
	// Hint is best-effort routing: a busy preferred worker is bypassed for
	// any free one without moving the session; a gone worker is replaced.
	Hint
	// StrictQueue waits, FIFO, for the preferred worker to be free.
	StrictQueue
	// StrictFailFast fails at once with ErrWorkerBusy when the preferred
	// worker is busy.
	StrictFailFast
	affinityCount
)

// AffinityCount is the number of modes, the default included, for counter
// arrays indexed by Affinity.
const AffinityCount = int(affinityCount)

var affinityNames = [...]string{"default", "hint", "strict_queue", "strict_fail_fast"}

// String returns the configuration name of the mode ("hint", "strict_queue",
// "strict_fail_fast", or "default" for the zero value).
func (a Affinity) String() string {
	if int(a) < len(affinityNames) {
		return affinityNames[a]
	}
	return fmt.Sprintf("Affinity(%d)", uint8(a))
}

// Valid reports whether a is one of the defined modes (including the default).
func (a Affinity) Valid() bool { return int(a) < len(affinityNames) }

// ParseAffinity turns a configuration string into a mode. The empty string
// and "default" give DefaultAffinity; anything unknown is ErrInvalidAffinity.
func ParseAffinity(s string) (Affinity, error) {
	if s == "" {
		return DefaultAffinity, nil
	}
	for i, name := range affinityNames {
		if s == name {
			return Affinity(i), nil
		}
	}
	return DefaultAffinity, fmt.Errorf("%w: %q (want hint, strict_queue or strict_fail_fast)", ErrInvalidAffinity, s)
}

// MarshalText implements encoding.TextMarshaler so modes read and write as
// their names in JSON, YAML and flags.
func (a Affinity) MarshalText() ([]byte, error) {
	if !a.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrInvalidAffinity, uint8(a))
	}
	return []byte(a.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (a *Affinity) UnmarshalText(text []byte) error {
	parsed, err := ParseAffinity(string(text))
	if err != nil {
		return err
	}
	*a = parsed
	return nil
}
