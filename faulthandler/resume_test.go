package faulthandler_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/internal/chaosnet"
	"github.com/pagewarp/pagewarp/internal/tlstest"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
	"github.com/pagewarp/pagewarp/pageserver"
	"github.com/pagewarp/pagewarp/wire"
)

// cutProxy is a TCP forwarder between targets and a page server that a
// test can cut: every connection at once, or one of them, with a reset or
// a plain close, and that can refuse new connections for a while (an
// unreachable source). Plain (non-TLS) traffic from the server is
// forwarded frame by frame, so that a test can cut in the middle of a
// push.
type cutProxy struct {
	t      testing.TB
	ln     net.Listener
	target string
	framed bool

	refuse   atomic.Bool
	accepted atomic.Int64
	cuts     atomic.Int64

	mu    sync.Mutex
	pairs map[*proxyPair]struct{}
	// onFrame, if set, sees the type of every frame the server sends,
	// after it is forwarded; it returns true to cut that connection now.
	onFrame func(typ wire.Type) bool
	wg      sync.WaitGroup
}

type proxyPair struct {
	client, server net.Conn
	once           sync.Once
}

func (p *proxyPair) cut(reset bool) {
	p.once.Do(func() {
		if reset {
			for _, c := range []net.Conn{p.client, p.server} {
				if tc, ok := c.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
			}
		}
		p.client.Close()
		p.server.Close()
	})
}

func newCutProxy(t testing.TB, target string, framed bool) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{t: t, ln: ln, target: target, framed: framed, pairs: make(map[*proxyPair]struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.refuse.Load() {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.accepted.Add(1)
		pair := &proxyPair{client: c, server: s}
		p.mu.Lock()
		p.pairs[pair] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			io.Copy(s, c)
			pair.cut(false)
		}()
		go func() {
			defer p.wg.Done()
			if p.framed {
				p.copyFrames(pair)
			} else {
				io.Copy(c, s)
			}
			pair.cut(false)
			p.mu.Lock()
			delete(p.pairs, pair)
			p.mu.Unlock()
		}()
	}
}

// copyFrames forwards the server's frames one by one.
func (p *cutProxy) copyFrames(pair *proxyPair) {
	buf := make([]byte, 4+wire.MaxFrameSize)
	for {
		if _, err := io.ReadFull(pair.server, buf[:4]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(buf[:4]))
		if n == 0 || n > wire.MaxFrameSize {
			return
		}
		if _, err := io.ReadFull(pair.server, buf[4:4+n]); err != nil {
			return
		}
		if _, err := pair.client.Write(buf[:4+n]); err != nil {
			return
		}
		if f := p.onFrame; f != nil && f(wire.Type(buf[4])) {
			p.cuts.Add(1)
			pair.cut(rand.IntN(2) == 0)
			return
		}
	}
}

// cutAll cuts every connection; reset picks RST over FIN.
func (p *cutProxy) cutAll(reset bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pair := range p.pairs {
		pair.cut(reset)
	}
	if len(p.pairs) > 0 {
		p.cuts.Add(1)
	}
	return len(p.pairs)
}

// cutOne cuts one connection chosen at random.
func (p *cutProxy) cutOne(r *rand.Rand) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pairs) == 0 {
		return false
	}
	k := r.IntN(len(p.pairs))
	for pair := range p.pairs {
		if k == 0 {
			pair.cut(r.IntN(2) == 0)
			p.cuts.Add(1)
			return true
		}
		k--
	}
	return false
}

func (p *cutProxy) close() {
	p.ln.Close()
	p.cutAll(true)
	p.wg.Wait()
}

// resumeRig is a page server over a slowed source (so that a migration
// lasts long enough to be cut), behind a cutProxy.
type resumeRig struct {
	mem   []byte
	srv   *pageserver.Server
	proxy *cutProxy
}

func newResumeRig(t testing.TB, pages int, delay time.Duration, opts pageserver.Options, framed bool) *resumeRig {
	t.Helper()
	ps := os.Getpagesize()
	r := &resumeRig{mem: make([]byte, pages*ps)}
	bench.Content{Seed: 123, ZeroFraction: 0.1}.Fill(r.mem, ps)
	rs, err := pageserver.NewRegionSource("resume", r.mem, ps)
	if err != nil {
		t.Fatal(err)
	}
	r.srv = pageserver.New(slowSource{Source: rs, delay: delay}, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go r.srv.Serve(ln)
	t.Cleanup(func() { r.srv.Close() })
	r.proxy = newCutProxy(t, ln.Addr().String(), framed)
	return r
}

// migrate dials through the proxy, runs threads over plans while cut
// runs, and checks that every thread returned with the source's bytes,
// Wait succeeded (with the digest checked) and the region is byte-exact.
func (r *resumeRig) migrate(t *testing.T, opts faulthandler.Options, plans [][]touch, cut func(done <-chan struct{})) faulthandler.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts.Verify = true
	h, err := faulthandler.Dial(ctx, "tcp", r.proxy.addr(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { h.Close(); h.Release() }()
	h.Start()
	done := make(chan struct{})
	cutDone := make(chan struct{})
	go func() {
		defer close(cutDone)
		cut(done)
	}()
	_, ok := runPlans(t, h.Memory(), r.mem, os.Getpagesize(), plans, time.Minute)
	werr := h.Wait(ctx)
	close(done)
	<-cutDone
	if !ok {
		t.FailNow()
	}
	if werr != nil {
		t.Fatalf("wait: %v (stats %+v)", werr, h.Stats())
	}
	if string(h.Memory()) != string(r.mem) {
		t.Fatal("region differs from the source")
	}
	st := h.Stats()
	if st.LinkLosses != st.Resumes {
		t.Errorf("%d link losses, %d resumes: every loss must end in a resume", st.LinkLosses, st.Resumes)
	}
	if ss := r.srv.Stats(); ss.Resumes < 4*st.Resumes {
		t.Errorf("server saw %d resumed connections, want at least 4 per resume (%d resumes)", ss.Resumes, st.Resumes)
	}
	if st.Resumes > 0 {
		t.Logf("%d cuts, %d resumes, time to resume mean %v, %d pages asked again; %d demand, %d background, %d pushed pages",
			r.proxy.cuts.Load(), st.Resumes, st.DownTime/time.Duration(st.Resumes), st.ReRequested, st.DemandPages, st.BackgroundPages, st.PushedPages)
	}
	return st
}

// TestResumeRandomDrops cuts the connections at random points of a
// migration while eight threads fault: all of them at once (reset or
// close) or one at random (urgent or bulk), a dozen times. Each cut must end in a resume,
// every thread must return with the source's bytes, and the region must
// end byte-exact with the digest checked.
func TestResumeRandomDrops(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	faulthandler.ReserveProcs(8)
	for _, seed := range []uint64{1, 2, 3} {
		r := newResumeRig(t, 8192, 500*time.Microsecond, pageserver.Options{Prefetch: pageserver.Prefetch{Predictor: "ppm"}}, false)
		rng := rand.New(rand.NewPCG(seed, 99))
		st := r.migrate(t, faulthandler.Options{PullChunk: 64, ResumeDeadline: 20 * time.Second}, loadPlan(8192, 8, 64, seed), func(done <-chan struct{}) {
			// A dozen cuts, some of them (depending on the seed) after the
			// last page, while the digest is computed or the goodbye said.
			for range 12 {
				select {
				case <-done:
					return
				case <-time.After(time.Duration(5+rng.IntN(40)) * time.Millisecond):
				}
				if rng.IntN(3) == 0 {
					r.proxy.cutOne(rng)
				} else {
					r.proxy.cutAll(rng.IntN(2) == 0)
				}
			}
		})
		if st.Resumes == 0 {
			t.Errorf("seed %d: no resume: the migration ended before the first cut (%v)", seed, st.Elapsed)
		}
	}
}

// TestResumeDuringPush cuts the urgent connection right after a Push
// notice, or a few frames into the pushed pages that follow it: the
// announced pages a thread may be waiting on are asked for again.
func TestResumeDuringPush(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	faulthandler.ReserveProcs(4)
	r := newResumeRig(t, 4096, 300*time.Microsecond,
		pageserver.Options{Prefetch: pageserver.Prefetch{Predictor: "nextn", Budget: 64, Fixed: true}}, true)
	var pushes, cutAfter atomic.Int64
	cutAfter.Store(-1)
	const maxCuts = 6
	r.proxy.onFrame = func(typ wire.Type) bool {
		if n := cutAfter.Load(); n >= 0 {
			if typ == wire.TypePages && cutAfter.Add(-1) < 0 {
				return true
			}
			return false
		}
		if typ == wire.TypePush && pushes.Add(1)%5 == 0 && r.proxy.cuts.Load() < maxCuts {
			cutAfter.Store(int64(pushes.Load() % 3)) // 0, 1 or 2 pushed frames through
			if cutAfter.Load() == 0 {
				cutAfter.Store(-1)
				return true
			}
		}
		return false
	}
	// Sequential runs, so that nextn's pushes are used.
	var plans [][]touch
	for i := range 4 {
		var p []touch
		for pg := i * 1024; pg < (i+1)*1024; pg++ {
			p = append(p, touch{page: uint64(pg)})
		}
		plans = append(plans, p)
	}
	st := r.migrate(t, faulthandler.Options{NoPull: true, ProbeEvery: -1, ResumeDeadline: 20 * time.Second}, plans, func(done <-chan struct{}) {
		<-done
	})
	if r.proxy.cuts.Load() == 0 || st.Resumes == 0 || st.PushNotices == 0 {
		t.Errorf("%d cuts during pushes, %d resumes, %d push notices: want each", r.proxy.cuts.Load(), st.Resumes, st.PushNotices)
	}
}

// TestResumeAfterOutage makes the source unreachable (connections cut,
// new ones refused) for half a second while threads wait: the target keeps
// redialling with backoff and resumes once the source is back.
func TestResumeAfterOutage(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	faulthandler.ReserveProcs(4)
	r := newResumeRig(t, 4096, time.Millisecond, pageserver.Options{Prefetch: pageserver.Prefetch{Predictor: "ppm"}}, false)
	const outage = 500 * time.Millisecond
	st := r.migrate(t, faulthandler.Options{ResumeDeadline: 10 * time.Second}, loadPlan(4096, 4, 16, 7), func(done <-chan struct{}) {
		time.Sleep(30 * time.Millisecond)
		r.proxy.refuse.Store(true)
		r.proxy.cutAll(true)
		time.Sleep(outage)
		r.proxy.refuse.Store(false)
	})
	if st.Resumes != 1 || st.DownTime < outage || st.DownTime > outage+2*time.Second {
		t.Errorf("%d resumes after %v down, want 1 after the %v outage (plus at most a backoff step)", st.Resumes, st.DownTime, outage)
	}
}

// TestResumeDeadline: the source goes away for good. The migration fails
// after the deadline, not before, with ErrResumeDeadline and the number
// of missing pages; the server's connections to the dead target end.
func TestResumeDeadline(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	r := newResumeRig(t, 1024, 0, pageserver.Options{}, false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const deadline = 400 * time.Millisecond
	h, err := faulthandler.Dial(ctx, "tcp", r.proxy.addr(), faulthandler.Options{NoPull: true, ResumeDeadline: deadline})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close() // no Release: nothing touches the region
	h.Start()
	r.proxy.refuse.Store(true)
	t0 := time.Now()
	r.proxy.cutAll(false)
	werr := h.Wait(ctx)
	took := time.Since(t0)
	if !errors.Is(werr, faulthandler.ErrResumeDeadline) || !errors.Is(werr, faulthandler.ErrServerGone) ||
		!strings.Contains(werr.Error(), "1024 of 1024 pages still missing") {
		t.Fatalf("wait: %v; want ErrResumeDeadline wrapping ErrServerGone, naming 1024 missing pages", werr)
	}
	if took < deadline || took > deadline+time.Second {
		t.Errorf("failed after %v, want just after the %v deadline", took, deadline)
	}
	if st := h.Stats(); !st.Failed || st.Resumes != 0 || st.LinkLosses != 1 {
		t.Errorf("stats %+v: want failed, one loss, no resume", st)
	}
	t.Logf("failed after %v: %v", took, werr)
}

// TestNoResume: with a negative ResumeDeadline a dropped connection fails
// the migration at once, as it did before resumption existed.
func TestNoResume(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	r := newResumeRig(t, 1024, 0, pageserver.Options{}, false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := faulthandler.Dial(ctx, "tcp", r.proxy.addr(), faulthandler.Options{NoPull: true, ResumeDeadline: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	h.Start()
	r.proxy.cutAll(true)
	werr := h.Wait(ctx)
	if !errors.Is(werr, faulthandler.ErrServerGone) || errors.Is(werr, faulthandler.ErrResumeDeadline) {
		t.Fatalf("wait: %v; want ErrServerGone without a resume", werr)
	}
}

// TestResumeOverTLS cuts a migration running over mutual TLS a few times: each resume
// redials with TLS (a fresh handshake per connection, the urgent one through the spinning
// reader) and the region ends byte-exact.
func TestResumeOverTLS(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	faulthandler.ReserveProcs(4)
	ca := tlstest.NewCA(t, "resume CA")
	r := newResumeRig(t, 4096, time.Millisecond, pageserver.Options{
		Prefetch: pageserver.Prefetch{Predictor: "ppm"},
		TLS:      tlstest.ServerConfig(ca, ca.Issue(t, tlstest.Loopback())),
	}, false)
	client := tlstest.ClientConfig(ca, ca.Issue(t, tlstest.ClientLeaf("target")))
	st := r.migrate(t, faulthandler.Options{TLS: client, ResumeDeadline: 10 * time.Second}, loadPlan(4096, 4, 16, 11), func(done <-chan struct{}) {
		for i := range 3 {
			select {
			case <-done:
				return
			case <-time.After(40 * time.Millisecond):
			}
			r.proxy.cutAll(i%2 == 0)
		}
	})
	if st.Resumes == 0 {
		t.Errorf("no resume: the migration ended before the first cut (%v)", st.Elapsed)
	}
}

// corruptRig serves a region behind a chaosnet proxy that flips bits in what the server sends.
func corruptRig(t *testing.T, pages int, faults []chaosnet.Fault) (mem []byte, addr string, proxy *chaosnet.Proxy) {
	t.Helper()
	ps := os.Getpagesize()
	mem = make([]byte, pages*ps)
	bench.Content{Seed: 321, ZeroFraction: 0.05}.Fill(mem, ps)
	rs, err := pageserver.NewRegionSource("corrupt", mem, ps)
	if err != nil {
		t.Fatal(err)
	}
	srv := pageserver.New(slowSource{Source: rs, delay: 200 * time.Microsecond}, pageserver.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	proxy, err = chaosnet.Listen("127.0.0.1:0", ln.Addr().String(), faults, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	return mem, proxy.Addr(), proxy
}

// startVerified dials addr with Verify and a 10 s resume deadline and starts the handler;
// both end with the test.
func startVerified(t *testing.T, addr string) (context.Context, *faulthandler.Handler) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	h, err := faulthandler.Dial(ctx, "tcp", addr, faulthandler.Options{Verify: true, ResumeDeadline: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); h.Release() })
	h.Start()
	return ctx, h
}

// TestResumeAfterCorruption flips one bit in page data and in frame headers of the urgent and
// bulk connections: each damaged frame or page is dropped (never installed), its connection
// counted as lost, the link resumed and the pages asked for again, and the region ends
// byte-exact with the digest checked.
func TestResumeAfterCorruption(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	faulthandler.ReserveProcs(4)
	const pages = 4096
	faults := []chaosnet.Fault{
		{Kind: chaosnet.Corrupt, Conn: 1, Dir: chaosnet.Down, At: 300_000, Bit: 3},    // bulk: inside page data (most bytes are)
		{Kind: chaosnet.Corrupt, Conn: 6, Dir: chaosnet.Down, At: 200_001, Bit: 6},    // a resumed bulk connection
		{Kind: chaosnet.Corrupt, Conn: 0, Dir: chaosnet.Down, At: 40_000, Bit: 0},     // urgent
		{Kind: chaosnet.Corrupt, Conn: 11, Dir: chaosnet.Down, At: 1_000_003, Bit: 7}, // later still
	}
	mem, addr, proxy := corruptRig(t, pages, faults)
	ctx, h := startVerified(t, addr)
	if _, ok := runPlans(t, h.Memory(), mem, os.Getpagesize(), loadPlan(pages, 4, 16, 5), time.Minute); !ok {
		t.FailNow()
	}
	if err := h.Wait(ctx); err != nil {
		t.Fatalf("wait: %v (stats %+v, %d faults fired)", err, h.Stats(), proxy.Fired())
	}
	if string(h.Memory()) != string(mem) {
		t.Fatal("region differs from the source")
	}
	st := h.Stats()
	if proxy.Fired() == 0 || st.Corruptions == 0 || st.Resumes < st.Corruptions {
		t.Fatalf("%d faults fired, %d corruptions, %d resumes: want every damaged connection resumed", proxy.Fired(), st.Corruptions, st.Resumes)
	}
	t.Logf("%d bits flipped, %d corruptions detected, %d resumes, %d pages asked again", proxy.Fired(), st.Corruptions, st.Resumes, st.ReRequested)
}

// TestCorruptionLimit: a path that damages every connection, resumed or not, fails the
// migration after maxCorruptResumes resumes instead of retrying forever, with the damage in
// the error.
func TestCorruptionLimit(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	faulthandler.ReserveProcs(4)
	var faults []chaosnet.Fault
	for c := range 200 {
		faults = append(faults, chaosnet.Fault{Kind: chaosnet.Corrupt, Conn: c, Dir: chaosnet.Down, At: 30_000, Bit: 2})
	}
	_, addr, _ := corruptRig(t, 4096, faults)
	ctx, h := startVerified(t, addr)
	err := h.Wait(ctx)
	st := h.Stats()
	if err == nil || !strings.Contains(err.Error(), "not resuming again") || st.Corruptions != 9 || st.Resumes != 8 {
		t.Fatalf("wait: %v, %d corruptions, %d resumes: want a failure after 8 resumes for damaged data", err, st.Corruptions, st.Resumes)
	}
	t.Logf("failed as wanted: %v", err)
}

// TestResumeAfterCorruptionUp flips a bit in what the target sends, at several places: a
// damaged request the server cannot decode is refused (malformed) and the connection closed,
// and the target resumes instead of failing. Every run ends byte-exact with the digest
// checked. A bit that lands in a length prefix leaves the server waiting for the rest of a
// frame that never ends: the target's pages come on the other connections, and if the digest
// is asked on the stuck one it goes unanswered, which is a stall (StallTimeout) and resumed;
// so only most runs resume on damage reported back, and at least one must.
func TestResumeAfterCorruptionUp(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	faulthandler.ReserveProcs(4)
	const pages = 2048
	resumed := 0
	for i, at := range []int64{70, 110, 150, 190, 230} {
		faults := []chaosnet.Fault{{Kind: chaosnet.Corrupt, Conn: i % 2, Dir: chaosnet.Up, At: at, Bit: uint(i)}}
		mem, addr, proxy := corruptRig(t, pages, faults)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		h, err := faulthandler.Dial(ctx, "tcp", addr, faulthandler.Options{Verify: true, ResumeDeadline: 10 * time.Second,
			IOTimeout: 2 * time.Second, StallTimeout: time.Second})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		h.Start()
		if _, ok := runPlans(t, h.Memory(), mem, os.Getpagesize(), loadPlan(pages, 4, 16, uint64(9+i)), time.Minute); !ok {
			t.FailNow()
		}
		werr := h.Wait(ctx)
		same := string(h.Memory()) == string(mem)
		st := h.Stats()
		h.Close()
		h.Release()
		cancel()
		if werr != nil || !same {
			t.Fatalf("flip at up byte %d of conn %d: wait %v, region byte-exact %v (stats %+v)", at, i%2, werr, same, st)
		}
		if st.Corruptions > 0 && st.Resumes > 0 {
			resumed++
		}
		t.Logf("flip at up byte %d of conn %d: %d fired, %d corruptions reported back, %d resumes", at, i%2, proxy.Fired(), st.Corruptions, st.Resumes)
	}
	if resumed == 0 {
		t.Fatal("no damaged request was reported back and resumed")
	}
}

// gateSource serves a region until every page has been read once; after that (the region
// digest of a Verify migration) its reads wait until release is closed.
type gateSource struct {
	pageserver.Source
	mu      sync.Mutex
	seen    []bool
	left    int
	release chan struct{}
}

func (g *gateSource) ReadPages(region uint32, page uint64, dst []byte) error {
	g.mu.Lock()
	n := uint64(len(dst) / g.PageSize())
	if g.left > 0 {
		for p := page; p < page+n && p < uint64(len(g.seen)); p++ {
			if !g.seen[p] {
				g.seen[p] = true
				g.left--
			}
		}
		g.mu.Unlock()
	} else {
		g.mu.Unlock()
		<-g.release
	}
	return g.Source.ReadPages(region, page, dst)
}

// TestDigestStallResumes: every page arrives, then the server does not answer the digest
// (its source hangs). The target takes the silence as a stall after StallTimeout, resumes,
// asks again on the new link, and completes once the source answers.
func TestDigestStallResumes(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	faulthandler.ReserveProcs(4)
	const pages = 1024
	ps := os.Getpagesize()
	mem := make([]byte, pages*ps)
	bench.Content{Seed: 77, ZeroFraction: 0.1}.Fill(mem, ps)
	rs, err := pageserver.NewRegionSource("gate", mem, ps)
	if err != nil {
		t.Fatal(err)
	}
	g := &gateSource{Source: rs, seen: make([]bool, pages), left: pages, release: make(chan struct{})}
	srv := pageserver.New(g, pageserver.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	var once sync.Once
	defer once.Do(func() { close(g.release) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const stall = 300 * time.Millisecond
	h, err := faulthandler.Dial(ctx, "tcp", ln.Addr().String(), faulthandler.Options{Verify: true, StallTimeout: stall, ResumeDeadline: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { h.Close(); h.Release() }()
	h.Start()
	go func() { // release the source once the target has given up on the first digest
		for ctx.Err() == nil {
			if h.Stats().Stalls > 0 {
				once.Do(func() { close(g.release) })
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	start := time.Now()
	if err := h.Wait(ctx); err != nil {
		t.Fatalf("wait: %v (stats %+v)", err, h.Stats())
	}
	st := h.Stats()
	if string(h.Memory()) != string(mem) || st.Stalls == 0 || st.Resumes == 0 || time.Since(start) < stall {
		t.Fatalf("stats %+v after %v: want a byte-exact region after a digest stall and a resume", st, time.Since(start))
	}
	t.Logf("digest stalled %d times, %d resumes, done in %v", st.Stalls, st.Resumes, time.Since(start).Round(time.Millisecond))
}
