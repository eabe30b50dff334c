package predictor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

func encodeTrace(t testing.TB, tr Trace) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteTrace(&b, tr); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestTraceRoundTrip(t *testing.T) {
	for _, w := range workloads() {
		tr := Trace{PageSize: 4096, Pages: regionPages, Seq: w.trace}
		b := encodeTrace(t, tr)
		got, err := ReadTrace(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		if got.PageSize != tr.PageSize || got.Pages != tr.Pages || !slices.Equal(got.Seq, tr.Seq) {
			t.Fatalf("%s: round trip differs", w.name)
		}
		t.Logf("%s: %d pages in %d bytes (%.2f bytes/page)", w.name, len(tr.Seq), len(b), float64(len(b))/float64(len(tr.Seq)))
	}
	empty := encodeTrace(t, Trace{PageSize: 4096})
	if got, err := ReadTrace(bytes.NewReader(empty)); err != nil || len(got.Seq) != 0 {
		t.Fatalf("empty trace: %v %v", got, err)
	}
}

func TestReadTraceRejects(t *testing.T) {
	good := encodeTrace(t, Trace{PageSize: 4096, Pages: 100, Seq: []uint64{5, 6, 99, 0}})
	mod := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	cases := map[string][]byte{
		"empty":        nil,
		"short header": good[:20],
		"bad magic":    mod(func(b []byte) []byte { b[0] = 'X'; return b }),
		"version 2":    mod(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 2); return b }),
		"page size 3":  mod(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[12:], 3); return b }),
		"huge region":  mod(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[16:], MaxTracePages+1); return b }),
		"huge count":   mod(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[24:], MaxTraceCount+1); return b }),
		// A count the input cannot hold: must fail on the short input without allocating it.
		"count beyond input": mod(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[24:], MaxTraceCount); return b }),
		"page outside":       mod(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[16:], 99); return b }),
		"truncated":          good[:len(good)-1],
		"trailing":           append(slices.Clone(good), 0),
		"overlong varint":    append(slices.Clone(good[:24]), 1, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x00),
	}
	for name, b := range cases {
		allocs := testing.AllocsPerRun(1, func() { _, _ = ReadTrace(bytes.NewReader(b)) })
		if _, err := ReadTrace(bytes.NewReader(b)); !errors.Is(err, ErrTrace) {
			t.Errorf("%s: ReadTrace = %v, want ErrTrace", name, err)
		}
		if allocs > 20 {
			t.Errorf("%s: %v allocations", name, allocs)
		}
	}
	if err := WriteTrace(&bytes.Buffer{}, Trace{PageSize: 4096, Pages: 10, Seq: []uint64{10}}); !errors.Is(err, ErrTrace) {
		t.Errorf("WriteTrace with a page outside the region = %v", err)
	}
}
