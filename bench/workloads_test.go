package bench

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

const (
	testPages   = 4096
	testThreads = 4
)

func mustWorkload(t *testing.T, name string, pages uint32, threads int, seed uint64) *Workload {
	t.Helper()
	w, err := NewWorkload(name, pages, threads, seed)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestWorkloadInvariants checks every workload: determinism, page range,
// coverage, and that FirstTouches is a permutation of the region.
func TestWorkloadInvariants(t *testing.T) {
	for _, name := range WorkloadNames() {
		t.Run(name, func(t *testing.T) {
			w := mustWorkload(t, name, testPages, testThreads, 1)
			if w.Name != name || w.Threads != testThreads || len(w.Orders) != testThreads {
				t.Fatalf("got name %q, %d threads, %d orders", w.Name, w.Threads, len(w.Orders))
			}
			if again := mustWorkload(t, name, testPages, testThreads, 1); !equalOrders(w.Orders, again.Orders) {
				t.Error("same seed, different orders")
			}
			if name != "sequential" {
				differs := false
				for seed := uint64(2); seed < 10 && !differs; seed++ {
					differs = !equalOrders(w.Orders, mustWorkload(t, name, testPages, testThreads, seed).Orders)
				}
				if !differs {
					t.Error("seeds 2..9 all give the orders of seed 1")
				}
			}
			touches := 0
			covered := make([]bool, testPages)
			for _, o := range w.Orders {
				touches += len(o)
				for _, p := range o {
					if p >= testPages {
						t.Fatalf("page %d out of a region of %d", p, testPages)
					}
					covered[p] = true
				}
			}
			if i := slices.Index(covered, false); i >= 0 {
				t.Errorf("page %d never touched", i)
			}
			if touches < testPages || touches > 3*testPages {
				t.Errorf("%d touches for %d pages", touches, testPages)
			}
			ft := w.FirstTouches()
			sorted := slices.Sorted(slices.Values(ft))
			if len(sorted) != testPages || sorted[0] != 0 || sorted[len(sorted)-1] != testPages-1 || len(slices.Compact(sorted)) != testPages {
				t.Errorf("FirstTouches is not a permutation of the %d pages (%d entries)", testPages, len(ft))
			}
		})
	}
}

// TestWorkloadEdgeSizes builds every workload on tiny regions and with more
// threads than pages or streams; coverage must hold.
func TestWorkloadEdgeSizes(t *testing.T) {
	for _, name := range WorkloadNames() {
		for _, c := range []struct {
			pages   uint32
			threads int
		}{{1, 1}, {1, 3}, {5, 2}, {7, 16}, {100, 9}, {1000, 1}} {
			w := mustWorkload(t, name, c.pages, c.threads, 3)
			if len(w.Orders) != c.threads {
				t.Errorf("%s %d/%d: %d orders", name, c.pages, c.threads, len(w.Orders))
			}
			if got := len(w.FirstTouches()); got != int(c.pages) {
				t.Errorf("%s %d pages, %d threads: %d first touches", name, c.pages, c.threads, got)
			}
		}
	}
}

func equalOrders(a, b [][]uint32) bool {
	return slices.EqualFunc(a, b, func(x, y []uint32) bool { return slices.Equal(x, y) })
}

// TestWorkloadSequential: each thread's first touches are ascending.
func TestWorkloadSequential(t *testing.T) {
	w := mustWorkload(t, "sequential", testPages, testThreads, 1)
	for i, o := range w.Orders {
		if !slices.IsSorted(o) || len(o) != testPages/testThreads {
			t.Errorf("thread %d: %d touches, ascending %v", i, len(o), slices.IsSorted(o))
		}
	}
	ft := w.FirstTouches()
	for th := range testThreads {
		var mine []uint64
		for _, p := range ft {
			if p/(testPages/testThreads) == uint64(th) {
				mine = append(mine, p)
			}
		}
		if !slices.IsSorted(mine) {
			t.Errorf("thread %d's first touches are not ascending", th)
		}
	}
}

// TestWorkloadStrided: the first pass of each thread has one constant stride
// in [3, 16].
func TestWorkloadStrided(t *testing.T) {
	for seed := range uint64(8) {
		w := mustWorkload(t, "strided", testPages, testThreads, seed)
		o := w.Orders[1]
		s := o[1] - o[0]
		if s < 3 || s > 16 || o[0] != testPages/testThreads {
			t.Fatalf("seed %d: starts %d, %d", seed, o[0], o[1])
		}
		firstPass := (testPages/testThreads + int(s) - 1) / int(s)
		for i := 1; i < firstPass; i++ {
			if o[i]-o[i-1] != s {
				t.Fatalf("seed %d: touch %d steps %d, want %d", seed, i, o[i]-o[i-1], s)
			}
		}
		if o[firstPass] != o[0]+1 {
			t.Errorf("seed %d: second pass starts at %d, want %d", seed, o[firstPass], o[0]+1)
		}
	}
}

// TestWorkloadStructured: the first pass touches the same offsets in every
// record; the layout drawn from the seed is found by matching.
func TestWorkloadStructured(t *testing.T) {
	for seed := range uint64(8) {
		recLen, hot := structuredLayout(rand.New(rand.NewPCG(seed, nameStream("structured"))))
		if recLen < 8 || recLen > 32 || len(hot) < 3 || len(hot) > 5 || hot[0] != 0 || !slices.IsSorted(hot) || len(slices.Compact(slices.Clone(hot))) != len(hot) {
			t.Fatalf("seed %d: layout %d %v", seed, recLen, hot)
		}
		w := mustWorkload(t, "structured", testPages, testThreads, seed)
		for th, o := range w.Orders {
			records := (testPages + recLen - 1) / recLen
			lo, hi := share(records, th, testThreads)
			i := 0
			for rec := lo; rec < hi; rec++ {
				for _, off := range hot {
					if p := rec*recLen + off; p < testPages {
						if uint64(o[i]) != p {
							t.Fatalf("seed %d thread %d touch %d: page %d, want record %d offset %d", seed, th, i, o[i], rec, off)
						}
						i++
					}
				}
			}
			// The second pass: the cold offsets, record after record.
			for ; i+1 < len(o); i++ {
				if o[i+1] <= o[i] {
					t.Fatalf("seed %d thread %d: second pass not ascending at %d", seed, th, i)
				}
			}
		}
	}
}

// TestWorkloadPointerChase: one seed, one chain; the chain's successor of
// each page is fixed.
func TestWorkloadPointerChase(t *testing.T) {
	a := mustWorkload(t, "pointer-chase", testPages, testThreads, 7)
	b := mustWorkload(t, "pointer-chase", testPages, 1, 7)
	if !slices.Equal(slices.Concat(a.Orders...), b.Orders[0]) {
		t.Error("the chain depends on the thread count")
	}
	if r := mustWorkload(t, "random", testPages, 1, 7); slices.Equal(r.Orders[0], b.Orders[0]) {
		t.Error("pointer-chase and random share a permutation for one seed")
	}
}

// TestWorkloadZipf: the draws concentrate on a hot set.
func TestWorkloadZipf(t *testing.T) {
	w := mustWorkload(t, "zipf", testPages, testThreads, 1)
	count := make(map[uint32]int)
	for _, o := range w.Orders {
		for _, p := range o {
			count[p]++
		}
	}
	counts := make([]int, 0, len(count))
	for _, c := range count {
		counts = append(counts, c)
	}
	slices.Sort(counts)
	slices.Reverse(counts)
	top := 0
	for _, c := range counts[:testPages/100] {
		top += c
	}
	if top < 2*testPages/3 {
		t.Errorf("the hottest 1%% of pages take %d of %d draws", top, 2*testPages)
	}
}

// referenceChecksum is Run's checksum computed on one thread.
func referenceChecksum(w *Workload, mem []byte, pageSize int) (sum uint64, distinct int) {
	seen := map[uint32]bool{}
	for _, o := range w.Orders {
		for _, p := range o {
			off := int(p)*pageSize + int(p%uint32(pageSize/8))*8
			sum ^= binary.LittleEndian.Uint64(mem[off:]) ^ uint64(p)<<32
			seen[p] = true
		}
	}
	return sum, len(seen)
}

// TestWorkloadRun runs every workload on ordinary memory against the
// single-threaded reference.
func TestWorkloadRun(t *testing.T) {
	const pageSize = 4096
	mem := make([]byte, testPages*pageSize)
	Content{Seed: 1}.Fill(mem, pageSize)
	for _, name := range WorkloadNames() {
		w := mustWorkload(t, name, testPages, testThreads, 1)
		got := w.Run(mem, pageSize)
		sum, distinct := referenceChecksum(w, mem, pageSize)
		if got.Checksum != sum || got.Pages != distinct || got.Pages != testPages || got.Elapsed <= 0 {
			t.Errorf("%s: got %+v, want checksum %#x, %d pages", name, got, sum, distinct)
		}
	}
	// A region larger than the workload's is fine; a smaller one panics.
	w := mustWorkload(t, "random", 16, 2, 1)
	if got := w.Run(mem, pageSize); got.Pages != 16 {
		t.Errorf("16-page workload on a larger region: %d pages", got.Pages)
	}
	defer func() {
		if recover() == nil {
			t.Error("no panic for a region smaller than the workload's")
		}
	}()
	mustWorkload(t, "random", testPages+1, 2, 1).Run(mem, pageSize)
}

func TestWorkloadErrors(t *testing.T) {
	_, err := NewWorkload("nope", testPages, testThreads, 1)
	if !errors.Is(err, ErrUnknownWorkload) {
		t.Errorf("unknown name: %v", err)
	}
	for _, name := range WorkloadNames() {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("the error %v does not list %s", err, name)
		}
	}
	if _, err := NewWorkload("random", 0, testThreads, 1); err == nil {
		t.Error("no error for 0 pages")
	}
	if _, err := NewWorkload("random", testPages, 0, 1); err == nil {
		t.Error("no error for 0 threads")
	}
}

// BenchmarkNewWorkload measures building each workload over 65536 pages
// (a speed figure, so a benchmark rather than a timed test).
func BenchmarkNewWorkload(b *testing.B) {
	for _, name := range WorkloadNames() {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := NewWorkload(name, 1<<16, testThreads, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
