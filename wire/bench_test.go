package wire

import (
	"bytes"
	"io"
	"testing"
)

func BenchmarkPages(b *testing.B) {
	for _, pages := range []int{1, 64} {
		p := testPages(pages, 4096, FlagLast)
		frame := frameOf(b, p)
		b.Run("encode/"+itoa(pages), func(b *testing.B) {
			b.SetBytes(int64(len(p.Data)))
			b.ReportAllocs()
			buf := make([]byte, 0, len(frame))
			for b.Loop() {
				var err error
				if buf, err = AppendFrame(buf[:0], p); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("write/"+itoa(pages), func(b *testing.B) {
			b.SetBytes(int64(len(p.Data)))
			b.ReportAllocs()
			w := NewWriter(io.Discard)
			for b.Loop() {
				if err := w.WritePages(p); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("decode/"+itoa(pages), func(b *testing.B) {
			b.SetBytes(int64(len(p.Data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(frame[4:]); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("read/"+itoa(pages), func(b *testing.B) {
			b.SetBytes(int64(len(p.Data)))
			b.ReportAllocs()
			src := bytes.NewReader(frame)
			r := NewReader(src)
			for b.Loop() {
				src.Reset(frame)
				if _, err := r.ReadMessage(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("decode/request", func(b *testing.B) {
		frame := frameOf(b, &Request{ReqID: 123456, Region: 0, Page: 1 << 20, Count: 64, Priority: PriorityBackground})
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Decode(frame[4:]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func itoa(n int) string {
	switch n {
	case 1:
		return "1page"
	default:
		return "64pages"
	}
}
