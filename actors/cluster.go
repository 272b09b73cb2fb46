package actors

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/affinity-go/affinity/internal/wire"
)

// ClusterConfig makes a runtime a member of a protoactor cluster: sessions
// become cluster grains, reachable from every member, while workers stay
// local actors of the member that runs them.
type ClusterConfig struct {
	// Name is the cluster's name; members of one cluster share it.
	Name string
	// Provider finds the other members: protoactor's test provider
	// (in-memory, one process), automanaged (a static list of hosts), or
	// consul, etcd, Kubernetes and ZooKeeper for production.
	Provider cluster.ClusterProvider
	// Host and Port are where the member listens for other members.
	// Default 127.0.0.1 and a free port.
	Host string
	Port int
	// RequestTimeout bounds one request to a session's grain or to another
	// member's directory. It is also how often a member audits the calls
	// it forwarded: one lost between members (with a broken connection)
	// fails with ErrWorkerFailed within two of it. Default 5 s.
	RequestTimeout time.Duration
}

// DefaultClusterRequestTimeout is ClusterConfig.RequestTimeout's default.
const DefaultClusterRequestTimeout = 5 * time.Second

// ErrPayloadNotPortable: a payload or result of a call that crosses cluster
// members is of a type the cluster codec cannot carry. Portable: nil,
// []byte, string, int, protobuf messages and Ref.
var ErrPayloadNotPortable = wire.ErrNotPortable

const (
	sessionKind = "affinity.session"
	gatewayName = "affinity.gateway"
	// gatewayThroughput: messages a gateway turn takes before yielding.
	gatewayThroughput = 300
)

func (c *ClusterConfig) validate(bad func(string, ...any)) {
	if c.Name == "" {
		bad("cluster: empty name")
	}
	if c.Provider == nil {
		bad("cluster: nil provider")
	}
	if c.Port < 0 || c.Port > 65535 {
		bad("cluster: port %d out of range", c.Port)
	}
	if c.RequestTimeout < 0 {
		bad("cluster: negative request timeout %v", c.RequestTimeout)
	}
}

func (c ClusterConfig) withDefaults() ClusterConfig {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultClusterRequestTimeout
	}
	return c
}

// member is a runtime's part of a cluster: the protoactor cluster, the
// gateway through which other members reach this one, the view of which
// members are alive, and the calls this member sent elsewhere.
type member struct {
	rt      *Runtime
	cfg     ClusterConfig
	c       *cluster.Cluster
	id      string // protoactor member id: unique per process start
	address string
	gateway *actor.PID
	sub     *eventstream.Subscription

	nextID  atomic.Uint64
	pendMu  sync.Mutex
	pending map[uint64]remoteCall // calls sent to other members, by id

	// owners places session grains as protoactor's disthash does: the
	// topology's members, by rendezvous hashing (see grainPID).
	owners *cluster.Rendezvous

	// aliveMu is held for reading across each call sent to another member
	// (sendCall), so that depart knows the calls already sent.
	aliveMu  sync.RWMutex
	alive    map[string]string // member id -> address
	departed map[string]bool   // members that announced they are leaving

	replicaMu sync.Mutex
	replicas  map[string][]*wire.Entry // grain entries this member backs up

	// The streams read here whose worker is on another member.
	readersMu     sync.Mutex
	readers       map[*streamReader]*actor.PID
	readersClosed bool

	// ready is set once the member has joined: protoactor's StartMember
	// registers the member, then sleeps a second before returning, and
	// other members call during that second.
	ready   atomic.Bool
	leaving atomic.Bool
	// grantsRefusedJoining counts the leases refused while not ready;
	// turnsUnanswered, the turns in which a grain here waited in vain for
	// a member's answer to a lease offer or a query.
	grantsRefusedJoining, turnsUnanswered atomic.Int64
	// itemMessages counts the StreamItems messages read here.
	itemMessages atomic.Int64

	// The calls other members sent here, until answered (cluster_audit.go).
	inboundMu sync.Mutex
	inbound   map[inboundKey]struct{}
	auditGen  atomic.Uint64 // audits of this member's own calls so far
	// auditedKnown counts the calls others audited that were known here;
	// callsLost, this member's calls failed because they were not.
	auditedKnown, callsLost atomic.Int64
	// testDrop, when set, drops the messages it returns true for, at the
	// gateway and in answerInbound: tests lose messages with it.
	testDrop atomic.Pointer[func(any) bool]
}

// remoteCall is a call this member sent to another one.
type remoteCall struct {
	env    *envelope
	member string
	sentIn uint64 // 1 + the audit generation it was sent in; 0: not sent yet
}

// startMember joins the cluster. protoactor's StartMember sleeps a second.
func (rt *Runtime) startMember(cc ClusterConfig) error {
	m := &member{rt: rt, cfg: cc, pending: map[uint64]remoteCall{}, alive: map[string]string{}, departed: map[string]bool{},
		replicas: map[string][]*wire.Entry{}, readers: map[*streamReader]*actor.PID{}, inbound: map[inboundKey]struct{}{},
		owners: cluster.NewRendezvous()}
	kind := cluster.NewKind(sessionKind, actor.PropsFromProducer(func() actor.Actor { return &sessionGrain{m: m} }))
	cfg := cluster.Configure(cc.Name, cc.Provider, disthash.New(), remote.Configure(cc.Host, cc.Port),
		// protoactor's own requests (finding a grain's activation) get a
		// fifth: asking a member that just died must not eat a call's time.
		cluster.WithKinds(kind), cluster.WithRequestTimeout(max(cc.RequestTimeout/5, 200*time.Millisecond)))
	m.c = cluster.New(rt.system, cfg)
	// The gateway exists before the member joins: others may call at once.
	// It runs on the goroutine that posts to it (the remote layer's reader,
	// mostly): its turns are short and never block, and a goroutine
	// hand-off per message was a sixth of a remote call's time.
	gw := actor.PropsFromProducer(func() actor.Actor { return &gateway{m: m} },
		actor.WithDispatcher(actor.NewSynchronizedDispatcher(gatewayThroughput)))
	if _, err := rt.system.Root.SpawnNamed(gw, gatewayName); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	m.sub = rt.system.EventStream.Subscribe(m.onEvent)
	rt.member = m
	if err := startClusterMember(m.c); err != nil {
		return err
	}
	m.id, m.address = rt.system.ID, rt.system.Address()
	m.gateway = actor.NewPID(m.address, gatewayName)
	m.setAlive(m.c.MemberList.Members().Members())
	m.ready.Store(true)
	rt.wg.Add(1)
	go m.auditCalls(cc.RequestTimeout)
	return nil
}

// memberStarts serializes member starts within a process: protoactor's
// remote start sets gRPC's process-global logger, a data race when two
// members of one process start at once.
var memberStarts sync.Mutex

// startClusterMember turns protoactor's panics on a failed start (a port in
// use, say) into an error.
func startClusterMember(c *cluster.Cluster) (err error) {
	memberStarts.Lock()
	defer memberStarts.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cluster: start member: %v", r)
		}
	}()
	c.StartMember()
	return nil
}

// onEvent follows the topology: calls sent to a member that left fail, and
// so do the streams read from there.
func (m *member) onEvent(evt any) {
	t, ok := evt.(*cluster.ClusterTopology)
	if !ok {
		return
	}
	m.setAlive(t.Members)
	for _, left := range t.Left {
		m.failPendingOn(left.Id)
		m.readersLost(left)
	}
}

// setAlive takes the topology's members, less those that announced they
// are leaving (the provider may list them for a while yet).
func (m *member) setAlive(members []*cluster.Member) {
	m.owners.UpdateMembers(members)
	alive := make(map[string]string, len(members))
	m.aliveMu.Lock()
	defer m.aliveMu.Unlock()
	for _, mb := range members {
		if !m.departed[mb.Id] {
			alive[mb.Id] = mb.Address()
		}
	}
	for id := range m.departed {
		if !slices.ContainsFunc(members, func(mb *cluster.Member) bool { return mb.Id == id }) {
			delete(m.departed, id) // gone from the topology too: nothing more to filter
		}
	}
	m.alive = alive
}

// depart takes a member that announced it is leaving out of the routes.
// Once it returns, every call sent there before has been handed to the
// remote layer, ahead of anything this member sends it next.
func (m *member) depart(id string) {
	m.aliveMu.Lock()
	delete(m.alive, id)
	m.departed[id] = true
	m.aliveMu.Unlock()
}

// sendCall sends msg to member id's gateway on behalf of from, the actor
// its answer goes to, unless that member is gone (sent false) or has
// announced it is leaving (leaving true).
func (m *member) sendCall(id string, msg *wire.Call, from *actor.PID) (sent, leaving bool) {
	m.aliveMu.RLock()
	defer m.aliveMu.RUnlock()
	addr, ok := m.alive[id]
	if !ok {
		return false, m.departed[id]
	}
	m.rt.system.Root.RequestWithCustomSender(gatewayOf(addr), msg, from)
	return true, false
}

// addressOf returns a live member's address.
func (m *member) addressOf(id string) (string, bool) {
	m.aliveMu.RLock()
	defer m.aliveMu.RUnlock()
	a, ok := m.alive[id]
	return a, ok
}

// members returns the live members' ids and addresses.
func (m *member) members() map[string]string {
	m.aliveMu.RLock()
	defer m.aliveMu.RUnlock()
	out := make(map[string]string, len(m.alive))
	for id, a := range m.alive {
		out[id] = a
	}
	return out
}

// ClusterMembers returns how many members this runtime's cluster has as far
// as it knows, itself included; 0 outside a cluster.
func (rt *Runtime) ClusterMembers() int {
	if rt.member == nil {
		return 0
	}
	return len(rt.member.members())
}

func gatewayOf(address string) *actor.PID { return actor.NewPID(address, gatewayName) }

// track registers a call sent to another member and returns its id.
func (m *member) track(env *envelope, memberID string) uint64 {
	id := m.nextID.Add(1)
	m.pendMu.Lock()
	m.pending[id] = remoteCall{env: env, member: memberID}
	m.pendMu.Unlock()
	return id
}

// untrack returns the call with this id, once.
func (m *member) untrack(id uint64) (remoteCall, bool) {
	m.pendMu.Lock()
	defer m.pendMu.Unlock()
	rc, ok := m.pending[id]
	delete(m.pending, id)
	return rc, ok
}

// failPendingOn fails the calls sent to a member that left: it may have run
// them or not, and will never answer.
func (m *member) failPendingOn(memberID string) {
	var failed []remoteCall
	m.pendMu.Lock()
	for id, rc := range m.pending {
		if rc.member == memberID {
			failed = append(failed, rc)
			delete(m.pending, id)
		}
	}
	m.pendMu.Unlock()
	for _, rc := range failed {
		rc.env.finish(nil, &callError{sentinel: ErrWorkerFailed, pool: rc.env.pool.cfg.Name,
			session: rc.env.call.Session, worker: -1, detail: "member " + memberID + " left the cluster"})
	}
}

// failAllPending ends every call still waiting for another member.
func (m *member) failAllPending(err error) {
	m.pendMu.Lock()
	failed := m.pending
	m.pending = map[uint64]remoteCall{}
	m.pendMu.Unlock()
	for _, rc := range failed {
		rc.env.finish(nil, err)
	}
}

// leave takes the member out of the cluster. Calls from other members that
// arrive meanwhile are refused as "leaving", which their senders treat as
// the member gone.
func (m *member) leave() {
	m.leaving.Store(true)
	m.rt.system.EventStream.Unsubscribe(m.sub)
	m.failAllPending(fmt.Errorf("%w: member shutting down", ErrShutdown))
	// Tell the others first: once they have all answered, none sends
	// this member another call.
	m.askOthers(&wire.Leaving{Member: m.id})
	// The gateway refuses what reached it before the others stopped
	// sending; the flush then delivers those refusals.
	_, _ = m.rt.system.Root.RequestFuture(m.gateway, &wire.Query{}, m.cfg.RequestTimeout).Result()
	m.askOthers(&wire.Query{})
	// protoactor's graceful Shutdown sleeps 2 s and then waits up to 10 s
	// for gRPC to stop when another member crashed earlier. Leave the
	// membership first (what graceful adds), then stop without waiting:
	// flush has already delivered what mattered.
	if err := m.cfg.Provider.Shutdown(true); err != nil {
		m.rt.log.Warn().Err(err).Msg("cluster provider shutdown")
	}
	m.c.Shutdown(false)
}

// askOthers sends msg to every other member's gateway and returns once
// each has answered, or did not in time (it is gone or going).
//
// With a Query it is a flush: every other gateway has then processed what
// this member sent it before (replies to their calls above all), since
// delivery between two actors is in order. A leaving member needs that:
// protoactor shuts the actor system down first thing when a member leaves,
// dropping what its remote endpoints have not sent yet.
func (m *member) askOthers(msg any) {
	var futures []*actor.Future
	for id, addr := range m.members() {
		if id != m.id {
			futures = append(futures, m.rt.system.Root.RequestFuture(gatewayOf(addr), msg, m.cfg.RequestTimeout))
		}
	}
	for _, f := range futures {
		_, _ = f.Result()
	}
}
