package faulthandler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
	"github.com/pagewarp/pagewarp/pageserver"
)

// The end-to-end tests run the target in a separate process: the test
// binary re-executed with PAGEWARP_TEST_TARGET set. The target dials the
// server, touches every page from several threads in random order while the
// background pull runs, waits for completion with digest verification, and
// compares every byte with the expected content.

const envTarget = "PAGEWARP_TEST_TARGET"

// targetSpec is passed to the target process as JSON in envTarget.
type targetSpec struct {
	Addr    string
	Threads int
	Seed    uint64 // content seed, when Content is the reference
	Zero    float64
	File    string // reference file, instead of Content
	// Workload, when set, is the bench workload the threads run (layout and
	// run seed 7) instead of touching every page in random order.
	Workload   string
	NoPull     bool
	ProbeEvery int
}

// targetReport is what the target prints as its last line.
type targetReport struct {
	Stats    faulthandler.Stats
	Mismatch int // first differing page, -1 if none
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(envTarget); spec != "" {
		os.Exit(runTarget(spec))
	}
	os.Exit(m.Run())
}

func runTarget(specJSON string) int {
	var spec targetSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "target spec:", err)
		return 3
	}
	faulthandler.ReserveProcs(spec.Threads)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h, err := faulthandler.Dial(ctx, "tcp", spec.Addr, faulthandler.Options{Verify: true, NoPull: spec.NoPull, ProbeEvery: spec.ProbeEvery})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return 1
	}
	var w *bench.Workload
	if spec.Workload != "" {
		if w, err = bench.NewWorkload(spec.Workload, uint32(h.Pages()), spec.Threads, 7); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	h.Start()
	done := make(chan struct{})
	go func() {
		if w != nil {
			w.Run(h.Memory(), h.PageSize())
		} else {
			bench.TouchRandom(h.Memory(), h.PageSize(), spec.Threads, uint64(os.Getpid()))
		}
		close(done)
	}()
	if err := h.Wait(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "wait:", err)
		return 1
	}
	<-done
	rep := targetReport{Stats: h.Stats(), Mismatch: -1}
	mem := h.Memory()
	if spec.File != "" {
		ref, err := os.ReadFile(spec.File)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		padded := make([]byte, len(mem))
		copy(padded, ref)
		for p := 0; p < len(mem)/h.PageSize(); p++ {
			lo, hi := p*h.PageSize(), (p+1)*h.PageSize()
			if !bytes.Equal(mem[lo:hi], padded[lo:hi]) {
				rep.Mismatch = p
				break
			}
		}
	} else {
		rep.Mismatch = bench.Content{Seed: spec.Seed, ZeroFraction: spec.Zero}.Check(mem, h.PageSize())
	}
	h.Close()
	out, _ := json.Marshal(rep)
	fmt.Println(string(out))
	return 0
}

// startTarget starts a target process.
func startTarget(t *testing.T, spec targetSpec) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	b, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envTarget+"="+string(b))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &stdout, &stderr
}

func waitTarget(t *testing.T, cmd *exec.Cmd, stdout, stderr *bytes.Buffer) targetReport {
	t.Helper()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("target: %v\nstderr:\n%s", err, stderr)
	}
	lines := bytes.Split(bytes.TrimSpace(stdout.Bytes()), []byte("\n"))
	var rep targetReport
	if err := json.Unmarshal(lines[len(lines)-1], &rep); err != nil {
		t.Fatalf("target report %q: %v", stdout, err)
	}
	return rep
}

// serveRegion serves content of size bytes on loopback TCP.
func serveRegion(t *testing.T, c bench.Content, size int) (string, *pageserver.Server, []byte) {
	t.Helper()
	ps := os.Getpagesize()
	mem := make([]byte, size)
	c.Fill(mem, ps)
	src, err := pageserver.NewRegionSource("test", mem, ps)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, src), nil, mem
}

func serve(t *testing.T, src pageserver.Source) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := pageserver.New(src, pageserver.Options{})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestEndToEndRandom256MiB(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	for _, tc := range []struct {
		name string
		zero float64
	}{{"random", 0}, {"half-zero", 0.5}} {
		t.Run(tc.name, func(t *testing.T) {
			c := bench.Content{Seed: 42, ZeroFraction: tc.zero}
			addr, _, _ := serveRegion(t, c, 256<<20)
			cmd, out, errb := startTarget(t, targetSpec{Addr: addr, Threads: 4, Seed: c.Seed, Zero: c.ZeroFraction})
			rep := waitTarget(t, cmd, out, errb)
			if rep.Mismatch != -1 {
				t.Fatalf("page %d differs from the source", rep.Mismatch)
			}
			st := rep.Stats
			if !st.Complete || st.Resident != st.Pages || st.Pages != 256<<20/uint64(os.Getpagesize()) {
				t.Fatalf("stats %+v: want every one of %d pages resident", st, 256<<20/os.Getpagesize())
			}
			if st.DemandRequests == 0 {
				t.Errorf("4 threads touched every page but no demand request was sent: %+v", st)
			}
			if got := st.DemandPages + st.BackgroundPages + st.ZeroPages; got != st.Pages {
				t.Errorf("pages by kind add up to %d, want %d", got, st.Pages)
			}
			if tc.zero > 0 {
				// Zero pages travel as markers: about half the region.
				if lo := st.Pages * 4 / 10; st.ZeroPages < lo {
					t.Errorf("%d zero pages installed, want at least %d", st.ZeroPages, lo)
				}
				// A page may arrive twice when a demand request overtook the
				// background request for it; nothing else is sent twice.
				if max := (st.Pages - st.ZeroPages + st.DemandRequests) * uint64(st.PageSize); st.BytesReceived > max {
					t.Errorf("received %d page bytes, more than the %d non-zero bytes plus one page per demand request", st.BytesReceived, max)
				}
			}
			t.Logf("%d pages: %d demand, %d background, %d zero, %d coalesced faults, service p50 %v p99 %v, %v",
				st.Pages, st.DemandPages, st.BackgroundPages, st.ZeroPages, st.FaultsCoalesced, st.ServiceP50, st.ServiceP99, st.Elapsed)
		})
	}
}

// TestMemoryFileTwoReceivers serves a memory file whose size is not a whole
// number of pages to two target processes at once.
func TestMemoryFileTwoReceivers(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	ps := os.Getpagesize()
	size := 48<<20 + 1234
	mem := make([]byte, (size+ps-1)/ps*ps)
	bench.Content{Seed: 7, ZeroFraction: 0.3}.Fill(mem, ps)
	path := filepath.Join(t.TempDir(), "mem.img")
	if err := os.WriteFile(path, mem[:size], 0o600); err != nil {
		t.Fatal(err)
	}
	fs, err := pageserver.OpenFile(path, ps)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	addr := serve(t, fs)
	type proc struct {
		cmd      *exec.Cmd
		out, err *bytes.Buffer
	}
	var procs []proc
	for range 2 {
		cmd, out, errb := startTarget(t, targetSpec{Addr: addr, Threads: 2, File: path})
		procs = append(procs, proc{cmd, out, errb})
	}
	for i, p := range procs {
		rep := waitTarget(t, p.cmd, p.out, p.err)
		if rep.Mismatch != -1 {
			t.Fatalf("receiver %d: page %d differs from the file", i, rep.Mismatch)
		}
		if want := uint64((size + ps - 1) / ps); rep.Stats.Pages != want {
			t.Fatalf("receiver %d: %d pages, want %d", i, rep.Stats.Pages, want)
		}
	}
}

// slowSource delays every read, so that faults pile up on one page before
// its reply arrives. It hides the Slicer of the source it wraps.
type slowSource struct {
	pageserver.Source
	delay time.Duration
	read  chan struct{} // if not nil, gets a token on every read
}

func (s slowSource) ReadPages(region uint32, page uint64, dst []byte) error {
	if s.read != nil {
		select {
		case s.read <- struct{}{}:
		default:
		}
	}
	time.Sleep(s.delay)
	return s.Source.ReadPages(region, page, dst)
}

// TestManyThreadsOnePage has 8 threads fault on the same page: one demand
// request, every thread woken with the right content.
func TestManyThreadsOnePage(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	ps := os.Getpagesize()
	mem := make([]byte, 64*ps)
	bench.Content{Seed: 3}.Fill(mem, ps)
	rs, err := pageserver.NewRegionSource("slow", mem, ps)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, slowSource{Source: rs, delay: 200 * time.Millisecond})
	const threads = 8
	defer runtime.GOMAXPROCS(faulthandler.ReserveProcs(threads))
	ctx := context.Background()
	h, err := faulthandler.Dial(ctx, "tcp", addr, faulthandler.Options{NoPull: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { h.Close(); h.Release() }()
	h.Start()
	got := make(chan byte, threads)
	const page, off = 17, 123
	for range threads {
		go func() { got <- loadByte(h.Memory(), page*ps+off) }()
	}
	for range threads {
		select {
		case b := <-got:
			if b != mem[page*ps+off] {
				t.Fatalf("thread read %#x, want %#x", b, mem[page*ps+off])
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a faulting thread was never woken")
		}
	}
	st := h.Stats()
	if st.DemandRequests != 1 {
		t.Fatalf("%d threads on one page sent %d demand requests, want 1 (stats %+v)", threads, st.DemandRequests, st)
	}
	if st.FaultEvents < 2 {
		t.Logf("only %d fault events: the threads did not overlap", st.FaultEvents)
	}
}

// TestLocalPull migrates in-process from a Source, with faults and pull.
func TestLocalPull(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	ps := os.Getpagesize()
	mem := make([]byte, 32<<20)
	c := bench.Content{Seed: 9, ZeroFraction: 0.25}
	c.Fill(mem, ps)
	rs, err := pageserver.NewRegionSource("local", mem, ps)
	if err != nil {
		t.Fatal(err)
	}
	defer runtime.GOMAXPROCS(faulthandler.ReserveProcs(2))
	h, err := faulthandler.NewLocal(rs, 0, faulthandler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { h.Close(); h.Release() }()
	h.Start()
	bench.TouchRandom(h.Memory(), ps, 2, 1)
	if err := h.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.Memory(), mem) {
		t.Fatalf("local migration differs at page %d", c.Check(h.Memory(), ps))
	}
	if st := h.Stats(); st.ZeroPages == 0 || !st.Complete {
		t.Fatalf("stats %+v: want complete with zero pages", st)
	}
}

// loadByte reads b[i] in a function of its own. Sending b[i] on a channel
// directly would make the runtime copy it out of the region while holding
// the channel's lock, so a fault there would block every other user of the
// channel.
//
//go:noinline
func loadByte(b []byte, i int) byte { return b[i] }

// TestPipeTransport runs a migration over in-memory pipes (no descriptors):
// the urgent replies are then read by a receive loop goroutine instead of
// the fault loop. Same scenario as over TCP: touches plus pull, byte compare.
func TestPipeTransport(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	ps := os.Getpagesize()
	mem := make([]byte, 16<<20)
	c := bench.Content{Seed: 21, ZeroFraction: 0.2}
	c.Fill(mem, ps)
	rs, err := pageserver.NewRegionSource("pipe", mem, ps)
	if err != nil {
		t.Fatal(err)
	}
	srv := pageserver.New(rs, pageserver.Options{})
	defer srv.Close()
	conn := func() net.Conn {
		a, b := net.Pipe()
		go srv.ServeConn(b)
		return a
	}
	urgent, bulk := conn(), []net.Conn{conn(), conn()}
	defer runtime.GOMAXPROCS(faulthandler.ReserveProcs(2))
	h, err := faulthandler.NewRemote(context.Background(), urgent, bulk, faulthandler.Options{Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { h.Close(); h.Release() }()
	h.Start()
	bench.TouchRandom(h.Memory(), ps, 2, 5)
	if err := h.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.Memory(), mem) {
		t.Fatalf("pipe migration differs at page %d", c.Check(h.Memory(), ps))
	}
	if st := h.Stats(); st.DemandRequests == 0 || st.BackgroundPages == 0 {
		t.Fatalf("stats %+v: want both demand and background pages", st)
	}
}
