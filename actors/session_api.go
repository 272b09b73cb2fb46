package actors

import (
	"context"
	"fmt"

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
func (a *sessionActor) streamRequest(sender *actor.PID, m *messages.StreamRequest) {
	rt := a.rec.rt
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
	ctx, cancel := context.WithCancel(rt.ctx)
	env.ctx = ctx
	env.astream = &actorStream{ctx: ctx, cancel: cancel, rt: rt, rec: a.rec, to: sender,
		key: streamKey{sender: pidKey(sender), tag: m.Tag}}
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
		a.streams = make(map[streamKey]context.CancelFunc)
	}
	a.streams[s.key] = s.cancel
}

func (a *sessionActor) cancelStream(key streamKey) {
	if cancel, ok := a.streams[key]; ok {
		cancel()
	}
}

// actorStream is the sending end of a streaming call of the message API.
type actorStream struct {
	ctx    context.Context
	cancel context.CancelFunc
	rt     *Runtime
	rec    *sessionRec
	to     *actor.PID
	key    streamKey
	seq    uint64
}

// send is the worker's side: it never blocks.
func (s *actorStream) send(item any) error {
	if err := s.ctx.Err(); err != nil {
		return err
	}
	s.rt.system.Root.Send(s.to, &messages.StreamItem{Tag: s.key.tag, Seq: s.seq, Item: item})
	s.seq++
	return nil
}

// end sends the one StreamEnd and lets the session forget the stream.
func (s *actorStream) end(err error) {
	if err == nil && s.ctx.Err() != nil {
		err = s.ctx.Err()
	}
	s.cancel()
	s.rt.system.Root.Send(s.to, &messages.StreamEnd{Tag: s.key.tag, Err: err, Items: s.seq})
	s.rec.post(&streamEnded{key: s.key})
}
