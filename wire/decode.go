package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// maxSkipDepth bounds the nesting of ignored trailing elements, so that a frame of nested arrays
// cannot recurse deeply.
const maxSkipDepth = 16

// decoder decodes frame bodies. Byte strings are not copied: they alias the body.
type decoder struct {
	body []byte // the msgpack body, after the type byte
	br   bytes.Reader
	d    *msgpack.Decoder
	what string // message name for error context
	// skipChecksum decodes frames whose trailer is not checked (the fuzzers, so that mutations
	// reach the body decoders instead of stopping at the checksum).
	skipChecksum bool
}

func newDecoder() *decoder {
	dec := &decoder{}
	// bytes.Reader is an io.ByteScanner, so msgpack reads it directly without a bufio layer.
	dec.d = msgpack.NewDecoder(&dec.br)
	return dec
}

var decoderPool = sync.Pool{New: func() any { return newDecoder() }}

// Decode decodes a frame without its length prefix: the type byte, the msgpack array and the
// checksum trailer (CRC-32C of the type byte and the array, Pages.Data excepted). Byte slices in the result (Pages.Hashes, Pages.Data, Known.Hashes, Refs.Entries,
// RoundAck.Rejected) alias frame.
//
// Every failure is a *Error carrying the code to send back (CodeMalformed, CodeUnknownType,
// CodeFrameTooLarge, or CodeOutOfRange for a Request count; a checksum mismatch is CodeMalformed);
// its ReqID is set when the failing message's req_id was decoded. Pages.Data is checked to be a whole number of pages of some valid page
// size; Reader.SetPageSize makes the check exact.
func Decode(frame []byte) (Message, error) {
	dec := decoderPool.Get().(*decoder)
	m, err := dec.decode(frame, 0)
	dec.body = nil
	dec.br.Reset(nil)
	decoderPool.Put(dec)
	return m, err
}

func (dec *decoder) decode(frame []byte, pageSize int) (Message, error) {
	if len(frame) == 0 {
		return nil, malformed("empty frame")
	}
	if len(frame) > MaxFrameSize {
		return nil, &Error{Code: CodeFrameTooLarge, Message: fmt.Sprintf("frame of %d bytes exceeds %d", len(frame), MaxFrameSize)}
	}
	if t := Type(frame[0]); t == 0 || t > TypeResident {
		return nil, &Error{Code: CodeUnknownType, Message: fmt.Sprintf("unknown frame type %d", uint8(t))}
	}
	if len(frame) < 1+TrailerLen {
		return nil, malformed("frame of %d bytes is shorter than a type byte and its checksum", len(frame))
	}
	sum := binary.BigEndian.Uint32(frame[len(frame)-TrailerLen:])
	frame = frame[:len(frame)-TrailerLen]
	m, err := dec.decodeBody(frame)
	if err != nil {
		return nil, err
	}
	if got := crc32.Checksum(checksummed(frame, m), castagnoli); got != sum && !dec.skipChecksum {
		return nil, dec.errf(0, "frame checksum %08x, the frame sums to %08x: corrupted in transit", sum, got)
	}
	if err := m.check(pageSize); err != nil {
		if werr, ok := err.(*Error); ok && werr.ReqID == 0 {
			werr.ReqID = reqIDOf(m)
		}
		return nil, err
	}
	return m, nil
}

// checksummed returns the part of frame (type byte and body, no trailer) that the checksum covers:
// all of it but a Pages frame's data, which ends the frame.
func checksummed(frame []byte, m Message) []byte {
	if p, ok := m.(*Pages); ok {
		return frame[:len(frame)-len(p.Data)]
	}
	return frame
}

// decodeBody decodes a frame's type byte and msgpack array (no trailer) without checking the
// message's field values.
func (dec *decoder) decodeBody(frame []byte) (Message, error) {
	t := Type(frame[0])
	dec.body = frame[1:]
	dec.br.Reset(dec.body)
	dec.d.ResetReader(&dec.br)
	dec.what = t.String()

	var m Message
	var err error
	switch t {
	case TypeHello:
		m, err = dec.hello()
	case TypeWelcome:
		m, err = dec.welcome()
	case TypeRequest:
		m, err = dec.request()
	case TypePages:
		m, err = dec.pages()
	case TypeError:
		m, err = dec.error()
	case TypeDigestRequest:
		m, err = dec.digestRequest()
	case TypeDigest:
		m, err = dec.digest()
	case TypeBye:
		m, err = dec.bye()
	case TypePush:
		m, err = dec.push()
	case TypeFeedback:
		m, err = dec.feedback()
	case TypeKnown:
		m, err = dec.known()
	case TypeRefs:
		m, err = dec.refs()
	case TypeRoundEnd:
		m, err = dec.roundEnd()
	case TypeRoundAck:
		m, err = dec.roundAck()
	case TypeInvalidate:
		m, err = dec.invalidate()
	case TypeHandover:
		m, err = dec.handover()
	case TypeResident:
		m, err = dec.resident()
	default:
		return nil, &Error{Code: CodeUnknownType, Message: fmt.Sprintf("unknown frame type %d", uint8(t))}
	}
	if err != nil {
		return nil, err
	}
	if dec.br.Len() != 0 {
		return nil, dec.errf(reqIDOf(m), "%d bytes after the array", dec.br.Len())
	}
	return m, nil
}

func reqIDOf(m Message) uint64 {
	switch m := m.(type) {
	case *Request:
		return m.ReqID
	case *Pages:
		return m.ReqID
	case *DigestRequest:
		return m.ReqID
	case *Digest:
		return m.ReqID
	case *Push:
		return m.ReqID
	}
	return 0
}

func (dec *decoder) errf(reqID uint64, format string, args ...any) *Error {
	return &Error{Code: CodeMalformed, ReqID: reqID, Message: dec.what + ": " + fmt.Sprintf(format, args...)}
}

// open reads the array header of a message (or nested record) with at least fields elements and
// returns the number of extra elements to skip once the known fields are read.
func (dec *decoder) open(fields int) (extra int, err error) {
	c, err := dec.d.PeekCode()
	if err != nil {
		return 0, dec.errf(0, "truncated body")
	}
	if !msgpcode.IsFixedArray(c) && c != msgpcode.Array16 && c != msgpcode.Array32 {
		return 0, dec.errf(0, "body is not an array (code %#x)", c)
	}
	n, err := dec.d.DecodeArrayLen()
	if err != nil {
		return 0, dec.errf(0, "truncated array header")
	}
	if n < fields {
		return 0, dec.errf(0, "array of %d elements, want %d", n, fields)
	}
	return n - fields, nil
}

// close skips extra trailing elements, which the protocol ignores.
func (dec *decoder) close(extra int, reqID uint64) error {
	for range extra {
		if err := dec.skip(0); err != nil {
			return dec.errf(reqID, "trailing element: %v", err)
		}
	}
	return nil
}

// uint decodes an unsigned field of any msgpack integer width, rejecting negative values, values above
// max, and other types.
func (dec *decoder) uint(field string, reqID uint64, max uint64) (uint64, error) {
	c, err := dec.d.PeekCode()
	if err != nil {
		return 0, dec.errf(reqID, "%s: truncated body", field)
	}
	var v uint64
	switch {
	case c <= msgpcode.PosFixedNumHigh, c == msgpcode.Uint8, c == msgpcode.Uint16, c == msgpcode.Uint32, c == msgpcode.Uint64:
		v, err = dec.d.DecodeUint64()
	case c >= msgpcode.NegFixedNumLow, c == msgpcode.Int8, c == msgpcode.Int16, c == msgpcode.Int32, c == msgpcode.Int64:
		var s int64
		s, err = dec.d.DecodeInt64()
		if err == nil && s < 0 {
			return 0, dec.errf(reqID, "%s: negative value %d", field, s)
		}
		v = uint64(s)
	default:
		return 0, dec.errf(reqID, "%s: want an integer, got code %#x", field, c)
	}
	if err != nil {
		return 0, dec.errf(reqID, "%s: truncated integer", field)
	}
	if v > max {
		return 0, dec.errf(reqID, "%s: %d overflows (limit %d)", field, v, max)
	}
	return v, nil
}

// length reads a str or bin header (as selected by isStr) and checks the length against limit and
// against what is left of the body, before anything is allocated.
func (dec *decoder) length(field string, reqID uint64, isStr bool, limit int) (int, error) {
	c, err := dec.d.PeekCode()
	if err != nil {
		return 0, dec.errf(reqID, "%s: truncated body", field)
	}
	if isStr && !msgpcode.IsString(c) {
		return 0, dec.errf(reqID, "%s: want str, got code %#x", field, c)
	}
	if !isStr && !msgpcode.IsBin(c) {
		return 0, dec.errf(reqID, "%s: want bin, got code %#x", field, c)
	}
	n, err := dec.d.DecodeBytesLen()
	if err != nil {
		return 0, dec.errf(reqID, "%s: truncated length", field)
	}
	if n > limit {
		return 0, dec.errf(reqID, "%s: %d bytes, limit %d", field, n, limit)
	}
	if n > dec.br.Len() {
		return 0, dec.errf(reqID, "%s: %d bytes, only %d left in the frame", field, n, dec.br.Len())
	}
	return n, nil
}

// take returns the next n bytes of the body without copying and advances past them.
func (dec *decoder) take(n int) []byte {
	if n == 0 {
		return nil
	}
	off := len(dec.body) - dec.br.Len()
	dec.br.Seek(int64(n), io.SeekCurrent)
	return dec.body[off : off+n : off+n]
}

func (dec *decoder) str(field string, reqID uint64, limit int) (string, error) {
	n, err := dec.length(field, reqID, true, limit)
	if err != nil {
		return "", err
	}
	return string(dec.take(n)), nil
}

func (dec *decoder) bin(field string, reqID uint64, limit int) ([]byte, error) {
	n, err := dec.length(field, reqID, false, limit)
	if err != nil {
		return nil, err
	}
	return dec.take(n), nil
}

// arrayLen reads the header of an array field and checks its length against limit and against what is
// left of the body (every element takes at least one byte), before anything is allocated.
func (dec *decoder) arrayLen(field string, reqID uint64, limit int) (int, error) {
	c, err := dec.d.PeekCode()
	if err != nil {
		return 0, dec.errf(reqID, "%s: truncated body", field)
	}
	if !msgpcode.IsFixedArray(c) && c != msgpcode.Array16 && c != msgpcode.Array32 {
		return 0, dec.errf(reqID, "%s: want array, got code %#x", field, c)
	}
	n, err := dec.d.DecodeArrayLen()
	if err != nil {
		return 0, dec.errf(reqID, "%s: truncated array header", field)
	}
	if n > limit {
		return 0, dec.errf(reqID, "%s: %d elements, limit %d", field, n, limit)
	}
	if n > dec.br.Len() {
		return 0, dec.errf(reqID, "%s: %d elements, only %d bytes left", field, n, dec.br.Len())
	}
	return n, nil
}

// bool decodes a msgpack boolean; integers and nil are not booleans.
func (dec *decoder) bool(field string, reqID uint64) (bool, error) {
	c, err := dec.d.PeekCode()
	if err != nil {
		return false, dec.errf(reqID, "%s: truncated body", field)
	}
	if c != msgpcode.True && c != msgpcode.False {
		return false, dec.errf(reqID, "%s: want bool, got code %#x", field, c)
	}
	dec.br.ReadByte()
	return c == msgpcode.True, nil
}

// pageList reads an array of at most MaxPagesPerRequest page numbers (u64). An empty array is nil.
func (dec *decoder) pageList(field string, reqID uint64) ([]uint64, error) {
	n, err := dec.arrayLen(field, reqID, MaxPagesPerRequest)
	if err != nil || n == 0 {
		return nil, err
	}
	pages := make([]uint64, n)
	for i := range pages {
		if pages[i], err = dec.uint(field, reqID, math.MaxUint64); err != nil {
			return nil, err
		}
	}
	return pages, nil
}

// fixed reads a bin field of exactly len(dst) bytes into dst.
func (dec *decoder) fixed(field string, reqID uint64, dst []byte) error {
	b, err := dec.bin(field, reqID, math.MaxInt32)
	if err != nil {
		return err
	}
	if len(b) != len(dst) {
		return dec.errf(reqID, "%s: %d bytes, want %d", field, len(b), len(dst))
	}
	copy(dst, b)
	return nil
}

// field names an unsigned field and its largest value.
type field struct {
	name string
	max  uint64
}

var (
	helloFields    = []field{{"version_min", math.MaxUint16}, {"version_max", math.MaxUint16}, {"features", math.MaxUint64}, {"channel", math.MaxUint8}}
	welcomeFields  = []field{{"version", math.MaxUint16}, {"features", math.MaxUint64}, {"page_size", math.MaxUint32}}
	requestFields  = []field{{"req_id", math.MaxUint64}, {"region", math.MaxUint32}, {"page", math.MaxUint64}, {"count", math.MaxUint32}, {"priority", math.MaxUint8}}
	pagesFields    = []field{{"req_id", math.MaxUint64}, {"region", math.MaxUint32}, {"page", math.MaxUint64}, {"count", math.MaxUint32}, {"flags", math.MaxUint8}}
	errorFields    = []field{{"code", math.MaxUint16}, {"req_id", math.MaxUint64}}
	dreqFields     = []field{{"req_id", math.MaxUint64}, {"region", math.MaxUint32}}
	digestFields   = []field{{"req_id", math.MaxUint64}, {"region", math.MaxUint32}, {"algorithm", math.MaxUint8}}
	pushFields     = []field{{"req_id", math.MaxUint64}, {"region", math.MaxUint32}}
	knownFields    = []field{{"algorithm", math.MaxUint8}, {"first", math.MaxUint64}}
	refsFields     = []field{{"round", math.MaxUint32}, {"region", math.MaxUint32}}
	roundEndFields = []field{{"round", math.MaxUint32}, {"pages", math.MaxUint64}, {"refs", math.MaxUint64}}
	residentFields = []field{{"region", math.MaxUint32}, {"first", math.MaxUint64}}
)

// uints decodes consecutive unsigned fields into dst. When the first field is req_id, later errors
// carry it.
func (dec *decoder) uints(dst []uint64, fields []field) error {
	var reqID uint64
	for i, f := range fields {
		v, err := dec.uint(f.name, reqID, f.max)
		if err != nil {
			return err
		}
		dst[i] = v
		if i == 0 && f.name == "req_id" {
			reqID = v
		}
	}
	return nil
}

func (dec *decoder) hello() (Message, error) {
	extra, err := dec.open(6)
	if err != nil {
		return nil, err
	}
	var v [4]uint64
	if err := dec.uints(v[:], helloFields); err != nil {
		return nil, err
	}
	m := &Hello{VersionMin: uint16(v[0]), VersionMax: uint16(v[1]), Features: v[2], Channel: uint8(v[3])}
	if err := dec.fixed("session", 0, m.Session[:]); err != nil {
		return nil, err
	}
	if m.Client, err = dec.str("client", 0, MaxNameLen); err != nil {
		return nil, err
	}
	// stream and streams (version 3) may be absent: a version 2 Hello must decode, so that the server
	// can answer it with unsupported_version.
	if extra > 0 {
		v, err := dec.uint("stream", 0, math.MaxUint8)
		if err != nil {
			return nil, err
		}
		m.Stream, extra = uint8(v), extra-1
	}
	if extra > 0 {
		v, err := dec.uint("streams", 0, math.MaxUint8)
		if err != nil {
			return nil, err
		}
		m.Streams, extra = uint8(v), extra-1
	}
	// resume (version 4) may be absent too: false.
	if extra > 0 {
		if m.Resume, err = dec.bool("resume", 0); err != nil {
			return nil, err
		}
		extra--
	}
	return m, dec.close(extra, 0)
}

func (dec *decoder) welcome() (Message, error) {
	extra, err := dec.open(5)
	if err != nil {
		return nil, err
	}
	var v [3]uint64
	if err := dec.uints(v[:], welcomeFields); err != nil {
		return nil, err
	}
	m := &Welcome{Version: uint16(v[0]), Features: v[1], PageSize: uint32(v[2])}
	n, err := dec.arrayLen("regions", 0, MaxRegions)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		m.Regions = make([]Region, n)
	}
	for i := range m.Regions {
		rextra, err := dec.open(3)
		if err != nil {
			return nil, err
		}
		var id, pages uint64
		if id, err = dec.uint("region id", 0, math.MaxUint32); err != nil {
			return nil, err
		}
		name, err := dec.str("region name", 0, MaxNameLen)
		if err != nil {
			return nil, err
		}
		if pages, err = dec.uint("region pages", 0, math.MaxUint64); err != nil {
			return nil, err
		}
		m.Regions[i] = Region{ID: uint32(id), Name: name, Pages: pages}
		if err := dec.close(rextra, 0); err != nil {
			return nil, err
		}
	}
	if m.Server, err = dec.str("server", 0, MaxNameLen); err != nil {
		return nil, err
	}
	return m, dec.close(extra, 0)
}

func (dec *decoder) request() (Message, error) {
	extra, err := dec.open(5)
	if err != nil {
		return nil, err
	}
	var v [5]uint64
	if err := dec.uints(v[:], requestFields); err != nil {
		return nil, err
	}
	m := &Request{ReqID: v[0], Region: uint32(v[1]), Page: v[2], Count: uint32(v[3]), Priority: uint8(v[4])}
	return m, dec.close(extra, m.ReqID)
}

func (dec *decoder) pages() (Message, error) {
	extra, err := dec.open(7)
	if err != nil {
		return nil, err
	}
	var v [5]uint64
	if err := dec.uints(v[:], pagesFields); err != nil {
		return nil, err
	}
	reqID := v[0]
	m := &Pages{ReqID: reqID, Region: uint32(v[1]), Page: v[2], Count: uint32(v[3]), Flags: uint8(v[4])}
	if m.Hashes, err = dec.bin("hashes", reqID, MaxFrameSize); err != nil {
		return nil, err
	}
	if m.Data, err = dec.bin("data", reqID, MaxFrameSize); err != nil {
		return nil, err
	}
	return m, dec.close(extra, reqID)
}

func (dec *decoder) error() (Message, error) {
	extra, err := dec.open(3)
	if err != nil {
		return nil, err
	}
	var v [2]uint64
	if err := dec.uints(v[:], errorFields); err != nil {
		return nil, err
	}
	m := &Error{Code: ErrorCode(v[0]), ReqID: v[1]}
	if m.Message, err = dec.str("message", 0, MaxErrorMessageLen); err != nil {
		return nil, err
	}
	return m, dec.close(extra, 0)
}

func (dec *decoder) digestRequest() (Message, error) {
	extra, err := dec.open(2)
	if err != nil {
		return nil, err
	}
	var v [2]uint64
	if err := dec.uints(v[:], dreqFields); err != nil {
		return nil, err
	}
	return &DigestRequest{ReqID: v[0], Region: uint32(v[1])}, dec.close(extra, v[0])
}

func (dec *decoder) digest() (Message, error) {
	extra, err := dec.open(4)
	if err != nil {
		return nil, err
	}
	var v [3]uint64
	if err := dec.uints(v[:], digestFields); err != nil {
		return nil, err
	}
	m := &Digest{ReqID: v[0], Region: uint32(v[1]), Algorithm: uint8(v[2])}
	if err := dec.fixed("sum", m.ReqID, m.Sum[:]); err != nil {
		return nil, err
	}
	return m, dec.close(extra, m.ReqID)
}

func (dec *decoder) bye() (Message, error) {
	extra, err := dec.open(1)
	if err != nil {
		return nil, err
	}
	m := &Bye{}
	if m.Reason, err = dec.str("reason", 0, MaxNameLen); err != nil {
		return nil, err
	}
	return m, dec.close(extra, 0)
}

func (dec *decoder) push() (Message, error) {
	extra, err := dec.open(3)
	if err != nil {
		return nil, err
	}
	var v [2]uint64
	if err := dec.uints(v[:], pushFields); err != nil {
		return nil, err
	}
	m := &Push{ReqID: v[0], Region: uint32(v[1])}
	if m.Pages, err = dec.pageList("pages", m.ReqID); err != nil {
		return nil, err
	}
	return m, dec.close(extra, m.ReqID)
}

func (dec *decoder) feedback() (Message, error) {
	extra, err := dec.open(3)
	if err != nil {
		return nil, err
	}
	region, err := dec.uint("region", 0, math.MaxUint32)
	if err != nil {
		return nil, err
	}
	m := &Feedback{Region: uint32(region)}
	if m.Used, err = dec.pageList("used", 0); err != nil {
		return nil, err
	}
	if m.Unused, err = dec.pageList("unused", 0); err != nil {
		return nil, err
	}
	return m, dec.close(extra, 0)
}

func (dec *decoder) known() (Message, error) {
	extra, err := dec.open(4)
	if err != nil {
		return nil, err
	}
	var v [2]uint64
	if err := dec.uints(v[:], knownFields); err != nil {
		return nil, err
	}
	m := &Known{Algorithm: uint8(v[0]), First: v[1]}
	if m.Hashes, err = dec.bin("hashes", 0, MaxPagesPerRequest*maxContentHashLen); err != nil {
		return nil, err
	}
	if m.Done, err = dec.bool("done", 0); err != nil {
		return nil, err
	}
	return m, dec.close(extra, 0)
}

func (dec *decoder) refs() (Message, error) {
	extra, err := dec.open(3)
	if err != nil {
		return nil, err
	}
	var v [2]uint64
	if err := dec.uints(v[:], refsFields); err != nil {
		return nil, err
	}
	m := &Refs{Round: uint32(v[0]), Region: uint32(v[1])}
	if m.Entries, err = dec.bin("entries", 0, MaxPagesPerRequest*RefLen); err != nil {
		return nil, err
	}
	return m, dec.close(extra, 0)
}

func (dec *decoder) roundEnd() (Message, error) {
	extra, err := dec.open(3)
	if err != nil {
		return nil, err
	}
	var v [3]uint64
	if err := dec.uints(v[:], roundEndFields); err != nil {
		return nil, err
	}
	return &RoundEnd{Round: uint32(v[0]), Pages: v[1], Refs: v[2]}, dec.close(extra, 0)
}

func (dec *decoder) roundAck() (Message, error) {
	extra, err := dec.open(3)
	if err != nil {
		return nil, err
	}
	round, err := dec.uint("round", 0, math.MaxUint32)
	if err != nil {
		return nil, err
	}
	m := &RoundAck{Round: uint32(round)}
	if m.Rejected, err = dec.bin("rejected", 0, MaxRejected*RejectLen); err != nil {
		return nil, err
	}
	if m.Last, err = dec.bool("last", 0); err != nil {
		return nil, err
	}
	return m, dec.close(extra, 0)
}

func (dec *decoder) invalidate() (Message, error) {
	extra, err := dec.open(2)
	if err != nil {
		return nil, err
	}
	region, err := dec.uint("region", 0, math.MaxUint32)
	if err != nil {
		return nil, err
	}
	m := &Invalidate{Region: uint32(region)}
	if m.Pages, err = dec.bin("pages", 0, MaxInvalidate*8); err != nil {
		return nil, err
	}
	return m, dec.close(extra, 0)
}

func (dec *decoder) handover() (Message, error) {
	extra, err := dec.open(1)
	if err != nil {
		return nil, err
	}
	m := &Handover{}
	if m.State, err = dec.bin("state", 0, MaxHandoverState); err != nil {
		return nil, err
	}
	return m, dec.close(extra, 0)
}

func (dec *decoder) resident() (Message, error) {
	extra, err := dec.open(4)
	if err != nil {
		return nil, err
	}
	var v [2]uint64
	if err := dec.uints(v[:], residentFields); err != nil {
		return nil, err
	}
	m := &Resident{Region: uint32(v[0]), First: v[1]}
	if m.Bits, err = dec.bin("bits", 0, MaxResidentBytes); err != nil {
		return nil, err
	}
	if m.Done, err = dec.bool("done", 0); err != nil {
		return nil, err
	}
	return m, dec.close(extra, 0)
}

// skip skips one msgpack value of any type. It is written over the raw bytes rather than with
// msgpack's Decoder.Skip so that nesting depth is bounded and nothing is allocated.
func (dec *decoder) skip(depth int) error {
	if depth > maxSkipDepth {
		return fmt.Errorf("nested deeper than %d", maxSkipDepth)
	}
	c, err := dec.br.ReadByte()
	if err != nil {
		return errTruncated
	}
	var elems, size uint64 // nested elements to skip, raw bytes to skip
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3: // fixint, nil, bool
	case c >= 0x80 && c <= 0x8f: // fixmap
		elems = 2 * uint64(c&0x0f)
	case c >= 0x90 && c <= 0x9f: // fixarray
		elems = uint64(c & 0x0f)
	case c >= 0xa0 && c <= 0xbf: // fixstr
		size = uint64(c & 0x1f)
	case c == 0xc4 || c == 0xd9: // bin8, str8
		size, err = dec.be(1)
	case c == 0xc5 || c == 0xda: // bin16, str16
		size, err = dec.be(2)
	case c == 0xc6 || c == 0xdb: // bin32, str32
		size, err = dec.be(4)
	case c == 0xc7: // ext8
		size, err = dec.be(1)
		size++
	case c == 0xc8: // ext16
		size, err = dec.be(2)
		size++
	case c == 0xc9: // ext32
		size, err = dec.be(4)
		size++
	case c == 0xca: // float32
		size = 4
	case c == 0xcb: // float64
		size = 8
	case c == 0xcc || c == 0xd0:
		size = 1
	case c == 0xcd || c == 0xd1:
		size = 2
	case c == 0xce || c == 0xd2:
		size = 4
	case c == 0xcf || c == 0xd3:
		size = 8
	case c >= 0xd4 && c <= 0xd8: // fixext 1, 2, 4, 8, 16
		size = 1 + 1<<(c-0xd4)
	case c == 0xdc: // array16
		elems, err = dec.be(2)
	case c == 0xdd: // array32
		elems, err = dec.be(4)
	case c == 0xde: // map16
		elems, err = dec.be(2)
		elems *= 2
	case c == 0xdf: // map32
		elems, err = dec.be(4)
		elems *= 2
	default: // 0xc1 is never used
		return fmt.Errorf("invalid msgpack code %#x", c)
	}
	if err != nil {
		return err
	}
	if size > uint64(dec.br.Len()) {
		return errTruncated
	}
	dec.br.Seek(int64(size), io.SeekCurrent)
	// Every element takes at least one byte, so this loop ends within the body.
	for ; elems > 0; elems-- {
		if err := dec.skip(depth + 1); err != nil {
			return err
		}
	}
	return nil
}

var errTruncated = errors.New("truncated")

// be reads an n-byte big-endian unsigned integer.
func (dec *decoder) be(n int) (uint64, error) {
	var v uint64
	for range n {
		c, err := dec.br.ReadByte()
		if err != nil {
			return 0, errTruncated
		}
		v = v<<8 | uint64(c)
	}
	return v, nil
}

// AppendChecksum returns frame (a type byte and a body built by hand, without length prefix or
// trailer) followed by its checksum trailer, as an encoder would write it: for tools and tests that
// build frames byte by byte, invalid ones included. A body that does not decode is summed whole.
func AppendChecksum(frame []byte) []byte {
	covered := frame
	if len(frame) > 0 {
		dec := decoderPool.Get().(*decoder)
		if m, err := dec.decodeBody(frame); err == nil {
			covered = checksummed(frame, m)
		}
		dec.body = nil
		dec.br.Reset(nil)
		decoderPool.Put(dec)
	}
	return binary.BigEndian.AppendUint32(append([]byte(nil), frame...), crc32.Checksum(covered, castagnoli))
}
