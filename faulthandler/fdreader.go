package faulthandler

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/pagewarp/pagewarp/wire"
)

// fdReader reads frames from a non-blocking socket descriptor without the
// Go netpoller, for a loop that owns the descriptor and waits on it with
// its own epoll. Frames are decoded in place; a decoded frame's byte slices
// are valid until the next fill.
type fdReader struct {
	fd   int
	buf  []byte
	r, w int // buf[r:w] holds bytes not yet consumed
}

func newFDReader(fd int) *fdReader { return &fdReader{fd: fd, buf: make([]byte, 256<<10)} }

// fill does one non-blocking read. It reports whether bytes arrived; it
// returns io.EOF when the peer closed the connection. The caller consumes
// every complete frame (next) before it calls fill again, so the buffer
// grows only for a frame larger than itself.
func (f *fdReader) fill() (bool, error) {
	if f.r == f.w {
		f.r, f.w = 0, 0
	}
	if f.w == len(f.buf) {
		if err := f.makeRoom(); err != nil {
			return false, err
		}
	}
	for {
		n, err := unix.Read(f.fd, f.buf[f.w:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false, nil
		case err != nil:
			return false, fmt.Errorf("read: %w", err)
		case n == 0:
			return false, io.EOF
		}
		f.w += n
		return true, nil
	}
}

// makeRoom moves unconsumed bytes to the front, or grows the buffer when a
// frame larger than it is arriving (never beyond MaxFrameSize).
func (f *fdReader) makeRoom() error {
	if f.r > 0 {
		f.w = copy(f.buf, f.buf[f.r:f.w])
		f.r = 0
		return nil
	}
	if len(f.buf) >= 4+wire.MaxFrameSize {
		return errors.New("frame buffer full")
	}
	grown := make([]byte, min(2*len(f.buf), 4+wire.MaxFrameSize))
	f.w = copy(grown, f.buf[:f.w])
	f.buf = grown
	return nil
}

// next returns the body of the next complete frame, or nil when none is
// complete yet. A bad length is a *wire.Error.
func (f *fdReader) next() ([]byte, error) {
	if f.w-f.r < 4 {
		return nil, nil
	}
	n := int(binary.BigEndian.Uint32(f.buf[f.r:]))
	if n == 0 {
		return nil, &wire.Error{Code: wire.CodeMalformed, Message: "frame length 0"}
	}
	if n > wire.MaxFrameSize {
		return nil, &wire.Error{Code: wire.CodeFrameTooLarge, Message: fmt.Sprintf("frame length %d exceeds %d", n, wire.MaxFrameSize)}
	}
	if f.w-f.r < 4+n {
		return nil, nil
	}
	body := f.buf[f.r+4 : f.r+4+n]
	f.r += 4 + n
	return body, nil
}
