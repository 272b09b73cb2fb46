package actors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/affinity-go/affinity/messages"
)

// The model-based test drives one pool with random sequences of calls (every
// mode, overrides, refs), panics, cancels, session closes and resizes, one
// step at a time, and checks each outcome against a model of the affinity
// table. Every call blocks on a gate the test opens, so the runtime's state
// between steps is fully determined by the steps: where the model cannot
// know the runtime's free choice (a hint detour may go to any free worker)
// it checks the choice was allowed and follows it.
//
// Each run either restarts tainted workers at once (the step that taints a
// worker waits for its next incarnation, which is where the model expects
// it) or never (an hour's backoff), so both "restarted" and "still tainted"
// states get explored.

type mState int

const (
	mQueued mState = iota
	mRunning
	mDone
)

type mCall struct {
	id      int
	sess    int
	mode    Affinity
	ref     *messages.Ref
	stream  bool
	state   mState
	worker  int // running on, or queued for (-1: the pool's hint queue)
	pref    int // hint queue: the session's bound worker, -1 if none
	bindRun bool
	epoch   int // the session's epoch when the call was made
	// uncancellable: made with a context that cannot be cancelled, so a
	// call to an idle worker runs on its caller's goroutine.
	uncancellable bool
	// onCaller: made with RunOnCaller (and a context that can be
	// cancelled): it may run on its caller too, and still leaves a queue
	// when cancelled.
	onCaller bool

	gate    chan struct{}
	panics  atomic.Bool
	cancel  context.CancelFunc
	started chan int
	done    chan callOutcome
}

type callOutcome struct {
	res result
	err error
}

type mWorker struct {
	id      int
	inc     uint64
	state   workerState // wsReady, wsRestarting (tainted), wsRemoved
	running *mCall
	queue   []*mCall  // calls waiting for this worker, in arrival order
	ring    []ringKey // sessions waiting for it, served in turn
	bound   int
}

// ringKey is a session (of one epoch: a closed session's id is reused by
// the next) in a wait ring. A session stays in a ring after its waiting
// calls were cancelled, as in the runtime, and is skipped when its turn
// comes.
type ringKey struct{ sess, epoch int }

type hintEntry struct {
	ringKey
	bound int // the worker the session was bound to when it joined; -1: none
}

type mBinding struct {
	worker int
	inc    uint64
}

type model struct {
	t        *rapid.T
	rt       *Runtime
	w        *world
	workers  []*mWorker
	hint     []*mCall
	hintRing []hintEntry
	bindings map[int]*mBinding
	calls    []*mCall
	refs     []messages.Ref
	never    map[int]bool       // ids of calls that must never run
	restarts bool               // tainted workers come back at once
	epochs   [modelSessions]int // bumped by each Close: calls made before belong to the old session
}

const modelSessions = 3

func TestModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		m := newModel(rt)
		defer m.finish()
		rt.Repeat(map[string]func(*rapid.T){
			"call":    m.stepCall,
			"stream":  m.stepStream,
			"health":  m.stepHealth,
			"refCall": m.stepRefCall,
			"release": m.stepRelease,
			"cancel":  m.stepCancel,
			"close":   m.stepClose,
			"grow":    m.stepGrow,
			"shrink":  m.stepShrink,
			"":        m.check,
		})
	})
}

func newModel(t *rapid.T) *model {
	w := &world{}
	size := rapid.IntRange(1, 3).Draw(t, "size")
	restarts := rapid.Bool().Draw(t, "restarts")
	policy := supervisorPolicy(time.Hour)
	if restarts {
		policy = fastRestarts
	}
	rt, err := Start(Config{Pools: []PoolConfig{{Name: "p", Size: size, Affinity: Hint, NewWorker: w.factory,
		QueueTimeout: time.Hour, Restart: &policy}}, HealthInterval: MinHealthInterval})
	if err != nil {
		t.Fatal(err)
	}
	m := &model{t: t, rt: rt, w: w, bindings: map[int]*mBinding{}, never: map[int]bool{}, restarts: restarts}
	m.syncWorkers()
	return m
}

// syncWorkers adds model workers for runtime workers it does not know yet,
// reading their incarnations (assigned in the order workers started).
func (m *model) syncWorkers() {
	p := m.rt.pools[0]
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.workers[len(m.workers):] {
		m.workers = append(m.workers, &mWorker{id: w.id, inc: w.incarnation, state: wsReady})
	}
}

func (m *model) session(i int) *Session { return m.rt.Session(fmt.Sprint("s", i)) }

func (m *model) free(w *mWorker) bool {
	return w.state == wsReady && w.running == nil && len(w.queue) == 0
}

func (m *model) active() []*mWorker {
	var out []*mWorker
	for _, w := range m.workers {
		if w.state != wsRemoved {
			out = append(out, w)
		}
	}
	return out
}

func (m *model) anyLive() bool { return len(m.active()) > 0 } // tainted workers count: they would restart

func (m *model) unbind(sess int) {
	if b := m.bindings[sess]; b != nil {
		if w := m.workers[b.worker]; w.inc == b.inc {
			w.bound--
		}
		delete(m.bindings, sess)
	}
}

func (m *model) bind(sess int, w *mWorker) {
	m.unbind(sess)
	m.bindings[sess] = &mBinding{worker: w.id, inc: w.inc}
	w.bound++
}

// predicted is what the model expects of a new call.
type predicted struct {
	err     error
	run     []*mWorker // runs at once on one of these
	queueOn int        // queued for this worker; -1 hint queue; -2 not queued
}

func (m *model) route(c *mCall) predicted {
	if ref := c.ref; ref != nil {
		w := m.workers[ref.Worker]
		switch {
		case w.state != wsReady || w.inc != ref.Incarnation:
			return predicted{err: ErrRefLost, queueOn: -2}
		case m.free(w):
			return predicted{run: []*mWorker{w}, queueOn: -2}
		case c.mode == StrictFailFast || c.stream:
			return predicted{err: ErrWorkerBusy, queueOn: -2}
		}
		return predicted{queueOn: w.id}
	}
	if b := m.bindings[c.sess]; b != nil {
		pref := m.workers[b.worker]
		if pref.state == wsReady && pref.inc == b.inc {
			switch {
			case m.free(pref):
				return predicted{run: []*mWorker{pref}, queueOn: -2}
			case c.mode == StrictFailFast || (c.stream && c.mode == StrictQueue):
				return predicted{err: ErrWorkerBusy, queueOn: -2}
			case c.mode == StrictQueue:
				return predicted{queueOn: pref.id}
			}
			var frees []*mWorker
			for _, w := range m.active() {
				if m.free(w) {
					frees = append(frees, w)
				}
			}
			if len(frees) > 0 {
				return predicted{run: frees, queueOn: -2}
			}
			if c.stream {
				return predicted{err: ErrNoWorkersAvailable, queueOn: -2}
			}
			c.pref = pref.id
			return predicted{queueOn: -1}
		}
		if c.mode != Hint {
			return predicted{err: ErrSessionWorkerUnavailable, queueOn: -2}
		}
		m.unbind(c.sess)
	}
	// Unbound: the free worker with the fewest bound sessions, lowest id.
	var best, bestAny *mWorker
	for _, w := range m.active() {
		if w.state != wsReady {
			continue
		}
		if m.free(w) && (best == nil || w.bound < best.bound) {
			best = w
		}
		if bestAny == nil || w.bound < bestAny.bound {
			bestAny = w
		}
	}
	switch {
	case best != nil:
		return predicted{run: []*mWorker{best}, queueOn: -2}
	case c.stream || !m.anyLive():
		return predicted{err: ErrNoWorkersAvailable, queueOn: -2}
	case c.mode == StrictFailFast:
		return predicted{err: ErrWorkerBusy, queueOn: -2}
	case c.mode == StrictQueue && bestAny != nil:
		m.bind(c.sess, bestAny)
		return predicted{queueOn: bestAny.id}
	}
	// Hint, or strict_queue while no worker is ready: wait for any worker.
	c.pref, c.bindRun = -1, true
	return predicted{queueOn: -1}
}

func (m *model) launch(c *mCall) {
	c.epoch = m.epochs[c.sess]
	c.gate, c.started, c.done = make(chan struct{}), make(chan int, 1), make(chan callOutcome, 1)
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	if c.uncancellable {
		ctx = context.WithoutCancel(ctx)
	}
	m.calls = append(m.calls, c)
	o := op{ID: c.id, Block: c.gate, Started: c.started, Ref: "r", PanicIf: &c.panics}
	go func() {
		var v any
		var err error
		switch {
		case c.stream:
			err = drain(m.session(c.sess).Stream(ctx, o, WithAffinity(c.mode)))
		case c.ref != nil:
			v, err = m.rt.CallRef(ctx, *c.ref, o, WithAffinity(c.mode), onCallerOption(c.onCaller))
		default:
			v, err = m.session(c.sess).Call(ctx, o, WithAffinity(c.mode), onCallerOption(c.onCaller))
		}
		r, _ := v.(result)
		c.done <- callOutcome{res: r, err: err}
	}()
}

// expect waits for what the model predicted for a new call.
func (m *model) expect(c *mCall, p predicted) {
	t := m.t
	queuedBefore := m.queued()
	m.launch(c)
	switch {
	case p.err != nil:
		o := m.outcome(c)
		if !errors.Is(o.err, p.err) {
			t.Fatalf("call %d (%s, session %d): got %v, want %v", c.id, c.mode, c.sess, o.err, p.err)
		}
		c.state = mDone
		m.never[c.id] = true
	case len(p.run) > 0:
		id := m.startedOn(c)
		i := slices.IndexFunc(p.run, func(w *mWorker) bool { return w.id == id })
		if i < 0 {
			t.Fatalf("call %d (%s, session %d) ran on worker %d, allowed %v", c.id, c.mode, c.sess, id, ids(p.run))
		}
		w := p.run[i]
		m.start(c, w)
		if c.ref == nil && m.bindings[c.sess] == nil {
			m.bind(c.sess, w)
		}
	default:
		m.waitQueued(queuedBefore + 1)
		c.state, c.worker = mQueued, p.queueOn
		k := ringKey{c.sess, c.epoch}
		if p.queueOn >= 0 {
			w := m.workers[p.queueOn]
			w.queue = append(w.queue, c)
			if !slices.Contains(w.ring, k) {
				w.ring = append(w.ring, k)
			}
		} else {
			m.hint = append(m.hint, c)
			m.joinHintRing(k)
		}
	}
}

// drain reads a stream to its end: nil for a clean end, else its error.
func drain(st *Stream, err error) error {
	for err == nil {
		_, err = st.Recv()
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func ids(ws []*mWorker) []int {
	var out []int
	for _, w := range ws {
		out = append(out, w.id)
	}
	return out
}

func (m *model) start(c *mCall, w *mWorker) {
	c.state, c.worker = mRunning, w.id
	w.running = c
}

func (m *model) startedOn(c *mCall) int {
	select {
	case id := <-c.started:
		return id
	case o := <-c.done:
		m.t.Fatalf("call %d should have started, returned %v", c.id, o.err)
	case <-time.After(5 * time.Second):
		m.t.Fatalf("call %d never started", c.id)
	}
	return -1
}

func (m *model) outcome(c *mCall) callOutcome {
	select {
	case o := <-c.done:
		return o
	case id := <-c.started:
		m.t.Fatalf("call %d should not run, started on worker %d", c.id, id)
	case <-time.After(5 * time.Second):
		m.t.Fatalf("call %d never returned", c.id)
	}
	return callOutcome{}
}

func (m *model) queued() int { return m.rt.Stats().Pools["p"].Queued }

func (m *model) waitQueued(n int) {
	require.Eventually(m.t, func() bool { return m.queued() == n }, 10*time.Second, 50*time.Microsecond,
		"queued should reach %d", n)
}

func (m *model) stepCall(t *rapid.T) {
	c := &mCall{id: len(m.calls) + 1, sess: rapid.IntRange(0, modelSessions-1).Draw(t, "session"),
		mode: rapid.SampledFrom(allModes).Draw(t, "mode"), worker: -1, pref: -1,
		uncancellable: rapid.Bool().Draw(t, "uncancellable")}
	c.onCaller = !c.uncancellable && rapid.Bool().Draw(t, "onCaller")
	m.expect(c, m.route(c))
}

// onCallerOption is RunOnCaller when on, else an option that changes
// nothing.
func onCallerOption(on bool) CallOption {
	if on {
		return RunOnCaller()
	}
	return CallOption{}
}

func (m *model) stepStream(t *rapid.T) {
	c := &mCall{id: len(m.calls) + 1, sess: rapid.IntRange(0, modelSessions-1).Draw(t, "session"),
		mode: rapid.SampledFrom(allModes).Draw(t, "mode"), stream: true, worker: -1, pref: -1}
	m.expect(c, m.route(c))
}

func (m *model) stepRefCall(t *rapid.T) {
	if len(m.refs) == 0 {
		t.Skip("no refs yet")
	}
	ref := rapid.SampledFrom(m.refs).Draw(t, "ref")
	var sess int
	fmt.Sscanf(ref.Session, "s%d", &sess)
	c := &mCall{id: len(m.calls) + 1, sess: sess, ref: &ref, mode: rapid.SampledFrom(allModes).Draw(t, "mode"), worker: -1, pref: -1,
		uncancellable: rapid.Bool().Draw(t, "uncancellable")}
	c.onCaller = !c.uncancellable && rapid.Bool().Draw(t, "onCaller")
	m.expect(c, m.route(c))
}

func (m *model) running() []*mCall {
	var out []*mCall
	for _, w := range m.workers {
		if w.running != nil {
			out = append(out, w.running)
		}
	}
	return out
}

// stepRelease lets a running call finish (or panic) and checks what the
// worker does next.
func (m *model) stepRelease(t *rapid.T) {
	running := m.running()
	if len(running) == 0 {
		t.Skip("nothing running")
	}
	c := rapid.SampledFrom(running).Draw(t, "call")
	w := m.workers[c.worker]
	if rapid.IntRange(0, 5).Draw(t, "panic") == 0 {
		m.crash(c, w)
		return
	}
	close(c.gate)
	o := m.outcome(c)
	if o.err != nil {
		t.Fatalf("call %d on worker %d: %v", c.id, w.id, o.err)
	}
	if !c.stream {
		if o.res.Worker != w.id || o.res.Incarnation != w.inc {
			t.Fatalf("call %d ran on %d/%d, model says %d/%d", c.id, o.res.Worker, o.res.Incarnation, w.id, w.inc)
		}
		m.refs = append(m.refs, o.res.Ref)
	}
	c.state, w.running = mDone, nil
	m.runNext(w)
}

// runNext checks that a worker that just became free takes the call the
// model says it takes next.
func (m *model) runNext(w *mWorker) {
	next := m.nextFor(w)
	if next == nil {
		m.settle()
		return
	}
	if id := m.startedOn(next); id != w.id {
		m.t.Fatalf("call %d started on worker %d, model says %d", next.id, id, w.id)
	}
	m.start(next, w)
}

// settle waits until the runtime, too, holds no slot of the workers the
// model has idle, and no hint ring entry when the model has none. A freed
// (or new) worker may reserve its slot for a session in a wait ring whose
// calls all stopped waiting; the session gives it back, asynchronously, and
// the worker passes it to the next entry until the ring is empty. Until
// then the worker is busy for the calls the model sends it next.
func (m *model) settle() {
	p := m.rt.pools[0]
	require.Eventually(m.t, func() bool {
		for _, w := range m.active() {
			if w.state == wsReady && w.running == nil && p.workerByID(w.id).inflight.Load() != 0 {
				return false
			}
		}
		return len(m.hintRing) > 0 || p.hintN.Load() == 0
	}, 5*time.Second, 50*time.Microsecond, "the runtime kept slots or ring entries the model says are gone")
}

// crash makes a running call panic: it fails with ErrWorkerFailed, its
// worker is tainted, and the calls waiting for that worker fail at once.
func (m *model) crash(c *mCall, w *mWorker) {
	t := m.t
	c.panics.Store(true)
	close(c.gate)
	if o := m.outcome(c); !errors.Is(o.err, ErrWorkerFailed) {
		t.Fatalf("panicking call %d: %v", c.id, o.err)
	}
	c.state, w.running = mDone, nil
	m.tainted(w)
}

// tainted updates the model for a worker that was just tainted: the calls
// waiting for it fail at once, and when this run restarts workers, the
// step waits for the next incarnation, which then takes a waiting call.
func (m *model) tainted(w *mWorker) {
	t := m.t
	w.state = wsRestarting
	for _, q := range w.queue {
		want := ErrSessionWorkerUnavailable
		if q.ref != nil {
			want = ErrRefLost
		}
		if o := m.outcome(q); !errors.Is(o.err, want) {
			t.Fatalf("call %d waiting for tainted worker %d: %v, want %v", q.id, w.id, o.err, want)
		}
		q.state = mDone
		m.never[q.id] = true
	}
	w.queue, w.ring = nil, nil
	if !m.restarts {
		return
	}
	p := m.rt.pools[0]
	require.Eventually(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		rw := p.workers[w.id]
		return rw.state == wsReady && rw.incarnation != w.inc
	}, 5*time.Second, 50*time.Microsecond, "worker %d never restarted", w.id)
	p.mu.Lock()
	w.inc = p.workers[w.id].incarnation
	p.mu.Unlock()
	w.state, w.bound = wsReady, 0
	m.runNext(w)
}

// stepHealth fails the health check of an idle worker's current
// incarnation.
func (m *model) stepHealth(t *rapid.T) {
	var idle []*mWorker
	for _, w := range m.active() {
		if w.state == wsReady && w.running == nil {
			idle = append(idle, w)
		}
	}
	if len(idle) == 0 {
		t.Skip("no idle worker")
	}
	w := rapid.SampledFrom(idle).Draw(t, "worker")
	before := m.rt.Stats().Pools["p"].Tainted[messages.TaintHealthCheck]
	m.w.unhealthy.Store(w.id, w.inc)
	require.Eventually(t, func() bool {
		return m.rt.Stats().Pools["p"].Tainted[messages.TaintHealthCheck] > before
	}, 5*time.Second, 50*time.Microsecond, "worker %d never failed its health check", w.id)
	m.tainted(w)
}

// nextFor is the call a freed worker takes: the sessions waiting for it,
// in turn, each giving its oldest call; then the hint ring, where a session
// bound to the worker (among the first hintScan) goes first.
func (m *model) nextFor(w *mWorker) *mCall {
	for len(w.ring) > 0 {
		k := w.ring[0]
		w.ring = w.ring[1:]
		if c := takeFirst(&w.queue, k); c != nil {
			if hasCall(w.queue, k) {
				w.ring = append(w.ring, k)
			}
			return c
		}
	}
	for len(m.hintRing) > 0 {
		i := 0
		for j, e := range m.hintRing {
			if j >= hintScan {
				break
			}
			if e.bound == w.id {
				i = j
				break
			}
		}
		k := m.hintRing[i].ringKey
		m.hintRing = slices.Delete(m.hintRing, i, i+1)
		c := takeFirst(&m.hint, k)
		if c == nil {
			continue
		}
		if c.bindRun && m.bindings[c.sess] == nil {
			m.bind(c.sess, w) // before rejoining: the ring entry records the binding
		}
		if hasCall(m.hint, k) {
			m.joinHintRing(k)
		}
		return c
	}
	return nil
}

// joinHintRing puts a session in the hint ring unless it is there.
func (m *model) joinHintRing(k ringKey) {
	for _, e := range m.hintRing {
		if e.ringKey == k {
			return
		}
	}
	bound := -1
	if b := m.bindings[k.sess]; b != nil && k.epoch == m.epochs[k.sess] {
		bound = b.worker
	}
	m.hintRing = append(m.hintRing, hintEntry{ringKey: k, bound: bound})
}

func takeFirst(q *[]*mCall, k ringKey) *mCall {
	for i, c := range *q {
		if c.sess == k.sess && c.epoch == k.epoch {
			*q = slices.Delete(*q, i, i+1)
			return c
		}
	}
	return nil
}

func hasCall(q []*mCall, k ringKey) bool {
	for _, c := range q {
		if c.sess == k.sess && c.epoch == k.epoch {
			return true
		}
	}
	return false
}

func (m *model) queuedCalls() []*mCall {
	out := append([]*mCall(nil), m.hint...)
	for _, w := range m.workers {
		out = append(out, w.queue...)
	}
	return out
}

func (m *model) dequeue(c *mCall) {
	m.hint = slices.DeleteFunc(m.hint, func(x *mCall) bool { return x == c })
	for _, w := range m.workers {
		w.queue = slices.DeleteFunc(w.queue, func(x *mCall) bool { return x == c })
	}
}

func (m *model) stepCancel(t *rapid.T) {
	queued := slices.DeleteFunc(m.queuedCalls(), func(c *mCall) bool { return c.uncancellable })
	if len(queued) == 0 {
		t.Skip("nothing queued that can be cancelled")
	}
	c := rapid.SampledFrom(queued).Draw(t, "call")
	c.cancel()
	o := m.outcome(c)
	if !errors.Is(o.err, context.Canceled) {
		t.Fatalf("cancelled call %d: %v", c.id, o.err)
	}
	m.dequeue(c)
	c.state = mDone
	m.never[c.id] = true
}

// stepClose closes a session: its waiting calls fail with ErrSessionClosed
// (running ones finish), and the next call starts a fresh session.
func (m *model) stepClose(t *rapid.T) {
	sess := rapid.IntRange(0, modelSessions-1).Draw(t, "session")
	m.session(sess).Close()
	for _, c := range m.queuedCalls() {
		if c.sess != sess || c.epoch != m.epochs[sess] {
			continue
		}
		if o := m.outcome(c); !errors.Is(o.err, ErrSessionClosed) {
			t.Fatalf("call %d waiting in closed session %d: %v", c.id, sess, o.err)
		}
		m.dequeue(c)
		c.state = mDone
		m.never[c.id] = true
	}
	m.unbind(sess)
	m.epochs[sess]++
}

func (m *model) stepGrow(t *rapid.T) {
	if len(m.hint) > 0 {
		t.Skip("new workers would race for the hint queue")
	}
	n := len(m.active()) + rapid.IntRange(1, 2).Draw(t, "add")
	if n > 5 {
		t.Skip("big enough")
	}
	if err := m.rt.Resize(context.Background(), "p", n); err != nil {
		t.Fatal(err)
	}
	// A new worker serves the hint ring at once: with no hint call left
	// waiting, it passes over every entry (sessions whose calls were
	// cancelled or closed) until the ring is empty.
	m.hintRing = nil
	m.syncWorkers()
	m.settle()
}

func (m *model) stepShrink(t *rapid.T) {
	active := m.active()
	if len(active) < 2 {
		t.Skip("a pool keeps at least one worker")
	}
	k := rapid.IntRange(1, len(active)-1).Draw(t, "remove")
	gone := active[len(active)-k:]
	for _, w := range gone {
		if w.running != nil {
			t.Skip("would wait for a running call")
		}
	}
	if err := m.rt.Resize(context.Background(), "p", len(active)-k); err != nil {
		t.Fatal(err)
	}
	for _, w := range gone {
		w.state = wsRemoved
		for _, c := range w.queue { // empty: a queue forms only behind a running call
			t.Fatalf("idle worker %d had call %d queued", w.id, c.id)
		}
	}
	if !m.anyLive() {
		for _, c := range m.hint {
			if o := m.outcome(c); !errors.Is(o.err, ErrNoWorkersAvailable) {
				t.Fatalf("hint call %d with no worker left: %v", c.id, o.err)
			}
			c.state = mDone
			m.never[c.id] = true
		}
		m.hint, m.hintRing = nil, nil
	}
}

// check compares the model's view with the runtime's after every step.
func (m *model) check(t *rapid.T) {
	if got, want := m.queued(), len(m.queuedCalls()); got != want {
		t.Fatalf("runtime has %d calls queued, model %d", got, want)
	}
	for sess := 0; sess < modelSessions; sess++ {
		w, inc, ok := m.session(sess).Binding("p")
		b := m.bindings[sess]
		if ok != (b != nil) || (ok && (w != b.worker || inc != b.inc)) {
			t.Fatalf("session %d bound to %d/%d (%v), model %+v", sess, w, inc, ok, b)
		}
	}
}

// finish opens every gate and shuts down (calls still waiting for a worker
// that would only come back after a restart get ErrShutdown), then checks
// that every call returned exactly once and that no call the model refused
// or cancelled ever ran.
func (m *model) finish() {
	for _, c := range m.calls {
		if c.state != mDone {
			close(c.gate)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.rt.Shutdown(ctx); err != nil {
		m.t.Fatal(err)
	}
	if m.t.Failed() {
		return // the first failure is the one to report
	}
	for _, c := range m.calls {
		c.cancel()
		if c.state == mDone {
			select {
			case o := <-c.done:
				m.t.Fatalf("call %d answered twice: %v", c.id, o.err)
			default:
			}
			continue
		}
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			m.t.Fatalf("call %d never returned", c.id)
		}
	}
	for _, e := range m.w.executions() {
		if m.never[e.ID] {
			m.t.Fatalf("call %d ran although it was refused or cancelled", e.ID)
		}
	}
}
