package returnpath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func frame(t Type, payload ...byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(t))
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...)
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// A stream as QEMU 7.2's destination sends it: the first request names the block, the next is
// plain, a bitmap during recovery, the final SHUT.
func sampleStream() []byte {
	tail := cat(be64(16), bytes.Repeat([]byte{0xff}, 16), be64(BitmapEnding))
	return cat(
		frame(Pong, be32(7)...),
		frame(ReqPagesID, cat(be64(0x1000), be32(4096), []byte{6}, []byte("pc.ram"))...),
		frame(ReqPages, cat(be64(0x3000), be32(8192))...),
		frame(RecvBitmap, cat([]byte{6}, []byte("pc.ram"))...), tail,
		frame(ResumeAck, be32(1)...),
		frame(SwitchoverAck),
		frame(Shut, be32(0)...),
	)
}

func TestReaderStream(t *testing.T) {
	in := sampleStream()
	r := NewReader(bytes.NewReader(in))
	want := []Message{
		{Type: Pong, Value: 7},
		{Type: ReqPagesID, Start: 0x1000, Len: 4096, Block: "pc.ram"},
		{Type: ReqPages, Start: 0x3000, Len: 8192},
		{Type: RecvBitmap, Block: "pc.ram"},
		{Type: ResumeAck, Value: 1},
		{Type: SwitchoverAck},
		{Type: Shut},
	}
	var out bytes.Buffer
	for i, w := range want {
		m, raw, err := r.Next()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m != w {
			t.Fatalf("message %d = %v, want %v", i, m, w)
		}
		re, err := m.Append(nil)
		if err != nil || !bytes.Equal(re, raw) {
			t.Fatalf("message %d re-encodes to %x (%v), read %x", i, re, err, raw)
		}
		out.Write(raw)
		if m.Type == RecvBitmap {
			size, err := r.Bitmap(&out)
			if err != nil || size != 16 {
				t.Fatalf("bitmap: size %d, %v", size, err)
			}
		}
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
	if !bytes.Equal(out.Bytes(), in) {
		t.Fatalf("forwarded bytes differ from the input")
	}
}

// Next skips a bitmap tail the caller did not read, checking it.
func TestReaderSkipsBitmap(t *testing.T) {
	r := NewReader(bytes.NewReader(sampleStream()))
	var types []Type
	for {
		m, _, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, m.Type)
	}
	if len(types) != 7 {
		t.Fatalf("read %v", types)
	}
}

func TestMalformed(t *testing.T) {
	name := []byte("pc.ram")
	for _, c := range []struct {
		name string
		in   []byte
	}{
		{"type 0", frame(0, be32(0)...)},
		{"type 8", frame(8)},
		{"type 0xffff", frame(0xffff)},
		{"short SHUT", frame(Shut, 0, 0, 0)},
		{"long PONG", frame(Pong, 0, 0, 0, 0, 0)},
		{"REQ_PAGES of 13", frame(ReqPages, make([]byte, 13)...)},
		{"RESUME_ACK of 0", frame(ResumeAck)},
		{"SWITCHOVER_ACK of 1", frame(SwitchoverAck, 0)},
		{"len 513", cat(be16(uint16(ReqPagesID)), be16(513), make([]byte, 513))},
		{"REQ_PAGES_ID without name", frame(ReqPagesID, cat(be64(0), be32(4096), []byte{0})...)},
		{"REQ_PAGES_ID name longer than frame", frame(ReqPagesID, cat(be64(0), be32(4096), []byte{7}, name)...)},
		{"REQ_PAGES_ID name shorter than frame", frame(ReqPagesID, cat(be64(0), be32(4096), []byte{5}, name)...)},
		{"REQ_PAGES_ID of 12", frame(ReqPagesID, cat(be64(0), be32(4096))...)},
		{"RECV_BITMAP empty", frame(RecvBitmap)},
		{"RECV_BITMAP empty name", frame(RecvBitmap, 0)},
		{"RECV_BITMAP name mismatch", frame(RecvBitmap, cat([]byte{9}, name)...)},
		{"bitmap size not multiple of 8", cat(frame(RecvBitmap, cat([]byte{6}, name)...), be64(7), make([]byte, 7), be64(BitmapEnding))},
		{"bitmap too big", cat(frame(RecvBitmap, cat([]byte{6}, name)...), be64(1<<40))},
		{"bitmap bad end", cat(frame(RecvBitmap, cat([]byte{6}, name)...), be64(8), make([]byte, 8), be64(1))},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(c.in))
			var err error
			for err == nil {
				_, _, err = r.Next()
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func TestTruncated(t *testing.T) {
	in := sampleStream()
	// Cut the stream everywhere: a cut between frames is a clean EOF, anything else is
	// io.ErrUnexpectedEOF, never a panic or a message made of missing bytes.
	bounds := map[int]bool{0: true}
	r := NewReader(bytes.NewReader(in))
	pos := 0
	for {
		_, raw, err := r.Next()
		if err != nil {
			break
		}
		pos += len(raw)
		if raw[1] == byte(RecvBitmap) {
			n, _ := r.Bitmap(io.Discard)
			pos += 16 + int(n)
		}
		bounds[pos] = true
	}
	for cut := 0; cut < len(in); cut++ {
		r := NewReader(bytes.NewReader(in[:cut]))
		var err error
		for err == nil {
			_, _, err = r.Next()
		}
		want := io.ErrUnexpectedEOF
		if bounds[cut] {
			want = io.EOF
		}
		if err != want {
			t.Fatalf("cut at %d: %v, want %v", cut, err, want)
		}
	}
}

func TestAppendRejects(t *testing.T) {
	for _, m := range []Message{
		{Type: ReqPagesID, Block: ""},
		{Type: ReqPagesID, Block: strings.Repeat("x", 256)},
		{Type: RecvBitmap},
		{Type: 0},
		{Type: 8},
	} {
		if b, err := m.Append([]byte{1}); err == nil || len(b) != 1 {
			t.Errorf("Append(%v) = %x, %v; want an error and dst unchanged", m, b, err)
		}
	}
	b, err := AppendReqPagesID(nil, 0x2000, 4096, strings.Repeat("b", 255))
	if err != nil || len(b) != 4+13+255 {
		t.Fatalf("255-byte name: %d bytes, %v", len(b), err)
	}
}
