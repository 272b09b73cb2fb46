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

// Session is a handle to the session with one id. The session itself is a
// session actor (see sessionActor): the handle only finds it, activating it
// on first use. Handles are cheap, never move and stay valid: after Close
// (or expiry) the next call through the same handle starts a fresh session
// with the same id and no bindings.
type Session struct {
	rt   *Runtime
	id   string
	auto bool
	rec  atomic.Pointer[sessionRec] // the live record last seen
	pid  *actor.PID
}

// sessionRec is a session's compact record: what survives passivation. It
// stays in the runtime's table from the session's first use to its cleanup.
type sessionRec struct {
	rt   *Runtime
	id   string
	auto bool

	active   atomic.Int32 // calls accepted and not yet answered
	lastUsed atomic.Int64 // unix nanoseconds (coarse clock)
	closed   atomic.Bool  // written under mu

	mu sync.Mutex
	// act is the live session actor, nil while passivated. While it is
	// live, the actor alone reads and writes bindings; while passivated,
	// mu guards them.
	act       *sessionActor
	bindings  []binding       // by pool index; nil until the first binding
	stopOwner func() bool     // auto-sessions: unregisters the owner watch
	ownerDone <-chan struct{} // Runtime.Call's auto-sessions: key in byOwner
}

// ID returns the session id.
func (s *Session) ID() string { return s.id }

// PID returns the session's address in the runtime's actor system. It names
// the session, not one activation: messages sent to it reach the session
// actor, which is activated as needed (after passivation or Close too). See
// package messages for the requests it answers.
func (s *Session) PID() *actor.PID { return s.pid }

// Call runs req in this session, in the default pool and mode unless
// overridden by opts. It returns the worker's result, or an error wrapping
// one of the package's sentinels (or ctx's error).
func (s *Session) Call(ctx context.Context, req any, opts ...CallOption) (any, error) {
	p, mode, err := s.rt.resolve(ctx, opts, nil)
	if err != nil {
		return nil, err
	}
	return s.rt.call(ctx, s.live, p, mode, nil, req, onCaller(opts))
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
	return s.rt.stream(ctx, s.live, p, mode, nil, req, opts)
}

// Close ends the session (cleanup source "manual"): calls still waiting in
// its mailbox fail with ErrSessionClosed, running calls finish, and bound
// workers are told to release its state. Closing a session that is not
// live is a no-op; a handle used again after Close can be closed again.
func (s *Session) Close() {
	if r := s.rt.sessions.get(s.id); r != nil {
		s.rt.closeSession(r, messages.CleanupManual)
	}
	if m := s.rt.member; m != nil && !s.rt.closed.Load() {
		if err := m.closeInCluster(s.id); err != nil {
			s.rt.log.Warn().Err(err).Str("session", s.id).Msg("session closed here; other members not told")
		}
	}
}

// Binding reports the session's preferred worker in a pool and the
// incarnation it bound to; ok is false when unbound. It never creates or
// activates a session.
func (s *Session) Binding(pool string) (worker int, incarnation uint64, ok bool) {
	p := s.rt.byName[pool]
	r := s.rt.sessions.get(s.id)
	if p == nil || r == nil {
		return -1, 0, false
	}
	b := r.binding(p)
	if b.inc == 0 {
		return -1, 0, false
	}
	return int(b.worker), b.inc, true
}

// live returns the session's live record, creating it if needed.
func (s *Session) live() *sessionRec {
	if r := s.rec.Load(); r != nil && !r.closed.Load() {
		return r
	}
	r := s.rt.record(s.id, s.auto)
	s.rec.Store(r)
	return r
}

// binding reads the session's binding in p: through the actor while it is
// live (it owns the bindings), from the record while passivated.
func (r *sessionRec) binding(p *pool) binding {
	r.mu.Lock()
	if r.act == nil {
		defer r.mu.Unlock()
		if r.bindings == nil {
			return binding{}
		}
		return r.bindings[p.index]
	}
	r.mu.Unlock()
	q := &bindingQuery{pool: p, reply: make(chan binding, 1)}
	r.post(q)
	return <-q.reply
}

// actor returns the live session actor, activating it when passivated, or
// nil once the session is closed.
func (r *sessionRec) actor() *sessionActor {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.act != nil || r.closed.Load() || r.rt.closed.Load() {
		return r.act
	}
	a, err := r.rt.spawnSession(r)
	if err != nil {
		r.rt.log.Error().Err(err).Str("session", r.id).Msg("session actor did not start")
		return nil
	}
	r.act = a
	return a
}

// post delivers msg to the session actor's mailbox. A closed session hands
// it on (see orphan).
func (r *sessionRec) post(msg any) { r.send(msg, nil) }

// postOwn is post for a call whose caller blocks on it (see
// sessionMailbox.post).
func (r *sessionRec) postOwn(env *envelope) { r.send(env, env) }

func (r *sessionRec) send(msg any, own *envelope) {
	if a := r.actor(); a != nil {
		a.mb.post(msg, own) // what the actor's process would do: it only posts
		return
	}
	r.orphan(msg)
}

// orphan handles a message that reached a session actor after it left (it
// was passivated or closed): calls and requests go to the live session with
// the same id, a worker slot granted to it is handed back, and notices
// about calls it no longer holds are dropped.
func (r *sessionRec) orphan(msg any) {
	if r.rt.closed.Load() {
		r.refuseShutdown(msg)
		return
	}
	switch m := msg.(type) {
	case *envelope:
		next := r.successor()
		if next != r {
			r.active.Add(-1)
			next.active.Add(1)
			m.sess = next
		}
		next.post(m)
	case *grant:
		m.giveBack()
	case *bindingQuery:
		m.reply <- binding{}
	case *closeRequest:
		r.rt.closeSession(r, m.source)
	case *dropWaiting, *streamEnded, *passivateRequest, *streamControl:
	default: // a message of the actor API
		r.successor().post(msg)
	}
}

// refuseShutdown answers what reaches a session after the runtime shut
// down.
func (r *sessionRec) refuseShutdown(msg any) {
	root := r.rt.system.Root
	switch m := msg.(type) {
	case *envelope:
		if m.state.CompareAndSwap(envNew, envDone) {
			m.refuse(m.fail(ErrShutdown, ""))
		}
	case *grant:
		m.giveBack()
	case *bindingQuery:
		m.reply <- binding{}
	case *actor.MessageEnvelope:
		switch req := m.Message.(type) {
		case *messages.CallRequest:
			if m.Sender != nil {
				root.Send(m.Sender, &messages.CallReply{Tag: req.Tag, Err: ErrShutdown, Worker: -1})
			}
		case *messages.StreamRequest:
			if m.Sender != nil {
				root.Send(m.Sender, &messages.StreamEnd{Tag: req.Tag, Err: ErrShutdown})
			}
		}
	}
}

// successor is r while it is not closed, else the session that replaced it.
func (r *sessionRec) successor() *sessionRec {
	if !r.closed.Load() {
		return r
	}
	return r.rt.record(r.id, r.auto)
}

const sessionShards = 64

type sessionShard struct {
	mu sync.RWMutex
	m  map[string]*sessionRec
	_  [24]byte // keep neighbouring shard locks off one cache line
}

type sessionTable struct {
	seed   maphash.Seed
	shards [sessionShards]sessionShard
}

func (t *sessionTable) init() {
	t.seed = maphash.MakeSeed()
	for i := range t.shards {
		t.shards[i].m = make(map[string]*sessionRec)
	}
}

func (t *sessionTable) shard(id string) *sessionShard {
	return &t.shards[maphash.String(t.seed, id)%sessionShards]
}

// get returns the live record for id, or nil.
func (t *sessionTable) get(id string) *sessionRec {
	sh := t.shard(id)
	sh.mu.RLock()
	r := sh.m[id]
	sh.mu.RUnlock()
	return r
}

// remove drops r from the table if it is still the record for its id.
func (t *sessionTable) remove(r *sessionRec) {
	sh := t.shard(r.id)
	sh.mu.Lock()
	if sh.m[r.id] == r {
		delete(sh.m, r.id)
	}
	sh.mu.Unlock()
}

// Session returns a handle to the session with this id. Nothing is created
// until the handle is used for a call (or its actor is addressed).
func (rt *Runtime) Session(id string) *Session {
	return &Session{rt: rt, id: id, pid: &actor.PID{Address: sessionAddress, Id: id}}
}

// SessionPID returns the address of the session with this id, for actors
// that talk to sessions by message without holding a handle.
func (rt *Runtime) SessionPID(id string) *actor.PID {
	return &actor.PID{Address: sessionAddress, Id: id}
}

// record returns the live record for id, creating it on first use.
func (rt *Runtime) record(id string, auto bool) *sessionRec {
	if r := rt.sessions.get(id); r != nil {
		return r
	}
	sh := rt.sessions.shard(id)
	sh.mu.Lock()
	r := sh.m[id]
	created := r == nil
	if created {
		r = &sessionRec{rt: rt, id: id, auto: auto}
		r.lastUsed.Store(rt.clock.Load())
		if id != "" && !rt.closed.Load() {
			sh.m[id] = r
		}
	}
	sh.mu.Unlock()
	if created {
		rt.sessionsCreated.Add(1)
		emit(rt, messages.SessionCreated{Session: id, Auto: auto})
	}
	return r
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
	s := rt.autoHandle()
	rt.watchOwner(ctx, s.live())
	return ContextWithSession(ctx, s), s
}

func (rt *Runtime) autoHandle() *Session {
	s := rt.Session("auto-" + strconv.FormatUint(rt.autoSeq.Add(1), 10))
	s.auto = true
	return s
}

// ownedSession returns the auto-session owned by ctx for Runtime.Call,
// creating it on first use, or nil when ctx can never end.
func (rt *Runtime) ownedSession(ctx context.Context) *sessionRec {
	done := ctx.Done()
	if done == nil {
		return nil
	}
	rt.ownersMu.Lock()
	r := rt.byOwner[done]
	rt.ownersMu.Unlock()
	if r != nil && !r.closed.Load() {
		return r
	}
	r = rt.autoHandle().live()
	r.mu.Lock()
	r.ownerDone = done
	r.mu.Unlock()
	rt.ownersMu.Lock()
	if prev := rt.byOwner[done]; prev != nil && !prev.closed.Load() {
		rt.ownersMu.Unlock()
		rt.closeSession(r, messages.CleanupManual) // lost a race with a concurrent first call of the same owner
		return prev
	}
	if !rt.ownersClosed {
		rt.byOwner[done] = r
	}
	rt.ownersMu.Unlock()
	rt.watchOwner(ctx, r)
	return r
}

// watchOwner closes r when ctx ends. The watch is a goroutine the runtime
// owns: Shutdown unregisters it or waits for it.
func (rt *Runtime) watchOwner(ctx context.Context, r *sessionRec) {
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
		rt.closeSession(r, messages.CleanupOwnerDown)
	})
	r.mu.Lock()
	r.stopOwner = stop
	r.mu.Unlock()
}

// unwatchOwner unregisters an owner watch; the runtime stops waiting for a
// watch that will now never run.
func (rt *Runtime) unwatchOwner(stop func() bool) {
	if stop != nil && stop() {
		rt.wg.Done()
	}
}

// closeSession ends r once. A live actor does it in its own mailbox (it
// holds the waiting calls); a passivated session is ended here.
func (rt *Runtime) closeSession(r *sessionRec, source messages.CleanupSource) {
	r.mu.Lock()
	if r.closed.Load() {
		r.mu.Unlock()
		return
	}
	if a := r.act; a != nil {
		r.mu.Unlock()
		a.proc.SendUserMessage(a.self, &closeRequest{source: source})
		return
	}
	bindings := r.markClosed()
	r.mu.Unlock()
	rt.finishClose(r, bindings, source)
}

// markClosed closes the record and takes its bindings. Caller holds r.mu.
func (r *sessionRec) markClosed() []binding {
	r.closed.Store(true)
	bindings := r.bindings
	r.bindings = nil
	return bindings
}

// finishClose does what follows a close outside the session's lock: the
// record leaves the table, bound workers are told to release the session,
// and the cleanup is counted and reported.
func (rt *Runtime) finishClose(r *sessionRec, bindings []binding, source messages.CleanupSource) {
	r.mu.Lock()
	stop, ownerDone := r.stopOwner, r.ownerDone
	r.stopOwner = nil
	r.mu.Unlock()
	rt.unwatchOwner(stop)
	if ownerDone != nil {
		rt.ownersMu.Lock()
		if rt.byOwner[ownerDone] == r {
			delete(rt.byOwner, ownerDone)
		}
		rt.ownersMu.Unlock()
	}
	rt.sessions.remove(r)

	released := 0
	for i := range bindings {
		if pid := rt.pools[i].unbindForRelease(&bindings[i]); pid != nil {
			rt.system.Root.Send(pid, &messages.ReleaseSession{Session: r.id, Source: source})
			released++
		}
	}
	rt.cleanups[source].Add(1)
	emit(rt, messages.SessionCleanup{Session: r.id, Source: source, Workers: released})
	if rt.cfg.LogSessionCleanup {
		rt.log.Debug().Str("session", r.id).Str("source", source.String()).Int("workers", released).Msg("session cleanup")
	}
}

// sweepIdle closes sessions idle since before expireBefore and passivates
// session actors idle since before passivateBefore (0: never), skipping
// sessions with calls in progress.
func (rt *Runtime) sweepIdle(expireBefore, passivateBefore int64) {
	var expire, passivate []*sessionRec
	for i := range rt.sessions.shards {
		sh := &rt.sessions.shards[i]
		sh.mu.RLock()
		for _, r := range sh.m {
			used := r.lastUsed.Load()
			switch {
			case r.active.Load() != 0:
			case used < expireBefore:
				expire = append(expire, r)
			case used < passivateBefore:
				passivate = append(passivate, r)
			}
		}
		sh.mu.RUnlock()
		for _, r := range expire {
			rt.closeSession(r, messages.CleanupExpired)
		}
		for _, r := range passivate {
			r.mu.Lock()
			a := r.act
			r.mu.Unlock()
			if a != nil {
				a.proc.SendUserMessage(a.self, &passivateRequest{})
			}
		}
		expire, passivate = expire[:0], passivate[:0]
	}
}

// liveSessionActors counts the activated sessions (for Stats).
func (rt *Runtime) liveSessionActors() (records, actors int) {
	for i := range rt.sessions.shards {
		sh := &rt.sessions.shards[i]
		sh.mu.RLock()
		records += len(sh.m)
		sh.mu.RUnlock()
	}
	return records, int(rt.sessionActors.Load())
}

// sessionAddress is the address of session PIDs. It is not the actor
// system's own, so protoactor asks the runtime's resolver for them, which is
// what lets a session PID outlive each activation of the session.
const sessionAddress = "affinity.sessions"

// resolveSession is the actor system's address resolver for session PIDs.
func (rt *Runtime) resolveSession(pid *actor.PID) (actor.Process, bool) {
	if pid.Address != sessionAddress {
		return nil, false
	}
	if pid.Id == "" || rt.closed.Load() {
		return nil, false
	}
	for range 8 { // a session closing meanwhile is replaced by a fresh one
		if a := rt.record(pid.Id, false).actor(); a != nil {
			return a.proc, true
		}
	}
	rt.log.Warn().Str("session", pid.Id).Msg("session actor could not be activated")
	return nil, false
}
