package actors

import (
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/messages"
	"github.com/affinity-go/affinity/supervisor"
)

// poolSupervisor is the parent actor of a pool's workers. protoactor routes
// its children's failures to its supervisor strategy (restart with backoff,
// or stop for good), and it spawns and removes workers on resize.
type poolSupervisor struct{ p *pool }

type resizeRequest struct {
	size int
	done chan resizeResult
}

type resizeResult struct {
	from, to       int
	added, removed []*worker
}

// Receive implements actor.Actor.
func (s *poolSupervisor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *resizeRequest:
		m.done <- s.p.resize(ctx, m.size)
	case *actor.Stopped:
		close(s.p.supStopped)
	}
}

// start spawns the supervisor and the initial workers and waits until every
// worker has built its first incarnation.
func (p *pool) start() error {
	policy := p.rt.cfg.Restart
	if p.cfg.Restart != nil {
		policy = *p.cfg.Restart
	}
	p.strategy = supervisor.NewStrategy(policy, p.onDecision)
	props := actor.PropsFromProducer(func() actor.Actor { return &poolSupervisor{p: p} },
		actor.WithSupervisor(p.strategy))
	pid, err := p.rt.system.Root.SpawnNamed(props, "pool/"+p.cfg.Name)
	if err != nil {
		return fmt.Errorf("pool %q: %w", p.cfg.Name, err)
	}
	p.sup = pid
	req := &resizeRequest{size: p.cfg.Size, done: make(chan resizeResult, 1)}
	p.rt.system.Root.Send(pid, req)
	res := <-req.done
	var first error
	for _, w := range res.added {
		if err := <-w.started; err != nil && first == nil {
			first = fmt.Errorf("pool %q: worker %d: %w", p.cfg.Name, w.id, err)
		}
	}
	return first
}

// resize runs inside the supervisor actor.
func (p *pool) resize(ctx actor.Context, size int) resizeResult {
	p.mu.Lock()
	res := resizeResult{from: len(p.active)}
	if p.closed {
		p.mu.Unlock()
		res.to = res.from
		return res
	}
	for len(p.active) < size {
		w := &worker{pool: p, id: len(p.workers), started: make(chan error, 1), stopped: make(chan struct{}),
			mailbox: newMailbox(p.rt), runsOnCallers: !p.cfg.OwnGoroutineOnly}
		p.workers = append(p.workers, w)
		p.active = append(p.active, w)
		res.added = append(res.added, w)
	}
	var out notices
	var stop, poison []*actor.PID
	for len(p.active) > size {
		w := p.active[len(p.active)-1]
		if w.state == wsReady {
			poison = append(poison, w.pid) // after the calls already in its mailbox
		} else if w.pid != nil {
			stop = append(stop, w.pid)
		}
		out = append(out, p.takeOutOfService(w, wsRemoved)...)
		res.removed = append(res.removed, w)
	}
	res.to = len(p.active)
	p.publish()
	p.mu.Unlock()
	out.send()
	for _, pid := range poison {
		p.strategy.Forget(pid)
		ctx.Poison(pid)
	}
	for _, pid := range stop {
		p.strategy.Forget(pid)
		ctx.Stop(pid)
	}
	for _, w := range res.added {
		if _, err := ctx.SpawnNamed(p.workerProps(w), fmt.Sprintf("w%d", w.id)); err != nil {
			p.mu.Lock()
			p.takeOutOfService(w, wsFailed)
			p.mu.Unlock()
			w.started <- err
			close(w.stopped)
			w.mailbox.stop()
		}
	}
	return res
}

// onDecision runs in the supervisor when a worker failed.
func (p *pool) onDecision(child *actor.PID, reason messages.TaintReason, d supervisor.Decision) {
	if d.Directive != supervisor.Fail {
		return
	}
	p.mu.Lock()
	var w *worker
	for _, c := range p.workers {
		if c.pid != nil && c.pid.Id == child.Id {
			w = c
		}
	}
	var out notices
	if w != nil && w.state != wsRemoved && w.state != wsFailed {
		out = p.takeOutOfService(w, wsFailed)
	}
	p.mu.Unlock()
	if w == nil {
		return
	}
	out.send()
	p.stats.failed.Add(1)
	emitWorker(p.rt, messages.WorkerFailed{Pool: p.cfg.Name, Worker: w.id, Restarts: d.Restarts})
	p.rt.log.Error().Str("pool", p.cfg.Name).Int("worker", w.id).Str("reason", reason.String()).
		Int("restarts", d.Restarts).Msg("worker failed: restart budget exhausted; pool runs degraded")
}

// close stops the pool taking calls. The calls waiting for its workers sit
// in session actors, which Shutdown closes next: they fail there.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	p.closing.Store(true)
	p.dlMu.Lock()
	p.dlStopped = true
	if p.dlTimer != nil {
		p.dlTimer.Stop()
	}
	p.dlMu.Unlock()
	p.hintN.Add(-int32(p.hintRing.n))
	p.hintRing = waitRing{}
	for _, w := range p.workers {
		w.mu.Lock()
		w.waiters = waitRing{}
		w.nwait.Store(0)
		w.mu.Unlock()
	}
	drained := p.inflight.Load() == 0
	p.mu.Unlock()
	if drained {
		p.markDrained()
	}
}

func (p *pool) readyPIDs() []*actor.PID {
	p.mu.Lock()
	defer p.mu.Unlock()
	pids := make([]*actor.PID, 0, len(p.active))
	for _, w := range p.active {
		if w.state == wsReady {
			pids = append(pids, w.pid)
		}
	}
	return pids
}
