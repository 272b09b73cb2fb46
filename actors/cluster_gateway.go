package actors

import (
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/internal/wire"
)

// gateway is the actor through which other members reach this one: calls
// for sessions whose lease this member holds, their replies, and what the
// session grains ask of members (grant, revoke, query, replicate). It never
// blocks: everything about a session goes to that session's actor.
type gateway struct{ m *member }

// Messages from the gateway to a session actor.
type (
	// inboundCall is a call from another member.
	inboundCall struct {
		msg  *wire.Call
		from *actor.PID // the calling member's gateway
	}
	// leaseGrant gives this member the session's lease in a pool.
	leaseGrant struct {
		entry *wire.Entry
		ack   *actor.PID // answered with Granted once the lease is set
	}
	// leaseRevoke closes the session here if it holds one of these leases.
	leaseRevoke struct{ entries []*wire.Entry }
	// leaseQuery asks for the leases this member holds for the session.
	leaseQuery struct {
		replicas []*wire.Entry
		to       *actor.PID
	}
)

func (g *gateway) Receive(ctx actor.Context) {
	rt := g.m.rt
	if drop := g.m.testDrop.Load(); drop != nil && (*drop)(ctx.Message()) {
		return
	}
	if m, ok := ctx.Message().(*wire.Leaving); ok {
		g.m.depart(m.Member)
		ctx.Respond(&wire.LeaveNoted{})
		return
	}
	if !g.m.ready.Load() && g.notReady(ctx) {
		return
	}
	switch m := ctx.Message().(type) {
	case *wire.Call:
		g.call(ctx, m)
	case *wire.Reply:
		g.reply(m)
	case *wire.Grant:
		if g.m.leaving.Load() || rt.closed.Load() {
			ctx.Respond(&wire.Resolved{Error: &wire.Error{Code: codeLeaving, Text: "member leaving"}})
			return
		}
		rt.record(m.Session, false).post(&leaseGrant{entry: m.Entry, ack: ctx.Sender()})
	case *wire.Revoke:
		if r := rt.sessions.get(m.Session); r != nil {
			r.post(&leaseRevoke{entries: m.Entries})
		}
	case *wire.Query:
		g.query(ctx, m)
	case *wire.StreamAck:
		g.streamControl(ctx, m.Session, &streamControl{key: streamKey{tag: m.Id}, items: m.Items})
	case *wire.StreamCancel:
		g.streamControl(ctx, m.Session, &streamControl{key: streamKey{tag: m.Id}, cancel: true})
	case *actor.DeadLetterResponse:
		// A message this gateway sent found no one (a caller's member
		// left); the calls concerned are failed by the topology change.
	case *wire.Audit:
		g.answerAudit(ctx, m)
	case *wire.AuditResult:
		g.lostCalls(m)
	case *wire.Replicate:
		g.m.replicaMu.Lock()
		if len(m.Entries) == 0 {
			delete(g.m.replicas, m.Session)
		} else {
			g.m.replicas[m.Session] = m.Entries
		}
		g.m.replicaMu.Unlock()
	}
}

// notReady answers, and reports whether it did, what comes before this
// member has joined: calls are refused as by a member that is leaving
// (the sender routes again), grants as not ready (the grain asks the
// others, then this one again), and nothing is held here yet. Replies to
// this member's own calls, replicas and audits are handled as usual.
func (g *gateway) notReady(ctx actor.Context) bool {
	switch m := ctx.Message().(type) {
	case *wire.Call:
		ctx.Send(ctx.Sender(), &wire.Reply{Id: m.Id, Error: &wire.Error{Code: codeLeaving, Text: "member not ready"}, Worker: -1})
	case *wire.Grant:
		g.m.grantsRefusedJoining.Add(1)
		ctx.Respond(&wire.Resolved{Error: &wire.Error{Code: codeNotReady, Text: "member not ready"}})
	case *wire.Query:
		ctx.Respond(&wire.Holding{})
	case *wire.Reply, *wire.Replicate, *wire.Audit, *wire.AuditResult:
		return false
	}
	return true
}

// call hands a call from another member to the local session actor, which
// checks the lease and routes it like any call.
func (g *gateway) call(ctx actor.Context, m *wire.Call) {
	rt := g.m.rt
	refuse := func(e *wire.Error) {
		ctx.Send(ctx.Sender(), &wire.Reply{Id: m.Id, Error: e, Worker: -1})
	}
	switch {
	case g.m.leaving.Load() || rt.closed.Load():
		refuse(&wire.Error{Code: codeLeaving, Text: "member leaving"})
	case m.Ref != nil && m.Ref.Member != g.m.id:
		refuse(encodeError(fmt.Errorf("%w: ref of member %s sent to %s", ErrRefLost, m.Ref.Member, g.m.id)))
	default:
		if m.Window == 0 { // a stream's end goes to its reader, which watches this member
			g.m.admitInbound(ctx.Sender(), m.Id)
		}
		rt.record(m.Session, false).post(&inboundCall{msg: m, from: ctx.Sender()})
	}
}

// reply completes a call this member sent to another one.
func (g *gateway) reply(m *wire.Reply) {
	rc, ok := g.m.untrack(m.Id)
	if !ok {
		return // failed already: its member left, or this member is leaving
	}
	env := rc.env
	val, err := wire.DecodeValue(m.Value)
	if err == nil {
		err = decodeError(m.Error)
	} else {
		err = fmt.Errorf("%w: the result: %v", ErrPayloadNotPortable, err)
	}
	if m.Error != nil && (m.Error.Code == codeLeaving || m.Error.Code == codeStaleLease) {
		env.sess.post(&remoteRefused{env: env, code: m.Error.Code, member: rc.member})
		return
	}
	if m.Worker >= 0 {
		env.ran = true
		env.call.Worker, env.call.Incarnation = int(m.Worker), m.Incarnation
	}
	env.finish(val, err)
}

// query answers a grain recovering its session: what this member backs up
// for it, and (from the session actor) the leases it holds.
func (g *gateway) query(ctx actor.Context, m *wire.Query) {
	g.m.replicaMu.Lock()
	replicas := g.m.replicas[m.Session]
	g.m.replicaMu.Unlock()
	r := g.m.rt.sessions.get(m.Session)
	if r == nil {
		ctx.Respond(&wire.Holding{Replicas: replicas})
		return
	}
	r.post(&leaseQuery{replicas: replicas, to: ctx.Sender()})
}

// streamControl hands a reader's ack or cancel to the session running its
// stream, which knows the stream by its reader (the sender) and id.
func (g *gateway) streamControl(ctx actor.Context, session string, c *streamControl) {
	if r := g.m.rt.sessions.get(session); r != nil {
		c.key.sender = pidKey(ctx.Sender())
		r.post(c)
	}
}
