package uffd

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned by methods of an FD that was closed or disowned.
var ErrClosed = errors.New("uffd: descriptor closed")

// FD owns one userfaultfd descriptor. Create one with Open; release it with
// Close, or hand it to someone else with Disown.
type FD struct {
	fd        int
	features  uint64 // enabled with UFFDIO_API
	available uint64 // what the kernel offers
	userOnly  bool   // opened with UFFD_USER_MODE_ONLY
	via       string // how it was opened, for messages
}

// Msg is one event read from a userfaultfd, analogous to struct uffd_msg.
// For EventPagefault, Address is the faulting address (rounded down to the
// page unless FeatureExactAddress was negotiated), Flags the
// UFFD_PAGEFAULT_FLAG_* bits and ThreadID the faulting thread when
// FeatureThreadID was negotiated. For EventRemove and EventUnmap, Flags holds
// the start and Address the end of the range.
type Msg struct {
	Event    uint8
	Flags    uint64
	Address  uintptr
	ThreadID uint32
}

// Wrap returns an FD for a userfaultfd opened elsewhere (by another library,
// or received from another process), whose API handshake is done. The FD
// owns fd from then on; call Disown to give it back without closing it.
func Wrap(fd int) *FD { return &FD{fd: fd, via: "wrapped descriptor"} }

// Int returns the raw descriptor, for epoll registration. The FD still owns it.
func (u *FD) Int() int { return u.fd }

// Features returns the feature bits enabled on this descriptor by UFFDIO_API.
func (u *FD) Features() uint64 { return u.features }

// Available returns every feature bit the kernel offers.
func (u *FD) Available() uint64 { return u.available }

// UserModeOnly reports whether the descriptor was opened with UFFD_USER_MODE_ONLY:
// faults raised by the kernel on the process's behalf (a read(2) into the
// region) are not delivered and fail with EFAULT.
func (u *FD) UserModeOnly() bool { return u.userOnly }

// Via says how the descriptor was obtained ("userfaultfd(2)",
// "userfaultfd(2) with UFFD_USER_MODE_ONLY" or "/dev/userfaultfd").
func (u *FD) Via() string { return u.via }

// Close closes the descriptor. Closing wakes every thread waiting on a fault
// in a registered range; those faults then fail with SIGBUS or retry without
// userfaultfd, depending on the kernel.
func (u *FD) Close() error {
	if u.fd < 0 {
		return ErrClosed
	}
	err := unix.Close(u.fd)
	u.fd = -1
	return err
}

// Disown gives up ownership and returns the raw descriptor: the caller now
// owns it (to pass it over a Unix socket, say). The FD is unusable afterwards.
func (u *FD) Disown() int {
	fd := u.fd
	u.fd = -1
	return fd
}

func (u *FD) check() error {
	if u.fd < 0 {
		return ErrClosed
	}
	return nil
}

// Register registers [start, start+length) in the given modes
// (RegisterModeMissing, RegisterModeWP, ...). It returns the bit set of range
// ioctls the kernel allows on it (IoctlBitCopy, ...). start and length must
// be page aligned.
func (u *FD) Register(start uintptr, length uint64, mode uint64) (ioctls uint64, err error) {
	if err := u.check(); err != nil {
		return 0, err
	}
	r := uffdioRegister{Range: uffdioRange{Start: uint64(start), Len: length}, Mode: mode}
	if err := ioctlRegister(u.fd, &r); err != nil {
		return 0, fmt.Errorf("uffdio_register %#x+%d mode %#x: %w", start, length, mode, err)
	}
	return r.Ioctls, nil
}

// Unregister unregisters [start, start+length). Threads still waiting on a
// fault in the range are woken and retry without userfaultfd.
func (u *FD) Unregister(start uintptr, length uint64) error {
	if err := u.check(); err != nil {
		return err
	}
	r := uffdioRange{Start: uint64(start), Len: length}
	if err := ioctlUnregister(u.fd, &r); err != nil {
		return fmt.Errorf("uffdio_unregister %#x+%d: %w", start, length, err)
	}
	return nil
}

// Wake wakes threads waiting on faults in [start, start+length), after an
// install done with a DONTWAKE mode.
func (u *FD) Wake(start uintptr, length uint64) error {
	if err := u.check(); err != nil {
		return err
	}
	r := uffdioRange{Start: uint64(start), Len: length}
	if err := ioctlWake(u.fd, &r); err != nil {
		return fmt.Errorf("uffdio_wake %#x+%d: %w", start, length, err)
	}
	return nil
}

// Copy atomically installs src at dst (both page aligned, len(src) a whole
// number of pages) with UFFDIO_COPY, one ioctl for the whole range unless the
// kernel stops early. mode is a set of CopyMode* bits.
//
// It returns the number of bytes installed. When some page of the range is
// already present, the kernel stops there: Copy returns the bytes installed
// before it and an error wrapping unix.EEXIST; the caller decides whether to
// skip that page and continue. Other errors: ENOENT (the mapping changed
// under it; retry), ESRCH (the faulting process exited), ENOMEM, EFAULT, EINVAL.
// EAGAIN from an interrupted copy is resumed here and never returned.
func (u *FD) Copy(dst uintptr, src []byte, mode uint64) (int, error) {
	if err := u.check(); err != nil {
		return 0, err
	}
	if len(src) == 0 {
		return 0, nil
	}
	done := 0
	for done < len(src) {
		c := uffdioCopy{Dst: uint64(dst) + uint64(done), Src: uint64(addrOf(src[done:])), Len: uint64(len(src) - done), Mode: mode}
		err := ioctlCopy(u.fd, &c)
		if c.Copy > 0 {
			done += int(c.Copy)
		}
		switch {
		case err == nil:
			if c.Copy <= 0 {
				return done, fmt.Errorf("uffdio_copy %#x+%d: kernel copied %d", dst, len(src), c.Copy)
			}
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			// Interrupted part way: resume after what was copied.
		default:
			return done, fmt.Errorf("uffdio_copy %#x+%d at +%d: %w", dst, len(src), done, err)
		}
	}
	return done, nil
}

// Zeropage maps the zero page over [start, start+length) with
// UFFDIO_ZEROPAGE: reads see zeros, the first write allocates. mode is a set
// of ZeropageMode* bits. Errors as for Copy (EEXIST when a page is present).
func (u *FD) Zeropage(start uintptr, length uint64, mode uint64) (int, error) {
	if err := u.check(); err != nil {
		return 0, err
	}
	var done uint64
	for done < length {
		z := uffdioZeropage{Range: uffdioRange{Start: uint64(start) + done, Len: length - done}, Mode: mode}
		err := ioctlZeropage(u.fd, &z)
		if z.Zeropage > 0 {
			done += uint64(z.Zeropage)
		}
		switch {
		case err == nil:
			if z.Zeropage <= 0 {
				return int(done), fmt.Errorf("uffdio_zeropage %#x+%d: kernel mapped %d", start, length, z.Zeropage)
			}
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
		default:
			return int(done), fmt.Errorf("uffdio_zeropage %#x+%d at +%d: %w", start, length, done, err)
		}
	}
	return int(done), nil
}

// WriteProtect sets (wp true) or clears write protection on [start,
// start+length), a range registered with RegisterModeWP. Clearing it wakes
// writers blocked on the range unless mode has WriteprotectModeDontWake.
func (u *FD) WriteProtect(start uintptr, length uint64, wp bool, dontWake bool) error {
	if err := u.check(); err != nil {
		return err
	}
	w := uffdioWriteprotect{Range: uffdioRange{Start: uint64(start), Len: length}}
	if wp {
		w.Mode |= WriteprotectModeWP
	}
	if dontWake {
		w.Mode |= WriteprotectModeDontWake
	}
	if err := ioctlWriteprotect(u.fd, &w); err != nil {
		return fmt.Errorf("uffdio_writeprotect %#x+%d wp=%v: %w", start, length, wp, err)
	}
	return nil
}

// ReadMsgs reads as many pending events as fit in buf (a multiple of 32
// bytes; one read(2) returns up to len(buf)/32 messages) and appends them to
// dst. On a non-blocking descriptor with nothing pending it returns dst and
// an error wrapping unix.EAGAIN. EINTR is retried.
func (u *FD) ReadMsgs(dst []Msg, buf []byte) ([]Msg, error) {
	if err := u.check(); err != nil {
		return dst, err
	}
	if len(buf) < sizeofMsg {
		return dst, fmt.Errorf("uffd read: buffer of %d bytes holds no message", len(buf))
	}
	buf = buf[:len(buf)/sizeofMsg*sizeofMsg]
	for {
		n, err := unix.Read(u.fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return dst, err
		}
		if n%sizeofMsg != 0 {
			return dst, fmt.Errorf("uffd read: %d bytes is not a whole number of messages", n)
		}
		return decodeMsgs(dst, buf[:n]), nil
	}
}

// MsgBufSize is the read buffer size for n messages.
func MsgBufSize(n int) int { return n * sizeofMsg }
