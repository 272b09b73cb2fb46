package actors

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/affinity-go/affinity/messages"
)

// The message API: what a session actor does with the requests of package
// messages. Every request becomes an envelope and takes the same route as a
// call of the blocking API; only the caller's end differs (a reply message
// instead of a channel).

// callRequest runs a messages.CallRequest and answers its sender with one
// messages.CallReply. A request sent without a sender (Send rather than
// Request) runs, and its outcome goes nowhere.
func (a *sessionActor) callRequest(sender *actor.PID, m *messages.CallRequest) {
	rt := a.rec.rt
	p, mode, err := rt.resolveMessage(m.Pool, m.Affinity, m.Ref)
	if err == nil && m.Ref != nil && m.Ref.Session != a.rec.id {
		err = fmt.Errorf("%w: ref of session %q sent to session %q", ErrInvalidArgument, m.Ref.Session, a.rec.id)
	}
	if err != nil {
		if sender != nil {
			rt.system.Root.Send(sender, &messages.CallReply{Tag: m.Tag, Err: err, Worker: -1})
		}
		return
	}
	env := a.newEnvelope(p, mode, m.Ref, m.Payload)
	env.replyTo, env.tag, env.timeout = sender, m.Tag, m.Timeout
	env.noReply = sender == nil
	a.route(env)
}

// streamRequest starts a streaming call for an actor: its items go to the
// sender as messages.StreamItem, then one messages.StreamEnd.
func (a *sessionActor) streamRequest(actx actor.Context, m *messages.StreamRequest) {
	rt, sender := a.rec.rt, actx.Sender()
	p, mode, err := rt.resolveMessage(m.Pool, m.Affinity, m.Ref)
	if err == nil && sender == nil {
		err = fmt.Errorf("%w: a stream request needs a sender (use Request)", ErrInvalidArgument)
	}
	if err != nil {
		if sender != nil {
			rt.system.Root.Send(sender, &messages.StreamEnd{Tag: m.Tag, Err: err})
		}
		return
	}
	env := a.newEnvelope(p, mode, m.Ref, m.Payload)
	ctx, cancel := context.WithCancelCause(rt.ctx)
	env.ctx = ctx
	s := &actorStream{ctx: ctx, cancel: cancel, rt: rt, rec: a.rec, to: sender,
		key: streamKey{sender: pidKey(sender), tag: m.Tag}, window: uint64(m.Window)}
	if s.window > 0 {
		s.credit = make(chan struct{}, 1)
		a.watchReceiver(actx, sender)
	}
	env.astream = s
	a.route(env)
}

func (a *sessionActor) newEnvelope(p *pool, mode Affinity, ref *messages.Ref, payload any) *envelope {
	rt := a.rec.rt
	env := &envelope{ctx: rt.ctx, pool: p, mode: mode, ref: ref, sess: a.rec}
	env.call = messages.Call{Session: a.rec.id, Pool: p.cfg.Name, Worker: -1, Ref: ref, Payload: payload, Member: rt.memberID()}
	env.made = rt.madeAt()
	a.rec.active.Add(1)
	return env
}

// streamKey names a stream of the message API within its session.
type streamKey struct {
	sender string
	tag    uint64
}

func pidKey(pid *actor.PID) string {
	if pid == nil {
		return ""
	}
	return pid.Address + "/" + pid.Id
}

func (a *sessionActor) trackStream(s *actorStream) {
	if a.streams == nil {
		a.streams = make(map[streamKey]*actorStream)
	}
	a.streams[s.key] = s
}

func (a *sessionActor) cancelStream(key streamKey) {
	if s, ok := a.streams[key]; ok {
		s.cancel(context.Canceled)
	}
}

func (a *sessionActor) ackStream(key streamKey, items uint64) {
	if s, ok := a.streams[key]; ok && s.window > 0 {
		s.ack(items)
	}
}

// watched is a receiver of throttled streams, watched while it has some.
type watched struct {
	pid     *actor.PID
	streams int
}

// watchReceiver watches the receiver of a throttled stream: a stream
// waiting for acks from an actor that stopped would hold its worker for
// good.
func (a *sessionActor) watchReceiver(actx actor.Context, pid *actor.PID) {
	if a.receivers == nil {
		a.receivers = make(map[string]watched)
	}
	k := pidKey(pid)
	w, ok := a.receivers[k]
	if !ok {
		actx.Watch(pid)
		w.pid = pid
	}
	w.streams++
	a.receivers[k] = w
}

// streamEnded forgets an ended stream, and unwatches its receiver once it
// has no throttled stream left.
func (a *sessionActor) streamEnded(actx actor.Context, m *streamEnded) {
	delete(a.streams, m.key)
	w, ok := a.receivers[m.key.sender]
	if !m.watched || !ok {
		return
	}
	if w.streams--; w.streams > 0 {
		a.receivers[m.key.sender] = w
		return
	}
	delete(a.receivers, m.key.sender)
	actx.Unwatch(w.pid)
}

// receiverGone cancels the streams of a receiver that stopped.
func (a *sessionActor) receiverGone(pid *actor.PID) {
	k := pidKey(pid)
	delete(a.receivers, k)
	for key, s := range a.streams {
		if key.sender == k {
			s.cancel(errReceiverGone)
		}
	}
}

// errReceiverGone ends the throttled streams of a receiver that stopped.
var errReceiverGone = errors.New("affinity: the stream's receiver stopped")

// cancelThrottled ends the throttled streams with err: once the session
// closes, their acks have nowhere to go.
func (a *sessionActor) cancelThrottled(err error) {
	for _, s := range a.streams {
		if s.window > 0 {
			s.cancel(err)
		}
	}
}

// actorStream is the sending end of a streaming call of the message API,
// or (remote) of a stream read on another cluster member.
type actorStream struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	rt     *Runtime
	rec    *sessionRec
	to     *actor.PID
	key    streamKey
	seq    uint64 // items sent; written by the worker's side only

	window uint64        // items that may be sent ahead of acks; 0: no limit
	acked  atomic.Uint64 // items the receiver acknowledged
	credit chan struct{} // a token after each ack, for a send waiting

	// remote: the receiver is a streamReader on another member. started:
	// it was told the worker (set by the session actor before the worker
	// runs). pool and worker name them in errors.
	remote, started bool
	pool            string
	worker          int
	out             streamOutbox // a remote stream's items on their way

	// relay: the worker is on another member, and this streamReader relays
	// its items to the receiver (set and read by the session actor only).
	relay *actor.PID
}

// send is the worker's side. It waits only in a throttled stream whose
// window is full.
func (s *actorStream) send(item any) error {
	for s.window > 0 && s.seq >= s.acked.Load()+s.window {
		select {
		case <-s.credit:
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
	}
	if err := s.ctx.Err(); err != nil {
		return err
	}
	if s.remote {
		return s.sendRemote(item)
	}
	s.rt.system.Root.Send(s.to, &messages.StreamItem{Tag: s.key.tag, Seq: s.seq, Item: item})
	s.seq++
	return nil
}

// ack records that the receiver handled the first items items, and wakes
// a send waiting for credit, or has the relay pass the ack on.
func (s *actorStream) ack(items uint64) {
	for {
		old := s.acked.Load()
		if items <= old {
			return
		}
		if s.acked.CompareAndSwap(old, items) {
			break
		}
	}
	if s.relay != nil {
		s.rt.system.Root.Send(s.relay, &readerAck{items: items})
		return
	}
	select {
	case s.credit <- struct{}{}:
	default: // a token is there already
	}
}

// end sends the one StreamEnd and lets the session forget the stream.
func (s *actorStream) end(err error) {
	if s.ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		err = context.Cause(s.ctx) // what cancelled it, rather than the send's context.Canceled
	}
	s.cancel(nil)
	if s.remote {
		s.endRemote(err)
	} else {
		s.rt.system.Root.Send(s.to, &messages.StreamEnd{Tag: s.key.tag, Err: err, Items: s.seq})
	}
	s.rec.post(&streamEnded{key: s.key, watched: s.window > 0})
}
