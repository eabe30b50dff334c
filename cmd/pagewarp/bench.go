package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/predictor"
)

func newBenchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench SUITE",
		Short: "Run a benchmark suite and print its figures",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newBenchFaultsCmd(g), newBenchPrefetchCmd(g), newBenchPrecopyCmd(g), newBenchHybridCmd(g))
	return cmd
}

func newBenchFaultsCmd(g *globals) *cobra.Command {
	var (
		samples    int
		pullSize   string
		seed       uint64
		spin       time.Duration
		awaitSpin  time.Duration
		serverSpin time.Duration
		asJSON     bool
	)
	cmd := &cobra.Command{
		Use:   "faults [--json]",
		Short: "Fault latency (in-process, loopback, userfaultfd-go baseline) and pull throughput",
		Long: `faults measures, in one run and side by side, the latency a thread sees when it
touches a missing page: served by pagewarp from a source in the same process, by
pagewarp from a page server in another process over loopback TCP, and by
userfaultfd-go's own mapper.Handle loop; then the throughput of a full background
pull of a region over loopback. The page server is this binary re-run as
'pagewarp serve --demo'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			size, err := bench.ParseSize(pullSize)
			if err != nil {
				return fmt.Errorf("--pull-size: %w", err)
			}
			if samples <= 0 {
				return fmt.Errorf("--samples %d: want a positive count", samples)
			}
			pageSize := int64(os.Getpagesize())
			serve := max(size, int64(samples)*pageSize)
			serve = (serve + pageSize - 1) / pageSize * pageSize
			argv, err := exeArgv("serve", "--listen", "127.0.0.1:0", "--demo", strconv.FormatInt(serve, 10),
				"--demo-seed", strconv.FormatUint(seed, 10), "--demo-zero", "0", "--urgent-spin", serverSpin.String())
			if err != nil {
				return err
			}
			var log io.Writer = g.stderr
			if !asJSON {
				log = g.stdout
			}
			res, err := bench.Faults(cmd.Context(), bench.FaultsConfig{
				Samples: samples, PullSize: serve, ServerArgv: argv, Seed: seed, Spin: spin, AwaitSpin: awaitSpin, Log: log,
			})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.stdout, res)
			}
			printFaultsTable(g.stdout, res)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&samples, "samples", 20000, "faults timed per mode")
	f.StringVar(&pullSize, "pull-size", "256MiB", "region size for the pull throughput")
	f.Uint64Var(&seed, "seed", 1, "seed of the region content")
	f.DurationVar(&spin, "spin", 0, "fault loop busy-poll time (0: none, the default)")
	f.DurationVar(&awaitSpin, "await-spin", 0, "fault loop busy-poll for an awaited demand reply (0: default 500µs, negative: off)")
	f.DurationVar(&serverSpin, "server-spin", 0, "page server busy-poll of urgent connections (0: default 200µs, negative: off)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func printFaultsTable(w io.Writer, r *bench.FaultsResult) {
	fmt.Fprintf(w, "\nfault latency seen by the faulting thread (%d faults each, %d CPUs, Linux %s)\n", r.Samples, r.CPUs, r.Kernel)
	fmt.Fprintf(w, "  %-44s %10s %10s\n", "served by", "p50 µs", "p99 µs")
	fmt.Fprintf(w, "  %-44s %10.1f %10.1f\n", "userfaultfd-go mapper.Handle (baseline)", r.BaselineP50, r.BaselineP99)
	fmt.Fprintf(w, "  %-44s %10.1f %10.1f\n", fmt.Sprintf("pagewarp in-process (spin %.0fµs)", r.SpinMicros), r.InprocessP50, r.InprocessP99)
	fmt.Fprintf(w, "  %-44s %10.1f %10.1f\n", "pagewarp in-process (spin 50µs)", r.InprocessSpinP50, r.InprocessSpinP99)
	fmt.Fprintf(w, "  %-44s %10.1f %10.1f\n", "pagewarp, page server over loopback TCP", r.LoopbackP50, r.LoopbackP99)
	if r.BaselineNote != "" {
		fmt.Fprintf(w, "  baseline unavailable: %s\n", r.BaselineNote)
	} else {
		fmt.Fprintf(w, "  in-process p50 / baseline p50 = %.2f\n", r.InprocessOverBase)
	}
	fmt.Fprintf(w, "background pull over loopback: %s in %.3fs = %.2f GB/s\n", bench.FormatSize(r.PullBytes), r.PullSeconds, r.PullGbps)
}

func newBenchPrefetchCmd(g *globals) *cobra.Command {
	var (
		workloads, predictors []string
		size                  string
		threads, budget       int
		probeEvery            int
		seed                  uint64
		adaptive, pull        bool
		asJSON                bool
		plot, from            string
	)
	cmd := &cobra.Command{
		Use:   "prefetch [--json]",
		Short: "Demand faults, pushes and post-copy time per workload and predictor",
		Long: `prefetch migrates a demo region over loopback once per workload and predictor while
the workload runs on it with several threads, and reports demand faults (requests to
the source), pages pushed, pushed pages used, precision and the post-copy time. The
page server is this binary re-run as 'pagewarp serve --demo' with --predictor. Every
predictor gets the same push budget; by default the window is fixed at the budget and
there is no background pull, so the predictors alone make the difference. Each run's
workload checksum is compared with the same workload over the source's memory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from != "" {
				rep, err := loadReport[bench.PrefetchReport](from)
				if err != nil {
					return err
				}
				return finishPrefetch(g, rep, plot, asJSON)
			}
			sz, err := bench.ParseSize(size)
			if err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			if threads < 1 || budget < 1 || budget > 1024 {
				return fmt.Errorf("--threads %d / --budget %d: want at least 1 / 1..1024", threads, budget)
			}
			argv, err := exeArgv("serve", "--listen", "127.0.0.1:0", "--demo", strconv.FormatInt(sz, 10),
				"--demo-seed", strconv.FormatUint(seed, 10), "--demo-zero", "0")
			if err != nil {
				return err
			}
			var log io.Writer = g.stderr
			if !asJSON {
				log = g.stdout
			}
			rep, err := bench.Prefetch(cmd.Context(), bench.PrefetchConfig{
				Workloads: workloads, Predictors: predictors, Size: sz, Threads: threads, Seed: seed,
				Budget: budget, Adaptive: adaptive, ProbeEvery: probeEvery, Pull: pull, ServerArgv: argv, Log: log,
			})
			if err != nil {
				return err
			}
			return finishPrefetch(g, rep, plot, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&plot, "plot", "", "also write an SVG plot (demand faults relative to none, precision) to this file")
	f.StringVar(&from, "from", "", "do not run: print (and plot) the report saved by an earlier --json run")
	f.StringSliceVar(&workloads, "workloads", nil, "workloads to run (default: all of "+strings.Join(bench.WorkloadNames(), ", ")+")")
	f.StringSliceVar(&predictors, "predictors", nil, "predictors to compare (default: all of "+strings.Join(predictor.Names(), ", ")+")")
	f.StringVar(&size, "size", "64MiB", "region size")
	f.IntVar(&threads, "threads", 4, "threads running each workload")
	f.IntVar(&budget, "budget", 16, "most pages pushed after one demand fault, for every predictor")
	f.IntVar(&probeEvery, "probe-every", 8, "target probe sampling: one pushed page in N is held back until touched and reported (pushed_used is estimated from them); 1 counts every pushed page exactly but makes each used one a local fault")
	f.Uint64Var(&seed, "seed", 1, "content, layout and run seed (the warm-up run uses run seed+1)")
	f.BoolVar(&adaptive, "adaptive", false, "let the server adapt its push window (default: the full budget after every fault)")
	f.BoolVar(&pull, "pull", false, "run the background pull too")
	f.BoolVar(&asJSON, "json", false, "print one JSON object {\"results\": [...], \"setup\": {...}}")
	return cmd
}

// loadReport reads a report an earlier --json run saved, for --from.
func loadReport[T any](path string) (*T, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rep T
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("--from %s: %w", path, err)
	}
	return &rep, nil
}

// finishPrefetch prints a prefetch report and writes its plot.
func finishPrefetch(g *globals, rep *bench.PrefetchReport, plot string, asJSON bool) error {
	if plot != "" {
		if err := os.WriteFile(plot, bench.PrefetchSVG(rep), 0o644); err != nil {
			return err
		}
	}
	if asJSON {
		return printJSON(g.stdout, rep)
	}
	printPrefetchTable(g.stdout, rep)
	if plot != "" {
		fmt.Fprintf(g.stdout, "plot written to %s\n", plot)
	}
	return nil
}

func printPrefetchTable(w io.Writer, rep *bench.PrefetchReport) {
	s := rep.Setup
	fmt.Fprintf(w, "\nprefetch: %d pages of %d bytes, %d threads, budget %d pages per fault (%s), probe every %d, pull %v\n",
		s.Pages, s.PageSize, s.Threads, s.Budget, s.Window, s.ProbeEvery, s.Pull)
	none := map[string]uint64{}
	noneSec := map[string]float64{}
	for _, r := range rep.Results {
		if r.Predictor == "none" {
			none[r.Workload], noneSec[r.Workload] = r.DemandFaults, r.PostcopySeconds
		}
	}
	fmt.Fprintf(w, "%-13s %-10s %9s %8s %8s %8s %9s %8s %8s %s\n",
		"workload", "predictor", "demand", "pushed", "used", "precis.", "postcopy", "faults", "time", "ok")
	fmt.Fprintf(w, "%-13s %-10s %9s %8s %8s %8s %9s %8s %8s\n", "", "", "faults", "", "", "", "seconds", "/none", "/none")
	for _, r := range rep.Results {
		fr, tr := "-", "-"
		if n := none[r.Workload]; n > 0 {
			fr = fmt.Sprintf("%.3f", float64(r.DemandFaults)/float64(n))
		}
		if n := noneSec[r.Workload]; n > 0 {
			tr = fmt.Sprintf("%.3f", r.PostcopySeconds/n)
		}
		fmt.Fprintf(w, "%-13s %-10s %9d %8d %8d %8.3f %9.3f %8s %8s %v\n",
			r.Workload, r.Predictor, r.DemandFaults, r.Pushed, r.PushedUsed, r.Precision, r.PostcopySeconds, fr, tr, r.ResultOK)
	}
	fmt.Fprintf(w, "warming: %s\n", s.Warming)
}
