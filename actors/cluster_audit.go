package actors

import (
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/internal/wire"
)

// Calls lost between members. protoactor's remote layer drops the batch it
// was sending when a connection breaks, and what is sent while it
// reconnects; no event tells the sender of a call, or the member whose
// reply was lost, which messages went. A call waiting for such a reply
// would wait forever when its context has no deadline. So each member
// audits the calls it sent: every RequestTimeout it asks each member about
// the calls sent there before the previous audit, and fails those the
// other member has no record of, with ErrWorkerFailed (it may have run).
//
// Why an answer is exact: the Audit leaves after the calls it names, on
// the same path (this member's remote endpoint for that address, in
// order), so the other member's gateway has registered every one of them
// that arrived. That member sends a call's Reply before it forgets the
// call, and the AuditResult to the same gateway the Reply goes to, so a
// Reply sent before the audit is handled before its result.

// inboundKey names a call another member sent here: the address of its
// gateway and the call's id there.
type inboundKey struct {
	from string
	id   uint64
}

// admitInbound records a call from another member until it is answered.
func (m *member) admitInbound(from *actor.PID, id uint64) {
	m.inboundMu.Lock()
	m.inbound[inboundKey{from.GetAddress(), id}] = struct{}{}
	m.inboundMu.Unlock()
}

// answerInbound sends a call's reply, then forgets the call: in that order,
// so an audit that no longer finds the call follows its reply.
func (m *member) answerInbound(to *actor.PID, r *wire.Reply) {
	if drop := m.testDrop.Load(); drop == nil || !(*drop)(r) {
		m.rt.system.Root.Send(to, r)
	}
	m.inboundMu.Lock()
	delete(m.inbound, inboundKey{to.GetAddress(), r.Id})
	m.inboundMu.Unlock()
}

// markSent records that a tracked call went to the remote layer, in this
// audit generation: from the next but one audit on, it is asked about.
func (m *member) markSent(id uint64) {
	m.pendMu.Lock()
	if rc, ok := m.pending[id]; ok {
		rc.sentIn = m.auditGen.Load() + 1
		m.pending[id] = rc
	}
	m.pendMu.Unlock()
}

// auditCalls runs until the runtime stops, auditing every interval.
func (m *member) auditCalls(interval time.Duration) {
	defer m.rt.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-m.rt.ctx.Done():
			return
		case <-t.C:
			m.audit()
		}
	}
}

// audit asks each member about the calls sent there before the last audit.
func (m *member) audit() {
	gen := m.auditGen.Add(1)
	byMember := map[string][]uint64{}
	m.pendMu.Lock()
	for id, rc := range m.pending {
		if rc.sentIn != 0 && rc.sentIn < gen {
			byMember[rc.member] = append(byMember[rc.member], id)
		}
	}
	m.pendMu.Unlock()
	for id, ids := range byMember {
		slices.Sort(ids)
		m.aliveMu.RLock()
		if addr, ok := m.alive[id]; ok {
			for chunk := range slices.Chunk(ids, maxAuditIDs) {
				m.rt.system.Root.RequestWithCustomSender(gatewayOf(addr), &wire.Audit{Ids: chunk}, m.gateway)
			}
		}
		m.aliveMu.RUnlock()
	}
}

// maxAuditIDs bounds an Audit message (about 80 KB): gRPC refuses messages
// over 4 MB, and protoactor then drops the whole batch it was sending.
const maxAuditIDs = 10_000

// answerAudit tells the sender of an Audit which of its calls this member
// has no record of.
func (g *gateway) answerAudit(ctx actor.Context, a *wire.Audit) {
	m := g.m
	from := ctx.Sender().GetAddress()
	var unknown []uint64
	m.inboundMu.Lock()
	for _, id := range a.Ids {
		if _, ok := m.inbound[inboundKey{from, id}]; !ok {
			unknown = append(unknown, id)
		}
	}
	m.inboundMu.Unlock()
	m.auditedKnown.Add(int64(len(a.Ids) - len(unknown)))
	if len(unknown) > 0 {
		ctx.Send(ctx.Sender(), &wire.AuditResult{Unknown: unknown})
	}
}

// lostCalls fails the calls another member said it has no record of.
func (g *gateway) lostCalls(r *wire.AuditResult) {
	for _, id := range r.Unknown {
		rc, ok := g.m.untrack(id)
		if !ok {
			continue // answered after all
		}
		g.m.callsLost.Add(1)
		rc.env.finish(nil, &callError{sentinel: ErrWorkerFailed, pool: rc.env.pool.cfg.Name, session: rc.env.call.Session,
			worker: -1, detail: "member " + rc.member + " has no record of the call: it or its reply was lost between members"})
	}
}
