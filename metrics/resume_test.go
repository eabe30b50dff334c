package metrics_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/internal/tlstest"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
	"github.com/pagewarp/pagewarp/metrics"
	"github.com/pagewarp/pagewarp/pageserver"
)

// gateProxy forwards TCP connections to a page server; a test can cut
// every connection (a reset) or freeze them: stop forwarding in both
// directions while keeping them open (a stall).
type gateProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	pairs  map[*gatePair]struct{}
	wg     sync.WaitGroup
}

type gatePair struct {
	client, server net.Conn
	frozen         atomic.Bool
	closed         chan struct{}
	once           sync.Once
}

func (g *gatePair) close(reset bool) {
	g.once.Do(func() {
		if reset {
			g.client.(*net.TCPConn).SetLinger(0)
		}
		g.client.Close()
		g.server.Close()
		close(g.closed)
	})
}

func newGateProxy(t *testing.T, target string) *gateProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &gateProxy{ln: ln, target: target, pairs: make(map[*gatePair]struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			g := &gatePair{client: c, server: s, closed: make(chan struct{})}
			p.mu.Lock()
			p.pairs[g] = struct{}{}
			p.mu.Unlock()
			p.wg.Add(2)
			go p.forward(g, s, c)
			go p.forward(g, c, s)
		}
	}()
	t.Cleanup(p.close)
	return p
}

// forward copies src to dst until either side closes; once the pair is
// frozen it holds what it reads, the end of src included, until the pair
// is closed.
func (p *gateProxy) forward(g *gatePair, dst, src net.Conn) {
	defer p.wg.Done()
	defer g.close(false)
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if g.frozen.Load() {
			<-g.closed
			return
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *gateProxy) addr() string { return p.ln.Addr().String() }

// each calls f on every open pair and forgets the pairs f closes.
func (p *gateProxy) each(f func(*gatePair) (closed bool)) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for g := range p.pairs {
		if f(g) {
			delete(p.pairs, g)
		}
	}
	return len(p.pairs)
}

func (p *gateProxy) cutAll() { p.each(func(g *gatePair) bool { g.close(true); return true }) }

func (p *gateProxy) freezeAll() {
	p.each(func(g *gatePair) bool { g.frozen.Store(true); return false })
}

func (p *gateProxy) close() {
	p.ln.Close()
	p.cutAll()
	p.wg.Wait()
}

// waitUntil polls cond every millisecond for up to 20 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestResumeExposition runs a real migration through a proxy that first
// cuts the connections (a drop) and later freezes the resumed ones (a
// stall), and checks what the collectors say about it on both sides:
// two losses, one of them a stall, two resumes; on the server four
// resumed connections (an urgent and a bulk one per resume), a Resident
// frame per resume, and the migration's push session, still held (it
// lingers) after the frozen connections are finally closed.
func TestResumeExposition(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	ps := os.Getpagesize()
	mem := make([]byte, testPages*ps)
	fillTest(mem, ps)
	src, err := pageserver.NewRegionSource("resume-test", mem, ps)
	if err != nil {
		t.Fatal(err)
	}
	// nextn with a window of one pushes page p+1 after a fault on p; the
	// test touches even pages, so that a page it waits on is never pushed.
	srv := pageserver.New(src, pageserver.Options{SessionLinger: time.Hour,
		Prefetch: pageserver.Prefetch{Predictor: "nextn", Budget: 1, Fixed: true}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	proxy := newGateProxy(t, ln.Addr().String())

	defer runtime.GOMAXPROCS(faulthandler.ReserveProcs(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const stall = 200 * time.Millisecond
	h, err := faulthandler.Dial(ctx, "tcp", proxy.addr(), faulthandler.Options{NoPull: true, BulkStreams: 1, Verify: true,
		ProbeEvery: -1, StallTimeout: stall, ResumeDeadline: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); h.Release() })
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewFaultHandlerCollector(h, nil), metrics.NewPageServerCollector(srv, nil))
	if got := value(t, gather(t, reg), "pagewarp_pageserver_sessions", nil); got != 1 {
		t.Errorf("sessions %v after the handshake, want 1", got)
	}

	// touch reads pages on a thread of its own and checks their content.
	touch := func(pages ...int) (time.Duration, error) {
		done := make(chan error, 1)
		t0 := time.Now()
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			m := h.Memory()
			for _, p := range pages {
				if got, want := loadByte(m, p*ps+5), mem[p*ps+5]; got != want {
					done <- fmt.Errorf("page %d: read %#x, want %#x", p, got, want)
					return
				}
			}
			done <- nil
		}()
		select {
		case err := <-done:
			return time.Since(t0), err
		case <-time.After(30 * time.Second):
			return 0, fmt.Errorf("pages %v not there after 30 s (stats %+v)", pages, h.Stats())
		}
	}
	h.Start()
	if _, err := touch(0, 2, 4, 6, 8, 10, 12, 14); err != nil {
		t.Fatal(err)
	}
	// A drop: every connection reset.
	proxy.cutAll()
	waitUntil(t, "the resume after the cut", func() bool { return h.Stats().Resumes == 1 })
	// A stall: the resumed connections stop moving, open.
	proxy.freezeAll()
	took, err := touch(16)
	if err != nil {
		t.Fatal(err)
	}
	if st := h.Stats(); st.Stalls != 1 || st.Resumes != 2 || took < stall {
		t.Fatalf("page 16 came after %v with %d stalls and %d resumes; want one stall after at least %v, then a resume",
			took, st.Stalls, st.Resumes, stall)
	}
	var all []int
	for p := range testPages {
		all = append(all, p)
	}
	if _, err := touch(all...); err != nil {
		t.Fatal(err)
	}
	if err := h.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	// The last link said Bye; the frozen one is still open on the server
	// until the proxy closes it, without Bye: the session then lingers.
	waitUntil(t, "the last link to end", func() bool { return srv.Stats().ConnectionsActive == 2 })
	proxy.close()
	waitUntil(t, "the frozen link to end", func() bool { return srv.Stats().ConnectionsActive == 0 })

	want := `
# HELP pagewarp_faulthandler_link_losses_total Times the connections to the source were lost during post-copy: dropped, or stalled.
# TYPE pagewarp_faulthandler_link_losses_total counter
pagewarp_faulthandler_link_losses_total 2
# HELP pagewarp_faulthandler_resumes_total Times the handler reconnected to the source and resumed the migration after a loss.
# TYPE pagewarp_faulthandler_resumes_total counter
pagewarp_faulthandler_resumes_total 2
# HELP pagewarp_faulthandler_stalls_total Losses declared because a connection carried nothing for the stall timeout while replies were outstanding.
# TYPE pagewarp_faulthandler_stalls_total counter
pagewarp_faulthandler_stalls_total 1
# HELP pagewarp_pageserver_resumed_connections_total Connections opened again by a target resuming its post-copy after a loss (Hello with resume).
# TYPE pagewarp_pageserver_resumed_connections_total counter
pagewarp_pageserver_resumed_connections_total 4
# HELP pagewarp_pageserver_sessions Push sessions held (a server with a predictor keeps one per migration), those lingering after their connections dropped without Bye included.
# TYPE pagewarp_pageserver_sessions gauge
pagewarp_pageserver_sessions 1
# HELP pagewarp_pageserver_tls_refused_total Connections closed because their TLS handshake failed or timed out.
# TYPE pagewarp_pageserver_tls_refused_total counter
pagewarp_pageserver_tls_refused_total 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"pagewarp_faulthandler_link_losses_total",
		"pagewarp_faulthandler_resumes_total",
		"pagewarp_faulthandler_stalls_total",
		"pagewarp_pageserver_resumed_connections_total",
		"pagewarp_pageserver_sessions",
		"pagewarp_pageserver_tls_refused_total",
	); err != nil {
		t.Fatal(err)
	}
	// The values that depend on timing: page 16 was asked for again (and
	// perhaps a page pushed when the cut came); the time down adds up the
	// two resumes.
	fams := gather(t, reg)
	st := h.Stats()
	// One Resident frame per resume, but the second may still be on its
	// way when its connection is frozen (a clean clone under -race saw 1).
	if got := value(t, fams, "pagewarp_pageserver_resident_frames_total", nil); got < 1 || got > float64(st.Resumes) {
		t.Errorf("resident_frames_total %v, want 1 to %d (one per resume at most)", got, st.Resumes)
	}
	if got := value(t, fams, "pagewarp_faulthandler_rerequested_pages_total", nil); got < 1 || got != float64(st.ReRequested) {
		t.Errorf("rerequested_pages_total %v, want at least 1 and Stats.ReRequested %d", got, st.ReRequested)
	}
	if got := value(t, fams, "pagewarp_faulthandler_down_seconds_total", nil); got <= 0 || got != st.DownTime.Seconds() {
		t.Errorf("down_seconds_total %v, want > 0 and Stats.DownTime %v", got, st.DownTime)
	}
	t.Logf("page 16 came %v after the freeze; down %v in all; %d pages asked again", took, st.DownTime, st.ReRequested)
}

// TestTLSRefusedExposition: a target without TLS dialling a server that
// requires it is refused on each of its connections, and the collector
// counts them.
func TestTLSRefusedExposition(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	ps := os.Getpagesize()
	mem := make([]byte, testPages*ps)
	src, err := pageserver.NewRegionSource("tls-test", mem, ps)
	if err != nil {
		t.Fatal(err)
	}
	ca := tlstest.NewCA(t, "pagewarp metrics test CA")
	srv := pageserver.New(src, pageserver.Options{TLS: tlstest.ServerConfig(ca, ca.Issue(t, tlstest.Loopback()))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewPageServerCollector(srv, nil))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const conns = 1 + 2 // urgent and bulk
	h, err := faulthandler.Dial(ctx, "tcp", ln.Addr().String(), faulthandler.Options{BulkStreams: conns - 1})
	if err == nil {
		h.Close()
		t.Fatal("a target without TLS was served by a server that requires it")
	}
	t.Logf("dial: %v", err)
	waitUntil(t, "every connection refused", func() bool { return srv.Stats().TLSRefused == conns })
	want := fmt.Sprintf(`
# HELP pagewarp_pageserver_tls_refused_total Connections closed because their TLS handshake failed or timed out.
# TYPE pagewarp_pageserver_tls_refused_total counter
pagewarp_pageserver_tls_refused_total %d
`, conns)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pagewarp_pageserver_tls_refused_total"); err != nil {
		t.Fatal(err)
	}
}
