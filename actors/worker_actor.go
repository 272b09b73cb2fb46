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

// maxInline bounds how many queued calls a worker actor runs back to back
// before yielding its mailbox, so control messages (health checks, session
// releases, stop) are not starved under sustained load.
const maxInline = 64

// errStale answers a call that reached a worker incarnation other than the
// one it was claimed on (the worker was tainted or restarted in between).
// The caller turns it into a rebind (hint) or the documented error.
var errStale = errors.New("affinity: stale worker incarnation")

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
	dead  atomic.Bool // tainted: everything still addressed to it is stale

	// Runner goroutines (Capacity > 1) are kept between calls: a fresh
	// goroutine per call would regrow its stack for every deep call (an
	// HTTP proxy spent a third of its CPU copying stacks).
	runq     chan *envelope // idle runners wait here
	quit     chan struct{}  // closed when this incarnation stops
	quitOnce sync.Once
	idle     atomic.Int32
}

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
		a.pump(ctx, m)
	case *messages.ReleaseSession:
		a.releaseSession(m)
	case *messages.CheckHealth:
		a.checkHealth()
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
		a.closeImpl()
	case *actor.Stopped:
		a.w.pool.workerStopped(a.w)
		a.w.mailbox.stop()
	}
}

func (a *workerActor) start(ctx actor.Context) {
	w, p := a.w, a.w.pool
	a.self = ctx.Self()
	p.mu.Lock()
	p.nextInc++
	a.inc = p.nextInc
	w.pid = a.self
	first := w.incarnation == 0
	p.mu.Unlock()

	impl, err := buildWorker(p, WorkerInfo{Pool: p.cfg.Name, ID: w.id, Incarnation: a.inc})
	if err != nil {
		if first {
			p.mu.Lock()
			own, hint := p.takeOutOfService(w, wsFailed)
			p.mu.Unlock()
			failWaiting(own, lostWorkerErr)
			failWaiting(hint, func(*envelope) error { return ErrNoWorkersAvailable })
			w.started <- err
			ctx.Stop(a.self)
			return
		}
		a.taintNow(messages.TaintStartFailed, err)
		return
	}
	a.impl, a.born = impl, time.Now()

	p.mu.Lock()
	if w.state == wsRemoved || w.state == wsFailed || p.closed {
		p.mu.Unlock()
		if first {
			w.started <- ErrShutdown
		}
		return
	}
	w.incarnation, w.state, w.bound = a.inc, wsReady, 0
	next := p.nextFor(w)
	p.mu.Unlock()

	if first {
		w.started <- nil
	} else {
		p.stats.restarts.Add(1)
		emit(p.rt, messages.WorkerRestarted{Pool: p.cfg.Name, Worker: w.id, Incarnation: a.inc})
	}
	a.pump(ctx, next)
}

func buildWorker(p *pool, info WorkerInfo) (impl Worker, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("worker factory panicked: %v", r)
		}
	}()
	impl, err = p.cfg.NewWorker(p.rt.ctx, info)
	if err == nil && impl == nil {
		err = errors.New("worker factory returned a nil Worker")
	}
	return impl, err
}

// pump runs env and then whatever the worker claims next.
func (a *workerActor) pump(ctx actor.Context, env *envelope) {
	p := a.w.pool
	for n := 0; env != nil; n++ {
		if !a.async && n == maxInline {
			ctx.Send(a.self, env)
			return
		}
		if ok, next := a.begin(env); !ok {
			env = next
			continue
		}
		if !a.async {
			env = a.run(env)
			continue
		}
		// Begun here, in the actor, so a stop processed before the
		// runner gets going cannot answer the call a second time.
		select {
		case a.runq <- env:
		default:
			p.rt.wg.Add(1)
			go a.runner(env)
		}
		p.mu.Lock()
		env = p.nextFor(a.w)
		p.mu.Unlock()
	}
}

// runner runs env, then waits for more calls of this incarnation until it
// stops or enough runners already wait.
func (a *workerActor) runner(env *envelope) {
	p := a.w.pool
	defer p.rt.wg.Done()
	for {
		if next := a.run(env); next != nil {
			p.rt.system.Root.Send(a.self, next)
		}
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

// begin moves a claimed call to running. When the call must not run (its
// caller gave up, it was claimed on an earlier incarnation, its context
// ended) it is answered here, and begin returns false with the next call
// claimed for this worker.
func (a *workerActor) begin(env *envelope) (ok bool, next *envelope) {
	w, p := a.w, a.w.pool
	if !env.state.CompareAndSwap(envClaimed, envRunning) {
		return false, p.release(w, env) // the caller gave up before it started
	}
	var err error
	switch {
	case env.call.Incarnation != a.inc || a.dead.Load():
		err = errStale
	case env.ctx.Err() != nil:
		err = env.ctx.Err()
	default:
		return true, nil
	}
	next = p.release(w, env)
	env.finish(nil, err)
	return false, next
}

// run executes a begun call and returns the next call claimed for this
// worker. The slot is released before the reply is sent, so a caller that
// calls again at once finds the worker free.
func (a *workerActor) run(env *envelope) *envelope {
	w, p := a.w, a.w.pool
	if env.bindOnRun {
		env.sess.bindAfterWait(p, w, a.inc)
	}

	var started time.Time
	if p.rt.wantEvents {
		started = time.Now() // only events carry durations; time.Now is not free
	}
	val, panicVal, err := a.invoke(env)
	calls := a.calls.Add(1)

	switch {
	case panicVal != nil:
		a.taintNow(messages.TaintPanic, fmt.Errorf("panic: %v", panicVal))
		val, err = nil, env.fail(ErrWorkerFailed, fmt.Sprintf("panic: %v", panicVal))
	case a.dead.Load():
		// Another call (Capacity > 1) tainted this incarnation meanwhile:
		// whatever this call changed is lost with it.
		val, err = nil, env.fail(ErrWorkerFailed, "worker tainted while the call ran")
	case err != nil && IsFatal(err):
		a.taintNow(messages.TaintFatalError, err)
		failed := env.fail(ErrWorkerFailed, "fatal error")
		failed.cause = err
		val, err = nil, failed
	case (p.cfg.MaxCalls > 0 && calls >= int64(p.cfg.MaxCalls)) || (p.cfg.MaxAge > 0 && time.Since(a.born) >= p.cfg.MaxAge):
		a.taintNow(messages.TaintRecycle, nil)
	}

	p.stats.executed.Add(1)
	if err != nil {
		p.stats.execErrors.Add(1)
	}
	if p.rt.wantEvents {
		emit(p.rt, messages.CallExecuted{Pool: p.cfg.Name, Session: env.call.Session, Worker: w.id,
			Incarnation: a.inc, Duration: time.Since(started), Err: err})
	}
	next := p.release(w, env)
	env.finish(val, err)
	return next
}

// invoke runs user code, turning a panic into a value.
func (a *workerActor) invoke(env *envelope) (val, panicVal any, err error) {
	defer func() {
		if r := recover(); r != nil {
			panicVal = r
		}
	}()
	if env.stream != nil {
		sw, ok := a.impl.(StreamWorker)
		if !ok {
			return nil, nil, ErrStreamingUnsupported
		}
		return nil, nil, sw.HandleStream(env.stream.ctx, env.call, env.stream.send)
	}
	val, err = a.impl.Handle(env.ctx, env.call)
	return val, nil, err
}

// taintNow takes this incarnation out of service: no new call reaches it,
// calls waiting for it fail now, and the supervisor is asked to restart it.
// Safe from any goroutine; only the first taint of an incarnation counts.
func (a *workerActor) taintNow(reason messages.TaintReason, cause error) {
	if !a.dead.CompareAndSwap(false, true) {
		return
	}
	w, p := a.w, a.w.pool
	p.mu.Lock()
	var own []*envelope
	if w.incarnation == a.inc && w.state == wsReady {
		own, _ = p.takeOutOfService(w, wsRestarting)
	} else if w.state == wsStarting || w.state == wsReady {
		w.state = wsRestarting
	}
	p.mu.Unlock()
	failWaiting(own, lostWorkerErr)

	p.stats.tainted[reason].Add(1)
	emit(p.rt, messages.WorkerTainted{Pool: p.cfg.Name, Worker: w.id, Incarnation: a.inc, Reason: reason, Err: cause})
	p.rt.log.Warn().Str("pool", p.cfg.Name).Int("worker", w.id).Uint64("incarnation", a.inc).
		Str("reason", reason.String()).AnErr("cause", cause).Msg("worker tainted")
	p.rt.system.Root.Send(a.self, &escalateMsg{inc: a.inc, taint: &supervisor.Taint{Reason: reason, Err: cause}})
}

func (a *workerActor) releaseSession(m *messages.ReleaseSession) {
	r, ok := a.impl.(SessionReleaser)
	if !ok || a.dead.Load() {
		return
	}
	if panicVal := protect(func() { r.ReleaseSession(a.w.pool.rt.ctx, m.Session, m.Source) }); panicVal != nil {
		a.taintNow(messages.TaintPanic, fmt.Errorf("panic in ReleaseSession: %v", panicVal))
	}
}

func (a *workerActor) checkHealth() {
	p := a.w.pool
	if a.impl == nil || a.dead.Load() {
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
	if panicVal := protect(func() { err = hc.CheckHealth(ctx) }); panicVal != nil {
		err = fmt.Errorf("panic in CheckHealth: %v", panicVal)
	}
	if err != nil {
		a.taintNow(messages.TaintHealthCheck, err)
	}
}

func (a *workerActor) closeImpl() {
	if c, ok := a.impl.(io.Closer); ok {
		protect(func() { _ = c.Close() })
	}
}

func protect(f func()) (panicVal any) {
	defer func() { panicVal = recover() }()
	f()
	return nil
}

// workerStopped runs when w's actor stopped for good. Calls claimed on it but
// never started (still in its mailbox, or sent after it stopped) are
// answered here: protoactor drops a stopped actor's messages.
func (p *pool) workerStopped(w *worker) {
	p.mu.Lock()
	var orphans []*envelope
	for e := w.running.head; e != nil; {
		next := e.next
		switch {
		case e.state.CompareAndSwap(envClaimed, envDone):
			orphans = append(orphans, e)
			fallthrough
		case e.state.Load() == envAbandoned:
			w.running.remove(e)
			w.inflight--
			p.inflight--
		}
		e = next
	}
	var own, hint []*envelope
	if w.state != wsRemoved && w.state != wsFailed {
		own, hint = p.takeOutOfService(w, wsRemoved)
	}
	closed := p.closed
	drained := closed && p.inflight == 0
	p.mu.Unlock()

	for _, e := range orphans {
		if closed {
			e.finish(nil, e.fail(ErrShutdown, "worker stopped"))
		} else {
			e.finish(nil, e.fail(lostWorkerErr(e), "worker stopped before running the call"))
		}
	}
	failWaiting(own, lostWorkerErr)
	failWaiting(hint, func(*envelope) error { return ErrNoWorkersAvailable })
	if drained {
		p.markDrained()
	}
	close(w.stopped)
}
