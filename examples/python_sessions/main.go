// Command python_sessions runs a pool of Python worker processes that keep
// a small model per user session in their memory, under strict_queue, and
// kills worker processes during the run: once from outside (as the OOM
// killer would) and once from inside a call (a segfault). It prints the
// hits, misses and errors by kind, and what each means.
//
//	go run ./examples/python_sessions
//
// It needs python3 on PATH.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
	"github.com/affinity-go/affinity/procworker"
	"github.com/affinity-go/affinity/supervisor"
)

//go:embed worker.py
var workerPy []byte

const (
	users   = 12
	workers = 3
	rounds  = 10
	killAt  = 4 // before this round, a worker process is SIGKILLed from outside
	crashAt = 7 // in this round, user-0's call makes its worker segfault
)

// reply is what worker.py returns.
type reply struct {
	N      int     `json:"n"`
	Mean   float64 `json:"mean"`
	Pid    int     `json:"pid"`
	Worker int     `json:"worker"`
}

// user is one session and what the host expects its model to hold.
type user struct {
	name    string
	s       *actors.Session
	fed     int // calls the current model has seen
	lastPid int
}

// tally counts outcomes; goroutines of one round share it.
type tally struct {
	mu        sync.Mutex
	hits      int            // the call reached the session's model, intact
	misses    int            // the call reached a model that lost the session's data
	errs      map[string]int // errors by kind
	restarted int            // sessions closed and started afresh after losing their worker
}

func (t *tally) add(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f()
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "python_sessions:", err)
		os.Exit(1)
	}
}

func run() error {
	dir, err := os.MkdirTemp("", "python_sessions")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if _, err := procworker.WritePythonKit(dir); err != nil {
		return err
	}
	script := filepath.Join(dir, "worker.py")
	if err := os.WriteFile(script, workerPy, 0o644); err != nil {
		return err
	}

	factory, err := procworker.Factory(procworker.Config{
		Command: "python3", Args: []string{script},
		HeartbeatInterval: 200 * time.Millisecond, StopGrace: 2 * time.Second,
		Logger: zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, NoColor: true}).Level(zerolog.WarnLevel).With().Timestamp().Logger(),
	})
	if err != nil {
		return err
	}
	var taintMu sync.Mutex
	var taints []messages.WorkerTainted
	started := time.Now()
	rt, err := actors.Start(actors.Config{
		Pools: []actors.PoolConfig{{Name: "models", Size: workers, Affinity: actors.StrictQueue, NewWorker: factory}},
		Restart: supervisor.Policy{InitialBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
			MaxRestarts: 10, Window: time.Minute},
		OnEvent: func(e messages.Event) {
			if ev, ok := e.(messages.WorkerTainted); ok {
				taintMu.Lock()
				taints = append(taints, ev)
				taintMu.Unlock()
			}
		},
	})
	if err != nil {
		return err
	}
	defer rt.Shutdown(context.Background())
	fmt.Printf("pool of %d Python worker processes ready in %v\n", workers, time.Since(started).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	us := make([]*user, users)
	for i := range us {
		us[i] = &user{name: fmt.Sprintf("user-%02d", i)}
		us[i].s = rt.Session(us[i].name)
	}
	t := &tally{errs: map[string]int{}}

	for round := 1; round <= rounds; round++ {
		if round == killAt {
			victim := us[1].lastPid
			fmt.Printf("round %d: SIGKILL to the process of %s's worker (pid %d), between calls\n", round, us[1].name, victim)
			if err := kill(victim); err != nil {
				return err
			}
			// Wait until the runtime noticed: the exit taints the worker
			// at once, without waiting for a call.
			if !waitFor(ctx, func() bool { return rt.Stats().Pools["models"].Restarts >= 1 }) {
				return errors.New("the killed worker was never restarted")
			}
		}
		if round == crashAt {
			fmt.Printf("round %d: %s's call makes its worker (pid %d) segfault\n", round, us[0].name, us[0].lastPid)
		}
		var wg sync.WaitGroup
		for i, u := range us {
			wg.Add(1)
			go func() {
				defer wg.Done()
				call(ctx, u, t, round == crashAt && i == 0)
			}()
		}
		wg.Wait()
	}

	// The segfaulted worker's restart runs in the background: wait for it.
	if !waitFor(ctx, func() bool { return rt.Stats().Pools["models"].Restarts >= 2 }) {
		return errors.New("the crashed worker was never restarted")
	}
	st := rt.Stats().Pools["models"]
	fmt.Println()
	fmt.Printf("calls: %d, hits: %d, misses: %d\n", users*rounds, t.hits, t.misses)
	fmt.Println("  hit:  the call reached the worker holding the session's model, with all its data")
	fmt.Println("  miss: the call reached a model missing data it had been fed (strict_queue never allows this)")
	kinds := make([]string, 0, len(t.errs))
	for k := range t.errs {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Printf("errors %s: %d\n  %s\n", k, t.errs[k], explain[k])
	}
	fmt.Printf("sessions started afresh after losing their worker: %d\n", t.restarted)
	taintMu.Lock()
	for _, ev := range taints {
		fmt.Printf("worker %d incarnation %d tainted (%s): %v\n", ev.Worker, ev.Incarnation, ev.Reason, ev.Err)
	}
	taintMu.Unlock()
	fmt.Println("  exited: the process died, during a call or between calls (the exit code or signal is in the error)")
	fmt.Printf("restarts: %d (each a new process, a new incarnation)\n", st.Restarts)

	if t.misses != 0 {
		return fmt.Errorf("%d calls reached a model that had lost data", t.misses)
	}
	if t.errs["worker_failed"] != 1 || t.errs["session_worker_unavailable"] == 0 || st.Restarts < 2 {
		return errors.New("the run did not go through both crashes as expected")
	}
	return nil
}

// explain says what each error kind means here.
var explain = map[string]string{
	"worker_failed": "the call was running when its worker process died (SIGSEGV): " +
		"it may or may not have taken effect, the caller decides whether to retry",
	"session_worker_unavailable": "strict_queue: the session's worker process died, and with it the " +
		"session's model; the call did not run on a fresh worker pretending nothing happened. " +
		"The session is closed and started afresh (its model is rebuilt from scratch)",
	"other": "unexpected",
}

// call makes one call of u's session and records its outcome.
func call(ctx context.Context, u *user, t *tally, crash bool) {
	req := map[string]any{"op": "learn", "x": float64(u.fed + 1)}
	if crash {
		req["crash"] = true
	}
	r, err := procworker.As[reply](u.s.Call(ctx, req))
	switch {
	case err == nil:
		u.fed++
		u.lastPid = r.Pid
		t.add(func() {
			if r.N == u.fed {
				t.hits++
			} else {
				t.misses++
			}
		})
	case errors.Is(err, actors.ErrWorkerFailed):
		t.add(func() { t.errs["worker_failed"]++ })
		restart(u, t)
	case errors.Is(err, actors.ErrSessionWorkerUnavailable):
		t.add(func() { t.errs["session_worker_unavailable"]++ })
		restart(u, t)
	default:
		t.add(func() { t.errs["other"]++ })
		fmt.Fprintf(os.Stderr, "%s: %v\n", u.name, err)
	}
}

// restart closes u's session: its model is gone, the next call starts a
// new one on whichever worker the session binds to.
func restart(u *user, t *tally) {
	u.s.Close()
	u.fed = 0
	t.add(func() { t.restarted++ })
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) bool {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// kill ends process pid: SIGKILL on unix.
func kill(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}
