package wire

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// FuzzDecode checks that Decode never panics, that every failure is a *Error with a code the spec
// defines, and that anything it accepts re-encodes to a frame that decodes to an equal message. The
// body decoders are fuzzed with the checksum not checked (a mutated frame would almost never carry a
// valid one, and the fuzzer would stop at it); the strict Decode must then accept the re-encoding.
func FuzzDecode(f *testing.F) {
	for _, m := range fuzzSeeds() {
		f.Add(frameOf(f, m)[4:])
	}
	f.Add(testPagesFrame(f)[4:])
	f.Fuzz(func(t *testing.T, frame []byte) {
		if _, err := Decode(frame); err != nil {
			var werr *Error
			if !errors.As(err, &werr) {
				t.Fatalf("Decode error %v is not a *Error", err)
			}
		}
		dec := newDecoder()
		dec.skipChecksum = true
		m, err := dec.decode(frame, 0)
		if err != nil {
			var werr *Error
			if !errors.As(err, &werr) {
				t.Fatalf("Decode error %v is not a *Error", err)
			}
			if werr.Code < CodeMalformed || werr.Code > CodeInternal {
				t.Fatalf("Decode error %v has code %d", err, werr.Code)
			}
			return
		}
		f2, err := AppendFrame(nil, m)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", m, err)
		}
		m2, err := Decode(f2[4:])
		if err != nil {
			t.Fatalf("decode re-encoded %+v: %v", m, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-decoded differs:\n%+v\n%+v", m, m2)
		}
	})
}

// fuzzSeeds returns the samples small enough to seed the fuzzers. The corpus stays small (the fuzzer grows
// data and lists itself): inputs of tens of kilobytes slow fuzzing down by orders of magnitude.
func fuzzSeeds() []Message {
	var seeds []Message
	for _, m := range samples() {
		switch m := m.(type) {
		case *Pages:
			if len(m.Data) > 4096 {
				continue
			}
		case *Push:
			if len(m.Pages) > 16 {
				continue
			}
		case *Feedback:
			if len(m.Used)+len(m.Unused) > 16 {
				continue
			}
		case *Known:
			if m.Len() > 16 {
				continue
			}
		case *Refs:
			if m.Len() > 16 {
				continue
			}
		case *RoundAck:
			if m.Len() > 16 {
				continue
			}
		case *Resident:
			if len(m.Bits) > 16 {
				continue
			}
		}
		seeds = append(seeds, m)
	}
	return seeds
}

func testPagesFrame(t testing.TB) []byte {
	return frameOf(t, testPages(2, 4096, FlagLast))
}

// FuzzReader feeds a stream of frames to a Reader: it must never panic, must stop at the first error
// with a sticky framing error or a *Error, io.EOF or io.ErrUnexpectedEOF, and must not loop forever.
//
// It is seeded with one frame per input and a short stream of small frames (testdata/fuzz/FuzzReader
// holds more streams), not with every sample in one stream: when an input finds new coverage the fuzzer
// minimizes it in time quadratic in its length, and a stream of tens of kilobytes stalls fuzzing for
// the whole -fuzzminimizetime (60 s by default).
func FuzzReader(f *testing.F) {
	for _, m := range fuzzSeeds() {
		f.Add(frameOf(f, m), uint16(0))
	}
	var stream []byte
	for _, m := range []Message{
		&Request{ReqID: 1, Count: 1}, &Known{Algorithm: ContentXXH3128, Done: true},
		&RoundEnd{Round: 1, Pages: 2, Refs: 3}, &RoundAck{Round: 1, Rejected: rejects(1), Last: true}, &Bye{},
	} {
		stream = append(stream, frameOf(f, m)...)
	}
	f.Add(stream, uint16(0))
	f.Add(testPagesFrame(f), uint16(4096))
	f.Add([]byte{0, 0, 0, 0}, uint16(0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1}, uint16(0))
	f.Fuzz(func(t *testing.T, stream []byte, pageSize uint16) {
		r := NewReader(bytes.NewReader(stream))
		r.dec.skipChecksum = len(stream)%2 == 0 // half the inputs reach the body decoders
		if ps := int(pageSize) << 4; ValidPageSize(ps) {
			r.SetPageSize(ps)
		}
		for i := 0; ; i++ {
			if i > len(stream) {
				t.Fatalf("%d messages from %d bytes", i, len(stream))
			}
			m, err := r.ReadMessage()
			if err == nil {
				if _, err := AppendFrame(nil, m); err != nil {
					t.Fatalf("re-encode %+v: %v", m, err)
				}
				continue
			}
			var werr *Error
			if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.As(err, &werr) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
	})
}
