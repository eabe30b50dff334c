package wire

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// appendBuf is the msgpack encoder's output: it appends to b and never fails.
type appendBuf struct{ b []byte }

func (a *appendBuf) Write(p []byte) (int, error) { a.b = append(a.b, p...); return len(p), nil }
func (a *appendBuf) WriteByte(c byte) error      { a.b = append(a.b, c); return nil }

// encoder appends frames to a byte slice through msgpack's low-level methods (no reflection).
type encoder struct {
	out appendBuf
	e   *msgpack.Encoder
	// trailer is the checksum of the last frame: frame appends it after the
	// frame, except with headerOnly, where the caller writes it after the data.
	trailer [TrailerLen]byte
}

func newEncoder() *encoder {
	enc := &encoder{}
	enc.e = msgpack.NewEncoder(&enc.out)
	return enc
}

var encoderPool = sync.Pool{New: func() any { return newEncoder() }}

// AppendFrame appends m as a whole frame (length prefix, type byte, body) to dst and returns the extended
// slice. It validates m first, so that a peer never receives a frame it must reject; on error dst is
// returned unchanged. Pages.Data is checked to be a whole number of pages of some valid page size.
func AppendFrame(dst []byte, m Message) ([]byte, error) {
	enc := encoderPool.Get().(*encoder)
	enc.out.b = dst
	_, err := enc.frame(m, false)
	out := enc.out.b
	enc.out.b = nil
	encoderPool.Put(enc)
	if err != nil {
		return dst, err
	}
	return out, nil
}

// frame appends m's frame to enc.out.b. With headerOnly (Pages only), it stops after the data's bin
// header and returns the data still to be written, which the caller follows with enc.trailer; the
// length prefix already counts both.
func (enc *encoder) frame(m Message, headerOnly bool) ([]byte, error) {
	if m == nil {
		return nil, fmt.Errorf("wire: encode nil message")
	}
	if err := m.check(0); err != nil {
		return nil, fmt.Errorf("wire: encode %s: %w", m.Type(), err)
	}
	start := len(enc.out.b)
	enc.out.b = append(enc.out.b, 0, 0, 0, 0, byte(m.Type()))
	var tail []byte
	enc.body(m)
	// The checksum covers the type and the body, but not Pages.Data (each page has its own hash).
	binary.BigEndian.PutUint32(enc.trailer[:], crc32.Checksum(enc.out.b[start+4:], castagnoli))
	if p, ok := m.(*Pages); ok {
		if headerOnly {
			tail = p.Data
		} else {
			enc.out.b = append(enc.out.b, p.Data...)
		}
	}
	if !headerOnly {
		enc.out.b = append(enc.out.b, enc.trailer[:]...)
	}
	n := len(enc.out.b) - start - 4 + len(tail)
	if headerOnly {
		n += TrailerLen
	}
	if n > MaxFrameSize {
		enc.out.b = enc.out.b[:start]
		return nil, &Error{Code: CodeFrameTooLarge, Message: fmt.Sprintf("%s frame of %d bytes exceeds %d", m.Type(), n, MaxFrameSize)}
	}
	binary.BigEndian.PutUint32(enc.out.b[start:], uint32(n))
	return tail, nil
}

// body encodes m's msgpack array. For Pages it stops after the data's bin header. Writes to an
// appendBuf cannot fail, so the encoder's errors are not checked.
func (enc *encoder) body(m Message) {
	e := enc.e
	switch m := m.(type) {
	case *Hello:
		e.EncodeArrayLen(9)
		e.EncodeUint(uint64(m.VersionMin))
		e.EncodeUint(uint64(m.VersionMax))
		e.EncodeUint(m.Features)
		e.EncodeUint(uint64(m.Channel))
		enc.bin(m.Session[:])
		e.EncodeString(m.Client)
		e.EncodeUint(uint64(m.Stream))
		e.EncodeUint(uint64(m.Streams))
		e.EncodeBool(m.Resume)
	case *Welcome:
		e.EncodeArrayLen(5)
		e.EncodeUint(uint64(m.Version))
		e.EncodeUint(m.Features)
		e.EncodeUint(uint64(m.PageSize))
		e.EncodeArrayLen(len(m.Regions))
		for i := range m.Regions {
			r := &m.Regions[i]
			e.EncodeArrayLen(3)
			e.EncodeUint(uint64(r.ID))
			e.EncodeString(r.Name)
			e.EncodeUint(r.Pages)
		}
		e.EncodeString(m.Server)
	case *Request:
		e.EncodeArrayLen(5)
		e.EncodeUint(m.ReqID)
		e.EncodeUint(uint64(m.Region))
		e.EncodeUint(m.Page)
		e.EncodeUint(uint64(m.Count))
		e.EncodeUint(uint64(m.Priority))
	case *Pages:
		e.EncodeArrayLen(7)
		e.EncodeUint(m.ReqID)
		e.EncodeUint(uint64(m.Region))
		e.EncodeUint(m.Page)
		e.EncodeUint(uint64(m.Count))
		e.EncodeUint(uint64(m.Flags))
		enc.bin(m.Hashes)
		e.EncodeBytesLen(len(m.Data))
	case *Error:
		e.EncodeArrayLen(3)
		e.EncodeUint(uint64(m.Code))
		e.EncodeUint(m.ReqID)
		e.EncodeString(m.Message)
	case *DigestRequest:
		e.EncodeArrayLen(2)
		e.EncodeUint(m.ReqID)
		e.EncodeUint(uint64(m.Region))
	case *Digest:
		e.EncodeArrayLen(4)
		e.EncodeUint(m.ReqID)
		e.EncodeUint(uint64(m.Region))
		e.EncodeUint(uint64(m.Algorithm))
		enc.bin(m.Sum[:])
	case *Bye:
		e.EncodeArrayLen(1)
		e.EncodeString(m.Reason)
	case *Push:
		e.EncodeArrayLen(3)
		e.EncodeUint(m.ReqID)
		e.EncodeUint(uint64(m.Region))
		enc.uints(m.Pages)
	case *Feedback:
		e.EncodeArrayLen(3)
		e.EncodeUint(uint64(m.Region))
		enc.uints(m.Used)
		enc.uints(m.Unused)
	case *Known:
		e.EncodeArrayLen(4)
		e.EncodeUint(uint64(m.Algorithm))
		e.EncodeUint(m.First)
		enc.bin(m.Hashes)
		e.EncodeBool(m.Done)
	case *Refs:
		e.EncodeArrayLen(3)
		e.EncodeUint(uint64(m.Round))
		e.EncodeUint(uint64(m.Region))
		enc.bin(m.Entries)
	case *RoundEnd:
		e.EncodeArrayLen(3)
		e.EncodeUint(uint64(m.Round))
		e.EncodeUint(m.Pages)
		e.EncodeUint(m.Refs)
	case *RoundAck:
		e.EncodeArrayLen(3)
		e.EncodeUint(uint64(m.Round))
		enc.bin(m.Rejected)
		e.EncodeBool(m.Last)
	case *Invalidate:
		e.EncodeArrayLen(2)
		e.EncodeUint(uint64(m.Region))
		enc.bin(m.Pages)
	case *Handover:
		e.EncodeArrayLen(1)
		enc.bin(m.State)
	case *Resident:
		e.EncodeArrayLen(4)
		e.EncodeUint(uint64(m.Region))
		e.EncodeUint(m.First)
		enc.bin(m.Bits)
		e.EncodeBool(m.Done)
	}
}

// uints encodes vs as a msgpack array of unsigned integers (an empty or nil slice is an empty array).
func (enc *encoder) uints(vs []uint64) {
	enc.e.EncodeArrayLen(len(vs))
	for _, v := range vs {
		enc.e.EncodeUint(v)
	}
}

// bin encodes b as msgpack bin (never nil: an empty byte string is bin8 of length 0).
func (enc *encoder) bin(b []byte) {
	enc.e.EncodeBytesLen(len(b))
	enc.out.b = append(enc.out.b, b...)
}
