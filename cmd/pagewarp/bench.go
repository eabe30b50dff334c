package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/pagewarp/pagewarp/bench"
)

func newBenchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench SUITE",
		Short: "Run a benchmark suite and print its figures",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newBenchFaultsCmd(g))
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
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
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
