package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/internal/uffd"
)

// The test binary doubles as the CLI when PAGEWARP_CLI=1, so that commands
// which re-execute themselves (demo and bench start `pagewarp serve` in
// another process) work under test.
func TestMain(m *testing.M) {
	if os.Getenv("PAGEWARP_CLI") == "1" {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := run(ctx, os.Stdout, os.Stderr, os.Args[1:]); err != nil {
			os.Stderr.WriteString("pagewarp: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func skipWithoutUffd(t *testing.T) {
	t.Helper()
	u, err := uffd.Open(uffd.OpenOptions{})
	if errors.Is(err, uffd.ErrUnavailable) {
		t.Skipf("no userfaultfd on this machine: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	u.Close()
}

// TestServeReceive runs serve and receive --verify --out as a user would
// and compares the written file with the demo content byte for byte.
func TestServeReceive(t *testing.T) {
	skipWithoutUffd(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, pw, io.Discard, []string{"serve", "--demo", "8MiB", "--demo-seed", "3", "--demo-zero", "0.3", "--listen", "127.0.0.1:0"})
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var addr string
	for sc.Scan() {
		if m := regexp.MustCompile(`listening on (\S+)`).FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
			break
		}
	}
	if addr == "" {
		t.Fatalf("serve printed no address: %v", <-served)
	}
	go io.Copy(io.Discard, pr)

	out := filepath.Join(t.TempDir(), "copy.img")
	var stdout bytes.Buffer
	if err := run(ctx, &stdout, io.Discard, []string{"receive", "--connect", addr, "--verify", "--out", out}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"received 8MiB", "verified", "written to", "closed with bye"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("receive output lacks %q:\n%s", want, stdout.String())
		}
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	ps := os.Getpagesize()
	want := make([]byte, 8<<20)
	bench.Content{Seed: 3, ZeroFraction: 0.3}.Fill(want, ps)
	if !bytes.Equal(got, want) {
		t.Fatalf("written region differs from the source (page %d)", bench.Content{Seed: 3, ZeroFraction: 0.3}.Check(got, ps))
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop on cancel")
	}
}

func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve"}, "exactly one of --file"},
		{[]string{"serve", "--demo", "1MiB", "--file", "x"}, "exactly one of --file"},
		{[]string{"serve", "--demo", "12345"}, "multiple of the page size"},
		{[]string{"serve", "--demo", "lots"}, "--demo"},
		{[]string{"serve", "--demo", "1MiB", "--demo-zero", "2"}, "fraction"},
		{[]string{"serve", "--demo", "1MiB", "--listen", "0.0.0.0:0"}, "not a loopback address"},
		{[]string{"serve", "--file", "/nonexistent/mem.img"}, "no such file"},
		{[]string{"serve", "--bogus"}, "unknown flag"},
		{[]string{"receive"}, "--connect HOST:PORT is required"},
		{[]string{"receive", "--connect", "127.0.0.1:1"}, "connection refused"},
		{[]string{"receive", "--connect", "x:1", "--no-pull"}, "--no-pull needs --touch-threads"},
		{[]string{"receive", "--connect", "x:1", "--pull-chunk", "5000"}, "--pull-chunk"},
		{[]string{"bench", "faults", "--pull-size", "big"}, "--pull-size"},
	} {
		err := run(context.Background(), io.Discard, io.Discard, c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("pagewarp %s: error %v, want one containing %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}

// TestDemo runs a small demo end to end: a server in another process, a
// verified migration with touching threads, and the comparison table.
func TestDemo(t *testing.T) {
	skipWithoutUffd(t)
	t.Setenv("PAGEWARP_CLI", "1") // the re-executed test binary acts as the CLI
	var stdout bytes.Buffer
	if err := run(context.Background(), &stdout, io.Discard, []string{"demo", "--size", "16MiB", "--samples", "500"}); err != nil {
		t.Fatalf("demo: %v\n%s", err, stdout.String())
	}
	for _, want := range []string{"listening on", "verified", "userfaultfd-go mapper.Handle", "loopback TCP", "background pull over loopback"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, stdout.String())
		}
	}
}
