package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/qemu/guest"
)

func newBenchQEMUCmd(g *globals) *cobra.Command {
	var (
		patterns, modes            []string
		budget, repeat, reliable   int
		think, cpus                int
		memory, region             string
		maxBW, postcopyBW          string
		postcopyAfter, settle, per time.Duration
		preempt, asJSON            bool
		from, link                 string
	)
	cmd := &cobra.Command{
		Use:   "qemu [--json]",
		Short: "Real QEMU post-copy: demand requests and blocktime, plain and through the prefetching proxy",
		Long: `qemu migrates a running test guest between two real QEMU processes (TCG) with
post-copy, once per guest pattern and mode: plain (QEMU's own post-copy) and through
pagewarp's prefetching proxy with predictor none, nextn and ppm, all with the same
push budget. Every migration boots a fresh source and destination from the pattern's
one guest image and uses the same pre-copy time and bandwidth caps. The two QEMUs
run in two network namespaces joined by a 1 Gbit/s veth pair (--link), so the
network limits post-copy and urgent pages queue behind the background stream as on
a real link (on loopback, --link loopback, QEMU's max-postcopy-bandwidth caps the
background stream instead; QEMU 7.2 then serves a page request only at the next
100 ms rate-limit window, which swamps everything else). The guest computes between
page visits (--think; about 2,000 visits/s by default)
so that its page order, not only bandwidth, decides how often it waits. It reports the destination's
own page requests (counted at the proxy; for plain the source's ram.postcopy-requests),
the injected requests, the destination's postcopy-blocktime, the post-copy time, and
the guest's own count of the time it lost during post-copy (guest wait), and
checks the destination's guest memory after each migration. --repeat N runs each cell
N times and reports medians (and every run); --reliability N adds N proxied
migrations (predictors, patterns, postcopy-preempt off and on) and counts any that
paused or failed. Needs qemu-system-x86_64 (make deps-qemu).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from != "" {
				rep, err := loadReport[bench.QEMUReport](from)
				if err != nil {
					return err
				}
				return finishSuite(g, cmd, "qemu", rep, asJSON)
			}
			cfg := bench.QEMUConfig{Patterns: patterns, Modes: modes, Budget: budget, Think: think, CPUs: cpus, Repeat: repeat, Reliability: reliable,
				PostcopyAfter: postcopyAfter, Preempt: preempt, Settle: settle, RunTimeout: per}
			mem, err := bench.ParseSize(memory)
			if err != nil || mem <= 0 || mem%(1<<20) != 0 {
				return fmt.Errorf("--memory %q: want a whole number of MiB (%v)", memory, err)
			}
			cfg.MemMiB = int(mem >> 20)
			reg, err := bench.ParseSize(region)
			if err != nil || reg <= 0 || reg%guest.PageSize != 0 || reg/guest.PageSize > 1<<16 {
				return fmt.Errorf("--region %q: want a power of two of 4 KiB pages, 64KiB..256MiB (%v)", region, err)
			}
			cfg.RegionPages = uint32(reg / guest.PageSize)
			if cfg.Link, err = bench.ParseLink(link); err != nil {
				return fmt.Errorf("--link: %w", err)
			}
			switch postcopyBW {
			case "":
			case "none", "0":
				cfg.PostcopyBandwidth = bench.QEMUNoCap
			default:
				n, err := bench.ParseSize(postcopyBW)
				if err != nil || n <= 0 {
					return fmt.Errorf("--postcopy-bandwidth %q: want a positive size per second or none (%v)", postcopyBW, err)
				}
				cfg.PostcopyBandwidth = uint64(n)
			}
			for _, f := range []struct {
				name string
				s    string
				v    *uint64
			}{{"--bandwidth", maxBW, &cfg.MaxBandwidth}} {
				n, err := bench.ParseSize(f.s)
				if err != nil || n <= 0 {
					return fmt.Errorf("%s %q: want a positive size per second (%v)", f.name, f.s, err)
				}
				*f.v = uint64(n)
			}
			var log io.Writer = g.stderr
			if !asJSON {
				log = g.stdout
			}
			cfg.Log = log
			rep, err := bench.QEMU(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return finishSuite(g, cmd, "qemu", rep, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&patterns, "patterns", nil, "guest patterns (default: all of sequential, strided, hotset, chase, reverse)")
	f.IntVar(&cpus, "cpus", 1, "guest vCPUs (1 or 2), each running the pattern over its half of the region (visit rate and guest wait are vCPU 0's)")
	f.IntVar(&think, "think", bench.QEMUDefaultThink, "guest delay-loop iterations between page visits (about 2 ns each under TCG here); -1: none, the guest rewrites its region flat out")
	f.StringSliceVar(&modes, "modes", nil, "modes (default: all of "+strings.Join(bench.QEMUModes, ", ")+")")
	f.IntVar(&budget, "budget", bench.QEMUDefaultBudget, "pages the proxy injects after each real request, for every predictor")
	f.IntVar(&repeat, "repeat", 1, "migrations per cell; the table shows medians, the JSON every run too")
	f.IntVar(&reliable, "reliability", 0, "also run this many proxied migrations and count those that pause or fail")
	f.StringVar(&memory, "memory", "320MiB", "guest RAM")
	f.StringVar(&region, "region", "256MiB", "the guest's working region (a power of two of pages, inside RAM above 1 MiB)")
	f.StringVar(&maxBW, "bandwidth", "32MiB", "pre-copy bandwidth cap per second (max-bandwidth)")
	f.StringVar(&postcopyBW, "postcopy-bandwidth", "", "post-copy background bandwidth cap per second (QEMU's max-postcopy-bandwidth; default: none on a veth link, 16MiB on loopback; none)")
	f.StringVar(&link, "link", "veth:1gbit", "network between the QEMUs: veth:RATE[,DELAY] (two network namespaces, tc-shaped; needs root, falls back to loopback) or loopback")
	f.DurationVar(&postcopyAfter, "precopy", 500*time.Millisecond, "pre-copy time before migrate-start-postcopy")
	f.DurationVar(&settle, "settle", 300*time.Millisecond, "guest run time on the destination before its memory is verified")
	f.DurationVar(&per, "run-timeout", 3*time.Minute, "limit of one migration, start to verification")
	f.BoolVar(&preempt, "preempt", true, "postcopy-preempt in every migration of the matrix (--preempt=false: urgent pages share the main connection and wait behind its queue)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object {\"results\": [...], \"targets\": [...], \"setup\": {...}}")
	f.StringVar(&from, "from", "", "do not run: print (and write the report folder of) the result saved by an earlier --json run")
	return cmd
}
