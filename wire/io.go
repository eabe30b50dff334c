package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

const (
	// readBufferSize is the Reader's bufio size: many small frames (requests) per read syscall.
	readBufferSize = 64 << 10
	// writeBufferSize is the Writer's buffer: frames accumulate up to this size before a write.
	writeBufferSize = 64 << 10
	// copyThreshold is the largest Pages.Data that WritePages copies into its buffer; larger data
	// goes to the connection straight from the caller's slice (writev on a net.Conn).
	copyThreshold = 16 << 10
	// initialBodyBuffer is the first allocation for a frame body larger than the current buffer.
	initialBodyBuffer = 64 << 10
)

// Reader reads frames from a byte stream and decodes them.
//
// A Reader is not safe for concurrent use: one receive loop owns it.
type Reader struct {
	r        *bufio.Reader
	hdr      [4]byte
	buf      []byte
	dec      *decoder
	pageSize int
	err      error // sticky framing error: the stream cannot be resynchronised
}

// NewReader returns a Reader reading frames from r through a 64 KiB buffer.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, readBufferSize), dec: newDecoder()}
}

// SetPageSize makes ReadMessage check that Pages.Data is exactly Count*n bytes. A target calls it once
// it has the page size from Welcome. n must be a valid page size or 0 (unknown).
func (r *Reader) SetPageSize(n int) {
	r.pageSize = n
}

// ReadMessage reads and decodes the next frame.
//
// It returns io.EOF if the stream ends at a frame boundary and an error wrapping io.ErrUnexpectedEOF if
// it ends inside a frame. A frame that is too large or malformed yields a *Error with the code to send
// back to the peer; a frame length of 0 or above MaxFrameSize is rejected before anything is allocated,
// and leaves the stream out of step, so every later call returns the same error: close the connection.
// Other errors are the underlying reader's.
//
// Pages.Data and Pages.Hashes alias the Reader's buffer and are valid only until the next call.
func (r *Reader) ReadMessage() (Message, error) {
	if r.err != nil {
		return nil, r.err
	}
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("wire: read frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(r.hdr[:])
	if n == 0 {
		r.err = &Error{Code: CodeMalformed, Message: "frame length 0"}
		return nil, r.err
	}
	if n > MaxFrameSize {
		r.err = &Error{Code: CodeFrameTooLarge, Message: fmt.Sprintf("frame length %d exceeds %d", n, MaxFrameSize)}
		return nil, r.err
	}
	body, err := r.readBody(int(n))
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("wire: read %d-byte frame body: %w", n, err)
	}
	return r.dec.decode(body, r.pageSize)
}

// readBody reads an n-byte frame body into the reused buffer. When the buffer must grow, it grows
// as bytes arrive (doubling from 64 KiB), so a peer that announces a large frame and sends little
// makes the reader allocate little.
func (r *Reader) readBody(n int) ([]byte, error) {
	if n <= cap(r.buf) {
		r.buf = r.buf[:n]
		_, err := io.ReadFull(r.r, r.buf)
		return r.buf, err
	}
	have := 0
	buf := r.buf[:cap(r.buf)]
	for have < n {
		if have == len(buf) {
			size := max(2*len(buf), initialBodyBuffer)
			grown := make([]byte, min(size, n))
			copy(grown, buf[:have])
			buf = grown
			r.buf = grown[:0]
		}
		m, err := io.ReadFull(r.r, buf[have:min(len(buf), n)])
		have += m
		if err != nil {
			return nil, err
		}
	}
	r.buf = buf[:n]
	return r.buf, nil
}

// Writer encodes frames into a 64 KiB buffer and writes them to an underlying writer.
//
// A Writer is not safe for concurrent use: one send loop per connection owns it. After a write error
// the stream is broken and every later call returns that error.
type Writer struct {
	w   io.Writer
	enc *encoder // enc.out.b is the buffer
	vec net.Buffers
	arr [3][]byte
	n   uint64
	err error
}

// NewWriter returns a Writer writing frames to w. When w is a net.Conn (a *net.TCPConn or
// *net.UnixConn), WritePages sends large page data with writev, without copying it.
func NewWriter(w io.Writer) *Writer {
	enc := newEncoder()
	enc.out.b = make([]byte, 0, writeBufferSize)
	return &Writer{w: w, enc: enc}
}

// WriteMessage encodes m into the buffer, flushing first if the buffer is full. Pages go through
// WritePages.
func (w *Writer) WriteMessage(m Message) error {
	if p, ok := m.(*Pages); ok {
		return w.WritePages(p)
	}
	if w.err != nil {
		return w.err
	}
	if _, err := w.enc.frame(m, false); err != nil {
		return err
	}
	if len(w.enc.out.b) >= writeBufferSize {
		return w.Flush()
	}
	return nil
}

// WritePages encodes p. Data up to 16 KiB is copied into the buffer; larger data is not copied: the
// buffered frames and the header of p go out with p.Data and the frame's checksum in one vectored
// write. p.Data is not retained
// after WritePages returns.
func (w *Writer) WritePages(p *Pages) error {
	if w.err != nil {
		return w.err
	}
	data, err := w.enc.frame(p, true)
	if err != nil {
		return err
	}
	if len(data) <= copyThreshold && len(w.enc.out.b)+len(data)+TrailerLen <= cap(w.enc.out.b) {
		w.enc.out.b = append(w.enc.out.b, data...)
		w.enc.out.b = append(w.enc.out.b, w.enc.trailer[:]...)
		if len(w.enc.out.b) >= writeBufferSize {
			return w.Flush()
		}
		return nil
	}
	w.arr = [3][]byte{w.enc.out.b, data, w.enc.trailer[:]}
	w.vec = w.arr[:]
	total := len(w.enc.out.b) + len(data) + TrailerLen
	n, err := w.vec.WriteTo(w.w)
	w.arr = [3][]byte{}
	w.n += uint64(n)
	w.enc.out.b = w.enc.out.b[:0]
	if err == nil && n != int64(total) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.err = fmt.Errorf("wire: write: %w", err)
		return w.err
	}
	return nil
}

// Flush writes the buffered frames.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	b := w.enc.out.b
	if len(b) == 0 {
		return nil
	}
	n, err := w.w.Write(b)
	w.n += uint64(n)
	w.enc.out.b = b[:0]
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.err = fmt.Errorf("wire: write: %w", err)
		return w.err
	}
	return nil
}

// Buffered returns the number of bytes waiting in the buffer.
func (w *Writer) Buffered() int { return len(w.enc.out.b) }

// Written returns the number of bytes handed to the underlying writer so far.
func (w *Writer) Written() uint64 { return w.n }

// Buffered returns the number of bytes read from the stream and not yet consumed: a frame, or
// part of one, is waiting.
func (r *Reader) Buffered() int { return r.r.Buffered() }
