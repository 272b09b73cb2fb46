package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/automanaged"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

// memberOptions configure one member process.
type memberOptions struct {
	index    int      // this member's slot
	port     int      // protoactor remote port
	health   int      // automanaged health port
	hosts    []string // every slot's health address
	sessions int      // sessions this member's callers use (its own: m<index>-s<k>)
	callers  int
	expect   int // members to wait for before calling
}

// report is what a member prints as one JSON line when it stops.
type report struct {
	Index      int               `json:"index"`
	Member     string            `json:"member"`
	Sessions   int               `json:"sessions"` // sessions whose state lives on this member's workers
	Workers    int               `json:"workers"`
	Calls      int               `json:"calls"`      // calls made by this member's callers that succeeded
	Moves      int               `json:"moves"`      // sessions restarted elsewhere after their member left
	Errors     map[string]int    `json:"errors"`     // failed calls by kind
	Examples   map[string]string `json:"examples"`   // the first error of each kind
	Violations []string          `json:"violations"` // broken guarantees (misrouted, hung)
}

// counter is the demo's worker: a count per session, kept in memory only.
type counter struct {
	mu   sync.Mutex
	seen map[string]int
	all  *sessionSet
}

func (c *counter) Handle(_ context.Context, call messages.Call) (any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if call.Payload == "ref" {
		return call.NewRef("doc"), nil
	}
	c.seen[call.Session]++
	c.all.add(call.Session)
	return fmt.Sprintf("%s/%d/%d/%d", call.Member, call.Worker, call.Incarnation, c.seen[call.Session]), nil
}

type sessionSet struct {
	mu sync.Mutex
	m  map[string]bool
}

func (s *sessionSet) add(id string) {
	s.mu.Lock()
	s.m[id] = true
	s.mu.Unlock()
}

func (s *sessionSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

const workersPerMember = 4

// hangAfter is how long a call may go without an outcome before the demo
// calls it hung: far beyond failure detection plus a grain's recovery.
const hangAfter = 30 * time.Second

// errorKinds names the errors a call may end with, for the report.
var errorKinds = []struct {
	err  error
	name string
}{
	{context.DeadlineExceeded, "hung"},
	{actors.ErrSessionWorkerUnavailable, "worker_unavailable"},
	{actors.ErrRefLost, "ref_lost"},
	{actors.ErrWorkerFailed, "worker_failed"},
	{actors.ErrNoWorkersAvailable, "no_workers"},
	{actors.ErrQueueTimeout, "queue_timeout"},
}

// runMember joins the cluster, calls its sessions until SIGTERM, then
// prints its report and leaves.
func runMember(o memberOptions) error {
	held := &sessionSet{m: map[string]bool{}}
	rt, err := actors.Start(actors.Config{
		Pools: []actors.PoolConfig{{Name: "state", Size: workersPerMember, Affinity: actors.StrictQueue,
			NewWorker: func(context.Context, actors.WorkerInfo) (actors.Worker, error) {
				return &counter{seen: map[string]int{}, all: held}, nil
			}}},
		OnEvent: func(e messages.Event) {
			if t, ok := e.(messages.WorkerTainted); ok {
				fmt.Fprintf(os.Stderr, "member %d: worker %d tainted: %s\n", o.index, t.Worker, t.Reason)
			}
		},
		Cluster: &actors.ClusterConfig{Name: "affinity-demo", Port: o.port,
			Provider: automanaged.NewWithConfig(300*time.Millisecond, o.health, o.hosts...)},
	})
	if err != nil {
		return err
	}
	all := make(chan struct{})
	var allOnce sync.Once
	sub := rt.ActorSystem().EventStream.Subscribe(func(e any) {
		t, ok := e.(*cluster.ClusterTopology)
		if !ok {
			return
		}
		for _, m := range t.Left {
			fmt.Fprintf(os.Stderr, "member %d: %s left the cluster\n", o.index, m.Address())
		}
		for _, m := range t.Joined {
			fmt.Fprintf(os.Stderr, "member %d: %s joined the cluster\n", o.index, m.Address())
		}
		if len(t.Members) >= o.expect {
			allOnce.Do(func() { close(all) })
		}
	})
	defer rt.ActorSystem().EventStream.Unsubscribe(sub)
	if rt.ClusterMembers() >= o.expect { // the topology may have settled before the subscription
		allOnce.Do(func() { close(all) })
	}
	// Wait for the expected members, so that the first sessions spread
	// over all of them; a member that never comes is the run's to report.
	select {
	case <-all:
	case <-time.After(20 * time.Second):
		fmt.Fprintf(os.Stderr, "member %d: calling with fewer than %d members\n", o.index, o.expect)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{rt: rt, prefix: fmt.Sprintf("m%d-s", o.index), sessions: o.sessions, errs: map[string]int{}, examples: map[string]string{}}
	var wg sync.WaitGroup
	for c := range o.callers {
		wg.Add(1)
		go func() { defer wg.Done(); l.caller(ctx, c, o.callers) }()
	}
	fmt.Fprintln(os.Stderr, "member", o.index, "ready")
	<-stop
	cancel()
	wg.Wait()
	r := l.report(o.index, rt.ActorSystem().ID, held.len())
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		return err
	}
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	return rt.Shutdown(sctx)
}

// load is a member's callers: each owns a slice of the member's sessions,
// so it knows exactly what each session's next answer must be.
type load struct {
	rt       *actors.Runtime
	prefix   string
	sessions int

	mu         sync.Mutex
	calls      int
	moves      int
	errs       map[string]int
	examples   map[string]string
	violations []string
}

// where a session's state lives, and its count there.
type seen struct {
	at string // member/worker/incarnation
	n  int
}

func (l *load) caller(ctx context.Context, c, of int) {
	last := map[int]seen{}
	refs := map[int]messages.Ref{}
	shared := map[int]seen{}
	for i := 0; ctx.Err() == nil; i++ {
		s := c + of*rand.IntN(max(1, l.sessions/of))
		switch {
		case s >= l.sessions:
		case i%10 == 0:
			l.refCall(ctx, s, refs)
		case i%10 == 5:
			l.sharedCall(ctx, rand.IntN(sharedSessions), shared)
		default:
			l.call(ctx, s, last)
		}
	}
}

// sharedSessions are called by every member's callers.
const sharedSessions = 50

// sharedCall calls a session that every member calls too. Its count grows
// with everyone's calls, so this caller checks that each answer came from
// the same worker incarnation as its previous one with a higher count, or
// from another place (the session moved after its member left).
func (l *load) sharedCall(ctx context.Context, k int, last map[int]seen) {
	id := "shared-" + strconv.Itoa(k)
	cctx, cancel := context.WithTimeout(ctx, hangAfter)
	defer cancel()
	out, err := l.rt.Session(id).Call(cctx, "count")
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		l.failed(err, id)
		if errors.Is(err, actors.ErrSessionWorkerUnavailable) {
			l.rt.Session(id).Close() // any member may: the next call starts afresh
		}
		return
	}
	at, n := split(out.(string))
	if prev, ok := last[k]; ok && at == prev.at && n <= prev.n {
		l.violate("shared session %s: answered #%d on %s after #%d there", id, n, at, prev.n)
	}
	last[k] = seen{at: at, n: n}
	l.count(func() { l.calls++ })
}

// call makes one strict call and checks where it ran: on the session's
// worker incarnation with the next count, or (after the session was closed
// because its member left) anywhere with count 1.
func (l *load) call(ctx context.Context, s int, last map[int]seen) {
	id := l.prefix + strconv.Itoa(s)
	cctx, cancel := context.WithTimeout(ctx, hangAfter)
	defer cancel()
	out, err := l.rt.Session(id).Call(cctx, "count")
	if ctx.Err() != nil {
		return // stopping: the call's outcome is the stop's, not the cluster's
	}
	if err != nil {
		l.failed(err, id)
		if errors.Is(err, actors.ErrSessionWorkerUnavailable) {
			l.rt.Session(id).Close() // the README's way back: start afresh
			delete(last, s)
			l.count(func() { l.moves++ })
		}
		return
	}
	at, n := split(out.(string))
	prev, ok := last[s]
	switch {
	case ok && (at != prev.at || n != prev.n+1):
		l.violate("session %s: answered %s #%d after %s #%d (caller on %s)", id, at, n, prev.at, prev.n, l.rt.ActorSystem().ID)
	case !ok && n != 1:
		l.violate("session %s: a fresh session answered #%d on %s", id, n, at)
	}
	last[s] = seen{at: at, n: n}
	l.count(func() { l.calls++ })
}

// refCall calls a ref of session s (making one first) and checks it ran on
// the ref's worker incarnation.
func (l *load) refCall(ctx context.Context, s int, refs map[int]messages.Ref) {
	id := l.prefix + "ref-" + strconv.Itoa(s)
	cctx, cancel := context.WithTimeout(ctx, hangAfter)
	defer cancel()
	ref, ok := refs[s]
	if !ok {
		v, err := l.rt.Session(id).Call(cctx, "ref")
		if err != nil {
			if ctx.Err() == nil {
				l.failed(err, id)
			}
			if errors.Is(err, actors.ErrSessionWorkerUnavailable) {
				l.rt.Session(id).Close()
			}
			return
		}
		refs[s] = v.(messages.Ref)
		return
	}
	out, err := l.rt.CallRef(cctx, ref, "count")
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		l.failed(err, id)
		if errors.Is(err, actors.ErrRefLost) {
			l.rt.Session(id).Close()
			delete(refs, s)
		}
		return
	}
	at, _ := split(out.(string))
	if want := fmt.Sprintf("%s/%d/%d", ref.Member, ref.Worker, ref.Incarnation); at != want {
		l.violate("ref of %s ran on %s, not %s", id, at, want)
	}
	l.count(func() { l.calls++ })
}

func (l *load) failed(err error, id string) {
	kind := "other"
	for _, k := range errorKinds {
		if errors.Is(err, k.err) {
			kind = k.name
			break
		}
	}
	switch kind {
	case "other":
		fmt.Fprintln(os.Stderr, "call of", id, "failed:", err)
	case "hung":
		l.violate("call of %s had no outcome after %v", id, hangAfter)
	}
	l.count(func() {
		if l.errs[kind] == 0 {
			l.examples[kind] = err.Error()
		}
		l.errs[kind]++
	})
}

func (l *load) violate(format string, args ...any) {
	l.count(func() { l.violations = append(l.violations, fmt.Sprintf(format, args...)) })
}

func (l *load) count(f func()) {
	l.mu.Lock()
	f()
	l.mu.Unlock()
}

func (l *load) report(index int, member string, sessions int) report {
	l.mu.Lock()
	defer l.mu.Unlock()
	return report{Index: index, Member: member, Sessions: sessions, Workers: workersPerMember,
		Calls: l.calls, Moves: l.moves, Errors: l.errs, Examples: l.examples, Violations: l.violations}
}

// split parses a counter answer into where it ran and the count.
func split(s string) (at string, n int) {
	i := strings.LastIndexByte(s, '/')
	n, _ = strconv.Atoi(s[i+1:])
	return s[:i], n
}
