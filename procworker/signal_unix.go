//go:build unix

package procworker

import (
	"fmt"
	"syscall"
)

// terminate asks the process group (the worker and anything it started) to
// stop: SIGTERM. Until the process is reaped its pid, and so its group id,
// cannot be reused.
func (w *worker) terminate() { _ = syscall.Kill(-w.pid, syscall.SIGTERM) }

// kill ends the process group: SIGKILL.
func (w *worker) kill() { _ = syscall.Kill(-w.pid, syscall.SIGKILL) }

var signalNames = map[syscall.Signal]string{
	syscall.SIGABRT: "SIGABRT", syscall.SIGBUS: "SIGBUS", syscall.SIGFPE: "SIGFPE",
	syscall.SIGHUP: "SIGHUP", syscall.SIGILL: "SIGILL", syscall.SIGINT: "SIGINT",
	syscall.SIGKILL: "SIGKILL", syscall.SIGPIPE: "SIGPIPE", syscall.SIGQUIT: "SIGQUIT",
	syscall.SIGSEGV: "SIGSEGV", syscall.SIGTERM: "SIGTERM", syscall.SIGUSR1: "SIGUSR1",
	syscall.SIGUSR2: "SIGUSR2",
}

func signalName(s syscall.Signal) string {
	if n, ok := signalNames[s]; ok {
		return n
	}
	return fmt.Sprintf("signal %d", int(s))
}
