package uffd

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Raw write-protect calls for a fault handler that must run without a P:
// between runtime.entersyscall and runtime.exitsyscall, where only nosplit
// code that neither allocates nor enters the scheduler may run (see the
// wp-sync tracker in package precopy for why). They are nosplit and norace,
// issue raw system calls, return a bare errno instead of a wrapped error,
// and retry EINTR and EAGAIN themselves.

// RawWriteProtect sets (wp) or clears write protection on [start,
// start+length) with UFFDIO_WRITEPROTECT; clearing wakes the writers
// blocked on the range. It returns ENOENT when the range is not (or no
// longer) registered.
//
//go:nosplit
//go:norace
func RawWriteProtect(fd int, start uintptr, length uint64, wp bool) unix.Errno {
	w := uffdioWriteprotect{Range: uffdioRange{Start: uint64(start), Len: length}}
	if wp {
		w.Mode = WriteprotectModeWP
	}
	for {
		_, _, errno := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), ioctlNumWriteprotect, uintptr(unsafe.Pointer(&w)))
		if errno != unix.EINTR && errno != unix.EAGAIN {
			return errno
		}
	}
}

// RawUnregister unregisters [start, start+length), waking every thread
// waiting on a fault in it.
//
//go:nosplit
//go:norace
func RawUnregister(fd int, start uintptr, length uint64) unix.Errno {
	r := uffdioRange{Start: uint64(start), Len: length}
	for {
		_, _, errno := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), ioctlNumUnregister, uintptr(unsafe.Pointer(&r)))
		if errno != unix.EINTR && errno != unix.EAGAIN {
			return errno
		}
	}
}

// RawMsg decodes the message at b[0:32] (b as read from the descriptor):
// its event and, for EventPagefault, the faulting address. b must hold at
// least MsgBufSize(1) bytes.
//
//go:nosplit
//go:norace
func RawMsg(b []byte) (event uint8, address uintptr) {
	_ = b[sizeofMsg-1]
	m := (*uffdMsg)(unsafe.Pointer(unsafe.SliceData(b)))
	return m.Event, uintptr(m.Address)
}
