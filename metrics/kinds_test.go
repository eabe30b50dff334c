package metrics_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
	"github.com/pagewarp/pagewarp/metrics"
	"github.com/pagewarp/pagewarp/pageserver"
)

// TestKindsExposition migrates a region that pre-copy has partly
// installed (data, a zero page, a reference to a duplicate page, a page
// dropped again) from a page server that pushes predicted pages, and checks
// the pages and bytes by kind, the push and probe counts, the predictor's
// time and the connection state as the collectors expose them.
func TestKindsExposition(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	ps := os.Getpagesize()
	mem := make([]byte, testPages*ps)
	fillTest(mem, ps)
	// Page 10 holds page 2's content: pre-copy sends it as a reference.
	copy(mem[10*ps:11*ps], mem[2*ps:3*ps])
	src, err := pageserver.NewRegionSource("kinds-test", mem, ps)
	if err != nil {
		t.Fatal(err)
	}
	srv := pageserver.New(src, pageserver.Options{Prefetch: pageserver.Prefetch{Predictor: "nextn", Budget: 4, Fixed: true}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	defer runtime.GOMAXPROCS(faulthandler.ReserveProcs(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := faulthandler.Dial(ctx, "tcp", ln.Addr().String(),
		faulthandler.Options{NoPull: true, BulkStreams: 1, Verify: true, ProbeEvery: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); h.Release() })
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewFaultHandlerCollector(h, nil), metrics.NewPageServerCollector(srv, nil))

	// Connected: one urgent and one bulk connection on each side.
	fams := gather(t, reg)
	if got := value(t, fams, "pagewarp_faulthandler_connections_open", nil); got != 2 {
		t.Errorf("connections_open %v after the handshake, want 2", got)
	}
	if got := value(t, fams, "pagewarp_pageserver_connections_active", nil); got != 2 {
		t.Errorf("server's connections_active %v after the handshake, want 2", got)
	}

	// Pre-copy, before Start: pages 0-2 with data, page 3 as a zero page,
	// page 10 from a reference to page 2, page 0 again (in place), then
	// page 1 dropped (as if its new content had failed verification).
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(h.PrecopyData(0, mem[0:3*ps]))
	must(h.PrecopyZero(3, 1))
	ref, ok := h.PrecopyPage(2)
	if !ok {
		t.Fatal("page 2 not resident after pre-copy")
	}
	must(h.PrecopyRef(10, ref))
	must(h.PrecopyData(0, mem[0:ps]))
	must(h.Drop([]uint64{1}))
	const precopied, duplicates, dropped = 4, 1, 1 // pages 0-3 installed while missing; 10; 1

	h.Start()
	touched := make(chan error, 1)
	go func() {
		m := h.Memory()
		for p := range testPages {
			if got, want := loadByte(m, p*ps+5), mem[p*ps+5]; got != want {
				touched <- fmt.Errorf("page %d: read %#x, want %#x", p, got, want)
				return
			}
		}
		touched <- nil
	}()
	must(h.Wait(ctx))
	must(<-touched)
	must(h.Close())
	for deadline := time.Now().Add(10 * time.Second); srv.Stats().ConnectionsActive != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("server still has %d active connections", srv.Stats().ConnectionsActive)
		}
		time.Sleep(time.Millisecond)
	}

	fams = gather(t, reg)
	st, sst := h.Stats(), srv.Stats()
	kind := func(k string) map[string]string { return map[string]string{"kind": k} }
	installed := func(k string) float64 {
		return value(t, fams, "pagewarp_faulthandler_pages_installed_total", kind(k))
	}
	received := func(k string) float64 { return value(t, fams, "pagewarp_faulthandler_received_bytes_total", kind(k)) }

	if got := installed("precopy"); got != precopied {
		t.Errorf("pages installed by pre-copy %v, want %d", got, precopied)
	}
	if got := installed("duplicate"); got != duplicates {
		t.Errorf("duplicate pages installed %v, want %d", got, duplicates)
	}
	if got := received("precopy"); got != float64(4*ps) {
		t.Errorf("pre-copy bytes received %v, want %d (three pages, then one again)", got, 4*ps)
	}
	if got := value(t, fams, "pagewarp_faulthandler_precopy_in_place_pages_total", nil); got != 1 {
		t.Errorf("pre-copy pages written in place %v, want 1", got)
	}
	if got := value(t, fams, "pagewarp_faulthandler_precopy_dropped_pages_total", nil); got != dropped {
		t.Errorf("pre-copy pages dropped %v, want %d", got, dropped)
	}
	// The kinds are disjoint: they add up to the region and the pages
	// installed once more after a drop.
	var sum float64
	for _, k := range []string{"demand", "background", "zero", "pushed", "precopy", "duplicate"} {
		sum += installed(k)
	}
	if sum != testPages+dropped {
		t.Errorf("pages installed by kind add up to %v, want %d", sum, testPages+dropped)
	}
	if installed("background") != 0 || received("background") != 0 {
		t.Errorf("background pages %v, bytes %v without a pull", installed("background"), received("background"))
	}
	// Every demand reply with data carried its page; pushed frames at least
	// the pushed data pages installed.
	if got, want := received("demand"), installed("demand")*float64(ps); got != want {
		t.Errorf("demand bytes %v, want %v (one page per demand page installed)", got, want)
	}
	if installed("pushed") == 0 || received("pushed") == 0 || received("pushed") > float64(st.PushedReceived)*float64(ps) {
		t.Errorf("pushed: %v pages installed, %v bytes received of %d pages received: want some, at most a page each",
			installed("pushed"), received("pushed"), st.PushedReceived)
	}
	if got := float64(st.BytesReceived); got != received("demand")+received("background")+received("pushed") {
		t.Errorf("Stats.BytesReceived %v, want the post-copy kinds' sum", got)
	}

	// The source's side of the pushes and the predictor's time.
	pushes := value(t, fams, "pagewarp_pageserver_pushes_total", nil)
	if pushes == 0 || pushes != float64(st.PushNotices) {
		t.Errorf("server pushes %v, target push notices %d: want equal and not 0", pushes, st.PushNotices)
	}
	if got := value(t, fams, "pagewarp_pageserver_pushed_pages_total", nil); got != float64(st.PushedReceived) {
		t.Errorf("server pushed %v pages, target received %d", got, st.PushedReceived)
	}
	demand := value(t, fams, "pagewarp_pageserver_requests_total", map[string]string{"priority": "demand"})
	if got := value(t, fams, "pagewarp_pageserver_predictor_calls_total", nil); got != demand || got == 0 {
		t.Errorf("predictor calls %v, want one per demand request (%v)", got, demand)
	}
	if got := value(t, fams, "pagewarp_pageserver_predictor_seconds_total", nil); got <= 0 || got != sst.PredictTime.Seconds() {
		t.Errorf("predictor seconds %v, want > 0 and the server's %v", got, sst.PredictTime)
	}
	// Every pushed page was a probe; a sequential walk touches them all.
	used := value(t, fams, "pagewarp_faulthandler_probes_reported_total", map[string]string{"result": "used"})
	unused := value(t, fams, "pagewarp_faulthandler_probes_reported_total", map[string]string{"result": "unused"})
	if used == 0 || used+unused > float64(st.ProbesStaged) {
		t.Errorf("probes: %v used, %v unused of %d staged", used, unused, st.ProbesStaged)
	}
	srvUsed := value(t, fams, "pagewarp_pageserver_pushed_pages_reported_total", map[string]string{"result": "used"})
	srvUnused := value(t, fams, "pagewarp_pageserver_pushed_pages_reported_total", map[string]string{"result": "unused"})
	if srvUsed > used || srvUnused > unused {
		t.Errorf("server counts %v used and %v unused pushed pages, the target reported %v and %v", srvUsed, srvUnused, used, unused)
	}

	// Closed cleanly: no connection left, not failed.
	if got := value(t, fams, "pagewarp_faulthandler_connections_open", nil); got != 0 {
		t.Errorf("connections_open %v after Close, want 0", got)
	}
	if got := value(t, fams, "pagewarp_faulthandler_failed", nil); got != 0 {
		t.Errorf("failed %v after a complete migration, want 0", got)
	}
	t.Logf("demand %v, pushed %v, zero %v, precopy %v, duplicate %v pages; %v pushes; probes %v used, %v unused; predictor %v in %v calls",
		installed("demand"), installed("pushed"), installed("zero"), installed("precopy"), installed("duplicate"),
		pushes, used, unused, sst.PredictTime, sst.PredictCalls)
}

// TestFailedExposition: a handler whose source goes away mid-migration
// shows failed 1; Close then drops its connections to 0.
func TestFailedExposition(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	ps := os.Getpagesize()
	mem := make([]byte, testPages*ps)
	fillTest(mem, ps)
	src, err := pageserver.NewRegionSource("failed-test", mem, ps)
	if err != nil {
		t.Fatal(err)
	}
	srv := pageserver.New(src, pageserver.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// No pull and nothing touches the region: the migration waits on the
	// source until it goes.
	h, err := faulthandler.Dial(ctx, "tcp", ln.Addr().String(), faulthandler.Options{NoPull: true, BulkStreams: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); h.Release() })
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewFaultHandlerCollector(h, nil))
	h.Start()
	fams := gather(t, reg)
	if open, failed := value(t, fams, "pagewarp_faulthandler_connections_open", nil), value(t, fams, "pagewarp_faulthandler_failed", nil); open != 2 || failed != 0 {
		t.Errorf("while migrating: connections_open %v, failed %v; want 2 and 0", open, failed)
	}
	srv.Close()
	if err := h.Wait(ctx); err == nil {
		t.Fatal("migration succeeded without its source")
	}
	fams = gather(t, reg)
	if got := value(t, fams, "pagewarp_faulthandler_failed", nil); got != 1 {
		t.Errorf("failed %v after the source went away, want 1", got)
	}
	h.Close()
	if got := value(t, gather(t, reg), "pagewarp_faulthandler_connections_open", nil); got != 0 {
		t.Errorf("connections_open %v after Close, want 0", got)
	}
}

func gather(t *testing.T, reg *prometheus.Registry) []*dto.MetricFamily {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value returns the value of the series of family name whose labels
// include want (nil: the family's only series).
func value(t *testing.T, fams []*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		var found []*dto.Metric
	series:
		for _, m := range f.GetMetric() {
			for k, v := range want {
				ok := false
				for _, l := range m.GetLabel() {
					ok = ok || (l.GetName() == k && l.GetValue() == v)
				}
				if !ok {
					continue series
				}
			}
			found = append(found, m)
		}
		if len(found) != 1 {
			t.Fatalf("%s%v: %d series, want 1", name, want, len(found))
		}
		switch m := found[0]; {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		}
		t.Fatalf("%s is neither a counter nor a gauge", name)
	}
	t.Fatalf("no %s gathered", name)
	return 0
}
