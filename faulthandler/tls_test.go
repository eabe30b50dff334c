package faulthandler_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/internal/tlstest"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
	"github.com/pagewarp/pagewarp/pageserver"
)

// tlsRig is a CA, a page server under mutual TLS serving content, and a
// valid client config.
type tlsRig struct {
	ca     *tlstest.CA
	srv    *pageserver.Server
	addr   string
	mem    []byte
	client *tls.Config
}

func newTLSRig(t testing.TB, pages int, opts pageserver.Options) *tlsRig {
	t.Helper()
	ps := os.Getpagesize()
	r := &tlsRig{ca: tlstest.NewCA(t, "pagewarp test CA"), mem: make([]byte, pages*ps)}
	bench.Content{Seed: 77, ZeroFraction: 0.2}.Fill(r.mem, ps)
	opts.TLS = tlstest.ServerConfig(r.ca, r.ca.Issue(t, tlstest.Loopback()))
	r.srv, r.addr = loadServer(t, [][]byte{r.mem}, opts)
	r.client = tlstest.ClientConfig(r.ca, r.ca.Issue(t, tlstest.ClientLeaf("target")))
	return r
}

// TestTLSMigration migrates a region over mutual TLS with faults from four
// threads, the background pull over three bulk connections and ppm's
// pushes, and checks it byte for byte.
func TestTLSMigration(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	r := newTLSRig(t, 4096, pageserver.Options{Prefetch: pageserver.Prefetch{Predictor: "ppm"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := faulthandler.Dial(ctx, "tcp", r.addr, faulthandler.Options{Verify: true, TLS: r.client})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { h.Close(); h.Release() }()
	h.Start()
	res, ok := runPlans(t, h.Memory(), r.mem, os.Getpagesize(), loadPlan(4096, 4, 32, 3), time.Minute)
	if !ok {
		t.FailNow()
	}
	if err := h.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := string(h.Memory()); got != string(r.mem) {
		t.Fatal("region differs from the source")
	}
	st := h.Stats()
	if st.DemandRequests == 0 || st.BackgroundPages == 0 {
		t.Errorf("stats %+v: want demand requests and background pages over TLS", st)
	}
	sst := r.srv.Stats()
	if sst.ConnectionsAccepted != 4 || sst.TLSRefused != 0 {
		t.Errorf("server accepted %d connections, refused %d: want 4 (urgent and 3 bulk), none refused", sst.ConnectionsAccepted, sst.TLSRefused)
	}
	t.Logf("%d demand, %d background, %d pushed pages; touch p99 %v", st.DemandPages, st.BackgroundPages, st.PushedPages, quantile(res.own, 0.99))
}

// TestTLSDialRefused checks what Dial says when the target has no valid
// certificate, when the server's certificate is for another host, and when
// the target speaks plain TCP to a TLS server: it fails, nothing is mapped,
// and the server sent no byte of the protocol.
func TestTLSDialRefused(t *testing.T) {
	r := newTLSRig(t, 64, pageserver.Options{})
	other := tlstest.NewCA(t, "someone else's CA")
	for _, tc := range []struct {
		name string
		addr string
		cfg  *tls.Config
		want string
	}{
		{"no client certificate", r.addr, tlstest.ClientConfig(r.ca, tls.Certificate{}), "certificate required"},
		{"client certificate from another CA", r.addr, &tls.Config{RootCAs: r.ca.Pool(),
			Certificates: []tls.Certificate{other.Issue(t, tlstest.ClientLeaf("stranger"))}}, "certificate required"},
		{"server not trusted", r.addr, tlstest.ClientConfig(other, other.Issue(t, tlstest.ClientLeaf("stranger"))), "unknown authority"},
		{"wrong server name", r.addr, func() *tls.Config {
			c := r.client.Clone()
			c.ServerName = "source.example"
			return c
		}(), "not source.example"},
		{"plain TCP", r.addr, nil, "TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := r.srv.Stats()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			h, err := faulthandler.Dial(ctx, "tcp", tc.addr, faulthandler.Options{TLS: tc.cfg, BulkStreams: 1})
			if err == nil {
				h.Close()
				t.Fatal("Dial succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Dial: %v, want an error saying %q", err, tc.want)
			}
			t.Logf("Dial: %v", err)
			if st := r.srv.Stats(); st.BytesSent != before.BytesSent || st.PagesSent != 0 {
				t.Fatalf("the server sent %d protocol bytes to a refused client", st.BytesSent-before.BytesSent)
			}
		})
	}
}

// envServer makes the test binary a page server process for
// BenchmarkTransport: PAGES,DIR,NOSPIN (DIR, when not empty, holding
// server.crt, server.key and ca.crt for mutual TLS; NOSPIN "1" turns the
// urgent connection's busy-poll off). It prints its address and serves
// until its stdin closes.
const envServer = "PAGEWARP_TEST_SERVER"

func init() {
	if spec := os.Getenv(envServer); spec != "" {
		os.Exit(runServerProcess(spec))
	}
}

func runServerProcess(spec string) int {
	f := strings.Split(spec+",,", ",")
	dir := f[1]
	pages, err := strconv.Atoi(f[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ps := os.Getpagesize()
	mem := make([]byte, pages*ps)
	bench.Content{Seed: 5}.Fill(mem, ps)
	src, err := pageserver.NewRegionSource("bench", mem, ps)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var opts pageserver.Options
	if f[2] == "1" {
		opts.UrgentSpin = -1
	}
	if dir != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		opts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	}
	srv := pageserver.New(src, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(ln.Addr())
	go srv.Serve(ln)
	io.Copy(io.Discard, os.Stdin)
	srv.Close()
	return 0
}

// startServerProcess starts a page server process of pages pages of
// bench.Content{Seed: 5}, with mutual TLS when tlsDir is set, and returns
// its address; it ends at cleanup.
func startServerProcess(b *testing.B, pages int, tlsDir string, noSpin bool) string {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run", "^$")
	spin := "0"
	if noSpin {
		spin = "1"
	}
	cmd.Env = append(os.Environ(), envServer+"="+strconv.Itoa(pages)+","+tlsDir+","+spin)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("server process: %v", err)
	}
	return strings.TrimSpace(line)
}

// BenchmarkTransport compares plain TCP and mutual TLS on loopback, side by
// side: pull throughput (a 64 MiB region pulled with the default three bulk
// streams, nothing touched) and fault latency (one thread touching every
// page of a region without pull, each touch a demand fault served by the
// source). The page server runs in another process, as a source would: in
// this process its busy-polling would compete with the target for the same
// Ps. fault/*-nospin turn the server's urgent busy-poll off: on a 2-CPU
// host a spinning server delays the wake-up of a target thread that lands
// on its CPU, which the TLS path (the urgent reply read by a goroutine, not
// by a spinning fault loop) suffers from.
func BenchmarkTransport(b *testing.B) {
	uffdtest.SkipIfUnavailable(b)
	defer runtime.GOMAXPROCS(faulthandler.ReserveProcs(1))
	ps := os.Getpagesize()
	for _, secure := range []bool{false, true} {
		name := "plain"
		if secure {
			name = "tls"
		}
		var (
			addr   string
			client *tls.Config
			noSpin bool
		)
		setup := func(b *testing.B, pages int) {
			dir := ""
			if secure {
				dir = b.TempDir()
				ca := tlstest.NewCA(b, "bench CA")
				ca.WriteCA(b, dir, "ca")
				tlstest.WriteFiles(b, dir, "server", ca.Issue(b, tlstest.Loopback()))
				client = tlstest.ClientConfig(ca, ca.Issue(b, tlstest.ClientLeaf("bench")))
			}
			addr = startServerProcess(b, pages, dir, noSpin)
		}
		dial := func(b *testing.B, noPull bool) *faulthandler.Handler {
			h, err := faulthandler.Dial(context.Background(), "tcp", addr, faulthandler.Options{NoPull: noPull, TLS: client})
			if err != nil {
				b.Fatal(err)
			}
			return h
		}
		b.Run("pull/"+name, func(b *testing.B) {
			const pages = 64 << 20 / 4096
			setup(b, pages)
			b.SetBytes(int64(pages * ps))
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				h := dial(b, false)
				b.StartTimer()
				h.Start()
				if err := h.Wait(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				h.Close()
				h.Release()
				b.StartTimer()
			}
		})
		for _, noSpin = range []bool{false, true} {
			sub := "fault/" + name
			if noSpin {
				sub += "-nospin"
			}
			b.Run(sub, func(b *testing.B) {
				const pages = 4096
				setup(b, pages)
				var lat []time.Duration
				var h *faulthandler.Handler
				next := pages
				for b.Loop() {
					if next == pages {
						b.StopTimer()
						if h != nil {
							h.Close() // every page was touched: complete
							h.Release()
						}
						h, next = dial(b, true), 0
						h.Start()
						b.StartTimer()
					}
					t0 := time.Now()
					loadWord(h.Memory(), next*ps)
					lat = append(lat, time.Since(t0))
					next++
				}
				b.StopTimer()
				if h != nil {
					// No thread is blocked on the pages left: this goroutine
					// touched every page it faulted on.
					h.Close()
					h.Release()
				}
				b.ReportMetric(float64(quantile(lat, 0.5).Nanoseconds())/1e3, "p50-µs")
				b.ReportMetric(float64(quantile(lat, 0.99).Nanoseconds())/1e3, "p99-µs")
			})
		}
		noSpin = false
	}
}
