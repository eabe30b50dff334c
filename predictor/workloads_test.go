package predictor

import (
	"math/rand/v2"
)

// Test workloads: deterministic first-touch sequences over a region of regionPages pages. Each
// returns the evaluated run and, where it has one, the recorded run used to warm predictors.

const regionPages = 1 << 16

type workload struct {
	name  string
	trace []uint64
	warm  []uint64 // nil: no recorded run
}

func rng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x5eed)) }

// firstTouches drops repeated pages, keeping the first touch of each.
func firstTouches(seq []uint64) []uint64 {
	seen := make(map[uint64]bool, len(seq))
	out := seq[:0:0]
	for _, q := range seq {
		if !seen[q] {
			seen[q] = true
			out = append(out, q)
		}
	}
	return out
}

func sequential(seed uint64) []uint64 {
	base := rng(seed).Uint64N(regionPages / 4)
	out := make([]uint64, 0, 20000)
	for q := base; q < base+20000; q++ {
		out = append(out, q)
	}
	return out
}

func strided(seed uint64) []uint64 {
	r := rng(seed)
	s := 3 + r.Uint64N(14) // 3..16
	base := r.Uint64N(1024)
	var out []uint64
	for q := base; q < regionPages; q += s {
		out = append(out, q)
	}
	return out
}

// interleaved is 8 strided streams in separate eighths of the region, randomly interleaved as
// several vCPUs would fault.
func interleaved(seed uint64) []uint64 {
	r := rng(seed)
	const streams = 8
	span := uint64(regionPages / streams)
	next := make([]uint64, streams)
	end := make([]uint64, streams)
	step := make([]uint64, streams)
	for i := range next {
		step[i] = 3 + r.Uint64N(14)
		next[i] = uint64(i)*span + r.Uint64N(64)
		end[i] = uint64(i+1) * span
	}
	var out []uint64
	for live := streams; live > 0; {
		i := r.IntN(streams)
		if next[i] >= end[i] {
			continue
		}
		out = append(out, next[i])
		next[i] += step[i]
		if next[i] >= end[i] {
			live--
		}
	}
	return out
}

// structured touches fixed offsets in each record of 32 pages, records in order.
func structured(seed uint64) []uint64 {
	r := rng(seed)
	offsets := []uint64{0, 3, 7, 12, 20}
	base := r.Uint64N(64)
	var out []uint64
	for rec := base; rec+32 <= regionPages; rec += 32 {
		for _, o := range offsets {
			out = append(out, rec+o)
		}
	}
	return out
}

// pointerChase follows a fixed random permutation of a quarter of the region.
func pointerChase(seed uint64) []uint64 {
	perm := rng(seed).Perm(regionPages)
	out := make([]uint64, regionPages/4)
	for i := range out {
		out[i] = uint64(perm[i])
	}
	return out
}

// zipfian draws 60000 touches of a Zipf-distributed hot set scattered over the region and keeps
// the first touches.
func zipfian(seed uint64) []uint64 {
	r := rng(seed)
	perm := r.Perm(regionPages)
	z := rand.NewZipf(r, 1.1, 4, regionPages-1)
	seq := make([]uint64, 60000)
	for i := range seq {
		seq[i] = uint64(perm[z.Uint64()])
	}
	return firstTouches(seq)
}

// random is a uniform random permutation of half the region.
func random(seed uint64) []uint64 {
	perm := rng(seed).Perm(regionPages)
	out := make([]uint64, regionPages/2)
	for i := range out {
		out[i] = uint64(perm[i])
	}
	return out
}

// phases is sequential, then random, then strided (stride 5), each in its own part of the region.
func phases(seed uint64) []uint64 {
	r := rng(seed)
	var out []uint64
	for q := uint64(0); q < 8000; q++ {
		out = append(out, q)
	}
	perm := r.Perm(32000)
	for _, q := range perm[:4000] {
		out = append(out, 8000+uint64(q))
	}
	for q := uint64(40000); q < 60000; q += 5 {
		out = append(out, q)
	}
	return out
}

const (
	phaseRandomStart = 8000
	phaseStrideStart = 12000
)

func workloads() []workload {
	return []workload{
		{name: "sequential", trace: sequential(1)},
		{name: "strided", trace: strided(2)},
		{name: "interleaved", trace: interleaved(3)},
		{name: "structured", trace: structured(4)},
		{name: "pointerchase", trace: pointerChase(5), warm: pointerChase(5)},
		{name: "zipf", trace: zipfian(6), warm: zipfian(6)},
		{name: "zipf-otherseed", trace: zipfian(7), warm: zipfian(6)},
		{name: "random", trace: random(8), warm: random(9)},
		{name: "phases", trace: phases(10)},
	}
}
