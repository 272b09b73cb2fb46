// Package leaktest checks the tests of packages that run protoactor for
// leaked goroutines, minus protoactor's own that end by themselves.
package leaktest

import (
	"testing"

	"go.uber.org/goleak"
)

// deadLetterThrottle is protoactor's dead-letter log throttle: it ends a
// second after the dead letter that started it, so a test that ends within
// that second would otherwise report it.
var deadLetterThrottle = goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1")

// VerifyTestMain runs the tests, then fails if goroutines other than those
// opts and protoactor's self-ending ones allow are still running.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	goleak.VerifyTestMain(m, append(opts, deadLetterThrottle)...)
}
