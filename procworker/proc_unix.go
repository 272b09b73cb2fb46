//go:build unix && !linux

package procworker

import (
	"errors"
	"syscall"
)

// sysProcAttr puts the child in its own process group. Without a
// parent-death signal outside Linux, the Python kit's exit on stdin EOF is
// what keeps it from outliving the host.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

const rssSupported = false

func readRSS(int) (int64, error) { return 0, errors.New("resident memory is only read on Linux") }
