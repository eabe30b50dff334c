package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func mustMutator(t testing.TB, cfg MutatorConfig) *Mutator {
	t.Helper()
	m, err := NewMutator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// initRegion returns a region Init filled for m.
func initRegion(m *Mutator) []byte {
	mem := make([]byte, m.cfg.Pages*m.PageSize())
	m.Init(mem)
	return mem
}

// testPage returns page p of mem.
func (m *Mutator) testPage(mem []byte, p int) []byte {
	return mem[p*m.pageSize : (p+1)*m.pageSize]
}

func TestMutatorConfigErrors(t *testing.T) {
	_, err := NewMutator(MutatorConfig{Name: "nope", Pages: 8, Threads: 1})
	if !errors.Is(err, ErrUnknownMutator) {
		t.Fatalf("unknown name: got %v, want ErrUnknownMutator", err)
	}
	for _, name := range MutatorNames {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not list %s", err, name)
		}
	}
	for _, cfg := range []MutatorConfig{
		{Name: "runaway", Pages: 0, Threads: 1},
		{Name: "runaway", Pages: 8, Threads: 0},
		{Name: "runaway", Pages: 8, Threads: 9},
		{Name: "runaway", Pages: 8, Threads: 1, Rate: -1},
		{Name: "dup8", Pages: 12, Threads: 1},
	} {
		if _, err := NewMutator(cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
	for _, name := range MutatorNames {
		m := mustMutator(t, MutatorConfig{Name: name, Pages: 16, Threads: 16, Seed: -3, Rate: 5})
		if m.Config().Name != name || m.PageSize() <= 0 || m.PageSize()%8 != 0 {
			t.Errorf("%s: config %+v, page size %d", name, m.Config(), m.PageSize())
		}
	}
}

// TestMutatorInit checks that Init is a function of (Name, Pages, Seed):
// the same bytes again, with another thread count too, and other bytes with
// another seed.
func TestMutatorInit(t *testing.T) {
	for _, name := range MutatorNames {
		t.Run(name, func(t *testing.T) {
			cfg := MutatorConfig{Name: name, Pages: 256, Threads: 3, Seed: 1}
			a := initRegion(mustMutator(t, cfg))
			cfg.Threads = 5
			if b := initRegion(mustMutator(t, cfg)); !bytes.Equal(a, b) {
				t.Error("same seed, different content")
			}
			cfg.Seed = 2
			if c := initRegion(mustMutator(t, cfg)); bytes.Equal(a, c) {
				t.Error("seeds 1 and 2 give the same content")
			}
		})
	}
}

// contentCounts returns how many pages of mem hold each content.
func contentCounts(mem []byte, pageSize int) map[string]int {
	counts := map[string]int{}
	for off := 0; off < len(mem); off += pageSize {
		counts[string(mem[off:off+pageSize])]++
	}
	return counts
}

func TestMutatorInitZeroDup(t *testing.T) {
	const pages = 8192
	m := mustMutator(t, MutatorConfig{Name: "zerodup", Pages: pages, Threads: 1, Seed: 7})
	counts := contentCounts(initRegion(m), m.PageSize())
	zero := string(make([]byte, m.PageSize()))
	var zeros, dups, groups int
	for c, n := range counts {
		switch {
		case c == zero:
			zeros = n
		case n > 1:
			dups += n
			groups++
		}
	}
	if zeros < pages*37/100 || zeros > pages*43/100 {
		t.Errorf("%d zero pages of %d, want 40%% ± 3", zeros, pages)
	}
	if dups < pages*27/100 || dups > pages*33/100 {
		t.Errorf("%d duplicate non-zero pages of %d, want 30%% ± 3", dups, pages)
	}
	if groups != zerodupPatterns {
		t.Errorf("%d distinct duplicated contents, want %d", groups, zerodupPatterns)
	}
}

func TestMutatorInitDup8(t *testing.T) {
	const pages = 1024
	m := mustMutator(t, MutatorConfig{Name: "dup8", Pages: pages, Threads: 2, Seed: 7})
	mem := initRegion(m)
	counts := contentCounts(mem, m.PageSize())
	if len(counts) != pages/8 {
		t.Errorf("%d distinct pages, want %d", len(counts), pages/8)
	}
	for _, n := range counts {
		if n != 8 {
			t.Fatalf("a content held by %d pages, want exactly 8", n)
		}
	}
	for p := range pages {
		if !bytes.Equal(m.testPage(mem, p), m.testPage(mem, p%(pages/8))) {
			t.Fatalf("page %d differs from page %d", p, p%(pages/8))
		}
	}
}

// determinismSteps is the number of steps per thread of the determinism
// test: phases runs over a whole period of its working set.
func determinismSteps(name string) uint64 {
	if name == "phases" {
		return phasesPeriod + phasesPeriod/4
	}
	return 20000
}

// TestMutatorDeterminism runs each mutator to completion in one go, and
// again pausing it three times, each time resuming on a fresh copy of the
// region with a new Mutator and a state that went through JSON: the
// regions and checksums must be equal. The interrupted run is paced so
// that the pauses fall mid-run; the resumed legs are not.
func TestMutatorDeterminism(t *testing.T) {
	for _, name := range MutatorNames {
		t.Run(name, func(t *testing.T) {
			steps := determinismSteps(name)
			cfg := MutatorConfig{Name: name, Pages: 1024, Threads: 3, Seed: 42, Steps: steps}
			m := mustMutator(t, cfg)
			want := initRegion(m)
			initial := bytes.Clone(want)
			m.Run(want, nil)
			st := m.Wait()
			for i, s := range st.Steps {
				if s != steps {
					t.Fatalf("thread %d did %d steps, want %d", i, s, steps)
				}
			}
			if m.Progress() != steps*uint64(cfg.Threads) {
				t.Errorf("progress %d after Wait, want %d", m.Progress(), steps*uint64(cfg.Threads))
			}
			if bytes.Equal(want, initial) {
				t.Fatal("the run changed nothing")
			}
			wantSum := Checksum(want, st)

			mem := initRegion(m)
			var from *MutatorState
			for leg := range 3 {
				c := cfg
				c.Rate = float64(steps) / 2 // a leg of 50 ms does a fortieth of the steps
				lm := mustMutator(t, c)
				lm.Run(mem, from)
				time.Sleep(50 * time.Millisecond)
				paused := lm.Pause()
				if p, sum := lm.Progress(), sumSteps(paused); p != sum {
					t.Errorf("leg %d: progress %d, state sums to %d", leg, p, sum)
				}
				js, err := json.Marshal(paused)
				if err != nil {
					t.Fatal(err)
				}
				from = new(MutatorState)
				if err := json.Unmarshal(js, from); err != nil {
					t.Fatal(err)
				}
				mem = bytes.Clone(mem) // the region of another process
			}
			if done, total := sumSteps(*from), steps*uint64(cfg.Threads); done == 0 || done >= total {
				t.Fatalf("paused after %d steps of %d: not mid-run", done, total)
			}
			last := mustMutator(t, cfg)
			last.Run(mem, from)
			got := last.Wait()
			if sum := Checksum(mem, got); sum != wantSum || !bytes.Equal(mem, want) {
				t.Errorf("paused and resumed: checksum %x, want %x (regions equal: %v)", sum, wantSum, bytes.Equal(mem, want))
			}
		})
	}
}

// TestMutatorSilent checks the silent mutators against the steps they
// made, re-derived: silent pages never change, every other page written
// changes, pages not written do not, and X% ± 3 of the written pages are
// silent.
func TestMutatorSilent(t *testing.T) {
	for _, c := range []struct {
		name string
		pct  float64
	}{{"silent25", 25}, {"silent50", 50}, {"silent75", 75}} {
		t.Run(c.name, func(t *testing.T) {
			const steps = 3000
			m := mustMutator(t, MutatorConfig{Name: c.name, Pages: 4096, Threads: 2, Seed: 9, Steps: steps})
			mem := initRegion(m)
			before := bytes.Clone(mem)
			m.Run(mem, nil)
			m.Wait()

			written := make([]bool, m.cfg.Pages)
			for ti := range m.threads {
				th := &m.threads[ti]
				for k := range uint64(steps) {
					written[th.page(stepHash(th.seed, k))] = true
				}
			}
			var nWritten, nSilent int
			for p, w := range written {
				changed := !bytes.Equal(m.testPage(mem, p), m.testPage(before, p))
				silent := m.isSilent(p)
				switch {
				case silent && changed:
					t.Fatalf("silent page %d changed", p)
				case !w && changed:
					t.Fatalf("page %d changed but was not written", p)
				case w && !silent && !changed:
					t.Fatalf("page %d written, not silent, unchanged", p)
				}
				if w {
					nWritten++
					if silent {
						nSilent++
					}
				}
			}
			share := 100 * float64(nSilent) / float64(nWritten)
			t.Logf("%d pages written, %.1f%% fake dirty", nWritten, share)
			if share < c.pct-3 || share > c.pct+3 {
				t.Errorf("%.1f%% of %d written pages are silent, want %v%% ± 3", share, nWritten, c.pct)
			}
		})
	}
}

// TestMutatorSilentStoresWrite checks that a silent step does store (the
// compiler might drop a store of the value just loaded): on a read-only
// page it must fault. A dup8 read step on a read-only region must not.
func TestMutatorSilentStoresWrite(t *testing.T) {
	fault := func(m *Mutator, mem []byte, k uint64) (err error) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() {
			if r := recover(); r != nil {
				if e, ok := r.(interface{ Addr() uintptr }); ok {
					err = fmt.Errorf("fault at %#x", e.Addr())
					return
				}
				panic(r)
			}
		}()
		m.steps(mem, &m.threads[0], k, k+1)
		return nil
	}
	region := func(m *Mutator) []byte {
		mem, err := unix.Mmap(-1, 0, m.cfg.Pages*m.PageSize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Munmap(mem) })
		m.Init(mem)
		return mem
	}

	m := mustMutator(t, MutatorConfig{Name: "silent50", Pages: 64, Threads: 1, Seed: 1})
	mem := region(m)
	th := &m.threads[0]
	k := uint64(0)
	for !m.isSilent(th.page(stepHash(th.seed, k))) {
		k++
	}
	p := th.page(stepHash(th.seed, k))
	if err := unix.Mprotect(m.testPage(mem, p), unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	if err := fault(m, mem, k); err == nil {
		t.Errorf("silent step %d on read-only page %d did not fault: no store", k, p)
	}

	d := mustMutator(t, MutatorConfig{Name: "dup8", Pages: 64, Threads: 1, Seed: 1})
	mem = region(d)
	if err := unix.Mprotect(mem, unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	if err := fault(d, mem, 0); err != nil {
		t.Errorf("dup8 read step: %v", err)
	}
	if err := fault(d, mem, dup8WriteEvery-1); err == nil {
		t.Errorf("dup8 write step %d did not fault", dup8WriteEvery-1)
	}
}

func TestMutatorPhasesWindow(t *testing.T) {
	const n = 1000
	for _, c := range []struct {
		k    uint64
		want int
	}{{0, 50}, {phasesPeriod / 4, 325}, {phasesPeriod / 2, 600}, {3 * phasesPeriod / 4, 325}, {phasesPeriod, 50}} {
		if got := phasesWindow(n, c.k); got != c.want {
			t.Errorf("window at step %d: %d pages of %d, want %d", c.k, got, n, c.want)
		}
	}
	if got := phasesWindow(3, 0); got != 1 {
		t.Errorf("window of a 3-page share: %d, want 1", got)
	}

	// A period writes most of the first 60% of each share, and nothing
	// beyond.
	m := mustMutator(t, MutatorConfig{Name: "phases", Pages: 2000, Threads: 2, Seed: 3, Steps: phasesPeriod})
	mem := initRegion(m)
	before := bytes.Clone(mem)
	m.Run(mem, nil)
	m.Wait()
	for i := range m.threads {
		th := &m.threads[i]
		top := phasesWindow(th.n, phasesPeriod/2)
		changed := 0
		for p := th.lo; p < th.lo+th.n; p++ {
			if bytes.Equal(m.testPage(mem, p), m.testPage(before, p)) {
				continue
			}
			if p >= th.lo+top {
				t.Fatalf("page %d changed, beyond the largest window [%d, %d)", p, th.lo, th.lo+top)
			}
			changed++
		}
		if changed < top*9/10 {
			t.Errorf("%d pages of a window of %d changed in a period", changed, top)
		}
	}
}

// TestMutatorPause checks that Pause is prompt, unpaced and paced (a
// sanity bound, not a benchmark), that pacing holds the rate down, and
// Pause and Wait on a stopped mutator. Like a real run it leaves a P for
// each thread. The latency bound applies to the best of three pauses: a
// slow Pause (a batch too long, a paced sleep that ignores Pause) is slow
// every time, a host that deschedules the test for a while is not.
func TestMutatorPause(t *testing.T) {
	const (
		threads = 2
		bound   = 50 * time.Millisecond
		tries   = 3
	)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(runtime.NumCPU() + threads))
	for _, name := range []string{"zerodup", "runaway", "silent50"} {
		for _, rate := range []float64{0, 1000, 0.5} {
			t.Run(fmt.Sprintf("%s/rate=%v", name, rate), func(t *testing.T) {
				m := mustMutator(t, MutatorConfig{Name: name, Pages: 4096, Threads: threads, Seed: 1, Rate: rate})
				mem := initRegion(m)
				var (
					st      MutatorState
					from    *MutatorState
					best    = time.Hour
					running time.Duration
				)
				for range tries {
					start := time.Now()
					m.Run(mem, from)
					time.Sleep(50 * time.Millisecond)
					before := time.Now()
					st = m.Pause()
					running += before.Sub(start)
					best = min(best, time.Since(before))
					from = &st
				}
				if best > bound {
					t.Errorf("Pause took %v at best, want under %v", best, bound)
				}
				done := sumSteps(st)
				if done == 0 {
					t.Error("no step done")
				}
				if rate > 0 {
					// Each run starts a batch (at most a millisecond's
					// worth, or one step) per thread ahead of its schedule.
					limit := uint64(threads * (rate*running.Seconds() + tries*(max(rate/1000, 1)+1)))
					if done > limit {
						t.Errorf("%d steps in %v at %v steps/s per thread, want at most %d", done, running, rate, limit)
					}
				}
				t.Logf("%d steps in %v, Pause took %v at best", done, running, best)
				if again := m.Pause(); !equalSteps(again, st) {
					t.Errorf("Pause again: %v, want %v", again, st)
				}
				if w := m.Wait(); !equalSteps(w, st) {
					t.Errorf("Wait when paused: %v, want %v", w, st)
				}
			})
		}
	}
	m := mustMutator(t, MutatorConfig{Name: "runaway", Pages: 8, Threads: 2})
	if st := m.Pause(); !equalSteps(st, MutatorState{Steps: []uint64{0, 0}}) {
		t.Errorf("Pause before Run: %v", st)
	}
}

// TestMutatorWaitThenRun runs to the end, then again from the end state
// (nothing to do) and from a state past Steps.
func TestMutatorWaitThenRun(t *testing.T) {
	m := mustMutator(t, MutatorConfig{Name: "silent25", Pages: 64, Threads: 2, Steps: 100})
	mem := initRegion(m)
	m.Run(mem, nil)
	// Not waited for: Run must accept a new run once the threads are done.
	m.mu.Lock()
	done := m.cur.done
	m.mu.Unlock()
	<-done
	st := MutatorState{Steps: []uint64{100, 100}}
	before := bytes.Clone(mem)
	m.Run(mem, &st)
	if got := m.Wait(); !equalSteps(got, st) || !bytes.Equal(before, mem) {
		t.Errorf("run from the end: %v, region changed: %v", got, !bytes.Equal(before, mem))
	}
}

func TestMutatorRunPanics(t *testing.T) {
	m := mustMutator(t, MutatorConfig{Name: "runaway", Pages: 8, Threads: 2})
	mem := initRegion(m)
	for name, f := range map[string]func(){
		"short region": func() { m.Run(mem[:len(mem)-1], nil) },
		"short state":  func() { m.Run(mem, &MutatorState{Steps: []uint64{1}}) },
		"running": func() {
			m.Run(mem, nil)
			defer m.Pause()
			m.Run(mem, nil)
		},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func equalSteps(a, b MutatorState) bool {
	return fmt.Sprint(a.Steps) == fmt.Sprint(b.Steps)
}

// BenchmarkMutatorStep measures a step of each mutator, single-threaded
// (ns/step), on a region that fits in cache (1 MiB: the cost of the step
// itself) and on one that does not (64 MiB: a cache and TLB miss per step,
// as in a real run).
func BenchmarkMutatorStep(b *testing.B) {
	for _, name := range MutatorNames {
		for _, size := range []int{1 << 20, 64 << 20} {
			b.Run(fmt.Sprintf("%s/%s", name, FormatSize(int64(size))), func(b *testing.B) {
				m := mustMutator(b, MutatorConfig{Name: name, Pages: size / os.Getpagesize(), Threads: 1, Seed: 1})
				mem := initRegion(m)
				th := &m.threads[0]
				b.ReportAllocs()
				var k uint64
				for b.Loop() {
					m.steps(mem, th, k, k+mutatorBatch)
					k += mutatorBatch
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(k), "ns/step")
			})
		}
	}
}
