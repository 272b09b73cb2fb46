package actors

import (
	"errors"
	"runtime"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/messages"
)

// sessionActor is a live session: a protoactor actor whose mailbox is where
// every call of the session has its fate decided (run, wait or fail, by the
// affinity table) and where calls wait. It holds the session's bindings and
// its waiting calls; only its own turn touches them.
type sessionActor struct {
	rec   *sessionRec
	self  *actor.PID
	proc  actor.Process
	mb    *sessionMailbox
	pools []*sessionPool // by pool index; nil until a call waits there

	streams   map[streamKey]*actorStream // running streams of the message API
	receivers map[string]watched         // receivers of throttled streams, watched, by pidKey
	croutes   []*clusterRoute            // by pool index; in a cluster only
}

// sessionPool is one session's waiting calls in one pool.
type sessionPool struct {
	waiting envList // FIFO; entries that stopped waiting are dropped lazily
	regs    []int   // the wait rings this session is in: worker ids, -1 the hint ring
}

// Messages the runtime sends to session actors.
type (
	closeRequest     struct{ source messages.CleanupSource }
	passivateRequest struct{}
	bindingQuery     struct {
		pool  *pool
		reply chan binding
	}
	// dropWaiting: the calls of this pool waiting for target (a worker
	// id, -1 for any worker, allTargets for all) must fail with err.
	dropWaiting struct {
		pool   *pool
		target int
		inc    uint64 // the worker's incarnation that went away; 0: any
		err    error
	}
	streamEnded struct {
		key     streamKey
		watched bool // a throttled stream: its receiver is watched
	}
)

const allTargets = -2

func (rt *Runtime) spawnSession(r *sessionRec) (*sessionActor, error) {
	if rt.closed.Load() {
		return nil, ErrShutdown
	}
	a := &sessionActor{rec: r, mb: &sessionMailbox{rec: r}}
	// The producer hands out the same actor on a restart: the state of a
	// session must survive a panic in its own turn.
	props := actor.PropsFromProducer(func() actor.Actor { return a },
		actor.WithMailbox(func() actor.Mailbox { return a.mb }))
	pid, err := rt.system.Root.SpawnNamed(props, "session/"+r.id+"/"+rt.system.ProcessRegistry.NextId())
	if err != nil {
		return nil, err
	}
	proc, ok := rt.system.ProcessRegistry.GetLocal(pid.Id)
	if !ok {
		return nil, ErrShutdown
	}
	a.self, a.proc = pid, proc
	rt.sessionActors.Add(1)
	return a, nil
}

// Receive implements actor.Actor.
func (a *sessionActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *envelope:
		a.route(m)
	case *grant:
		a.granted(m)
	case *messages.CallRequest:
		a.callRequest(ctx.Sender(), m)
	case *messages.StreamRequest:
		a.streamRequest(ctx, m)
	case *messages.StreamAck:
		a.ackStream(streamKey{sender: pidKey(ctx.Sender()), tag: m.Tag}, m.Items)
	case *messages.CancelStream:
		a.cancelStream(streamKey{sender: pidKey(ctx.Sender()), tag: m.Tag})
	case *streamEnded:
		a.streamEnded(ctx, m)
	case *actor.Terminated:
		a.receiverGone(m.Who)
	case *dropWaiting:
		a.dropWaiting(m)
	case *bindingQuery:
		m.reply <- a.bindingIn(m.pool)
	case *closeRequest:
		a.close(ctx, m.source)
	case *passivateRequest:
		a.passivate(ctx)
	case *actor.Stopped:
		a.rec.rt.sessionActors.Add(-1)
	default:
		a.receiveCluster(ctx)
	}
}

// receiveCluster handles the messages of a session in a cluster.
func (a *sessionActor) receiveCluster(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *inboundCall:
		a.inbound(ctx, m)
	case *streamControl:
		a.streamControlled(m)
	case *resolvedRoute:
		a.resolved(m)
	case *remoteRefused:
		a.refused(m)
	case *leaseGrant:
		a.leaseGranted(m)
	case *leaseRevoke:
		a.leaseRevoked(ctx, m)
	case *leaseQuery:
		a.leasesHeld(m)
	}
}

// bindingIn returns the session's binding in p (zero when unbound).
func (a *sessionActor) bindingIn(p *pool) binding {
	if a.rec.bindings == nil {
		return binding{}
	}
	return a.rec.bindings[p.index]
}

// bindingSlot returns the session's binding slot in p, allocating the slots
// on first use. Only the actor writes them while it is live; mu is taken
// for the allocation because a passivated record is read under it.
func (a *sessionActor) bindingSlot(p *pool) *binding {
	r := a.rec
	if r.bindings == nil {
		r.mu.Lock()
		r.bindings = make([]binding, len(r.rt.pools))
		r.mu.Unlock()
	}
	return &r.bindings[p.index]
}

func (a *sessionActor) poolState(p *pool) *sessionPool {
	if a.pools == nil {
		a.pools = make([]*sessionPool, len(a.rec.rt.pools))
	}
	if a.pools[p.index] == nil {
		a.pools[p.index] = &sessionPool{}
	}
	return a.pools[p.index]
}

// route decides a new call's fate and acts on it: deliver it to a worker,
// let it wait here, or answer it. The rows about one known worker (a bound
// session's or a ref's, free or busy) take that worker's lock alone
// (routeFast); binding, rebinding and waiting for any worker are decided
// under the pool lock (routeSlow).
func (a *sessionActor) route(env *envelope) {
	if env.state.Load() != envNew {
		return // the caller gave up before the session got to it
	}
	a.rec.lastUsed.Store(a.rec.rt.clock.Load())
	if a.rec.rt.member != nil && a.routeCluster(env) {
		return
	}
	if env.retries > 0 && env.ref == nil && env.mode == Hint {
		env.call.Worker = -1
	}
	d, ok := a.routeFast(env)
	if !ok {
		d = a.routeSlow(env)
	}
	a.afterRoute(env, d)
}

// staleErr is the outcome of a call whose worker was tainted or restarted
// between being chosen and running it: a ref or strict call cannot move (its
// state is gone), a hint call is routed again, a bounded number of times.
func staleErr(env *envelope) error {
	switch {
	case env.ref != nil:
		return ErrRefLost
	case env.mode != Hint:
		return ErrSessionWorkerUnavailable
	case env.retries > maxStaleRetries:
		return ErrNoWorkersAvailable
	}
	return nil
}

// decision is a row of the affinity table applied to one call.
type decision struct {
	run     *worker // claim a slot there and deliver
	inc     uint64  // the incarnation run was claimed on
	wait    *worker // wait for this worker
	waitAny bool    // wait for any worker
	bind    *worker // bind the session to this worker first
	outcome messages.Outcome
	err     error
}

func refuse(err error) decision { return decision{outcome: messages.OutcomeFailed, err: err} }

// errGaveUp marks a decision whose call was abandoned by its caller while
// it was being routed: nobody is waiting for an answer.
var errGaveUp = errors.New("affinity: caller gave up")

// routeFast decides, under one worker's lock, the rows of a call with a
// known worker that is still there: a ref's, or a bound session's. Free:
// run there. Busy: wait there (strict_queue, refs), fail (strict_fail_fast,
// streams that cannot move) or, for hint, detour to a worker that looks
// free. ok is false when the pool lock is needed instead: no binding yet,
// the worker is gone, a retried call, a hint call that finds no free
// worker, a closing pool.
func (a *sessionActor) routeFast(env *envelope) (d decision, ok bool) {
	p := env.pool
	id, inc := a.knownWorker(env)
	w := p.workerByID(id)
	if w == nil || env.retries > 0 || !p.enter() {
		return d, false
	}
	env.call.Worker = id // named in errors; a claim sets it again
	w.mu.Lock()
	switch {
	case w.state != wsReady || w.incarnation != inc:
		w.mu.Unlock()
		p.leave()
		return d, false
	case p.roomLocked(w):
		d = decision{run: w, inc: inc, outcome: messages.OutcomeHit}
		if !p.claimLocked(env, w) {
			d.err = errGaveUp
		}
		w.mu.Unlock()
		if d.err != nil {
			p.leave()
		}
		return d, true
	}
	failBusy, waitHere := busyRow(env)
	switch {
	case failBusy:
		d = refuse(ErrWorkerBusy)
	case waitHere:
		d = decision{wait: w, outcome: messages.OutcomeQueued}
		if err := a.park(env, id); err != nil {
			d = refuse(err)
		}
	}
	w.mu.Unlock()
	p.leave()
	if failBusy || waitHere {
		return d, true
	}
	return a.detour(env, w)
}

// knownWorker is the worker a call is tied to: its ref's, or its session's
// binding in the call's pool (-1: none).
func (a *sessionActor) knownWorker(env *envelope) (id int, inc uint64) {
	if env.ref != nil {
		return env.ref.Worker, env.ref.Incarnation
	}
	if b := a.bindingIn(env.pool); b.inc != 0 {
		return int(b.worker), b.inc
	}
	return -1, 0
}

// busyRow is the "busy" row: whether the call fails at once, or waits for
// its worker; neither means a hint detour.
func busyRow(env *envelope) (failBusy, waitHere bool) {
	pinned := env.ref != nil || env.mode == StrictQueue // cannot move
	switch {
	case env.mode == StrictFailFast || (env.isStream() && pinned):
		return true, false
	case pinned:
		return false, true
	}
	return false, false
}

// detour runs a hint call whose worker is busy on a worker that looks free;
// the binding stays. ok is false when none could be claimed.
func (a *sessionActor) detour(env *envelope, pref *worker) (decision, bool) {
	p := env.pool
	w := p.freeWorker(pref)
	if w == nil {
		return decision{}, false
	}
	switch res, inc := p.claim(env, w, 0); res {
	case claimed:
		return decision{run: w, inc: inc, outcome: messages.OutcomeDetour}, true
	case claimGaveUp:
		return decision{outcome: messages.OutcomeDetour, err: errGaveUp}, true
	}
	return decision{}, false
}

// routeSlow decides under the pool lock, deciding again when a worker's
// state changed between the decision and acting on it (other calls claim
// slots without the pool lock).
func (a *sessionActor) routeSlow(env *envelope) decision {
	p := env.pool
	b := a.bindingSlot(p)
	// The call may wait in the hint ring. Counted in hintN before looking
	// for a free worker (whose in-flight count is read without its lock), a
	// worker that frees up meanwhile is either seen free here, or sees hintN
	// and takes p.mu, so it looks at the ring only after this call parked
	// there (see release). Both sides are sequentially consistent atomics.
	p.hintN.Add(1)
	defer p.hintN.Add(-1)
	p.mu.Lock()
	defer p.mu.Unlock()
	unbound := messages.OutcomeBound
	for {
		d := a.decide(env, b, unbound)
		if d.outcome == messages.OutcomeRebind {
			unbound = messages.OutcomeRebind // kept if decided again
		}
		if d, again := a.apply(env, d); !again {
			return d
		}
	}
}

// decide picks the row of the table for env. Caller holds p.mu.
func (a *sessionActor) decide(env *envelope, b *binding, unbound messages.Outcome) decision {
	p := env.pool
	switch {
	case p.closed:
		return refuse(ErrShutdown)
	case env.retries > 0 && staleErr(env) != nil:
		return refuse(staleErr(env))
	case env.ref != nil:
		return a.routeRef(env)
	case b.inc == 0:
		return a.routeUnbound(env, b, unbound)
	}
	return a.routeBound(env, b)
}

// routeRef is the ref row: a ref never moves. Caller holds p.mu.
func (a *sessionActor) routeRef(env *envelope) decision {
	p, ref := env.pool, env.ref
	env.call.Worker = ref.Worker // named in errors; a claim overwrites it
	w := p.workerByID(ref.Worker)
	switch {
	case w == nil || w.incarnation != ref.Incarnation || w.state != wsReady:
		return refuse(ErrRefLost)
	case p.hasRoom(w):
		return decision{run: w, outcome: messages.OutcomeHit}
	case env.isStream() || env.mode == StrictFailFast:
		return refuse(ErrWorkerBusy)
	}
	return decision{wait: w, outcome: messages.OutcomeQueued}
}

// routeBound covers the rows of a bound session: its worker free, busy, or
// gone. Caller holds p.mu.
func (a *sessionActor) routeBound(env *envelope, b *binding) decision {
	p := env.pool
	env.call.Worker = int(b.worker)
	pref := p.workerByID(int(b.worker))
	if pref == nil || pref.state != wsReady || pref.incarnation != b.inc {
		return a.routeGone(env, b)
	}
	if p.hasRoom(pref) {
		return decision{run: pref, outcome: messages.OutcomeHit}
	}
	return a.routeBusy(env, pref)
}

// routeBusy is the "busy" row. Caller holds p.mu.
func (a *sessionActor) routeBusy(env *envelope, pref *worker) decision {
	p := env.pool
	switch failBusy, waitHere := busyRow(env); {
	case failBusy:
		return refuse(ErrWorkerBusy)
	case waitHere:
		return decision{wait: pref, outcome: messages.OutcomeQueued}
	}
	// Hint: detour to any free worker; the binding stays.
	if w := p.freeWorker(pref); w != nil {
		return decision{run: w, outcome: messages.OutcomeDetour}
	}
	if env.isStream() {
		return refuse(ErrNoWorkersAvailable)
	}
	return decision{waitAny: true, outcome: messages.OutcomeQueued}
}

// routeGone is the "tainted, restarting or gone" row. Caller holds p.mu.
func (a *sessionActor) routeGone(env *envelope, b *binding) decision {
	if env.mode != Hint {
		return refuse(ErrSessionWorkerUnavailable)
	}
	env.pool.unbind(b)
	env.pool.stats.rebinds.Add(1)
	env.call.Worker = -1
	return a.routeUnbound(env, b, messages.OutcomeRebind)
}

// routeUnbound is the "not bound yet" row: bind to a free worker, balancing
// bound sessions; when none is free, strict_fail_fast fails and the others
// wait. Caller holds p.mu.
func (a *sessionActor) routeUnbound(env *envelope, b *binding, outcome messages.Outcome) decision {
	p := env.pool
	if w := p.bindCandidate(true); w != nil {
		return decision{run: w, bind: w, outcome: outcome}
	}
	ready := p.bindCandidate(false)
	switch {
	case env.isStream() || !p.anyLive():
		return refuse(ErrNoWorkersAvailable)
	case env.mode == StrictFailFast:
		return refuse(ErrWorkerBusy)
	case env.mode == StrictQueue && ready != nil:
		env.call.Worker = ready.id
		return decision{wait: ready, bind: ready, outcome: outcome}
	}
	// Hint, or strict_queue while no worker is ready (restarting): the
	// session has no state to lose, so it waits for the first free worker
	// and binds there.
	env.bindOnRun = true
	return decision{waitAny: true, outcome: outcome}
}

// apply carries out a decision under p.mu. It turns into a refusal when
// the queue is full, and into nothing (outcome kept) when the caller gave
// up meanwhile. again: the worker's state changed since the decision
// (claimed by a call routed without the pool lock, or freed); decide again.
func (a *sessionActor) apply(env *envelope, d decision) (_ decision, again bool) {
	p := env.pool
	switch {
	case d.run != nil:
		res, inc := p.claim(env, d.run, 0)
		switch res {
		case claimNoRoom:
			return d, true
		case claimGaveUp:
			return decision{outcome: d.outcome, err: errGaveUp}, false
		case claimClosed:
			return refuse(ErrShutdown), false
		}
		d.inc = inc
	case d.wait != nil:
		w := d.wait
		w.mu.Lock()
		if p.roomLocked(w) {
			w.mu.Unlock()
			return d, true
		}
		err := a.park(env, w.id)
		w.mu.Unlock()
		if err != nil {
			return refuse(err), false
		}
	case d.waitAny:
		if err := a.park(env, -1); err != nil {
			return refuse(err), false
		}
	default:
		return d, false
	}
	if d.bind != nil {
		p.bind(a.bindingSlot(p), d.bind)
	}
	return d, false
}

// park makes env wait here for target (-1: any worker) and puts the session
// in that worker's wait ring (or the pool's hint ring) unless it is there
// already. Caller holds target's mu (p.mu for the hint ring).
func (a *sessionActor) park(env *envelope, target int) error {
	p := env.pool
	if int(p.queued.Load()) >= p.cfg.QueueSize {
		return ErrPoolSaturated
	}
	if !env.state.CompareAndSwap(envNew, envWaiting) {
		return errGaveUp
	}
	p.queued.Add(1)
	env.target = target
	if target >= 0 {
		w := p.workerByID(target)
		env.call.Worker, env.call.Incarnation = w.id, w.incarnation
	}
	sp := a.poolState(p)
	sp.waiting.push(env)
	a.register(p, sp, target)
	p.startTimeout(env)
	return nil
}

// register puts the session in target's wait ring once. Caller holds
// target's mu (p.mu for the hint ring).
func (a *sessionActor) register(p *pool, sp *sessionPool, target int) {
	for _, t := range sp.regs {
		if t == target {
			return
		}
	}
	sp.regs = append(sp.regs, target)
	bound := int32(-1)
	if b := a.bindingIn(p); b.inc != 0 {
		bound = b.worker
	}
	p.pushWaiter(target, ringEntry{rec: a.rec, bound: bound})
}

func (sp *sessionPool) unregister(target int) {
	for i, t := range sp.regs {
		if t == target {
			sp.regs = append(sp.regs[:i], sp.regs[i+1:]...)
			return
		}
	}
}

// afterRoute acts on a decision outside the locks.
func (a *sessionActor) afterRoute(env *envelope, d decision) {
	p := env.pool
	p.stats.dispatched[env.mode][d.outcome].Add(1)
	if p.rt.wantEvents {
		// A delivered call may be answered and recycled at once: its
		// worker and incarnation come from the decision.
		worker, inc := env.call.Worker, env.call.Incarnation
		if d.run != nil {
			worker, inc = d.run.id, d.inc
		}
		emit(p.rt, messages.CallDispatched{Pool: p.cfg.Name, Session: a.rec.id, Worker: worker,
			Incarnation: inc, Affinity: env.mode, Outcome: d.outcome, Stream: env.isStream()})
	}
	switch {
	case d.err == errGaveUp:
	case d.err != nil:
		if d.err == ErrPoolSaturated {
			p.stats.saturated.Add(1)
			emit(p.rt, messages.PoolSaturated{Pool: p.cfg.Name, Session: a.rec.id, Queued: int(p.queued.Load())})
		}
		if env.state.CompareAndSwap(envNew, envDone) {
			env.refuse(env.fail(d.err, ""))
		}
	case d.run != nil:
		a.deliver(env, d.run)
	}
}

// deliver sends a claimed call to its worker actor.
func (a *sessionActor) deliver(env *envelope, w *worker) {
	if env.stream != nil {
		env.stream.worker, env.stream.incarnation = env.call.Worker, env.call.Incarnation
		env.replyCh <- reply{} // Session.Stream returns now
	}
	if s := env.astream; s != nil {
		a.trackStream(s)
		if s.remote {
			s.start(env.call.Worker, env.call.Incarnation)
		}
	}
	if a.mb.own == env && w.runsOnCallers {
		env.runOn = w // the caller runs it as soon as this turn is over
		return
	}
	fromActor := env.replyTo != nil || env.astream != nil // env may be recycled once sent
	a.rec.rt.system.Root.Send(w.pid, env)
	if fromActor {
		// The sender is an actor, whose turn goes on after this Send rather
		// than waiting for the reply. Yielding lets the worker just made
		// runnable take this processor at once; otherwise the scheduler
		// wakes a sleeping thread for it, and that wake-up was 10 of the 12 us
		// of an actor's round trip (bench: BenchmarkActorRoundTrip). The
		// sender is not blocked: it is rescheduled behind the worker.
		runtime.Gosched()
	}
}

// granted uses a worker slot reserved for this session by a worker that
// freed up: it runs the session's oldest call waiting for that worker (or,
// for a slot from the hint ring, its oldest call waiting for any worker).
// The common case takes no pool lock: the slot is already reserved.
func (a *sessionActor) granted(g *grant) {
	p, w := g.pool, g.w
	target := w.id
	if g.anyCall {
		target = -1
	}
	sp := a.poolState(p)
	sp.unregister(target)
	var env *envelope
	for {
		env = a.nextWaiting(sp, target)
		if env == nil || p.claimReserved(env, g) {
			break
		}
		if env.state.Load() == envNew { // its worker stopped meanwhile
			g.giveBack()
			a.route(env)
			a.rejoin(p, sp, target)
			return
		}
	}
	if env == nil {
		g.giveBack()
		return
	}
	g.free()
	if env.bindOnRun && a.bindingIn(p).inc == 0 {
		p.mu.Lock()
		if b := a.bindingSlot(p); b.inc == 0 && w.incarnation == env.call.Incarnation {
			p.bind(b, w)
		}
		p.mu.Unlock()
	}
	a.rejoin(p, sp, target)
	a.deliver(env, w)
}

// rejoin puts the session back in target's ring if it still has calls
// waiting there: at the tail, so that sessions are served in turn.
func (a *sessionActor) rejoin(p *pool, sp *sessionPool, target int) {
	if !a.hasWaiting(sp, target) {
		return
	}
	mu := &p.mu // the hint ring's lock, or the worker's
	if target >= 0 {
		mu = &p.workerByID(target).mu
	}
	mu.Lock()
	if !p.closing.Load() {
		a.register(p, sp, target)
	}
	mu.Unlock()
}

// nextWaiting takes the oldest call waiting for target, dropping calls
// that stopped waiting on their own.
func (a *sessionActor) nextWaiting(sp *sessionPool, target int) *envelope {
	for e := sp.waiting.head; e != nil; {
		next := e.next
		switch {
		case e.state.Load() != envWaiting:
			sp.waiting.remove(e)
		case e.target == target:
			sp.waiting.remove(e)
			return e
		}
		e = next
	}
	return nil
}

func (a *sessionActor) hasWaiting(sp *sessionPool, target int) bool {
	for e := sp.waiting.head; e != nil; e = e.next {
		if e.target == target && e.state.Load() == envWaiting {
			return true
		}
	}
	return false
}

// dropWaiting fails the calls that wait for a worker that went away (or
// in a pool that closed).
func (a *sessionActor) dropWaiting(m *dropWaiting) {
	if a.pools == nil || a.pools[m.pool.index] == nil {
		return
	}
	sp := a.pools[m.pool.index]
	var failed []*envelope
	m.pool.mu.Lock()
	for e := sp.waiting.head; e != nil; {
		next := e.next
		if m.target == allTargets || (e.target == m.target && (m.inc == 0 || e.call.Incarnation == m.inc)) {
			sp.waiting.remove(e)
			if e.state.CompareAndSwap(envWaiting, envDone) {
				m.pool.queued.Add(-1)
				m.pool.stopTimeout(e)
				failed = append(failed, e)
			}
		}
		e = next
	}
	if m.target == allTargets {
		sp.regs = sp.regs[:0]
	} else if !a.hasWaiting(sp, m.target) {
		sp.unregister(m.target)
	}
	m.pool.mu.Unlock()
	for _, e := range failed {
		err := m.err
		if err == nil {
			err = lostWorkerErr(e)
		}
		e.finish(nil, e.fail(err, "no longer waiting"))
	}
}

// failAllWaiting answers every call still waiting here with err.
func (a *sessionActor) failAllWaiting(err error) {
	for i, sp := range a.pools {
		if sp != nil {
			a.dropWaiting(&dropWaiting{pool: a.rec.rt.pools[i], target: allTargets, err: err})
		}
	}
	for _, cr := range a.croutes {
		if cr == nil {
			continue
		}
		for _, env := range cr.waiting {
			if env.state.Load() == envNew { // not given up by its caller
				env.refuse(env.fail(err, ""))
			}
		}
		cr.waiting = nil
	}
}

// idle reports whether nothing is in progress in this session.
func (a *sessionActor) idle() bool {
	return a.rec.active.Load() == 0 && len(a.streams) == 0
}

// passivate stops an idle session actor, keeping its record (bindings and
// all); the next message activates a new one.
func (a *sessionActor) passivate(ctx actor.Context) {
	r := a.rec
	if !a.idle() {
		return
	}
	r.mu.Lock()
	if r.act != a {
		r.mu.Unlock()
		return
	}
	r.act = nil
	a.mb.detach()
	r.mu.Unlock()
	ctx.Stop(ctx.Self())
}

// close ends the session: waiting calls fail, the record leaves the table,
// bound workers are told to release the session, and the actor stops.
func (a *sessionActor) close(ctx actor.Context, source messages.CleanupSource) {
	r := a.rec
	r.mu.Lock()
	if r.closed.Load() {
		r.mu.Unlock()
		return
	}
	bindings := r.markClosed()
	r.act = nil
	a.mb.detach()
	r.mu.Unlock()
	err := ErrSessionClosed
	if source == messages.CleanupShutdown {
		err = ErrShutdown
	}
	a.failAllWaiting(err)
	a.cancelThrottled(err)
	r.rt.finishClose(r, bindings, source)
	ctx.Stop(ctx.Self())
}
