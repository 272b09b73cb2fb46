//go:build unix

package router

import (
	"net"
	"os"
	"syscall"
)

// rawConnOf returns nc's RawConn when nc is a *net.TCPConn or a
// *net.UnixConn, else nil. Other types may buffer bytes of their own (a
// wrapper that parsed a PROXY header, say) that reading the descriptor
// would skip, even when they expose one.
func rawConnOf(nc net.Conn) syscall.RawConn {
	var sc syscall.Conn
	switch c := nc.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// readFD reads fd once; it must be non-blocking. n == 0 with no error is
// the end of the stream.
func readFD(fd uintptr, p []byte) (int, error) {
	for {
		n, err := sysRead(fd, p)
		if err == syscall.EINTR {
			continue
		}
		if n < 0 {
			n = 0
		}
		return n, err
	}
}

// writeFD writes b to fd, which must be non-blocking, until it is all
// written or would block; sent counts what went.
func writeFD(fd uintptr, b []byte) (sent int, err error) {
	for sent < len(b) {
		w, err := sysWrite(fd, b[sent:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return sent, err
		}
		sent += w
	}
	return sent, nil
}

// opError wraps a failed descriptor call on nc as nc's own methods would.
func opError(op string, nc net.Conn, err error) error {
	network := "tcp"
	if _, ok := nc.(*net.UnixConn); ok {
		network = "unix"
	}
	return &net.OpError{Op: op, Net: network, Addr: nc.RemoteAddr(), Err: os.NewSyscallError(op, err)}
}

// wouldBlock says whether err is readFD's or writeFD's "try later".
func wouldBlock(err error) bool { return err == syscall.EAGAIN }

// peerLeft peeks at fd without blocking: the end of the stream or an
// error means the peer left; bytes waiting, or none, say nothing.
func peerLeft(fd uintptr) bool {
	var b [1]byte
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch err {
	case nil:
		return n == 0
	case syscall.EAGAIN, syscall.EINTR:
		return false
	}
	return true
}

// shutdownFD ends both directions of the socket fd: pending and later
// reads see the end of the stream, writes fail, and the poller wakes
// whoever waits on it.
func shutdownFD(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) }
