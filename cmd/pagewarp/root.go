package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// Version is the CLI's version, also sent to peers in Hello.
const Version = "0.1.0"

func run(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

type globals struct {
	stdout, stderr io.Writer
	logLevel       string
}

func (g *globals) logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: lvl}))
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "pagewarp",
		Short: "Post-copy live migration of memory with prefetching",
		Long: `pagewarp moves a region of memory from a source host to a target host so that the
workload on the target resumes at once: the target maps the region with userfaultfd,
every first touch of a missing page becomes a request to the source's page server,
and a background pull brings the rest.

  pagewarp serve --demo 256MiB                 # source: serve a demo region on 127.0.0.1:7070
  pagewarp receive --connect 127.0.0.1:7070 --verify
  pagewarp demo                                # both ends on loopback, with a comparison table
  pagewarp migrate --policy adaptive           # live-migrate a running workload between two processes
  pagewarp bench faults|prefetch|precopy|hybrid|qemu|all   # tables, JSON, CSV and plots in bench-results/
  pagewarp chaos --trials 100                  # fault injection: every trial correct or a clean failure`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	root.AddCommand(newServeCmd(g), newReceiveCmd(g), newTraceCmd(g), newBenchCmd(g), newDemoCmd(g), newMigrateCmd(g),
		newMigrateChildCmd(g, "source"), newMigrateChildCmd(g, "target"), newQemuCmd(g), newChaosCmd(g))
	return root
}

// checkListenAddr enforces the rule that memory contents are served on
// loopback unless the operator says otherwise, for listeners that carry
// memory in clear and cannot do TLS (qemu proxy: it must parse QEMU's
// stream). Page traffic with TLS flags uses checkPageAddr.
func checkListenAddr(addr string, insecure bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	if ip != nil && ip.IsLoopback() {
		return nil
	}
	if insecure {
		return nil
	}
	return fmt.Errorf("--listen %s is not a loopback address: memory contents are secrets and would cross the network "+
		"in clear (this listener cannot use TLS); pass --insecure to listen anyway on a network you trust", addr)
}

func exeArgv(args ...string) ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	return append([]string{exe}, args...), nil
}
