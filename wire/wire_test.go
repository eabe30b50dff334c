package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/zeebo/xxh3"
)

func testPages(count, pageSize int, flags uint8) *Pages {
	p := &Pages{ReqID: 7, Region: 3, Page: 1 << 40, Count: uint32(count), Flags: flags}
	if flags&FlagZero == 0 {
		p.Hashes = make([]byte, count*HashLen)
		p.Data = make([]byte, count*pageSize)
		for i := range p.Hashes {
			p.Hashes[i] = byte(i)
		}
		for i := range p.Data {
			p.Data[i] = byte(i * 7)
		}
	}
	return p
}

// samples returns a valid message of every type, some with fields at their limits.
func samples() []Message {
	return []Message{
		&Hello{VersionMin: Version, VersionMax: Version, Features: FeatureZeroPages | FeaturePageHashes | FeaturePush, Channel: ChannelBulk,
			Session: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, Client: "pagewarp-test/1"},
		&Hello{VersionMin: 0, VersionMax: math.MaxUint16, Features: math.MaxUint64, Client: strings.Repeat("c", MaxNameLen)},
		&Hello{VersionMin: Version, VersionMax: Version, Features: FeatureZeroPages | FeaturePageHashes | FeaturePrecopy,
			Channel: ChannelPrecopy, Session: [16]byte{9}, Client: "pagewarp-test/1", Stream: 0, Streams: 1},
		&Hello{VersionMin: Version, VersionMax: Version, Channel: ChannelPrecopy, Stream: MaxStreams - 1, Streams: MaxStreams},
		&Hello{VersionMin: Version, VersionMax: Version, Features: FeaturePush, Channel: ChannelUrgent, Session: [16]byte{7}, Client: "r", Resume: true},
		&Welcome{Version: Version, Features: FeaturePageHashes | FeaturePush, PageSize: 4096,
			Regions: []Region{{ID: 0, Name: "mem", Pages: 1 << 20}, {ID: BaseRegion - 1, Name: "", Pages: math.MaxUint64}}, Server: "srv"},
		&Welcome{Version: Version, PageSize: MaxPageSize},
		&Request{ReqID: 1, Region: 0, Page: 0, Count: 1, Priority: PriorityDemand},
		&Request{ReqID: math.MaxUint64, Region: math.MaxUint32, Page: math.MaxUint64, Count: MaxPagesPerRequest, Priority: PriorityBackground},
		testPages(1, 4096, 0),
		testPages(64, 4096, FlagLast),
		testPages(1, MaxPageSize, 0),
		testPages(MaxPagesPerRequest, 4096, FlagZero|FlagLast),
		testPages(1, 4096, FlagPushed),
		testPages(3, 4096, FlagPushed|FlagLast),
		testPages(64, 4096, FlagPushed|FlagZero|FlagLast),
		testPages(2, 4096, FlagPrecopy),
		testPages(MaxPagesPerRequest, 4096, FlagPrecopy|FlagZero),
		&Pages{ReqID: 0, Region: 1, Page: 5, Count: 3, Flags: FlagPrecopy | FlagZero},
		&Pages{ReqID: 0, Count: 1, Flags: FlagPrecopy, Hashes: zeros(HashLen), Data: zeros(4096)},
		&Pages{ReqID: math.MaxUint32, Region: math.MaxUint32, Page: math.MaxUint64, Count: 1, Flags: FlagPrecopy | FlagZero},
		&Error{Code: CodeOutOfRange, ReqID: 9, Message: strings.Repeat("e", MaxErrorMessageLen)},
		&Error{Code: CodeShutdown},
		&DigestRequest{ReqID: 5, Region: 2},
		&Digest{ReqID: 5, Region: 2, Algorithm: DigestXXH3Over64, Sum: [16]byte{0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xee}},
		&Bye{Reason: "done"},
		&Bye{},
		&Push{ReqID: 7, Region: 3, Pages: []uint64{1, 2, 3, 100, 1 << 40}},
		&Push{ReqID: math.MaxUint64, Region: math.MaxUint32, Pages: []uint64{math.MaxUint64}},
		&Push{ReqID: 1, Pages: ascending(0, MaxPagesPerRequest)},
		&Feedback{Region: 3, Used: []uint64{9, 2, 2, math.MaxUint64}, Unused: []uint64{0}},
		&Feedback{Region: math.MaxUint32, Used: ascending(1<<40, MaxPagesPerRequest)},
		&Feedback{Unused: ascending(0, MaxPagesPerRequest)},
		&Known{Algorithm: ContentXXH3128, First: 0, Hashes: pattern(4 * 16)},
		&Known{Algorithm: ContentSHA256, First: 1 << 40, Hashes: pattern(3 * 32), Done: true},
		&Known{Algorithm: ContentXXH3128, Done: true},
		&Known{Algorithm: ContentSHA256, First: math.MaxUint64, Hashes: pattern(32)},
		&Known{Algorithm: ContentSHA256, First: math.MaxUint64 - (MaxPagesPerRequest - 1), Hashes: pattern(MaxPagesPerRequest * 32), Done: true},
		&Refs{Round: 0, Region: 0, Entries: refEntries(1)},
		&Refs{Round: 3, Region: 2, Entries: refEntries(5)},
		&Refs{Round: math.MaxUint32, Region: BaseRegion - 1, Entries: refEntries(MaxPagesPerRequest)},
		&RoundEnd{},
		&RoundEnd{Round: 7, Pages: 1000, Refs: 24},
		&RoundEnd{Round: math.MaxUint32, Pages: math.MaxUint64, Refs: math.MaxUint64},
		&RoundAck{Round: 0, Last: true},
		&RoundAck{Round: 2, Rejected: rejects(3)},
		&RoundAck{Round: math.MaxUint32, Rejected: rejects(MaxRejected), Last: true},
		&Invalidate{Region: 0, Pages: make([]byte, 8)},
		&Invalidate{Region: 7, Pages: make([]byte, MaxInvalidate*8)},
		&Handover{},
		&Handover{State: make([]byte, MaxHandoverState)},
		&Resident{Region: 0, First: 0, Bits: []byte{0xff, 0x01, 0x80}, Done: true},
		&Resident{Region: BaseRegion - 1, First: 1 << 40, Bits: pattern(16)},
		&Resident{Region: 3, First: math.MaxUint64 - (8*MaxResidentBytes - 1), Bits: pattern(MaxResidentBytes), Done: true},
	}
}

// pattern returns n bytes that are not all alike.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + 1)
	}
	return b
}

// refEntries returns n ref entries, every fourth from the base snapshot.
func refEntries(n int) []byte {
	var b []byte
	for i := range n {
		e := Ref{Page: uint64(i) << 20, SrcRegion: uint32(i % 3), SrcPage: math.MaxUint64 - uint64(i), Check: 0x0123456789abcdef ^ uint64(i)}
		if i%4 == 3 {
			e.SrcRegion = BaseRegion
		}
		b = AppendRef(b, e)
	}
	return b
}

// rejects returns n RoundAck entries.
func rejects(n int) []byte {
	b := make([]byte, 0, n*RejectLen)
	for i := range n {
		b = AppendReject(b, uint32(i%5), uint64(i)<<33|uint64(i))
	}
	return b
}

// ascending returns n consecutive page numbers from first.
func ascending(first uint64, n int) []uint64 {
	pages := make([]uint64, n)
	for i := range pages {
		pages[i] = first + uint64(i)
	}
	return pages
}

func frameOf(t testing.TB, m Message) []byte {
	t.Helper()
	f, err := AppendFrame(nil, m)
	if err != nil {
		t.Fatalf("AppendFrame(%T): %v", m, err)
	}
	if n := binary.BigEndian.Uint32(f); int(n) != len(f)-4 {
		t.Fatalf("length prefix %d, frame body %d", n, len(f)-4)
	}
	return f
}

func TestRoundTrip(t *testing.T) {
	for _, m := range samples() {
		t.Run(m.Type().String(), func(t *testing.T) {
			f := frameOf(t, m)
			got, err := Decode(f[4:])
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
			}
			// The same through a Reader, with and without the page size.
			for _, ps := range []int{0, 4096, 2 << 20} {
				r := NewReader(bytes.NewReader(f))
				r.SetPageSize(ps)
				got, err := r.ReadMessage()
				if p, ok := m.(*Pages); ok && ps != 0 && !p.Zero() && len(p.Data) != int(p.Count)*ps {
					var werr *Error
					if !errors.As(err, &werr) || werr.Code != CodeMalformed {
						t.Fatalf("page size %d: got %v, want malformed", ps, err)
					}
					continue
				}
				if err != nil || !reflect.DeepEqual(got, m) {
					t.Fatalf("page size %d: ReadMessage = %+v, %v", ps, got, err)
				}
				if _, err := r.ReadMessage(); err != io.EOF {
					t.Fatalf("after the frame: %v, want io.EOF", err)
				}
			}
		})
	}
}

func TestEncodeRejectsInvalid(t *testing.T) {
	for _, m := range []Message{
		&Hello{VersionMin: 2, VersionMax: 1},
		&Hello{Channel: ChannelPrecopy},
		&Hello{Channel: 3},
		&Hello{Channel: ChannelPrecopy, Stream: 1, Streams: 1},
		&Hello{Channel: ChannelPrecopy, Streams: MaxStreams + 1},
		&Hello{Channel: ChannelUrgent, Streams: 1},
		&Hello{Channel: ChannelBulk, Stream: 1},
		&Welcome{PageSize: 4096, Regions: []Region{{ID: BaseRegion}}},
		&Request{ReqID: 1, Count: 0},
		&Request{ReqID: 0, Count: 1},
		&Pages{ReqID: 1, Count: 1, Hashes: make([]byte, 8), Data: make([]byte, 100)},
		&Pages{ReqID: 1, Count: 1025, Flags: FlagZero},
		&Welcome{PageSize: 8 << 20},
		&Bye{Reason: strings.Repeat("x", 257)},
		&Pages{ReqID: 1, Count: 2, Hashes: make([]byte, 16), Data: make([]byte, 2*4<<20)},
		&Pages{ReqID: 1, Count: 1, Flags: FlagZero | 1<<4},
		&Pages{ReqID: 0, Count: 1, Flags: FlagZero},
		&Pages{ReqID: 1, Count: 1, Flags: FlagZero | FlagPrecopy | FlagLast},
		&Pages{ReqID: 1, Count: 1, Flags: FlagZero | FlagPrecopy | FlagPushed},
		&Pages{ReqID: 1 << 32, Count: 1, Flags: FlagZero | FlagPrecopy},
		&Known{Algorithm: 0},
		&Known{Algorithm: 3, Done: true},
		&Known{Algorithm: ContentXXH3128, Hashes: zeros(15)},
		&Known{Algorithm: ContentSHA256, Hashes: zeros(16)},
		&Known{Algorithm: ContentXXH3128, Hashes: zeros((MaxPagesPerRequest + 1) * 16)},
		&Known{Algorithm: ContentXXH3128, First: math.MaxUint64, Hashes: zeros(2 * 16)},
		&Refs{},
		&Refs{Entries: []byte{}},
		&Refs{Entries: zeros(RefLen - 1)},
		&Refs{Entries: zeros(RefLen + 1)},
		&Refs{Entries: refEntries(MaxPagesPerRequest + 1)},
		&Refs{Region: BaseRegion, Entries: refEntries(1)},
		&Refs{Entries: withReserved(refEntries(2), 1, 1)},
		&RoundAck{Rejected: zeros(RejectLen - 1)},
		&RoundAck{Rejected: rejects(MaxRejected + 1)},
		&RoundAck{Rejected: AppendReject(nil, BaseRegion, 0)},
		&Push{ReqID: 0, Pages: []uint64{1}},
		&Push{ReqID: 1},
		&Push{ReqID: 1, Pages: []uint64{}},
		&Push{ReqID: 1, Pages: []uint64{1, 1}},
		&Push{ReqID: 1, Pages: []uint64{2, 1}},
		&Push{ReqID: 1, Pages: []uint64{1, 5, 3}},
		&Push{ReqID: 1, Pages: ascending(0, MaxPagesPerRequest+1)},
		&Feedback{},
		&Feedback{Used: []uint64{}, Unused: []uint64{}},
		&Feedback{Used: ascending(0, MaxPagesPerRequest+1)},
		&Feedback{Unused: ascending(0, MaxPagesPerRequest+1)},
	} {
		if b, err := AppendFrame([]byte("keep"), m); err == nil || string(b) != "keep" {
			t.Errorf("AppendFrame(%+v) = %q, %v; want an error and dst unchanged", m, b, err)
		}
	}
}

// mp builds msgpack bodies by hand, including encodings this package never produces.
type mp struct {
	out appendBuf
	e   *msgpack.Encoder
}

func body(t Type) *mp {
	m := &mp{}
	m.out.b = []byte{byte(t)}
	m.e = msgpack.NewEncoder(&m.out)
	return m
}

func (m *mp) arr(n int) *mp     { m.e.EncodeArrayLen(n); return m }
func (m *mp) u(v uint64) *mp    { m.e.EncodeUint(v); return m }
func (m *mp) i64(v int64) *mp   { m.e.EncodeInt64(v); return m }
func (m *mp) i8(v int8) *mp     { m.e.EncodeInt8(v); return m }
func (m *mp) str(s string) *mp  { m.e.EncodeString(s); return m }
func (m *mp) bin(b []byte) *mp  { m.e.EncodeBytesLen(len(b)); m.out.b = append(m.out.b, b...); return m }
func (m *mp) raw(b ...byte) *mp { m.out.b = append(m.out.b, b...); return m }
func (m *mp) f64(v float64) *mp { m.e.EncodeFloat64(v); return m }
func (m *mp) bytes() []byte     { return seal(m.out.b) }
func (m *mp) cut(n int) []byte  { return seal(m.out.b[:len(m.out.b)-n]) }

// seal appends the checksum trailer to a hand-built frame (type byte and body).
func seal(f []byte) []byte { return AppendChecksum(f) }

func (m *mp) nilv() *mp            { m.e.EncodeNil(); return m }
func hello() *mp                   { return body(TypeHello).arr(6).u(1).u(1).u(0).u(0).bin(make([]byte, 16)) }
func request(count uint64) *mp     { return body(TypeRequest).arr(5).u(4).u(0).u(0).u(count) }
func pagesHdr(count uint64) *mp    { return body(TypePages).arr(7).u(4).u(0).u(0).u(count) }
func push(reqID uint64) *mp        { return body(TypePush).arr(3).u(reqID).u(0) }
func feedback() *mp                { return body(TypeFeedback).arr(3).u(0) }
func zeros(n int) []byte           { return make([]byte, n) }
func (m *mp) then(f func(*mp)) *mp { f(m); return m }

// us appends an array of unsigned integers; run appends n consecutive ones from first.
func (m *mp) us(vs ...uint64) *mp {
	m.arr(len(vs))
	for _, v := range vs {
		m.u(v)
	}
	return m
}

func (m *mp) run(first uint64, n int) *mp { return m.us(ascending(first, n)...) }

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		code  ErrorCode
		reqID uint64
	}{
		{"empty", nil, CodeMalformed, 0},
		{"unknown type 0", []byte{0, 0x90}, CodeUnknownType, 0},
		{"unknown type 18", body(18).arr(0).bytes(), CodeUnknownType, 0},
		{"unknown type 255", []byte{255}, CodeUnknownType, 0},
		{"no body", []byte{byte(TypeBye)}, CodeMalformed, 0},
		{"body not an array", body(TypeBye).str("x").bytes(), CodeMalformed, 0},
		{"nil body", body(TypeBye).nilv().bytes(), CodeMalformed, 0},
		{"garbage msgpack", []byte{byte(TypeRequest), 0xc1, 0xc1}, CodeMalformed, 0},
		{"too few fields", body(TypeRequest).arr(4).u(1).u(0).u(0).u(1).bytes(), CodeMalformed, 0},
		{"truncated body", request(1).u(0).cut(1), CodeMalformed, 4},
		{"truncated array", body(TypeRequest).arr(5).u(1).bytes(), CodeMalformed, 1},
		{"truncated int", body(TypeRequest).arr(5).raw(0xcf, 1, 2).bytes(), CodeMalformed, 0},
		{"bytes after the array", request(1).u(0).raw(0x00).bytes(), CodeMalformed, 4},
		{"extra elements ignored but truncated", body(TypeBye).arr(2).str("r").raw(0xdd, 0, 0, 0, 9).bytes(), CodeMalformed, 0},
		{"deeply nested extra", body(TypeBye).arr(2).str("r").raw(bytes.Repeat([]byte{0x91}, 100)...).raw(0).bytes(), CodeMalformed, 0},
		{"invalid code in extra", body(TypeBye).arr(2).str("r").raw(0xc1).bytes(), CodeMalformed, 0},
		{"str for uint", body(TypeRequest).arr(5).str("1").u(0).u(0).u(1).u(0).bytes(), CodeMalformed, 0},
		{"nil for uint", body(TypeRequest).arr(5).nilv().u(0).u(0).u(1).u(0).bytes(), CodeMalformed, 0},
		{"float for uint", body(TypeRequest).arr(5).f64(1).u(0).u(0).u(1).u(0).bytes(), CodeMalformed, 0},
		{"bin for str", body(TypeBye).arr(1).bin([]byte("x")).bytes(), CodeMalformed, 0},
		{"str for bin", hello().bytes()[:0], CodeMalformed, 0},
		{"negative fixint", body(TypeRequest).arr(5).raw(0xff).u(0).u(0).u(1).u(0).bytes(), CodeMalformed, 0},
		{"negative int8", body(TypeRequest).arr(5).i8(-1).u(0).u(0).u(1).u(0).bytes(), CodeMalformed, 0},
		{"negative int64", request(1).i64(-5).bytes(), CodeMalformed, 4},
		{"positive int64 accepted width but bad priority", request(1).i64(2).bytes(), CodeMalformed, 4},
		{"region overflows u32", body(TypeRequest).arr(5).u(1).u(1 << 32).u(0).u(1).u(0).bytes(), CodeMalformed, 1},
		{"count overflows u32", body(TypeRequest).arr(5).u(1).u(0).u(0).u(1 << 32).u(0).bytes(), CodeMalformed, 1},
		{"priority overflows u8", request(1).u(256).bytes(), CodeMalformed, 4},
		{"version overflows u16", body(TypeHello).arr(6).u(1).u(1 << 16).u(0).u(0).bin(zeros(16)).str("").bytes(), CodeMalformed, 0},
		{"error code overflows u16", body(TypeError).arr(3).u(70000).u(0).str("").bytes(), CodeMalformed, 0},
		{"bad priority", request(1).u(2).bytes(), CodeMalformed, 4},
		{"count 0", request(0).u(0).bytes(), CodeOutOfRange, 4},
		{"count 1025", request(1025).u(0).bytes(), CodeOutOfRange, 4},
		{"req_id 0", body(TypeRequest).arr(5).u(0).u(0).u(0).u(1).u(0).bytes(), CodeMalformed, 0},
		{"bad channel", body(TypeHello).arr(6).u(1).u(1).u(0).u(2).bin(zeros(16)).str("").bytes(), CodeMalformed, 0},
		{"version_min > version_max", body(TypeHello).arr(6).u(2).u(1).u(0).u(0).bin(zeros(16)).str("").bytes(), CodeMalformed, 0},
		{"session 15 bytes", body(TypeHello).arr(6).u(1).u(1).u(0).u(0).bin(zeros(15)).str("").bytes(), CodeMalformed, 0},
		{"session 17 bytes", body(TypeHello).arr(6).u(1).u(1).u(0).u(0).bin(zeros(17)).str("").bytes(), CodeMalformed, 0},
		{"session as str", body(TypeHello).arr(6).u(1).u(1).u(0).u(0).str(string(zeros(16))).str("").bytes(), CodeMalformed, 0},
		{"client too long", hello().str(strings.Repeat("c", 257)).bytes(), CodeMalformed, 0},
		{"str length beyond frame", hello().raw(0xdb, 0, 0, 1, 0).bytes(), CodeMalformed, 0},
		{"page_size not a power of two", body(TypeWelcome).arr(5).u(1).u(0).u(6000).arr(0).str("").bytes(), CodeMalformed, 0},
		{"page_size too small", body(TypeWelcome).arr(5).u(1).u(0).u(2048).arr(0).str("").bytes(), CodeMalformed, 0},
		{"page_size too large", body(TypeWelcome).arr(5).u(1).u(0).u(1 << 30).arr(0).str("").bytes(), CodeMalformed, 0},
		{"too many regions", body(TypeWelcome).arr(5).u(1).u(0).u(4096).arr(1025).then(func(m *mp) {
			for range 1025 {
				m.arr(3).u(0).str("").u(0)
			}
		}).str("").bytes(), CodeMalformed, 0},
		{"regions count beyond frame", body(TypeWelcome).arr(5).u(1).u(0).u(4096).raw(0xdc, 0x03, 0xff).bytes(), CodeMalformed, 0},
		{"region short", body(TypeWelcome).arr(5).u(1).u(0).u(4096).arr(1).arr(2).u(0).str("").str("").bytes(), CodeMalformed, 0},
		{"region not array", body(TypeWelcome).arr(5).u(1).u(0).u(4096).arr(1).u(0).str("").bytes(), CodeMalformed, 0},
		{"pages count 0", pagesHdr(0).u(uint64(FlagZero)).bin(nil).bin(nil).bytes(), CodeMalformed, 4},
		{"pages count 1025", pagesHdr(1025).u(uint64(FlagZero)).bin(nil).bin(nil).bytes(), CodeMalformed, 4},
		{"pages unknown flags", pagesHdr(1).u(16).bin(zeros(8)).bin(zeros(4096)).bytes(), CodeMalformed, 4},
		{"pages unknown flags with pushed", pagesHdr(1).u(uint64(FlagPushed | 1<<7)).bin(zeros(8)).bin(zeros(4096)).bytes(), CodeMalformed, 4},
		{"pages hashes short", pagesHdr(2).u(0).bin(zeros(8)).bin(zeros(8192)).bytes(), CodeMalformed, 4},
		{"pages data length mismatch", pagesHdr(1).u(0).bin(zeros(8)).bin(zeros(100)).bytes(), CodeMalformed, 4},
		{"pages data not a page multiple", pagesHdr(2).u(0).bin(zeros(16)).bin(zeros(8192 + 2)).bytes(), CodeMalformed, 4},
		{"pages zero with data", pagesHdr(1).u(uint64(FlagZero)).bin(nil).bin(zeros(4096)).bytes(), CodeMalformed, 4},
		{"pages zero with hashes", pagesHdr(1).u(uint64(FlagZero)).bin(zeros(8)).bin(nil).bytes(), CodeMalformed, 4},
		{"pages data as str", pagesHdr(1).u(0).bin(zeros(8)).str(string(zeros(4096))).bytes(), CodeMalformed, 4},
		{"digest sum 15 bytes", body(TypeDigest).arr(4).u(1).u(0).u(1).bin(zeros(15)).bytes(), CodeMalformed, 1},
		{"error message too long", body(TypeError).arr(3).u(1).u(0).str(strings.Repeat("m", 1025)).bytes(), CodeMalformed, 0},
		{"bye reason too long", body(TypeBye).arr(1).str(strings.Repeat("r", 257)).bytes(), CodeMalformed, 0},
		{"push too few fields", body(TypePush).arr(2).u(1).u(0).bytes(), CodeMalformed, 0},
		{"push req_id 0", push(0).us(1).bytes(), CodeMalformed, 0},
		{"push empty pages", push(4).us().bytes(), CodeMalformed, 4},
		{"push duplicate page", push(4).us(1, 2, 2, 3).bytes(), CodeMalformed, 4},
		{"push pages descending", push(4).us(5, 4).bytes(), CodeMalformed, 4},
		{"push pages not ascending at the end", push(4).us(1, 2, 3, 0).bytes(), CodeMalformed, 4},
		{"push 1025 pages", push(4).run(0, MaxPagesPerRequest+1).bytes(), CodeMalformed, 4},
		{"push array32 header beyond limit, no bytes", push(4).raw(0xdd, 0xff, 0xff, 0xff, 0xff).bytes(), CodeMalformed, 4},
		{"push array16 header 1025, no bytes", push(4).raw(0xdc, 0x04, 0x01).bytes(), CodeMalformed, 4},
		{"push array16 count beyond frame", push(4).raw(0xdc, 0x03, 0xff).u(1).bytes(), CodeMalformed, 4},
		{"push truncated array header", push(4).raw(0xdd, 0, 0).bytes(), CodeMalformed, 4},
		{"push truncated pages", push(4).raw(0x93).u(1).u(2).bytes(), CodeMalformed, 4},
		{"push pages missing", push(4).bytes(), CodeMalformed, 4},
		{"push pages not an array", push(4).u(1).bytes(), CodeMalformed, 4},
		{"push pages as map", push(4).raw(0x81, 0x01, 0x02).bytes(), CodeMalformed, 4},
		{"push pages as bin", push(4).bin(zeros(8)).bytes(), CodeMalformed, 4},
		{"push page as str", push(4).arr(2).u(1).str("2").bytes(), CodeMalformed, 4},
		{"push page as nil", push(4).arr(1).nilv().bytes(), CodeMalformed, 4},
		{"push page as float", push(4).arr(1).f64(1).bytes(), CodeMalformed, 4},
		{"push page as array", push(4).arr(1).arr(1).u(1).bytes(), CodeMalformed, 4},
		{"push page negative fixint", push(4).arr(2).u(1).raw(0xff).bytes(), CodeMalformed, 4},
		{"push page negative int64", push(4).arr(1).i64(-1).bytes(), CodeMalformed, 4},
		{"push region overflows u32", body(TypePush).arr(3).u(4).u(1 << 32).us(1).bytes(), CodeMalformed, 4},
		{"push req_id negative", body(TypePush).arr(3).i64(-4).u(0).us(1).bytes(), CodeMalformed, 0},
		{"push bytes after the array", push(4).us(1).raw(0).bytes(), CodeMalformed, 4},
		{"feedback too few fields", body(TypeFeedback).arr(2).u(0).us(1).bytes(), CodeMalformed, 0},
		{"feedback both empty", feedback().us().us().bytes(), CodeMalformed, 0},
		{"feedback both empty, with extra", body(TypeFeedback).arr(4).u(0).us().us().us(1).bytes(), CodeMalformed, 0},
		{"feedback 1025 used", feedback().run(0, MaxPagesPerRequest+1).us().bytes(), CodeMalformed, 0},
		{"feedback 1025 unused", feedback().us(1).run(0, MaxPagesPerRequest+1).bytes(), CodeMalformed, 0},
		{"feedback used array32 header beyond limit, no bytes", feedback().raw(0xdd, 0xff, 0xff, 0xff, 0xff).bytes(), CodeMalformed, 0},
		{"feedback unused array32 header beyond limit, no bytes", feedback().us().raw(0xdd, 0x7f, 0xff, 0xff, 0xff).bytes(), CodeMalformed, 0},
		{"feedback unused count beyond frame", feedback().us(1).raw(0xdc, 0x02, 0x00).u(3).bytes(), CodeMalformed, 0},
		{"feedback unused missing", feedback().us(1).bytes(), CodeMalformed, 0},
		{"feedback used not an array", feedback().u(1).us(1).bytes(), CodeMalformed, 0},
		{"feedback used as nil", feedback().nilv().us(1).bytes(), CodeMalformed, 0},
		{"feedback used entry as str", feedback().arr(1).str("1").us().bytes(), CodeMalformed, 0},
		{"feedback unused entry as bool", feedback().us().arr(1).raw(0xc3).bytes(), CodeMalformed, 0},
		{"feedback used entry negative int8", feedback().arr(1).i8(-3).us().bytes(), CodeMalformed, 0},
		{"feedback unused entry negative int64", feedback().us(1).arr(1).i64(math.MinInt64).bytes(), CodeMalformed, 0},
		{"feedback region overflows u32", body(TypeFeedback).arr(3).u(1 << 32).us(1).us().bytes(), CodeMalformed, 0},
		{"feedback region negative", body(TypeFeedback).arr(3).i8(-1).us(1).us().bytes(), CodeMalformed, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frame := tc.frame
			if tc.name == "str for bin" {
				frame = body(TypeHello).arr(6).u(1).u(1).u(0).u(0).str("0123456789abcdef").str("").bytes()
			}
			m, err := Decode(frame)
			var werr *Error
			if !errors.As(err, &werr) {
				t.Fatalf("Decode = %+v, %v; want a *Error", m, err)
			}
			if werr.Code != tc.code || werr.ReqID != tc.reqID {
				t.Fatalf("Decode error %v (code %d, req %d); want code %s req %d", err, werr.Code, werr.ReqID, tc.code, tc.reqID)
			}
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		want  Message
	}{
		{"wide ints", body(TypeRequest).arr(5).raw(0xcf, 0, 0, 0, 0, 0, 0, 0, 9).raw(0xd3, 0, 0, 0, 0, 0, 0, 0, 1).
			raw(0xd0, 5).raw(0xce, 0, 0, 0, 1).raw(0xd1, 0, 1).bytes(),
			&Request{ReqID: 9, Region: 1, Page: 5, Count: 1, Priority: 1}},
		{"extra elements ignored", body(TypeBye).arr(3).str("r").arr(2).u(1).raw(0x81, 0xa1, 'k', 0xc3).f64(1.5).bytes(), &Bye{Reason: "r"}},
		{"nested extra within depth", body(TypeBye).arr(2).str("r").raw(bytes.Repeat([]byte{0x91}, 16)...).raw(0).bytes(), &Bye{Reason: "r"}},
		{"push wide ints", body(TypePush).arr(3).raw(0xd3, 0, 0, 0, 0, 0, 0, 0, 9).raw(0xcd, 0, 3).
			arr(3).raw(0xd0, 1).raw(0xcf, 0, 0, 0, 0, 0, 0, 0, 2).raw(0xd2, 0, 0, 1, 0).bytes(),
			&Push{ReqID: 9, Region: 3, Pages: []uint64{1, 2, 256}}},
		{"push array32 header", push(4).raw(0xdd, 0, 0, 0, 2).u(7).u(8).bytes(), &Push{ReqID: 4, Pages: []uint64{7, 8}}},
		{"push with extra element", body(TypePush).arr(4).u(4).u(1).us(3).str("x").bytes(), &Push{ReqID: 4, Region: 1, Pages: []uint64{3}}},
		{"feedback used only", feedback().us(5, 5, 1).us().bytes(), &Feedback{Used: []uint64{5, 5, 1}}},
		{"feedback unused only", feedback().us().raw(0xdc, 0, 1).raw(0xd3, 0, 0, 0, 0, 0, 0, 0, 6).bytes(), &Feedback{Unused: []uint64{6}}},
		{"feedback with extra element", body(TypeFeedback).arr(4).u(2).us(1).us(2).nilv().bytes(),
			&Feedback{Region: 2, Used: []uint64{1}, Unused: []uint64{2}}},
		{"pages pushed", pagesHdr(1).u(uint64(FlagPushed | FlagLast | FlagZero)).bin(nil).bin(nil).bytes(),
			&Pages{ReqID: 4, Count: 1, Flags: FlagPushed | FlagLast | FlagZero}},
		{"region with extra field", body(TypeWelcome).arr(5).u(1).u(3).u(4096).arr(1).arr(4).u(2).str("m").u(10).str("x").str("s").bytes(),
			&Welcome{Version: 1, Features: 3, PageSize: 4096, Regions: []Region{{ID: 2, Name: "m", Pages: 10}}, Server: "s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.frame)
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Decode = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestErrorCodeNames(t *testing.T) {
	want := []string{"code(0)", "malformed", "frame_too_large", "unsupported_version", "out_of_range", "unknown_type",
		"unknown_region", "source_read", "protocol", "shutdown", "internal", "code(11)"}
	for i, w := range want {
		if got := ErrorCode(i).String(); got != w {
			t.Errorf("ErrorCode(%d) = %q, want %q", i, got, w)
		}
	}
	if NumCodes != int(CodeInternal)+1 {
		t.Errorf("NumCodes = %d", NumCodes)
	}
	e := &Error{Code: CodeOutOfRange, ReqID: 3, Message: "page 9"}
	if got := e.Error(); got != "out_of_range (req 3): page 9" {
		t.Errorf("Error() = %q", got)
	}
}

// TestVersion pins the numbers docs/protocol.md gives version 4.
func TestVersion(t *testing.T) {
	if Version != 4 {
		t.Errorf("Version = %d, want 4", Version)
	}
	if FeatureZeroPages != 1 || FeaturePageHashes != 2 || FeaturePush != 4 || FeaturePrecopy != 8 {
		t.Errorf("feature bits %d %d %d %d", FeatureZeroPages, FeaturePageHashes, FeaturePush, FeaturePrecopy)
	}
	if FlagZero != 1 || FlagLast != 2 || FlagPushed != 4 || FlagPrecopy != 8 || knownFlags != 15 {
		t.Errorf("flags %d %d %d %d, known %#x", FlagZero, FlagLast, FlagPushed, FlagPrecopy, knownFlags)
	}
	if ChannelUrgent != 0 || ChannelBulk != 1 || ChannelPrecopy != 2 || MaxStreams != 16 {
		t.Errorf("channels %d %d %d, max streams %d", ChannelUrgent, ChannelBulk, ChannelPrecopy, MaxStreams)
	}
	if ContentXXH3128 != 1 || ContentSHA256 != 2 || BaseRegion != 0xFFFFFFFF || RefLen != 32 || RejectLen != 12 || MaxRejected != 65536 {
		t.Errorf("content %d %d, base region %#x, ref %d, reject %d, max rejected %d",
			ContentXXH3128, ContentSHA256, BaseRegion, RefLen, RejectLen, MaxRejected)
	}
	want := []string{"type(0)", "hello", "welcome", "request", "pages", "error", "digest_request", "digest", "bye",
		"push", "feedback", "known", "refs", "round_end", "round_ack", "invalidate", "handover", "resident", "type(18)"}
	for i, w := range want {
		if got := Type(i).String(); got != w {
			t.Errorf("Type(%d) = %q, want %q", i, got, w)
		}
	}
	for _, tc := range []struct {
		m    Message
		want Type
	}{{&Push{}, 9}, {&Feedback{}, 10}, {&Known{}, 11}, {&Refs{}, 12}, {&RoundEnd{}, 13}, {&RoundAck{}, 14}, {&Resident{}, 17}} {
		if got := tc.m.Type(); got != tc.want {
			t.Errorf("%T is type %d, want %d", tc.m, got, tc.want)
		}
	}
	// Every limit fits a frame: the largest Known, Refs and RoundAck are far below MaxFrameSize.
	for _, n := range []int{MaxPagesPerRequest * maxContentHashLen, MaxPagesPerRequest * RefLen, MaxRejected * RejectLen, MaxResidentBytes} {
		if n+64 > MaxFrameSize {
			t.Errorf("a %d-byte list does not fit a frame", n)
		}
	}
}

func TestPagesFlags(t *testing.T) {
	for _, tc := range []struct {
		flags                       uint8
		zero, last, pushed, precopy bool
	}{
		{0, false, false, false, false},
		{FlagZero, true, false, false, false},
		{FlagLast, false, true, false, false},
		{FlagPushed, false, false, true, false},
		{FlagPushed | FlagLast, false, true, true, false},
		{FlagZero | FlagLast | FlagPushed, true, true, true, false},
		{FlagPrecopy, false, false, false, true},
		{FlagPrecopy | FlagZero, true, false, false, true},
	} {
		p := &Pages{Flags: tc.flags}
		if p.Zero() != tc.zero || p.Last() != tc.last || p.Pushed() != tc.pushed || p.Precopy() != tc.precopy {
			t.Errorf("flags %#x: Zero %v Last %v Pushed %v Precopy %v", tc.flags, p.Zero(), p.Last(), p.Pushed(), p.Precopy())
		}
	}
}

// TestPageListsCheckedBeforeAllocation decodes Push and Feedback frames whose array headers claim up to
// 4 Gi entries: the claim is refused before anything is allocated for it, and a list at the limit
// allocates its 8 KiB once.
func TestPageListsCheckedBeforeAllocation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"push array32 4Gi", push(4).raw(0xdd, 0xff, 0xff, 0xff, 0xff).bytes()},
		{"push array32 1025 with bytes", push(4).raw(0xdd, 0, 0, 0x04, 0x01).raw(zeros(1025)...).bytes()},
		{"push array16 1024 without bytes", push(4).raw(0xdc, 0x04, 0x00).u(1).bytes()},
		{"feedback used array32 4Gi", feedback().raw(0xdd, 0xff, 0xff, 0xff, 0xff).bytes()},
		{"feedback unused array32 2Gi", feedback().us().raw(0xdd, 0x80, 0, 0, 0).bytes()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode(tc.frame); err == nil {
				t.Fatal("accepted")
			}
			if n := bytesPerDecode(tc.frame); n > 1024 {
				t.Fatalf("%d bytes allocated per Decode", n)
			}
		})
	}
	// Control: a valid list of 1024 pages does allocate its 8 KiB, so the measurement would see one.
	if n := bytesPerDecode(frameOf(t, &Push{ReqID: 1, Pages: ascending(0, MaxPagesPerRequest)})[4:]); n < 8<<10 {
		t.Fatalf("valid push of 1024 pages: %d bytes per Decode", n)
	}
}

func TestPagesHash(t *testing.T) {
	p := &Pages{Hashes: binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, 1), 0xdeadbeef)}
	if p.Hash(0) != 1 || p.Hash(1) != 0xdeadbeef {
		t.Fatalf("Hash = %#x %#x", p.Hash(0), p.Hash(1))
	}
}

// bytesPerDecode returns the bytes Decode(frame) allocates, averaged over 200 calls.
func bytesPerDecode(frame []byte) uint64 {
	const runs = 200
	Decode(frame) // warm the decoder pool
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		Decode(frame)
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / runs
}

func readerCode(t *testing.T, r *Reader) ErrorCode {
	t.Helper()
	_, err := r.ReadMessage()
	var werr *Error
	if !errors.As(err, &werr) {
		t.Fatalf("ReadMessage: %v, want a *Error", err)
	}
	return werr.Code
}

func TestReaderFraming(t *testing.T) {
	t.Run("zero length", func(t *testing.T) {
		r := NewReader(bytes.NewReader([]byte{0, 0, 0, 0, 1, 2, 3}))
		if c := readerCode(t, r); c != CodeMalformed {
			t.Fatalf("code %s", c)
		}
		if c := readerCode(t, r); c != CodeMalformed {
			t.Fatalf("second call: code %s, want the sticky error", c)
		}
	})
	t.Run("too large", func(t *testing.T) {
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], MaxFrameSize+1)
		if c := readerCode(t, NewReader(bytes.NewReader(hdr[:]))); c != CodeFrameTooLarge {
			t.Fatalf("code %s", c)
		}
	})
	t.Run("max size accepted", func(t *testing.T) {
		// A Bye padded with ignored extra elements to exactly MaxFrameSize.
		m := body(TypeBye).arr(2).str("r")
		pad := MaxFrameSize - len(m.bytes()) - 5
		m.raw(0xc6).raw(byte(pad>>24), byte(pad>>16), byte(pad>>8), byte(pad)).raw(make([]byte, pad)...)
		f := binary.BigEndian.AppendUint32(nil, uint32(len(m.bytes())))
		f = append(f, m.bytes()...)
		if len(f)-4 != MaxFrameSize {
			t.Fatalf("built %d", len(f)-4)
		}
		got, err := NewReader(bytes.NewReader(f)).ReadMessage()
		if err != nil || got.(*Bye).Reason != "r" {
			t.Fatalf("ReadMessage = %+v, %v", got, err)
		}
	})
	t.Run("4 GiB length never allocated", func(t *testing.T) {
		hdr := []byte{0xff, 0xff, 0xff, 0xff}
		src := bytes.NewReader(nil)
		allocs := testing.AllocsPerRun(20, func() {
			src.Reset(append(hdr, make([]byte, 16)...))
			r := NewReader(src)
			if _, err := r.ReadMessage(); err == nil {
				t.Fatal("no error")
			}
		})
		// NewReader's own bufio and decoder, the error: a handful of small allocations, not 4 GiB.
		if allocs > 20 {
			t.Fatalf("%v allocations", allocs)
		}
		src.Reset(append(hdr, make([]byte, 16)...))
		r := NewReader(src)
		if c := readerCode(t, r); c != CodeFrameTooLarge {
			t.Fatalf("code %s", c)
		}
		if cap(r.buf) != 0 {
			t.Fatalf("body buffer of %d bytes allocated", cap(r.buf))
		}
	})
	t.Run("announced large frame, little sent", func(t *testing.T) {
		r := NewReader(bytes.NewReader(append([]byte{0, 0x40, 0, 0, byte(TypeBye)}, zeros(1000)...)))
		_, err := r.ReadMessage()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("err %v, want io.ErrUnexpectedEOF", err)
		}
		if cap(r.buf) > initialBodyBuffer {
			t.Fatalf("buffer grew to %d for 1000 bytes received", cap(r.buf))
		}
	})
	t.Run("EOF at boundary and inside", func(t *testing.T) {
		f := frameOf(t, &Bye{Reason: "x"})
		if _, err := NewReader(bytes.NewReader(nil)).ReadMessage(); err != io.EOF {
			t.Fatalf("empty stream: %v", err)
		}
		for cut := 1; cut < len(f); cut++ {
			_, err := NewReader(bytes.NewReader(f[:cut])).ReadMessage()
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("cut at %d: %v, want io.ErrUnexpectedEOF", cut, err)
			}
		}
	})
	t.Run("growing body buffer keeps earlier bytes", func(t *testing.T) {
		var stream []byte
		small := testPages(1, 4096, 0)
		big := testPages(64, 4096*4, FlagLast)
		stream = append(stream, frameOf(t, small)...)
		stream = append(stream, frameOf(t, big)...)
		stream = append(stream, frameOf(t, small)...)
		r := NewReader(iotestOneByte{bytes.NewReader(stream)})
		for i, want := range []*Pages{small, big, small} {
			got, err := r.ReadMessage()
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("frame %d: %v", i, err)
			}
		}
	})
}

// iotestOneByte returns at most 7 bytes per read, to exercise partial reads.
type iotestOneByte struct{ r io.Reader }

func (o iotestOneByte) Read(p []byte) (int, error) {
	if len(p) > 7 {
		p = p[:7]
	}
	return o.r.Read(p)
}

// recorder records every Write call's slice.
type recorder struct {
	bytes.Buffer
	calls [][]byte
}

func (r *recorder) Write(p []byte) (int, error) {
	r.calls = append(r.calls, p)
	return r.Buffer.Write(p)
}

func TestWriter(t *testing.T) {
	var rec recorder
	w := NewWriter(&rec)
	big := testPages(64, 4096, FlagLast)
	small := testPages(1, 4096, 0)
	msgs := []Message{&Request{ReqID: 1, Count: 1}, small, big, &Bye{Reason: "b"}}
	for _, m := range msgs {
		if err := w.WriteMessage(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	// The big page data reached the writer as the caller's own slice: not copied.
	found := false
	for _, c := range rec.calls {
		if len(c) == len(big.Data) && &c[0] == &big.Data[0] {
			found = true
		}
	}
	if !found {
		t.Fatalf("page data was copied: writes of %d calls", len(rec.calls))
	}
	if w.Written() != uint64(rec.Len()) || w.Buffered() != 0 {
		t.Fatalf("Written %d, wrote %d, buffered %d", w.Written(), rec.Len(), w.Buffered())
	}
	r := NewReader(&rec.Buffer)
	r.SetPageSize(4096)
	for i, want := range msgs {
		got, err := r.ReadMessage()
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("message %d: %+v, %v", i, got, err)
		}
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, io.ErrClosedPipe
	}
	f.n--
	return len(p), nil
}

func TestWriterStickyError(t *testing.T) {
	w := NewWriter(&failWriter{})
	if err := w.WritePages(testPages(64, 4096, 0)); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("WritePages: %v", err)
	}
	if err := w.WriteMessage(&Bye{}); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("after error: %v", err)
	}
}

func TestWriterAllocs(t *testing.T) {
	w := NewWriter(io.Discard)
	p := testPages(64, 4096, 0)
	allocs := testing.AllocsPerRun(100, func() {
		if err := w.WritePages(p); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("WritePages allocates %v times", allocs)
	}
}

// TestSwitchMessages: Invalidate and Handover reject what the spec forbids.
func TestSwitchMessages(t *testing.T) {
	for _, m := range []Message{
		&Invalidate{Region: 1},
		&Invalidate{Region: 1, Pages: make([]byte, 9)},
		&Invalidate{Region: 1, Pages: make([]byte, (MaxInvalidate+1)*8)},
		&Invalidate{Region: BaseRegion, Pages: make([]byte, 8)},
		&Handover{State: make([]byte, MaxHandoverState+1)},
	} {
		if _, err := AppendFrame(nil, m); err == nil {
			t.Errorf("%s %+v encoded, want malformed", m.Type(), m)
		}
	}
	f, err := AppendFrame(nil, &Invalidate{Region: 3, Pages: []byte{5, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(f[4:])
	if err != nil {
		t.Fatal(err)
	}
	v := m.(*Invalidate)
	if v.Region != 3 || v.Len() != 2 || v.Page(0) != 5 || v.Page(1) != 9 {
		t.Fatalf("decoded %+v", v)
	}
}

// TestChecksumCatchesCorruption flips every bit of every frame of the samples, one at a time: each
// flip outside Pages data fails to decode (CRC-32C catches every single-bit error), so a corrupted
// page number or region can never install a page in the wrong place; a flip inside Pages data
// decodes, and the page's own hash no longer matches.
func TestChecksumCatchesCorruption(t *testing.T) {
	for _, m := range fuzzSeeds() {
		f := frameOf(t, m)[4:]
		if len(f) > 8<<10 {
			continue // a large Invalidate or Handover: the same code, 8 flips per byte would take minutes
		}
		dataStart, dataEnd := len(f), len(f)
		if p, ok := m.(*Pages); ok && len(p.Data) > 0 {
			dataEnd = len(f) - TrailerLen
			dataStart = dataEnd - len(p.Data)
		}
		for i := range f {
			for bit := range 8 {
				g := append([]byte(nil), f...)
				g[i] ^= 1 << bit
				got, err := Decode(g)
				if i >= dataStart && i < dataEnd {
					p, ok := got.(*Pages)
					if err != nil || !ok {
						t.Fatalf("%s: flip in data at %d: %v", m.Type(), i, err)
					}
					k := (i - dataStart) / (len(p.Data) / int(p.Count))
					pg := p.Data[k*len(p.Data)/int(p.Count) : (k+1)*len(p.Data)/int(p.Count)]
					if xxh3.Hash(pg) == p.Hash(k) {
						t.Fatalf("%s: flip in data at %d keeps the page's hash", m.Type(), i)
					}
					continue
				}
				if err == nil {
					t.Fatalf("%s: bit %d of byte %d flipped and the frame still decodes: %+v", m.Type(), bit, i, got)
				}
			}
		}
	}
}
