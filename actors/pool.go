package actors

import (
	"slices"
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
	pid       *actor.PID
	starts    uint64 // incarnations begun, numbered from 1 per worker
	bound     int    // sessions bound to the current incarnation
	lastTaint string // why its last incarnation was tainted; "" if never

	calls atomic.Uint64 // calls run, every incarnation

	// mu guards what a call's routing needs to know about this worker, so
	// that a call to a free or busy worker takes this lock alone (see
	// sessionActor.routeFast); it is taken after pool.mu when both are
	// held. state and incarnation change only under both locks, so either
	// lock is enough to read them.
	mu          sync.Mutex
	state       workerState
	incarnation uint64
	waiters     waitRing // sessions with calls waiting for this worker
	running     envList  // claimed calls not yet finished
	gone        bool     // workerStopped has answered the calls it held
	// Changed under mu, read anywhere as hints for lock-free scans.
	inflight atomic.Int32 // claimed calls not yet finished, plus reserved slots
	nwait    atomic.Int32 // waiters.n
	ready    atomic.Bool  // state == wsReady
}

// setState moves w to s. Caller holds pool.mu and w.mu.
func (w *worker) setState(s workerState) {
	w.state = s
	w.ready.Store(s == wsReady)
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
	closed   bool

	// Lock-free views for routing outside mu (see routeFast).
	slots    atomic.Pointer[[]*worker] // copy of workers
	actives  atomic.Pointer[[]*worker] // copy of active
	rr       atomic.Uint32             // rotates the scan start so detours spread
	closing  atomic.Bool               // closed, readable without mu
	inflight atomic.Int64              // claimed and reserved slots (see enter)
	// hintN counts the hint ring's entries plus the routings under mu that
	// may add one: a worker that frees up takes mu to look at the ring
	// only when it is not zero.
	hintN     atomic.Int32
	drained   chan struct{} // closed once closed and inflight == 0
	drainOnce sync.Once

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

// workerByID returns the worker with that id, or nil. Safe without mu.
func (p *pool) workerByID(id int) *worker {
	ws := p.slots.Load()
	if ws == nil || id < 0 || id >= len(*ws) {
		return nil
	}
	return (*ws)[id]
}

// publish refreshes the lock-free views of workers and active. Caller
// holds mu.
func (p *pool) publish() {
	ws, as := slices.Clone(p.workers), slices.Clone(p.active)
	p.slots.Store(&ws)
	p.actives.Store(&as)
}

// hasRoom: ready, below capacity, and no session waiting for it (they go
// first). It takes no lock: a claim checks again under w.mu.
func (p *pool) hasRoom(w *worker) bool {
	return w.ready.Load() && int(w.inflight.Load()) < p.cfg.Capacity && w.nwait.Load() == 0
}

// roomLocked is hasRoom for a holder of w.mu: exact.
func (p *pool) roomLocked(w *worker) bool {
	return w.state == wsReady && int(w.inflight.Load()) < p.cfg.Capacity && w.waiters.n == 0
}

// enter counts a slot about to be claimed or reserved; false (and nothing
// counted) once the pool is closing. Counting before looking at closing,
// as close does the opposite, means a closing pool is drained only after
// every slot taken before it closed was freed.
func (p *pool) enter() bool {
	p.inflight.Add(1)
	if p.closing.Load() {
		p.leave()
		return false
	}
	return true
}

// leave frees a slot counted by enter.
func (p *pool) leave() {
	if p.inflight.Add(-1) == 0 && p.closing.Load() {
		p.markDrained()
	}
}

// claimResult is how a claim went.
type claimResult uint8

const (
	claimed claimResult = iota
	claimNoRoom
	claimGaveUp // the call's caller gave up first
	claimClosed
)

// claim gives a new call a slot on w if w (at incarnation inc; 0: any)
// has room, and returns the incarnation claimed on. It takes w.mu and no
// other lock.
func (p *pool) claim(env *envelope, w *worker, inc uint64) (claimResult, uint64) {
	if !p.enter() {
		return claimClosed, 0
	}
	w.mu.Lock()
	res, got := claimNoRoom, w.incarnation
	switch {
	case !p.roomLocked(w) || (inc != 0 && got != inc):
	case !p.claimLocked(env, w):
		res = claimGaveUp
	default:
		res = claimed
	}
	w.mu.Unlock()
	if res != claimed {
		p.leave()
	}
	return res, got
}

// claimLocked gives env a slot on w; false when its caller gave up first.
// Caller holds w.mu, checked roomLocked, and entered.
func (p *pool) claimLocked(env *envelope, w *worker) bool {
	if !env.state.CompareAndSwap(envNew, envClaimed) {
		return false
	}
	w.inflight.Add(1)
	env.call.Worker, env.call.Incarnation = w.id, w.incarnation
	w.running.push(env)
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
	w.mu.Lock()
	gone := w.gone
	if !gone {
		w.running.push(env)
	}
	w.mu.Unlock()
	if gone {
		env.state.Store(envNew)
	}
	return !gone
}

// pushWaiter puts e in target's wait ring: a worker's (caller holds its
// mu) or, for -1, the hint ring (caller holds mu).
func (p *pool) pushWaiter(target int, e ringEntry) {
	if target < 0 {
		p.hintRing.push(e)
		p.hintN.Add(1)
		return
	}
	w := p.workerByID(target)
	w.waiters.push(e)
	w.nwait.Store(int32(w.waiters.n))
}

// popWaiter takes the head of w's wait ring. Caller holds w.mu.
func (w *worker) popWaiter() (ringEntry, bool) {
	e, ok := w.waiters.pop()
	w.nwait.Store(int32(w.waiters.n))
	return e, ok
}

// freeWorker returns a worker that looks free, least loaded first, scanning
// from a rotating start. It takes no lock: the claim that follows decides.
func (p *pool) freeWorker(except *worker) *worker {
	ws := p.actives.Load()
	if ws == nil {
		return nil
	}
	var best *worker
	n := len(*ws)
	start := int(p.rr.Add(1))
	for i := 0; i < n; i++ {
		w := (*ws)[(start+i)%n]
		if w == except || !p.hasRoom(w) {
			continue
		}
		if best == nil || w.inflight.Load() < best.inflight.Load() {
			best = w
			if w.inflight.Load() == 0 {
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
		if best == nil || w.bound < best.bound || (w.bound == best.bound && w.inflight.Load() < best.inflight.Load()) {
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

// grantWaiter reserves w's free slot for the next session waiting for w
// itself, in turn. Caller holds w.mu.
func (p *pool) grantWaiter(w *worker) *grant {
	if w.waiters.n == 0 || w.state != wsReady || int(w.inflight.Load()) >= p.cfg.Capacity || !p.enter() {
		return nil
	}
	e, _ := w.popWaiter()
	w.inflight.Add(1)
	g := grants.Get().(*grant)
	g.pool, g.w, g.inc, g.rec = p, w, w.incarnation, e.rec
	return g
}

// grantHint reserves w's free slot for a session in the hint ring: one
// bound to w (among the first hintScan) before older ones, so that under
// load hint calls still mostly find their state. Caller holds mu and w.mu.
func (p *pool) grantHint(w *worker) *grant {
	if p.hintRing.n == 0 || !p.roomLocked(w) || !p.enter() {
		return nil
	}
	e, _ := p.hintRing.take(int32(w.id), hintScan)
	p.hintN.Add(-1)
	w.inflight.Add(1)
	g := grants.Get().(*grant)
	g.pool, g.w, g.inc, g.rec, g.anyCall = p, w, w.incarnation, e.rec, true
	return g
}

// nextGrant reserves w's free slot for the next waiting session: those
// waiting for w first, then the hint ring. Caller holds mu and w.mu.
func (p *pool) nextGrant(w *worker) *grant {
	if g := p.grantWaiter(w); g != nil {
		return g
	}
	return p.grantHint(w)
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
	postGrant(p.release(w, nil))
}

// release frees a slot of w (env's, when not nil: a reserved slot has no
// call) and reserves it for the next waiting session, if any; the caller
// posts the returned grant. Sessions waiting for w need only w.mu (they
// park under it). The hint ring needs mu too, taken only when hintN says it
// may hold someone: hintN is read after the in-flight count went down, and
// a routing that may park there counts itself first (see routeSlow).
func (p *pool) release(w *worker, env *envelope) *grant {
	w.mu.Lock()
	if env != nil {
		w.running.remove(env)
	}
	w.inflight.Add(-1)
	p.leave()
	g := p.grantWaiter(w)
	w.mu.Unlock()
	if g != nil || p.hintN.Load() == 0 {
		return g
	}
	p.mu.Lock()
	w.mu.Lock()
	if !p.closed {
		g = p.grantHint(w)
	}
	w.mu.Unlock()
	p.mu.Unlock()
	return g
}

// grantsFor reserves every free slot of a worker that just became ready.
func (p *pool) grantsFor(w *worker) []*grant {
	var gs []*grant
	p.mu.Lock()
	w.mu.Lock()
	for g := p.nextGrant(w); g != nil; g = p.nextGrant(w) {
		gs = append(gs, g)
	}
	w.mu.Unlock()
	p.mu.Unlock()
	return gs
}

func postGrants(gs []*grant) {
	for _, g := range gs {
		g.rec.post(g)
	}
}

func (p *pool) markDrained() {
	p.drainOnce.Do(func() { close(p.drained) })
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
	p.publish()
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
	var out notices
	w.mu.Lock()
	w.setState(state)
	inc := w.incarnation
	for e, ok := w.popWaiter(); ok; e, ok = w.popWaiter() {
		rec := e.rec
		out = append(out, func() {
			rec.post(&dropWaiting{pool: p, target: w.id, inc: inc, err: nil})
		})
	}
	w.mu.Unlock()
	if state == wsRemoved || state == wsFailed {
		p.setActive()
	}
	if !p.anyLive() {
		for e, ok := p.hintRing.pop(); ok; e, ok = p.hintRing.pop() {
			p.hintN.Add(-1)
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
