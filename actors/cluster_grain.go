package actors

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/proto"

	"github.com/affinity-go/affinity/internal/wire"
)

// sessionGrain is a session's cluster grain: a virtual actor, placed on a
// member by protoactor, whose identity is the session id. It is the
// session's directory: for each pool, which member holds the session's
// lease there, so that every member sends the session's calls in that pool
// to the same place. Calls themselves do not pass through it.
//
// protoactor stops a grain whenever a topology change moves it. Its entries
// survive that: the members holding leases know them, and the grain copies
// them to a backup member; a new activation asks every member before it
// answers (recovery). An entry whose member is gone is dead: strict calls
// fail with ErrSessionWorkerUnavailable rather than start afresh elsewhere.
type sessionGrain struct {
	m        *member
	id       string
	entries  map[string]*wire.Entry // by pool
	ready    bool                   // recovered
	held     []heldRequest          // requests that came before recovery
	granting map[string][]heldRequest
}

type heldRequest struct {
	msg    any
	sender *actor.PID
}

// recovered is what the members told a new activation.
type recovered struct{ holdings []*wire.Holding }

func (g *sessionGrain) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *cluster.ClusterInit:
		g.id = m.Identity.Identity
		g.entries, g.granting = map[string]*wire.Entry{}, map[string][]heldRequest{}
		g.recover(ctx.Self())
	case *recovered:
		g.merge(m.holdings)
		g.ready = true
		for _, h := range g.held {
			g.handle(ctx, h)
		}
		g.held = nil
	case *wire.Resolve, *wire.CloseSession:
		h := heldRequest{msg: m, sender: ctx.Sender()}
		if !g.ready {
			g.held = append(g.held, h)
			return
		}
		g.handle(ctx, h)
	}
}

func (g *sessionGrain) handle(ctx actor.Context, h heldRequest) {
	switch m := h.msg.(type) {
	case *wire.Resolve:
		g.resolve(ctx, m, h.sender)
	case *wire.CloseSession:
		g.close(ctx, h.sender)
	}
}

// recover asks every member, in a goroutine the runtime owns, what it holds
// for this session, and posts the answers back to the grain.
func (g *sessionGrain) recover(self *actor.PID) {
	rt := g.m.rt
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		rt.system.Root.Send(self, &recovered{holdings: g.m.holdings(g.id)})
	}()
}

// holdings asks every member what it holds for a session, within
// RequestTimeout, in turns of a fifth of it: a member that has not answered
// is asked again while it is in the topology, and given up on once it is
// not (a member that just died would otherwise hold up the grain, and the
// calls waiting for it, for the whole timeout). What a dead member held is
// lost with it; the others' replicas say that it lived there.
func (m *member) holdings(session string) []*wire.Holding {
	deadline := time.Now().Add(m.cfg.RequestTimeout)
	turn := m.turn()
	pending := m.members()
	var out []*wire.Holding
	for len(pending) > 0 {
		wait := min(turn, time.Until(deadline))
		if wait <= 0 {
			break
		}
		futures := make(map[string]*actor.Future, len(pending))
		for id, addr := range pending {
			futures[id] = m.rt.system.Root.RequestFuture(gatewayOf(addr), &wire.Query{Session: session}, wait)
		}
		for id, f := range futures {
			res, err := f.Result()
			if _, alive := m.addressOf(id); errors.Is(err, actor.ErrTimeout) && alive {
				m.turnsUnanswered.Add(1)
				continue // ask again
			}
			delete(pending, id)
			if h, ok := res.(*wire.Holding); ok && err == nil {
				out = append(out, h)
			}
		}
	}
	return out
}

// merge rebuilds the entries: a lease a member reports is live; a backed-up
// entry of a member that is gone is dead; a backed-up entry of a live
// member that no longer holds the lease is dropped (that member ended the
// session there, so a fresh start is what a single runtime would do).
func (g *sessionGrain) merge(holdings []*wire.Holding) {
	for _, h := range holdings {
		for _, e := range h.Leases {
			g.entries[e.Pool] = e
		}
	}
	for _, h := range holdings {
		for _, e := range h.Replicas {
			if _, live := g.entries[e.Pool]; live {
				continue
			}
			if _, alive := g.m.addressOf(e.Member); !alive || e.Dead {
				dead := proto.Clone(e).(*wire.Entry)
				dead.Dead = true
				g.entries[e.Pool] = dead
			}
		}
	}
}

// resolve answers where the session's pool lives, binding it to a member
// first when it has no live place yet.
func (g *sessionGrain) resolve(ctx actor.Context, m *wire.Resolve, sender *actor.PID) {
	e := g.entries[m.Pool]
	if e == nil && m.Stale != nil && m.Stale.Dead && m.Stale.Lease != 0 {
		// The caller saw the session live on a member that is leaving,
		// though this activation found no trace of it: the state goes
		// with that member, so it is a loss, not a fresh start.
		e = proto.Clone(m.Stale).(*wire.Entry)
		g.entries[m.Pool] = e
		g.replicate()
	}
	if e != nil && m.Stale != nil && m.Stale.Member == e.Member && m.Stale.Lease == e.Lease {
		if m.Stale.Dead { // the member is leaving: its state goes with it
			e.Dead = true
			g.replicate()
		} else { // the member ended the session there
			delete(g.entries, m.Pool)
			e = nil
		}
	}
	if e != nil && !e.Dead {
		if _, alive := g.m.addressOf(e.Member); !alive {
			e.Dead = true
			g.replicate()
		}
	}
	if e != nil && (!e.Dead || Affinity(m.Affinity) != Hint) {
		ctx.Send(sender, &wire.Resolved{Entry: e})
		return
	}
	g.bind(ctx, m, sender)
}

// bind grants the session's lease in a pool to a member, then answers every
// request that waited for it. Only one grant per pool is in flight.
func (g *sessionGrain) bind(ctx actor.Context, m *wire.Resolve, sender *actor.PID) {
	waiting, busy := g.granting[m.Pool]
	g.granting[m.Pool] = append(waiting, heldRequest{msg: m, sender: sender})
	if !busy {
		g.grant(ctx, m.Pool, g.newGrantTry())
	}
}

// maxGrantLosses bounds how often one bind adopts a place that turns out
// lost (its member gone) and offers the lease again.
const maxGrantLosses = 2

// grantRetryPause is how long a bind waits when every member left to ask
// is still joining (protoactor's StartMember takes a second).
const grantRetryPause = 50 * time.Millisecond

// grantTry is one bind's progress. A member that refused as leaving, or
// left the topology while asked, is skipped for good; one that is still
// joining is skipped until every member has been asked, then asked again
// after a pause, until the bind's time (the cluster's RequestTimeout) runs
// out.
type grantTry struct {
	leaving  map[string]bool
	joining  map[string]bool
	losses   int
	deadline time.Time
}

func (g *sessionGrain) newGrantTry() *grantTry {
	return &grantTry{leaving: map[string]bool{}, joining: map[string]bool{}, deadline: time.Now().Add(g.m.cfg.RequestTimeout)}
}

func (t *grantTry) skips(id string) bool { return t.leaving[id] || t.joining[id] }

// grant offers the lease to the member chosen for the session among those
// t does not skip.
func (g *sessionGrain) grant(ctx actor.Context, pool string, t *grantTry) {
	id, addr, ok := g.m.choose(g.id, t.skips)
	if !ok && len(t.joining) > 0 && time.Now().Add(grantRetryPause).Before(t.deadline) {
		clear(t.joining)
		ctx.ReenterAfter(actor.NewFuture(ctx.ActorSystem(), grantRetryPause), func(any, error) { g.grant(ctx, pool, t) })
		return
	}
	if !ok || t.losses > maxGrantLosses {
		g.answerGrant(ctx, pool, &wire.Resolved{Error: encodeError(fmt.Errorf("%w: no cluster member took the session", ErrNoWorkersAvailable))})
		return
	}
	g.offer(ctx, pool, t, &wire.Entry{Pool: pool, Member: id, Address: addr, Lease: rand.Uint64() | 1})
}

// offer sends a member the grant of lease e and waits for its answer in
// short turns: a member that died is passed over once the topology drops
// it, not after the whole RequestTimeout (which was a waiting call's whole
// time too); a live but slow one gets the same grant again, which it takes
// as the first (one lease, one session).
func (g *sessionGrain) offer(ctx actor.Context, pool string, t *grantTry, e *wire.Entry) {
	id := e.Member
	wait := min(time.Until(t.deadline), g.m.turn())
	if wait <= 0 {
		g.answerGrant(ctx, pool, &wire.Resolved{Error: encodeError(fmt.Errorf("%w: member %s did not take the session in time", ErrNoWorkersAvailable, id))})
		return
	}
	f := ctx.RequestFuture(gatewayOf(e.Address), &wire.Grant{Session: g.id, Entry: e}, wait)
	ctx.ReenterAfter(f, func(res any, err error) {
		r, _ := res.(*wire.Resolved)
		switch {
		case errors.Is(err, actor.ErrTimeout):
			g.m.turnsUnanswered.Add(1)
			if _, alive := g.m.addressOf(id); alive {
				g.offer(ctx, pool, t, e)
				return
			}
			t.leaving[id] = true
			g.grant(ctx, pool, t)
		case err == nil && r != nil && r.Entry != nil:
			g.adopt(ctx, pool, r.Entry, t)
		case err == nil && r != nil && r.Error.GetCode() == codeNotReady:
			t.joining[id] = true
			g.grant(ctx, pool, t)
		case err == nil && r != nil && r.Error.GetCode() == codeLeaving:
			t.leaving[id] = true
			g.grant(ctx, pool, t)
		case err != nil || r != nil:
			g.answerGrant(ctx, pool, &wire.Resolved{Error: encodeError(fmt.Errorf("%w: member %s did not take the session: %v %v", ErrNoWorkersAvailable, id, res, err))})
		default:
			g.entries[pool] = e
			g.replicate()
			g.answerGrant(ctx, pool, &wire.Resolved{Entry: e})
		}
	})
}

// adopt takes the place a member named instead of taking the lease: the
// session already lives there, or lived on a member now gone. A lost place
// is kept (strict calls and refs must learn of the loss); calls in hint
// mode then get a fresh grant.
func (g *sessionGrain) adopt(ctx actor.Context, pool string, e *wire.Entry, t *grantTry) {
	if _, alive := g.m.addressOf(e.Member); !alive {
		e.Dead = true
	}
	g.entries[pool] = e
	g.replicate()
	if !e.Dead {
		g.answerGrant(ctx, pool, &wire.Resolved{Entry: e})
		return
	}
	var rebind []heldRequest
	for _, h := range g.granting[pool] {
		if r, ok := h.msg.(*wire.Resolve); ok && Affinity(r.Affinity) == Hint {
			rebind = append(rebind, h)
			continue
		}
		ctx.Send(h.sender, &wire.Resolved{Entry: e})
	}
	if len(rebind) == 0 {
		delete(g.granting, pool)
		return
	}
	g.granting[pool] = rebind
	t.losses++
	g.grant(ctx, pool, t)
}

func (g *sessionGrain) answerGrant(ctx actor.Context, pool string, r *wire.Resolved) {
	for _, h := range g.granting[pool] {
		ctx.Send(h.sender, r)
	}
	delete(g.granting, pool)
}

// close ends the session on every member holding one of its leases, and
// forgets it.
func (g *sessionGrain) close(ctx actor.Context, sender *actor.PID) {
	entries := make([]*wire.Entry, 0, len(g.entries))
	for _, e := range g.entries {
		entries = append(entries, e)
	}
	for _, e := range entries {
		if addr, alive := g.m.addressOf(e.Member); alive {
			ctx.Send(gatewayOf(addr), &wire.Revoke{Session: g.id, Entries: entries})
		}
	}
	clear(g.entries)
	g.replicate()
	ctx.Send(sender, &wire.Closed{})
}

// replicate copies the entries to every member, so that they outlive the
// grain's activation, its member, and members that leave one after another
// (a new activation asks every member). Entries change when a session binds or
// closes, not per call.
func (g *sessionGrain) replicate() {
	entries := make([]*wire.Entry, 0, len(g.entries))
	for _, e := range g.entries {
		entries = append(entries, e)
	}
	msg := &wire.Replicate{Session: g.id, Entries: entries}
	for _, addr := range g.m.members() { // this one too: the grain may move while its member stays
		g.m.rt.system.Root.Send(gatewayOf(addr), msg)
	}
}

// choose picks a live member for key by rendezvous hashing, among those
// skip does not name: each member gets an even share of keys, and a member
// joining or leaving moves only its own share.
func (m *member) choose(key string, skip func(id string) bool) (id, address string, ok bool) {
	var best uint64
	k := hash64(key)
	for mid, addr := range m.members() {
		if skip(mid) {
			continue
		}
		if s := mix64(k ^ hash64(mid)); !ok || s > best {
			best, id, address, ok = s, mid, addr, true
		}
	}
	return id, address, ok
}

func hash64(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return h.Sum64()
}

// mix64 is splitmix64's finalizer: FNV alone orders members the same way
// for most keys, which would put every session on one member.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ (x >> 31)
}
