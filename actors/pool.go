package actors

import (
	"sync"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/messages"
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

// worker is the stable slot of one worker id in a pool. Its actor instance
// (workerActor) changes with every incarnation; this struct does not.
type worker struct {
	pool    *pool
	id      int
	started chan error    // first start's outcome, written once
	stopped chan struct{} // closed when the actor has stopped for good
	mailbox *mailbox

	// Guarded by pool.mu.
	pid         *actor.PID
	state       workerState
	incarnation uint64
	inflight    int     // claimed calls not yet finished
	bound       int     // sessions bound to the current incarnation
	queue       envList // strict and ref calls waiting for this worker
	running     envList // claimed calls not yet finished
}

// pool is one named pool: its workers, its queues and its counters. All
// scheduling state is guarded by mu; critical sections are a few field
// updates, never user code or channel operations.
type pool struct {
	rt    *Runtime
	cfg   PoolConfig
	index int
	stats poolStats

	strategy   *supervisor.Strategy
	sup        *actor.PID
	supStopped chan struct{}

	mu       sync.Mutex
	workers  []*worker // by id; ids are never reused
	active   []*worker // not removed and not failed, by id
	waiting  envList   // hint calls waiting for any worker
	queued   int       // waiting.n plus every worker queue
	inflight int
	nextInc  uint64
	rr       int // rotates the scan start so detours spread
	closed   bool
	drained  chan struct{} // closed once closed and inflight == 0
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

// hasRoom: ready, below capacity, and nobody queued ahead. Caller holds mu.
func (p *pool) hasRoom(w *worker) bool {
	return w.state == wsReady && w.inflight < p.cfg.Capacity && w.queue.n == 0
}

// claim gives env a slot on w. Caller holds mu.
func (p *pool) claim(env *envelope, w *worker) {
	env.call.Worker, env.call.Incarnation = w.id, w.incarnation
	w.inflight++
	p.inflight++
	w.running.push(env)
	env.state.Store(envClaimed)
}

// enqueue parks env on l, or refuses when the pool's queue is full. Caller
// holds mu.
func (p *pool) enqueue(env *envelope, l *envList) error {
	if p.queued >= p.cfg.QueueSize {
		return ErrPoolSaturated
	}
	env.state.Store(envWaiting)
	l.push(env)
	p.queued++
	return nil
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

// route decides where env goes, following the affinity table. It returns
// the worker env was claimed on (the caller delivers it), or nil with
// queued=true, or an error. Caller holds the session lock and mu.
func (p *pool) route(env *envelope, b *binding) (w *worker, outcome messages.Outcome, err error) {
	if p.closed {
		return nil, messages.OutcomeFailed, ErrShutdown
	}
	stream := env.stream != nil
	mode := env.mode

	if ref := env.ref; ref != nil {
		env.call.Worker = ref.Worker // named in errors; claim overwrites it
		w = p.workerByID(ref.Worker)
		switch {
		case w == nil || w.incarnation != ref.Incarnation || w.state != wsReady:
			return nil, messages.OutcomeFailed, ErrRefLost
		case p.hasRoom(w):
			p.claim(env, w)
			return w, messages.OutcomeHit, nil
		case stream || mode == StrictFailFast:
			return nil, messages.OutcomeFailed, ErrWorkerBusy
		}
		if err := p.enqueue(env, &w.queue); err != nil {
			return nil, messages.OutcomeFailed, err
		}
		return nil, messages.OutcomeQueued, nil
	}

	outcome = messages.OutcomeBound
	if b.inc != 0 {
		env.call.Worker = int(b.worker)
		pref := p.workerByID(int(b.worker))
		if pref != nil && pref.state == wsReady && pref.incarnation == b.inc {
			if p.hasRoom(pref) {
				p.claim(env, pref)
				return pref, messages.OutcomeHit, nil
			}
			switch {
			case mode == StrictFailFast || (stream && mode == StrictQueue):
				return nil, messages.OutcomeFailed, ErrWorkerBusy
			case mode == StrictQueue:
				if err := p.enqueue(env, &pref.queue); err != nil {
					return nil, messages.OutcomeFailed, err
				}
				return nil, messages.OutcomeQueued, nil
			}
			// Hint: detour to any free worker; the binding stays.
			if w = p.freeWorker(); w != nil {
				p.claim(env, w)
				return w, messages.OutcomeDetour, nil
			}
			if stream {
				return nil, messages.OutcomeFailed, ErrNoWorkersAvailable
			}
			if err := p.enqueue(env, &p.waiting); err != nil {
				return nil, messages.OutcomeFailed, err
			}
			return nil, messages.OutcomeQueued, nil
		}
		// Bound worker tainted, restarting, removed or restarted.
		if mode != Hint {
			return nil, messages.OutcomeFailed, ErrSessionWorkerUnavailable
		}
		p.unbind(b)
		p.stats.rebinds.Add(1)
		env.call.Worker = -1
		outcome = messages.OutcomeRebind
	}

	// Not bound (any more): bind to a free worker, balancing bound sessions.
	if w = p.bindCandidate(true); w != nil {
		p.bind(b, w)
		p.claim(env, w)
		return w, outcome, nil
	}
	ready := p.bindCandidate(false)
	switch {
	case stream || !p.anyLive() || (ready == nil && mode != Hint):
		return nil, messages.OutcomeFailed, ErrNoWorkersAvailable
	case mode == StrictFailFast:
		return nil, messages.OutcomeFailed, ErrWorkerBusy
	case mode == StrictQueue:
		env.call.Worker = ready.id
		if err := p.enqueue(env, &ready.queue); err != nil {
			return nil, messages.OutcomeFailed, err
		}
		p.bind(b, ready)
		return nil, messages.OutcomeQueued, nil
	}
	env.bindOnRun = true
	if err := p.enqueue(env, &p.waiting); err != nil {
		return nil, messages.OutcomeFailed, err
	}
	return nil, messages.OutcomeQueued, nil
}

// nextFor claims the next waiting call w should run: its own queue first,
// then the pool's hint queue. Caller holds mu.
func (p *pool) nextFor(w *worker) *envelope {
	if w.state != wsReady || w.inflight >= p.cfg.Capacity {
		return nil
	}
	e := w.queue.pop()
	if e == nil {
		e = p.takeHintWaiter(w)
	}
	if e == nil {
		return nil
	}
	p.queued--
	p.claim(e, w)
	return e
}

// hintScan is how far into the hint queue a freed worker looks for a call
// of a session bound to it.
const hintScan = 16

// takeHintWaiter picks the hint call w runs next: the oldest of the first
// hintScan waiting calls whose session is bound to w (it finds its state
// there), else the oldest waiting call. So under load, hint calls still
// mostly reach their own worker, and none waits longer than for its own
// worker to free up. Caller holds mu.
func (p *pool) takeHintWaiter(w *worker) *envelope {
	n := 0
	for e := p.waiting.head; e != nil && n < hintScan; e, n = e.next, n+1 {
		if e.call.Worker == w.id {
			p.waiting.remove(e)
			return e
		}
	}
	return p.waiting.pop()
}

// release frees env's slot on w and claims the next call for w, if any.
func (p *pool) release(w *worker, env *envelope) (next *envelope) {
	p.mu.Lock()
	w.running.remove(env)
	w.inflight--
	p.inflight--
	next = p.nextFor(w)
	drained := p.closed && p.inflight == 0
	p.mu.Unlock()
	if drained {
		p.markDrained()
	}
	return next
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

// abandon takes a waiting or claimed-but-not-started call back. It returns
// false when the call is already running (or done): it will not be undone.
func (p *pool) abandon(env *envelope) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch env.state.Load() {
	case envWaiting:
		env.list.remove(env)
		p.queued--
		env.state.Store(envAbandoned)
		return true
	case envClaimed:
		return env.state.CompareAndSwap(envClaimed, envAbandoned)
	}
	return false
}

// failWaiting answers calls taken off a queue. Each was in state waiting and
// removed under mu by the caller, so nobody else can answer it.
func failWaiting(envs []*envelope, err func(*envelope) error) {
	for _, e := range envs {
		e.finish(nil, e.fail(err(e), "no longer waiting"))
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

// takeOutOfService moves w to state and returns the calls that were waiting
// for it (and, when no worker is left, the pool's hint queue). Caller holds
// mu and answers the returned calls after unlocking.
func (p *pool) takeOutOfService(w *worker, state workerState) (own, hint []*envelope) {
	w.state = state
	own = w.queue.drain()
	p.queued -= len(own)
	if state == wsRemoved || state == wsFailed {
		p.setActive()
	}
	if !p.anyLive() {
		hint = p.waiting.drain()
		p.queued -= len(hint)
	}
	return own, hint
}
