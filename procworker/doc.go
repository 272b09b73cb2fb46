// Package procworker runs a pool's workers as OS processes, in any
// language, speaking a small framed protocol over their stdin and stdout
// (docs/worker-protocol.md). Each incarnation is one process, supervised
// like any worker: every affinity guarantee holds across the process
// boundary.
//
// # Use
//
// Factory validates a Config and returns the pool's actors.WorkerFactory:
//
//	factory, err := procworker.Factory(procworker.Config{
//		Command: "python3", Args: []string{"worker.py"},
//	})
//	rt, err := actors.Start(actors.Config{Pools: []actors.PoolConfig{
//		{Name: "py", Size: 4, Affinity: actors.StrictQueue, NewWorker: factory},
//	}})
//
// A call's payload goes to the process as JSON (encoding/json), or as is
// when it is a []byte (raw) or a json.RawMessage. The caller gets a
// json.RawMessage back (decode it with As), a []byte when the process
// answered raw bytes, or a messages.Ref when it returned an object as a ref.
// An error the process returns is a *RemoteError (errors.Is ErrRemote); one
// it marks fatal taints the worker.
//
// The Python kit, python/affinity_worker.py (standard library only, also
// available as PythonKit), makes a worker a dozen lines.
//
// # Lifecycle
//
//   - Start: the factory starts the process in its own process group and
//     waits up to StartTimeout for its ready frame.
//   - Heartbeats: the host pings every HeartbeatInterval; no pong for
//     MissedHeartbeats intervals taints the worker (ErrHeartbeat).
//   - Exit: a process that exits taints its worker at once, with the exit
//     code or the signal in the reason (*ExitError, errors.Is ErrExited). The
//     call it was running fails with actors.ErrWorkerFailed.
//   - Bad input (garbage, an oversized frame, an unknown type, a reply to
//     no call): the worker is tainted with ErrProtocol and the process
//     killed.
//   - Restart: the pool supervisor builds a new incarnation, which is a new
//     process. Refs to the old one get actors.ErrRefLost, strict sessions
//     actors.ErrSessionWorkerUnavailable.
//   - Recycling: after MaxCalls calls, past MaxAge, or above MaxRSS bytes
//     of resident memory, the worker is recycled (restarted without using
//     the restart budget).
//   - Stop: stdin is closed, then the group gets SIGTERM, then SIGKILL,
//     StopGrace apart.
//   - Host death: the process gets SIGKILL from the kernel (parent-death
//     signal, Linux); the Python kit also exits when its stdin closes.
//
// Platforms: tested on Linux. Other unix systems have no parent-death
// signal and no MaxRSS. On Windows the package builds but is untested:
// a stop terminates the process once StopGrace has passed after stdin
// closed, without a signal it could catch, and processes it started are
// not reached.
//
// The process's stderr goes to Config.Logger, a line per event, tagged with
// pool, worker, incarnation and pid.
package procworker
