package actors

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/supervisor"
)

type workerState uint8

const (
	wsStarting   workerState = iota // actor spawned, factory not done
	wsReady                         // taking calls
	wsRestarting                    // tainted; the supervisor will restart it
	wsFailed                        // out of restarts; gone for good
	wsRemoved                       // removed by a scale-down
)

var workerStateNames = [...]string{"starting", "ready", "restarting", "failed", "removed"}

func (s workerState) String() string {
	if int(s) < len(workerStateNames) {
		return workerStateNames[s]
	}
	return "unknown"
}

// worker is the stable slot of one worker id in a pool. Its actor instance
// (workerActor) changes with every incarnation; this struct does not.
type worker struct {
	pool    *pool
	id      int
	started chan error    // first start's outcome, written once
	stopped chan struct{} // closed when the actor has stopped for good
	mailbox *mailbox
	// runsOnCallers: a blocking caller may run its call's turn itself
	// (see PoolConfig.OwnGoroutineOnly).
	runsOnCallers bool

	// Guarded by pool.mu.
	pid         *actor.PID
	state       workerState
	incarnation uint64
	starts      uint64   // incarnations begun, numbered from 1 per worker
	inflight    int      // claimed calls not yet finished, plus reserved slots
	bound       int      // sessions bound to the current incarnation
	waiters     waitRing // sessions with calls waiting for this worker
	lastTaint   string   // why its last incarnation was tainted; "" if never

	calls atomic.Uint64 // calls run, every incarnation

	// Guarded by rmu (taken after pool.mu when both are held).
	rmu     sync.Mutex
	running envList // claimed calls not yet finished
	gone    bool    // workerStopped has answered the calls it held
}

// pool is one named pool: its workers, its wait rings and its counters.
// All scheduling state is guarded by mu; critical sections are a few field
// updates, never user code or channel operations.
type pool struct {
	rt      *Runtime
	cfg     PoolConfig
	index   int
	stats   poolStats
	timings poolTimings

	strategy   *supervisor.Strategy
	sup        *actor.PID
	supStopped chan struct{}

	mu       sync.Mutex
	workers  []*worker // by id; ids are never reused
	active   []*worker // not removed and not failed, by id
	hintRing waitRing  // sessions with hint calls waiting for any worker
	inflight int
	rr       int // rotates the scan start so detours spread
	closed   bool
	drained  chan struct{} // closed once closed and inflight == 0

	queued atomic.Int64 // calls waiting in session actors for this pool

	// Waiting calls by deadline (see startTimeout), and their timer. A
	// lock of their own keeps them off the pool lock's hot path.
	dlMu           sync.Mutex
	dlHead, dlTail *envelope
	dlTimer        *time.Timer
	dlStopped      bool
}

func newPool(rt *Runtime, index int, cfg PoolConfig) *pool {
	return &pool{rt: rt, cfg: cfg, index: index, supStopped: make(chan struct{}), drained: make(chan struct{})}
}

// workerByID returns the worker with that id, or nil. Caller holds mu.
func (p *pool) workerByID(id int) *worker {
	if id < 0 || id >= len(p.workers) {
		return nil
	}
	return p.workers[id]
}

// hasRoom: ready, below capacity, and no session waiting for it (they go
// first). Caller holds mu.
func (p *pool) hasRoom(w *worker) bool {
	return w.state == wsReady && w.inflight < p.cfg.Capacity && w.waiters.n == 0
}

// claim gives a new call a slot on w; false when its caller gave up first.
// Caller holds mu.
func (p *pool) claim(env *envelope, w *worker) bool {
	if !env.state.CompareAndSwap(envNew, envClaimed) {
		return false
	}
	w.inflight++
	p.inflight++
	env.call.Worker, env.call.Incarnation = w.id, w.incarnation
	w.rmu.Lock()
	w.running.push(env)
	w.rmu.Unlock()
	return true
}

// claimReserved gives a waiting call the slot g reserved. It does not take
// the pool lock: it races only with the call's caller giving up (a CAS
// decides) and with the worker stopping (rmu decides). It returns false
// when the call is not to be delivered: env stopped waiting, or the worker
// is gone (then env is back to new, to be routed again).
func (p *pool) claimReserved(env *envelope, g *grant) bool {
	if !env.state.CompareAndSwap(envWaiting, envClaimed) {
		return false
	}
	p.stopTimeout(env)
	p.queued.Add(-1)
	w := g.w
	env.call.Worker, env.call.Incarnation = w.id, g.inc
	w.rmu.Lock()
	gone := w.gone
	if !gone {
		w.running.push(env)
	}
	w.rmu.Unlock()
	if gone {
		env.state.Store(envNew)
	}
	return !gone
}

// ring returns the wait ring of target: a worker id, or -1 for the hint
// ring. Caller holds mu.
func (p *pool) ring(target int) *waitRing {
	if target < 0 {
		return &p.hintRing
	}
	return &p.workers[target].waiters
}

// freeWorker returns a ready worker with room, least loaded first, scanning
// from a rotating start. Caller holds mu.
func (p *pool) freeWorker() *worker {
	var best *worker
	n := len(p.active)
	p.rr++
	for i := 0; i < n; i++ {
		w := p.active[(p.rr+i)%n]
		if p.hasRoom(w) && (best == nil || w.inflight < best.inflight) {
			best = w
			if w.inflight == 0 {
				break
			}
		}
	}
	return best
}

// bindCandidate returns the ready worker with the fewest bound sessions,
// among those with room when needRoom. Caller holds mu.
func (p *pool) bindCandidate(needRoom bool) *worker {
	var best *worker
	for _, w := range p.active {
		if w.state != wsReady || (needRoom && !p.hasRoom(w)) {
			continue
		}
		if best == nil || w.bound < best.bound || (w.bound == best.bound && w.inflight < best.inflight) {
			best = w
		}
	}
	return best
}

// anyLive reports whether some worker is ready or on its way back.
func (p *pool) anyLive() bool {
	for _, w := range p.active {
		if w.state == wsReady || w.state == wsStarting || w.state == wsRestarting {
			return true
		}
	}
	return false
}

// binding is a session's preferred worker in one pool. inc == 0: unbound.
type binding struct {
	worker int32
	inc    uint64
	lease  uint64 // in a cluster: the session's lease here in this pool; 0 none
}

// bind points b at w's current incarnation. Caller holds mu.
func (p *pool) bind(b *binding, w *worker) {
	p.unbind(b)
	b.worker, b.inc = int32(w.id), w.incarnation
	w.bound++
	p.stats.bindings.Add(1)
}

// unbind clears b, keeping the bound-session counts right. Caller holds mu.
func (p *pool) unbind(b *binding) {
	if b.inc == 0 {
		return
	}
	if w := p.workerByID(int(b.worker)); w != nil && w.incarnation == b.inc && w.bound > 0 {
		w.bound--
	}
	b.inc = 0
}

// unbindForRelease clears a closed session's binding and returns the PID
// of the worker to tell, or nil when that incarnation is not serving.
func (p *pool) unbindForRelease(b *binding) *actor.PID {
	if b.inc == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.workerByID(int(b.worker))
	if w == nil || w.incarnation != b.inc {
		return nil
	}
	p.unbind(b)
	if w.state != wsReady {
		return nil
	}
	return w.pid
}

// grant is a worker slot reserved for a session that waits for it: the
// session uses it for its oldest call waiting there, or gives it back.
type grant struct {
	pool    *pool
	w       *worker
	inc     uint64
	rec     *sessionRec
	anyCall bool // from the hint ring: for a call waiting for any worker
}

// hintScan is how far into the hint ring a freed worker looks for a
// session bound to it.
const hintScan = 16

// nextGrant reserves w's free slot for the next waiting session: first the
// sessions waiting for w itself, in turn, then the hint ring, where a
// session bound to w (among the first hintScan) goes before older ones, so
// that under load hint calls still mostly find their state. Caller holds
// mu.
func (p *pool) nextGrant(w *worker) *grant {
	if p.closed || w.state != wsReady || w.inflight >= p.cfg.Capacity {
		return nil
	}
	g := grants.Get().(*grant)
	g.pool, g.w, g.inc = p, w, w.incarnation
	if e, ok := w.waiters.pop(); ok {
		g.rec = e.rec
	} else if e, ok := p.hintRing.take(int32(w.id), hintScan); ok {
		g.rec, g.anyCall = e.rec, true
	} else {
		g.free()
		return nil
	}
	w.inflight++
	p.inflight++
	return g
}

var grants = sync.Pool{New: func() any { return new(grant) }}

// free recycles a grant once it was used or given back.
func (g *grant) free() {
	*g = grant{}
	grants.Put(g)
}

// giveBack returns an unused reservation; the slot goes to the next
// waiting session, if any.
func (g *grant) giveBack() {
	p, w := g.pool, g.w
	g.free()
	p.mu.Lock()
	w.inflight--
	p.inflight--
	next := p.nextGrant(w)
	drained := p.closed && p.inflight == 0
	p.mu.Unlock()
	if next != nil {
		next.rec.post(next)
	}
	if drained {
		p.markDrained()
	}
}

// release frees env's slot on w and reserves it for the next waiting
// session, if any; the caller posts the returned grant.
func (p *pool) release(w *worker, env *envelope) *grant {
	w.rmu.Lock()
	w.running.remove(env)
	w.rmu.Unlock()
	p.mu.Lock()
	w.inflight--
	p.inflight--
	g := p.nextGrant(w)
	drained := p.closed && p.inflight == 0
	p.mu.Unlock()
	if drained {
		p.markDrained()
	}
	return g
}

// grantsFor reserves every free slot of a worker that just became ready.
func (p *pool) grantsFor(w *worker) []*grant {
	var gs []*grant
	p.mu.Lock()
	for g := p.nextGrant(w); g != nil; g = p.nextGrant(w) {
		gs = append(gs, g)
	}
	p.mu.Unlock()
	return gs
}

func postGrants(gs []*grant) {
	for _, g := range gs {
		g.rec.post(g)
	}
}

func (p *pool) markDrained() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.drained:
	default:
		close(p.drained)
	}
}

// Queue timeouts. Calls waiting with the pool's own timeout expire in the
// order they started waiting, so one list ordered by deadline and one timer
// per pool serve them all, without a timer (or an allocation) per call. A
// request of the message API with a shorter timeout of its own gets a timer.

// startTimeout starts env's queue timeout.
func (p *pool) startTimeout(env *envelope) {
	d := env.queueTimeout()
	p.dlMu.Lock()
	defer p.dlMu.Unlock()
	if d < p.cfg.QueueTimeout {
		env.timer = time.AfterFunc(d, func() { p.expireOne(env) })
		return
	}
	env.deadline = p.rt.now() + d
	env.tprev, env.tnext = p.dlTail, nil
	if p.dlTail != nil {
		p.dlTail.tnext = env
	} else {
		p.dlHead = env
		p.armTimeouts(d)
	}
	p.dlTail = env
}

// stopTimeout ends env's queue timeout: it stopped waiting.
func (p *pool) stopTimeout(env *envelope) {
	p.dlMu.Lock()
	defer p.dlMu.Unlock()
	p.unlinkTimeout(env)
}

// unlinkTimeout is stopTimeout for a holder of dlMu.
func (p *pool) unlinkTimeout(env *envelope) {
	if env.timer != nil {
		env.timer.Stop()
		env.timer = nil
		return
	}
	if env.deadline == 0 {
		return
	}
	if env.tprev != nil {
		env.tprev.tnext = env.tnext
	} else {
		p.dlHead = env.tnext
	}
	if env.tnext != nil {
		env.tnext.tprev = env.tprev
	} else {
		p.dlTail = env.tprev
	}
	env.tprev, env.tnext, env.deadline = nil, nil, 0
}

// armTimeouts sets the pool's timer. Caller holds dlMu.
func (p *pool) armTimeouts(d time.Duration) {
	if p.dlTimer == nil {
		p.dlTimer = time.AfterFunc(d, p.expireDue)
		return
	}
	p.dlTimer.Reset(d)
}

// expireDue ends the waiting calls whose deadline passed and re-arms the
// timer for the next one.
func (p *pool) expireDue() {
	var due []*envelope
	p.dlMu.Lock()
	now := p.rt.now()
	for e := p.dlHead; e != nil && e.deadline <= now; e = p.dlHead {
		p.unlinkTimeout(e)
		if e.state.CompareAndSwap(envWaiting, envDone) {
			p.queued.Add(-1)
			e.lingering = true
			due = append(due, e)
		}
	}
	if e := p.dlHead; e != nil && !p.dlStopped {
		p.armTimeouts(e.deadline - now)
	}
	p.dlMu.Unlock()
	for _, e := range due {
		p.timedOut(e)
	}
}

// expireOne ends a waiting call whose own timer fired.
func (p *pool) expireOne(env *envelope) {
	p.dlMu.Lock()
	won := env.state.CompareAndSwap(envWaiting, envDone)
	if won {
		env.timer = nil
		env.lingering = true
	}
	p.dlMu.Unlock()
	if won {
		p.queued.Add(-1)
		p.timedOut(env)
	}
}

func (p *pool) timedOut(env *envelope) {
	p.stats.queueTimeouts.Add(1)
	env.finish(nil, env.fail(ErrQueueTimeout, "waited "+env.queueTimeout().String()))
}

// abandon takes back a call whose caller gave up, unless it is already
// running (or answered): a call that stopped waiting never runs.
func (p *pool) abandon(env *envelope) bool {
	for {
		switch st := env.state.Load(); st {
		case envNew, envClaimed:
			if env.state.CompareAndSwap(st, envAbandoned) {
				return true
			}
		case envWaiting:
			if env.state.CompareAndSwap(envWaiting, envAbandoned) {
				p.queued.Add(-1)
				p.stopTimeout(env)
				return true
			}
		default:
			return false
		}
	}
}

// lostWorkerErr is what a call bound to a worker that went away gets.
func lostWorkerErr(e *envelope) error {
	if e.ref != nil {
		return ErrRefLost
	}
	return ErrSessionWorkerUnavailable
}

// setActive rebuilds the active list. Caller holds mu.
func (p *pool) setActive() {
	p.active = p.active[:0]
	for _, w := range p.workers {
		if w.state != wsRemoved && w.state != wsFailed {
			p.active = append(p.active, w)
		}
	}
}

// notices are messages to session actors, sent after the pool lock is
// released.
type notices []func()

func (n notices) send() {
	for _, f := range n {
		f()
	}
}

// takeOutOfService moves w to state and tells the sessions waiting for it
// (and, when no worker is left, those waiting for any worker) that those
// calls fail. Caller holds mu and sends the notices after unlocking.
func (p *pool) takeOutOfService(w *worker, state workerState) notices {
	w.state = state
	var out notices
	inc := w.incarnation
	for e, ok := w.waiters.pop(); ok; e, ok = w.waiters.pop() {
		rec := e.rec
		out = append(out, func() {
			rec.post(&dropWaiting{pool: p, target: w.id, inc: inc, err: nil})
		})
	}
	if state == wsRemoved || state == wsFailed {
		p.setActive()
	}
	if !p.anyLive() {
		for e, ok := p.hintRing.pop(); ok; e, ok = p.hintRing.pop() {
			rec := e.rec
			out = append(out, func() {
				rec.post(&dropWaiting{pool: p, target: -1, err: ErrNoWorkersAvailable})
			})
		}
	}
	return out
}

// ringEntry is a session in a wait ring, with the worker it was bound to
// when it joined (-1: none).
type ringEntry struct {
	rec   *sessionRec
	bound int32
}

// waitRing is a FIFO of sessions waiting for a worker. Serving the head and
// putting it back at the tail while it still has calls waiting is what
// serves sessions in turn.
type waitRing struct{ ring[ringEntry] }

// pop takes the head; an emptied ring gives its buffer back, so an idle
// worker keeps none.
func (r *waitRing) pop() (ringEntry, bool) {
	e, ok := r.ring.pop()
	if ok && r.n == 0 {
		r.buf, r.head = nil, 0
	}
	return e, ok
}

// take removes and returns the first entry bound to worker among the first
// scan entries, else the head.
func (r *waitRing) take(worker int32, scan int) (ringEntry, bool) {
	for i := 0; i < r.n && i < scan; i++ {
		if r.at(i).bound == worker {
			e := r.removeAt(i)
			if r.n == 0 {
				r.buf, r.head = nil, 0
			}
			return e, true
		}
	}
	return r.pop()
}

// queueTimeout is how long a call may wait: the pool's queue timeout, or
// the request's own when shorter.
func (e *envelope) queueTimeout() time.Duration {
	d := e.pool.cfg.QueueTimeout
	if e.timeout > 0 && e.timeout < d {
		d = e.timeout
	}
	return d
}

func (e *envelope) isStream() bool { return e.stream != nil || e.astream != nil }
