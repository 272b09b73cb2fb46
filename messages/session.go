package messages

import "time"

// The session actor's message API. Any protoactor actor can send these to a
// session's PID (actors.Session.PID, or Runtime.SessionPID for an id) with
// ctx.Request, or use RequestFuture: the session answers the sender with
// exactly one reply message, and never blocks the sender.
//
//	CallRequest   -> one CallReply
//	StreamRequest -> StreamItem* then one StreamEnd
//	StreamAck     -> (a throttled stream may send more items)
//	CancelStream  -> (the stream ends with a StreamEnd carrying the cancel)

// CallRequest asks a session to run one call. The reply is one CallReply
// sent to the request's sender.
type CallRequest struct {
	// Tag is the caller's own label, echoed in the reply so an actor with
	// several calls in flight can tell the replies apart.
	Tag uint64
	// Pool names the pool; "" means the runtime's default pool (or, with
	// Ref set, the ref's pool).
	Pool string
	// Affinity overrides the pool's default mode; DefaultAffinity keeps it.
	Affinity Affinity
	// Ref, when set, runs the call on the worker incarnation holding it.
	Ref *Ref
	// Timeout bounds how long the call may wait for a worker; the pool's
	// queue timeout applies when it is zero or longer.
	Timeout time.Duration
	// Payload is handed to the worker as Call.Payload.
	Payload any
}

// CallReply answers a CallRequest. Err, when set, wraps one of the runtime's
// sentinel errors (test it with errors.Is), and Value is nil.
type CallReply struct {
	Tag         uint64
	Value       any
	Err         error
	Worker      int    // the worker that ran the call; -1 when none did
	Incarnation uint64 // its incarnation; 0 when none ran the call
}

// StreamRequest starts a streaming call. Items arrive as StreamItem
// messages in the order the worker sent them, then one StreamEnd. Like every
// streaming call it never waits for a busy worker.
type StreamRequest struct {
	Tag      uint64
	Pool     string
	Affinity Affinity
	Ref      *Ref
	Payload  any
	// Window, when above zero, throttles the stream: at most Window items
	// are sent ahead of the receiver's StreamAck, and the worker's send
	// waits for more (a CancelStream or shutdown still ends it). The
	// session then watches the receiver: if it stops, the stream is
	// cancelled. Zero: items are not throttled, the worker's send never
	// waits, and a receiver slower than the worker grows its mailbox.
	Window uint32
}

// StreamAck tells a throttled stream's session that the receiver has
// handled the first Items items (Seq below Items): the worker may send up
// to Items+Window. Acks may come in batches; one below an earlier ack
// changes nothing. Send it with Request, as CancelStream: the session
// finds the stream by its sender and Tag. Unthrottled streams ignore it.
type StreamAck struct {
	Tag   uint64
	Items uint64
}

// StreamItem is one item of a streaming call.
type StreamItem struct {
	Tag  uint64
	Seq  uint64 // 0, 1, 2, ... within the stream
	Item any
}

// StreamEnd ends a streaming call: Err is nil after a clean end, else the
// worker's error, a refusal (errors.Is-able against the runtime's
// sentinels) or context.Canceled after a CancelStream.
type StreamEnd struct {
	Tag   uint64
	Err   error
	Items uint64 // how many StreamItem messages preceded this one
}

// CancelStream stops the sender's stream with this tag. Send it to the same
// session with Request (the session finds the stream by its sender); a
// stream that already ended ignores it.
type CancelStream struct {
	Tag uint64
}
