// Package qemutest starts and drives real QEMU processes for tests: the launcher of package
// launch (a source and a destination qemu-system-x86_64 under TCG booting a guest.Build boot
// sector; a post-copy migration between them; a verified dump of the guest's memory) with the
// test conveniences: a skip when QEMU is not installed, VMs killed at t.Cleanup, t.Fatal on
// errors. Benchmarks use package launch directly.
//
// Nothing here needs root; QEMU must be installed (make deps-qemu).
package qemutest

import (
	"context"
	"testing"

	"github.com/pagewarp/pagewarp/qemu/guest"
	"github.com/pagewarp/pagewarp/qemu/launch"
)

// The launcher's types and helpers, under the names the tests have always used.
type (
	Options   = launch.Options
	VM        = launch.VM
	Migration = launch.Migration
	Result    = launch.Result
)

// BinaryEnv names the environment variable that overrides the QEMU binary.
const BinaryEnv = launch.BinaryEnv

// ErrNotPostcopy is returned by Migrate when the migration completed without entering post-copy.
var ErrNotPostcopy = launch.ErrNotPostcopy

// Binary returns the path of qemu-system-x86_64 ($PAGEWARP_QEMU if set).
func Binary() (string, error) { return launch.Binary() }

// Start starts a VM and connects to its QMP socket (launch.Start).
func Start(ctx context.Context, o Options) (*VM, error) { return launch.Start(ctx, o) }

// Migrate runs a post-copy migration from src to dst (launch.Migrate).
func Migrate(ctx context.Context, src, dst *VM, m Migration) (Result, error) {
	return launch.Migrate(ctx, src, dst, m)
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) { return launch.FreePort() }

// Require returns the QEMU binary or skips t when qemu-system-x86_64 is not installed, saying
// how to install it.
func Require(t testing.TB) string {
	t.Helper()
	b, err := Binary()
	if err != nil {
		t.Skipf("qemu-system-x86_64 not installed (%v): run `make deps-qemu` (as root) to install Debian's qemu-system-x86", err)
	}
	if err := launch.PostcopyUsable(); err != nil {
		t.Skip(err)
	}
	return b
}

// StartT starts a VM for a test: fatal on error, killed at cleanup.
func StartT(t testing.TB, ctx context.Context, o Options) *VM {
	t.Helper()
	Require(t)
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	v, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Kill() })
	return v
}

// StartPair starts a source running pattern p and a destination waiting (-incoming defer) in one
// temporary directory, and waits until the source's guest has completed a pass. Both are
// killed at cleanup.
func StartPair(t testing.TB, ctx context.Context, p guest.Pattern, c guest.Config) (src, dst *VM) {
	t.Helper()
	Require(t)
	src, dst, err := launch.StartPair(ctx, Options{Dir: t.TempDir()}, p, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Kill(); dst.Kill() })
	return src, dst
}
