package returnpath

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzParse checks that Parse never panics, fails only with ErrMalformed, and that whatever it
// accepts re-encodes to the same frame.
func FuzzParse(f *testing.F) {
	seeds := sampleStream()
	r := NewReader(bytes.NewReader(seeds))
	for {
		_, raw, err := r.Next()
		if err != nil {
			break
		}
		f.Add(uint16(raw[0])<<8|uint16(raw[1]), append([]byte(nil), raw[HeaderSize:]...))
	}
	f.Add(uint16(ReqPagesID), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0xff})
	f.Fuzz(func(t *testing.T, typ uint16, payload []byte) {
		m, err := Parse(Type(typ), payload)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error %v does not wrap ErrMalformed", err)
			}
			return
		}
		b, err := m.Append(nil)
		if err != nil {
			t.Fatalf("re-encode %v: %v", m, err)
		}
		if !bytes.Equal(b[HeaderSize:], payload) || Type(uint16(b[0])<<8|uint16(b[1])) != Type(typ) {
			t.Fatalf("%v re-encodes to %x, parsed from type %d payload %x", m, b, typ, payload)
		}
	})
}

// FuzzReader feeds hostile byte streams to a Reader: it must end with an error (io.EOF only at
// a frame boundary), never panic, and every frame it returns must re-encode to its raw bytes;
// the bytes it accounts for (frames and bitmap tails) are a prefix of the input.
func FuzzReader(f *testing.F) {
	f.Add(sampleStream())
	f.Add(sampleStream()[:30])
	f.Add([]byte{0, 5, 0, 2, 1, 'x', 0, 0, 0, 0, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef})
	f.Add([]byte{0, 5, 0, 2, 1, 'x', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf8})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in))
		r.MaxBitmap = 1 << 16
		var out bytes.Buffer
		skipped := false
		for i := 0; ; i++ {
			if i > len(in) {
				t.Fatalf("more messages than input bytes")
			}
			m, raw, err := r.Next()
			if err != nil {
				if err == io.EOF && !skipped && out.Len() != len(in) {
					t.Fatalf("io.EOF after %d of %d bytes", out.Len(), len(in))
				}
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrMalformed) {
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			re, err := m.Append(nil)
			if err != nil || !bytes.Equal(re, raw) {
				t.Fatalf("%v re-encodes to %x (%v), read %x", m, re, err, raw)
			}
			out.Write(raw)
			if m.Type == RecvBitmap && i%2 == 0 { // the other half is skipped by Next
				if _, err := r.Bitmap(&out); err != nil {
					break
				}
			} else if m.Type == RecvBitmap {
				skipped = true
			}
		}
		if !skipped && !bytes.HasPrefix(in, out.Bytes()) {
			t.Fatalf("forwarded bytes are not a prefix of the input")
		}
	})
}
