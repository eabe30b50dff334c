package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/metrics"
	"github.com/pagewarp/pagewarp/pageserver"
)

func newServeCmd(g *globals) *cobra.Command {
	var (
		listen, file, demo string
		metricsAddr        string
		demoSeed           uint64
		demoZero           float64
		insecure           bool
		urgentSpin         time.Duration
		pf                 prefetchFlags
		tf                 tlsFlags
	)
	cmd := &cobra.Command{
		Use:   "serve (--file MEMFILE | --demo SIZE) [--listen ADDR]",
		Short: "Serve a region's pages to receivers (the source side)",
		Long: `serve runs a page server: receivers connect, and every page they fault on or pull
is read from the source and sent with its hash. The source is a memory file (a VM
snapshot's memory file, say) or a built-in demo region of deterministic content.
It prints "listening on ADDR" once ready and serves until interrupted.
It listens on loopback unless given mutual TLS (--tls-cert, --tls-key, --tls-ca:
every receiver must then present a certificate signed by that CA) or --insecure.
--metrics-addr 127.0.0.1:9090 serves the page server's Prometheus metrics
(docs/metrics.md) at http://127.0.0.1:9090/metrics.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (file == "") == (demo == "") {
				return errors.New("give exactly one of --file MEMFILE or --demo SIZE")
			}
			if err := checkPageAddr("--listen", listen, tf.enabled(), insecure); err != nil {
				return err
			}
			tlsConfig, err := tf.serverConfig()
			if err != nil {
				return err
			}
			if metricsAddr != "" {
				if err := checkMetricsAddr(metricsAddr, insecure); err != nil {
					return err
				}
			}
			pageSize := os.Getpagesize()
			var src pageserver.Source
			var what string
			if file != "" {
				fs, err := pageserver.OpenFile(file, pageSize)
				if err != nil {
					return err
				}
				defer fs.Close()
				src, what = fs, file
			} else {
				size, err := bench.ParseSize(demo)
				if err != nil {
					return fmt.Errorf("--demo: %w", err)
				}
				if size <= 0 || size%int64(pageSize) != 0 {
					return fmt.Errorf("--demo %s: want a positive multiple of the page size (%d)", demo, pageSize)
				}
				if demoZero < 0 || demoZero > 1 {
					return fmt.Errorf("--demo-zero %v: want a fraction between 0 and 1", demoZero)
				}
				mem := make([]byte, size)
				bench.Content{Seed: demoSeed, ZeroFraction: demoZero}.Fill(mem, pageSize)
				rs, err := pageserver.NewRegionSource("demo", mem, pageSize)
				if err != nil {
					return err
				}
				src, what = rs, fmt.Sprintf("demo region (seed %d, %.0f%% zero pages)", demoSeed, demoZero*100)
			}
			prefetch, err := pf.options(src.Regions())
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			srv := pageserver.New(src, pageserver.Options{Logger: g.logger(), Name: "pagewarp/" + Version, UrgentSpin: urgentSpin, Prefetch: prefetch, TLS: tlsConfig})
			if metricsAddr != "" {
				reg := newMetricsRegistry()
				reg.MustRegister(metrics.NewPageServerCollector(srv, nil))
				stop, err := serveMetrics(metricsAddr, reg)
				if err != nil {
					ln.Close()
					return err
				}
				defer stop()
				fmt.Fprintf(g.stdout, "metrics on http://%s/metrics\n", metricsAddr)
			}
			if prefetch.Predictor != "" && prefetch.Predictor != "none" {
				fmt.Fprintf(g.stdout, "pushing up to %d predicted pages per fault with %s%s\n", prefetch.Budget, prefetch.Predictor, pf.describe())
			}
			for _, r := range src.Regions() {
				fmt.Fprintf(g.stdout, "serving region %d %q: %d pages of %d bytes (%s) from %s\n",
					r.ID, r.Name, r.Pages, pageSize, bench.FormatSize(int64(r.Pages)*int64(pageSize)), what)
			}
			if tlsConfig != nil {
				fmt.Fprintf(g.stdout, "mutual TLS 1.3: receivers must present a certificate signed by %s\n", tf.ca)
			}
			fmt.Fprintf(g.stdout, "listening on %s\n", ln.Addr())
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			start := time.Now()
			select {
			case err = <-errc:
			case <-cmd.Context().Done():
				err = srv.Close()
				<-errc
			}
			st := srv.Stats()
			fmt.Fprintf(g.stdout, "served %d connections for %v: %d pages (%d zero), %s\n",
				st.ConnectionsAccepted, time.Since(start).Round(time.Millisecond), st.PagesSent, st.ZeroPagesSent, bench.FormatSize(int64(st.BytesSent)))
			if st.TLSRefused > 0 {
				fmt.Fprintf(g.stdout, "refused %d connections in the TLS handshake\n", st.TLSRefused)
			}
			if st.PredictCalls > 0 {
				fmt.Fprintf(g.stdout, "pushed %d pages after %d of %d demand faults; targets reported %d pushed pages used, %d unused\n",
					st.PagesPushed, st.Pushes, st.PredictCalls, st.PushReportedUsed, st.PushReportedUnused)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:7070", "address to listen on (loopback unless mutual TLS or --insecure)")
	f.StringVar(&file, "file", "", "serve this memory file (one region, zero-padded to whole pages)")
	f.StringVar(&demo, "demo", "", "serve a built-in demo region of this size (e.g. 256MiB)")
	f.Uint64Var(&demoSeed, "demo-seed", 1, "seed of the demo region's content")
	f.Float64Var(&demoZero, "demo-zero", 0.25, "fraction of the demo region's pages that are zero")
	f.BoolVar(&insecure, "insecure", false, "allow a non-loopback --listen address without TLS, and a non-loopback --metrics-addr")
	f.StringVar(&metricsAddr, "metrics-addr", "", metricsAddrUsage)
	pf.register(f)
	tf.register(f, "server")
	f.DurationVar(&urgentSpin, "urgent-spin", 0, "busy-poll an urgent connection this long for the next demand request (0: default 200µs, negative: off)")
	return cmd
}
