package predictor

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkPPM measures one fault: Observe plus Predict(k=8), in steady state, on a sequential
// stream and on 8 randomly interleaved strided streams. Besides ns/op it reports the 99th
// percentile of per-fault time as p99-ns/fault (each call timed; the timer costs ~20-40 ns).
func BenchmarkPPM(b *testing.B) {
	const pages = 1 << 26
	streams := []struct {
		name string
		next func(i uint64) uint64
	}{
		{"sequential", func(i uint64) uint64 { return i % pages }},
		{"interleaved", func(i uint64) uint64 {
			// Stream s = hash(i) % 8 advances by stride 3+s inside its own eighth.
			s := (i * 0x9e3779b97f4a7c15 >> 61)
			return (s*(pages/8) + (i/8)*(3+s)) % pages
		}},
	}
	for _, st := range streams {
		b.Run(st.name, func(b *testing.B) {
			p, err := New("ppm", Config{Pages: pages})
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]uint64, 0, budget)
			for i := range uint64(1 << 16) { // warm up: tables faulted in, contexts learned
				p.Observe(st.next(i))
				dst = p.Predict(dst[:0], budget)
			}
			samples := make([]float64, 1<<16)
			i := uint64(1 << 16)
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				p.Observe(st.next(i))
				dst = p.Predict(dst[:0], budget)
				samples[i%uint64(len(samples))] = float64(time.Since(t0).Nanoseconds())
				i++
			}
			n := min(int(i-1<<16), len(samples))
			b.ReportMetric(p99(samples[:n]), "p99-ns/fault")
		})
	}
}

func p99(v []float64) float64 {
	v = slices.Clone(v)
	return percentile(v, 0.99)
}
