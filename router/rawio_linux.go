package router

import (
	"syscall"
	"unsafe"
)

// sysRead and sysWrite are raw system calls: the runtime is not told, as
// it is by syscall.Read, that the goroutine enters the kernel. On
// non-blocking sockets they return within microseconds, so the processor
// need not be handed to another thread meanwhile; and telling the runtime
// wakes its monitor thread whenever the processor was idle before, which
// on a busy single-core proxy meant thousands of wake-ups and context
// switches a second, about 6% of the router's CPU.

func sysRead(fd uintptr, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func sysWrite(fd uintptr, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}
