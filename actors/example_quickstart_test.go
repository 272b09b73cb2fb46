package actors_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

// The README's quick start is model and the body of Example_quickStart
// between its marker comments; TestReadmeQuickStart keeps them identical.

// model holds state per worker incarnation: how often it served each session.
type model struct{ served map[string]int }

func (m *model) Handle(_ context.Context, c messages.Call) (any, error) {
	if c.Payload == "crash" {
		panic("model corrupted")
	}
	m.served[c.Session]++ // state that only this worker incarnation holds
	return fmt.Sprintf("%s: call %d on this worker", c.Session, m.served[c.Session]), nil
}

func Example_quickStart() {
	// quick start begins
	ctx := context.Background()
	rt, err := actors.Start(actors.Config{Pools: []actors.PoolConfig{{
		Name: "models", Size: 2, Affinity: actors.StrictQueue,
		NewWorker: func(context.Context, actors.WorkerInfo) (actors.Worker, error) {
			return &model{served: map[string]int{}}, nil
		},
	}}})
	if err != nil {
		panic(err) // a bad config wraps actors.ErrInvalidConfig
	}
	defer rt.Shutdown(ctx)

	s := rt.Session("user-42")
	for range 2 {
		out, err := s.Call(ctx, "predict") // strict_queue: always the same worker
		fmt.Println(out, err)
	}
	_, err = s.Call(ctx, "crash")
	fmt.Println(errors.Is(err, actors.ErrWorkerFailed))
	_, err = s.Call(ctx, "predict") // its state died with the worker: no silent fresh start
	fmt.Println(errors.Is(err, actors.ErrSessionWorkerUnavailable))
	s.Close() // start the session afresh
	out, err := s.Call(ctx, "predict")
	fmt.Println(out, err)
	// quick start ends

	// Output:
	// user-42: call 1 on this worker <nil>
	// user-42: call 2 on this worker <nil>
	// true
	// true
	// user-42: call 1 on this worker <nil>
}

// TestReadmeQuickStart checks that the README's quick start is this file's
// model type and the marked body of Example_quickStart, so it cannot rot.
func TestReadmeQuickStart(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	self, err := os.ReadFile("example_quickstart_test.go")
	require.NoError(t, err)
	block := between(between(string(readme), "## Quick start\n", "\n## "), "```go\n", "```\n")
	require.NotEmpty(t, block, "README has no Go block under Quick start")
	src := string(self)
	typ := between(src, "// model holds state", "func Example_quickStart")
	body := dedent(between(src, "\t// quick start begins\n", "\t// quick start ends\n"))
	want := "// model holds state" + typ + body
	require.Equal(t, strings.TrimSpace(want), strings.TrimSpace(block))
}

func between(s, start, end string) string {
	_, after, ok := strings.Cut(s, start)
	if !ok {
		return ""
	}
	in, _, _ := strings.Cut(after, end)
	return in
}

// dedent removes one leading tab from every line.
func dedent(s string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		b.WriteString(strings.TrimPrefix(sc.Text(), "\t"))
		b.WriteByte('\n')
	}
	return b.String()
}
