package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/hybrid"
	"github.com/pagewarp/pagewarp/internal/progress"
)

// migrateFlags are the flags a migration is described by, shared by
// migrate and bench hybrid.
type migrateFlags struct {
	workload  string
	size      string
	threads   int
	steps     uint64
	rate      float64
	duration  time.Duration
	policy    string
	budget    time.Duration
	maxRounds int
	streams   int
	link      string
	gang      int
	shared    float64
	seed      int64
	probe     string
	stall     time.Duration // 0: hybrid's default
}

// defaultProbe is the probe window of --probe auto for the policies that
// use a probe (adaptive).
const defaultProbe = 50 * time.Millisecond

// probeFor returns the probe window for policy: --probe auto probes for
// defaultProbe where the policy uses it and not at all elsewhere.
func (f *migrateFlags) probeFor(policy string) (time.Duration, error) {
	if f.probe == "auto" || f.probe == "" {
		if policy == "adaptive" {
			return defaultProbe, nil
		}
		return 0, nil
	}
	d, err := time.ParseDuration(f.probe)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("--probe %q: want auto, 0 or a duration such as 50ms", f.probe)
	}
	return d, nil
}

func (f *migrateFlags) register(cmd *cobra.Command, policies bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.size, "size", "256MiB", "region size (per workload)")
	fl.IntVar(&f.threads, "threads", 2, "threads running each workload")
	fl.Uint64Var(&f.steps, "steps", 0, "steps per thread for the whole run (default: --rate x --duration; runaway: what it makes in --duration here, unpaced)")
	fl.Float64Var(&f.rate, "rate", 20000, "steps per second per thread (runaway is never paced)")
	fl.DurationVar(&f.duration, "duration", 4*time.Second, "how long the paced workload runs in all, source and target together")
	if policies {
		fl.StringVar(&f.policy, "policy", "adaptive", "when to stop pre-copy: "+strings.Join(hybrid.Names(), ", "))
	}
	fl.DurationVar(&f.budget, "downtime-budget", 20*time.Millisecond, "the longest the workload may stand still at the switch")
	fl.IntVar(&f.maxRounds, "max-rounds", 30, "pre-copy rounds before a policy gives up on convergence")
	fl.IntVar(&f.streams, "streams", 2, "pre-copy streams")
	fl.StringVar(&f.link, "link", "loopback", "link between source and target: loopback, veth:RATE[,DELAY] (two network namespaces, tc-shaped; needs root), shaped:RATE[,DELAY] (in-process shaper)")
	fl.Int64Var(&f.seed, "seed", 1, "workload seed")
	fl.DurationVar(&f.stall, "stall-per-page", hybrid.DefaultPostcopyStallPerPage, "adaptive's estimate of what post-copy costs the workload per missing page")
	fl.StringVar(&f.probe, "probe", "auto", "measure the write rate this long before round 0 so the policy can switch before any round: auto (50ms for adaptive, none for the others), 0 (never) or a duration")
}

func (f *migrateFlags) spec(workload string) (bench.MigrateSpec, error) {
	sz, err := bench.ParseSize(f.size)
	if err != nil {
		return bench.MigrateSpec{}, fmt.Errorf("--size: %w", err)
	}
	link, err := bench.ParseLink(f.link)
	if err != nil {
		return bench.MigrateSpec{}, fmt.Errorf("--link: %w", err)
	}
	if f.stall < 0 {
		return bench.MigrateSpec{}, fmt.Errorf("--stall-per-page %v: want a positive duration (0: the default)", f.stall)
	}
	if f.threads < 1 || f.streams < 1 || f.streams > 16 || f.maxRounds < 1 || f.budget <= 0 {
		return bench.MigrateSpec{}, fmt.Errorf("--threads %d, --streams %d, --max-rounds %d, --downtime-budget %v: out of range", f.threads, f.streams, f.maxRounds, f.budget)
	}
	ps := int64(4096)
	if sz < ps || sz%ps != 0 {
		return bench.MigrateSpec{}, fmt.Errorf("--size %d is not a positive multiple of %d", sz, ps)
	}
	rate, steps := f.rate, f.steps
	if workload == "runaway" {
		rate = 0
		if steps == 0 {
			// Unpaced: as many steps as it makes in --duration here.
			r, err := bench.CalibrateRate(workload, int(sz/ps), f.threads, f.seed, 300*time.Millisecond)
			if err != nil {
				return bench.MigrateSpec{}, err
			}
			steps = uint64(r * f.duration.Seconds())
		}
	}
	if steps == 0 {
		steps = uint64(f.rate * f.duration.Seconds())
	}
	gang := max(f.gang, 1)
	if _, err := f.probeFor(f.policy); err != nil {
		return bench.MigrateSpec{}, err
	}
	return bench.MigrateSpec{
		Workload: workload, Pages: int(sz / ps), Threads: f.threads, Steps: steps, Rate: rate, Seed: f.seed,
		Gang: gang, Shared: f.shared, Policy: f.policy, StallPerPage: f.stall, Budget: f.budget, MaxRounds: f.maxRounds, Streams: f.streams, Link: link,
	}, nil
}

func newMigrateCmd(g *globals) *cobra.Command {
	var (
		f           migrateFlags
		asJSON      bool
		separate    bool
		metricsAddr string
		insecure    bool
	)
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Live-migrate a running workload from a source process to a target process",
		Long: `migrate starts a write workload (one of the bench mutators) in a source process and
migrates it, running, to a target process: pre-copy rounds while it writes, a switch
chosen by the hybrid policy (the workload stops at a step boundary, the pages it wrote
since the last round are invalidated on the target, its state is handed over), then the
workload resumes on the target at once while post-copy fetches what is missing. It
prints total time, downtime (from the workload's last step on the source to its first
on the target), pre-copy rounds, post-copy time, bytes, demand faults and the workload's
progress rate before, during and after, and checks the workload's final result against
a run without migration.

With --gang K it moves K co-located workloads at once, sharing one content index so that
pages they hold alike (--shared of each) cross the link once; --separate-index migrates
them with one index each, for comparison.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec, err := f.spec(f.workload)
			if err != nil {
				return err
			}
			if _, err := hybrid.New(spec.Policy); err != nil {
				return fmt.Errorf("--policy: %w", err)
			}
			spec.Separate = separate
			if spec.Probe, err = f.probeFor(spec.Policy); err != nil {
				return err
			}
			argv, err := exeArgv()
			if err != nil {
				return err
			}
			var log io.Writer = g.stderr
			cfg := bench.MigrateConfig{Spec: spec, Argv: argv, Log: log}
			if metricsAddr != "" {
				if err := checkMetricsAddr(metricsAddr, insecure); err != nil {
					return err
				}
				mm, err := bench.NewMigrateMetrics()
				if err != nil {
					return err
				}
				defer mm.Close()
				stop, err := serveMetrics(metricsAddr, newMetricsRegistry(), mm)
				if err != nil {
					return err
				}
				defer stop()
				fmt.Fprintf(g.stderr, "metrics on http://%s/metrics (source and target, label role)\n", metricsAddr)
				cfg.Metrics = mm
			}
			res, err := bench.Migrate(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.stdout, res)
			}
			printMigration(g.stdout, res)
			if !res.ResultOK {
				return fmt.Errorf("the workload's result on the target differs from a run without migration")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&f.workload, "workload", "silent50", "the workload: "+strings.Join(bench.MutatorNames, ", "))
	cmd.Flags().IntVar(&f.gang, "gang", 1, "co-located workloads migrated at once")
	cmd.Flags().Float64Var(&f.shared, "shared", 0.5, "with --gang: the share of each workload's pages all of them hold alike")
	cmd.Flags().BoolVar(&separate, "separate-index", false, "with --gang: one content index per workload (K separate migrations over one link)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", metricsAddrUsage+"; the source's and target's metrics, labelled role, while they run")
	cmd.Flags().BoolVar(&insecure, "insecure", false, "allow a non-loopback --metrics-addr")
	f.register(cmd, true)
	return cmd
}

func printMigration(w io.Writer, r *bench.MigrateResult) {
	conv := "converged"
	if !r.Converged {
		conv = "did not converge"
	}
	fmt.Fprintf(w, "migrated %s x%d with policy %s over %s: pre-copy %s, then %s\n", r.Workload, r.Gang, r.Policy, r.Link, conv, r.Action)
	fmt.Fprintf(w, "  migration %.3f s (first round to last page; whole run %.2f s); downtime %.2f ms; pre-copy %d rounds in %.3f s (%s); post-copy %.3f s (%s, %d demand faults, %d pages invalidated)\n",
		r.TotalSeconds, r.WallSeconds, r.DowntimeMs, r.PrecopyRounds, r.PrecopySeconds, bench.FormatSize(int64(r.PrecopyBytes)),
		r.PostcopySeconds, bench.FormatSize(int64(r.PostcopyBytes)), r.DemandFaults, r.Invalidated)
	fmt.Fprintf(w, "  bytes sent %s; workload steps/s before %.0f, during pre-copy %.0f, after the switch %.0f\n",
		bench.FormatSize(int64(r.BytesSent)), r.RateBefore, r.RateDuring, r.RateAfter)
	if r.Source != nil {
		if p := r.Source.Probe; p != nil {
			fmt.Fprintf(w, "  probe: %d pages written in %.0f ms before round 0, about %d of them changed (%d of %d sampled)\n",
				p.Written, p.Window.Seconds()*1e3, p.Changed(), p.SampledChanged, p.Sampled)
		}
	}
	for _, d := range r.Decisions {
		when := fmt.Sprintf("after round %d", d.Round)
		if d.Round < 0 {
			when = "before any round"
		}
		fmt.Fprintf(w, "  %s: %s (%s)\n", when, d.Action, d.Reason)
	}
	if r.ResultOK {
		fmt.Fprintf(w, "  result: the workload's checksum equals that of the same run without migration\n")
	} else {
		fmt.Fprintf(w, "  result: MISMATCH against the run without migration\n")
	}
}

// newMigrateChildCmd is the hidden source or target half of a migration,
// run by migrate in its own process (and network namespace).
func newMigrateChildCmd(g *globals, role string) *cobra.Command {
	var specJSON string
	cmd := &cobra.Command{
		Use:    "migrate-" + role,
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var spec bench.MigrateSpec
			if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
				return fmt.Errorf("--spec: %w", err)
			}
			if role == "source" {
				return bench.RunMigrateSource(cmd.Context(), spec, g.stdout)
			}
			return bench.RunMigrateTarget(cmd.Context(), spec, g.stdout)
		},
	}
	cmd.Flags().StringVar(&specJSON, "spec", "", "the migration, as JSON (set by migrate)")
	return cmd
}

func newBenchHybridCmd(g *globals) *cobra.Command {
	var (
		f         migrateFlags
		workloads []string
		policies  []string
		asJSON    bool
		from      string
	)
	cmd := &cobra.Command{
		Use:   "hybrid [--json]",
		Short: "Live migrations of each workload with each switch policy, over one link",
		Long: `hybrid live-migrates each write workload once per switch policy (see 'pagewarp migrate')
between two processes over the same link, by default a 1 Gbit/s link (a tc-shaped veth pair
between two network namespaces when this process may create them, an in-process shaper
otherwise), slower than the runaway workload's dirty rate. It reports per run whether
pre-copy converged, total time, downtime, post-copy time, bytes, demand faults and whether
the workload's result equals that of a run without migration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from != "" {
				rep, err := loadReport[bench.HybridReport](from)
				if err != nil {
					return err
				}
				return finishSuite(g, cmd, "hybrid", rep, asJSON)
			}
			for _, p := range policies {
				if _, err := hybrid.New(p); err != nil {
					return fmt.Errorf("--policies: %w", err)
				}
			}
			argv, err := exeArgv()
			if err != nil {
				return err
			}
			var log io.Writer = g.stderr
			if !asJSON {
				log = g.stdout
			}
			var results []*bench.MigrateResult
			// On a terminal, a line of runs done, bytes moved, rate and ETA.
			var line *progress.Line
			if !asJSON {
				line = progress.New(g.stdout, "bench hybrid", "runs")
				log = line.Writer(log)
			}
			defer line.Done()
			line.Update(0, uint64(len(workloads)*len(policies)), 0)
			var moved int64
			for _, w := range workloads {
				spec, err := f.spec(w)
				if err != nil {
					return err
				}
				expected, err := spec.ExpectedChecksums()
				if err != nil {
					return fmt.Errorf("%s: reference run: %w", w, err)
				}
				for _, p := range policies {
					spec.Policy = p
					if spec.Probe, err = f.probeFor(p); err != nil {
						return err
					}
					res, err := bench.Migrate(cmd.Context(), bench.MigrateConfig{Spec: spec, Argv: argv, Expected: expected, Log: log})
					if err != nil {
						return fmt.Errorf("%s with %s: %w", w, p, err)
					}
					fmt.Fprintf(log, "hybrid %-9s %-11s converged=%-5v total %.2fs downtime %.1fms post-copy %.2fs %s ok=%v\n",
						w, p, res.Converged, res.TotalSeconds, res.DowntimeMs, res.PostcopySeconds, bench.FormatSize(int64(res.BytesSent)), res.ResultOK)
					res.Source, res.Target = nil, nil
					results = append(results, res)
					moved += int64(res.BytesSent)
					line.Update(uint64(len(results)), uint64(len(workloads)*len(policies)), moved)
				}
			}
			return finishSuite(g, cmd, "hybrid", &bench.HybridReport{Results: results}, asJSON)
		},
	}
	f.register(cmd, false)
	// Long enough that the workload still runs when the slowest policy
	// switches: round 0 alone takes 2 s for 256 MiB at 1 Gbit/s.
	cmd.Flags().Lookup("duration").DefValue = "8s"
	cmd.Flags().Set("duration", "8s")
	// Round 0 of 128 MiB takes about a second at 1 Gbit/s: 5 rounds let
	// precopy give up on the runaway workload while it still runs.
	cmd.Flags().Lookup("size").DefValue = "128MiB"
	cmd.Flags().Set("size", "128MiB")
	cmd.Flags().Lookup("max-rounds").DefValue = "5"
	cmd.Flags().Set("max-rounds", "5")
	cmd.Flags().Lookup("link").DefValue = "veth:1gbit"
	cmd.Flags().Set("link", "veth:1gbit")
	cmd.Flags().StringSliceVar(&workloads, "workloads", []string{"silent50", "phases", "zerodup", "runaway"}, "workloads to migrate")
	cmd.Flags().StringSliceVar(&policies, "policies", hybrid.Names(), "switch policies to compare")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object {\"results\": [...]}")
	cmd.Flags().StringVar(&from, "from", "", "do not run: print (and write the report folder of) the report saved by an earlier --json run")
	return cmd
}
