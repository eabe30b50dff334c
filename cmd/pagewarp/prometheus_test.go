package main

// Tests of the metrics as Prometheus sees them: promtool over the real
// expositions of serve and receive (make lint runs it), a real Prometheus
// server scraping a running migration, and the Grafana dashboard's queries
// against both.
//
// A migration on loopback is over in milliseconds, and receive's /metrics
// goes away with it. So the receiver talks to the page server through
// holdProxy, which paces the server's bytes (the migration runs for
// seconds) and holds the receiver's digest request (--verify): once every
// page is resident, receive waits for the digest, still serving its
// metrics, until the test lets the request through.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/hybrid"
	"github.com/pagewarp/pagewarp/internal/syncbuf"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
	"github.com/pagewarp/pagewarp/metrics"
	"github.com/pagewarp/pagewarp/precopy"
	"github.com/pagewarp/pagewarp/wire"
)

// requirePrometheusEnv makes a missing prometheus or promtool fail the
// tests that need them instead of skipping them (make lint sets it).
const requirePrometheusEnv = "PAGEWARP_REQUIRE_PROMETHEUS"

// prometheusTool returns the path of name (prometheus or promtool), or
// skips the test, or with PAGEWARP_REQUIRE_PROMETHEUS set fails it.
func prometheusTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s not found (%v): Debian's package prometheus has it; `make deps-prometheus` installs it as root", name, err)
	if os.Getenv(requirePrometheusEnv) != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// holdProxy forwards receivers' connections to a page server. It paces
// what the server sends to rate bytes a second over all connections (0:
// no limit), and holds every DigestRequest frame a receiver sends until
// release is called; held is closed when the first one arrives. The
// receiver sends it after its last page is installed.
type holdProxy struct {
	ln       net.Listener
	target   string
	rate     float64
	held     chan struct{}
	heldOnce sync.Once
	released chan struct{}
	relOnce  sync.Once

	mu    sync.Mutex
	next  time.Time // when the paced bytes sent so far are due
	conns []net.Conn
}

func startHoldProxy(t *testing.T, target string, rate float64) *holdProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{ln: ln, target: target, rate: rate, held: make(chan struct{}), released: make(chan struct{})}
	go p.serve()
	t.Cleanup(func() {
		p.release()
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *holdProxy) addr() string { return p.ln.Addr().String() }

func (p *holdProxy) release() { p.relOnce.Do(func() { close(p.released) }) }

func (p *holdProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go func() { p.upstream(c, s); s.Close() }()
		go func() { p.downstream(s, c); c.Close() }()
	}
}

// upstream copies frames from the receiver c to the server s, holding
// digest requests (docs/protocol.md: a frame is a u32 length, then the
// type byte and the body).
func (p *holdProxy) upstream(c, s net.Conn) {
	r := bufio.NewReader(c)
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		if n == 0 || n > wire.MaxFrameSize {
			return
		}
		frame := make([]byte, 4+int(n))
		copy(frame, hdr[:])
		if _, err := io.ReadFull(r, frame[5:]); err != nil {
			return
		}
		if wire.Type(hdr[4]) == wire.TypeDigestRequest {
			p.heldOnce.Do(func() { close(p.held) })
			<-p.released
		}
		if _, err := s.Write(frame); err != nil {
			return
		}
	}
}

// downstream copies the server s's bytes to the receiver c at the pace.
func (p *holdProxy) downstream(s, c net.Conn) {
	buf := make([]byte, 16<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			p.pace(n)
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *holdProxy) pace(n int) {
	if p.rate <= 0 {
		return
	}
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	p.next = p.next.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	wait := time.Until(p.next)
	p.mu.Unlock()
	time.Sleep(wait)
}

// heldMigration is a serve and a receive, both with --metrics-addr, the
// receiver connected through a holdProxy.
type heldMigration struct {
	ctx                          context.Context
	serveMetrics, receiveMetrics string // HOST:PORT of each /metrics
	pages                        uint64 // pages in the region
	proxy                        *holdProxy
	exited                       chan struct{} // closed when receive returns, with its error in err
	err                          error
	stderr                       *syncbuf.Buffer
}

// newHeldMigration serves a demo region of size (e.g. "4MiB") with
// --metrics-addr, behind a holdProxy pacing the server's bytes to rate
// bytes a second (0: unpaced); receive starts it. Everything stops at the
// end of the test.
func newHeldMigration(t *testing.T, size string, rate float64) *heldMigration {
	t.Helper()
	uffdtest.SkipIfUnavailable(t)
	n, err := bench.ParseSize(size)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m := &heldMigration{ctx: ctx, serveMetrics: freeAddr(t), receiveMetrics: freeAddr(t),
		pages: uint64(n) / uint64(os.Getpagesize()), exited: make(chan struct{}), stderr: &syncbuf.Buffer{}}
	addr := startServe(t, ctx, "--demo", size, "--metrics-addr", m.serveMetrics)
	m.proxy = startHoldProxy(t, addr, rate)
	return m
}

// receive starts receive through the proxy, with --verify, one bulk
// stream and --metrics-addr. It holds at its digest request, once every
// page is resident, until finish.
func (m *heldMigration) receive(t *testing.T) {
	t.Helper()
	go func() {
		defer close(m.exited)
		m.err = run(m.ctx, io.Discard, m.stderr, []string{"receive", "--connect", m.proxy.addr(), "--verify",
			"--bulk-streams", "1", "--metrics-addr", m.receiveMetrics})
	}()
	t.Cleanup(func() {
		m.proxy.release()
		select {
		case <-m.exited:
		case <-time.After(30 * time.Second):
			t.Errorf("receive still running 30 s after the test; stderr:\n%s", m.stderr.String())
		}
	})
}

// startHeldMigration is newHeldMigration and receive.
func startHeldMigration(t *testing.T, size string, rate float64) *heldMigration {
	t.Helper()
	m := newHeldMigration(t, size, rate)
	m.receive(t)
	return m
}

// waitHeld waits until the receiver has every page and waits on its
// digest request.
func (m *heldMigration) waitHeld(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-m.proxy.held:
	case <-m.exited:
		t.Fatalf("receive returned before its digest request: %v; stderr:\n%s", m.err, m.stderr.String())
	case <-time.After(timeout):
		t.Fatalf("no digest request within %v; stderr:\n%s", timeout, m.stderr.String())
	}
}

// finish lets the digest request through and checks receive's result.
func (m *heldMigration) finish(t *testing.T) {
	t.Helper()
	m.proxy.release()
	select {
	case <-m.exited:
		if m.err != nil {
			t.Fatalf("receive: %v; stderr:\n%s", m.err, m.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("receive did not return within 60 s of its digest; stderr:\n%s", m.stderr.String())
	}
}

// scrape returns the body of http://addr/metrics.
func scrape(t *testing.T, addr string) []byte {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET http://%s/metrics: %s, %v", addr, resp.Status, err)
	}
	return body
}

// precopyExposition returns the text exposition of a pre-copy recorder
// after a round and a decision of a real policy: serve and receive do not
// run pre-copy, so their endpoints lack these metrics.
func precopyExposition(t *testing.T) []byte {
	t.Helper()
	reg := prometheus.NewRegistry()
	p, err := metrics.NewPrecopy(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := hybrid.New("adaptive")
	if err != nil {
		t.Fatal(err)
	}
	p.ObserveRound(precopy.RoundStats{Round: 0, Streams: 2, Dirty: 1024, Zero: 256, Dup: 10, Sent: 758, Bytes: 758 * 4096,
		Duration: 50 * time.Millisecond, HashTime: 2 * time.Millisecond})
	p.ObserveDecision(pol.Decide(hybrid.Env{PageSize: 4096, TotalPages: 1024},
		[]hybrid.Round{{Index: 0, Dirty: 1024, Sent: 758, Bytes: 758 * 4096, Duration: 50 * time.Millisecond}}))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	return scrape(t, strings.TrimPrefix(srv.URL, "http://"))
}

// TestPromtoolCheckMetrics pipes the real expositions of serve and of
// receive (with every page resident) and the pre-copy recorder's into
// `promtool check metrics`; any complaint fails. make lint runs it with
// PAGEWARP_REQUIRE_PROMETHEUS=1.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := prometheusTool(t, "promtool")
	m := startHeldMigration(t, "4MiB", 0)
	m.waitHeld(t, time.Minute)
	for _, e := range []struct {
		name string
		body []byte
	}{
		{"serve", scrape(t, m.serveMetrics)},
		{"receive", scrape(t, m.receiveMetrics)},
		{"pre-copy recorder", precopyExposition(t)},
	} {
		if !bytes.Contains(e.body, []byte("\npagewarp_")) {
			t.Fatalf("%s: no pagewarp metric in the exposition:\n%s", e.name, e.body)
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(e.body)
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("promtool check metrics on %s's exposition: %v\n%s", e.name, err, out)
		}
	}
	m.finish(t)
}

// promSample is one element of an instant query's vector result.
type promSample struct {
	Metric map[string]string
	Value  float64
}

// promQuery runs an instant query on the Prometheus server at base and
// returns its vector (or scalar, as one sample), or the error Prometheus
// or the transport gave.
func promQuery(base, query string) ([]promSample, error) {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("query %q: %s: %w", query, resp.Status, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s: %s", query, r.ErrorType, r.Error)
	}
	parse := func(v [2]any) (float64, error) {
		s, ok := v[1].(string)
		if !ok {
			return 0, fmt.Errorf("query %q: value %v", query, v)
		}
		return strconv.ParseFloat(s, 64)
	}
	switch r.Data.ResultType {
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(r.Data.Result, &vec); err != nil {
			return nil, err
		}
		out := make([]promSample, 0, len(vec))
		for _, s := range vec {
			f, err := parse(s.Value)
			if err != nil {
				return nil, err
			}
			out = append(out, promSample{s.Metric, f})
		}
		return out, nil
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(r.Data.Result, &v); err != nil {
			return nil, err
		}
		f, err := parse(v)
		return []promSample{{nil, f}}, err
	}
	return nil, fmt.Errorf("query %q: result type %s", query, r.Data.ResultType)
}

// startPrometheus runs a Prometheus server on loopback scraping each
// job's target every 200 ms, with its storage in a temporary directory,
// and returns its base URL once it is ready. It is stopped at the end of
// the test.
func startPrometheus(t *testing.T, jobs map[string]string) string {
	t.Helper()
	bin := prometheusTool(t, "prometheus")
	dir := t.TempDir()
	var cfg strings.Builder
	cfg.WriteString("global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\nscrape_configs:\n")
	names := make([]string, 0, len(jobs))
	for job := range jobs {
		names = append(names, job)
	}
	slices.Sort(names)
	for _, job := range names {
		fmt.Fprintf(&cfg, "  - job_name: %s\n    static_configs:\n      - targets: [%q]\n", job, jobs[job])
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	var logs syncbuf.Buffer
	cmd := exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus's log:\n%s", logs.String())
		}
	})
	base := "http://" + addr
	client := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-exited:
			t.Fatalf("prometheus exited: %v\n%s", err, logs.String())
		default:
		}
		if resp, err := client.Get(base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 60 s:\n%s", logs.String())
		}
	}
}

// waitQuery runs query until ok accepts its result, and returns that
// result; it fails the test after timeout with the last result or error.
func waitQuery(t *testing.T, base, query string, timeout time.Duration, ok func([]promSample) bool) []promSample {
	t.Helper()
	var last []promSample
	var err error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if last, err = promQuery(base, query); err == nil && ok(last) {
			return last
		}
	}
	t.Fatalf("query %s: after %v: %v (error %v)", query, timeout, last, err)
	return nil
}

// equals returns a check that the result is one sample of value want.
func equals(want float64) func([]promSample) bool {
	return func(s []promSample) bool { return len(s) == 1 && s[0].Value == want }
}

// TestPrometheusScrapesMigration starts a real Prometheus scraping serve
// and receive every 200 ms while a 16 MiB region migrates at 4 MB/s (the
// receiver's pull only: every page arrives once), and reads the migration
// back through Prometheus's HTTP API: scraped while incomplete, then every
// page installed, the kinds adding up to the region, the bytes to its
// non-zero pages, and the page server's count of pages sent.
func TestPrometheusScrapesMigration(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Prometheus server and migrates for seconds")
	}
	prometheusTool(t, "prometheus")
	uffdtest.SkipIfUnavailable(t)
	const size = 16 << 20
	pages := float64(size / os.Getpagesize())
	m := newHeldMigration(t, "16MiB", 4e6)
	base := startPrometheus(t, map[string]string{"source": m.serveMetrics, "target": m.receiveMetrics})
	// The receiver starts once Prometheus scrapes the page server, so that
	// its metrics are scraped from its first moments.
	waitQuery(t, base, `up{job="source"}`, time.Minute, equals(1))
	m.receive(t)

	// While it runs: Prometheus sees the region's size and a migration
	// not yet complete.
	waitQuery(t, base, `pagewarp_faulthandler_region_pages{job="target"}`, time.Minute, equals(pages))
	m.waitHeld(t, 2*time.Minute)
	// Every page resident, held at the digest: the next scrapes say so.
	waitQuery(t, base, `pagewarp_faulthandler_complete{job="target"}`, time.Minute, equals(1))
	if s, err := promQuery(base, `min_over_time(pagewarp_faulthandler_complete{job="target"}[10m])`); err != nil || !equals(0)(s) {
		t.Errorf("Prometheus never scraped the migration incomplete: %v (%v)", s, err)
	}
	if s, err := promQuery(base, `min_over_time(pagewarp_faulthandler_resident_pages{job="target"}[10m]) < `+fmt.Sprint(pages)); err != nil || len(s) != 1 {
		t.Errorf("Prometheus never scraped a resident count below the region's %v pages: %v (%v)", pages, s, err)
	}
	for _, c := range []struct {
		query string
		want  float64
	}{
		{`pagewarp_faulthandler_resident_pages{job="target"}`, pages},
		{`sum(pagewarp_faulthandler_pages_installed_total{job="target"})`, pages},
		// The pull alone brought the region: background pages with data,
		// zero pages as zero runs; the data bytes are the non-zero pages.
		{`sum(pagewarp_faulthandler_pages_installed_total{job="target",kind=~"background|zero"})`, pages},
		{`pagewarp_faulthandler_received_bytes_total{job="target",kind="background"}
		  / ignoring(kind) pagewarp_faulthandler_page_size_bytes{job="target"}
		  - ignoring(kind) pagewarp_faulthandler_pages_installed_total{job="target",kind="background"}`, 0},
		{`pagewarp_faulthandler_demand_requests_total{job="target"}`, 0},
		{`pagewarp_faulthandler_connections_open{job="target"}`, 2},
		{`pagewarp_faulthandler_failed{job="target"}`, 0},
		{`pagewarp_pageserver_connections_active{job="source"}`, 2},
	} {
		waitQuery(t, base, c.query, 30*time.Second, equals(c.want))
	}
	m.finish(t)

	// After the migration the page server's metrics stay: it sent every
	// page once, and the receiver closed its connections.
	waitQuery(t, base, `sum(pagewarp_pageserver_pages_sent_total{job="source"})`, 30*time.Second, equals(pages))
	waitQuery(t, base, `pagewarp_pageserver_connections_active{job="source"}`, 30*time.Second, equals(0))
	waitQuery(t, base, `pagewarp_pageserver_digest_requests_total{job="source"}`, 30*time.Second, equals(1))

	// Every query of the Grafana dashboard and of docs/metrics.md is valid
	// PromQL to this Prometheus.
	for _, p := range loadDashboard(t) {
		for _, expr := range p.exprs {
			if _, err := promQuery(base, dashboardQuery(expr)); err != nil {
				t.Errorf("dashboard panel %q: %v", p.title, err)
			}
		}
	}
	for _, q := range docQueries(t) {
		if _, err := promQuery(base, q); err != nil {
			t.Errorf("docs/metrics.md: %v", err)
		}
	}
}

// docQueries returns the queries of docs/metrics.md's Queries section: the
// lines of its code block that are not comments, an indented line
// continuing the one before.
func docQueries(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)\n## Queries\n\n```\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/metrics.md has no Queries block")
	}
	var qs []string
	for _, line := range strings.Split(string(m[1]), "\n") {
		switch {
		case strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, " ") && len(qs) > 0:
			qs[len(qs)-1] += "\n" + line
		default:
			qs = append(qs, line)
		}
	}
	if len(qs) < 5 {
		t.Fatalf("only %d queries in docs/metrics.md", len(qs))
	}
	return qs
}

// dashboardPanel is a panel of the Grafana dashboard and its queries.
type dashboardPanel struct {
	title string
	exprs []string
}

// loadDashboard parses docs/grafana/pagewarp.json and returns its panels,
// rows' nested panels included.
func loadDashboard(t *testing.T) []dashboardPanel {
	t.Helper()
	data, err := os.ReadFile("../../docs/grafana/pagewarp.json")
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []panel `json:"panels"`
	}
	var d struct {
		Title  string  `json:"title"`
		UID    string  `json:"uid"`
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("docs/grafana/pagewarp.json: %v", err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard without a title or uid")
	}
	var out []dashboardPanel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			dp := dashboardPanel{title: p.Title}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q has a target without a query", p.Title)
				}
				dp.exprs = append(dp.exprs, tg.Expr)
			}
			if len(dp.exprs) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			out = append(out, dp)
		}
	}
	walk(d.Panels)
	if len(out) == 0 {
		t.Fatal("dashboard has no panels")
	}
	return out
}

// dashboardQuery replaces the Grafana variables a dashboard query may use
// with values Prometheus takes.
func dashboardQuery(expr string) string {
	return strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1s", "$__range", "10m").Replace(expr)
}

// familyNames returns the metric families a text exposition declares.
func familyNames(body []byte) map[string]bool {
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) (\S+)$`).FindAllSubmatch(body, -1) {
		name, typ := string(m[1]), string(m[2])
		names[name] = true
		switch typ {
		case "histogram":
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case "summary":
			names[name+"_sum"], names[name+"_count"] = true, true
		}
	}
	return names
}

// TestGrafanaDashboardMetrics checks that every pagewarp metric the
// dashboard's queries name exists: those of the fault handler and the page
// server in the real expositions of receive and serve during a migration,
// those of pre-copy and the hybrid switch in the pre-copy recorder's (serve
// and receive run no pre-copy). It also checks that the dashboard keeps
// the panels it exists for.
func TestGrafanaDashboardMetrics(t *testing.T) {
	panels := loadDashboard(t)
	m := startHeldMigration(t, "4MiB", 0)
	m.waitHeld(t, time.Minute)
	exposed := familyNames(scrape(t, m.serveMetrics))
	for n := range familyNames(scrape(t, m.receiveMetrics)) {
		exposed[n] = true
	}
	m.finish(t)
	for n := range familyNames(precopyExposition(t)) {
		exposed[n] = true
	}
	metricName := regexp.MustCompile(`\bpagewarp_[a-z0-9_]+`)
	used := map[string]bool{}
	for _, p := range panels {
		for _, expr := range p.exprs {
			names := metricName.FindAllString(expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q names no pagewarp metric", p.title, expr)
			}
			for _, n := range names {
				used[n] = true
				if !exposed[n] {
					t.Errorf("panel %q: %s is not exposed by serve, receive or the pre-copy recorder", p.title, n)
				}
			}
		}
	}
	// What the dashboard is for (docs/metrics.md): fault rate and latency,
	// pages and bytes by kind, pushes used and unused, rounds, decisions,
	// connection state, predictor time.
	for _, n := range []string{
		"pagewarp_faulthandler_fault_events_total",
		"pagewarp_faulthandler_demand_service_seconds_bucket",
		"pagewarp_faulthandler_pages_installed_total",
		"pagewarp_faulthandler_received_bytes_total",
		"pagewarp_faulthandler_resident_pages",
		"pagewarp_faulthandler_connections_open",
		"pagewarp_pageserver_pushed_pages_reported_total",
		"pagewarp_pageserver_connections_active",
		"pagewarp_pageserver_predictor_seconds_total",
		"pagewarp_precopy_rounds_total",
		"pagewarp_precopy_pages_total",
		"pagewarp_hybrid_decisions_total",
		"pagewarp_hybrid_decision_info",
	} {
		if !used[n] {
			t.Errorf("the dashboard has no panel using %s", n)
		}
	}
}
