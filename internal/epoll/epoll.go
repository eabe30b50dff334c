// Package epoll is a cancellable wait on a few file descriptors: epoll plus
// an eventfd that Close (or Wake) signals, in the manner of cilium/ebpf's
// internal/epoll.
package epoll

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned by Wait once the Poller is closed.
var ErrClosed = errors.New("epoll: closed")

// Poller waits for any of up to 63 descriptors to become readable.
type Poller struct {
	epfd   int
	event  int // eventfd: written by Close and Wake
	fds    []int
	mu     sync.Mutex
	closed bool
	evs    [64]unix.EpollEvent
}

// New returns a Poller for fds (which the caller keeps owning).
func New(fds ...int) (*Poller, error) {
	if len(fds) == 0 || len(fds) > 63 {
		return nil, fmt.Errorf("epoll: %d descriptors, want 1 to 63", len(fds))
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	ev, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	p := &Poller{epfd: epfd, event: ev, fds: fds}
	for _, f := range append([]int{ev}, fds...) {
		e := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(f)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, f, &e); err != nil {
			p.close()
			return nil, fmt.Errorf("epoll_ctl add %d: %w", f, err)
		}
	}
	return p, nil
}

// Wait blocks until a descriptor is readable, the timeout passes (a
// negative timeout waits forever), Wake is called, or the Poller is closed
// (ErrClosed). It returns the set of readable descriptors as a bit mask of
// their indices in New's arguments (0 after a timeout or Wake). EINTR is
// retried. Wait must not be called concurrently with itself.
func (p *Poller) Wait(timeout time.Duration) (uint64, error) {
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	for {
		n, err := unix.EpollWait(p.epfd, p.evs[:], ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("epoll_wait: %w", err)
		}
		var ready uint64
		woken := false
		for _, e := range p.evs[:n] {
			if int(e.Fd) == p.event {
				woken = true
				continue
			}
			for i, f := range p.fds {
				if int(e.Fd) == f {
					ready |= 1 << i
				}
			}
		}
		if woken {
			var buf [8]byte
			unix.Read(p.event, buf[:])
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return 0, ErrClosed
			}
		}
		return ready, nil
	}
}

// Wake makes a concurrent or the next Wait return.
func (p *Poller) Wake() error {
	one := [8]byte{1}
	_, err := unix.Write(p.event, one[:])
	if err != nil && err != unix.EAGAIN {
		return fmt.Errorf("eventfd write: %w", err)
	}
	return nil
}

// Close makes Wait return ErrClosed. The descriptors are released once the
// waiter has returned: call Release after Wait's goroutine is done.
func (p *Poller) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	return p.Wake()
}

// Release frees the epoll and eventfd descriptors. Call it once no Wait can
// be running.
func (p *Poller) Release() {
	p.close()
}

func (p *Poller) close() {
	if p.epfd >= 0 {
		unix.Close(p.epfd)
		p.epfd = -1
	}
	if p.event >= 0 {
		unix.Close(p.event)
		p.event = -1
	}
}
