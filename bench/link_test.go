package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseLink(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want LinkSpec
		str  string // String(), when it differs from in
	}{
		{"loopback", LinkSpec{Kind: "loopback"}, ""},
		{"veth", LinkSpec{Kind: "veth"}, ""},
		{"shaped", LinkSpec{Kind: "shaped"}, ""},
		{"veth:1gbit,1ms", LinkSpec{"veth", 1e9, time.Millisecond}, ""},
		{"veth:10gbit", LinkSpec{"veth", 10e9, 0}, ""},
		{"shaped:1gbit,500us", LinkSpec{"shaped", 1e9, 500 * time.Microsecond}, ""},
		{"shaped:200mbit,2ms", LinkSpec{"shaped", 200e6, 2 * time.Millisecond}, ""},
		{"shaped:2ms", LinkSpec{"shaped", 0, 2 * time.Millisecond}, ""},
		{"shaped:1ms,1gbit", LinkSpec{"shaped", 1e9, time.Millisecond}, "shaped:1gbit,1ms"},
		{"veth:1Gbit, 1msec", LinkSpec{"veth", 1e9, time.Millisecond}, "veth:1gbit,1ms"},
		{"veth:2.5gbit,1.5ms", LinkSpec{"veth", 2.5e9, 1500 * time.Microsecond}, "veth:2500mbit,1500us"},
		{"veth:100kbit", LinkSpec{"veth", 1e5, 0}, ""},
		{"veth:125mbps", LinkSpec{"veth", 1e9, 0}, "veth:1gbit"}, // tc: bps is bytes per second
		{"veth:1mibit", LinkSpec{"veth", 1 << 20, 0}, "veth:1048576bit"},
		{"veth:1000", LinkSpec{"veth", 1000, 0}, "veth:1kbit"}, // tc: a bare number is bits per second
		{"veth:0,0ms", LinkSpec{Kind: "veth"}, "veth"},
		{"veth:1234.5bit,250ns", LinkSpec{"veth", 1234.5, 250}, ""},
		{"shaped:500µs", LinkSpec{"shaped", 0, 500 * time.Microsecond}, "shaped:500us"},
	} {
		got, err := ParseLink(tc.in)
		if err != nil {
			t.Errorf("ParseLink(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseLink(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		want := tc.str
		if want == "" {
			want = tc.in
		}
		if s := got.String(); s != want {
			t.Errorf("ParseLink(%q).String() = %q, want %q", tc.in, s, want)
		}
		if back, err := ParseLink(got.String()); err != nil || back != got {
			t.Errorf("ParseLink(%q) = %+v, %v; want %+v", got.String(), back, err, got)
		}
	}
	for _, tc := range []struct{ in, msg string }{
		{"", "unknown kind"},
		{"tap:1gbit", "unknown kind"},
		{"loopback:1gbit", "loopback takes no rate"},
		{"veth:", "empty item"},
		{"veth:1gbit,", "empty item"},
		{"veth:1gbit,2gbit", "two rates"},
		{"veth:1ms,2ms", "two delays"},
		{"veth:fastbit", "neither a rate"},
		{"veth:1.2.3gbit", "bad rate"},
		{"veth:-1gbit", "bad rate"},
		{"veth:1gbits", "neither a rate"},
		{"veth:1furlong", "neither a rate"},
		{"veth:-1ms", "neither a rate"},
		{"veth:1e400gbit", "bad rate"},
	} {
		_, err := ParseLink(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ParseLink(%q) = %v, want an error with %q", tc.in, err, tc.msg)
		}
	}
}

func TestLinkSpecJSON(t *testing.T) {
	in := LinkSpec{"veth", 1e9, time.Millisecond}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"kind":"veth","rate_bps":1000000000,"delay":1000000}`; string(b) != want {
		t.Errorf("json %s, want %s", b, want)
	}
	var out LinkSpec
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Errorf("round trip: %+v, %v", out, err)
	}
}

// The link benchmark protocol: the client opens a connection per
// measurement and sends an op byte.
//
//	'P' n:u32   ping-pong: n times, the client sends 64 bytes and the server echoes them
//	'U'         upload: the client sends until it half-closes; the server replies bytes:u64 ns:u64,
//	            counted from the end of its first read to its last
//	'D' ns:u64  download: the server sends for ns, then half-closes
const pingSize = 64

// servePerf serves the link benchmark protocol on ln until it is closed.
func servePerf(ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Go(func() {
			defer c.Close()
			servePerfConn(c)
		})
	}
}

func servePerfConn(c net.Conn) error {
	var op [1]byte
	if _, err := io.ReadFull(c, op[:]); err != nil {
		return err
	}
	switch op[0] {
	case 'P':
		var hdr [4]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return err
		}
		buf := make([]byte, pingSize)
		for range binary.LittleEndian.Uint32(hdr[:]) {
			if _, err := io.ReadFull(c, buf); err != nil {
				return err
			}
			if _, err := c.Write(buf); err != nil {
				return err
			}
		}
	case 'U':
		n, d, err := receiveBulk(c)
		if err != nil {
			return err
		}
		var rep [16]byte
		binary.LittleEndian.PutUint64(rep[:], uint64(n))
		binary.LittleEndian.PutUint64(rep[8:], uint64(d))
		_, err = c.Write(rep[:])
		return err
	case 'D':
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return err
		}
		if err := sendBulk(c, time.Duration(binary.LittleEndian.Uint64(hdr[:]))); err != nil {
			return err
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		io.Copy(io.Discard, c) // until the client closes
	default:
		return fmt.Errorf("op %q", op[0])
	}
	return nil
}

// sendBulk writes 256 KiB blocks for d.
func sendBulk(c net.Conn, d time.Duration) error {
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for end := time.Now().Add(d); time.Now().Before(end); {
		if _, err := c.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// receiveBulk reads until EOF; it returns the bytes read after the first
// read and the time from the end of the first read to the end of the last.
func receiveBulk(c net.Conn) (int64, time.Duration, error) {
	buf := make([]byte, 256<<10)
	var n int64
	var first, last time.Time
	for {
		m, err := c.Read(buf)
		if m > 0 {
			if first.IsZero() {
				first = time.Now()
			} else {
				n += int64(m)
				last = time.Now()
			}
		}
		if err == io.EOF {
			return n, last.Sub(first), nil
		}
		if err != nil {
			return n, last.Sub(first), err
		}
	}
}

// perfResult is what the link benchmark client measured.
type perfResult struct {
	RTTs    []time.Duration // ping-pong round trips
	UpBps   float64         // client to server, bits/s
	DownBps float64         // server to client
}

func (r perfResult) rttQuantile(q float64) time.Duration {
	s := slices.Clone(r.RTTs)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

func (r perfResult) String() string {
	return fmt.Sprintf("rtt min %v p50 %v p90 %v (%d pings); upload %.3f Gbit/s, download %.3f Gbit/s",
		r.rttQuantile(0), r.rttQuantile(0.5), r.rttQuantile(0.9), len(r.RTTs), r.UpBps/1e9, r.DownBps/1e9)
}

// runPerf measures ping-pong round trips and bulk throughput both ways to
// the server at addr.
func runPerf(addr string, pings int, bulk time.Duration) (perfResult, error) {
	var r perfResult
	dial := func(op []byte) (net.Conn, error) {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return nil, err
		}
		c.SetDeadline(time.Now().Add(bulk + 30*time.Second))
		if _, err := c.Write(op); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}

	op := []byte{'P', 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(op[1:], uint32(pings))
	c, err := dial(op)
	if err != nil {
		return r, err
	}
	buf := make([]byte, pingSize)
	for range pings {
		t0 := time.Now()
		if _, err := c.Write(buf); err != nil {
			c.Close()
			return r, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			c.Close()
			return r, err
		}
		r.RTTs = append(r.RTTs, time.Since(t0))
	}
	c.Close()

	if c, err = dial([]byte{'U'}); err != nil {
		return r, err
	}
	if err := sendBulk(c, bulk); err != nil {
		c.Close()
		return r, err
	}
	c.(*net.TCPConn).CloseWrite()
	var rep [16]byte
	_, err = io.ReadFull(c, rep[:])
	c.Close()
	if err != nil {
		return r, fmt.Errorf("upload report: %w", err)
	}
	r.UpBps = float64(binary.LittleEndian.Uint64(rep[:])) * 8 / time.Duration(binary.LittleEndian.Uint64(rep[8:])).Seconds()

	op = []byte{'D', 0, 0, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint64(op[1:], uint64(bulk))
	if c, err = dial(op); err != nil {
		return r, err
	}
	n, d, err := receiveBulk(c)
	c.Close()
	if err != nil {
		return r, fmt.Errorf("download: %w", err)
	}
	r.DownBps = float64(n) * 8 / d.Seconds()
	return r, nil
}

// Helper processes of TestLinkVeth, run in the link's namespaces.
const (
	envLinkHelper = "PAGEWARP_LINK_HELPER" // "server" or "client"
	envLinkAddr   = "PAGEWARP_LINK_ADDR"   // where the server listens / the client dials
	envLinkBulk   = "PAGEWARP_LINK_BULK"   // bulk transfer time (client)
	perfPrefix    = "linkperf: "
)

// TestLinkHelperProcess is not a test: TestLinkVeth runs the test binary
// with envLinkHelper set to make it a link benchmark server or client.
func TestLinkHelperProcess(t *testing.T) {
	switch os.Getenv(envLinkHelper) {
	case "":
		return
	case "server":
		ln, err := net.Listen("tcp", os.Getenv(envLinkAddr))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("listening on %s\n", ln.Addr())
		servePerf(ln) // until killed
	case "client":
		bulk, err := time.ParseDuration(os.Getenv(envLinkBulk))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		r, err := runPerf(os.Getenv(envLinkAddr), 200, bulk)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		b, _ := json.Marshal(r)
		fmt.Printf("%s%s\n", perfPrefix, b)
	}
	os.Exit(0)
}

// canMakeNetns skips t unless the process can make network namespaces.
func canMakeNetns(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("veth links need iproute2: %v", err)
	}
	if err := checkNetnsCaps(); err != nil {
		t.Skipf("veth links need root: %v", err)
	}
}

// pagewarpNetns lists this process's namespaces that `ip netns list` shows.
func pagewarpNetns(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var ours []string
	for line := range strings.Lines(string(out)) {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		for _, p := range []string{"pagewarp-src-", "pagewarp-dst-"} {
			rest, ok := strings.CutPrefix(name, p)
			if ok && (rest == fmt.Sprint(os.Getpid()) || strings.HasPrefix(rest, fmt.Sprintf("%d-", os.Getpid()))) {
				ours = append(ours, name)
			}
		}
	}
	return ours
}

// setupTestLink sets up a link that the test closes, and checks that
// closing it leaves no namespace behind.
func setupTestLink(t *testing.T, spec string, allowFallback bool, tools linkTools) (*Link, error) {
	t.Helper()
	s, err := ParseLink(spec)
	if err != nil {
		t.Fatal(err)
	}
	l, err := setupLink(t.Context(), s, allowFallback, tools)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := l.Close(); err != nil {
			t.Errorf("second close: %v", err)
		}
		if l.Spec().Kind == LinkVeth {
			if left := pagewarpNetns(t); len(left) > 0 {
				t.Errorf("namespaces left after Close: %v", left)
			}
		}
	})
	return l, nil
}

// measureVeth runs the link benchmark server in the source namespace and
// the client in the target namespace.
func measureVeth(t *testing.T, l *Link, bulk time.Duration) perfResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	helper := func(role, addr string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLinkHelperProcess$")
		cmd.Env = append(os.Environ(), envLinkHelper+"="+role, envLinkAddr+"="+addr, envLinkBulk+"="+bulk.String())
		cmd.Stderr = os.Stderr
		return cmd
	}
	srv := l.SourceCmd(helper("server", l.SourceListenAddr()))
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if err != nil || !ok {
		t.Fatalf("server said %q, %v", line, err)
	}
	cli := l.TargetCmd(helper("client", addr))
	stdout, err := cli.Output()
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	for line := range strings.Lines(string(stdout)) {
		if js, ok := strings.CutPrefix(line, perfPrefix); ok {
			var r perfResult
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				t.Fatal(err)
			}
			return r
		}
	}
	t.Fatalf("no result from the client: %q", stdout)
	return perfResult{}
}

// perfProblems compares round trips with 2 × delay and throughput with
// [lo, hi] × rate.
func perfProblems(spec LinkSpec, r perfResult, lo, hi float64) []string {
	var p []string
	if spec.Delay > 0 {
		want := 2 * spec.Delay
		// Never early; late by at most scheduling and timer wake-ups.
		if p50 := r.rttQuantile(0.5); p50 < want || p50 > want+want/4+500*time.Microsecond {
			p = append(p, fmt.Sprintf("median RTT %v, want about %v", p50, want))
		}
		if m := r.rttQuantile(0); m < want-50*time.Microsecond {
			p = append(p, fmt.Sprintf("min RTT %v: below 2 × delay %v", m, want))
		}
	}
	if spec.Rate > 0 {
		for _, x := range []struct {
			dir string
			bps float64
		}{{"upload", r.UpBps}, {"download", r.DownBps}} {
			if f := x.bps / spec.Rate; f < lo || f > hi {
				p = append(p, fmt.Sprintf("%s %.3f Gbit/s = %.2f × rate, want %.2f–%.2f", x.dir, x.bps/1e9, f, lo, hi))
			}
		}
	}
	return p
}

// checkPerf measures up to three times (a busy machine can spoil one
// measurement; a wrong shaper spoils all) and fails if none is within
// perfProblems' bounds.
func checkPerf(t *testing.T, spec LinkSpec, measure func() perfResult, lo, hi float64) {
	t.Helper()
	var problems []string
	for try := 1; try <= 3; try++ {
		r := measure()
		t.Logf("%v: %v", spec, r)
		if problems = perfProblems(spec, r, lo, hi); len(problems) == 0 {
			return
		}
		t.Logf("try %d: %s", try, strings.Join(problems, "; "))
	}
	t.Errorf("%v: %s", spec, strings.Join(problems, "; "))
}

func bulkTime() time.Duration {
	if testing.Short() {
		return 300 * time.Millisecond
	}
	return time.Second
}

func TestLinkVeth(t *testing.T) {
	canMakeNetns(t)
	for _, tc := range []struct {
		spec   string
		lo, hi float64 // bounds on throughput / rate; 0: report only
	}{
		{"veth:1gbit,1ms", 0.8, 1.05},
		{"veth:1gbit", 0.8, 1.05},
		{"veth:10gbit", 0, 0},
		{"veth", 0, 0},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			l, err := setupTestLink(t, tc.spec, false, defaultLinkTools)
			if errors.Is(err, errNoQdisc) {
				t.Skipf("kernel feature missing: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Log(l.Describe())
			if names := pagewarpNetns(t); len(names) != 2 {
				t.Errorf("ip netns list shows %v, want the link's two namespaces", names)
			}
			measure := func() perfResult { return measureVeth(t, l, bulkTime()) }
			if tc.lo > 0 {
				checkPerf(t, l.Spec(), measure, tc.lo, tc.hi)
			} else {
				t.Logf("%v (report only): %v", l.Spec(), measure())
			}
		})
	}
}

func TestLinkVethSetupFailure(t *testing.T) {
	canMakeNetns(t)
	// tc fails after the namespaces and the pair exist: setup must remove
	// them, then fall back.
	tools := linkTools{ip: "ip", tc: "false"}
	if _, err := setupTestLink(t, "veth:1gbit,1ms", false, tools); err == nil {
		t.Fatal("setup with a failing tc succeeded")
	}
	if left := pagewarpNetns(t); len(left) > 0 {
		t.Fatalf("namespaces left after a failed setup: %v", left)
	}
	l, err := setupTestLink(t, "veth:1gbit,1ms", true, tools)
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec() != (LinkSpec{LinkShaped, 1e9, time.Millisecond}) || !strings.Contains(l.Note(), "qdisc add") {
		t.Errorf("fallback: spec %v, note %q", l.Spec(), l.Note())
	}
	if left := pagewarpNetns(t); len(left) > 0 {
		t.Fatalf("namespaces left after a fallback: %v", left)
	}
}

func TestLinkFallback(t *testing.T) {
	noIP := linkTools{ip: "pagewarp-no-such-ip", tc: "tc", capCheck: func() error { return nil }}
	if _, err := setupTestLink(t, "veth:1gbit,1ms", false, noIP); !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("without ip and without fallback: %v, want exec.ErrNotFound", err)
	}
	l, err := setupTestLink(t, "veth:1gbit,1ms", true, noIP)
	if err != nil {
		t.Fatal(err)
	}
	if want := (LinkSpec{LinkShaped, 1e9, time.Millisecond}); l.Spec() != want {
		t.Errorf("spec %v, want %v", l.Spec(), want)
	}
	if !strings.Contains(l.Note(), "pagewarp-no-such-ip") || !strings.Contains(l.Describe(), "fallback: veth link unavailable") {
		t.Errorf("note %q, description %q", l.Note(), l.Describe())
	}
	t.Log(l.Describe())
	if l.SourceListenAddr() != "127.0.0.1:0" {
		t.Errorf("listen address %s", l.SourceListenAddr())
	}
	cmd := exec.Command("true")
	if l.SourceCmd(cmd) != cmd || cmd.Args[0] != "true" {
		t.Errorf("SourceCmd changed a command of a shaped link: %v", cmd.Args)
	}

	noCaps := linkTools{ip: "ip", tc: "tc", capCheck: func() error { return fmt.Errorf("simulated: %w", os.ErrPermission) }}
	l, err = setupTestLink(t, "veth:10gbit", true, noCaps)
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec() != (LinkSpec{LinkShaped, 10e9, 0}) || !strings.Contains(l.Note(), "simulated") {
		t.Errorf("spec %v, note %q", l.Spec(), l.Note())
	}
}

func TestLinkLoopback(t *testing.T) {
	l, err := setupTestLink(t, "loopback", false, defaultLinkTools)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", l.SourceListenAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if l.WrapListener(ln) != ln || l.Note() != "" {
		t.Error("loopback link wraps its listener or has a note")
	}
	t.Log(l.Describe())
	// An unshaped "shaped" link does not wrap either.
	if l, _ := setupTestLink(t, "shaped", false, defaultLinkTools); l.WrapListener(ln) != ln {
		t.Error("shaped link without rate or delay wraps its listener")
	}
}

// shapedServer serves the link benchmark protocol on a listener of link l.
func shapedServer(t *testing.T, l *Link) string {
	t.Helper()
	inner, err := net.Listen("tcp", l.SourceListenAddr())
	if err != nil {
		t.Fatal(err)
	}
	ln := l.WrapListener(inner)
	done := make(chan struct{})
	go func() {
		servePerf(ln)
		close(done)
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return inner.Addr().String()
}

func TestLinkShaped(t *testing.T) {
	for _, spec := range []string{"shaped:200mbit,1ms", "shaped:1gbit,1ms", "shaped:1gbit,200us", "shaped:5ms"} {
		t.Run(spec, func(t *testing.T) {
			base := runtime.NumGoroutine()
			t.Run("measure", func(t *testing.T) {
				l, err := setupTestLink(t, spec, false, defaultLinkTools)
				if err != nil {
					t.Fatal(err)
				}
				t.Log(l.Describe())
				addr := shapedServer(t, l)
				checkPerf(t, l.Spec(), func() perfResult {
					r, err := runPerf(addr, 200, bulkTime())
					if err != nil {
						t.Fatal(err)
					}
					return r
				}, 0.8, 1.1)
			})
			checkNoLeak(t, base)
		})
	}
	t.Run("shaped:10gbit,1ms", func(t *testing.T) {
		l, err := setupTestLink(t, "shaped:10gbit,1ms", false, defaultLinkTools)
		if err != nil {
			t.Fatal(err)
		}
		r, err := runPerf(shapedServer(t, l), 200, bulkTime())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%v (report only): %v", l.Spec(), r)
	})
}

// checkNoLeak waits for the goroutines to come back to base (closed conns
// linger for a delay).
func checkNoLeak(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// shapedPair returns a shaped conn (the accepted side) and the plain conn
// dialed to it.
func shapedPair(t *testing.T, spec string) (net.Conn, net.Conn) {
	t.Helper()
	l, err := setupTestLink(t, spec, false, defaultLinkTools)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sln := l.WrapListener(ln)
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := sln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*shapedConn); !ok {
		t.Fatalf("accepted %T", s)
	}
	t.Cleanup(func() {
		s.Close()
		d.Close()
	})
	return s, d
}

func TestLinkShapedDeadlinesAndClose(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Run("read deadline", func(t *testing.T) {
		s, _ := shapedPair(t, "shaped:1gbit,1ms")
		s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		t0 := time.Now()
		_, err := s.Read(make([]byte, 10))
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read past the deadline: %v", err)
		}
		if d := time.Since(t0); d < 50*time.Millisecond || d > time.Second {
			t.Errorf("read returned after %v, deadline 50ms", d)
		}
		// Moving the deadline into the past unblocks a blocked read.
		s.SetReadDeadline(time.Time{})
		errc := make(chan error, 1)
		go func() {
			_, err := s.Read(make([]byte, 10))
			errc <- err
		}()
		time.Sleep(20 * time.Millisecond)
		s.SetReadDeadline(time.Now().Add(-time.Second))
		if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read after the deadline moved to the past: %v", err)
		}
	})
	t.Run("write deadline", func(t *testing.T) {
		// The peer does not read: the ring and the socket buffers fill.
		s, _ := shapedPair(t, "shaped:10mbit,1ms")
		s.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := s.Write(make([]byte, 64<<20))
		if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n == 64<<20 {
			t.Fatalf("write past the deadline: %d, %v", n, err)
		}
	})
	t.Run("close unblocks", func(t *testing.T) {
		s, _ := shapedPair(t, "shaped:10mbit,1ms")
		errc := make(chan error, 2)
		go func() {
			_, err := s.Read(make([]byte, 10))
			errc <- err
		}()
		go func() {
			_, err := s.Write(make([]byte, 64<<20))
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		s.Close()
		for range 2 {
			select {
			case err := <-errc:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("after Close: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not unblock")
			}
		}
		if _, err := s.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("write after Close: %v", err)
		}
	})
	t.Run("half close", func(t *testing.T) {
		// The server side writes, half-closes and still reads; the client
		// gets the data, then EOF, a delay later.
		s, d := shapedPair(t, "shaped:1gbit,5ms")
		msg := bytes.Repeat([]byte("page"), 10000)
		t0 := time.Now()
		if _, err := s.Write(msg); err != nil {
			t.Fatal(err)
		}
		if err := s.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte("x")); err == nil {
			t.Error("write after CloseWrite succeeded")
		}
		got, err := io.ReadAll(d)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("read %d bytes, %v", len(got), err)
		}
		if el := time.Since(t0); el < 5*time.Millisecond {
			t.Errorf("EOF after %v, before the 5ms delay", el)
		}
		if _, err := d.Write([]byte("still open")); err != nil {
			t.Fatal(err)
		}
		d.(*net.TCPConn).CloseWrite()
		if got, err := io.ReadAll(s); err != nil || string(got) != "still open" {
			t.Errorf("read after CloseWrite: %q, %v", got, err)
		}
	})
	t.Run("close delivers what was written", func(t *testing.T) {
		s, d := shapedPair(t, "shaped:100mbit,5ms")
		msg := make([]byte, 1<<20) // 84 ms at 100 Mbit/s
		for i := range msg {
			msg[i] = byte(i)
		}
		if _, err := s.Write(msg); err != nil {
			t.Fatal(err)
		}
		s.Close()
		got, err := io.ReadAll(d)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("after Close the peer read %d of %d bytes, %v", len(got), len(msg), err)
		}
	})
	checkNoLeak(t, base)
}

// TestLinkShapedIntegrity sends random-sized writes both ways at once
// (wrapping the rings many times) and checks every byte, over loopback TCP
// and over net.Pipe.
func TestLinkShapedIntegrity(t *testing.T) {
	base := runtime.NumGoroutine()
	shape := newShape(2e9, 200*time.Microsecond)
	pairs := map[string]func() (net.Conn, net.Conn){
		"tcp": func() (net.Conn, net.Conn) {
			s, d := shapedPair(t, "shaped:2gbit,200us")
			return s, d
		},
		"pipe": func() (net.Conn, net.Conn) {
			a, b := net.Pipe()
			return newShapedConn(a, shape), b
		},
	}
	for name, pair := range pairs {
		t.Run(name, func(t *testing.T) {
			s, d := pair()
			defer s.Close()
			defer d.Close()
			const total = 24 << 20
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			stream := func(w, r net.Conn, seed uint64) {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(seed, 1))
					buf := make([]byte, 300<<10)
					for off := 0; off < total; {
						n := min(total-off, 1+rng.IntN(4)*rng.IntN(len(buf)/4))
						if rng.IntN(4) == 0 {
							n = 1 + rng.IntN(64) // small frames
						}
						for i := range n {
							buf[i] = byte((off + i) * int(seed))
						}
						if _, err := w.Write(buf[:n]); err != nil {
							errs <- err
							return
						}
						off += n
					}
				})
				wg.Go(func() {
					buf := make([]byte, 100<<10)
					for off := 0; off < total; {
						n, err := r.Read(buf)
						for i := range n {
							if buf[i] != byte((off+i)*int(seed)) {
								errs <- fmt.Errorf("seed %d: byte %d is %d", seed, off+i, buf[i])
								return
							}
						}
						off += n
						if err != nil {
							errs <- fmt.Errorf("seed %d: at %d: %w", seed, off, err)
							return
						}
					}
				})
			}
			stream(s, d, 3)
			stream(d, s, 5)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
	checkNoLeak(t, base)
}

// TestLinkShapedSmallWrites: many tiny frames go at the link's rate, not at
// one timer wake-up per write.
func TestLinkShapedSmallWrites(t *testing.T) {
	s, d := shapedPair(t, "shaped:1gbit,1ms")
	const frames, size = 200000, 24 // 4.8 MB: 38 ms at 1 Gbit/s
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.Discard, d, frames*size)
		done <- err
	}()
	frame := make([]byte, size)
	t0 := time.Now()
	for range frames {
		if _, err := s.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	el := time.Since(t0)
	t.Logf("%d writes of %d bytes in %v (%.0f ns/write, %.3f Gbit/s)", frames, size, el,
		float64(el.Nanoseconds())/frames, frames*size*8/el.Seconds()/1e9)
	if el > 2*time.Second {
		t.Errorf("%d small writes took %v", frames, el)
	}
}

func BenchmarkLinkShapedWrite(b *testing.B) {
	for _, size := range []int{64, 4096, 256 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			a, c := net.Pipe()
			s := newShapedConn(a, newShape(0, 0))
			defer s.Close()
			defer c.Close()
			go io.Copy(io.Discard, c)
			buf := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				s.Write(buf)
			}
		})
	}
}
