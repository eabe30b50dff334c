package faulthandler_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/internal/tlstest"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
	"github.com/pagewarp/pagewarp/pageserver"
)

// The load tests fault from many threads at once, on one handler and on
// several handlers served by one page server, and check that no wake-up is
// lost: every touch returns, within a bound, with the source's bytes.

// touch is one planned access: a page, and whether the thread owns it (no
// other thread touches it, so with NoPull its first touch is a fault that
// goes to the source) or shares it with every other thread.
type touch struct {
	page   uint64
	shared bool
}

// loadPlan gives each of threads a plan over pages: its own share of the
// pages after the first hot ones, in random order, interleaved at random
// with all hot pages (shared by every thread) in an order of its own. The
// plans together touch every page.
func loadPlan(pages, threads, hot int, seed uint64) [][]touch {
	plans := make([][]touch, threads)
	own := pages - hot
	for i := range threads {
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		var p []touch
		for pg := hot + own*i/threads; pg < hot+own*(i+1)/threads; pg++ {
			p = append(p, touch{page: uint64(pg)})
		}
		for pg := range hot {
			p = append(p, touch{page: uint64(pg), shared: true})
		}
		r.Shuffle(len(p), func(a, b int) { p[a], p[b] = p[b], p[a] })
		plans[i] = p
	}
	return plans
}

// loadResult is what a run of plans measured.
type loadResult struct {
	own, shared []time.Duration // latency of each touch, by kind
	elapsed     time.Duration
}

func (r *loadResult) add(o loadResult) {
	r.own = append(r.own, o.own...)
	r.shared = append(r.shared, o.shared...)
	r.elapsed = max(r.elapsed, o.elapsed)
}

// quantile returns the q quantile of ds (sorted in place).
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}

// runPlans runs one locked OS thread per plan over mem, each touch a load
// of one word checked against want. It fails t if a touch reads a wrong
// byte, or if the threads have not all returned within timeout: a lost
// wake-up. On that failure it returns false and the caller must not unmap
// mem (the blocked threads would crash the test binary).
func runPlans(t testing.TB, mem, want []byte, ps int, plans [][]touch, timeout time.Duration) (loadResult, bool) {
	t.Helper()
	type threadResult struct {
		own, shared []time.Duration
		bad         string
	}
	results := make(chan threadResult, len(plans))
	var returned sync.WaitGroup
	progress := make([]atomic.Int64, len(plans)) // touches returned, per thread
	start := time.Now()
	for i, plan := range plans {
		returned.Add(1)
		go func() {
			defer returned.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var res threadResult
			for n, tc := range plan {
				// A different word of the page each time, so that a
				// partly installed page would be caught too.
				off := int(tc.page)*ps + (n*8)%ps&^7
				t0 := time.Now()
				got := loadWord(mem, off)
				d := time.Since(t0)
				if w := loadWord(want, off); got != w && res.bad == "" {
					res.bad = fmt.Sprintf("page %d offset %d: read %#x, want %#x", tc.page, off%ps, got, w)
				}
				if tc.shared {
					res.shared = append(res.shared, d)
				} else {
					res.own = append(res.own, d)
				}
				progress[i].Add(1)
			}
			results <- res
		}()
	}
	done := make(chan struct{})
	go func() { returned.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		var stuck []string
		for i := range progress {
			if n := int(progress[i].Load()); n < len(plans[i]) {
				stuck = append(stuck, fmt.Sprintf("thread %d at touch %d of %d (page %d)", i, n, len(plans[i]), plans[i][n].page))
			}
		}
		t.Errorf("lost wake-up: after %v, %d of %d threads still blocked: %v", timeout, len(stuck), len(plans), stuck)
		return loadResult{}, false
	}
	res := loadResult{elapsed: time.Since(start)}
	for range plans {
		r := <-results
		if r.bad != "" {
			t.Errorf("wrong content: %s", r.bad)
		}
		res.own = append(res.own, r.own...)
		res.shared = append(res.shared, r.shared...)
	}
	return res, true
}

//go:noinline
func loadWord(b []byte, off int) uint64 {
	return uint64(b[off]) | uint64(b[off+1])<<8 | uint64(b[off+2])<<16 | uint64(b[off+3])<<24 |
		uint64(b[off+4])<<32 | uint64(b[off+5])<<40 | uint64(b[off+6])<<48 | uint64(b[off+7])<<56
}

// loadServer serves regions (one per entry of mems) on loopback TCP.
func loadServer(t testing.TB, mems [][]byte, opts pageserver.Options) (*pageserver.Server, string) {
	t.Helper()
	ps := os.Getpagesize()
	var regions []pageserver.MemRegion
	for i, m := range mems {
		regions = append(regions, pageserver.MemRegion{ID: uint32(i), Name: fmt.Sprintf("r%d", i), Mem: m})
	}
	src, err := pageserver.NewRegionsSource(regions, ps)
	if err != nil {
		t.Fatal(err)
	}
	srv := pageserver.New(src, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return srv, ln.Addr().String()
}

// loadScenario is one load run: migrations handlers dialled to one server,
// each with threads touching its region.
type loadScenario struct {
	migrations int
	threads    int // per migration
	pages      int // per region
	hot        int // pages every thread of a migration touches
	noPull     bool
	prefetch   bool // the server pushes ppm's predictions
	tls        bool
	timeout    time.Duration // bound on the touches and on Wait
}

// run runs s once and returns the touch latencies; it fails t on a lost
// wake-up, a wrong byte or a migration that does not complete.
func (s loadScenario) run(t testing.TB, seed uint64) loadResult {
	t.Helper()
	ps := os.Getpagesize()
	mems := make([][]byte, s.migrations)
	for i := range mems {
		mems[i] = make([]byte, s.pages*ps)
		bench.Content{Seed: seed + uint64(i), ZeroFraction: 0.1}.Fill(mems[i], ps)
	}
	var sopts pageserver.Options
	var copts *tls.Config
	if s.tls {
		ca := tlstest.NewCA(t, "load CA")
		sopts.TLS = tlstest.ServerConfig(ca, ca.Issue(t, tlstest.Loopback()))
		copts = tlstest.ClientConfig(ca, ca.Issue(t, tlstest.ClientLeaf("load")))
	}
	if s.prefetch {
		sopts.Prefetch = pageserver.Prefetch{Predictor: "ppm"}
	}
	srv, addr := loadServer(t, mems, sopts)
	defer runtime.GOMAXPROCS(faulthandler.ReserveProcs(s.migrations * s.threads))

	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	handlers := make([]*faulthandler.Handler, s.migrations)
	for i := range handlers {
		id := uint32(i)
		h, err := faulthandler.Dial(ctx, "tcp", addr, faulthandler.Options{Region: &id, NoPull: s.noPull, Verify: true, TLS: copts})
		if err != nil {
			t.Fatal(err)
		}
		handlers[i] = h
	}
	for _, h := range handlers {
		h.Start()
	}
	var (
		mu    sync.Mutex
		total loadResult
		ok    = true
		wg    sync.WaitGroup
	)
	for i, h := range handlers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			plans := loadPlan(s.pages, s.threads, s.hot, seed+uint64(i))
			res, fine := runPlans(t, h.Memory(), mems[i], ps, plans, s.timeout)
			mu.Lock()
			total.add(res)
			ok = ok && fine
			mu.Unlock()
		}()
	}
	wg.Wait()
	if !ok {
		// Threads are still blocked in h's region: leave it mapped.
		t.FailNow()
	}
	for i, h := range handlers {
		if err := h.Wait(ctx); err != nil {
			t.Fatalf("migration %d: %v (stats %+v)", i, err, h.Stats())
		}
		st := h.Stats()
		if !bytes.Equal(h.Memory(), mems[i]) {
			t.Fatalf("migration %d: region differs from the source after completion", i)
		}
		if st.DemandRequests > st.Pages {
			t.Errorf("migration %d: %d demand requests for %d pages: a page was requested twice", i, st.DemandRequests, st.Pages)
		}
		if s.noPull && st.DemandPages+st.PushedPages+st.ZeroPages < st.Pages {
			t.Errorf("migration %d without pull: %d demand + %d pushed + %d zero pages, want all %d", i, st.DemandPages, st.PushedPages, st.ZeroPages, st.Pages)
		}
		h.Close()
		h.Release()
	}
	if s.tls {
		if st := srv.Stats(); st.TLSRefused != 0 {
			t.Errorf("%d TLS connections refused", st.TLSRefused)
		}
	}
	return total
}

func logLatency(t testing.TB, what string, r loadResult) {
	t.Logf("%s: %d own-page touches p50 %v p99 %v p99.9 %v max %v; %d shared-page touches p99 %v; %v",
		what, len(r.own), quantile(r.own, 0.5), quantile(r.own, 0.99), quantile(r.own, 0.999), quantile(r.own, 1),
		len(r.shared), quantile(r.shared, 0.99), r.elapsed)
}

// TestLoad64Threads has 64 threads fault at once on one handler: each on
// pages of its own and on 256 pages all of them touch, in orders of their
// own. Every touch must return with the source's bytes within the bound.
func TestLoad64Threads(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	for _, sc := range []struct {
		name string
		s    loadScenario
	}{
		{"demand only", loadScenario{migrations: 1, threads: 64, pages: 8192, hot: 256, noPull: true}},
		{"with pull and push", loadScenario{migrations: 1, threads: 64, pages: 8192, hot: 256, prefetch: true}},
		{"tls", loadScenario{migrations: 1, threads: 64, pages: 4096, hot: 256, noPull: true, tls: true}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			sc.s.timeout = 60 * time.Second
			res := sc.s.run(t, 1)
			if want := sc.s.pages - sc.s.hot; len(res.own) != want || len(res.shared) != 64*sc.s.hot {
				t.Fatalf("%d own and %d shared touches returned, want %d and %d", len(res.own), len(res.shared), want, 64*sc.s.hot)
			}
			logLatency(t, sc.name, res)
		})
	}
}

// TestLoad8Migrations runs 8 migrations at once against one page server,
// each of its own region with 4 threads touching it while the background
// pull and ppm's pushes run, and checks every region byte for byte.
func TestLoad8Migrations(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	for _, sc := range []struct {
		name string
		s    loadScenario
	}{
		{"with pull and push", loadScenario{migrations: 8, threads: 4, pages: 4096, hot: 64, prefetch: true}},
		{"demand only", loadScenario{migrations: 8, threads: 4, pages: 2048, hot: 64, noPull: true}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			sc.s.timeout = 120 * time.Second
			res := sc.s.run(t, 100)
			if want := 8 * (sc.s.pages - sc.s.hot); len(res.own) != want {
				t.Fatalf("%d own-page touches returned, want %d", len(res.own), want)
			}
			logLatency(t, sc.name, res)
		})
	}
}

// BenchmarkLoad measures fault latency under load: 64 threads on one
// handler, and 8 migrations of 8 threads each against one page server (64
// threads in all), every own-page touch a fault served by the source (no
// pull). It reports the quantiles of those faults over all iterations.
func BenchmarkLoad(b *testing.B) {
	uffdtest.SkipIfUnavailable(b)
	for _, bc := range []struct {
		name string
		s    loadScenario
	}{
		{"64threads", loadScenario{migrations: 1, threads: 64, pages: 16384, hot: 256, noPull: true}},
		{"64threads-tls", loadScenario{migrations: 1, threads: 64, pages: 16384, hot: 256, noPull: true, tls: true}},
		{"8migrations", loadScenario{migrations: 8, threads: 8, pages: 2048, hot: 64, noPull: true}},
		{"8migrations-tls", loadScenario{migrations: 8, threads: 8, pages: 2048, hot: 64, noPull: true, tls: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bc.s.timeout = 120 * time.Second
			var all loadResult
			seed := uint64(1)
			for b.Loop() {
				all.add(bc.s.run(b, seed))
				seed++
			}
			faults := float64(len(all.own))
			b.ReportMetric(faults/float64(b.N), "faults/op")
			b.ReportMetric(float64(quantile(all.own, 0.5).Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(quantile(all.own, 0.99).Nanoseconds())/1e3, "p99-µs")
			b.ReportMetric(float64(quantile(all.own, 0.999).Nanoseconds())/1e3, "p999-µs")
			b.ReportMetric(float64(quantile(all.shared, 0.99).Nanoseconds())/1e3, "shared-p99-µs")
		})
	}
}
