package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/pagewarp/pagewarp/internal/uffdtest"
)

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeMetrics runs serve and receive with --metrics-addr and scrapes
// the page server's /metrics after a migration.
func TestServeMetrics(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serveMetricsAddr, receiveMetricsAddr := freeAddr(t), freeAddr(t)
	addr := startServe(t, ctx, "--demo", "4MiB", "--metrics-addr", serveMetricsAddr)
	url := "http://" + serveMetricsAddr + "/metrics"

	var stderr bytes.Buffer
	if err := run(ctx, io.Discard, &stderr, []string{"receive", "--connect", addr, "--verify", "--metrics-addr", receiveMetricsAddr}); err != nil {
		t.Fatal(err)
	}
	if want := "metrics on http://" + receiveMetricsAddr + "/metrics"; !strings.Contains(stderr.String(), want) {
		t.Errorf("receive's stderr lacks %q:\n%s", want, stderr.String())
	}
	// The receiver's metrics stop with it.
	if resp, err := http.Get("http://" + receiveMetricsAddr + "/metrics"); err == nil {
		resp.Body.Close()
		t.Errorf("receive's metrics still served after it returned")
	}

	// The server sees the receiver's goodbye on each connection shortly
	// after receive returns.
	want := `
# HELP pagewarp_pageserver_connections_accepted_total Connections accepted (every channel: urgent, bulk, pre-copy).
# TYPE pagewarp_pageserver_connections_accepted_total counter
pagewarp_pageserver_connections_accepted_total 4
# HELP pagewarp_pageserver_connections_active Connections being served.
# TYPE pagewarp_pageserver_connections_active gauge
pagewarp_pageserver_connections_active 0
# HELP pagewarp_pageserver_digest_requests_total Region digest requests received (verification).
# TYPE pagewarp_pageserver_digest_requests_total counter
pagewarp_pageserver_digest_requests_total 1
`
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if err = testutil.ScrapeAndCompare(url, strings.NewReader(want),
			"pagewarp_pageserver_connections_accepted_total", "pagewarp_pageserver_connections_active",
			"pagewarp_pageserver_digest_requests_total"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
	for _, want := range []string{"pagewarp_pageserver_pages_sent_total{kind=\"data\"}", "go_goroutines", "promhttp_metric_handler_requests_total"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "pagewarp_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
}

func TestMetricsAddrUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--demo", "1MiB", "--metrics-addr", "0.0.0.0:9090"}, "not a loopback address"},
		{[]string{"serve", "--demo", "1MiB", "--metrics-addr", ":9090"}, "not a loopback address"},
		{[]string{"serve", "--demo", "1MiB", "--metrics-addr", "9090"}, "--metrics-addr"},
		{[]string{"receive", "--connect", "127.0.0.1:1", "--metrics-addr", "192.0.2.1:9090"}, "pass --insecure"},
		// With --insecure the address passes the check; binding a
		// documentation address then fails.
		{[]string{"receive", "--connect", "127.0.0.1:1", "--metrics-addr", "192.0.2.1:9090", "--insecure"}, "--metrics-addr: listen"},
	} {
		err := run(context.Background(), io.Discard, io.Discard, c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("pagewarp %s: error %v, want one containing %q", strings.Join(c.args, " "), err, c.want)
		}
	}
	// A port taken by someone else fails the command before it serves.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = run(context.Background(), io.Discard, io.Discard, []string{"receive", "--connect", "127.0.0.1:1", "--metrics-addr", ln.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("receive with a taken --metrics-addr: error %v, want address already in use", err)
	}
}
