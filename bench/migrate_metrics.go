package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// A migration's source and target run in their own processes, and with a
// veth link in their own network namespaces, where a loopback address is
// out of the operator's reach. Each child therefore serves its metrics on a
// unix socket (a path in the file system, which namespaces do not hide),
// and the orchestrator's MigrateMetrics gathers both into the one
// /metrics endpoint the operator scrapes. Every child metric carries the
// label role="source" or role="target".

// MigrateMetrics gathers the metrics of the migrations Migrate runs with
// it (MigrateConfig.Metrics): a prometheus.Gatherer over the children that
// are running at the time of a scrape. A child that has exited (or not yet
// started) is left out of the scrape, not an error.
type MigrateMetrics struct {
	dir string
}

// NewMigrateMetrics makes the directory the children's sockets live in.
// Close removes it.
func NewMigrateMetrics() (*MigrateMetrics, error) {
	dir, err := os.MkdirTemp("", "pagewarp-metrics-")
	if err != nil {
		return nil, err
	}
	return &MigrateMetrics{dir: dir}, nil
}

// Close removes the socket directory.
func (m *MigrateMetrics) Close() error { return os.RemoveAll(m.dir) }

func (m *MigrateMetrics) socket(role string) string { return filepath.Join(m.dir, role+".sock") }

// Gather implements prometheus.Gatherer: the families of every running
// child, merged (the children are this binary, so same-named families
// agree on help and type).
func (m *MigrateMetrics) Gather() ([]*dto.MetricFamily, error) {
	var gs prometheus.Gatherers
	for _, role := range []string{"source", "target"} {
		gs = append(gs, childGatherer(m.socket(role)))
	}
	return gs.Gather()
}

// childScrapeTimeout bounds one scrape of a child.
const childScrapeTimeout = 5 * time.Second

// childGatherer scrapes the child serving on the unix socket path.
type childGatherer string

func (path childGatherer) Gather() ([]*dto.MetricFamily, error) {
	client := &http.Client{
		Timeout: childScrapeTimeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", string(path))
		}},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://child/metrics")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, nil // not running (yet, or any more)
		}
		return nil, fmt.Errorf("scrape %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", path, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", path, err)
	}
	out := make([]*dto.MetricFamily, 0, len(fams))
	for _, f := range fams {
		out = append(out, f)
	}
	return out, nil
}

// serveChildMetrics serves reg on the unix socket path until the returned
// stop is called.
func serveChildMetrics(path string, reg *prometheus.Registry) (stop func(), err error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("metrics socket: %w", err)
	}
	srv := &http.Server{
		Handler:           promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
		<-done
		os.Remove(path)
	}, nil
}
