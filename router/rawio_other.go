//go:build !unix

package router

import (
	"errors"
	"net"
	"syscall"
)

// Without unix descriptors, connections are read and written through
// net.Conn alone: rawConnOf returns nil, so the rest is never called.

func rawConnOf(net.Conn) syscall.RawConn            { return nil }
func readFD(uintptr, []byte) (int, error)           { return 0, errors.ErrUnsupported }
func writeFD(uintptr, []byte) (int, error)          { return 0, errors.ErrUnsupported }
func opError(_ string, _ net.Conn, err error) error { return err }
func wouldBlock(error) bool                         { return false }
func peerLeft(uintptr) bool                         { return false }
func shutdownFD(uintptr)                            {}
