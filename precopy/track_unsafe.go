package precopy

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pagewarp/pagewarp/internal/uffd"
)

// trackAddr returns the address of b's first byte. b must not be empty.
func trackAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// The runtime's system call bracket. A goroutine between the two holds no
// P: the scheduler and the GC treat it as blocked in a system call. gVisor
// uses them the same way (the runtime keeps them linkable for it, see
// go.dev/issue/67401).
//
//go:linkname entersyscall runtime.entersyscall
func entersyscall()

//go:linkname exitsyscall runtime.exitsyscall
func exitsyscall()

// Requests to the wp-sync handler, one 8-byte word each on the request pipe.
const (
	wpReqCollect = 1 // re-protect the current set and switch sets
	wpReqStart   = 2 // write-protect the whole region and empty the current set
	wpReqStop    = 3 // return; no answer
)

// Answers, one 8-byte word each on the answer pipe: the low byte is one of
// these, the rest an errno.
const (
	wpDoneOK      = 1
	wpDoneFailed  = 2 // the request failed; the handler goes on
	wpDoneStopped = 3 // the handler failed and stopped, having un-protected and unregistered the region
)

// wpSet is one round's pages: bits and, in first-fault order, order[:n].
// order has room for every page, so recording never allocates.
type wpSet struct {
	bits  []uint64
	order []uint64
	n     int
}

// wpHandler is the state of the wp-sync handler thread. While it runs,
// everything here belongs to the thread except sets[1-cur], which belongs
// to Collect between the answer to one request and the next request.
type wpHandler struct {
	uffd, epfd, req, done int
	base                  uintptr
	length                uintptr
	pageSize              uintptr
	sets                  [2]wpSet
	cur                   int
	buf                   []byte // fault messages
	events                [2]unix.EpollEvent
}

func newWPHandler(r trackRegion, ufd, epfd, req, done int) *wpHandler {
	h := &wpHandler{
		uffd: ufd, epfd: epfd, req: req, done: done,
		base: r.base, length: uintptr(len(r.mem)), pageSize: uintptr(r.pageSize),
		buf: make([]byte, uffd.MsgBufSize(64)),
	}
	for i := range h.sets {
		h.sets[i] = wpSet{bits: make([]uint64, (r.pages+63)/64), order: make([]uint64, r.pages)}
	}
	return h
}

// run serves until a stop request or a failure. Its frame holds nothing
// but h while the goroutine is in the syscall state, so the GC, which
// scans it from the entersyscall call, finds the same pointer throughout.
//
//go:norace
func (h *wpHandler) run() {
	runtime.LockOSThread()
	entersyscall()
	h.serve()
	exitsyscall()
	runtime.UnlockOSThread()
}

// serve is the handler loop. It runs in the syscall state: it must not
// allocate, grow its stack (everything it calls is nosplit) or block in
// anything but a raw system call.
//
//go:nosplit
//go:norace
func (h *wpHandler) serve() {
	for {
		_, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_WAIT, uintptr(h.epfd),
			uintptr(unsafe.Pointer(&h.events[0])), uintptr(len(h.events)), ^uintptr(0), 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			h.stop(errno)
			return
		}
		if errno := h.faults(); errno != 0 {
			h.stop(errno)
			return
		}
		var op uint64
		_, _, errno = unix.RawSyscall(unix.SYS_READ, uintptr(h.req), uintptr(unsafe.Pointer(&op)), 8)
		switch {
		case errno == unix.EAGAIN || errno == unix.EINTR:
			continue
		case errno != 0:
			h.stop(errno)
			return
		case op == wpReqStop:
			return
		}
		switch op {
		case wpReqCollect:
			errno = h.reprotect()
			if errno == 0 {
				h.cur ^= 1
			}
		case wpReqStart:
			errno = uffd.RawWriteProtect(h.uffd, h.base, uint64(h.length), true)
			if errno == 0 {
				s := &h.sets[h.cur]
				for i := range s.bits {
					s.bits[i] = 0
				}
				s.n = 0
			}
		default:
			errno = unix.EINVAL
		}
		if errno == 0 {
			h.answer(wpDoneOK)
		} else {
			h.answer(wpDoneFailed | uint64(errno)<<8)
		}
	}
}

// faults reads the pending fault messages; for each it records the page and
// un-protects it, which wakes the writers. It returns a fatal errno.
//
//go:nosplit
//go:norace
func (h *wpHandler) faults() unix.Errno {
	for {
		n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(h.uffd), uintptr(unsafe.Pointer(&h.buf[0])), uintptr(len(h.buf)))
		switch errno {
		case 0:
		case unix.EAGAIN:
			return 0
		case unix.EINTR:
			continue
		default:
			return errno
		}
		for off := uintptr(0); off+32 <= n; off += 32 {
			event, addr := uffd.RawMsg(h.buf[off:])
			if event != uffd.EventPagefault {
				continue
			}
			if addr < h.base || addr-h.base >= h.length {
				return unix.EFAULT // not ours: nobody would wake the writer
			}
			p := (addr - h.base) / h.pageSize
			s := &h.sets[h.cur]
			if w, b := p/64, uint64(1)<<(p%64); s.bits[w]&b == 0 {
				s.bits[w] |= b
				s.order[s.n] = uint64(p)
				s.n++
			}
			// Un-protect even when the page was recorded already (a second
			// thread faulted on it, or a Collect failed part way): waking a
			// writer on a page still protected would only fault again.
			errno := uffd.RawWriteProtect(h.uffd, h.base+p*h.pageSize, uint64(h.pageSize), false)
			if errno == unix.ENOENT {
				continue // Close unregistered the region, which woke the writer
			}
			if errno != 0 {
				return errno
			}
		}
		if n < uintptr(len(h.buf)) {
			return 0 // drained; epoll says when more come
		}
	}
}

// reprotect write-protects the runs of pages of the current set.
//
//go:nosplit
//go:norace
func (h *wpHandler) reprotect() unix.Errno {
	s := &h.sets[h.cur]
	pages := int(h.length / h.pageSize)
	for p := nextSet(s.bits, 0); p < pages; {
		e := nextClear(s.bits, p+1, pages)
		if errno := uffd.RawWriteProtect(h.uffd, h.base+uintptr(p)*h.pageSize, uint64(e-p)*uint64(h.pageSize), true); errno != 0 {
			return errno
		}
		p = nextSet(s.bits, e)
	}
	return 0
}

// stop gives up after a fatal error: it un-protects and unregisters the
// region so that no writer waits for a handler that is gone, and tells
// Collect.
//
//go:nosplit
//go:norace
func (h *wpHandler) stop(errno unix.Errno) {
	uffd.RawWriteProtect(h.uffd, h.base, uint64(h.length), false)
	uffd.RawUnregister(h.uffd, h.base, uint64(h.length))
	h.answer(wpDoneStopped | uint64(errno)<<8)
}

// answer writes one answer word to the answer pipe.
//
//go:nosplit
//go:norace
func (h *wpHandler) answer(v uint64) {
	for {
		_, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(h.done), uintptr(unsafe.Pointer(&v)), 8)
		if errno != unix.EINTR {
			return
		}
	}
}
