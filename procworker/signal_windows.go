package procworker

import (
	"fmt"
	"syscall"
)

// terminate ends the worker process: Windows has no signal a console-less
// child can catch, so a worker that did not exit when its stdin closed is
// terminated at once.
func (w *worker) terminate() { w.kill() }

// kill ends the worker process (TerminateProcess). Processes it started
// are not reached: Windows has no process groups to signal.
func (w *worker) kill() { _ = w.cmd.Process.Kill() }

// signalName is only reached through an ExitError built by hand: a
// process on Windows ends with an exit code, never a signal.
func signalName(s syscall.Signal) string { return fmt.Sprintf("signal %d", int(s)) }
