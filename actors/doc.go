// Package actors is Affinity's runtime: named pools of stateful worker
// actors, session actors that route every call of a session to the worker
// holding its state, and a pool supervisor that restarts tainted workers.
//
// # Pools, workers, incarnations
//
// A Runtime (see Start) runs one or more named pools. Each worker is a
// protoactor actor running user code (a Worker) with at most Capacity calls
// at once. Every (re)start of a worker is a new incarnation with a new
// number: state lives per incarnation, so a restarted worker has lost it.
//
// # Sessions and affinity
//
// A Session's first call in a pool binds it to a preferred worker (balanced
// by bound-session count). What later calls do when that worker cannot take
// them depends on the affinity mode:
//
//	preferred worker is   Hint                      StrictQueue               StrictFailFast
//	free                  run there                 run there                 run there
//	busy                  any free worker, else     wait (FIFO) for it        ErrWorkerBusy
//	                      wait for the first free
//	tainted/restarted/    rebind to a free worker   ErrSessionWorker-         ErrSessionWorker-
//	removed                                         Unavailable               Unavailable
//
// A Hint detour leaves the binding alone. Calls on a Ref always go to the
// ref's worker incarnation, or fail with ErrRefLost. Streaming calls never
// wait. Waiting calls honour their context and the pool's queue timeout, and
// a call that stopped waiting never runs.
//
// # Who runs a call
//
// A worker's calls are turns of its actor: one at a time (up to Capacity),
// in order. A blocking call (Session.Call, Runtime.Call, Runtime.CallRef)
// whose context cannot be cancelled, or made with RunOnCaller, runs on its
// caller's goroutine when its worker can take it at once, since the caller
// would only wait for it: with Capacity 1 as that turn, with Capacity > 1
// after a turn that begins it (as the worker's runner goroutines do). Such
// a call returns when the worker returns. Other calls run on the worker's
// own goroutines, and the caller may leave when its context ends.
// PoolConfig.OwnGoroutineOnly keeps every call there, for workers tied to a
// goroutine or OS thread.
//
// # Supervision
//
// A worker is tainted when it panics, returns an error wrapped with Fatal,
// fails its health check, or reaches MaxCalls or MaxAge. The pool
// supervisor restarts it with backoff (see package supervisor); past the
// restart budget the worker is reported failed and the pool runs degraded.
//
// # Observability
//
// Every routing decision, execution, taint, restart, resize and session
// lifecycle change is an event (package messages) delivered to
// Config.OnEvent and, optionally, the actor system's event stream; Stats
// returns the matching counters.
package actors
