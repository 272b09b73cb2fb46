package procworker

import (
	"errors"
	"syscall"
)

// sysProcAttr starts the worker in a process group of its own, so a
// Ctrl+C meant for the host does not reach it. Without a parent-death
// signal, the Python kit's exit on stdin EOF is what keeps it from
// outliving the host.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{CreationFlags: syscall.CREATE_NEW_PROCESS_GROUP}
}

const rssSupported = false

func readRSS(int) (int64, error) { return 0, errors.New("resident memory is only read on Linux") }
