package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Workload is a deterministic memory access pattern over a region, run by
// several threads.
type Workload struct {
	Name    string
	Threads int
	// Orders[t] is the sequence of page indices thread t touches, in order
	// (pages may repeat: a thread may touch a page it or another thread
	// already touched; only first touches fault in post-copy).
	Orders [][]uint32
}

// ErrUnknownWorkload is wrapped by NewWorkload's error for a name that is not
// in WorkloadNames.
var ErrUnknownWorkload = errors.New("unknown workload")

// workloadBuilders maps each workload name to its builder, in suite order.
var workloadBuilders = []struct {
	name  string
	build func(l, r *rand.Rand, pages uint32, threads int) [][]uint32
}{
	{"sequential", buildSequential},
	{"strided", buildStrided},
	{"interleaved", buildInterleaved},
	{"structured", buildStructured},
	{"pointer-chase", buildPointerChase},
	{"zipf", buildZipf},
	{"random", buildRandom},
	{"phases", buildPhases},
}

// WorkloadNames lists the suite: sequential, strided, interleaved,
// structured, pointer-chase, zipf, random, phases.
func WorkloadNames() []string {
	names := make([]string, len(workloadBuilders))
	for i, b := range workloadBuilders {
		names[i] = b.name
	}
	return names
}

// NewWorkload builds the named workload over a region of pages pages, for
// threads threads, deterministically from seed: NewWorkloadRun with seed as
// both the layout and the run seed. Every workload touches every
// page of the region at least once, so a migration can complete through
// faults alone. Parameters (strides, record layouts, permutations) are drawn
// from seed; two names with one seed draw from different streams.
//
// Workloads with a fixed number of streams (interleaved has 8) leave the
// threads beyond that with empty orders; so does any workload when threads
// exceeds pages.
func NewWorkload(name string, pages uint32, threads int, seed uint64) (*Workload, error) {
	return NewWorkloadRun(name, pages, threads, seed, seed)
}

// NewWorkloadRun builds the named workload from two seeds. The layout seed
// draws what belongs to the program and its data, the same from run to run:
// strides, record layouts, the pointer structure of pointer-chase, the hot
// set of zipf. The run seed draws what differs between runs of that program:
// the order in which interleaved streams advance, where a pointer chase
// starts, zipf's draws, the random orders of random and of phases' random
// phase. A recorded run with another run seed is what an operator would have
// from an earlier run of the same program, the input for warming a predictor.
func NewWorkloadRun(name string, pages uint32, threads int, layoutSeed, runSeed uint64) (*Workload, error) {
	for _, b := range workloadBuilders {
		if b.name != name {
			continue
		}
		if pages == 0 {
			return nil, fmt.Errorf("workload %s: a region of 0 pages: want at least 1", name)
		}
		if threads < 1 {
			return nil, fmt.Errorf("workload %s: %d threads: want at least 1", name, threads)
		}
		l := rand.New(rand.NewPCG(layoutSeed, nameStream(name)))
		r := rand.New(rand.NewPCG(runSeed, nameStream(name)^0x72756e)) // "run"
		return &Workload{Name: name, Threads: threads, Orders: b.build(l, r, pages, threads)}, nil
	}
	return nil, fmt.Errorf("workload %q: %w (want one of %s)", name, ErrUnknownWorkload, strings.Join(WorkloadNames(), ", "))
}

// nameStream derives a PCG stream from a workload name, so that, say,
// random and pointer-chase with one seed are different permutations.
func nameStream(name string) uint64 {
	h := uint64(0x776f726b6c6f6164) // "workload"
	for i := 0; i < len(name); i++ {
		h = mix(h ^ uint64(name[i]))
	}
	return h
}

// FirstTouches merges the threads' orders round-robin (one touch per thread
// in turn, skipping threads that are done) and returns the first touch of
// each page in that order: a deterministic approximation of the fault
// sequence, for offline evaluation or warming a predictor.
func (w *Workload) FirstTouches() []uint64 {
	seen := newBitmap(w.maxPage())
	var out []uint64
	for i := 0; ; i++ {
		more := false
		for _, o := range w.Orders {
			if i >= len(o) {
				continue
			}
			more = true
			if p := o[i]; !seen.testAndSet(p) {
				out = append(out, uint64(p))
			}
		}
		if !more {
			return out
		}
	}
}

// Run touches mem with one goroutine per thread, each following its order: a
// touch reads the 8-byte word of the page at an offset derived from the page
// number and xor-folds it, with the page number, into the checksum, as
// TouchRandom does. XOR makes the checksum independent of the interleaving;
// a page touched an even number of times cancels out of it. Run returns the
// number of distinct pages touched, the checksum and the wall time of the
// touching alone.
//
// mem must hold every page the workload touches (len(mem) >= pages*pageSize
// for the region it was built for) and pageSize must be a multiple of 8; Run
// panics otherwise. The caller must leave a P for each thread
// (faulthandler.ReserveProcs).
func (w *Workload) Run(mem []byte, pageSize int) TouchResult {
	if pageSize < 8 || pageSize%8 != 0 {
		panic(fmt.Sprintf("bench: workload %s: page size %d is not a positive multiple of 8", w.Name, pageSize))
	}
	top := w.maxPage()
	if top >= int64(len(mem)/pageSize) {
		panic(fmt.Sprintf("bench: workload %s touches page %d of a region of %d pages", w.Name, top, len(mem)/pageSize))
	}
	distinct := w.distinct(top)

	sums := make([]uint64, len(w.Orders))
	words := uint32(pageSize / 8)
	var wg sync.WaitGroup
	start := time.Now()
	for t, order := range w.Orders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s uint64
			for _, p := range order {
				off := int(p)*pageSize + int(p%words)*8
				s ^= binary.LittleEndian.Uint64(mem[off:off+8]) ^ uint64(p)<<32
			}
			sums[t] = s
		}()
	}
	wg.Wait()
	res := TouchResult{Pages: distinct, Elapsed: time.Since(start)}
	for _, s := range sums {
		res.Checksum ^= s
	}
	return res
}

// maxPage returns the largest page index in the orders, or -1 if they are
// empty.
func (w *Workload) maxPage() int64 {
	top := int64(-1)
	for _, o := range w.Orders {
		for _, p := range o {
			top = max(top, int64(p))
		}
	}
	return top
}

// distinct counts the distinct pages in the orders; top is maxPage().
func (w *Workload) distinct(top int64) int {
	seen := newBitmap(top)
	n := 0
	for _, o := range w.Orders {
		for _, p := range o {
			if !seen.testAndSet(p) {
				n++
			}
		}
	}
	return n
}

// bitmap is a set of page indices.
type bitmap []uint64

// newBitmap returns a bitmap for pages 0..top (empty for top < 0).
func newBitmap(top int64) bitmap { return make(bitmap, (top+64)/64) }

// testAndSet adds p and reports whether it was already there.
func (b bitmap) testAndSet(p uint32) bool {
	w, m := p/64, uint64(1)<<(p%64)
	was := b[w]&m != 0
	b[w] |= m
	return was
}

// share returns thread t's contiguous share [lo, hi) of n items split
// between threads threads.
func share(n uint64, t, threads int) (lo, hi uint64) {
	return n * uint64(t) / uint64(threads), n * uint64(t+1) / uint64(threads)
}

// appendRange appends the pages lo..hi-1 in ascending order.
func appendRange(dst []uint32, lo, hi uint64) []uint32 {
	for p := lo; p < hi; p++ {
		dst = append(dst, uint32(p))
	}
	return dst
}

// appendStrided appends the pages of [lo, hi) with stride s: lo, lo+s, ...,
// then lo+1, lo+1+s, ... up to offset s-1, so every page is covered once.
func appendStrided(dst []uint32, lo, hi, s uint64) []uint32 {
	for off := uint64(0); off < s; off++ {
		for p := lo + off; p < hi; p += s {
			dst = append(dst, uint32(p))
		}
	}
	return dst
}

// permutation returns the pages lo..hi-1 shuffled by r.
func permutation(r *rand.Rand, lo, hi uint64) []uint32 {
	perm := appendRange(make([]uint32, 0, hi-lo), lo, hi)
	r.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
	return perm
}

// stride draws a stride in [3, 16].
func stride(r *rand.Rand) uint64 { return 3 + r.Uint64N(14) }

// splitPerm gives each thread its contiguous share of perm, in order.
func splitPerm(perm []uint32, threads int) [][]uint32 {
	orders := make([][]uint32, threads)
	for t := range orders {
		lo, hi := share(uint64(len(perm)), t, threads)
		orders[t] = perm[lo:hi:hi]
	}
	return orders
}

// buildSequential splits the region into threads contiguous slices; each
// thread touches its slice in ascending order. It draws nothing from r.
func buildSequential(_, _ *rand.Rand, pages uint32, threads int) [][]uint32 {
	orders := make([][]uint32, threads)
	for t := range orders {
		lo, hi := share(uint64(pages), t, threads)
		orders[t] = appendRange(make([]uint32, 0, hi-lo), lo, hi)
	}
	return orders
}

// buildStrided draws one stride s in [3, 16]; each thread walks its
// contiguous slice with stride s from the slice's start, then from offsets
// 1..s-1 in later passes.
func buildStrided(l, _ *rand.Rand, pages uint32, threads int) [][]uint32 {
	s := stride(l)
	orders := make([][]uint32, threads)
	for t := range orders {
		lo, hi := share(uint64(pages), t, threads)
		orders[t] = appendStrided(make([]uint32, 0, hi-lo), lo, hi, s)
	}
	return orders
}

// interleavedStreams is the number of streams of the interleaved workload.
const interleavedStreams = 8

// buildInterleaved splits the region in 8 parts, each walked by one stream:
// sequential or strided (a coin per stream; a strided stream draws its own
// stride in [3, 16] and covers its part in passes as buildStrided does).
// Stream i belongs to thread i mod threads; each thread interleaves its
// streams by picking, touch after touch, one of its unfinished streams at
// random, as the vCPUs of a guest would.
func buildInterleaved(l, r *rand.Rand, pages uint32, threads int) [][]uint32 {
	all := make([]uint32, 0, pages)
	streams := make([][]uint32, interleavedStreams)
	for i := range streams {
		lo, hi := share(uint64(pages), i, interleavedStreams)
		start := len(all)
		if l.IntN(2) == 0 {
			all = appendRange(all, lo, hi)
		} else {
			all = appendStrided(all, lo, hi, stride(l))
		}
		streams[i] = all[start:len(all):len(all)]
	}
	orders := make([][]uint32, threads)
	for t := range orders {
		var live [][]uint32
		n := 0
		for i := t; i < interleavedStreams; i += threads {
			if len(streams[i]) > 0 {
				live = append(live, streams[i])
				n += len(streams[i])
			}
		}
		order := make([]uint32, 0, n)
		for len(live) > 0 {
			k := r.IntN(len(live))
			order = append(order, live[k][0])
			if live[k] = live[k][1:]; len(live[k]) == 0 {
				live[k] = live[len(live)-1]
				live = live[:len(live)-1]
			}
		}
		orders[t] = order
	}
	return orders
}

// structuredLayout draws the record layout of the structured workload: a
// record length in [8, 32] pages and 3 to 5 distinct hot offsets in
// ascending order, offset 0 included.
func structuredLayout(r *rand.Rand) (recLen uint64, hot []uint64) {
	recLen = 8 + r.Uint64N(25)
	k := 3 + r.IntN(3)
	picked := make([]bool, recLen)
	picked[0] = true
	for n := 1; n < k; {
		if o := 1 + r.Uint64N(recLen-1); !picked[o] {
			picked[o] = true
			n++
		}
	}
	for o, ok := range picked {
		if ok {
			hot = append(hot, uint64(o))
		}
	}
	return recLen, hot
}

// buildStructured lays the region out as records of recLen pages (the last
// one possibly short) and gives each thread a contiguous share of the
// records. A thread first touches the hot offsets of each of its records,
// record after record, then, in a second pass, the remaining offsets of each
// record in order, so every page is covered once.
func buildStructured(l, _ *rand.Rand, pages uint32, threads int) [][]uint32 {
	recLen, hot := structuredLayout(l)
	return structuredOrders(uint64(pages), threads, recLen, hot)
}

// structuredOrders is buildStructured with the layout given.
func structuredOrders(pages uint64, threads int, recLen uint64, hot []uint64) [][]uint32 {
	isHot := make([]bool, recLen)
	for _, o := range hot {
		isHot[o] = true
	}
	records := (pages + recLen - 1) / recLen
	orders := make([][]uint32, threads)
	for t := range orders {
		lo, hi := share(records, t, threads)
		end := min(hi*recLen, pages)
		order := make([]uint32, 0, end-min(lo*recLen, end))
		for _, cold := range []bool{false, true} {
			for rec := lo; rec < hi; rec++ {
				for o := range recLen {
					if p := rec*recLen + o; isHot[o] != cold && p < pages {
						order = append(order, uint32(p))
					}
				}
			}
		}
		orders[t] = order
	}
	return orders
}

// buildPointerChase draws a random cyclic permutation of the pages
// (Sattolo's algorithm: one cycle through every page, so each page has a
// fixed successor, the next pointer of a linked structure) and walks it from
// a random page; each thread follows its contiguous share of the walk.
func buildPointerChase(l, r *rand.Rand, pages uint32, threads int) [][]uint32 {
	next := appendRange(make([]uint32, 0, pages), 0, uint64(pages))
	for i := len(next) - 1; i > 0; i-- {
		j := l.IntN(i)
		next[i], next[j] = next[j], next[i]
	}
	walk := make([]uint32, pages)
	p := uint32(r.Uint64N(uint64(pages)))
	for i := range walk {
		walk[i] = p
		p = next[p]
	}
	return splitPerm(walk, threads)
}

// zipfS is the exponent of the zipf workload's distribution.
const zipfS = 1.1

// buildZipf ranks the pages by a random permutation and draws 2×pages
// touches from a Zipf distribution (s = 1.1, v = 1) over the ranks, so a
// scattered hot set takes most touches; thread t makes its contiguous share
// of the draws, then appends, in rank order, the pages of its share of the
// ranks that no thread drew, so every page is covered.
func buildZipf(l, r *rand.Rand, pages uint32, threads int) [][]uint32 {
	perm := permutation(l, 0, uint64(pages))
	z := rand.NewZipf(r, zipfS, 1, uint64(pages)-1)
	draws := 2 * uint64(pages)
	drawn := newBitmap(int64(pages) - 1)
	orders := make([][]uint32, threads)
	for t := range orders {
		lo, hi := share(draws, t, threads)
		order := make([]uint32, 0, hi-lo)
		for range hi - lo {
			rank := uint32(z.Uint64())
			drawn.testAndSet(rank)
			order = append(order, perm[rank])
		}
		orders[t] = order
	}
	for t := range orders {
		lo, hi := share(uint64(pages), t, threads)
		for rank := lo; rank < hi; rank++ {
			if !drawn.testAndSet(uint32(rank)) {
				orders[t] = append(orders[t], perm[rank])
			}
		}
	}
	return orders
}

// buildRandom draws a uniform random permutation of the pages; each thread
// touches its contiguous share of it.
func buildRandom(_, r *rand.Rand, pages uint32, threads int) [][]uint32 {
	return splitPerm(permutation(r, 0, uint64(pages)), threads)
}

// buildPhases splits the region in three parts: the first touched
// sequentially (each thread its contiguous slice, ascending), the second in a
// random permutation (each thread its contiguous share), the third strided
// (one stride in [3, 16], each thread its slice as buildStrided does). Each
// thread does its share of phase 1, then 2, then 3.
func buildPhases(l, r *rand.Rand, pages uint32, threads int) [][]uint32 {
	n := uint64(pages)
	b1, b2 := n/3, 2*n/3
	perm := permutation(r, b1, b2)
	s := stride(l)
	orders := make([][]uint32, threads)
	for t := range orders {
		lo1, hi1 := share(b1, t, threads)
		lo2, hi2 := share(b2-b1, t, threads)
		lo3, hi3 := share(n-b2, t, threads)
		order := make([]uint32, 0, hi1-lo1+hi2-lo2+hi3-lo3)
		order = appendRange(order, lo1, hi1)
		order = append(order, perm[lo2:hi2]...)
		orders[t] = appendStrided(order, b2+lo3, b2+hi3, s)
	}
	return orders
}
