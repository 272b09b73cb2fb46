package actors

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/affinity-go/affinity/internal/zlog"
	"github.com/affinity-go/affinity/messages"
)

// Runtime holds the actor system, the pools and the sessions. Create it with
// Start; every method is safe for concurrent use.
type Runtime struct {
	cfg         Config
	log         zerolog.Logger
	system      *actor.ActorSystem
	member      *member // nil unless Config.Cluster is set
	pools       []*pool
	byName      map[string]*pool
	defaultPool *pool
	sessions    sessionTable
	wantEvents  bool
	watchMu     sync.Mutex
	watchers    atomic.Pointer[[]*watcher] // WatchWorkers; copied on change

	// ctx is cancelled by Shutdown; factories, health checks and session
	// releases run under it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     group // every goroutine the runtime starts

	ownersMu     sync.Mutex
	ownersClosed bool
	byOwner      map[<-chan struct{}]*sessionRec // Runtime.Call's auto-sessions, by owner's Done

	closed       atomic.Bool
	shutdownOnce sync.Once
	shutdownDone chan struct{}
	shutdownErr  error

	started         time.Time    // for now(): monotonic time since Start
	clock           atomic.Int64 // coarse unix nanoseconds, ticked by expiryLoop
	autoSeq         atomic.Uint64
	sessionsCreated atomic.Uint64
	sessionActors   atomic.Int64 // live (activated) session actors
	cleanups        [messages.CleanupSourceCount]atomic.Uint64
}

// Start validates cfg, starts the actor system and every pool's workers, and
// returns once all workers are ready. A factory error fails Start.
func Start(cfg Config) (*Runtime, error) {
	cfg, err := cfg.validated()
	if err != nil {
		return nil, err
	}
	rt := &Runtime{
		cfg:          cfg,
		log:          zerolog.Nop(),
		byName:       make(map[string]*pool, len(cfg.Pools)),
		byOwner:      make(map[<-chan struct{}]*sessionRec),
		wantEvents:   cfg.OnEvent != nil || cfg.PublishEvents,
		shutdownDone: make(chan struct{}),
	}
	if cfg.Logger != nil {
		rt.log = *cfg.Logger
	}
	rt.ctx, rt.cancel = context.WithCancel(context.Background())
	rt.started = time.Now()
	rt.clock.Store(rt.started.UnixNano())
	rt.sessions.init()
	logger := zlog.New(rt.log.With().Str("component", "protoactor").Logger())
	rt.system = actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger }),
		// Dead letters (a health check racing a worker's stop, say) start a
		// throttle goroutine that lives one interval; keep it short so none
		// outlives Shutdown by long.
		actor.WithDeadLetterThrottleInterval(50*time.Millisecond),
	)

	rt.system.ProcessRegistry.RegisterAddressResolver(rt.resolveSession)

	for i, pc := range cfg.Pools {
		p := newPool(rt, i, pc)
		rt.pools = append(rt.pools, p)
		rt.byName[pc.Name] = p
	}
	rt.defaultPool = rt.byName[cfg.DefaultPool]

	var startErrs []error
	for _, p := range rt.pools {
		if err := p.start(); err != nil {
			startErrs = append(startErrs, err)
		}
	}
	if len(startErrs) > 0 {
		_ = rt.Shutdown(context.Background())
		return nil, errors.Join(startErrs...)
	}

	if cfg.Cluster != nil {
		if err := rt.startMember(*cfg.Cluster); err != nil {
			_ = rt.Shutdown(context.Background())
			return nil, err
		}
	}

	rt.wg.Add(2)
	go rt.healthLoop()
	go rt.expiryLoop()
	rt.log.Info().Int("pools", len(rt.pools)).Msg("affinity runtime started")
	return rt, nil
}

// now is the monotonic time since Start; never 0 once a call can wait.
func (rt *Runtime) now() time.Duration { return time.Since(rt.started) + 1 }

// memberID is this runtime's cluster member id; "" outside a cluster.
func (rt *Runtime) memberID() string {
	if rt.member == nil {
		return ""
	}
	return rt.member.id
}

// ActorSystem exposes the underlying protoactor system, e.g. to subscribe to
// its EventStream when Config.PublishEvents is set.
func (rt *Runtime) ActorSystem() *actor.ActorSystem { return rt.system }

// Call runs req in the session carried by ctx (see AutoSession and
// ContextWithSession). Without one, it runs in the auto-session owned by
// ctx: calls made with the same ctx (or contexts derived from it that share
// its cancellation, such as context.WithValue) share one session, cleaned
// up when ctx ends. A ctx that can never end owns nothing, so such a call
// runs in a one-off session closed when it returns.
func (rt *Runtime) Call(ctx context.Context, req any, opts ...CallOption) (any, error) {
	if ctx == nil {
		return nil, fmt.Errorf("%w: nil context", ErrInvalidArgument)
	}
	if s := SessionFromContext(ctx); s != nil {
		return s.Call(ctx, req, opts...)
	}
	p, mode, err := rt.resolve(ctx, opts, nil)
	if err != nil {
		return nil, err
	}
	if r := rt.ownedSession(ctx); r != nil {
		return rt.call(ctx, func() *sessionRec { return r.successor() }, p, mode, nil, req, onCaller(opts))
	}
	s := rt.autoHandle()
	defer s.Close()
	return rt.call(ctx, s.live, p, mode, nil, req, onCaller(opts))
}

// CallRef runs req on the worker incarnation holding ref, in ref's session
// and pool. It never moves: if that incarnation is gone the call fails with
// ErrRefLost. StrictFailFast (as an option) fails with ErrWorkerBusy instead
// of waiting when the worker is busy.
func (rt *Runtime) CallRef(ctx context.Context, ref messages.Ref, req any, opts ...CallOption) (any, error) {
	p, mode, err := rt.resolve(ctx, opts, &ref)
	if err != nil {
		return nil, err
	}
	id := ref.Session // a Session handle's live, without allocating the handle
	return rt.call(ctx, func() *sessionRec { return rt.record(id, false) }, p, mode, &ref, req, onCaller(opts))
}

// StreamRef is CallRef for streaming calls.
func (rt *Runtime) StreamRef(ctx context.Context, ref messages.Ref, req any, opts ...CallOption) (*Stream, error) {
	p, mode, err := rt.resolve(ctx, opts, &ref)
	if err != nil {
		return nil, err
	}
	return rt.stream(ctx, rt.Session(ref.Session).live, p, mode, &ref, req, opts)
}

// maxStaleRetries bounds how often a hint call is re-routed because its
// worker was tainted between being chosen and running the call.
const maxStaleRetries = 8

// call is the blocking API: it posts the call to the session actor and
// waits for its one outcome. onCaller: RunOnCaller.
func (rt *Runtime) call(ctx context.Context, live func() *sessionRec, p *pool, mode Affinity, ref *messages.Ref, req any, onCaller bool) (any, error) {
	env, err := rt.newCall(ctx, live, p, mode, ref, req)
	if err != nil {
		return nil, err
	}
	if !onCaller && env.ctx.Done() != nil {
		env.sess.post(env) // its caller may leave: a worker runs it
		return rt.await(env)
	}
	env.sess.postOwn(env)
	if w := env.runOn; w != nil {
		rt.runOnCaller(env, w)
	}
	return rt.await(env)
}

// runOnCaller runs env, claimed on w, on its caller's goroutine: within a
// turn of the worker actor taken here (Capacity 1), or after one that began
// it (Capacity > 1: as a runner goroutine would). A worker busy meanwhile
// gets it by message.
func (rt *Runtime) runOnCaller(env *envelope, w *worker) {
	if !w.mailbox.runHere(env) {
		rt.system.Root.Send(w.pid, env)
		return
	}
	if a := env.runner; a != nil {
		env.runner = nil
		a.run(env)
	}
}

// newCall validates a call of the blocking API and builds its envelope.
func (rt *Runtime) newCall(ctx context.Context, live func() *sessionRec, p *pool, mode Affinity, ref *messages.Ref, req any) (*envelope, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // never start what the caller already gave up on
	}
	if rt.closed.Load() {
		return nil, ErrShutdown
	}
	r := live()
	if r.id == "" {
		return nil, fmt.Errorf("%w: empty session id", ErrInvalidArgument)
	}
	env := getEnvelope()
	env.ctx, env.pool, env.mode, env.ref, env.sess = ctx, p, mode, ref, r
	env.call = messages.Call{Session: r.id, Pool: p.cfg.Name, Worker: -1, Ref: ref, Payload: req, Member: rt.memberID()}
	env.made = rt.madeAt()
	r.active.Add(1)
	return env, nil
}

// await waits for env's one outcome. If the caller gives up first, a call
// that has not started is taken back (it never runs); one that is running
// finishes unobserved.
func (rt *Runtime) await(env *envelope) (any, error) {
	var r reply
	// A call that cannot be cancelled, or is answered already (its caller
	// ran it), needs no select, which is dearer than a plain receive.
	if env.state.Load() == envDone || env.ctx.Done() == nil {
		r = <-env.replyCh
	} else {
		select {
		case r = <-env.replyCh:
		case <-env.ctx.Done():
			if env.pool.abandon(env) {
				env.sess.active.Add(-1)
			}
			env.pool.stats.cancelled.Add(1)
			return nil, env.ctx.Err()
		}
	}
	if !env.lingering {
		putEnvelope(env)
	}
	return r.val, r.err
}

// stream starts a streaming call, its window from opts (see
// WithStreamWindow).
func (rt *Runtime) stream(ctx context.Context, live func() *sessionRec, p *pool, mode Affinity, ref *messages.Ref, req any, opts []CallOption) (*Stream, error) {
	window, err := streamWindow(opts)
	if err != nil {
		return nil, err
	}
	env, err := rt.newCall(ctx, live, p, mode, ref, req)
	if err != nil {
		return nil, err
	}
	// Stream envelopes are not pooled: the stream's end is their last touch.
	pooled := env
	env = &envelope{pool: p, mode: mode, ref: ref, sess: pooled.sess, call: pooled.call, replyCh: make(chan reply, 1)}
	putEnvelope(pooled)
	sctx, cancel := context.WithCancelCause(ctx)
	st := &Stream{ctx: sctx, cancel: cancel, window: window, items: make(chan any, cmp.Or(window, streamBuffer))}
	env.ctx, env.stream = sctx, st
	env.sess.post(env)
	// Streams never wait: the session answers at once, with the worker
	// that took the stream or the refusal.
	if r := <-env.replyCh; r.err != nil {
		cancel(nil)
		return nil, r.err
	}
	return st, nil
}

// resolveMessage picks the pool and mode of a request of the message API.
func (rt *Runtime) resolveMessage(pool string, mode Affinity, ref *messages.Ref) (*pool, Affinity, error) {
	var opts [2]CallOption
	opts[0], opts[1] = WithPool(pool), WithAffinity(mode)
	return rt.resolve(context.Background(), opts[:], ref)
}

// emit hands ev to the configured subscribers. It is generic so that the
// event becomes an interface value (a heap allocation) only when someone
// listens.
func emit[E messages.Event](rt *Runtime, ev E) {
	if !rt.wantEvents {
		return
	}
	if rt.cfg.OnEvent != nil {
		rt.cfg.OnEvent(ev)
	}
	if rt.cfg.PublishEvents {
		rt.system.EventStream.Publish(ev)
	}
}

// emitWorker emits a worker's taint, restart or failure, which also goes
// to the watchers of WatchWorkers.
func emitWorker[E messages.Event](rt *Runtime, ev E) {
	emit(rt, ev)
	if ws := rt.watchers.Load(); ws != nil {
		for _, w := range *ws {
			w.fn(ev)
		}
	}
}

// watcher is one WatchWorkers callback.
type watcher struct{ fn func(messages.Event) }

// WatchWorkers calls fn with each WorkerTainted, WorkerRestarted and
// WorkerFailed event from now on, whatever Config.OnEvent and
// PublishEvents say: these events are rare, so watching them costs the
// calls nothing. fn runs on the runtime's goroutines and must return
// quickly. stop ends the watch; it is idempotent.
func (rt *Runtime) WatchWorkers(fn func(messages.Event)) (stop func()) {
	w := &watcher{fn: fn}
	rt.watchMu.Lock()
	rt.setWatchers(append(rt.currentWatchers(), w))
	rt.watchMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			rt.watchMu.Lock()
			defer rt.watchMu.Unlock()
			ws := rt.currentWatchers()
			if i := slices.Index(ws, w); i >= 0 {
				rt.setWatchers(slices.Delete(ws, i, i+1))
			}
		})
	}
}

// currentWatchers returns a copy of the watchers. Caller holds watchMu.
func (rt *Runtime) currentWatchers() []*watcher {
	if ws := rt.watchers.Load(); ws != nil {
		return slices.Clone(*ws)
	}
	return nil
}

// setWatchers publishes ws (nil when empty). Caller holds watchMu.
func (rt *Runtime) setWatchers(ws []*watcher) {
	if len(ws) == 0 {
		rt.watchers.Store(nil)
		return
	}
	rt.watchers.Store(&ws)
}

func (rt *Runtime) healthLoop() {
	defer rt.wg.Done()
	t := time.NewTicker(rt.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-rt.ctx.Done():
			return
		case <-t.C:
			for _, p := range rt.pools {
				for _, pid := range p.readyPIDs() {
					rt.system.Root.Send(pid, &messages.CheckHealth{})
				}
			}
		}
	}
}

// expiryLoop ticks the coarse clock that stamps session use, and now and
// then sweeps the sessions: idle ones expire, idle actors passivate.
func (rt *Runtime) expiryLoop() {
	defer rt.wg.Done()
	ttl, passivate := rt.cfg.SessionIdleTTL, rt.cfg.SessionPassivateAfter
	every := time.Duration(0)
	for _, d := range []time.Duration{ttl, passivate} {
		if d > 0 && (every == 0 || d < every) {
			every = d
		}
	}
	if every == 0 {
		return
	}
	// The clock ticks often; the sweep runs less often, since it walks
	// every session.
	tick := min(max(every/8, time.Millisecond), 100*time.Millisecond)
	sweepEvery := min(max(every/4, tick), time.Minute)
	t := time.NewTicker(tick)
	defer t.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-rt.ctx.Done():
			return
		case now := <-t.C:
			rt.clock.Store(now.UnixNano())
			if now.Sub(lastSweep) < sweepEvery {
				continue
			}
			lastSweep = now
			var expireBefore, passivateBefore int64
			if ttl > 0 {
				expireBefore = now.Add(-ttl).UnixNano()
			}
			if passivate > 0 {
				passivateBefore = now.Add(-passivate).UnixNano()
			}
			rt.sweepIdle(expireBefore, passivateBefore)
		}
	}
}

// Resize changes a pool's size. Growing returns once the new workers are
// ready. Shrinking removes the highest worker ids: their queued calls fail
// with ErrSessionWorkerUnavailable (ErrRefLost for ref calls), their running
// calls finish, and Resize returns once they have stopped or ctx ends.
func (rt *Runtime) Resize(ctx context.Context, poolName string, size int) error {
	if ctx == nil {
		return fmt.Errorf("%w: nil context", ErrInvalidArgument)
	}
	if size < 1 {
		return fmt.Errorf("%w: pool size %d, want >= 1 (a pool cannot scale to zero)", ErrInvalidArgument, size)
	}
	p := rt.byName[poolName]
	if p == nil {
		return fmt.Errorf("%w: %q", ErrPoolNotFound, poolName)
	}
	if rt.closed.Load() {
		return ErrShutdown
	}
	req := &resizeRequest{size: size, done: make(chan resizeResult, 1)}
	rt.system.Root.Send(p.sup, req)
	var res resizeResult
	select {
	case res = <-req.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	var errs []error
	for _, w := range res.added {
		select {
		case err := <-w.started:
			if err != nil {
				errs = append(errs, fmt.Errorf("worker %d: %w", w.id, err))
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, w := range res.removed {
		select {
		case <-w.stopped:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if res.from != res.to {
		p.stats.resizes.Add(1)
		emit(rt, messages.PoolResized{Pool: poolName, From: res.from, To: res.to})
		rt.log.Info().Str("pool", poolName).Int("from", res.from).Int("to", res.to).Msg("pool resized")
	}
	return errors.Join(errs...)
}

// Shutdown stops taking calls, fails waiting calls with ErrShutdown, lets
// running calls finish (until ctx ends), stops every actor and goroutine the
// runtime started, and returns. It is idempotent; concurrent calls all wait
// for the one shutdown, which the first caller runs.
func (rt *Runtime) Shutdown(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	first := false
	rt.shutdownOnce.Do(func() { first = true })
	if first {
		rt.shutdownErr = rt.shutdown(ctx)
		close(rt.shutdownDone)
		return rt.shutdownErr
	}
	select {
	case <-rt.shutdownDone:
		return rt.shutdownErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (rt *Runtime) shutdown(ctx context.Context) error {
	rt.closed.Store(true)
	if rt.member != nil {
		rt.member.leaving.Store(true)
		rt.member.stopReaders()
	}
	for _, p := range rt.pools {
		p.close()
	}
	rt.stopSessions()
	var errs []error
	for _, p := range rt.pools {
		select {
		case <-p.drained:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("pool %q: running calls did not finish: %w", p.cfg.Name, ctx.Err()))
		}
	}
	rt.cancel()
	for _, p := range rt.pools {
		p.strategy.Stop()
		if p.sup != nil {
			rt.system.Root.Stop(p.sup)
		}
	}
	for _, p := range rt.pools {
		if p.sup == nil {
			continue
		}
		select {
		case <-p.supStopped:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("pool %q: workers did not stop: %w", p.cfg.Name, ctx.Err()))
		}
	}
	left := rt.member != nil && rt.member.ready.Load()
	if left {
		rt.member.leave() // after the drain: replies to other members went out
	}
	if err := rt.wg.wait(ctx); err != nil {
		errs = append(errs, fmt.Errorf("runtime goroutines did not finish: %w", err))
	}
	if !left { // leaving the cluster shut the actor system down
		rt.system.Shutdown()
	}
	rt.log.Info().Msg("affinity runtime stopped")
	return errors.Join(errs...)
}

// stopSessions ends every session: live actors fail their waiting calls
// with ErrShutdown and stop; owner watches are unregistered.
func (rt *Runtime) stopSessions() {
	rt.ownersMu.Lock()
	rt.ownersClosed = true
	clear(rt.byOwner)
	rt.ownersMu.Unlock()
	var recs []*sessionRec
	for i := range rt.sessions.shards {
		sh := &rt.sessions.shards[i]
		sh.mu.Lock()
		for id, r := range sh.m {
			recs = append(recs, r)
			delete(sh.m, id)
		}
		sh.mu.Unlock()
	}
	for _, r := range recs {
		r.mu.Lock()
		a, stop := r.act, r.stopOwner
		r.stopOwner = nil
		if a == nil {
			r.markClosed()
		}
		r.mu.Unlock()
		rt.unwatchOwner(stop)
		if a != nil {
			a.proc.SendUserMessage(a.self, &closeRequest{source: messages.CleanupShutdown})
		}
	}
}
