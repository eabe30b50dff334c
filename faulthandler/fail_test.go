package faulthandler_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
	"github.com/pagewarp/pagewarp/pageserver"
	"github.com/pagewarp/pagewarp/wire"
)

// Fail-closed scenarios run in a child process: after the migration fails,
// Close takes the region away, and the thread still blocked on a missing
// page must die with SIGSEGV, never read zeros.
const envFail = "PAGEWARP_TEST_FAIL"

func init() {
	if sc := os.Getenv(envFail); sc != "" {
		os.Exit(runFailScenario(sc, os.Getenv("PAGEWARP_TEST_ADDR")))
	}
}

func runFailScenario(scenario, addr string) int {
	faulthandler.ReserveProcs(1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := faulthandler.Dial(ctx, "tcp", addr, faulthandler.Options{NoPull: true})
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	h.Start()
	ps := h.PageSize()
	read := make(chan byte, 1)
	go func() { read <- loadByte(h.Memory(), 5*ps+1) }()
	werr := h.Wait(ctx)
	fmt.Printf("wait: %v\n", werr)
	fmt.Printf("hash mismatch: %v, server gone: %v\n", errors.Is(werr, faulthandler.ErrHashMismatch), errors.Is(werr, faulthandler.ErrServerGone))
	select {
	case b := <-read:
		fmt.Printf("BUG: the faulting thread read %#x after the failure\n", b)
		return 1
	case <-time.After(200 * time.Millisecond):
		fmt.Println("faulting thread still blocked")
	}
	fmt.Printf("resident: %d\n", h.Stats().Resident)
	os.Stdout.Sync()
	h.Close()
	select {
	case b := <-read:
		fmt.Printf("BUG: the faulting thread read %#x after Close\n", b)
		return 1
	case <-time.After(5 * time.Second):
		fmt.Println("BUG: the faulting thread neither crashed nor read")
		return 1
	}
}

func runFailChild(t *testing.T, scenario, addr string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envFail+"="+scenario, "PAGEWARP_TEST_ADDR="+addr)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func checkFailedClosed(t *testing.T, stdout, stderr string, err error) {
	t.Helper()
	if strings.Contains(stdout, "BUG") {
		t.Fatalf("target:\n%s", stdout)
	}
	if !strings.Contains(stdout, "faulting thread still blocked") {
		t.Fatalf("target did not report the blocked thread:\n%s\n%s", stdout, stderr)
	}
	// The blocked thread retried its load after Close unmapped the region.
	if err == nil || !strings.Contains(stderr, "SIGSEGV") {
		t.Fatalf("target exited with %v, want a SIGSEGV crash; stderr:\n%s", err, stderr)
	}
}

// TestServerGoesAway: the page server shuts down while a thread waits for a
// page. The migration fails with ErrServerGone, the thread stays blocked,
// and after Close it faults instead of reading zeros.
func TestServerGoesAway(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	ps := os.Getpagesize()
	mem := make([]byte, 64*ps)
	bench.Content{Seed: 11}.Fill(mem, ps)
	rs, err := pageserver.NewRegionSource("slow", mem, ps)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The server goes away while it is serving the demand request: its
	// source holds the request long enough for Close to land first.
	read := make(chan struct{}, 1)
	srv := pageserver.New(slowSource{Source: rs, delay: 2 * time.Second, read: read}, pageserver.Options{})
	go srv.Serve(ln)
	go func() {
		<-read
		srv.Close()
	}()
	stdout, stderr, err := runFailChild(t, "server-gone", ln.Addr().String())
	if !strings.Contains(stdout, "server gone: true") {
		t.Fatalf("want ErrServerGone:\n%s\n%s", stdout, stderr)
	}
	checkFailedClosed(t, stdout, stderr, err)
}

// TestHashMismatch: a hostile server answers with a page whose hash does
// not match. Nothing is installed and the migration fails closed.
func TestHashMismatch(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	ps := os.Getpagesize()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go hostile(c, ps)
		}
	}()
	stdout, stderr, err := runFailChild(t, "bad-hash", ln.Addr().String())
	if !strings.Contains(stdout, "hash mismatch: true") || !strings.Contains(stdout, "resident: 0") {
		t.Fatalf("want ErrHashMismatch with nothing installed:\n%s\n%s", stdout, stderr)
	}
	checkFailedClosed(t, stdout, stderr, err)
}

// hostile speaks the protocol correctly but corrupts every page after
// hashing it.
func hostile(c net.Conn, ps int) {
	defer c.Close()
	r, w := wire.NewReader(c), wire.NewWriter(c)
	if _, err := r.ReadMessage(); err != nil {
		return
	}
	w.WriteMessage(&wire.Welcome{Version: wire.Version, Features: wire.FeatureZeroPages | wire.FeaturePageHashes,
		PageSize: uint32(ps), Regions: []wire.Region{{ID: 0, Name: "evil", Pages: 64}}, Server: "hostile"})
	w.Flush()
	for {
		m, err := r.ReadMessage()
		if err != nil {
			return
		}
		req, ok := m.(*wire.Request)
		if !ok {
			continue
		}
		data := bytes.Repeat([]byte{0x5a}, int(req.Count)*ps)
		hashes := make([]byte, 8*int(req.Count))
		for i := range int(req.Count) {
			h := xxh3.Hash(data[i*ps : (i+1)*ps])
			for j := range 8 {
				hashes[8*i+j] = byte(h >> (8 * j))
			}
		}
		data[len(data)-1] ^= 1 // the corruption
		w.WritePages(&wire.Pages{ReqID: req.ReqID, Region: req.Region, Page: req.Page, Count: req.Count,
			Flags: wire.FlagLast, Hashes: hashes, Data: data})
		w.Flush()
	}
}
