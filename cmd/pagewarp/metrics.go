package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsAddrUsage is the help of --metrics-addr.
const metricsAddrUsage = `serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9090 (loopback unless --insecure; default off)`

// newMetricsRegistry returns a registry with the Go runtime and process
// collectors; the command registers its own collectors on it.
func newMetricsRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// checkMetricsAddr enforces that metrics are served on loopback unless the
// operator passes --insecure: they carry no page contents, but they describe
// the migration to anyone who can connect, without authentication.
func checkMetricsAddr(addr string, insecure bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--metrics-addr %q: %w", addr, err)
	}
	if insecure || host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--metrics-addr %s is not a loopback address: metrics would be open to the network without "+
		"authentication; pass --insecure to serve them anyway on a network you trust", addr)
}

// serveMetrics serves reg's metrics, and those of the further gatherers
// (migrate's children), in the Prometheus exposition format at /metrics on
// addr (HOST:PORT) until stop is called. It returns once it
// listens, or the error that kept it from listening. stop closes the
// listener, lets a scrape in progress finish (for up to a second) and
// returns. The caller checks addr with checkMetricsAddr first.
func serveMetrics(addr string, reg *prometheus.Registry, more ...prometheus.Gatherer) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	g := append(prometheus.Gatherers{reg}, more...)
	mux.Handle("/metrics", promhttp.InstrumentMetricHandler(reg,
		promhttp.HandlerFor(g, promhttp.HandlerOpts{Registry: reg, ErrorHandling: promhttp.ContinueOnError})))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      30 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Serve returns ErrServerClosed after stop; another error (a failed
		// Accept) stops the metrics but not the migration.
		srv.Serve(ln)
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
		<-done
	}, nil
}
