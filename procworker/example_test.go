package procworker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/procworker"
)

// A Python worker, written next to the kit: it counts each session's calls
// in its own memory.
const counterPy = `
import affinity_worker as aw

seen = {}

def handle(call):
    seen[call.session] = seen.get(call.session, 0) + 1
    return {"session": call.session, "calls": seen[call.session], "text": call.payload["text"].upper()}

aw.run(handle, release=lambda session, source: seen.pop(session, None))
`

func ExampleFactory() {
	dir, err := os.MkdirTemp("", "affinity-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	if _, err := procworker.WritePythonKit(dir); err != nil {
		panic(err)
	}
	script := filepath.Join(dir, "counter.py")
	if err := os.WriteFile(script, []byte(counterPy), 0o644); err != nil {
		panic(err)
	}

	factory, err := procworker.Factory(procworker.Config{Command: "python3", Args: []string{script}})
	if err != nil {
		panic(err) // a bad config wraps procworker.ErrInvalidConfig
	}
	ctx := context.Background()
	rt, err := actors.Start(actors.Config{Pools: []actors.PoolConfig{
		{Name: "python", Size: 2, Affinity: actors.StrictQueue, NewWorker: factory},
	}})
	if err != nil {
		panic(err)
	}
	defer rt.Shutdown(ctx)

	type reply struct {
		Session string
		Calls   int
		Text    string
	}
	s := rt.Session("user-42")
	for _, text := range []string{"hello", "again"} {
		r, err := procworker.As[reply](s.Call(ctx, map[string]string{"text": text}))
		fmt.Println(r, err)
	}
	_, err = s.Call(ctx, map[string]int{"text": 1}) // the Python code raises
	var re *procworker.RemoteError
	fmt.Println(errors.As(err, &re), re.Type)
	// Output:
	// {user-42 1 HELLO} <nil>
	// {user-42 2 AGAIN} <nil>
	// true AttributeError
}
