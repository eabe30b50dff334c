package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/precopy"
)

func newBenchPrecopyCmd(g *globals) *cobra.Command {
	var (
		workloads []string
		streams   []int
		filters   []string
		size      string
		threads   int
		rounds    int
		interval  time.Duration
		rate      float64
		track     string
		hash      string
		seed      int64
		asJSON    bool
		from      string
	)
	cmd := &cobra.Command{
		Use:   "precopy [--json]",
		Short: "Pre-copy rounds of live write workloads: filter, zero/duplicate pages, streams",
		Long: `precopy pre-copies a live region over loopback once per write workload, hash-filter
setting and stream count, while the workload writes to it with several threads: round 0,
then --rounds rounds started every --interval, then the switch (the workload pauses, the
pages written since the last round are dropped on the target and post-copy fetches them)
and a byte-for-byte check of the target's copy. It reports per run the pages dirty,
fake dirty (skipped by the hash filter), zero, duplicate, sent and rejected (torn), the
bytes sent, round 0's throughput, and memcpy's throughput measured in the same run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from != "" {
				rep, err := loadReport[bench.PrecopyReport](from)
				if err != nil {
					return err
				}
				return finishSuite(g, cmd, "precopy", rep, asJSON)
			}
			sz, err := bench.ParseSize(size)
			if err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			var fs []bool
			for _, f := range filters {
				switch f {
				case "on":
					fs = append(fs, true)
				case "off":
					fs = append(fs, false)
				default:
					return fmt.Errorf("--filters %q: want on, off or on,off", f)
				}
			}
			h, err := precopy.ParseHashAlg(hash)
			if err != nil {
				return fmt.Errorf("--hash: %w", err)
			}
			mode, err := precopy.ParseTrackMode(track)
			if err != nil {
				return fmt.Errorf("--track: %w", err)
			}
			if threads < 1 || rounds < 1 || interval <= 0 || rate < 0 {
				return fmt.Errorf("--threads %d, --rounds %d, --interval %v, --rate %v: want positive values", threads, rounds, interval, rate)
			}
			var log io.Writer = g.stderr
			if !asJSON {
				log = g.stdout
			}
			rep, err := bench.Precopy(cmd.Context(), bench.PrecopyConfig{
				Workloads: workloads, Size: sz, Threads: threads, Streams: streams, Filters: fs,
				Rounds: rounds, Interval: interval, Rate: rate, Track: mode, Hash: h, Seed: seed, Log: log,
			})
			if err != nil {
				return err
			}
			return finishSuite(g, cmd, "precopy", rep, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&workloads, "workloads", nil, "write workloads (default: all of "+strings.Join(bench.MutatorNames, ", ")+")")
	f.IntSliceVar(&streams, "streams", []int{1, 2, 4}, "pre-copy stream counts to compare")
	f.StringSliceVar(&filters, "filters", []string{"on", "off"}, "hash filter settings to compare")
	f.StringVar(&size, "size", "256MiB", "region size")
	f.IntVar(&threads, "threads", 2, "threads writing the region")
	f.IntVar(&rounds, "rounds", 6, "rounds after round 0 (the filter comparison uses rounds 2 and later)")
	f.DurationVar(&interval, "interval", 100*time.Millisecond, "time from one round's start to the next")
	f.Float64Var(&rate, "rate", 20000, "steps per second per thread of the paced workloads (runaway is never paced)")
	f.StringVar(&track, "track", "auto", "dirty tracking: auto, wp-async, wp-sync or rehash")
	f.StringVar(&hash, "hash", "xxh3", "content hash for the filter and duplicates: xxh3 or sha256")
	f.Int64Var(&seed, "seed", 1, "workload seed")
	f.BoolVar(&asJSON, "json", false, "print one JSON object {\"results\": [...], \"setup\": {...}}")
	f.StringVar(&from, "from", "", "do not run: print (and write the report folder of) the report saved by an earlier --json run")
	return cmd
}
