package actors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/messages"
	"github.com/affinity-go/affinity/supervisor"
)

// escalateMsg asks the worker actor to hand its taint to the supervisor.
type escalateMsg struct {
	inc   uint64
	taint *supervisor.Taint
}

// workerActor is one incarnation of a worker: protoactor builds a new one on
// every restart, and the worker struct it points to stays.
type workerActor struct {
	w     *worker
	self  *actor.PID
	impl  Worker
	inc   uint64
	born  time.Time
	async bool // Capacity > 1: calls run on goroutines the worker owns
	calls atomic.Int64
	// taint is set once, when the incarnation is tainted: everything still
	// addressed to it is then stale.
	taint atomic.Pointer[taintRecord]

	// Runner goroutines (Capacity > 1) are kept between calls: a fresh
	// goroutine per call would regrow its stack for every deep call (an
	// HTTP proxy spent a third of its CPU copying stacks).
	runq     chan *envelope // idle runners wait here
	quit     chan struct{}  // closed when this incarnation stops
	quitOnce sync.Once
	idle     atomic.Int32

	// With Capacity > 1 an incarnation may stop while calls still run on
	// it: its io.Closer is called once the last of them has returned.
	running   atomic.Int64 // calls begun and not yet returned (Capacity > 1 only)
	stopping  atomic.Bool  // this incarnation stopped or restarts
	closeOnce sync.Once

	// Streams running on this incarnation, each with the error a taint
	// interrupted it with (nil while it runs on): a stream may wait on a
	// slow consumer for as long as it likes, but not once its worker is
	// known to be lost.
	streamsMu sync.Mutex
	streams   map[*envelope]error
}

// taintRecord is why an incarnation was tainted.
type taintRecord struct{ cause error }

// dead reports whether the incarnation was tainted.
func (a *workerActor) dead() bool { return a.taint.Load() != nil }

// maxIdleRunners bounds the runner goroutines one worker keeps waiting.
const maxIdleRunners = 64

func (p *pool) workerProps(w *worker) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &workerActor{w: w, async: p.cfg.Capacity > 1, runq: make(chan *envelope), quit: make(chan struct{})}
	}, actor.WithMailbox(func() actor.Mailbox { return w.mailbox }))
}

// Receive implements actor.Actor.
func (a *workerActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *envelope:
		a.accept(m)
	case *messages.ReleaseSession:
		a.releaseSession(m)
	case *messages.CheckHealth:
		a.checkHealth()
	case *selfTaintMsg:
		a.selfTaint(m)
	case *escalateMsg:
		if m.inc == a.inc {
			if f, ok := ctx.(interface{ EscalateFailure(reason, message any) }); ok {
				f.EscalateFailure(m.taint, nil)
			} else {
				panic(m.taint) // the mailbox escalates recovered panics
			}
		}
	case *actor.Started:
		a.start(ctx)
	case *actor.Restarting, *actor.Stopping:
		a.quitOnce.Do(func() { close(a.quit) })
		a.stopping.Store(true)
		if a.running.Load() == 0 {
			a.closeOnce.Do(a.closeImpl)
		}
	case *actor.Stopped:
		a.w.pool.workerStopped(a.w)
		a.w.mailbox.stop()
	}
}

func (a *workerActor) start(ctx actor.Context) {
	w, p := a.w, a.w.pool
	a.self = ctx.Self()
	p.mu.Lock()
	w.starts++
	a.inc = w.starts
	if w.pid != a.self {
		// Set once: a restart keeps the PID, and callers read w.pid
		// without a lock once the worker is routable.
		w.pid = a.self
	}
	first := w.incarnation == 0
	p.mu.Unlock()

	impl, err := buildWorker(p, WorkerInfo{Pool: p.cfg.Name, ID: w.id, Incarnation: a.inc, Restart: !first})
	if err != nil {
		if first {
			p.mu.Lock()
			out := p.takeOutOfService(w, wsFailed)
			p.mu.Unlock()
			out.send()
			w.started <- err
			ctx.Stop(a.self)
			return
		}
		a.taintNow(messages.TaintStartFailed, err)
		return
	}
	a.impl, a.born = impl, time.Now()
	a.wireSelfTaint()

	p.mu.Lock()
	if w.state == wsRemoved || w.state == wsFailed || p.closed {
		p.mu.Unlock()
		if first {
			w.started <- ErrShutdown
		}
		// Removed (or its pool closed) before it started: nobody stopped
		// it then (it had no PID yet), so it stops itself, and Resize's
		// wait for it to stop ends.
		ctx.Stop(a.self)
		return
	}
	w.mu.Lock()
	w.incarnation = a.inc
	w.setState(wsReady)
	w.mu.Unlock()
	w.bound = 0
	p.mu.Unlock()

	if first {
		w.started <- nil
	} else {
		p.stats.restarts.Add(1)
		emitWorker(p.rt, messages.WorkerRestarted{Pool: p.cfg.Name, Worker: w.id, Incarnation: a.inc})
	}
	postGrants(p.grantsFor(w))
}

func buildWorker(p *pool, info WorkerInfo) (impl Worker, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("worker factory: %w", newPanicError(r))
		}
	}()
	impl, err = p.cfg.NewWorker(p.rt.ctx, info)
	if err == nil && impl == nil {
		err = errors.New("worker factory returned a nil Worker")
	}
	return impl, err
}

// accept runs a call delivered by a session actor, here (Capacity 1) or on
// a runner goroutine.
func (a *workerActor) accept(env *envelope) {
	if !a.begin(env) {
		return
	}
	if !a.async {
		a.run(env)
		return
	}
	// Begun here, in the actor, so a stop processed before the runner gets
	// going cannot answer the call a second time.
	if a.w.mailbox.inline == env {
		// This turn runs on env's caller, which runs env once it is over.
		// (Only this turn: a call begun and sent back to its session, say
		// for a stale incarnation, may come back in another one.)
		env.runner = a
		return
	}
	select {
	case a.runq <- env:
	default:
		a.w.pool.rt.wg.Add(1)
		go a.runner(env)
	}
}

// runner runs env, then waits for more calls of this incarnation until it
// stops or enough runners already wait.
func (a *workerActor) runner(env *envelope) {
	p := a.w.pool
	defer p.rt.wg.Done()
	for {
		a.run(env)
		if a.idle.Add(1) > maxIdleRunners {
			a.idle.Add(-1)
			return
		}
		select {
		case env = <-a.runq:
			a.idle.Add(-1)
		case <-a.quit:
			a.idle.Add(-1)
			return
		}
	}
}

// begin moves a claimed call to running. A call that must not run (its
// caller gave up, it was claimed on an earlier incarnation, its context
// ended) is settled here instead, and begin returns false.
func (a *workerActor) begin(env *envelope) bool {
	w, p := a.w, a.w.pool
	if !env.state.CompareAndSwap(envClaimed, envRunning) {
		postGrant(p.release(w, env)) // the caller gave up before it started
		return false
	}
	switch {
	case env.call.Incarnation != a.inc || a.dead():
		// Tainted or restarted since the session chose it: the session
		// decides again (a hint call moves, a strict or ref call fails).
		postGrant(p.release(w, env))
		env.retries++
		env.state.Store(envNew)
		env.sess.post(env)
		return false
	case env.ctx.Err() != nil:
		postGrant(p.release(w, env))
		env.finish(nil, env.ctx.Err())
		return false
	}
	env.ran = true
	if a.async { // with Capacity 1 calls run inside Receive: none outlives a stop
		a.running.Add(1)
	}
	return true
}

// run executes a begun call. The slot is released before the reply is
// sent, so a caller that calls again at once finds the worker free.
func (a *workerActor) run(env *envelope) {
	w, p := a.w, a.w.pool
	timed := !env.made.IsZero() // always when events are wanted (see madeAt)
	var started time.Time
	if timed {
		started = time.Now() // time.Now is not free: only timed calls pay it
	}
	val, perr, err := a.invoke(env)
	calls := a.calls.Add(1)
	w.calls.Add(1)

	switch {
	case perr != nil:
		a.taintNow(messages.TaintPanic, perr)
		failed := env.fail(ErrWorkerFailed, "")
		failed.cause = perr
		val, err = nil, failed
	case a.dead():
		// Another call (Capacity > 1) tainted this incarnation meanwhile:
		// whatever this call changed is lost with it.
		failed := env.fail(ErrWorkerFailed, "worker tainted while the call ran")
		failed.cause = a.taint.Load().cause
		val, err = nil, failed
	case err != nil && IsFatal(err):
		a.taintNow(taintReason(err, messages.TaintFatalError), err)
		failed := env.fail(ErrWorkerFailed, "")
		failed.cause = err
		val, err = nil, failed
	case (p.cfg.MaxCalls > 0 && calls >= int64(p.cfg.MaxCalls)) || (p.cfg.MaxAge > 0 && time.Since(a.born) >= p.cfg.MaxAge):
		a.taintNow(messages.TaintRecycle, nil)
	}

	p.stats.executed.Add(1)
	if err != nil {
		p.stats.execErrors.Add(1)
	}
	if timed {
		ran, wait := time.Since(started), started.Sub(env.made)
		if p.rt.cfg.RecordTimings {
			p.timings.exec.observe(ran)
			p.timings.wait.observe(wait)
		}
		emit(p.rt, messages.CallExecuted{Pool: p.cfg.Name, Session: env.call.Session, Worker: w.id,
			Incarnation: a.inc, Duration: ran, Waited: wait, Err: err})
	}
	g := p.release(w, env)
	env.finish(val, err)
	postGrant(g)
	if a.async && a.running.Add(-1) == 0 && a.stopping.Load() {
		a.closeLater() // the incarnation stopped while this call ran
	}
}

// closeLater closes the incarnation's worker on a goroutine of its own:
// run may be on a caller's goroutine (RunOnCaller), which must not wait
// for a Close.
func (a *workerActor) closeLater() {
	rt := a.w.pool.rt
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		a.closeOnce.Do(a.closeImpl)
	}()
}

func postGrant(g *grant) {
	if g != nil {
		g.rec.post(g)
	}
}

// invoke runs user code, turning a panic into a *PanicError.
func (a *workerActor) invoke(env *envelope) (val any, perr *PanicError, err error) {
	defer func() {
		if r := recover(); r != nil {
			perr = newPanicError(r)
		}
	}()
	switch {
	case env.stream != nil:
		a.trackStream(env)
		defer a.untrackStream(env, &err)
		return nil, nil, a.handleStream(env.stream.ctx, env, env.stream.send)
	case env.astream != nil:
		a.trackStream(env)
		defer a.untrackStream(env, &err)
		return nil, nil, a.handleStream(env.astream.ctx, env, env.astream.send)
	}
	val, err = a.impl.Handle(env.ctx, env.call)
	return val, nil, err
}

// trackStream registers a stream call about to run on a, for
// interruptStreams. One that starts on a worker tainted already is
// interrupted at once.
func (a *workerActor) trackStream(env *envelope) {
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	if a.streams == nil {
		a.streams = map[*envelope]error{}
	}
	a.streams[env] = nil
	if a.dead() {
		a.interruptLocked(env, nil)
	}
}

// untrackStream forgets a stream that returned; if a taint interrupted
// it, *err becomes that interruption, whatever the worker returned (it may
// have taken the failed send for a consumer that left).
func (a *workerActor) untrackStream(env *envelope, err *error) {
	a.streamsMu.Lock()
	ierr := a.streams[env]
	delete(a.streams, env)
	a.streamsMu.Unlock()
	if ierr != nil {
		*err = ierr
	}
}

// interruptStreams ends the streams running on a with ErrWorkerFailed:
// their sends fail from now on, and each stream's reader gets the error
// after the items already delivered.
func (a *workerActor) interruptStreams(cause error) {
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	for env, ierr := range a.streams {
		if ierr == nil {
			a.interruptLocked(env, cause)
		}
	}
}

func (a *workerActor) interruptLocked(env *envelope, cause error) {
	ierr := env.fail(ErrWorkerFailed, "worker tainted while the stream ran")
	ierr.cause = cause
	a.streams[env] = ierr
	switch {
	case env.stream != nil:
		env.stream.cancel(ierr)
	case env.astream != nil:
		env.astream.cancel(ierr)
	}
}

func (a *workerActor) handleStream(ctx context.Context, env *envelope, send func(any) error) error {
	sw, ok := a.impl.(StreamWorker)
	if !ok {
		return ErrStreamingUnsupported
	}
	return sw.HandleStream(ctx, env.call, send)
}

// taintNow takes this incarnation out of service: no new call reaches it,
// calls waiting for it fail now, and the supervisor is asked to restart it.
// Safe from any goroutine; only the first taint of an incarnation counts.
func (a *workerActor) taintNow(reason messages.TaintReason, cause error) {
	if !a.taint.CompareAndSwap(nil, &taintRecord{cause: cause}) {
		return
	}
	w, p := a.w, a.w.pool
	p.mu.Lock()
	var out notices
	w.lastTaint = messages.TaintText(reason, cause)
	if w.incarnation == a.inc && w.state == wsReady {
		out = p.takeOutOfService(w, wsRestarting)
	} else if w.state == wsStarting || w.state == wsReady {
		w.mu.Lock()
		w.setState(wsRestarting)
		w.mu.Unlock()
	}
	p.mu.Unlock()
	out.send()

	p.stats.tainted[reason].Add(1)
	emitWorker(p.rt, messages.WorkerTainted{Pool: p.cfg.Name, Worker: w.id, Incarnation: a.inc, Reason: reason, Err: cause})
	ev := p.rt.log.Warn().Str("pool", p.cfg.Name).Int("worker", w.id).Uint64("incarnation", a.inc).
		Str("reason", reason.String()).AnErr("cause", cause)
	var perr *PanicError
	if errors.As(cause, &perr) {
		ev = ev.Bytes("stack", perr.Stack)
	}
	ev.Msg("worker tainted")
	p.rt.system.Root.Send(a.self, &escalateMsg{inc: a.inc, taint: &supervisor.Taint{Reason: reason, Err: cause}})
	if reason != messages.TaintRecycle { // a recycled worker still finishes its streams
		a.interruptStreams(cause)
	}
}

func (a *workerActor) releaseSession(m *messages.ReleaseSession) {
	r, ok := a.impl.(SessionReleaser)
	if !ok || a.dead() {
		return
	}
	if perr := protect(func() { r.ReleaseSession(a.w.pool.rt.ctx, m.Session, m.Source) }); perr != nil {
		a.taintNow(messages.TaintPanic, fmt.Errorf("ReleaseSession: %w", perr))
	}
}

func (a *workerActor) checkHealth() {
	p := a.w.pool
	if a.impl == nil || a.dead() {
		return
	}
	if p.cfg.MaxAge > 0 && time.Since(a.born) >= p.cfg.MaxAge {
		a.taintNow(messages.TaintRecycle, nil)
		return
	}
	hc, ok := a.impl.(HealthChecker)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(p.rt.ctx, p.rt.cfg.HealthTimeout)
	defer cancel()
	var err error
	if perr := protect(func() { err = hc.CheckHealth(ctx) }); perr != nil {
		err = fmt.Errorf("CheckHealth: %w", perr)
	}
	if err != nil {
		a.taintNow(taintReason(err, messages.TaintHealthCheck), err)
	}
}

func (a *workerActor) closeImpl() {
	if c, ok := a.impl.(io.Closer); ok {
		protect(func() { _ = c.Close() })
	}
}

// protect runs f, returning its panic, if any, with the stack.
func protect(f func()) (perr *PanicError) {
	defer func() {
		if r := recover(); r != nil {
			perr = newPanicError(r)
		}
	}()
	f()
	return nil
}

// workerStopped runs when w's actor stopped for good. Calls claimed on it but
// never started (still in its mailbox, or sent after it stopped) are
// answered here: protoactor drops a stopped actor's messages.
func (p *pool) workerStopped(w *worker) {
	p.mu.Lock()
	var orphans []*envelope
	freed := 0
	w.mu.Lock()
	w.gone = true
	for e := w.running.head; e != nil; {
		next := e.next
		switch {
		case e.state.CompareAndSwap(envClaimed, envDone):
			orphans = append(orphans, e)
			fallthrough
		case e.state.Load() == envAbandoned:
			w.running.remove(e)
			w.inflight.Add(-1)
			freed++
		}
		e = next
	}
	w.mu.Unlock()
	var out notices
	if w.state != wsRemoved && w.state != wsFailed {
		out = p.takeOutOfService(w, wsRemoved)
	}
	closed := p.closed
	p.mu.Unlock()
	for range freed {
		p.leave()
	}

	for _, e := range orphans {
		if closed {
			e.finish(nil, e.fail(ErrShutdown, "worker stopped"))
		} else {
			e.finish(nil, e.fail(lostWorkerErr(e), "worker stopped before running the call"))
		}
	}
	out.send()
	close(w.stopped)
}
