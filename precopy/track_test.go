package precopy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var trackPageSize = os.Getpagesize()

// trackMmap maps size bytes of anonymous private memory, unmapped at cleanup
// (after the tracker's cleanup, registered later, has closed it).
func trackMmap(t testing.TB, size int) []byte {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

// trackAllModes runs f for every tracking mode, skipping (with the reason)
// only a mode this kernel lacks.
func trackAllModes(t *testing.T, f func(t *testing.T, mode TrackMode)) {
	for _, mode := range []TrackMode{TrackWPAsync, TrackWPSync, TrackRehash} {
		t.Run(string(mode), func(t *testing.T) {
			if err := probeKernel().missing(mode); err != nil {
				t.Skipf("kernel lacks %s: %v", mode, err)
			}
			f(t, mode)
		})
	}
}

func newTestTracker(t testing.TB, mode TrackMode, mem []byte) Tracker {
	t.Helper()
	tr, err := NewTracker(mode, mem, trackPageSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if mode != TrackAuto && tr.Mode() != mode {
		t.Fatalf("mode %q, want %q", tr.Mode(), mode)
	}
	return tr
}

// storeWord stores v at the word at off. Being out of line and atomic, it
// is never dropped by the compiler even when v is already there (a silent
// store).
//
//go:noinline
func storeWord(mem []byte, off int, v uint64) { atomic.StoreUint64(trackWord(mem, off), v) }

func loadWord(mem []byte, off int) uint64 { return atomic.LoadUint64(trackWord(mem, off)) }

// dirtyPages lists the pages set in d, checking Count.
func dirtyPages(t *testing.T, d *Dirty, pages int) []uint64 {
	t.Helper()
	if len(d.Bits) != (pages+63)/64 {
		t.Errorf("len(Bits) = %d, want %d", len(d.Bits), (pages+63)/64)
	}
	var ps []uint64
	for p := range uint64(len(d.Bits) * 64) {
		if d.Has(p) {
			ps = append(ps, p)
		}
	}
	if d.Count != len(ps) {
		t.Errorf("Count = %d, but %d bits are set", d.Count, len(ps))
	}
	return ps
}

// checkDirty asserts that d holds exactly want (any order) and, for wp-sync,
// that Order lists the same pages once each (in exactly that order when
// ordered is set).
func checkDirty(t *testing.T, mode TrackMode, d *Dirty, pages int, want []uint64, ordered bool) {
	t.Helper()
	sorted := slices.Clone(want)
	slices.Sort(sorted)
	got := dirtyPages(t, d, pages)
	if !slices.Equal(got, sorted) {
		t.Errorf("dirty pages %s", diffPages(got, sorted))
	}
	if mode != TrackWPSync {
		if d.Order != nil {
			t.Errorf("Order = %v, want nil outside wp-sync", d.Order)
		}
		return
	}
	if ordered {
		if !slices.Equal(d.Order, want) {
			t.Errorf("Order = %v, want %v", d.Order, want)
		}
		return
	}
	o := slices.Clone(d.Order)
	slices.Sort(o)
	if !slices.Equal(o, sorted) {
		t.Errorf("Order holds %s (len %d)", diffPages(o, sorted), len(d.Order))
	}
}

// diffPages describes how got differs from want (both sorted).
func diffPages(got, want []uint64) string {
	var extra, lack []uint64
	for _, p := range got {
		if _, ok := slices.BinarySearch(want, p); !ok {
			extra = append(extra, p)
		}
	}
	for _, p := range want {
		if _, ok := slices.BinarySearch(got, p); !ok {
			lack = append(lack, p)
		}
	}
	if len(extra) == 0 && len(lack) == 0 {
		if len(got) != len(want) {
			return fmt.Sprintf("duplicates (%d entries for %d pages)", len(got), len(want))
		}
		return "as wanted"
	}
	return fmt.Sprintf("differ: %d not written %v, %d missing %v", len(extra), head(extra), len(lack), head(lack))
}

func head(ps []uint64) []uint64 { return ps[:min(len(ps), 20)] }

func TestTrackDirtyBits(t *testing.T) {
	var d Dirty
	d.reset(130)
	d.addRange(3, 70)  // 3..72
	d.addRange(60, 20) // 60..79, 13 new
	d.addRange(129, 1) // last page
	d.Add(5)           // already set
	d.Add(100)         // new
	if d.Count != 70+7+1+1 {
		t.Errorf("Count = %d, want %d", d.Count, 70+7+1+1)
	}
	for p, want := range map[uint64]bool{2: false, 3: true, 63: true, 64: true, 79: true, 80: false, 100: true, 129: true, 128: false, 1000: false} {
		if d.Has(p) != want {
			t.Errorf("Has(%d) = %v, want %v", p, !want, want)
		}
	}
	d.Add(200) // grows
	if !d.Has(200) || d.Count != 80 || len(d.Bits) != 4 {
		t.Errorf("after Add(200): Has %v, Count %d, %d words", d.Has(200), d.Count, len(d.Bits))
	}
	d.reset(64)
	if len(d.Bits) != 1 || d.Bits[0] != 0 || d.Count != 0 {
		t.Errorf("reset: %v, Count %d", d.Bits, d.Count)
	}

	b := []uint64{0b1110, 0, 1 << 63, ^uint64(0), 1}
	pages := 5*64 - 10
	var runs [][2]int
	for p := nextSet(b, 0); p < pages; {
		e := nextClear(b, p+1, pages)
		runs = append(runs, [2]int{p, e})
		p = nextSet(b, e)
	}
	want := [][2]int{{1, 4}, {191, 257}} // a run crosses two word boundaries
	if !slices.Equal(runs, want) {
		t.Errorf("runs %v, want %v", runs, want)
	}
}

func TestTrackAvailableModes(t *testing.T) {
	modes := AvailableModes()
	if len(modes) == 0 || modes[len(modes)-1] != TrackRehash {
		t.Fatalf("AvailableModes() = %v, want rehash last", modes)
	}
	t.Logf("available: %v", modes)
	mem := trackMmap(t, 16*trackPageSize)
	tr := newTestTracker(t, TrackAuto, mem)
	if got := tr.Mode(); got != modes[0] {
		t.Errorf("TrackAuto picked %q, want %q", got, modes[0])
	}
	k := probeKernel()
	for _, m := range []TrackMode{TrackWPAsync, TrackWPSync} {
		if err := k.missing(m); err != nil {
			// Only skip-worthy if the kernel truly lacks it: a kernel with
			// userfaultfd and PAGEMAP_SCAN that fails the probe is a bug.
			if k.uffdErr == nil && k.features&wpAsyncFeatures == wpAsyncFeatures && k.pagemapErr == nil {
				t.Errorf("%s unavailable on a kernel with every feature: %v", m, err)
			}
			if _, nerr := NewTracker(m, mem, trackPageSize); nerr == nil {
				t.Errorf("NewTracker(%s) succeeded though the probe says %v", m, err)
			} else {
				t.Logf("%s: %v", m, nerr)
			}
		}
	}
	if _, err := NewTracker("soft-dirty", mem, trackPageSize); err == nil || !strings.Contains(err.Error(), "unknown track mode") {
		t.Errorf("unknown mode: %v", err)
	}
	if _, err := NewTracker(TrackRehash, mem[:trackPageSize+1], trackPageSize); err == nil {
		t.Error("NewTracker accepted a region that is not a whole number of pages")
	}
	if _, err := NewTracker(TrackRehash, mem[1:trackPageSize+1], trackPageSize); err == nil {
		t.Error("NewTracker accepted an unaligned region")
	}
	if _, err := NewTracker(TrackRehash, mem, 3000); err == nil {
		t.Error("NewTracker accepted a page size of 3000")
	}
}

// TestTrackKnownWrites writes a known set of pages and checks that each
// Collect reports exactly what was written.
// With thp, the region is backed by transparent huge pages where the
// kernel can: a write-protected huge page must be split on its first write,
// not reported whole.
func TestTrackKnownWrites(t *testing.T) {
	trackAllModes(t, func(t *testing.T, mode TrackMode) {
		t.Run("small", func(t *testing.T) { trackKnownWrites(t, mode, false) })
		t.Run("thp", func(t *testing.T) { trackKnownWrites(t, mode, true) })
	})
}

func trackKnownWrites(t *testing.T, mode TrackMode, thp bool) {
	{
		const writers = 4
		const size = 16 << 20
		pages := size / trackPageSize
		mem := trackMmap(t, size)
		if thp {
			if err := unix.Madvise(mem, unix.MADV_HUGEPAGE); err != nil {
				t.Skipf("no transparent huge pages: madvise: %v", err)
			}
		}
		for p := range pages / 4 { // pages [0, pages/4) hold data
			storeWord(mem, p*trackPageSize, uint64(p)+1)
		}
		for p := pages / 4; p < pages/4+100; p++ { // read only: the zero page
			loadWord(mem, p*trackPageSize+64)
		}
		if thp {
			t.Logf("AnonHugePages of the region: %s", anonHugePages(trackAddr(mem)))
		}
		tr := newTestTracker(t, mode, mem)
		if a, ok := tr.(*wpAsyncTracker); ok {
			a.vec = a.vec[:3] // make Collect resume at walk_end many times
		}
		if err := tr.Collect(&Dirty{}); err == nil {
			t.Error("Collect before Start succeeded")
		}
		if err := tr.Start(); err != nil {
			t.Fatal(err)
		}

		// The write set: page value changes, silent stores (same value) on
		// data pages and on never-touched pages (storing 0), read-only
		// pages, a run crossing words, the first and the last page.
		type write struct {
			page   uint64
			silent bool
		}
		var ws []write
		add := func(p int, silent bool) { ws = append(ws, write{uint64(p), silent}) }
		add(0, false)
		add(pages-1, false)
		for p := 10; p < 400; p += 7 {
			add(p, p%2 == 0) // data pages, every other one a silent store
		}
		for p := 500; p < 700; p++ {
			add(p, false) // a run of 200 pages
		}
		add(pages/4+3, false) // zero-page mapped
		add(pages/4+4, true)  // zero-page mapped, silent store of 0
		for p := pages / 2; p < pages-1; p += 13 {
			add(p, p%3 == 0) // never touched; every third a silent store of 0
		}
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i, x := range ws {
					if i%writers != w {
						continue
					}
					off := int(x.page)*trackPageSize + 8*(i%512)
					v := loadWord(mem, off)
					if !x.silent {
						v = v*31 + 1 // never v
					}
					storeWord(mem, off, v)
				}
			})
		}
		wg.Wait()
		var want []uint64
		for _, x := range ws {
			if mode != TrackRehash || !x.silent {
				want = append(want, x.page)
			}
		}
		var d Dirty
		if err := tr.Collect(&d); err != nil {
			t.Fatal(err)
		}
		checkDirty(t, mode, &d, pages, want, false)
		t.Logf("first collect: %d pages (of %d writes)", d.Count, len(ws))

		// No writes: nothing.
		if err := tr.Collect(&d); err != nil {
			t.Fatal(err)
		}
		checkDirty(t, mode, &d, pages, nil, false)

		// Sequential writes from one goroutine: wp-sync gives their order.
		seq := []uint64{77, 3, 4000, 5, 1500, 6, 78, 2, uint64(pages - 1), 1501}
		for _, p := range seq {
			storeWord(mem, int(p)*trackPageSize+128, uint64(time.Now().UnixNano()))
		}
		storeWord(mem, 3*trackPageSize+256, 9) // a second write to page 3
		if err := tr.Collect(&d); err != nil {
			t.Fatal(err)
		}
		checkDirty(t, mode, &d, pages, seq, true)

		// Start again re-arms from scratch: writes before it are forgotten.
		storeWord(mem, 900*trackPageSize, 1)
		if err := tr.Start(); err != nil {
			t.Fatal(err)
		}
		storeWord(mem, 901*trackPageSize, 1)
		if err := tr.Collect(&d); err != nil {
			t.Fatal(err)
		}
		checkDirty(t, mode, &d, pages, []uint64{901}, true)

		// Close leaves every page writable, never-touched ones included.
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
		if err := tr.Close(); err != nil {
			t.Errorf("second close: %v", err)
		}
		if err := tr.Collect(&d); !errors.Is(err, ErrTrackerClosed) {
			t.Errorf("collect after close: %v, want ErrTrackerClosed", err)
		}
		writeAllWithin(t, mem, 10*time.Second)
	}
}

// anonHugePages returns the AnonHugePages line of /proc/self/smaps for the
// mapping that starts at addr, or why not.
func anonHugePages(addr uintptr) string {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return err.Error()
	}
	in := false
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, fmt.Sprintf("%x-", addr)) {
			in = true
		} else if in && strings.HasPrefix(line, "AnonHugePages:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "AnonHugePages:"))
		}
	}
	return "mapping not found"
}

// writeAllWithin writes every page from another goroutine and fails if that
// takes longer than limit (a writer stuck in a fault nobody handles).
func writeAllWithin(t *testing.T, mem []byte, limit time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for off := 0; off < len(mem); off += trackPageSize {
			storeWord(mem, off+8, uint64(off)+1)
		}
	}()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("writing the region after Close did not finish in %v", limit)
	}
	for off := 0; off < len(mem); off += trackPageSize {
		if v := loadWord(mem, off+8); v != uint64(off)+1 {
			t.Fatalf("page %d reads %d after the write", off/trackPageSize, v)
		}
	}
}

// TestTrackNoLostWrite hammers the region from writers while Collect runs
// in a loop, and checks that no write is lost.
//
// Each writer owns the pages p with p%writers == its index and stores
// increasing numbers into their first word, so a page's word only grows
// and any write after a read of it shows as a change. Snapshot A_n is read
// right after Collect n returns (A_0 after Start), B_n right before Collect
// n is called. Two properties follow from the Tracker contract:
//
//   - a page that changed between A_{n-1} and B_n was written after Collect
//     n-1 returned and before Collect n began: it is in D_n;
//   - a page that changed between A_{n-1} and A_n was written after Collect
//     n-1 returned and before A_n was read: during Collect n or just after
//     it, so it is in D_n or D_{n+1}.
func TestTrackNoLostWrite(t *testing.T) {
	trackAllModes(t, func(t *testing.T, mode TrackMode) {
		writers := 3
		const size = 16 << 20
		pages := size / trackPageSize
		mem := trackMmap(t, size)
		for p := 0; p < pages; p += 2 {
			storeWord(mem, p*trackPageSize, 1)
		}
		tr := newTestTracker(t, mode, mem)
		if err := tr.Start(); err != nil {
			t.Fatal(err)
		}
		snapshot := func(s []uint64) {
			for p := range s {
				s[p] = loadWord(mem, p*trackPageSize)
			}
		}
		var stop atomic.Bool
		var writes atomic.Int64
		var wg sync.WaitGroup
		defer func() {
			// Even on failure: stop the writers before the region is
			// unmapped, closing first so that none stays in a fault.
			stop.Store(true)
			tr.Close()
			wg.Wait()
		}()
		for w := range writers {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), 7))
				n := uint64(1)
				own := pages / writers
				for !stop.Load() {
					// Bursts on a few pages, then a spread of pages.
					k := 1 + r.IntN(16)
					for range k {
						p := (r.IntN(own))*writers + w
						if r.IntN(4) == 0 {
							p = (r.IntN(64))*writers + w // a hot set
						}
						n++
						storeWord(mem, p*trackPageSize, n)
						writes.Add(1)
					}
					if r.IntN(8) == 0 {
						runtime.Gosched()
					}
				}
			})
		}
		rounds := 60
		if testing.Short() {
			rounds = 15
		}
		prevA := make([]uint64, pages)
		a := make([]uint64, pages)
		b := make([]uint64, pages)
		snapshot(prevA)
		var prevD, d Dirty
		var prevChanged []uint64 // changed between A_{n-2} and A_{n-1} but not in D_{n-1}
		total := 0
		for n := 1; n <= rounds; n++ {
			time.Sleep(time.Duration(n%4) * time.Millisecond)
			snapshot(b)
			if err := tr.Collect(&d); err != nil {
				t.Fatal(err)
			}
			snapshot(a)
			total += d.Count
			for p := range pages {
				if b[p] != prevA[p] && !d.Has(uint64(p)) {
					t.Errorf("round %d: page %d changed (%d -> %d) before Collect began but was not reported", n, p, prevA[p], b[p])
				}
			}
			// Pages that changed during Collect n-1 or after it must be in D_{n-1} or D_n.
			for _, p := range prevChanged {
				if !d.Has(p) {
					t.Errorf("round %d: page %d changed around Collect %d, reported by neither it nor this one", n, p, n-1)
				}
			}
			prevChanged = prevChanged[:0]
			for p := range pages {
				if a[p] != prevA[p] && !d.Has(uint64(p)) {
					prevChanged = append(prevChanged, uint64(p))
				}
			}
			if mode == TrackWPSync {
				o := slices.Clone(d.Order)
				slices.Sort(o)
				if len(o) != d.Count || len(slices.Compact(o)) != d.Count {
					t.Errorf("round %d: Order has %d entries for %d pages", n, len(d.Order), d.Count)
				}
				for _, p := range d.Order {
					if !d.Has(p) {
						t.Errorf("round %d: Order has page %d not in Bits", n, p)
					}
				}
			}
			if t.Failed() {
				break
			}
			prevA, a = a, prevA
			prevD, d = d, prevD
		}
		stop.Store(true)
		wg.Wait()
		// The last writes, after the last Collect, show in one more.
		snapshot(b)
		if err := tr.Collect(&d); err != nil {
			t.Fatal(err)
		}
		for p := range pages {
			if b[p] != prevA[p] && !d.Has(uint64(p)) {
				t.Errorf("final: page %d changed but was not reported", p)
			}
		}
		for _, p := range prevChanged {
			if !d.Has(p) {
				t.Errorf("final: page %d changed around the last Collect, never reported", p)
			}
		}
		t.Logf("%d writes, %d rounds, %d pages reported in all", writes.Load(), rounds, total)
	})
}

// TestTrackWPSyncUnderGC has writers fault inside copy (runtime.memmove,
// which the runtime cannot preempt asynchronously) while GC cycles stop the
// world and Collect runs, with GOMAXPROCS left alone. A handler that needed
// a P would deadlock with the stop-the-world (the whole process hangs, so
// the test binary's -timeout cannot fire either: run it under timeout(1)).
func TestTrackWPSyncUnderGC(t *testing.T) {
	if err := probeKernel().missing(TrackWPSync); err != nil {
		t.Skipf("kernel lacks wp-sync: %v", err)
	}
	const size = 16 << 20
	pages := size / trackPageSize
	mem := trackMmap(t, size)
	tr := newTestTracker(t, TrackWPSync, mem)
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	defer func() {
		stop.Store(true)
		tr.Close()
		wg.Wait()
	}()
	for w := range 2 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			src := make([]byte, trackPageSize)
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for !stop.Load() {
				src[0]++
				p := r.IntN(pages)
				copy(mem[p*trackPageSize:(p+1)*trackPageSize], src)
			}
		})
	}
	wg.Go(func() {
		for !stop.Load() {
			runtime.GC()
		}
	})
	var d Dirty
	deadline := time.Now().Add(time.Second)
	if testing.Short() {
		deadline = time.Now().Add(200 * time.Millisecond)
	}
	n, total := 0, 0
	for time.Now().Before(deadline) {
		if err := tr.Collect(&d); err != nil {
			t.Fatal(err)
		}
		n++
		total += d.Count
		time.Sleep(time.Millisecond)
	}
	t.Logf("%d collects, %d pages reported", n, total)
}

// TestTrackCloseWakesBlockedWriter stops the wp-sync handler so that a
// writer stays blocked in its fault, and checks that Close releases it.
func TestTrackCloseWakesBlockedWriter(t *testing.T) {
	if err := probeKernel().missing(TrackWPSync); err != nil {
		t.Skipf("kernel lacks wp-sync: %v", err)
	}
	mem := trackMmap(t, 64*trackPageSize)
	tr, err := NewTracker(TrackWPSync, mem, trackPageSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	s := tr.(*wpSyncTracker)
	var stop [8]byte
	binary.NativeEndian.PutUint64(stop[:], wpReqStop)
	if err := writeFull(s.reqW, stop[:]); err != nil { // the handler returns without reading faults
		t.Fatal(err)
	}
	s.wg.Wait()
	done := make(chan struct{})
	go func() {
		plainStore(mem, 5*trackPageSize, 42)
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("write to a protected page completed with no handler")
	case <-time.After(100 * time.Millisecond):
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writer still blocked 10s after Close")
	}
	writeAllWithin(t, mem, 10*time.Second)
}

// TestTrackWPAsyncNeedsRegistration checks the wp-async scan's guard: a scan
// of memory that is not registered fails rather than reporting nothing.
func TestTrackWPAsyncNeedsRegistration(t *testing.T) {
	if err := probeKernel().missing(TrackWPAsync); err != nil {
		t.Skipf("kernel lacks wp-async: %v", err)
	}
	mem := trackMmap(t, 16*trackPageSize)
	tr, err := NewTracker(TrackWPAsync, mem, trackPageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close() // fails: the region is not registered any more
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	a := tr.(*wpAsyncTracker)
	// Unregister behind the tracker's back.
	if err := a.u.Unregister(a.base, a.length()); err != nil {
		t.Fatal(err)
	}
	if err := tr.Collect(&Dirty{}); !errors.Is(err, unix.EPERM) {
		t.Errorf("collect on an unregistered region: %v, want EPERM", err)
	}
}

// BenchmarkCollect measures one Collect over 1 GiB of populated memory of
// which 1% of the pages (random, different each time) were written since the
// previous Collect. The writes are outside the timed part.
func BenchmarkCollect(b *testing.B) {
	const size = 1 << 30
	pages := size / trackPageSize
	dirty := pages / 100
	for _, mode := range []TrackMode{TrackWPAsync, TrackWPSync, TrackRehash} {
		b.Run(string(mode), func(b *testing.B) {
			if err := probeKernel().missing(mode); err != nil {
				b.Skipf("kernel lacks %s: %v", mode, err)
			}
			mem := trackMmap(b, size)
			for off := 0; off < size; off += trackPageSize {
				mem[off] = 1
			}
			tr := newTestTracker(b, mode, mem)
			if err := tr.Start(); err != nil {
				b.Fatal(err)
			}
			r := rand.New(rand.NewPCG(1, 2))
			var d Dirty
			var n uint64
			b.SetBytes(size)
			b.ReportAllocs()
			iters := 0
			for b.Loop() {
				b.StopTimer()
				for range dirty {
					n++
					storeWord(mem, r.IntN(pages)*trackPageSize, n)
				}
				b.StartTimer()
				if err := tr.Collect(&d); err != nil {
					b.Fatal(err)
				}
				iters++
			}
			if d.Count < dirty*9/10 || d.Count > dirty {
				b.Fatalf("%d pages dirty, want about %d", d.Count, dirty)
			}
			per := b.Elapsed().Seconds() / float64(iters)
			b.ReportMetric(per*1e9, "ns/collect")
			b.ReportMetric(float64(size)/per/1e9, "GB/s")
		})
	}
}
