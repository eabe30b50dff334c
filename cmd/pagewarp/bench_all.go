package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// allSuites are the suites `bench all` runs, in order, and the flags each
// runs with (their defaults otherwise).
var allSuites = []struct {
	name string
	args []string
}{
	{"faults", nil},
	{"prefetch", nil},
	{"precopy", nil},
	{"hybrid", nil},
	{"qemu", nil},
}

func newBenchAllCmd(g *globals) *cobra.Command {
	var skip []string
	cmd := &cobra.Command{
		Use:   "all",
		Short: "Run every suite with its defaults, each into a folder of one report",
		Long: `all runs the suites faults, prefetch, precopy, hybrid and qemu one after the other with
their default settings, each writing its report folder under --out (default
bench-results/all-TIMESTAMP/SUITE), and writes a README.md there linking them. It stops
at the first suite that fails. --skip leaves suites out (say, qemu on a machine without
QEMU). This takes a while: the hybrid suite alone migrates 24 workloads over a 1 Gbit/s
link.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, s := range skip {
				if !suiteKnown(s) {
					return fmt.Errorf("--skip %s: want some of %s", s, suiteNames())
				}
			}
			dir, err := benchReportDir(cmd, "all", time.Now())
			if err != nil {
				return err
			}
			if dir == "" {
				return fmt.Errorf("bench all writes its suites' folders: --no-report leaves nothing to do")
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			var index []string
			for _, s := range allSuites {
				if slices.Contains(skip, s.name) {
					continue
				}
				sub := filepath.Join(dir, s.name)
				fmt.Fprintf(g.stdout, "\n==== bench %s\n", s.name)
				start := time.Now()
				args := append([]string{"bench", s.name, "--out", sub}, s.args...)
				if err := run(cmd.Context(), g.stdout, g.stderr, args); err != nil {
					return fmt.Errorf("bench %s: %w", s.name, err)
				}
				index = append(index, fmt.Sprintf("- [%s](%s/README.md): `pagewarp %s` (%s)", s.name, s.name,
					strings.Join(args, " "), time.Since(start).Round(time.Second)))
			}
			readme := "# pagewarp bench all\n\nOne folder per suite, each with its table, data and plots:\n\n" + strings.Join(index, "\n") + "\n"
			if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte(readme), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "\nall suites written to %s (README.md links them)\n", dir)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&skip, "skip", nil, "suites to leave out: "+suiteNames())
	return cmd
}

func suiteKnown(name string) bool {
	for _, s := range allSuites {
		if s.name == name {
			return true
		}
	}
	return false
}

func suiteNames() string {
	var n []string
	for _, s := range allSuites {
		n = append(n, s.name)
	}
	return strings.Join(n, ", ")
}
