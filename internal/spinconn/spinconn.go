// Package spinconn reads a connection busy-polling it for a while before it waits in the
// netpoller: on a small VM a thread that parks between two replies (or requests) a few
// microseconds apart must be woken on a halted vCPU, tens to hundreds of microseconds each
// time. The page server spins on urgent connections; the fault handler on its urgent
// connection when it cannot read the descriptor itself (under TLS).
package spinconn

import (
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Reader reads a connection, optionally busy-polling it (SetSpin) for a
// while before it waits in the netpoller.
type Reader struct {
	c    net.Conn
	raw  syscall.RawConn // nil when c has no descriptor (net.Pipe)
	spin atomic.Int64    // nanoseconds; 0 disables
}

// NewReader returns a Reader of c that does not spin yet.
func NewReader(c net.Conn) *Reader {
	r := &Reader{c: c}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			r.raw = raw
		}
	}
	return r
}

// SetSpin sets the busy-poll time of each Read (0: none). A connection
// without a descriptor (net.Pipe) never spins.
func (r *Reader) SetSpin(d time.Duration) {
	if r.raw != nil {
		r.spin.Store(int64(d))
	}
}

// Read reads c, polling it without blocking (yielding the CPU between
// polls) for up to the spin time before it waits in the netpoller.
func (r *Reader) Read(p []byte) (int, error) {
	spin := time.Duration(r.spin.Load())
	if spin <= 0 || len(p) == 0 {
		return r.c.Read(p)
	}
	var (
		n    int
		rerr error
	)
	deadline := time.Now().Add(spin)
	spun := false
	err := r.raw.Read(func(fd uintptr) bool {
		for {
			m, err := unix.Read(int(fd), p)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				if spun || time.Now().After(deadline) {
					spun = true
					return false // wait in the netpoller
				}
				// Let a thread woken on this CPU run first (on loopback, the
				// target's faulting thread may be waiting for this CPU).
				unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
				continue
			case err != nil:
				rerr = err
			case m == 0:
				rerr = io.EOF
			default:
				n = m
			}
			return true
		}
	})
	if err != nil {
		return n, err
	}
	return n, rerr
}

// Readable reports whether the connection has bytes to read now (false for
// connections without a descriptor).
func (r *Reader) Readable() bool {
	if r.raw == nil {
		return false
	}
	ready := false
	r.raw.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		ready = err == nil && n > 0
	})
	return ready
}

// Conn is a connection whose reads go through a Reader of it: what TLS
// reads its records from, so that a spinning Reader spins under TLS too.
type Conn struct {
	net.Conn
	R *Reader
}

func (c Conn) Read(p []byte) (int, error) { return c.R.Read(p) }
