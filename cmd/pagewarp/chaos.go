package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pagewarp/pagewarp/bench"
)

func newChaosCmd(g *globals) *cobra.Command {
	var (
		f         migrateFlags
		trials    int
		seed      uint64
		scenarios []string
		conns     int
		window    time.Duration
		timeout   time.Duration
		resume    time.Duration
		stall     time.Duration
		asJSON    bool
	)
	cmd := &cobra.Command{
		Use:   "chaos [--trials N] [--fault-seed S]",
		Short: "Fault injection: live migrations with dropped, stalled, slowed, reordered or corrupted connections and a killed source",
		Long: `chaos runs N live migrations (see 'pagewarp migrate') with one fault each. The kinds of
fault take turns; where and when each strikes is drawn from a generator seeded by
(--fault-seed, trial number): a connection cut at a random time (pre-copy,
the switch or post-copy), the source process killed, a connection stalled for up to 3 s,
a slow connection, two connections slowed unequally (bytes arrive in another order than
they were sent across streams), or one bit flipped in a connection's byte stream. A fault
injector sits between target and source on loopback; the source's side of the link is
shaped (--link) so that a migration lasts long enough to be hit in every phase. Before the
trials, one fault-free migration per policy measures how long a migration takes, and timed
faults are drawn within that time (--window sets it instead).

Each trial must end with the workload's result equal to a run without migration
(correct), or with a clean failure: the target reports an error and its workload is
stopped. A target that finishes with a different result (silent corruption), or a trial
that does not end within --trial-timeout, fails. The last line is 'chaos: N passed, N
failed'; the exit status is non-zero if any trial failed. The same seed draws the same
faults; where they land in a migration depends on timing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec, err := f.spec("silent50")
			if err != nil {
				return err
			}
			argv, err := exeArgv()
			if err != nil {
				return err
			}
			var log io.Writer = g.stdout
			if asJSON {
				log = g.stderr
			}
			rep, err := bench.Chaos(cmd.Context(), bench.ChaosConfig{
				Spec: spec, Argv: argv, Trials: trials, Seed: seed, Scenarios: scenarios, Conns: conns,
				Window: window, TrialTimeout: timeout, ResumeDeadline: resume, StallTimeout: stall, Log: log,
			})
			if err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(g.stdout, rep); err != nil {
					return err
				}
			} else {
				var by []string
				for _, o := range []string{bench.OutcomeCorrect, bench.OutcomeCleanFailure, bench.OutcomeCorrupt, bench.OutcomeHang} {
					by = append(by, fmt.Sprintf("%s %d", o, rep.ByOutcome[o]))
				}
				fmt.Fprintf(g.stdout, "\noutcomes: %s; the fault struck in %d of %d trials\n", strings.Join(by, ", "), rep.FiredTrials, len(rep.Trials))
			}
			fmt.Fprintf(log, "chaos: %d passed, %d failed\n", rep.Passed, rep.Failed)
			return bench.ErrChaosFailed(rep)
		},
	}
	f.register(cmd, false)
	for name, def := range map[string]string{"size": "16MiB", "duration": "4s", "link": "shaped:200mbit"} {
		cmd.Flags().Lookup(name).DefValue = def
		cmd.Flags().Set(name, def)
	}
	fl := cmd.Flags()
	fl.IntVar(&trials, "trials", 100, "migrations to run, one fault each")
	fl.Uint64Var(&seed, "fault-seed", 1, "seed of the fault draw (--seed is the workload's)")
	fl.StringSliceVar(&scenarios, "scenarios", nil, "faults to draw from (default: all of "+strings.Join(bench.ChaosScenarios, ", ")+")")
	fl.IntVar(&conns, "conns", 4, "how many of the target's first connections a fault may pick")
	fl.DurationVar(&window, "window", 0, "timed faults fall within this long after a migration starts (0: each policy's fault-free migration time, measured first)")
	fl.DurationVar(&timeout, "trial-timeout", 90*time.Second, "a trial still running after this long is a hang")
	fl.DurationVar(&stall, "stall-timeout", 2*time.Second, "how long a target's connection with replies outstanding may stay silent before the target takes the link as lost and resumes")
	fl.DurationVar(&resume, "resume-deadline", 5*time.Second, "how long the target tries to reconnect to a lost source before it fails")
	fl.BoolVar(&asJSON, "json", false, "print the report as JSON (trial lines on stderr)")
	return cmd
}
