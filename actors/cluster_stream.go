package actors

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"

	"github.com/affinity-go/affinity/internal/wire"
	"github.com/affinity-go/affinity/messages"
)

// Streams across members. The caller's member (the reader's) spawns a
// streamReader per stream, which sends the call to the worker's member and
// receives the stream's messages (see wire.Call). It hands the items to a
// Session.Stream, or, for the message API's StreamRequest, relays them to
// the requesting actor as messages.StreamItem. The worker's member runs
// the stream as an actorStream whose receiver is that reader: items are
// encoded and sent at most a window ahead of the reader's acks. Each side
// watches the other: the reader watches the worker member's gateway, the
// worker's session actor watches the reader, so that either member going
// away ends the stream on the other side. protoactor reports a watched
// actor terminated when the connection to its member drops, and when the
// topology drops its member (a cut network closes no connection).

// clusterStreamWindow is how many items of a stream the worker's member
// sends ahead of what the reader took; the reader acks every half window.
// Fixed: it bounds what a slow reader's member buffers (one window per
// stream) while a fast one rarely waits for an ack's round trip.
const clusterStreamWindow = 64

// streamAcks acks, every half window, the items a stream's reader took.
type streamAcks struct {
	send         func(items uint64)
	every        uint64 // half the window, at least 1
	taken, acked uint64 // by the reading goroutine only
}

func (a *streamAcks) took() {
	a.taken++
	if a.taken-a.acked >= a.every {
		a.acked = a.taken
		a.send(a.taken)
	}
}

// streamReader is the reading end, on the caller's member, of a stream
// whose worker is on another member. It alone starts, feeds and ends the
// caller's Stream, which gives the stream its one outcome.
type streamReader struct {
	m       *member
	env     *envelope
	call    *wire.Call
	target  string     // the worker's member
	gw      *actor.PID // its gateway
	started bool
	done    bool
	next    uint64      // seq of the next item
	acks    *streamAcks // once started
	stopCtx func() bool // stops the watch on the caller's context
}

// Messages to a stream reader from its own member.
type (
	readerCancelled struct{}                // the caller closed the stream or its context ended
	readerAck       struct{ items uint64 }  // a StreamRequest's receiver acked its first items
	readerPeerGone  struct{ detail string } // the worker's member went away
	readerShutdown  struct{}                // this member is shutting down
)

// forwardStream sends a streaming call to target, through a new reader.
func (m *member) forwardStream(env *envelope, target string, call *wire.Call) {
	call.Id, call.Window = m.nextID.Add(1), clusterStreamWindow
	if s := env.astream; s != nil {
		if s.window > 0 { // the receiver's own acks pace the worker
			call.Window = uint32(min(s.window, uint64(^uint32(0))))
		}
	} else {
		call.Window = uint32(cmp.Or(env.stream.window, clusterStreamWindow))
		// Room for a whole window: the reader's turn never waits for Recv.
		env.stream.items = make(chan any, call.Window)
	}
	r := &streamReader{m: m, env: env, call: call, target: target}
	// On the goroutine that posts to it, as the gateway: its turns are
	// short and never block.
	props := actor.PropsFromProducer(func() actor.Actor { return r },
		actor.WithDispatcher(actor.NewSynchronizedDispatcher(gatewayThroughput)))
	pid := m.rt.system.Root.Spawn(props)
	if s := env.astream; s != nil {
		s.relay = pid // for the receiver's acks (see actorStream.ack)
	}
}

func (r *streamReader) Receive(ctx actor.Context) {
	if r.done {
		return
	}
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		r.start(ctx)
	case *wire.StreamStarted:
		r.onStarted(ctx, msg)
	case *wire.StreamItems:
		r.onItems(ctx, msg)
	case *wire.StreamEnd:
		r.onEnd(ctx, msg.Error)
	case *wire.Reply: // refused before it started
		r.onEnd(ctx, msg.Error)
	case *actor.Terminated:
		// A system message, which overtakes what the member sent before
		// it went: handle it after those.
		ctx.Send(ctx.Self(), &readerPeerGone{detail: "the connection to member " + r.target + " was lost"})
	case *readerPeerGone:
		r.end(ctx, r.env.fail(ErrWorkerFailed, msg.detail))
	case *readerCancelled:
		r.abort(ctx, context.Cause(r.env.ctx))
	case *readerAck:
		if r.started {
			r.acks.send(msg.items)
		}
	case *readerShutdown, *actor.Stopping:
		r.abort(ctx, fmt.Errorf("%w: member shutting down", ErrShutdown))
	}
}

// start watches the worker's member and sends it the call.
func (r *streamReader) start(ctx actor.Context) {
	m, self := r.m, ctx.Self()
	m.rt.wg.Add(1) // until end
	addr, alive := m.addressOf(r.target)
	switch {
	case !m.addReader(r, self):
		r.end(ctx, fmt.Errorf("%w: member shutting down", ErrShutdown))
		return
	case !alive:
		r.end(ctx, r.env.fail(ErrWorkerFailed, "member "+r.target+" left the cluster"))
		return
	}
	r.gw = gatewayOf(addr)
	ctx.Watch(r.gw)
	switch sent, leaving := m.sendCall(r.target, r.call, self); {
	case leaving:
		r.refused(ctx, codeLeaving)
		return
	case !sent:
		r.end(ctx, r.env.fail(ErrWorkerFailed, "member "+r.target+" left the cluster"))
		return
	}
	r.stopCtx = context.AfterFunc(r.env.ctx, func() { m.rt.system.Root.Send(self, &readerCancelled{}) })
}

func (r *streamReader) onStarted(ctx actor.Context, msg *wire.StreamStarted) {
	if r.started {
		return
	}
	env := r.env
	r.started, env.ran = true, true
	env.call.Worker, env.call.Incarnation = int(msg.Worker), msg.Incarnation
	root, gw, self, session, id := r.m.rt.system.Root, r.gw, ctx.Self(), env.call.Session, r.call.Id
	r.acks = &streamAcks{every: max(1, uint64(r.call.Window)/2), send: func(items uint64) {
		root.RequestWithCustomSender(gw, &wire.StreamAck{Session: session, Id: id, Items: items}, self)
	}}
	if st := env.stream; st != nil {
		st.worker, st.incarnation = env.call.Worker, env.call.Incarnation
		st.acks = r.acks
		env.replyCh <- reply{} // Session.Stream returns now
	}
}

func (r *streamReader) onItems(ctx actor.Context, msg *wire.StreamItems) {
	if !r.started || msg.Seq != r.next {
		r.abort(ctx, r.env.fail(ErrInternal, fmt.Sprintf("stream item %d out of order (want %d)", msg.Seq, r.next)))
		return
	}
	r.m.itemMessages.Add(1)
	for _, v := range msg.Values {
		item, err := wire.DecodeValue(v)
		if err != nil {
			r.abort(ctx, fmt.Errorf("stream item %d (pool %s, session %s): %w", r.next, r.env.pool.cfg.Name, r.env.call.Session, err))
			return
		}
		if !r.deliver(item) {
			r.abort(ctx, r.env.fail(ErrInternal, "the worker's member sent past the stream's window"))
			return
		}
		r.next++
	}
}

// deliver hands an item to the stream's reader: the channel Recv reads,
// or the actor that sent the StreamRequest. An unthrottled StreamRequest
// is acked as it is relayed; a throttled one by its receiver's StreamAck.
func (r *streamReader) deliver(item any) bool {
	s := r.env.astream
	if s == nil {
		select {
		case r.env.stream.items <- item:
			return true
		default:
			return false
		}
	}
	if s.window > 0 && s.seq >= s.acked.Load()+s.window {
		return false
	}
	r.m.rt.system.Root.Send(s.to, &messages.StreamItem{Tag: s.key.tag, Seq: s.seq, Item: item})
	s.seq++
	if s.window == 0 {
		r.acks.took()
	}
	return true
}

// onEnd handles the stream's end, or its refusal before it started.
func (r *streamReader) onEnd(ctx actor.Context, e *wire.Error) {
	if !r.started && e != nil && (e.Code == codeLeaving || e.Code == codeStaleLease) {
		r.refused(ctx, e.Code)
		return
	}
	err := decodeError(e)
	if !r.started && err == nil {
		err = r.env.fail(ErrInternal, "the stream ended before it started")
	}
	r.end(ctx, err)
}

// refused hands the call back to its session, which routes it again: the
// member no longer holds the session's lease, or is leaving.
func (r *streamReader) refused(ctx actor.Context, code int32) {
	r.finish(ctx)
	r.env.sess.post(&remoteRefused{env: r.env, code: code, member: r.target})
}

// abort ends the stream with err and stops it at the worker.
func (r *streamReader) abort(ctx actor.Context, err error) {
	if r.gw != nil { // sent as a request: the gateway finds the stream by its reader
		ctx.Request(r.gw, &wire.StreamCancel{Session: r.env.call.Session, Id: r.call.Id})
	}
	r.end(ctx, err)
}

// end gives the stream its outcome: err, or the end of its items (nil).
// A stream that did not start yet is refused instead.
func (r *streamReader) end(ctx actor.Context, err error) {
	r.finish(ctx)
	if !r.started {
		r.env.refuse(err)
		return
	}
	if err == nil && r.env.ctx.Err() != nil {
		err = context.Cause(r.env.ctx) // ended by the caller, not by the worker
	}
	r.env.finish(nil, err)
}

// finish stops the reader; whoever calls it then gives the stream its
// outcome (or hands the call back to its session).
func (r *streamReader) finish(ctx actor.Context) {
	r.done = true
	if r.stopCtx != nil {
		r.stopCtx()
	}
	if r.gw != nil {
		ctx.Unwatch(r.gw)
	}
	r.m.removeReader(r)
	ctx.Stop(ctx.Self())
	r.m.rt.wg.Done()
}

// addReader registers a running reader, unless the member is shutting down.
func (m *member) addReader(r *streamReader, pid *actor.PID) bool {
	m.readersMu.Lock()
	defer m.readersMu.Unlock()
	if m.readersClosed {
		return false
	}
	m.readers[r] = pid
	return true
}

func (m *member) removeReader(r *streamReader) {
	m.readersMu.Lock()
	delete(m.readers, r)
	m.readersMu.Unlock()
}

// tellReaders posts msg to the readers of streams on member id ("": all).
func (m *member) tellReaders(id string, msg any) {
	m.readersMu.Lock()
	pids := make([]*actor.PID, 0, len(m.readers))
	for r, pid := range m.readers {
		if id == "" || r.target == id {
			pids = append(pids, pid)
		}
	}
	m.readersMu.Unlock()
	for _, pid := range pids {
		m.rt.system.Root.Send(pid, msg)
	}
}

// stopReaders ends the streams read here: this member is shutting down.
func (m *member) stopReaders() {
	m.readersMu.Lock()
	m.readersClosed = true
	m.readersMu.Unlock()
	m.tellReaders("", &readerShutdown{})
}

// The worker's side.

// streamControl is a reader's ack or cancel, for the session running its
// stream.
type streamControl struct {
	key    streamKey
	items  uint64
	cancel bool
}

// inboundStream makes env, a streaming call from a reader on another member,
// send its items to that reader, at most a window ahead of its acks. The
// reader is watched: if it goes, the stream is cancelled.
func (a *sessionActor) inboundStream(actx actor.Context, env *envelope, reader *actor.PID, msg *wire.Call) {
	rt := a.rec.rt
	ctx, cancel := context.WithCancelCause(rt.ctx)
	s := &actorStream{ctx: ctx, cancel: cancel, rt: rt, rec: a.rec, to: reader, remote: true, pool: env.pool.cfg.Name, worker: -1,
		key:    streamKey{sender: pidKey(reader), tag: msg.Id},
		window: uint64(msg.Window), credit: make(chan struct{}, 1)}
	env.ctx, env.astream = ctx, s
	a.watchReceiver(actx, reader)
}

// streamControlled applies a reader's ack or cancel.
func (a *sessionActor) streamControlled(m *streamControl) {
	if m.cancel {
		a.cancelStream(m.key)
		return
	}
	a.ackStream(m.key, m.items)
}

// start tells the reader that the stream began, and on which worker.
func (s *actorStream) start(worker int, inc uint64) {
	if s.started {
		return // routed again after a stale worker: it was told already
	}
	s.started, s.worker = true, worker
	s.rt.system.Root.Send(s.to, &wire.StreamStarted{Worker: int32(worker), Incarnation: inc})
}

// streamOutbox batches the items of a stream read on another member. The
// worker queues each encoded item; a flusher goroutine, started when none
// runs, sends what is queued as one StreamItems until nothing is left. An
// item made while none is being sent goes at once; items made faster than
// messages go out travel together. The StreamEnd follows the last batch.
type streamOutbox struct {
	mu       sync.Mutex
	seq      uint64 // of values[0]
	values   []*wire.Value
	end      *wire.StreamEnd // to send once values are out
	flushing bool
}

// sendRemote queues an item for the reader on another member.
func (s *actorStream) sendRemote(item any) error {
	v, err := wire.EncodeValue(item)
	if err != nil {
		err = fmt.Errorf("stream item %d (pool %s, worker %d, session %s): %w", s.seq, s.pool, s.worker, s.rec.id, err)
		s.cancel(err)
		return err
	}
	o := &s.out
	o.mu.Lock()
	if len(o.values) == 0 {
		o.seq = s.seq
	}
	o.values = append(o.values, v)
	start := !o.flushing
	o.flushing = true
	o.mu.Unlock()
	s.seq++
	if start {
		s.rt.wg.Add(1)
		go s.flush()
	}
	return nil
}

// flush sends the queued items, then the end if it came, until the outbox
// is empty.
func (s *actorStream) flush() {
	defer s.rt.wg.Done()
	o := &s.out
	for {
		o.mu.Lock()
		seq, values, end := o.seq, o.values, o.end
		o.values = nil
		if len(values) == 0 {
			o.flushing, o.end = false, nil
		}
		o.mu.Unlock()
		if len(values) == 0 {
			if end != nil {
				s.rt.system.Root.Send(s.to, end)
			}
			return
		}
		s.rt.system.Root.Send(s.to, &wire.StreamItems{Seq: seq, Values: values})
	}
}

// endRemote sends the stream's one StreamEnd to the reader, after its items.
func (s *actorStream) endRemote(err error) {
	if cause := context.Cause(s.ctx); errors.Is(cause, ErrPayloadNotPortable) {
		err = cause // whatever the worker made of the failed send
	}
	end := &wire.StreamEnd{Error: s.endError(err)}
	o := &s.out
	o.mu.Lock()
	if o.flushing {
		o.end = end // the flusher sends it after the items
		o.mu.Unlock()
		return
	}
	o.mu.Unlock()
	s.rt.system.Root.Send(s.to, end)
}

// endError is err for the reader. This member shutting down is its leaving
// the cluster: a stream that had not started is routed again, one that ran
// lost its worker.
func (s *actorStream) endError(err error) *wire.Error {
	m := s.rt.member
	switch {
	case err == nil || !m.leaving.Load() || !errors.Is(err, ErrShutdown):
		return encodeError(err)
	case !s.started:
		return &wire.Error{Code: codeLeaving, Text: "member leaving"}
	}
	return encodeError(&callError{sentinel: ErrWorkerFailed, pool: s.pool, session: s.rec.id, worker: s.worker,
		detail: "member " + m.id + " left the cluster while the stream ran", cause: err})
}

// readersLost ends the streams read here from a member that left. The
// watch says so too, except for one set up just after protoactor dropped
// that member's endpoint: it waits for a new connection to fail first.
func (m *member) readersLost(left *cluster.Member) {
	m.tellReaders(left.Id, &readerPeerGone{detail: "member " + left.Id + " left the cluster"})
}
