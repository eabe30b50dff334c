package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
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
		&Hello{VersionMin: 1, VersionMax: 1, Features: FeatureZeroPages | FeaturePageHashes, Channel: ChannelBulk,
			Session: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, Client: "pagewarp-test/1"},
		&Hello{VersionMin: 0, VersionMax: math.MaxUint16, Features: math.MaxUint64, Client: strings.Repeat("c", MaxNameLen)},
		&Welcome{Version: 1, Features: FeaturePageHashes, PageSize: 4096,
			Regions: []Region{{ID: 0, Name: "mem", Pages: 1 << 20}, {ID: math.MaxUint32, Name: "", Pages: math.MaxUint64}}, Server: "srv"},
		&Welcome{Version: 1, PageSize: MaxPageSize},
		&Request{ReqID: 1, Region: 0, Page: 0, Count: 1, Priority: PriorityDemand},
		&Request{ReqID: math.MaxUint64, Region: math.MaxUint32, Page: math.MaxUint64, Count: MaxPagesPerRequest, Priority: PriorityBackground},
		testPages(1, 4096, 0),
		testPages(64, 4096, FlagLast),
		testPages(1, MaxPageSize, 0),
		testPages(MaxPagesPerRequest, 4096, FlagZero|FlagLast),
		&Error{Code: CodeOutOfRange, ReqID: 9, Message: strings.Repeat("e", MaxErrorMessageLen)},
		&Error{Code: CodeShutdown},
		&DigestRequest{ReqID: 5, Region: 2},
		&Digest{ReqID: 5, Region: 2, Algorithm: DigestXXH3Over64, Sum: [16]byte{0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xee}},
		&Bye{Reason: "done"},
		&Bye{},
	}
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
		&Hello{Channel: 2},
		&Request{ReqID: 1, Count: 0},
		&Request{ReqID: 0, Count: 1},
		&Pages{ReqID: 1, Count: 1, Hashes: make([]byte, 8), Data: make([]byte, 100)},
		&Pages{ReqID: 1, Count: 1025, Flags: FlagZero},
		&Welcome{PageSize: 8 << 20},
		&Bye{Reason: strings.Repeat("x", 257)},
		&Pages{ReqID: 1, Count: 2, Hashes: make([]byte, 16), Data: make([]byte, 2*4<<20)},
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

func (m *mp) arr(n int) *mp        { m.e.EncodeArrayLen(n); return m }
func (m *mp) u(v uint64) *mp       { m.e.EncodeUint(v); return m }
func (m *mp) i64(v int64) *mp      { m.e.EncodeInt64(v); return m }
func (m *mp) i8(v int8) *mp        { m.e.EncodeInt8(v); return m }
func (m *mp) str(s string) *mp     { m.e.EncodeString(s); return m }
func (m *mp) bin(b []byte) *mp     { m.e.EncodeBytesLen(len(b)); m.out.b = append(m.out.b, b...); return m }
func (m *mp) raw(b ...byte) *mp    { m.out.b = append(m.out.b, b...); return m }
func (m *mp) f64(v float64) *mp    { m.e.EncodeFloat64(v); return m }
func (m *mp) bytes() []byte        { return m.out.b }
func (m *mp) cut(n int) []byte     { return m.out.b[:len(m.out.b)-n] }
func (m *mp) nilv() *mp            { m.e.EncodeNil(); return m }
func hello() *mp                   { return body(TypeHello).arr(6).u(1).u(1).u(0).u(0).bin(make([]byte, 16)) }
func request(count uint64) *mp     { return body(TypeRequest).arr(5).u(4).u(0).u(0).u(count) }
func pagesHdr(count uint64) *mp    { return body(TypePages).arr(7).u(4).u(0).u(0).u(count) }
func zeros(n int) []byte           { return make([]byte, n) }
func (m *mp) then(f func(*mp)) *mp { f(m); return m }

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		code  ErrorCode
		reqID uint64
	}{
		{"empty", nil, CodeMalformed, 0},
		{"unknown type 0", []byte{0, 0x90}, CodeUnknownType, 0},
		{"unknown type 9", body(9).arr(0).bytes(), CodeUnknownType, 0},
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
		{"pages unknown flags", pagesHdr(1).u(4).bin(zeros(8)).bin(zeros(4096)).bytes(), CodeMalformed, 4},
		{"pages hashes short", pagesHdr(2).u(0).bin(zeros(8)).bin(zeros(8192)).bytes(), CodeMalformed, 4},
		{"pages data length mismatch", pagesHdr(1).u(0).bin(zeros(8)).bin(zeros(100)).bytes(), CodeMalformed, 4},
		{"pages data not a page multiple", pagesHdr(2).u(0).bin(zeros(16)).bin(zeros(8192 + 2)).bytes(), CodeMalformed, 4},
		{"pages zero with data", pagesHdr(1).u(uint64(FlagZero)).bin(nil).bin(zeros(4096)).bytes(), CodeMalformed, 4},
		{"pages zero with hashes", pagesHdr(1).u(uint64(FlagZero)).bin(zeros(8)).bin(nil).bytes(), CodeMalformed, 4},
		{"pages data as str", pagesHdr(1).u(0).bin(zeros(8)).str(string(zeros(4096))).bytes(), CodeMalformed, 4},
		{"digest sum 15 bytes", body(TypeDigest).arr(4).u(1).u(0).u(1).bin(zeros(15)).bytes(), CodeMalformed, 1},
		{"error message too long", body(TypeError).arr(3).u(1).u(0).str(strings.Repeat("m", 1025)).bytes(), CodeMalformed, 0},
		{"bye reason too long", body(TypeBye).arr(1).str(strings.Repeat("r", 257)).bytes(), CodeMalformed, 0},
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

func TestPagesHash(t *testing.T) {
	p := &Pages{Hashes: binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, 1), 0xdeadbeef)}
	if p.Hash(0) != 1 || p.Hash(1) != 0xdeadbeef {
		t.Fatalf("Hash = %#x %#x", p.Hash(0), p.Hash(1))
	}
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
