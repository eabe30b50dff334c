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

// Fail-closed scenarios run in a child process (this test binary run
// again): after the migration fails, a thread blocked on a missing page
// must never return with a page that did not arrive. The child reports
// what it sees; how it ends depends on PAGEWARP_TEST_END:
//
//   - "stay": after Close the thread is still blocked, and so is a thread
//     that touches another missing page after Close; the child then exits
//     normally, neither thread having read anything.
//   - "release": after Close, Release takes the region away: the blocked
//     thread dies with SIGSEGV.
//   - "exit": ExitOnFailure, registered before the failure, ends the child
//     with status 3.
const envFail = "PAGEWARP_TEST_FAIL"

func init() {
	if sc := os.Getenv(envFail); sc != "" {
		os.Exit(runFailScenario(sc, os.Getenv("PAGEWARP_TEST_ADDR"), os.Getenv("PAGEWARP_TEST_END")))
	}
}

func runFailScenario(scenario, addr, end string) int {
	faulthandler.ReserveProcs(2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	deadline, _ := time.ParseDuration(os.Getenv("PAGEWARP_TEST_RESUME"))
	stall, _ := time.ParseDuration(os.Getenv("PAGEWARP_TEST_STALL")) // 0 (unset): the default
	h, err := faulthandler.Dial(ctx, "tcp", addr, faulthandler.Options{NoPull: true, ResumeDeadline: deadline, StallTimeout: stall})
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	if end == "exit" {
		h.OnFailure(faulthandler.ExitOnFailure(os.Stdout, 3))
	}
	h.Start()
	ps := h.PageSize()
	mem := h.Memory()
	read := make(chan byte, 2)
	go func() { read <- loadByte(mem, 5*ps+1) }()
	t0 := time.Now()
	werr := h.Wait(ctx)
	fmt.Printf("wait: %v\n", werr)
	fmt.Printf("failed after: %v\n", time.Since(t0))
	fmt.Printf("hash mismatch: %v, server gone: %v, resume deadline: %v, stalled: %v\n", errors.Is(werr, faulthandler.ErrHashMismatch),
		errors.Is(werr, faulthandler.ErrServerGone), errors.Is(werr, faulthandler.ErrResumeDeadline), errors.Is(werr, faulthandler.ErrStalled))
	st := h.Stats()
	fmt.Printf("stalls: %d, resumes: %d\n", st.Stalls, st.Resumes)
	select {
	case b := <-read:
		fmt.Printf("BUG: the faulting thread read %#x after the failure\n", b)
		return 1
	case <-time.After(200 * time.Millisecond):
		fmt.Println("faulting thread still blocked")
	}
	fmt.Printf("resident: %d\n", h.Stats().Resident)
	os.Stdout.Sync()
	if err := h.Close(); err != nil {
		fmt.Println("close:", err)
	}
	go func() { read <- loadByte(mem, 9*ps+1) }() // a touch after Close
	select {
	case b := <-read:
		fmt.Printf("BUG: a faulting thread read %#x after Close\n", b)
		return 1
	case <-time.After(500 * time.Millisecond):
		fmt.Println("threads still blocked after Close")
	}
	os.Stdout.Sync()
	switch end {
	case "stay":
		return 0
	case "release":
		if err := h.Release(); err != nil {
			fmt.Println("release:", err)
			return 1
		}
		select {
		case b := <-read:
			fmt.Printf("BUG: a faulting thread read %#x after Release\n", b)
			return 1
		case <-time.After(5 * time.Second):
			fmt.Println("BUG: the faulting threads neither crashed nor read after Release")
			return 1
		}
	}
	fmt.Println("BUG: unknown end", end)
	return 1
}

// runFailChild runs scenario in a child; env adds variables
// (PAGEWARP_TEST_STALL=duration sets Options.StallTimeout).
func runFailChild(t *testing.T, scenario, addr, end string, resume time.Duration, env ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envFail+"="+scenario, "PAGEWARP_TEST_ADDR="+addr, "PAGEWARP_TEST_END="+end,
		"PAGEWARP_TEST_RESUME="+resume.String())
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// checkFailedClosed checks a child's report for how it was told to end.
func checkFailedClosed(t *testing.T, end, stdout, stderr string, err error) {
	t.Helper()
	if strings.Contains(stdout, "BUG") {
		t.Fatalf("target:\n%s\n%s", stdout, stderr)
	}
	switch end {
	case "stay":
		if err != nil || !strings.Contains(stdout, "faulting thread still blocked") || !strings.Contains(stdout, "threads still blocked after Close") {
			t.Fatalf("target exited with %v; want both threads blocked after Close and a clean exit:\n%s\n%s", err, stdout, stderr)
		}
	case "release":
		if !strings.Contains(stdout, "threads still blocked after Close") {
			t.Fatalf("target did not report the blocked threads:\n%s\n%s", stdout, stderr)
		}
		// The blocked threads retried their loads on the inaccessible
		// reservation that replaced the region.
		if err == nil || !strings.Contains(stderr, "SIGSEGV") {
			t.Fatalf("target exited with %v, want a SIGSEGV crash; stderr:\n%s", err, stderr)
		}
	case "exit":
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(stdout, "migration failed, stopping the process") {
			t.Fatalf("target exited with %v, want status 3 from ExitOnFailure:\n%s\n%s", err, stdout, stderr)
		}
	}
}

// TestServerGoesAway: the page server shuts down while a thread waits for a
// page and never comes back. The target tries to resume until its deadline,
// then the migration fails with ErrResumeDeadline (naming the missing
// pages) wrapping ErrServerGone; the thread stays blocked through Close,
// and then ends as the process chooses, never with zeros.
func TestServerGoesAway(t *testing.T) {
	for _, end := range []string{"stay", "release", "exit"} {
		t.Run(end, func(t *testing.T) { testServerGoesAway(t, end) })
	}
}

func testServerGoesAway(t *testing.T, end string) {
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
	stdout, stderr, err := runFailChild(t, "server-gone", ln.Addr().String(), end, 300*time.Millisecond)
	if end != "exit" && (!strings.Contains(stdout, "server gone: true, resume deadline: true") || !strings.Contains(stdout, "64 of 64 pages still missing")) {
		t.Fatalf("want ErrResumeDeadline with ErrServerGone and the missing pages:\n%s\n%s", stdout, stderr)
	}
	if end == "exit" && !strings.Contains(stdout, "64 of 64 pages still missing") {
		t.Fatalf("want the missing pages in the exit message:\n%s\n%s", stdout, stderr)
	}
	checkFailedClosed(t, end, stdout, stderr, err)
}

// TestHashMismatch: a hostile server answers with a page whose hash does
// not match. Nothing is installed, the migration fails at once (a bad page
// is not a dropped connection: no resume) and closed.
func TestHashMismatch(t *testing.T) {
	for _, end := range []string{"stay", "release"} {
		t.Run(end, func(t *testing.T) { testHashMismatch(t, end) })
	}
}

func testHashMismatch(t *testing.T, end string) {
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
	stdout, stderr, err := runFailChild(t, "bad-hash", ln.Addr().String(), end, 0)
	if !strings.Contains(stdout, "hash mismatch: true") || !strings.Contains(stdout, "resident: 0") {
		t.Fatalf("want ErrHashMismatch with nothing installed:\n%s\n%s", stdout, stderr)
	}
	checkFailedClosed(t, end, stdout, stderr, err)
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
