package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/hybrid"
	"github.com/pagewarp/pagewarp/metrics"
	"github.com/pagewarp/pagewarp/predictor"
	"github.com/pagewarp/pagewarp/qemu"
	"github.com/pagewarp/pagewarp/qemu/qmp"
	"github.com/pagewarp/pagewarp/qemu/switchctl"
)

// qmpDialTimeout bounds connecting to a QMP socket and its greeting. QEMU's -qmp socket serves
// one client at a time: a second client waits, without a greeting, until the first leaves.
const qmpDialTimeout = 10 * time.Second

// dialQMP connects to the QMP socket given with flag, with an error that names the flag.
func dialQMP(ctx context.Context, flag, path string) (*qmp.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, qmpDialTimeout)
	defer cancel()
	c, err := qmp.Dial(ctx, path)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("%s %s: no QMP greeting within %v (QEMU serves one client per -qmp socket: is another one connected?): %w", flag, path, qmpDialTimeout, err)
		}
		return nil, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	return c, nil
}

func newQemuCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "qemu",
		Short: "Prefetch and switch for QEMU's own post-copy migration",
		Long: `qemu works with QEMU's own migration (docs/qemu.md):

  pagewarp qemu proxy --listen 127.0.0.1:4445 --to 127.0.0.1:4444 --qmp src.qmp
      sits between the source (migrating to tcp:127.0.0.1:4445) and the destination
      (-incoming tcp:127.0.0.1:4444) and asks the source for the pages its predictor
      expects the destination to fault on next, once post-copy runs;
  pagewarp qemu switch --qmp src.qmp --dest-qmp dst.qmp --policy adaptive --migrate tcp:127.0.0.1:4444
      watches pre-copy and calls migrate-start-postcopy when the hybrid policy says so.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newQemuProxyCmd(g), newQemuSwitchCmd(g))
	return cmd
}

func newQemuProxyCmd(g *globals) *cobra.Command {
	var (
		listen, to, qmpPath, pred, metricsAddr string
		budget                                 int
		insecure                               bool
	)
	cmd := &cobra.Command{
		Use:   "proxy --to DEST_ADDR [--listen ADDR] [--qmp SRC_QMP_SOCKET]",
		Short: "Forward one QEMU migration and prefetch the destination's post-copy faults",
		Long: `proxy listens for the source QEMU's migration connections (migrate to tcp:LISTEN),
dials the destination QEMU (-incoming tcp:DEST_ADDR) for each, in the same order, and
forwards every byte both ways. On the return path it reads the destination's page
requests, feeds them to the predictor and, once post-copy runs, requests the predicted
pages from the source too (--budget per real request).

With --qmp the source's RAM blocks are read with x-query-ramblock and every injected
request is checked against them. Without --qmp nothing can be checked, so nothing is
injected: the proxy only forwards and counts.

It prints "listening on ADDR", serves one migration (it exits when the migration's
connections have all closed, or on interrupt) and prints a summary. A failed dial of
the destination ends it with an error (the source's migration then fails).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if to == "" {
				return errors.New("--to DEST_ADDR is required: the destination QEMU's -incoming address")
			}
			if err := checkListenAddr(listen, insecure); err != nil {
				return err
			}
			if !validPredictor(pred) {
				return fmt.Errorf("--predictor %q: %w (want ppm, nextn or none)", pred, predictor.ErrUnknownPredictor)
			}
			if budget < 1 || budget > 1024 {
				return fmt.Errorf("--budget %d: want 1..1024 predicted pages per request", budget)
			}
			if metricsAddr != "" {
				if err := checkMetricsAddr(metricsAddr, insecure); err != nil {
					return err
				}
			}
			log := g.logger()
			var blocks []qmp.RAMBlock
			if qmpPath != "" {
				c, err := dialQMP(ctx, "--qmp", qmpPath)
				if err != nil {
					return err
				}
				qctx, cancel := context.WithTimeout(ctx, qmpDialTimeout)
				blocks, err = c.RAMBlocks(qctx)
				cancel()
				c.Close() // free the monitor for other clients
				if err != nil {
					return fmt.Errorf("--qmp %s: %w", qmpPath, err)
				}
				for _, b := range blocks {
					fmt.Fprintf(g.stdout, "source RAM block %q: %s in pages of %d bytes\n", b.Name, bench.FormatSize(int64(b.Used)), b.PageSize)
				}
			} else {
				log.Warn("no --qmp: the proxy cannot check requests against the source's RAM blocks, so it injects nothing and only forwards")
				fmt.Fprintln(g.stdout, "no --qmp: forwarding only, no prefetching (requests cannot be validated without the source's RAM blocks)")
			}
			p, err := qemu.NewProxy(qemu.ProxyConfig{Listen: listen, Dest: to, Blocks: blocks, Predictor: pred, Budget: budget, Logger: log})
			if err != nil {
				return err
			}
			if metricsAddr != "" {
				reg := newMetricsRegistry()
				reg.MustRegister(metrics.NewQEMUProxyCollector(p, nil))
				stop, err := serveMetrics(metricsAddr, reg)
				if err != nil {
					p.Close()
					return err
				}
				defer stop()
				fmt.Fprintf(g.stdout, "metrics on http://%s/metrics\n", metricsAddr)
			}
			if len(blocks) > 0 && pred != "none" {
				fmt.Fprintf(g.stdout, "injecting up to %d pages predicted by %s per destination request, after post-copy starts\n", budget, pred)
			}
			fmt.Fprintf(g.stdout, "listening on %s, forwarding to %s\n", p.Addr(), to)
			start := time.Now()
			err = serveOneMigration(ctx, p)
			st := p.Stats()
			lat := p.ForwardLatency()
			fmt.Fprintf(g.stdout, "proxied %d connections for %v: %d destination requests (%d pages), %d pages injected, %d of them requested by the destination afterwards, %d predictions skipped as invalid, %d as already requested; %s to the destination, %s to the source\n",
				st.Connections, time.Since(start).Round(time.Millisecond), st.RealRequests, st.RealPages, st.Injected, st.InjectedThenRequested,
				st.SkippedInvalid, st.SkippedRequested, bench.FormatSize(st.BytesToDest), bench.FormatSize(st.BytesToSource))
			if n := lat.Count(); n > 0 {
				fmt.Fprintf(g.stdout, "added latency: %v mean over %d requests\n", (lat.Sum / time.Duration(n)).Round(100*time.Nanosecond), n)
			}
			if st.InjectionDisabled {
				fmt.Fprintf(g.stdout, "injection disabled: %s\n", st.DisabledReason)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:4445", "address the source migrates to (loopback unless --insecure)")
	f.StringVar(&to, "to", "", "the destination QEMU's incoming address, HOST:PORT (required)")
	f.StringVar(&qmpPath, "qmp", "", "the source QEMU's QMP socket, to read its RAM blocks (without it: forward only)")
	f.StringVar(&pred, "predictor", "ppm", "predictor of the next faults: ppm, nextn or none")
	f.IntVar(&budget, "budget", qemu.DefaultBudget, "predicted pages injected per destination request")
	f.StringVar(&metricsAddr, "metrics-addr", "", metricsAddrUsage)
	f.BoolVar(&insecure, "insecure", false, "allow a non-loopback --listen (page contents cross the network in clear) and --metrics-addr")
	return cmd
}

func validPredictor(name string) bool {
	return name == "ppm" || name == "nextn" || name == "none"
}

// serveOneMigration serves p until the connections of one migration have all closed, ctx ends
// or Serve fails.
func serveOneMigration(ctx context.Context, p *qemu.Proxy) error {
	errc := make(chan error, 1)
	go func() { errc <- p.Serve(ctx) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-errc:
			return err
		case <-tick.C:
			if st := p.Stats(); st.Connections > 0 && st.OpenConnections == 0 {
				p.Close()
				return <-errc
			}
		}
	}
}

func newQemuSwitchCmd(g *globals) *cobra.Command {
	var (
		srcPath, dstPath, policy, migrateURI, metricsAddr, maxBW string
		budget, poll, stall                                      time.Duration
		maxRounds                                                int
		asJSON, insecure                                         bool
	)
	cmd := &cobra.Command{
		Use:   "switch --qmp SRC_QMP_SOCKET --policy NAME [--dest-qmp DST_QMP_SOCKET] [--migrate URI]",
		Short: "Switch a QEMU migration to post-copy when a hybrid policy says so",
		Long: `switch sets postcopy-ram on the source (and postcopy-ram and postcopy-blocktime on
the destination with --dest-qmp), starts the migration with --migrate URI or waits for
one started by someone else, and watches the source's query-migrate. Each sync of QEMU's
dirty bitmap ends a pre-copy round; the policy is asked after each (and before the first),
and a switch becomes migrate-start-postcopy, a stop-and-copy a raised downtime-limit.
Every decision is printed with its reason; at the end, the source's and destination's
figures. --budget sets the source's downtime-limit (default: keep QEMU's).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if srcPath == "" {
				return errors.New("--qmp SRC_QMP_SOCKET is required: the source QEMU's QMP socket")
			}
			pol, err := hybrid.New(policy)
			if err != nil {
				return fmt.Errorf("--policy: %w", err)
			}
			if budget < 0 || budget > switchctl.MaxDowntimeLimit || maxRounds < 0 || poll < 0 || stall < 0 {
				return fmt.Errorf("--budget %v, --max-rounds %d, --poll %v, --stall-per-page %v: out of range", budget, maxRounds, poll, stall)
			}
			var bw uint64
			if maxBW != "" {
				n, err := bench.ParseSize(maxBW)
				if err != nil || n <= 0 {
					return fmt.Errorf("--max-bandwidth %q: want a size per second such as 32MiB", maxBW)
				}
				bw = uint64(n)
			}
			if metricsAddr != "" {
				if err := checkMetricsAddr(metricsAddr, insecure); err != nil {
					return err
				}
			}
			src, err := dialQMP(ctx, "--qmp", srcPath)
			if err != nil {
				return err
			}
			defer src.Close()
			var dst *qmp.Client
			if dstPath != "" {
				if dst, err = dialQMP(ctx, "--dest-qmp", dstPath); err != nil {
					return err
				}
				defer dst.Close()
			}
			out := g.stdout
			if asJSON {
				out = g.stderr
			}
			obs := &printObserver{w: out}
			if metricsAddr != "" {
				reg := newMetricsRegistry()
				rec, err := metrics.NewQEMUSwitch(reg, nil)
				if err != nil {
					return err
				}
				obs.next = rec
				stop, err := serveMetrics(metricsAddr, reg)
				if err != nil {
					return err
				}
				defer stop()
				fmt.Fprintf(out, "metrics on http://%s/metrics\n", metricsAddr)
			}
			res, err := switchctl.Run(ctx, switchctl.Config{
				Source: src, Dest: dst, Policy: pol, Budget: budget, MaxRounds: maxRounds, StallPerPage: stall,
				Migrate: migrateURI, MaxBandwidth: bw, Poll: poll, Logger: g.logger(), Observer: obs,
			})
			if len(res.Statuses) > 0 {
				if asJSON {
					if jerr := printJSON(g.stdout, res); jerr != nil && err == nil {
						err = jerr
					}
				} else {
					printSwitchReport(g.stdout, res)
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&srcPath, "qmp", "", "the source QEMU's QMP socket (required)")
	f.StringVar(&dstPath, "dest-qmp", "", "the destination QEMU's QMP socket: set its capabilities and report its figures")
	f.StringVar(&policy, "policy", "adaptive", "when to switch: "+strings.Join(hybrid.Names(), ", "))
	f.DurationVar(&budget, "budget", 0, "downtime budget, set as the source's downtime-limit (0: keep QEMU's, 300ms by default)")
	f.IntVar(&maxRounds, "max-rounds", hybrid.DefaultMaxRounds, "pre-copy rounds before a policy gives up on convergence")
	f.DurationVar(&stall, "stall-per-page", hybrid.DefaultPostcopyStallPerPage, "adaptive's estimate of what post-copy costs the guest per missing page")
	f.StringVar(&migrateURI, "migrate", "", "start the migration to this URI (tcp:HOST:PORT) once the capabilities are set; default: wait for one")
	f.StringVar(&maxBW, "max-bandwidth", "", "set the source's max-bandwidth, bytes per second (e.g. 32MiB; default: keep QEMU's)")
	f.DurationVar(&poll, "poll", switchctl.DefaultPoll, "query-migrate interval")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON (decisions and progress go to stderr)")
	f.StringVar(&metricsAddr, "metrics-addr", "", metricsAddrUsage)
	f.BoolVar(&insecure, "insecure", false, "allow a non-loopback --metrics-addr")
	return cmd
}

// printObserver prints each decision as it is taken and passes everything on to next.
type printObserver struct {
	w    io.Writer
	next *metrics.QEMUSwitch
}

func (o *printObserver) ObserveMigration(mi qmp.MigrationInfo) { o.next.ObserveMigration(mi) }

func (o *printObserver) ObserveRound(r hybrid.Round) {
	fmt.Fprintf(o.w, "round %d: %d dirty pages, %s sent in %v, %d pages remaining\n",
		r.Index, r.Dirty, bench.FormatSize(int64(r.Bytes)), r.Duration.Round(time.Millisecond), r.Remaining)
	o.next.ObserveRound(r)
}

func (o *printObserver) ObserveDecision(d hybrid.Decision) {
	when := fmt.Sprintf("after round %d", d.Round)
	if d.Round < 0 {
		when = "before any round"
	}
	fmt.Fprintf(o.w, "%s %s: %s: %s\n", d.Policy, when, d.Action, d.Reason)
	o.next.ObserveDecision(d)
}

var _ switchctl.Observer = (*printObserver)(nil)

// printSwitchReport prints the outcome and both sides' figures as a table.
func printSwitchReport(w io.Writer, res switchctl.Result) {
	fmt.Fprintf(w, "outcome: %s (%s)\nstatuses: %s\n", res.Outcome, res.Note, strings.Join(res.Statuses, " > "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "side\tstatus\ttotal\tdowntime\ttransferred\tprecopy\tpostcopy\trequests\tblocktime")
	s := res.Source
	var xfer, pre, post, req string = "-", "-", "-", "-"
	if s.RAM != nil {
		xfer, pre, post = bench.FormatSize(int64(s.RAM.Transferred)), bench.FormatSize(int64(s.RAM.PrecopyBytes)), bench.FormatSize(int64(s.RAM.PostcopyBytes))
		req = fmt.Sprint(s.RAM.PostcopyRequests)
	}
	fmt.Fprintf(tw, "source\t%s\t%dms\t%dms\t%s\t%s\t%s\t%s\t-\n", s.Status, s.TotalTime, s.Downtime, xfer, pre, post, req)
	if d := res.Dest; d != nil {
		bt := "-"
		if d.PostcopyBlocktime != nil {
			bt = fmt.Sprintf("%dms", *d.PostcopyBlocktime)
		}
		fmt.Fprintf(tw, "destination\t%s\t-\t-\t-\t-\t-\t-\t%s\n", d.Status, bt)
	}
	tw.Flush()
}
