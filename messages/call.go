package messages

// Call is what a worker receives for one request. It is passed by value and
// owns nothing that outlives the call, except Payload, which is the caller's.
type Call struct {
	Session     string // session id ("" never happens: auto-sessions get ids too)
	Pool        string // pool the call runs in
	Worker      int    // id of the worker running the call, stable within the pool
	Incarnation uint64 // incarnation of that worker; grows on every (re)start
	Ref         *Ref   // set when the call was made on a ref
	Payload     any    // the caller's request
	Member      string // the cluster member running the call; "" in a single process
}

// NewRef makes a ref to an object named key that lives in this worker
// incarnation's memory. Return it from Handle; calls made on it later always
// reach this incarnation or fail with ErrRefLost.
func (c Call) NewRef(key string) Ref {
	return Ref{Session: c.Session, Pool: c.Pool, Worker: c.Worker, Incarnation: c.Incarnation, Key: key, Member: c.Member}
}

// Ref is a handle to state held by one worker incarnation. It never moves: a
// call on a ref runs on exactly that incarnation, whatever the affinity mode.
type Ref struct {
	Session     string
	Pool        string
	Worker      int
	Incarnation uint64
	Key         string // the worker's own name for the object
	// Member is the cluster member whose worker holds the object (its
	// protoactor member id); "" in a single process.
	Member string
}

// Valid reports whether the ref names a session, a pool and an incarnation.
func (r Ref) Valid() bool {
	return r.Session != "" && r.Pool != "" && r.Incarnation != 0 && r.Worker >= 0
}

// ReleaseSession tells a worker actor that a session ended, so the worker can
// drop what it kept for it. Workers see it through SessionReleaser.
type ReleaseSession struct {
	Session string
	Source  CleanupSource
}

// CheckHealth asks a worker actor to run its health check between calls.
type CheckHealth struct{}
