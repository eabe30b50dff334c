package predictor

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Trace is a recorded first-touch sequence of one region (docs/prefetch.md, "Trace format").
type Trace struct {
	PageSize uint32   // bytes per page, a power of two
	Pages    uint64   // region size in pages, at most MaxTracePages
	Seq      []uint64 // pages in touch order, each < Pages
}

// Trace format limits.
const (
	traceMagic      = "PWTRACE1"
	traceVersion    = 1
	traceHeaderSize = 8 + 4 + 4 + 8 + 8
	// MaxTraceCount is the largest number of pages a trace may hold.
	MaxTraceCount = 1 << 32
	// MaxTracePages is the largest region a trace may describe; it keeps every delta far
	// inside int64, so a decoded trace re-encodes to the same bytes.
	MaxTracePages = 1 << 48
)

// ErrTrace is returned (wrapped) for a malformed trace.
var ErrTrace = errors.New("malformed trace")

func (t *Trace) validate() error {
	if t.PageSize == 0 || t.PageSize&(t.PageSize-1) != 0 {
		return fmt.Errorf("%w: page size %d is not a power of two", ErrTrace, t.PageSize)
	}
	if t.Pages > MaxTracePages {
		return fmt.Errorf("%w: %d pages exceed %d", ErrTrace, t.Pages, uint64(MaxTracePages))
	}
	if uint64(len(t.Seq)) > MaxTraceCount {
		return fmt.Errorf("%w: %d pages in sequence exceed %d", ErrTrace, len(t.Seq), uint64(MaxTraceCount))
	}
	return nil
}

// WriteTrace writes t in the PWTRACE1 format.
func WriteTrace(w io.Writer, t Trace) error {
	if err := t.validate(); err != nil {
		return err
	}
	var hdr [traceHeaderSize]byte
	copy(hdr[:], traceMagic)
	binary.LittleEndian.PutUint32(hdr[8:], traceVersion)
	binary.LittleEndian.PutUint32(hdr[12:], t.PageSize)
	binary.LittleEndian.PutUint64(hdr[16:], t.Pages)
	binary.LittleEndian.PutUint64(hdr[24:], uint64(len(t.Seq)))
	bw := bufio.NewWriter(w)
	if _, err := bw.Write(hdr[:]); err != nil {
		return fmt.Errorf("write trace header: %w", err)
	}
	var prev uint64
	var buf [binary.MaxVarintLen64]byte
	for i, q := range t.Seq {
		if q >= t.Pages {
			return fmt.Errorf("%w: page %d at %d outside %d pages", ErrTrace, q, i, t.Pages)
		}
		n := binary.PutVarint(buf[:], int64(q-prev))
		prev = q
		if _, err := bw.Write(buf[:n]); err != nil {
			return fmt.Errorf("write trace: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	return nil
}

// ReadTrace reads a PWTRACE1 trace up to the end of r. It rejects a bad magic or version, a
// count above MaxTraceCount, a page outside the region, a varint that is not minimally encoded
// (so every accepted input re-encodes to the same bytes), a short input and trailing bytes. It
// never allocates from the count alone: the sequence grows as pages are read.
func ReadTrace(r io.Reader) (Trace, error) {
	br := bufio.NewReader(r)
	var hdr [traceHeaderSize]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return Trace{}, fmt.Errorf("%w: header: %w", ErrTrace, err)
	}
	if string(hdr[:8]) != traceMagic {
		return Trace{}, fmt.Errorf("%w: bad magic %q", ErrTrace, hdr[:8])
	}
	if v := binary.LittleEndian.Uint32(hdr[8:]); v != traceVersion {
		return Trace{}, fmt.Errorf("%w: version %d, want %d", ErrTrace, v, traceVersion)
	}
	t := Trace{
		PageSize: binary.LittleEndian.Uint32(hdr[12:]),
		Pages:    binary.LittleEndian.Uint64(hdr[16:]),
	}
	if err := t.validate(); err != nil {
		return Trace{}, err
	}
	count := binary.LittleEndian.Uint64(hdr[24:])
	if count > MaxTraceCount {
		return Trace{}, fmt.Errorf("%w: count %d exceeds %d", ErrTrace, count, uint64(MaxTraceCount))
	}
	t.Seq = make([]uint64, 0, min(count, 1<<12))
	var prev uint64
	for i := uint64(0); i < count; i++ {
		u, err := readUvarint(br)
		if err != nil {
			return Trace{}, fmt.Errorf("%w: page %d of %d: %w", ErrTrace, i, count, err)
		}
		d := int64(u>>1) ^ -int64(u&1) // zigzag
		q := prev + uint64(d)
		if q >= t.Pages {
			return Trace{}, fmt.Errorf("%w: page %d of %d outside %d pages", ErrTrace, i, count, t.Pages)
		}
		t.Seq = append(t.Seq, q)
		prev = q
	}
	if _, err := br.ReadByte(); err != io.EOF {
		if err == nil {
			return Trace{}, fmt.Errorf("%w: trailing bytes after %d pages", ErrTrace, count)
		}
		return Trace{}, fmt.Errorf("read trace: %w", err)
	}
	return t, nil
}

var errVarint = errors.New("varint overflows or is not minimally encoded")

// readUvarint is binary.ReadUvarint that also rejects non-minimal encodings.
func readUvarint(r io.ByteReader) (uint64, error) {
	var x uint64
	var s uint
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if b < 0x80 {
			if (i > 0 && b == 0) || (i == binary.MaxVarintLen64-1 && b > 1) {
				return 0, errVarint
			}
			return x | uint64(b)<<s, nil
		}
		x |= uint64(b&0x7f) << s
		s += 7
	}
	return 0, errVarint
}
