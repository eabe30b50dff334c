package returnpath

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxBitmap is Reader.MaxBitmap's default: the bitmap of a 64 TiB RAM block of 4 KiB pages.
const DefaultMaxBitmap = 1 << 31

// Reader reads return-path messages from a stream.
type Reader struct {
	r *bufio.Reader
	// MaxBitmap is the largest RECV_BITMAP bitmap size accepted, in bytes (DefaultMaxBitmap if
	// 0). The bitmap is streamed, never held, so this bounds time, not memory.
	MaxBitmap uint64

	buf     [HeaderSize + MaxPayload]byte
	n       int  // bytes of the last frame in buf
	pending bool // a RECV_BITMAP tail follows and has not been read
}

// NewReader returns a Reader reading from r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReaderSize(r, 4096)} }

// Next reads the next message. raw is the message's frame as read (header and payload), valid
// until the next call. After a RecvBitmap message the caller may call Bitmap to read the tail
// that follows the frame; if it does not, Next reads and checks the tail itself, discarding it.
//
// Next returns io.EOF at a clean end of stream (between frames), io.ErrUnexpectedEOF when the
// stream ends inside a frame or tail, an error wrapping ErrMalformed for invalid bytes, or the
// underlying reader's error.
func (r *Reader) Next() (m Message, raw []byte, err error) {
	if r.pending {
		if _, err := r.Bitmap(io.Discard); err != nil {
			return Message{}, nil, err
		}
	}
	r.n = 0
	if _, err := io.ReadFull(r.r, r.buf[:HeaderSize]); err != nil {
		return Message{}, nil, err
	}
	t := Type(binary.BigEndian.Uint16(r.buf[:]))
	n := int(binary.BigEndian.Uint16(r.buf[2:]))
	if err := CheckHeader(t, n); err != nil {
		return Message{}, nil, err
	}
	if _, err := io.ReadFull(r.r, r.buf[HeaderSize:HeaderSize+n]); err != nil {
		return Message{}, nil, unexpected(err)
	}
	r.n = HeaderSize + n
	m, err = Parse(t, r.buf[HeaderSize:r.n])
	if err != nil {
		return Message{}, nil, err
	}
	r.pending = t == RecvBitmap
	return m, r.buf[:r.n], nil
}

// Bitmap copies the tail that follows a RECV_BITMAP frame (u64 size, size bytes of bitmap, u64
// end mark), exactly as read, to w and returns the bitmap size. It must be called right after
// Next returned a RecvBitmap message, at most once. The size must be a multiple of 8 (QEMU
// rounds it up to 8) and at most MaxBitmap, and the end mark must be BitmapEnding; otherwise
// the error wraps ErrMalformed. The size is written to w only once checked, the end mark only
// once read and checked.
func (r *Reader) Bitmap(w io.Writer) (uint64, error) {
	if !r.pending {
		return 0, errors.New("returnpath: Bitmap called without a RECV_BITMAP frame before it")
	}
	r.pending = false
	var word [8]byte
	if _, err := io.ReadFull(r.r, word[:]); err != nil {
		return 0, unexpected(err)
	}
	size := binary.BigEndian.Uint64(word[:])
	max := r.MaxBitmap
	if max == 0 {
		max = DefaultMaxBitmap
	}
	if size > max || size%8 != 0 {
		return 0, malformed("RECV_BITMAP bitmap of %d bytes (want a multiple of 8, at most %d)", size, max)
	}
	if _, err := w.Write(word[:]); err != nil {
		return 0, fmt.Errorf("write bitmap size: %w", err)
	}
	if _, err := io.CopyN(w, r.r, int64(size)); err != nil {
		return 0, unexpected(err)
	}
	if _, err := io.ReadFull(r.r, word[:]); err != nil {
		return 0, unexpected(err)
	}
	if end := binary.BigEndian.Uint64(word[:]); end != BitmapEnding {
		return 0, malformed("RECV_BITMAP end mark %#x (want %#x)", end, BitmapEnding)
	}
	if _, err := w.Write(word[:]); err != nil {
		return 0, fmt.Errorf("write bitmap end mark: %w", err)
	}
	return size, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
