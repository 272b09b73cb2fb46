package actors

import (
	"slices"
	"sync/atomic"

	"github.com/affinity-go/affinity/messages"
)

type poolStats struct {
	dispatched    [messages.AffinityCount][messages.OutcomeCount]atomic.Uint64
	executed      atomic.Uint64
	execErrors    atomic.Uint64
	saturated     atomic.Uint64
	queueTimeouts atomic.Uint64
	cancelled     atomic.Uint64
	tainted       [messages.TaintReasonCount]atomic.Uint64
	restarts      atomic.Uint64
	failed        atomic.Uint64
	resizes       atomic.Uint64
	bindings      atomic.Uint64
	rebinds       atomic.Uint64
}

// PoolStats is a snapshot of one pool's counters and gauges.
type PoolStats struct {
	Dispatched [messages.OutcomeCount]uint64 // by messages.Outcome
	// DispatchedByMode splits Dispatched by the call's affinity mode
	// (indexed by messages.Affinity; DefaultAffinity stays 0).
	DispatchedByMode [messages.AffinityCount][messages.OutcomeCount]uint64
	Exec, Wait       Histogram // with Config.RecordTimings; see TimingBuckets and TimingSampleEvery
	Executed         uint64    // calls a worker finished (incl. errors)
	ExecErrors       uint64    // of which returned an error or panicked
	Saturated        uint64    // refused with ErrPoolSaturated
	QueueTimeouts    uint64    // gave up with ErrQueueTimeout
	Cancelled        uint64    // caller's context ended first
	Tainted          [messages.TaintReasonCount]uint64
	Restarts         uint64 // new incarnations after a taint
	Failed           uint64 // workers out of restart budget
	Resizes          uint64
	Bindings         uint64        // sessions bound to a worker (first binding or rebind)
	Rebinds          uint64        // bindings dropped because their worker was lost (hint)
	Size             int           // workers neither removed nor failed
	Ready            int           // of which taking calls
	Queued           int           // calls waiting now
	Inflight         int           // calls running now
	Workers          []WorkerStats // by worker id; removed and failed workers are left out
}

// WorkerStats is a snapshot of one worker.
type WorkerStats struct {
	ID          int
	State       string // starting, ready or restarting
	Incarnation uint64 // 0 before its first start
	Inflight    int    // calls running on it now (and slots reserved for waiting calls)
	Waiting     int    // sessions with calls waiting for it
	Bound       int    // sessions bound to its current incarnation
	Calls       uint64 // calls it ran, every incarnation
	LastTaint   string // why its last incarnation was tainted; "" if never
}

// Stats is a snapshot of the runtime's counters. Reading it is cheap: a few
// atomic loads per counter, and each pool's lock held for a moment.
type Stats struct {
	Pools           map[string]PoolStats
	Sessions        int // live sessions (activated or passivated)
	SessionActors   int // of which have a running session actor (not passivated)
	SessionsCreated uint64
	Cleanups        [messages.CleanupSourceCount]uint64 // by messages.CleanupSource
}

// Stats returns a snapshot of the runtime's counters.
func (rt *Runtime) Stats() Stats {
	st := Stats{Pools: make(map[string]PoolStats, len(rt.pools)), SessionsCreated: rt.sessionsCreated.Load()}
	for i := range st.Cleanups {
		st.Cleanups[i] = rt.cleanups[i].Load()
	}
	st.Sessions, st.SessionActors = rt.liveSessionActors()
	for _, p := range rt.pools {
		var ps PoolStats
		for i := range ps.Dispatched {
			for m := range ps.DispatchedByMode {
				n := p.stats.dispatched[m][i].Load()
				ps.DispatchedByMode[m][i] = n
				ps.Dispatched[i] += n
			}
		}
		for i := range ps.Tainted {
			ps.Tainted[i] = p.stats.tainted[i].Load()
		}
		if rt.cfg.RecordTimings {
			ps.Exec, ps.Wait = p.timings.exec.snapshot(), p.timings.wait.snapshot()
		}
		ps.Executed = p.stats.executed.Load()
		ps.ExecErrors = p.stats.execErrors.Load()
		ps.Saturated = p.stats.saturated.Load()
		ps.QueueTimeouts = p.stats.queueTimeouts.Load()
		ps.Cancelled = p.stats.cancelled.Load()
		ps.Restarts = p.stats.restarts.Load()
		ps.Failed = p.stats.failed.Load()
		ps.Resizes = p.stats.resizes.Load()
		ps.Bindings = p.stats.bindings.Load()
		ps.Rebinds = p.stats.rebinds.Load()
		p.mu.Lock()
		ps.Size = len(p.active)
		ps.Workers = make([]WorkerStats, 0, len(p.active))
		for _, w := range p.active {
			if w.state == wsReady {
				ps.Ready++
			}
			ps.Workers = append(ps.Workers, WorkerStats{ID: w.id, State: w.state.String(), Incarnation: w.incarnation,
				Inflight: int(w.inflight.Load()), Waiting: int(w.nwait.Load()), Bound: w.bound, Calls: w.calls.Load(), LastTaint: w.lastTaint})
		}
		slices.SortFunc(ps.Workers, func(a, b WorkerStats) int { return a.ID - b.ID })
		ps.Queued, ps.Inflight = int(p.queued.Load()), int(p.inflight.Load())
		p.mu.Unlock()
		st.Pools[p.cfg.Name] = ps
	}
	return st
}
