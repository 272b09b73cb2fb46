//go:build unix

package procworker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/internal/leaktest"
	"github.com/affinity-go/affinity/messages"
	"github.com/affinity-go/affinity/supervisor"
)

// The test binary doubles as a fake worker process (a Go implementation
// of the protocol that misbehaves on request) and as the host process of
// the orphan test.
const roleEnv = "PROCWORKER_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "worker":
		fakeWorker()
		os.Exit(0)
	case "host":
		orphanHost()
		os.Exit(0)
	}
	leaktest.VerifyTestMain(m)
}

// fakeWorker speaks the protocol. FAKE_MODE changes its start: "noready"
// never says ready, "badready" starts with a result frame, "nopong" never
// answers pings, "stubborn" ignores stdin EOF and SIGTERM, "termable"
// ignores stdin EOF only, "credit" announces credit (and then ignores it).
// Calls carry {"op": ...}: see the switch.
func fakeWorker() {
	mode := os.Getenv("FAKE_MODE")
	in := bufio.NewReader(os.Stdin)
	var mu sync.Mutex
	write := func(f frame) {
		mu.Lock()
		defer mu.Unlock()
		_, _ = os.Stdout.Write(appendFrame(nil, f))
	}
	writeRaw := func(b []byte) {
		mu.Lock()
		defer mu.Unlock()
		_, _ = os.Stdout.Write(b)
	}
	if mode == "stubborn" {
		signal.Ignore(syscall.SIGTERM)
	}
	switch mode {
	case "noready":
		select {}
	case "badready":
		write(frame{typ: frameResult, id: 1})
	case "credit":
		write(frame{typ: frameReady, body: []byte(`{"protocol":1,"credit":true}`)})
	default:
		write(frame{typ: frameReady, body: []byte(`{"protocol":1}`)})
	}
	for {
		f, err := readFrame(in, DefaultMaxFrame)
		if err != nil {
			if mode == "stubborn" || mode == "termable" {
				select {} // wait for a signal
			}
			return
		}
		switch f.typ {
		case framePing:
			if mode != "nopong" {
				write(frame{typ: framePong, id: f.id})
			}
		case frameCall:
			_, payload, _ := splitCallBody(f.body)
			var req struct {
				Op   string
				MS   int
				Code int
				N    int
			}
			_ = json.Unmarshal(payload, &req)
			switch req.Op {
			case "garbage":
				writeRaw([]byte{0, 0, 0, 3, 'x', 'y', 'z'}) // shorter than a header
			case "oversize":
				writeRaw([]byte{0x7f, 0xff, 0xff, 0xff})
			case "unknown":
				write(frame{typ: 42, id: f.id})
			case "stray":
				write(frame{typ: frameResult, id: f.id + 1000, body: []byte("1")})
			case "item":
				write(frame{typ: frameItem, id: f.id, body: []byte("1")})
			case "flood": // a stream of N items, whatever the credit
				for i := 0; i < req.N; i++ {
					write(frame{typ: frameItem, id: f.id, body: []byte("1")})
				}
				write(frame{typ: frameEnd, id: f.id})
			case "sleep":
				go func(id uint64) {
					time.Sleep(time.Duration(req.MS) * time.Millisecond) // the fake process's own work
					write(frame{typ: frameResult, id: id, body: []byte(`"slept"`)})
				}(f.id)
			case "exit":
				os.Exit(req.Code)
			case "mute":
				mode = "nopong"
			default:
				write(frame{typ: frameResult, id: f.id, flags: f.flags & flagRaw, body: payload})
			}
		}
	}
}

// orphanHost starts one worker (HOST_WORKER: "python", or "stubborn": a
// fake that ignores stdin EOF and SIGTERM, so only the parent-death signal
// can end it), prints its pid and waits to be killed.
func orphanHost() {
	cfg := Config{Command: "python3", Args: []string{kitScript()}, Env: noBytecode}
	if os.Getenv("HOST_WORKER") == "stubborn" {
		cfg = fakeConfig("stubborn")
	}
	factory, err := Factory(cfg)
	if err != nil {
		panic(err)
	}
	w, err := factory(context.Background(), actors.WorkerInfo{Pool: "p", ID: 0, Incarnation: 1})
	if err != nil {
		panic(err)
	}
	fmt.Println(w.(*worker).pid)
	select {}
}

func kitScript() string {
	p, err := filepath.Abs(filepath.Join("testdata", "kit_worker.py"))
	if err != nil {
		panic(err)
	}
	return p
}

// noBytecode keeps Python from writing __pycache__ into the source tree.
var noBytecode = []string{"PYTHONDONTWRITEBYTECODE=1"}

func needPython(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not found")
	}
}

// pyConfig runs testdata/kit_worker.py.
func pyConfig(t testing.TB) Config {
	needPython(t)
	return Config{Command: "python3", Args: []string{kitScript()}, Env: noBytecode,
		HeartbeatInterval: 50 * time.Millisecond, StopGrace: 2 * time.Second}
}

// fakeConfig runs this test binary as a fake worker in mode.
func fakeConfig(mode string) Config {
	return Config{
		// GORACE: a race-enabled binary otherwise sleeps a second on exit.
		Command: os.Args[0], Env: []string{roleEnv + "=worker", "FAKE_MODE=" + mode, "GORACE=atexit_sleep_ms=0"},
		HeartbeatInterval: 50 * time.Millisecond, StopGrace: 2 * time.Second,
	}
}

// harness is a runtime with one pool of process workers, recording taints.
type harness struct {
	rt     *actors.Runtime
	mu     sync.Mutex
	taints []messages.WorkerTainted
}

func (h *harness) tainted() []messages.WorkerTainted {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]messages.WorkerTainted(nil), h.taints...)
}

// waitTaint waits for the n-th taint and returns it.
func (h *harness) waitTaint(t *testing.T, n int) messages.WorkerTainted {
	t.Helper()
	require.Eventually(t, func() bool { return len(h.tainted()) >= n }, 15*time.Second, 5*time.Millisecond)
	return h.tainted()[n-1]
}

// waitRestarts waits until the pool restarted n times.
func (h *harness) waitRestarts(t *testing.T, n uint64) {
	t.Helper()
	require.Eventually(t, func() bool { return h.rt.Stats().Pools["p"].Restarts >= n }, 15*time.Second, 5*time.Millisecond)
}

func startPool(t *testing.T, cfg Config, size int, mode actors.Affinity, tweak ...func(*actors.PoolConfig)) *harness {
	t.Helper()
	factory, err := Factory(cfg)
	require.NoError(t, err)
	pc := actors.PoolConfig{Name: "p", Size: size, Affinity: mode, NewWorker: factory}
	for _, f := range tweak {
		f(&pc)
	}
	h := &harness{}
	h.rt, err = actors.Start(actors.Config{
		Pools: []actors.PoolConfig{pc},
		Restart: supervisor.Policy{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
			MaxRestarts: 100, Window: time.Minute},
		OnEvent: func(e messages.Event) {
			if ev, ok := e.(messages.WorkerTainted); ok {
				h.mu.Lock()
				h.taints = append(h.taints, ev)
				h.mu.Unlock()
			}
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, h.rt.Shutdown(ctx))
	})
	return h
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type hitsReply struct {
	Hits        int    `json:"hits"`
	Pid         int    `json:"pid"`
	Worker      int    `json:"worker"`
	Incarnation uint64 `json:"incarnation"`
}

func op(name string, kv ...any) map[string]any {
	m := map[string]any{"op": name}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

// alive reports whether pid exists (and is not a zombie of ours).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// "pid (comm) S ...": a zombie is dead for our purposes.
	for i := len(data) - 1; i > 0; i-- {
		if data[i] == ')' {
			return i+2 < len(data) && data[i+2] != 'Z'
		}
	}
	return true
}

// syncBuffer is a log sink safe for the worker's goroutines.
type syncBuffer struct {
	mu   sync.Mutex
	logs []map[string]any
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		return 0, err
	}
	b.mu.Lock()
	b.logs = append(b.logs, m)
	b.mu.Unlock()
	return len(p), nil
}

func (b *syncBuffer) find(msg string) map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.logs {
		if m["message"] == msg {
			return m
		}
	}
	return nil
}

func (b *syncBuffer) logger() zerolog.Logger { return zerolog.New(b) }
