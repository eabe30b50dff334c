package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pagewarp/pagewarp/predictor"
)

func newTraceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trace",
		Short: "Record fault sequences and evaluate predictors on them",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newTraceRecordCmd(g), newTraceEvalCmd(g))
	return cmd
}

func newTraceRecordCmd(g *globals) *cobra.Command {
	// Pushed pages do not fault: a trace is recorded without push.
	o := receiveOpts{touchSeed: 1, noPush: true}
	cmd := &cobra.Command{
		Use:   "record --connect HOST:PORT --out-trace FILE [--touch-threads N] [--no-pull]",
		Short: "Receive a region and write its demand-fault sequence to a trace file",
		Long: `record runs a receive (see 'pagewarp receive --help') and writes the pages of its demand
faults, in the order the fault handler read them, to a trace file (format in docs/prefetch.md).
With --no-pull every page faults once, so the trace is the workload's complete first-touch order:
the input 'trace eval' and predictor warming want. The server's push is declined, since a
pushed page that is used never faults.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.connect == "" || o.traceOut == "" {
				return errors.New("--connect HOST:PORT and --out-trace FILE are required")
			}
			if o.touchThreads <= 0 {
				return errors.New("--touch-threads must be at least 1: without a workload nothing faults")
			}
			sum, err := receive(cmd.Context(), g, o)
			if err != nil {
				return err
			}
			return printReceive(g.stdout, sum, o.asJSON)
		},
	}
	f := cmd.Flags()
	addWorkloadFlags(f, &o, 4)
	f.StringVar(&o.traceOut, "out-trace", "", "write the demand-fault sequence to this file")
	f.BoolVar(&o.noPull, "no-pull", false, "no background pull: every page faults (a complete first-touch trace)")
	f.BoolVar(&o.asJSON, "json", false, "print the summary as JSON")
	return cmd
}

// evalRow is one line of `trace eval`.
type evalRow struct {
	Trace string `json:"trace"`
	predictor.EvalResult
	Warmed bool `json:"warmed"`
}

func newTraceEvalCmd(g *globals) *cobra.Command {
	var (
		names  string
		k      int
		warm   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "eval [--predictors ppm,nextn,...] [--k 8] [--warm TRACE] TRACE...",
		Short: "Replay traces offline against predictors",
		Long: `eval replays each trace against each predictor with the same push budget (k pages per
fault) and prints demand faults, pages pushed, precision (pushed pages later touched / pushed)
and coverage (faults avoided / faults without prefetch). --warm feeds a recorded trace (an
earlier run of the same workload) to the predictors that learn from one (ppm, workingset); the
oracle always knows the evaluated trace itself.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			if k < 1 || k > 1024 {
				return fmt.Errorf("--k %d: want 1..1024 pages per fault", k)
			}
			var warmSeq []uint64
			if warm != "" {
				t, err := readTrace(warm)
				if err != nil {
					return err
				}
				warmSeq = t.Seq
			}
			var rows []evalRow
			for _, file := range files {
				t, err := readTrace(file)
				if err != nil {
					return err
				}
				for _, name := range strings.Split(names, ",") {
					p, err := predictor.New(strings.TrimSpace(name), predictor.Config{Pages: t.Pages})
					if err != nil {
						return err
					}
					warmed := false
					if w, ok := p.(predictor.Warmer); ok {
						switch {
						case p.Name() == "oracle":
							w.Warm(t.Seq)
						case warmSeq != nil:
							w.Warm(warmSeq)
							warmed = true
						}
					}
					rows = append(rows, evalRow{Trace: file, EvalResult: predictor.Evaluate(p, t.Seq, k), Warmed: warmed})
				}
			}
			if asJSON {
				return printJSON(g.stdout, map[string]any{"k": k, "results": rows})
			}
			printEval(g.stdout, rows, k)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&names, "predictors", strings.Join(predictor.Names(), ","), "predictors to evaluate, comma separated")
	f.IntVar(&k, "k", 8, "pages pushed per fault at most (the same budget for every predictor)")
	f.StringVar(&warm, "warm", "", "warm learning predictors with this recorded trace first")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printEval(w io.Writer, rows []evalRow, k int) {
	fmt.Fprintf(w, "push budget: %d pages per fault\n", k)
	fmt.Fprintf(w, "%-28s %-11s %9s %9s %9s %9s %9s\n", "trace", "predictor", "faults", "demand", "pushed", "precision", "coverage")
	for _, r := range rows {
		name := r.Predictor
		if r.Warmed {
			name += "*"
		}
		fmt.Fprintf(w, "%-28s %-11s %9d %9d %9d %9.3f %9.3f\n", trimPath(r.Trace, 28), name, r.Faults, r.DemandFaults, r.Pushed, r.Precision, r.Coverage)
	}
	fmt.Fprintln(w, "* warmed with --warm")
}

func trimPath(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n+1:]
}

func readTrace(path string) (predictor.Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return predictor.Trace{}, err
	}
	defer f.Close()
	t, err := predictor.ReadTrace(f)
	if err != nil {
		return predictor.Trace{}, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

func writeTrace(path string, t predictor.Trace) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := predictor.WriteTrace(f, t); err != nil {
		f.Close()
		return fmt.Errorf("write trace %s: %w", path, err)
	}
	return f.Close()
}
