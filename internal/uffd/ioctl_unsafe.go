package uffd

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl issues one ioctl with a pointer argument, retrying EINTR.
func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		default:
			return errno
		}
	}
}

func ioctlAPI(fd int, a *uffdioAPI) error { return ioctl(fd, ioctlNumAPI, unsafe.Pointer(a)) }

func ioctlRegister(fd int, r *uffdioRegister) error {
	return ioctl(fd, ioctlNumRegister, unsafe.Pointer(r))
}

func ioctlUnregister(fd int, r *uffdioRange) error {
	return ioctl(fd, ioctlNumUnregister, unsafe.Pointer(r))
}

func ioctlWake(fd int, r *uffdioRange) error { return ioctl(fd, ioctlNumWake, unsafe.Pointer(r)) }

// ioctlCopy does not retry EINTR: an interrupted copy reports partial progress
// in c.Copy and returns EAGAIN, which the caller resumes from.
//
// It is a raw system call: UFFDIO_COPY and UFFDIO_ZEROPAGE never wait for
// another party (they allocate and copy), but a 256 KiB copy runs longer
// than the 20 µs after which the runtime's sysmon takes the P away from a
// thread in a system call and starts another thread for it. That hand-off,
// once per installed run, cost more CPU than the copy itself in profiles.
func ioctlCopy(fd int, c *uffdioCopy) error {
	_, _, errno := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), ioctlNumCopy, uintptr(unsafe.Pointer(c)))
	if errno != 0 {
		return errno
	}
	return nil
}

// ioctlZeropage is a raw system call for the reason given at ioctlCopy.
func ioctlZeropage(fd int, z *uffdioZeropage) error {
	_, _, errno := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), ioctlNumZeropage, uintptr(unsafe.Pointer(z)))
	if errno != 0 {
		return errno
	}
	return nil
}

func ioctlWriteprotect(fd int, w *uffdioWriteprotect) error {
	return ioctl(fd, ioctlNumWriteprotect, unsafe.Pointer(w))
}

// ioctlNew is USERFAULTFD_IOC_NEW on an open /dev/userfaultfd; it returns a
// new userfaultfd descriptor.
func ioctlNew(devfd int, flags int) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(devfd), ioctlNumNew, uintptr(flags))
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// addrOf returns the address of b's first byte. b must not be empty.
func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// decodeMsgs interprets buf (a whole number of uffd_msg records read from the
// descriptor) as messages and appends them to dst.
func decodeMsgs(dst []Msg, buf []byte) []Msg {
	for len(buf) >= sizeofMsg {
		m := (*uffdMsg)(unsafe.Pointer(unsafe.SliceData(buf)))
		dst = append(dst, Msg{Event: m.Event, Flags: m.Flags, Address: uintptr(m.Address), ThreadID: m.ThreadID})
		buf = buf[sizeofMsg:]
	}
	return dst
}
