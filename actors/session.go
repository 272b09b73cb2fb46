package actors

import (
	"context"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/messages"
)

// Session is a session actor: the one place where a session's bindings (its
// preferred worker per pool) are read and changed. Every routing decision of
// the session is taken while holding its lock, one at a time, which is what
// makes two concurrent first calls bind once. The lock is never held while a
// call waits or runs.
//
// A Session is lightweight (no goroutine, no mailbox) so that millions of
// idle sessions cost little. After Close (or expiry), calls on the same
// handle start a fresh session with the same id and no bindings.
type Session struct {
	rt   *Runtime
	id   string
	auto bool

	active   atomic.Int32 // calls in progress; idle expiry skips busy sessions
	lastUsed atomic.Int64 // unix nanoseconds

	closed atomic.Bool // written under mu; read without it on the call path

	mu        sync.Mutex
	bindings  []binding       // by pool index; nil until the first call
	stopOwner func() bool     // auto-sessions: unregisters the owner watch
	ownerDone <-chan struct{} // Runtime.Call's auto-sessions: key in byOwner
}

// ID returns the session id.
func (s *Session) ID() string { return s.id }

// Call runs req in this session, in the default pool and mode unless
// overridden by opts. It returns the worker's result, or an error wrapping
// one of the package's sentinels (or ctx's error).
func (s *Session) Call(ctx context.Context, req any, opts ...CallOption) (any, error) {
	p, mode, err := s.rt.resolve(ctx, opts, nil)
	if err != nil {
		return nil, err
	}
	return s.rt.call(ctx, s, p, mode, nil, req)
}

// Stream starts a streaming call. Its checkout never waits: a busy preferred
// worker gives ErrWorkerBusy (even under StrictQueue), and Hint with no free
// worker gives ErrNoWorkersAvailable. Close the stream, or cancel ctx, to
// stop it and free the worker.
func (s *Session) Stream(ctx context.Context, req any, opts ...CallOption) (*Stream, error) {
	p, mode, err := s.rt.resolve(ctx, opts, nil)
	if err != nil {
		return nil, err
	}
	return s.rt.stream(ctx, s, p, mode, nil, req)
}

// Close ends the session (cleanup source "manual"): bound workers are told
// to release its state. Closing twice is a no-op.
func (s *Session) Close() { s.rt.closeSession(s, messages.CleanupManual) }

// Binding reports the session's preferred worker in a pool and the
// incarnation it bound to; ok is false when unbound.
func (s *Session) Binding(pool string) (worker int, incarnation uint64, ok bool) {
	p := s.rt.byName[pool]
	if p == nil {
		return -1, 0, false
	}
	s = s.current()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() || s.bindings == nil || s.bindings[p.index].inc == 0 {
		return -1, 0, false
	}
	b := s.bindings[p.index]
	return int(b.worker), b.inc, true
}

// current returns the live session for this handle's id: s itself, or the
// fresh session that replaced it after it was closed or expired.
func (s *Session) current() *Session {
	if !s.closed.Load() {
		return s
	}
	return s.rt.session(s.id, s.auto)
}

// bindAfterWait binds an unbound session to the worker that ran its queued
// hint call.
func (s *Session) bindAfterWait(p *pool, w *worker, inc uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return
	}
	b := s.bindingIn(p)
	p.mu.Lock()
	if b.inc == 0 && w.incarnation == inc && w.state == wsReady {
		p.bind(b, w)
	}
	p.mu.Unlock()
}

// bindingIn returns the session's binding slot for p, allocating the slots
// on first use. Caller holds s.mu.
func (s *Session) bindingIn(p *pool) *binding {
	if s.bindings == nil {
		s.bindings = make([]binding, len(s.rt.pools))
	}
	return &s.bindings[p.index]
}

const sessionShards = 64

type sessionShard struct {
	mu sync.RWMutex
	m  map[string]*Session
	_  [24]byte // keep neighbouring shard locks off one cache line
}

type sessionTable struct {
	seed   maphash.Seed
	shards [sessionShards]sessionShard
}

func (t *sessionTable) init() {
	t.seed = maphash.MakeSeed()
	for i := range t.shards {
		t.shards[i].m = make(map[string]*Session)
	}
}

func (t *sessionTable) shard(id string) *sessionShard {
	return &t.shards[maphash.String(t.seed, id)%sessionShards]
}

// Session returns the session with this id, creating it on first use.
func (rt *Runtime) Session(id string) *Session {
	return rt.session(id, false)
}

func (rt *Runtime) session(id string, auto bool) *Session {
	sh := rt.sessions.shard(id)
	sh.mu.RLock()
	s := sh.m[id]
	sh.mu.RUnlock()
	if s != nil {
		return s
	}
	sh.mu.Lock()
	s = sh.m[id]
	created := s == nil
	if created {
		s = &Session{rt: rt, id: id, auto: auto}
		s.lastUsed.Store(rt.clock.Load())
		if id != "" {
			sh.m[id] = s
		}
	}
	sh.mu.Unlock()
	if created {
		rt.sessionsCreated.Add(1)
		emit(rt, messages.SessionCreated{Session: id, Auto: auto})
	}
	return s
}

type sessionKey struct{}

// ContextWithSession returns a context carrying s; Runtime.Call made with it
// runs in s.
func ContextWithSession(ctx context.Context, s *Session) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

// SessionFromContext returns the session ctx carries, or nil.
func SessionFromContext(ctx context.Context) *Session {
	s, _ := ctx.Value(sessionKey{}).(*Session)
	return s
}

// AutoSession creates a session owned by ctx: it is cleaned up (source
// "owner_down") when ctx ends. The returned context carries the session, so
// Runtime.Call made with it (or a context derived from it) runs there.
func (rt *Runtime) AutoSession(ctx context.Context) (context.Context, *Session) {
	if ctx == nil {
		ctx = context.Background()
	}
	s := rt.session("auto-"+strconv.FormatUint(rt.autoSeq.Add(1), 10), true)
	rt.watchOwner(ctx, s)
	return ContextWithSession(ctx, s), s
}

// ownedSession returns the auto-session owned by ctx for Runtime.Call,
// creating it on first use, or nil when ctx can never end.
func (rt *Runtime) ownedSession(ctx context.Context) *Session {
	done := ctx.Done()
	if done == nil {
		return nil
	}
	rt.ownersMu.Lock()
	s := rt.byOwner[done]
	rt.ownersMu.Unlock()
	if s != nil && !s.closed.Load() {
		return s
	}
	s = rt.session("auto-"+strconv.FormatUint(rt.autoSeq.Add(1), 10), true)
	s.mu.Lock()
	s.ownerDone = done
	s.mu.Unlock()
	rt.ownersMu.Lock()
	if prev := rt.byOwner[done]; prev != nil && !prev.closed.Load() {
		rt.ownersMu.Unlock()
		s.Close() // lost a race with a concurrent first call of the same owner
		return prev
	}
	if !rt.ownersClosed {
		rt.byOwner[done] = s
	}
	rt.ownersMu.Unlock()
	rt.watchOwner(ctx, s)
	return s
}

// watchOwner closes s when ctx ends. The watch is a goroutine the runtime
// owns: Shutdown unregisters it or waits for it.
func (rt *Runtime) watchOwner(ctx context.Context, s *Session) {
	if ctx.Done() == nil {
		return
	}
	rt.ownersMu.Lock()
	defer rt.ownersMu.Unlock()
	if rt.ownersClosed {
		return
	}
	rt.wg.Add(1)
	stop := context.AfterFunc(ctx, func() {
		defer rt.wg.Done()
		rt.closeSession(s, messages.CleanupOwnerDown)
	})
	s.mu.Lock()
	s.stopOwner = stop
	s.mu.Unlock()
}

// unwatchOwner unregisters an owner watch; the runtime stops waiting for a
// watch that will now never run.
func (rt *Runtime) unwatchOwner(stop func() bool) {
	if stop != nil && stop() {
		rt.wg.Done()
	}
}

// closeSession ends s once: bound workers are told to release its state and
// a cleanup event is emitted.
func (rt *Runtime) closeSession(s *Session, source messages.CleanupSource) {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return
	}
	s.closed.Store(true)
	bindings := s.bindings
	s.bindings = nil
	stop := s.stopOwner
	s.stopOwner = nil
	ownerDone := s.ownerDone
	s.mu.Unlock()
	rt.unwatchOwner(stop)
	if ownerDone != nil {
		rt.ownersMu.Lock()
		if rt.byOwner[ownerDone] == s {
			delete(rt.byOwner, ownerDone)
		}
		rt.ownersMu.Unlock()
	}

	sh := rt.sessions.shard(s.id)
	sh.mu.Lock()
	if sh.m[s.id] == s {
		delete(sh.m, s.id)
	}
	sh.mu.Unlock()

	released := 0
	for i := range bindings {
		b := &bindings[i]
		if b.inc == 0 {
			continue
		}
		p := rt.pools[i]
		p.mu.Lock()
		var target *worker
		if w := p.workerByID(int(b.worker)); w != nil && w.incarnation == b.inc {
			p.unbind(b)
			if w.state == wsReady {
				target = w
			}
		}
		var pid *actor.PID
		if target != nil {
			pid = target.pid
		}
		p.mu.Unlock()
		if pid != nil {
			rt.system.Root.Send(pid, &messages.ReleaseSession{Session: s.id, Source: source})
			released++
		}
	}
	rt.cleanups[source].Add(1)
	emit(rt, messages.SessionCleanup{Session: s.id, Source: source, Workers: released})
	if rt.cfg.LogSessionCleanup {
		rt.log.Debug().Str("session", s.id).Str("source", source.String()).Int("workers", released).Msg("session cleanup")
	}
}

// expireIdle closes sessions idle since before cutoff with no call running.
func (rt *Runtime) expireIdle(cutoff int64) {
	var idle []*Session
	for i := range rt.sessions.shards {
		sh := &rt.sessions.shards[i]
		sh.mu.RLock()
		for _, s := range sh.m {
			if s.lastUsed.Load() < cutoff && s.active.Load() == 0 {
				idle = append(idle, s)
			}
		}
		sh.mu.RUnlock()
		for _, s := range idle {
			rt.closeSession(s, messages.CleanupExpired)
		}
		idle = idle[:0]
	}
}
