// Package bench holds benchmarks that run Affinity next to its baselines in
// one process, so that their ratios hold on any machine:
//
//   - BenchmarkParallel, at two loads (64 callers, 1,000 sessions, 8 workers;
//     256 callers, 100,000 sessions, 16 workers): hint and strict_queue
//     sessions, sticky channels (one channel per worker, each session hashed
//     to its worker: the limit for affinity routing), protoactor's
//     consistent-hash router with RequestFuture, and a shared channel pool.
//     Each reports ns/op and the p99 latency of a sample of its calls.
//   - BenchmarkActorRoundTrip: an actor calling a session with ctx.Request
//     and the reply in its mailbox, next to the same exchange with a plain
//     protoactor actor.
//   - BenchmarkSequential: one caller, one worker, against a bare
//     RequestFuture round trip.
//   - BenchmarkIdleSessions: heap per idle bound session, live and passivated.
//
// bench/run.sh runs them all and prints the targets (command ratios):
//
//	bench/run.sh
//	COUNT=3 BENCH=Parallel bench/run.sh
package bench
