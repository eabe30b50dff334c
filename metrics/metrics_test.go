package metrics_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/hybrid"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
	"github.com/pagewarp/pagewarp/metrics"
	"github.com/pagewarp/pagewarp/pageserver"
	"github.com/pagewarp/pagewarp/precopy"
)

// testPages is the size of the migrated region; every fourth page is zero.
const testPages = 64

// fillTest fills mem with non-zero pages, except every fourth one.
func fillTest(mem []byte, ps int) {
	for p := range len(mem) / ps {
		if p%4 == 3 {
			continue
		}
		for j := range ps {
			mem[p*ps+j] = byte(p*7 + j*13 + 1)
		}
	}
}

// loadByte reads b[i] in a function of its own (see faulthandler's tests:
// a fault inside a runtime copy would block what holds its locks).
//
//go:noinline
func loadByte(b []byte, i int) byte { return b[i] }

// migrate runs a migration over loopback TCP from a real page server to a
// real fault handler in this process: no pull, one thread touching every
// page in order, so that every count is known: one fault, one demand
// request and one page per page. It returns once the handler has said
// goodbye and the server has closed both connections; the handler is
// released at the end of the test.
func migrate(t *testing.T) (*pageserver.Server, *faulthandler.Handler, []byte) {
	t.Helper()
	uffdtest.SkipIfUnavailable(t)
	ps := os.Getpagesize()
	mem := make([]byte, testPages*ps)
	fillTest(mem, ps)
	src, err := pageserver.NewRegionSource("metrics-test", mem, ps)
	if err != nil {
		t.Fatal(err)
	}
	srv := pageserver.New(src, pageserver.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	defer runtime.GOMAXPROCS(faulthandler.ReserveProcs(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := faulthandler.Dial(ctx, "tcp", ln.Addr().String(), faulthandler.Options{NoPull: true, BulkStreams: 1, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); h.Release() })
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
	if err := h.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-touched; err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	// The server counts a connection as active until it has seen the
	// handler's goodbye.
	for deadline := time.Now().Add(10 * time.Second); srv.Stats().ConnectionsActive != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("server still has %d active connections", srv.Stats().ConnectionsActive)
		}
		time.Sleep(time.Millisecond)
	}
	return srv, h, mem
}

func TestMigrationExposition(t *testing.T) {
	srv, h, _ := migrate(t)
	ps := os.Getpagesize()
	const zero = testPages / 4
	const data = testPages - zero

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		metrics.NewFaultHandlerCollector(h, prometheus.Labels{"region": "0"}),
		metrics.NewPageServerCollector(srv, nil),
	)
	want := fmt.Sprintf(`
# HELP pagewarp_faulthandler_complete 1 once every page of the region is resident, else 0.
# TYPE pagewarp_faulthandler_complete gauge
pagewarp_faulthandler_complete{region="0"} 1
# HELP pagewarp_faulthandler_connections_open Connections to the source the handler holds open (urgent and bulk); 0 once it has closed them.
# TYPE pagewarp_faulthandler_connections_open gauge
pagewarp_faulthandler_connections_open{region="0"} 0
# HELP pagewarp_faulthandler_demand_requests_total Demand requests sent to the source, at most one per page.
# TYPE pagewarp_faulthandler_demand_requests_total counter
pagewarp_faulthandler_demand_requests_total{region="0"} %[1]d
# HELP pagewarp_faulthandler_failed 1 once the migration has failed (or the handler was closed before it finished), else 0.
# TYPE pagewarp_faulthandler_failed gauge
pagewarp_faulthandler_failed{region="0"} 0
# HELP pagewarp_faulthandler_page_size_bytes Page size of the region.
# TYPE pagewarp_faulthandler_page_size_bytes gauge
pagewarp_faulthandler_page_size_bytes{region="0"} %[4]d
# HELP pagewarp_faulthandler_pages_installed_total Pages installed in the region, by how they arrived.
# TYPE pagewarp_faulthandler_pages_installed_total counter
pagewarp_faulthandler_pages_installed_total{kind="background",region="0"} 0
pagewarp_faulthandler_pages_installed_total{kind="demand",region="0"} %[2]d
pagewarp_faulthandler_pages_installed_total{kind="duplicate",region="0"} 0
pagewarp_faulthandler_pages_installed_total{kind="precopy",region="0"} 0
pagewarp_faulthandler_pages_installed_total{kind="pushed",region="0"} 0
pagewarp_faulthandler_pages_installed_total{kind="zero",region="0"} %[3]d
# HELP pagewarp_faulthandler_probes_reported_total Probes reported to the source, by result: used (touched) or unused (expired untouched).
# TYPE pagewarp_faulthandler_probes_reported_total counter
pagewarp_faulthandler_probes_reported_total{region="0",result="unused"} 0
pagewarp_faulthandler_probes_reported_total{region="0",result="used"} 0
# HELP pagewarp_faulthandler_pull_requests_total Background (pull) requests sent to the source.
# TYPE pagewarp_faulthandler_pull_requests_total counter
pagewarp_faulthandler_pull_requests_total{region="0"} 0
# HELP pagewarp_faulthandler_received_bytes_total Page data received from the source, by how it travelled: demand, background, pushed, precopy (frame headers and hashes excluded).
# TYPE pagewarp_faulthandler_received_bytes_total counter
pagewarp_faulthandler_received_bytes_total{kind="background",region="0"} 0
pagewarp_faulthandler_received_bytes_total{kind="demand",region="0"} %[5]d
pagewarp_faulthandler_received_bytes_total{kind="precopy",region="0"} 0
pagewarp_faulthandler_received_bytes_total{kind="pushed",region="0"} 0
# HELP pagewarp_faulthandler_region_pages Pages in the migrated region.
# TYPE pagewarp_faulthandler_region_pages gauge
pagewarp_faulthandler_region_pages{region="0"} %[1]d
# HELP pagewarp_faulthandler_resident_pages Pages of the region installed so far.
# TYPE pagewarp_faulthandler_resident_pages gauge
pagewarp_faulthandler_resident_pages{region="0"} %[1]d
# HELP pagewarp_pageserver_connections_accepted_total Connections accepted (every channel: urgent, bulk, pre-copy).
# TYPE pagewarp_pageserver_connections_accepted_total counter
pagewarp_pageserver_connections_accepted_total 2
# HELP pagewarp_pageserver_connections_active Connections being served.
# TYPE pagewarp_pageserver_connections_active gauge
pagewarp_pageserver_connections_active 0
# HELP pagewarp_pageserver_digest_requests_total Region digest requests received (verification).
# TYPE pagewarp_pageserver_digest_requests_total counter
pagewarp_pageserver_digest_requests_total 1
# HELP pagewarp_pageserver_errors_total Error messages sent to clients, by protocol error code (each closes its connection).
# TYPE pagewarp_pageserver_errors_total counter
pagewarp_pageserver_errors_total{code="frame_too_large"} 0
pagewarp_pageserver_errors_total{code="internal"} 0
pagewarp_pageserver_errors_total{code="malformed"} 0
pagewarp_pageserver_errors_total{code="out_of_range"} 0
pagewarp_pageserver_errors_total{code="protocol"} 0
pagewarp_pageserver_errors_total{code="shutdown"} 0
pagewarp_pageserver_errors_total{code="source_read"} 0
pagewarp_pageserver_errors_total{code="unknown_region"} 0
pagewarp_pageserver_errors_total{code="unknown_type"} 0
pagewarp_pageserver_errors_total{code="unsupported_version"} 0
# HELP pagewarp_pageserver_pages_sent_total Pages sent, by kind: data (with their content, pushed pages included) or zero (as zero runs).
# TYPE pagewarp_pageserver_pages_sent_total counter
pagewarp_pageserver_pages_sent_total{kind="data"} %[2]d
pagewarp_pageserver_pages_sent_total{kind="zero"} %[3]d
# HELP pagewarp_pageserver_predictor_calls_total Predictor consultations, one per demand request with pushing on.
# TYPE pagewarp_pageserver_predictor_calls_total counter
pagewarp_pageserver_predictor_calls_total 0
# HELP pagewarp_pageserver_pushes_total Push notices sent: demand replies followed by predicted pages.
# TYPE pagewarp_pageserver_pushes_total counter
pagewarp_pageserver_pushes_total 0
# HELP pagewarp_pageserver_requests_total Page requests received, by priority: demand (a fault waits) or background (the pull).
# TYPE pagewarp_pageserver_requests_total counter
pagewarp_pageserver_requests_total{priority="background"} 0
pagewarp_pageserver_requests_total{priority="demand"} %[1]d
`, testPages, data, zero, ps, data*ps)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"pagewarp_faulthandler_complete",
		"pagewarp_faulthandler_connections_open",
		"pagewarp_faulthandler_failed",
		"pagewarp_faulthandler_demand_requests_total",
		"pagewarp_faulthandler_page_size_bytes",
		"pagewarp_faulthandler_pages_installed_total",
		"pagewarp_faulthandler_probes_reported_total",
		"pagewarp_faulthandler_pull_requests_total",
		"pagewarp_faulthandler_received_bytes_total",
		"pagewarp_faulthandler_region_pages",
		"pagewarp_faulthandler_resident_pages",
		"pagewarp_pageserver_connections_accepted_total",
		"pagewarp_pageserver_connections_active",
		"pagewarp_pageserver_digest_requests_total",
		"pagewarp_pageserver_errors_total",
		"pagewarp_pageserver_pages_sent_total",
		"pagewarp_pageserver_predictor_calls_total",
		"pagewarp_pageserver_pushes_total",
		"pagewarp_pageserver_requests_total",
	); err != nil {
		t.Fatal(err)
	}

	// The values that depend on timing. A signal (Go's preemption, say) may
	// wake the touching thread from its fault before the page is there: it
	// faults again on the same page, a coalesced fault.
	st := h.Stats()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	events := single(t, fams, "pagewarp_faulthandler_fault_events_total").GetCounter().GetValue()
	coalesced := single(t, fams, "pagewarp_faulthandler_faults_coalesced_total").GetCounter().GetValue()
	if events != testPages+coalesced || events != float64(st.FaultEvents) {
		t.Errorf("%v fault events, %v coalesced: want %d more events than coalesced faults (stats %d)", events, coalesced, testPages, st.FaultEvents)
	}
	// The service-time histogram holds every demand request, and agrees
	// with the handler's own percentiles.
	m := single(t, fams, "pagewarp_faulthandler_demand_service_seconds")
	hist := m.GetHistogram()
	if hist == nil {
		t.Fatalf("pagewarp_faulthandler_demand_service_seconds is not a histogram: %v", m)
	}
	if hist.GetSampleCount() != testPages {
		t.Errorf("service histogram counts %d requests, want %d", hist.GetSampleCount(), testPages)
	}
	if got, want := hist.GetSampleSum(), st.DemandServiceTotal.Seconds(); math.Abs(got-want) > 1e-9 {
		t.Errorf("service histogram sum %gs, want %gs", got, want)
	}
	if n := len(hist.GetBucket()); n != 21 {
		t.Errorf("service histogram has %d buckets, want 21", n)
	}
	// ServiceP50 is the upper edge of a handler bucket 2^(1/4) wide: a
	// bound at or above it holds at least half of the requests, one below
	// that bucket's lower edge fewer than half.
	p50 := st.ServiceP50.Seconds()
	var prev uint64
	for _, b := range hist.GetBucket() {
		if b.GetCumulativeCount() < prev {
			t.Errorf("bucket le=%g: cumulative count %d after %d", b.GetUpperBound(), b.GetCumulativeCount(), prev)
		}
		prev = b.GetCumulativeCount()
		switch ub := b.GetUpperBound(); {
		case ub >= p50*(1-1e-9) && 2*prev < testPages:
			t.Errorf("bucket le=%g at or above p50 %v holds %d of %d requests", ub, st.ServiceP50, prev, testPages)
		case ub < p50/math.Pow(2, 0.25)*(1-1e-9) && 2*prev >= testPages:
			t.Errorf("bucket le=%g below p50 %v holds %d of %d requests", ub, st.ServiceP50, prev, testPages)
		}
	}
	t.Logf("service p50 %v p99 %v; histogram %v", st.ServiceP50, st.ServiceP99, hist.GetBucket())
}

// single returns the one series of the family name in fams.
func single(t *testing.T, fams []*dto.MetricFamily, name string) *dto.Metric {
	t.Helper()
	for _, f := range fams {
		if f.GetName() == name {
			if len(f.GetMetric()) != 1 {
				t.Fatalf("%s has %d series, want 1", name, len(f.GetMetric()))
			}
			return f.GetMetric()[0]
		}
	}
	t.Fatalf("no %s gathered", name)
	return nil
}

// TestLint runs promlint over every metric of every collector, with the
// values of a real migration.
func TestLint(t *testing.T) {
	srv, h, _ := migrate(t)
	for name, c := range map[string]prometheus.Collector{
		"faulthandler": metrics.NewFaultHandlerCollector(h, prometheus.Labels{"region": "0"}),
		"pageserver":   metrics.NewPageServerCollector(srv, prometheus.Labels{"source": "test"}),
	} {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s: %s", name, p.Metric, p.Text)
		}
	}
	reg := prometheus.NewRegistry()
	p, err := metrics.NewPrecopy(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.ObserveRound(precopy.RoundStats{Round: 0, Dirty: 10, Sent: 10, Bytes: 1 << 16, Duration: time.Millisecond})
	p.ObserveDecision(hybrid.Decision{Action: hybrid.Switch, Policy: "adaptive", Round: 0, Reason: "why not", Converged: true})
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("precopy: %s: %s", p.Metric, p.Text)
	}
}

func TestPrecopyRecorder(t *testing.T) {
	reg := prometheus.NewRegistry()
	p, err := metrics.NewPrecopy(reg, prometheus.Labels{"migration": "m1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.NewPrecopy(reg, prometheus.Labels{"migration": "m1"}); err == nil {
		t.Error("a second recorder with the same labels registered on the same registry")
	}
	p.ObserveRound(precopy.RoundStats{Round: 0, Streams: 4, Dirty: 1000, Zero: 200, Dup: 50, Known: 30, Sent: 720,
		Rejected: 3, Bytes: 3_000_000, Duration: 250 * time.Millisecond, TrackTime: 10 * time.Millisecond, HashTime: 40 * time.Millisecond})
	p.ObserveDecision(hybrid.Decision{Action: hybrid.Continue, Policy: "adaptive", Round: 0,
		Reason: "dirty set shrinking", Converged: true})
	p.ObserveRound(precopy.RoundStats{Round: 1, Streams: 4, Dirty: 103, Carried: 3, FakeDirty: 60, Sent: 43,
		Bytes: 180_000, Duration: 20 * time.Millisecond, HashTime: 5 * time.Millisecond})
	p.ObserveDecision(hybrid.Decision{Action: hybrid.Switch, Policy: "adaptive", Round: 1,
		Reason: "predicted downtime 3 ms within budget", Converged: true})

	want := `
# HELP pagewarp_hybrid_decision_converged 1 unless the latest decision gave up on convergence (e.g. pre-copy after its last round).
# TYPE pagewarp_hybrid_decision_converged gauge
pagewarp_hybrid_decision_converged{migration="m1"} 1
# HELP pagewarp_hybrid_decision_info The latest decision of the switch policy, with its reason: 1 for that one series.
# TYPE pagewarp_hybrid_decision_info gauge
pagewarp_hybrid_decision_info{action="switch",migration="m1",policy="adaptive",reason="predicted downtime 3 ms within budget"} 1
# HELP pagewarp_hybrid_decision_round Round the latest decision was taken after (-1: before any round).
# TYPE pagewarp_hybrid_decision_round gauge
pagewarp_hybrid_decision_round{migration="m1"} 1
# HELP pagewarp_hybrid_decisions_total Decisions of the switch policy, by policy and action (continue, stop-and-copy, switch).
# TYPE pagewarp_hybrid_decisions_total counter
pagewarp_hybrid_decisions_total{action="continue",migration="m1",policy="adaptive"} 1
pagewarp_hybrid_decisions_total{action="switch",migration="m1",policy="adaptive"} 1
# HELP pagewarp_precopy_carried_pages_total Pages the target rejected in a round and that went again in the next.
# TYPE pagewarp_precopy_carried_pages_total counter
pagewarp_precopy_carried_pages_total{migration="m1"} 3
# HELP pagewarp_precopy_dirty_pages_total Pages pre-copy rounds looked at: every page in round 0, then those written since the previous round (carried ones included).
# TYPE pagewarp_precopy_dirty_pages_total counter
pagewarp_precopy_dirty_pages_total{migration="m1"} 1103
# HELP pagewarp_precopy_hash_cpu_seconds_total CPU time the hash workers spent hashing and zero-testing pages.
# TYPE pagewarp_precopy_hash_cpu_seconds_total counter
pagewarp_precopy_hash_cpu_seconds_total{migration="m1"} 0.045
# HELP pagewarp_precopy_last_round Index of the last completed round (0 is the first).
# TYPE pagewarp_precopy_last_round gauge
pagewarp_precopy_last_round{migration="m1"} 1
# HELP pagewarp_precopy_last_round_dirty_pages Pages the last completed round looked at: how far the dirty set has shrunk.
# TYPE pagewarp_precopy_last_round_dirty_pages gauge
pagewarp_precopy_last_round_dirty_pages{migration="m1"} 103
# HELP pagewarp_precopy_last_round_duration_seconds Duration of the last completed round.
# TYPE pagewarp_precopy_last_round_duration_seconds gauge
pagewarp_precopy_last_round_duration_seconds{migration="m1"} 0.02
# HELP pagewarp_precopy_last_round_sent_bytes Bytes the last completed round wrote on its streams.
# TYPE pagewarp_precopy_last_round_sent_bytes gauge
pagewarp_precopy_last_round_sent_bytes{migration="m1"} 180000
# HELP pagewarp_precopy_pages_total Dirty pages handled by pre-copy rounds, by kind: data, zero, duplicate, known, fake_dirty_skipped.
# TYPE pagewarp_precopy_pages_total counter
pagewarp_precopy_pages_total{kind="data",migration="m1"} 763
pagewarp_precopy_pages_total{kind="duplicate",migration="m1"} 50
pagewarp_precopy_pages_total{kind="fake_dirty_skipped",migration="m1"} 60
pagewarp_precopy_pages_total{kind="known",migration="m1"} 30
pagewarp_precopy_pages_total{kind="zero",migration="m1"} 200
# HELP pagewarp_precopy_rejected_pages_total Pages the target did not install (torn reads, stale references); they go again in the next round.
# TYPE pagewarp_precopy_rejected_pages_total counter
pagewarp_precopy_rejected_pages_total{migration="m1"} 3
# HELP pagewarp_precopy_round_duration_seconds_total Time spent in rounds, from the scan to the target's acknowledgement.
# TYPE pagewarp_precopy_round_duration_seconds_total counter
pagewarp_precopy_round_duration_seconds_total{migration="m1"} 0.27
# HELP pagewarp_precopy_rounds_total Pre-copy rounds completed (acknowledged by the target).
# TYPE pagewarp_precopy_rounds_total counter
pagewarp_precopy_rounds_total{migration="m1"} 2
# HELP pagewarp_precopy_sent_bytes_total Bytes written on the pre-copy streams, frames included.
# TYPE pagewarp_precopy_sent_bytes_total counter
pagewarp_precopy_sent_bytes_total{migration="m1"} 3.18e+06
# HELP pagewarp_precopy_streams Streams the last completed round used.
# TYPE pagewarp_precopy_streams gauge
pagewarp_precopy_streams{migration="m1"} 4
# HELP pagewarp_precopy_track_seconds_total Time spent collecting dirty pages (arming the tracking, in round 0).
# TYPE pagewarp_precopy_track_seconds_total counter
pagewarp_precopy_track_seconds_total{migration="m1"} 0.01
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

// TestPrecopyRealPolicy feeds a real policy's decisions: the info metric
// shows only the latest, the counter all of them.
func TestPrecopyRealPolicy(t *testing.T) {
	reg := prometheus.NewRegistry()
	p, err := metrics.NewPrecopy(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := hybrid.New("precopy")
	if err != nil {
		t.Fatal(err)
	}
	env := hybrid.Env{PageSize: 4096, TotalPages: 1 << 15}
	var rounds []hybrid.Round
	var last hybrid.Decision
	for i := range 3 {
		rounds = append(rounds, hybrid.Round{Index: i, Dirty: uint64(1<<15) >> i, Sent: uint64(1<<15) >> i,
			Bytes: uint64(1<<27) >> i, Duration: 100 * time.Millisecond})
		last = pol.Decide(env, rounds)
		p.ObserveDecision(last)
	}
	if n, err := testutil.GatherAndCount(reg, "pagewarp_hybrid_decision_info"); err != nil || n != 1 {
		t.Errorf("%d decision_info series after 3 decisions (%v), want 1", n, err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var decisions float64
	for _, f := range fams {
		switch f.GetName() {
		case "pagewarp_hybrid_decisions_total":
			for _, m := range f.GetMetric() {
				decisions += m.GetCounter().GetValue()
			}
		case "pagewarp_hybrid_decision_info":
			got := map[string]string{}
			for _, l := range f.GetMetric()[0].GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			want := map[string]string{"policy": "precopy", "action": last.Action.String(), "reason": last.Reason}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("decision_info %s=%q, want %q", k, got[k], v)
				}
			}
		}
	}
	if decisions != 3 {
		t.Errorf("decisions_total adds up to %v, want 3", decisions)
	}
	t.Logf("last decision: %s: %s", last.Action, last.Reason)
}

// TestNilPrecopy: a nil recorder records nothing and does not crash.
func TestNilPrecopy(t *testing.T) {
	var p *metrics.Precopy
	p.ObserveRound(precopy.RoundStats{Round: 3})
	p.ObserveDecision(hybrid.Decision{Policy: "adaptive"})
}

// TestDocsListEveryMetric checks that docs/metrics.md names every metric
// this package defines, and no pagewarp metric it does not define.
func TestDocsListEveryMetric(t *testing.T) {
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	descs := make(chan *prometheus.Desc, 100)
	metrics.NewFaultHandlerCollector(nil, nil).Describe(descs)
	metrics.NewPageServerCollector(nil, nil).Describe(descs)
	close(descs)
	fqName := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range descs {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %v", d)
		}
		defined[m[1]] = true
	}
	reg := prometheus.NewRegistry()
	p, err := metrics.NewPrecopy(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.ObserveRound(precopy.RoundStats{})
	p.ObserveDecision(hybrid.Decision{Policy: "adaptive"})
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		defined[f.GetName()] = true
	}
	if len(defined) < 45 {
		t.Fatalf("only %d metrics found", len(defined))
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(pagewarp_[a-z_]+)` \\|").FindAllSubmatch(doc, -1) {
		documented[string(m[1])] = true
	}
	for name := range defined {
		if !documented[name] {
			t.Errorf("docs/metrics.md has no row for %s", name)
		}
	}
	for name := range documented {
		if !defined[name] {
			t.Errorf("docs/metrics.md lists %s, which is not defined", name)
		}
	}
}
