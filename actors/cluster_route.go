package actors

import (
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"google.golang.org/protobuf/proto"

	"github.com/affinity-go/affinity/internal/wire"
	"github.com/affinity-go/affinity/messages"
)

// A session actor in a cluster. Every member may have an actor for the same
// session. In each pool, the member holding the session's lease (granted
// by the session's grain) routes its calls to local workers exactly as a
// single runtime does; the others forward them there. Calls on a ref go
// straight to the member named in the ref.

// clusterRoute is where this member sends a session's calls in one pool.
type clusterRoute struct {
	entry     *wire.Entry // from the grain; nil: ask it
	resolving bool
	waiting   []*envelope // FIFO, while the grain is asked
}

// Messages to a session actor about its cluster routes.
type (
	resolvedRoute struct {
		pool *pool
		res  *wire.Resolved
		err  error
	}
	// remoteRefused: the member a call was forwarded to no longer holds the
	// lease (code codeStaleLease) or is leaving (codeLeaving).
	remoteRefused struct {
		env    *envelope
		code   int32
		member string
	}
)

// remoteOrigin is the calling member of a call that came from elsewhere.
type remoteOrigin struct {
	to *actor.PID
	id uint64
}

// routeCluster forwards env to another member when that is where it runs,
// and reports whether it took the call.
func (a *sessionActor) routeCluster(env *envelope) bool {
	m := a.rec.rt.member
	switch {
	case env.remote != nil:
		return false // came from another member, which checked where it runs
	case env.ref != nil:
		return a.routeRemoteRef(env)
	}
	if a.bindingSlot(env.pool).lease != 0 {
		return false // this member holds the lease
	}
	cr := a.clusterRoute(env.pool)
	if e := cr.entry; e != nil {
		if e.Member == m.id { // the lease was revoked since: ask again
			cr.entry = nil
		} else if _, alive := m.addressOf(e.Member); alive && !e.Dead {
			a.forward(env, e)
			return true
		} else if env.mode != Hint {
			env.refuse(&callError{sentinel: ErrSessionWorkerUnavailable, pool: env.pool.cfg.Name, session: a.rec.id,
				worker: -1, detail: "its member " + e.Member + " left the cluster"})
			return true
		}
	}
	cr.waiting = append(cr.waiting, env)
	if !cr.resolving {
		cr.resolving = true
		a.resolve(env.pool, env.mode, cr.entry)
	}
	return true
}

func (a *sessionActor) routeRemoteRef(env *envelope) bool {
	m := a.rec.rt.member
	if env.ref.Member == "" || env.ref.Member == m.id {
		return false
	}
	_, alive := m.addressOf(env.ref.Member)
	if !alive {
		env.refuse(&callError{sentinel: ErrRefLost, pool: env.pool.cfg.Name, session: a.rec.id, worker: env.ref.Worker,
			detail: "its member " + env.ref.Member + " left the cluster"})
		return true
	}
	a.forward(env, nil)
	return true
}

func (a *sessionActor) clusterRoute(p *pool) *clusterRoute {
	if a.croutes == nil {
		a.croutes = make([]*clusterRoute, len(a.rec.rt.pools))
	}
	if a.croutes[p.index] == nil {
		a.croutes[p.index] = &clusterRoute{}
	}
	return a.croutes[p.index]
}

// resolve asks the session's grain, from a goroutine the runtime owns, where
// the session lives in p; the answer comes back as a resolvedRoute message.
// stale is the entry this member found unusable, if any.
func (a *sessionActor) resolve(p *pool, mode Affinity, stale *wire.Entry) {
	rt, rec := a.rec.rt, a.rec
	m := rt.member
	req := &wire.Resolve{Session: rec.id, Pool: p.cfg.Name, Affinity: int32(mode), Stale: stale}
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		res, err := m.askGrain(rec.id, req)
		r, _ := res.(*wire.Resolved)
		if err == nil && r == nil {
			err = fmt.Errorf("unexpected answer %T", res)
		}
		rec.post(&resolvedRoute{pool: p, res: r, err: err})
	}()
}

// askGrain sends a request to a session's grain and waits for its answer.
// It runs outside any actor: finding the grain may itself ask a member.
func (m *member) askGrain(session string, req any) (any, error) {
	deadline := time.Now().Add(m.cfg.RequestTimeout)
	var lastErr error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		// Attempts are short: a grain whose member crashed is found
		// again on another one once the topology says so.
		wait := min(time.Until(deadline), m.turn())
		pid, err := m.grainPID(session, wait)
		if err == nil {
			var res any
			if res, err = m.rt.system.Root.RequestFuture(pid, req, wait).Result(); err == nil {
				return res, nil
			}
		}
		lastErr = err
		// Back off in milliseconds (protoactor's own retry waits nanoseconds).
		select {
		case <-m.rt.ctx.Done():
			return nil, ErrShutdown
		case <-time.After(time.Duration(10*(attempt+1)) * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("session grain %q: %w", session, lastErr)
}

// turn is how long one attempt to reach another member waits: a fifth of
// RequestTimeout, so that a member that has just died (still in the
// topology) costs a call one turn, and is passed over once it is gone.
func (m *member) turn() time.Duration { return max(m.cfg.RequestTimeout/5, 100*time.Millisecond) }

// grainPID finds a session's grain as protoactor's disthash lookup does
// (the member that owns the key by rendezvous hashing activates it and
// answers with its PID), but within wait: disthash's own lookup waits 5 s
// for an owner that does not answer, a member that has just died, say,
// which took the whole of a call's RequestTimeout in one attempt.
func (m *member) grainPID(session string, wait time.Duration) (*actor.PID, error) {
	id := cluster.NewClusterIdentity(session, sessionKind)
	owner := m.owners.GetByClusterIdentity(id)
	if owner == "" {
		return nil, errors.New("no member hosts session grains")
	}
	activator := actor.NewPID(owner, disthash.PartitionActivatorActorName)
	res, err := m.rt.system.Root.RequestFuture(activator, &cluster.ActivationRequest{ClusterIdentity: id}, wait).Result()
	if err != nil {
		return nil, fmt.Errorf("member %s did not place the grain: %w", owner, err)
	}
	if r, ok := res.(*cluster.ActivationResponse); ok && r.Pid != nil {
		return r.Pid, nil
	}
	return nil, fmt.Errorf("member %s did not place the grain: it answered %T", owner, res)
}

// resolved re-routes the calls that waited for the grain's answer.
func (a *sessionActor) resolved(m *resolvedRoute) {
	cr := a.clusterRoute(m.pool)
	cr.resolving = false
	waiting := cr.waiting
	cr.waiting = nil
	err := m.err
	if err == nil && m.res.Error != nil {
		err = decodeError(m.res.Error)
	}
	if err != nil {
		for _, env := range waiting {
			env.refuse(&callError{sentinel: ErrNoWorkersAvailable, pool: m.pool.cfg.Name, session: a.rec.id,
				worker: -1, detail: "the session's directory did not answer", cause: err})
		}
		return
	}
	cr.entry = m.res.Entry
	for _, env := range waiting {
		a.route(env)
	}
}

// forward sends env to the member holding its lease; e is the route's entry (nil for
// a ref call). The reply comes back through this member's gateway; a
// stream's messages come to a reader of its own.
func (a *sessionActor) forward(env *envelope, e *wire.Entry) {
	m := a.rec.rt.member
	payload, err := wire.EncodeValue(env.call.Payload)
	if err != nil {
		env.refuse(fmt.Errorf("%w (pool %s, session %s)", err, env.pool.cfg.Name, a.rec.id))
		return
	}
	// Running, as far as the caller is concerned: a caller that gives up
	// now cannot take the call back from the other member.
	env.state.Store(envRunning)
	target := ""
	msg := &wire.Call{Session: a.rec.id, Pool: env.pool.cfg.Name, Affinity: int32(env.mode),
		Ref: wire.EncodeRef(env.ref), TimeoutNs: int64(env.timeout), Payload: payload}
	if e != nil {
		target, msg.Lease = e.Member, e.Lease
	} else {
		target = env.ref.Member
	}
	if env.astream != nil { // its receiver's acks and cancel come here
		a.trackStream(env.astream)
	}
	if env.isStream() {
		m.forwardStream(env, target, msg)
		return
	}
	msg.Id = m.track(env, target)
	switch sent, leaving := m.sendCall(target, msg, m.gateway); {
	case sent:
		m.markSent(msg.Id)
	case leaving: // it announced its leave since we chose it
		if rc, ok := m.untrack(msg.Id); ok {
			a.refused(&remoteRefused{env: rc.env, code: codeLeaving, member: target})
		}
	default: // it left since we chose it
		m.failPendingOn(target)
	}
}

// refused handles a call the other member would not take: its lease there
// is gone (the grain is asked again), or that member is leaving.
func (a *sessionActor) refused(m *remoteRefused) {
	env := m.env
	if err := env.ctx.Err(); err != nil {
		env.refuse(err)
		return
	}
	env.state.Store(envNew)
	if env.ref != nil {
		env.refuse(&callError{sentinel: ErrRefLost, pool: env.pool.cfg.Name, session: a.rec.id, worker: env.ref.Worker,
			detail: "its member " + m.member + " is leaving the cluster"})
		return
	}
	cr := a.clusterRoute(env.pool)
	stale := cr.entry
	if stale == nil || stale.Member != m.member {
		stale = &wire.Entry{Pool: env.pool.cfg.Name, Member: m.member}
	} else {
		stale = proto.Clone(stale).(*wire.Entry)
	}
	stale.Dead = m.code == codeLeaving
	cr.entry = nil
	cr.waiting = append(cr.waiting, env)
	if !cr.resolving {
		cr.resolving = true
		a.resolve(env.pool, env.mode, stale)
	}
}

// inbound runs a call another member forwarded here, if this member still
// holds the lease it was sent for.
func (a *sessionActor) inbound(actx actor.Context, in *inboundCall) {
	rt := a.rec.rt
	msg := in.msg
	refuse := func(e *wire.Error) {
		rt.member.answerInbound(in.from, &wire.Reply{Id: msg.Id, Error: e, Worker: -1})
	}
	p, ok := rt.byName[msg.Pool]
	if !ok {
		refuse(encodeError(fmt.Errorf("%w: %q", ErrPoolNotFound, msg.Pool)))
		return
	}
	ref := wire.DecodeRef(msg.Ref)
	if ref == nil && a.bindingSlot(p).lease != msg.Lease {
		refuse(&wire.Error{Code: codeStaleLease, Text: "no such lease"})
		return
	}
	payload, err := wire.DecodeValue(msg.Payload)
	if err != nil {
		refuse(encodeError(err))
		return
	}
	env := a.newEnvelope(p, Affinity(msg.Affinity), ref, payload)
	env.remote = &remoteOrigin{to: in.from, id: msg.Id}
	env.timeout = time.Duration(msg.TimeoutNs)
	if msg.Window > 0 {
		a.inboundStream(actx, env, in.from, msg)
	}
	a.route(env)
}

// sendReply answers a call that came from another member.
func (m *member) sendReply(env *envelope, val any, err error) {
	r := &wire.Reply{Id: env.remote.id, Worker: -1}
	if env.ran {
		r.Worker, r.Incarnation = int32(env.call.Worker), env.call.Incarnation
	}
	v, encErr := wire.EncodeValue(val)
	switch {
	case err != nil && !env.ran && m.leaving.Load() && errors.Is(err, ErrShutdown):
		// It waited here and never ran: the caller routes it again, as
		// for any call to a member that is leaving.
		r.Error = &wire.Error{Code: codeLeaving, Text: "member leaving"}
	case err != nil:
		r.Error = encodeError(err)
	case encErr != nil:
		r.Error = encodeError(fmt.Errorf("%w: the result: %v", ErrPayloadNotPortable, encErr))
	default:
		r.Value = v
	}
	m.answerInbound(env.remote.to, r)
}

// leaseGranted takes the session's lease in a pool, unless this member
// knows the session already lives somewhere: then it answers with that
// place, which the grain adopts. Two activations of one grain (protoactor
// may run both during a topology change) thus converge on the lease that
// holds state instead of starting the session afresh next to it.
func (a *sessionActor) leaseGranted(g *leaseGrant) {
	rt, m := a.rec.rt, a.rec.rt.member
	p, ok := rt.byName[g.entry.Pool]
	if !ok {
		rt.system.Root.Send(g.ack, &wire.Resolved{Error: encodeError(fmt.Errorf("%w: %q", ErrPoolNotFound, g.entry.Pool))})
		return
	}
	b, cr := a.bindingSlot(p), a.clusterRoute(p)
	switch {
	case b.lease != 0 && b.lease != g.entry.Lease && b.inc != 0: // state here, under another lease
		rt.system.Root.Send(g.ack, &wire.Resolved{Entry: &wire.Entry{Pool: p.cfg.Name, Member: m.id, Address: m.address, Lease: b.lease}})
	case b.lease == 0 && cr.entry != nil && !cr.entry.Dead && cr.entry.Member != m.id:
		// It lives there, as far as this member knows. If that member is
		// gone, its state went with it: the grain records the loss rather
		// than this member starting the session afresh, and a second offer
		// (for a call in hint mode) is then taken.
		e := cr.entry
		if _, alive := m.addressOf(e.Member); !alive {
			e = proto.Clone(e).(*wire.Entry)
			e.Dead = true
			cr.entry = e
		}
		rt.system.Root.Send(g.ack, &wire.Resolved{Entry: e})
	default:
		b.lease = g.entry.Lease
		cr.entry = nil
		rt.system.Root.Send(g.ack, &wire.Granted{})
	}
}

// leaseRevoked closes the session here if it holds one of the leases.
func (a *sessionActor) leaseRevoked(ctx actor.Context, r *leaseRevoke) {
	for _, e := range r.entries {
		if p, ok := a.rec.rt.byName[e.Pool]; ok && a.bindingSlot(p).lease == e.Lease {
			a.close(ctx, messages.CleanupManual)
			return
		}
	}
}

// leaseQuery tells a recovering grain the leases held here.
func (a *sessionActor) leasesHeld(q *leaseQuery) {
	m := a.rec.rt.member
	h := &wire.Holding{Replicas: q.replicas}
	for _, p := range a.rec.rt.pools {
		if b := a.bindingIn(p); b.lease != 0 {
			h.Leases = append(h.Leases, &wire.Entry{Pool: p.cfg.Name, Member: m.id, Address: m.address, Lease: b.lease})
		}
	}
	a.rec.rt.system.Root.Send(q.to, h)
}

// closeInCluster tells the session's grain that the session was closed
// here, so every member closes its part. It blocks: Session.Close calls it.
func (m *member) closeInCluster(session string) error {
	_, err := m.askGrain(session, &wire.CloseSession{Session: session})
	return err
}
