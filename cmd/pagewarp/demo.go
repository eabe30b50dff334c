package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/bench/report"
	"github.com/pagewarp/pagewarp/pageserver"
)

func newDemoCmd(g *globals) *cobra.Command {
	var (
		size    string
		threads int
		samples int
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Migrate a demo region over loopback and compare fault service paths",
		Long: `demo starts a page server in another process serving a demo region (random
content, a quarter of the pages zero), receives it into a userfaultfd-registered
region while worker threads touch every page in random order, verifies the result
against the server's digest, and then measures fault latency and pull throughput
side by side (pagewarp in-process, pagewarp over loopback, userfaultfd-go), and
last compares prefetching predictors (none, nextn, ppm) on four workloads.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			n, err := bench.ParseSize(size)
			if err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			argv, err := exeArgv("serve", "--listen", "127.0.0.1:0", "--demo", strconv.FormatInt(n, 10), "--demo-zero", "0.25")
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "== 1. a page server in another process: %s\n", argv[0]+" serve --demo "+size+" --demo-zero 0.25")
			srv, err := bench.StartServer(ctx, argv)
			if err != nil {
				return err
			}
			defer srv.Stop()
			fmt.Fprintf(g.stdout, "   listening on %s\n\n", srv.Addr)

			fmt.Fprintf(g.stdout, "== 2. receive it: %d threads touch every page in random order while the background pull runs\n", threads)
			sum, err := receive(ctx, g, receiveOpts{connect: srv.Addr, verify: true, touchThreads: threads, touchSeed: uint64(time.Now().UnixNano())})
			if err != nil {
				return err
			}
			printReceive(g.stdout, sum, false)

			fmt.Fprintf(g.stdout, "\n== 3. fault latency and pull throughput, side by side\n")
			fargv, err := exeArgv("serve", "--listen", "127.0.0.1:0", "--demo", strconv.FormatInt(n, 10), "--demo-zero", "0", "--predictor", "none")
			if err != nil {
				return err
			}
			res, err := bench.Faults(ctx, bench.FaultsConfig{Samples: samples, PullSize: n, ServerArgv: fargv, Seed: 1})
			if err != nil {
				return err
			}
			printTable(g.stdout, "faults", res)

			fmt.Fprintf(g.stdout, "\n== 4. prefetching: the server pushes %d predicted pages after each demand fault (no pull)\n", pageserver.DefaultPushBudget)
			pargv, err := exeArgv("serve", "--listen", "127.0.0.1:0", "--demo", strconv.FormatInt(32<<20, 10), "--demo-zero", "0")
			if err != nil {
				return err
			}
			rep, err := bench.Prefetch(ctx, bench.PrefetchConfig{
				Workloads:  []string{"sequential", "interleaved", "pointer-chase", "random"},
				Predictors: []string{"none", "nextn", "ppm"},
				Size:       32 << 20, Threads: threads, Seed: 1, ServerArgv: pargv,
			})
			if err != nil {
				return err
			}
			printTable(g.stdout, "prefetch", rep)

			fmt.Fprintf(g.stdout, "\n== 5. pre-copy of a live region while 2 threads write to it: hash filter on and off, then the switch to post-copy\n")
			prep, err := bench.Precopy(ctx, bench.PrecopyConfig{
				Workloads: []string{"silent50", "zerodup"}, Size: 64 << 20, Threads: 2, Streams: []int{2}, Seed: 1,
			})
			if err != nil {
				return err
			}
			printTable(g.stdout, "precopy", prep)

			fmt.Fprintf(g.stdout, "\n== 6. live migration of a running workload between two processes, three switch policies\n")
			mf := migrateFlags{size: "64MiB", threads: 2, rate: 20000, duration: 2 * time.Second, budget: 20 * time.Millisecond,
				maxRounds: 30, streams: 2, link: "loopback", seed: 1}
			spec, err := mf.spec("silent50")
			if err != nil {
				return err
			}
			expected, err := spec.ExpectedChecksums()
			if err != nil {
				return err
			}
			margv, err := exeArgv()
			if err != nil {
				return err
			}
			var migrations []*bench.MigrateResult
			for _, p := range []string{"postcopy", "traditional", "adaptive"} {
				spec.Policy = p
				res, err := bench.Migrate(ctx, bench.MigrateConfig{Spec: spec, Argv: margv, Expected: expected})
				if err != nil {
					return fmt.Errorf("migrate with %s: %w", p, err)
				}
				migrations = append(migrations, res)
			}
			hrep := &bench.HybridReport{Results: migrations}
			fmt.Fprintln(g.stdout)
			if err := hrep.Table().Text(g.stdout); err != nil {
				return err
			}

			// One report folder with every section's tables, data and plots.
			all := &report.Report{Name: "demo", Title: "pagewarp demo", Command: commandLine(cmd),
				Data: map[string]any{"faults": res, "prefetch": rep, "precopy": prep, "hybrid": hrep}}
			for _, r := range []*report.Report{res.Report(), rep.Report(), prep.Report(), hrep.Report()} {
				all.Tables = append(all.Tables, r.Tables...)
				all.Charts = append(all.Charts, r.Charts...)
			}
			for i, t := range all.Tables {
				if t.Name == "" {
					t.Name = []string{"faults", "prefetch", "precopy", "hybrid"}[min(i, 3)]
				}
			}
			if err := writeBenchReport(g, cmd, "demo", all, false); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, "open its README.md for the plots: fault-latency CDFs, demand faults per predictor, bytes per round, a migration timeline")
			fmt.Fprintln(g.stdout, "\nmore: pagewarp migrate --help; pagewarp bench faults|prefetch|precopy|hybrid|qemu|all; pagewarp chaos; docs/architecture.md; docs/benchmarks.md")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&size, "size", "256MiB", "demo region size")
	f.IntVar(&threads, "threads", 4, "threads touching the region while it arrives")
	f.IntVar(&samples, "samples", 10000, "faults timed per mode in the comparison")
	f.String("out", "", "report folder (default bench-results/demo-TIMESTAMP)")
	f.Bool("no-report", false, "write no report folder")
	return cmd
}
