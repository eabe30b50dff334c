package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/bench/report"
	"github.com/pagewarp/pagewarp/predictor"
)

func newBenchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench SUITE",
		Short: "Run a benchmark suite and print its figures",
		Long: `bench runs a benchmark suite, prints its table (or, with --json, one JSON object)
and writes a report folder: SUITE.json (what --json prints), SUITE.csv and table.txt
(the table), a PNG and an SVG of every plot, and a README.md listing them. The folder
is --out, by default bench-results/SUITE-YYYYMMDDTHHMMSSZ (UTC) under the current
directory; --no-report writes none. --from FILE re-renders the table and the folder
from a JSON an earlier run saved, without running.`,
		Args: cobra.NoArgs,
	}
	pf := cmd.PersistentFlags()
	pf.String("out", "", "report folder (default bench-results/SUITE-TIMESTAMP)")
	pf.Bool("no-report", false, "write no report folder")
	cmd.AddCommand(newBenchFaultsCmd(g), newBenchPrefetchCmd(g), newBenchPrecopyCmd(g), newBenchHybridCmd(g), newBenchQEMUCmd(g), newBenchAllCmd(g))
	return cmd
}

// benchReportDir is the report folder bench's --out and --no-report choose
// for suite ("" with --no-report).
func benchReportDir(cmd *cobra.Command, suite string, now time.Time) (string, error) {
	if f := cmd.Flag("no-report"); f != nil && f.Value.String() == "true" {
		return "", nil
	}
	f := cmd.Flag("out")
	if f == nil {
		return "", fmt.Errorf("bench %s: no --out flag", suite)
	}
	if f.Changed && f.Value.String() == "" {
		return "", errors.New("--out '': want a folder (--no-report writes none)")
	}
	if dir := f.Value.String(); dir != "" {
		return dir, nil
	}
	return filepath.Join("bench-results", suite+"-"+now.UTC().Format("20060102T150405Z")), nil
}

// writeBenchReport writes rep into the folder bench's --out and
// --no-report choose for suite and says where, with the number of files:
// on stdout after the table, on stderr with --json (stdout holds the one
// JSON object). The README quotes the command line.
func writeBenchReport(g *globals, cmd *cobra.Command, suite string, rep *report.Report, asJSON bool) error {
	dir, err := benchReportDir(cmd, suite, time.Now())
	if err != nil || dir == "" {
		return err
	}
	if rep.Command == "" {
		rep.Command = commandLine(cmd)
	}
	files, err := report.Dir{Path: dir}.Write(rep)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	w := g.stdout
	if asJSON {
		w = g.stderr
	}
	fmt.Fprintf(w, "report written to %s (%d files)\n", dir, len(files))
	return nil
}

// commandLine is the command with the flags that were set, for a report's
// README.
func commandLine(cmd *cobra.Command) string {
	parts := []string{cmd.CommandPath()}
	cmd.Flags().Visit(func(f *pflag.Flag) {
		v := f.Value.String()
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			v = strings.Join(sv.GetSlice(), ",")
		}
		if f.Value.Type() == "bool" && v == "true" {
			parts = append(parts, "--"+f.Name)
			return
		}
		if v == "" || strings.ContainsAny(v, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			v = strconv.Quote(v)
		}
		parts = append(parts, "--"+f.Name+" "+v)
	})
	return strings.Join(parts, " ")
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
		from       string
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
			if from != "" {
				res, err := loadReport[bench.FaultsResult](from)
				if err != nil {
					return err
				}
				return finishSuite(g, cmd, "faults", res, asJSON)
			}
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
				"--demo-seed", strconv.FormatUint(seed, 10), "--demo-zero", "0", "--urgent-spin", serverSpin.String(), "--predictor", "none")
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
			return finishSuite(g, cmd, "faults", res, asJSON)
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
	f.StringVar(&from, "from", "", "do not run: print (and write the report folder of) the result saved by an earlier --json run")
	return cmd
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
				return finishPrefetch(g, cmd, rep, plot, asJSON)
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
			return finishPrefetch(g, cmd, rep, plot, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&plot, "plot", "", "also write the plot of demand faults relative to none and precision to this file (PNG if it ends in .png, else SVG); the report folder has it too")
	f.StringVar(&from, "from", "", "do not run: print (and plot, and write the report folder of) the report saved by an earlier --json run")
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

// finishPrefetch prints a prefetch report, writes its --plot and its
// report folder.
func finishPrefetch(g *globals, cmd *cobra.Command, rep *bench.PrefetchReport, plot string, asJSON bool) error {
	if plot != "" {
		chart := bench.PrefetchChart(rep)
		if chart == nil {
			return fmt.Errorf("--plot %s: no results to plot", plot)
		}
		render := report.SVG
		if strings.EqualFold(filepath.Ext(plot), ".png") {
			render = report.PNG
		}
		b, err := render(chart)
		if err != nil {
			return fmt.Errorf("--plot %s: %w", plot, err)
		}
		if err := os.WriteFile(plot, b, 0o644); err != nil {
			return err
		}
	}
	if asJSON {
		if err := printJSON(g.stdout, rep); err != nil {
			return err
		}
	} else {
		printTable(g.stdout, "prefetch", rep)
		if plot != "" {
			fmt.Fprintf(g.stdout, "plot written to %s\n", plot)
		}
	}
	return writeBenchReport(g, cmd, "prefetch", rep.Report(), asJSON)
}

// suiteReport is what every bench suite's result offers: its table and its
// report folder.
type suiteReport interface {
	Table() *report.Table
	Report() *report.Report
}

// printTable prints a suite's table after a blank line.
func printTable(w io.Writer, suite string, r suiteReport) {
	fmt.Fprintln(w)
	if err := r.Table().Text(w); err != nil {
		fmt.Fprintf(w, "%s table: %v\n", suite, err)
	}
}

// finishSuite prints a suite's result, as JSON or as its table, and writes
// its report folder.
func finishSuite(g *globals, cmd *cobra.Command, suite string, r suiteReport, asJSON bool) error {
	if asJSON {
		if err := printJSON(g.stdout, r); err != nil {
			return err
		}
	} else {
		printTable(g.stdout, suite, r)
	}
	return writeBenchReport(g, cmd, suite, r.Report(), asJSON)
}
