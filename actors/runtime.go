package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	pools       []*pool
	byName      map[string]*pool
	defaultPool *pool
	sessions    sessionTable
	wantEvents  bool

	// ctx is cancelled by Shutdown; factories, health checks and session
	// releases run under it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the runtime starts

	ownersMu     sync.Mutex
	ownersClosed bool
	byOwner      map[<-chan struct{}]*Session // Runtime.Call's auto-sessions, by owner's Done

	closed       atomic.Bool
	shutdownOnce sync.Once
	shutdownDone chan struct{}
	shutdownErr  error

	clock           atomic.Int64 // coarse unix nanoseconds, ticked by expiryLoop
	autoSeq         atomic.Uint64
	sessionsCreated atomic.Uint64
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
		byOwner:      make(map[<-chan struct{}]*Session),
		wantEvents:   cfg.OnEvent != nil || cfg.PublishEvents,
		shutdownDone: make(chan struct{}),
	}
	if cfg.Logger != nil {
		rt.log = *cfg.Logger
	}
	rt.ctx, rt.cancel = context.WithCancel(context.Background())
	rt.clock.Store(time.Now().UnixNano())
	rt.sessions.init()
	logger := zlog.New(rt.log.With().Str("component", "protoactor").Logger())
	rt.system = actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger }),
		// Dead letters (a health check racing a worker's stop, say) start a
		// throttle goroutine that lives one interval; keep it short so none
		// outlives Shutdown by long.
		actor.WithDeadLetterThrottleInterval(50*time.Millisecond),
	)

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

	rt.wg.Add(2)
	go rt.healthLoop()
	go rt.expiryLoop()
	rt.log.Info().Int("pools", len(rt.pools)).Msg("affinity runtime started")
	return rt, nil
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
	s := SessionFromContext(ctx)
	if s == nil {
		if s = rt.ownedSession(ctx); s == nil {
			_, s = rt.AutoSession(ctx)
			defer s.Close()
		}
	}
	return s.Call(ctx, req, opts...)
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
	return rt.call(ctx, rt.session(ref.Session, false), p, mode, &ref, req)
}

// StreamRef is CallRef for streaming calls.
func (rt *Runtime) StreamRef(ctx context.Context, ref messages.Ref, req any, opts ...CallOption) (*Stream, error) {
	p, mode, err := rt.resolve(ctx, opts, &ref)
	if err != nil {
		return nil, err
	}
	return rt.stream(ctx, rt.session(ref.Session, false), p, mode, &ref, req)
}

// maxStaleRetries bounds how often a hint call is re-routed because its
// worker was tainted between being chosen and running the call.
const maxStaleRetries = 8

func (rt *Runtime) call(ctx context.Context, s *Session, p *pool, mode Affinity, ref *messages.Ref, req any) (any, error) {
	if s.id == "" {
		return nil, fmt.Errorf("%w: empty session id", ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return nil, err // never start what the caller already gave up on
	}
	s = s.current()
	s.active.Add(1)
	defer s.active.Add(-1)
	for attempt := 0; ; attempt++ {
		env := getEnvelope()
		env.ctx, env.pool, env.mode, env.ref = ctx, p, mode, ref
		env.call = messages.Call{Pool: p.cfg.Name, Worker: -1, Ref: ref, Payload: req}
		pid, queued, err := rt.dispatch(s, env)
		if err != nil {
			putEnvelope(env)
			return nil, err
		}
		if pid != nil {
			rt.system.Root.Send(pid, env)
		}
		r, reusable := rt.await(env, queued)
		worker := env.call.Worker
		if reusable {
			putEnvelope(env)
		}
		if r.err != errStale {
			return r.val, r.err
		}
		lost := &callError{pool: p.cfg.Name, session: s.id, worker: worker, detail: "worker restarted"}
		switch {
		case ref != nil:
			lost.sentinel = ErrRefLost
			return nil, lost
		case mode != Hint:
			lost.sentinel = ErrSessionWorkerUnavailable
			return nil, lost
		case attempt >= maxStaleRetries:
			lost.sentinel, lost.worker, lost.detail = ErrNoWorkersAvailable, -1, "workers keep restarting"
			return nil, lost
		}
	}
}

// dispatch takes the routing decision inside the session's lock. It returns
// the pid to deliver env to, or queued=true, or an error.
func (rt *Runtime) dispatch(s *Session, env *envelope) (pid *actor.PID, queued bool, err error) {
	if rt.closed.Load() {
		return nil, false, ErrShutdown
	}
	for {
		s.mu.Lock()
		if !s.closed.Load() {
			break
		}
		s.mu.Unlock()
		s = rt.session(s.id, s.auto) // closed or expired: start afresh
	}
	s.lastUsed.Store(rt.clock.Load())
	env.sess, env.call.Session = s, s.id
	p := env.pool
	b := s.bindingIn(p)
	p.mu.Lock()
	w, outcome, err := p.route(env, b)
	if w != nil {
		pid = w.pid
	}
	queued = err == nil && w == nil
	queuedNow := p.queued
	// Read under the lock: once queued, a worker may claim env and write
	// these at any moment.
	dispatched := messages.CallDispatched{Pool: p.cfg.Name, Session: s.id, Worker: env.call.Worker,
		Incarnation: env.call.Incarnation, Affinity: env.mode, Outcome: outcome, Stream: env.stream != nil}
	p.mu.Unlock()
	s.mu.Unlock()

	p.stats.dispatched[outcome].Add(1)
	emit(rt, dispatched)
	if err != nil {
		if err == ErrPoolSaturated {
			p.stats.saturated.Add(1)
			emit(rt, messages.PoolSaturated{Pool: p.cfg.Name, Session: s.id, Queued: queuedNow})
		}
		return nil, false, env.fail(err, "")
	}
	return pid, queued, nil
}

// await waits for env's one outcome. reusable says whether env may be
// recycled (nobody else will touch it again).
func (rt *Runtime) await(env *envelope, queued bool) (r reply, reusable bool) {
	if !queued {
		if env.ctx.Done() == nil { // cannot be cancelled: a plain receive is cheaper than select
			return <-env.replyCh, true
		}
		return rt.awaitClaimed(env)
	}
	p := env.pool
	timer := time.NewTimer(p.cfg.QueueTimeout)
	defer timer.Stop()
	select {
	case r = <-env.replyCh:
		return r, true
	case <-env.ctx.Done():
		p.abandon(env)
		p.stats.cancelled.Add(1)
		return reply{err: env.ctx.Err()}, false
	case <-timer.C:
		if p.abandon(env) {
			p.stats.queueTimeouts.Add(1)
			return reply{err: env.fail(ErrQueueTimeout, "waited "+p.cfg.QueueTimeout.String())}, false
		}
		// It started running just as the timeout fired: no longer waiting.
		return rt.awaitClaimed(env)
	}
}

// awaitClaimed waits for a call that holds a worker slot. If the caller
// gives up first, a call that has not started is taken back (it never runs);
// one that is running finishes unobserved.
func (rt *Runtime) awaitClaimed(env *envelope) (reply, bool) {
	select {
	case r := <-env.replyCh:
		return r, true
	case <-env.ctx.Done():
		env.pool.abandon(env)
		env.pool.stats.cancelled.Add(1)
		return reply{err: env.ctx.Err()}, false
	}
}

func (rt *Runtime) stream(ctx context.Context, s *Session, p *pool, mode Affinity, ref *messages.Ref, req any) (*Stream, error) {
	if s.id == "" {
		return nil, fmt.Errorf("%w: empty session id", ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	st := &Stream{ctx: sctx, cancel: cancel, items: make(chan any, streamBuffer)}
	env := &envelope{ctx: sctx, pool: p, mode: mode, ref: ref, stream: st}
	env.call = messages.Call{Pool: p.cfg.Name, Worker: -1, Ref: ref, Payload: req}
	pid, _, err := rt.dispatch(s, env)
	if err != nil {
		cancel()
		return nil, err
	}
	st.worker, st.incarnation = env.call.Worker, env.call.Incarnation
	rt.system.Root.Send(pid, env)
	return st, nil
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

func (rt *Runtime) expiryLoop() {
	defer rt.wg.Done()
	ttl := rt.cfg.SessionIdleTTL
	if ttl < 0 {
		return
	}
	// The clock that stamps session use ticks often; the scan for idle
	// sessions runs less often, since it walks every session.
	tick := min(max(ttl/8, time.Millisecond), 100*time.Millisecond)
	scanEvery := min(max(ttl/4, tick), time.Minute)
	t := time.NewTicker(tick)
	defer t.Stop()
	lastScan := time.Now()
	for {
		select {
		case <-rt.ctx.Done():
			return
		case now := <-t.C:
			rt.clock.Store(now.UnixNano())
			if now.Sub(lastScan) >= scanEvery {
				lastScan = now
				rt.expireIdle(now.Add(-ttl).UnixNano())
			}
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
	if size < 0 {
		return fmt.Errorf("%w: negative pool size %d", ErrInvalidArgument, size)
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
// for the one shutdown.
func (rt *Runtime) Shutdown(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	rt.shutdownOnce.Do(func() {
		go func() {
			rt.shutdownErr = rt.shutdown(ctx)
			close(rt.shutdownDone)
		}()
	})
	select {
	case <-rt.shutdownDone:
		return rt.shutdownErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (rt *Runtime) shutdown(ctx context.Context) error {
	rt.closed.Store(true)
	for _, p := range rt.pools {
		p.close()
	}
	var errs []error
	for _, p := range rt.pools {
		select {
		case <-p.drained:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("pool %q: running calls did not finish: %w", p.cfg.Name, ctx.Err()))
		}
	}
	rt.cancel()
	rt.ownersMu.Lock()
	rt.ownersClosed = true
	clear(rt.byOwner)
	rt.ownersMu.Unlock()
	for i := range rt.sessions.shards {
		sh := &rt.sessions.shards[i]
		sh.mu.Lock()
		for id, s := range sh.m {
			s.mu.Lock()
			s.closed.Store(true)
			stop := s.stopOwner
			s.stopOwner = nil
			s.mu.Unlock()
			rt.unwatchOwner(stop)
			delete(sh.m, id)
		}
		sh.mu.Unlock()
	}
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
	waited := make(chan struct{})
	go func() { rt.wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("runtime goroutines did not finish: %w", ctx.Err()))
	}
	rt.system.Shutdown()
	rt.log.Info().Msg("affinity runtime stopped")
	return errors.Join(errs...)
}
