package predictor

import (
	"bytes"
	"testing"
)

// FuzzReadTrace checks that ReadTrace never panics and that whatever it accepts re-encodes to
// exactly the input bytes.
func FuzzReadTrace(f *testing.F) {
	seeds := []Trace{
		{PageSize: 4096},
		{PageSize: 4096, Pages: 100, Seq: []uint64{5, 6, 99, 0}},
		{PageSize: 1 << 21, Pages: MaxTracePages, Seq: []uint64{MaxTracePages - 1, 0, 1 << 40}},
		{PageSize: 4096, Pages: regionPages, Seq: structured(4)[:200]},
		{PageSize: 4096, Pages: regionPages, Seq: pointerChase(5)[:200]},
	}
	for _, tr := range seeds {
		f.Add(encodeTrace(f, tr))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		tr, err := ReadTrace(bytes.NewReader(in))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := WriteTrace(&out, tr); err != nil {
			t.Fatalf("re-encode accepted trace: %v", err)
		}
		if !bytes.Equal(out.Bytes(), in) {
			t.Fatalf("re-encoded %x, input %x", out.Bytes(), in)
		}
	})
}
