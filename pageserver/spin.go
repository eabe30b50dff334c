package pageserver

import (
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// spinReader reads a connection, optionally busy-polling it for a while
// before it waits in the netpoller. The server turns spinning on for
// urgent connections: a target that faults keeps sending demand requests
// a few microseconds apart, and on a small VM a thread that parks between
// them must be woken on a halted vCPU (tens of microseconds each time).
type spinReader struct {
	c    net.Conn
	raw  syscall.RawConn // nil when c has no descriptor (net.Pipe)
	spin atomic.Int64    // nanoseconds; 0 disables
}

func newSpinReader(c net.Conn) *spinReader {
	r := &spinReader{c: c}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			r.raw = raw
		}
	}
	return r
}

// setSpin sets the busy-poll time (0: none).
func (r *spinReader) setSpin(d time.Duration) {
	if r.raw != nil {
		r.spin.Store(int64(d))
	}
}

func (r *spinReader) Read(p []byte) (int, error) {
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

// readable reports whether the connection has bytes to read now (false for
// connections without a descriptor).
func (r *spinReader) readable() bool {
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

// spinConn is a connection whose reads go through a spinReader: what TLS
// reads its records from on the server side.
type spinConn struct {
	net.Conn
	r *spinReader
}

func (c spinConn) Read(p []byte) (int, error) { return c.r.Read(p) }
