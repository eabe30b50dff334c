package faulthandler_test

import (
	"context"
	"crypto/tls"
	"os"
	"runtime"
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

// BenchmarkTransport compares plain TCP and mutual TLS on loopback, side by
// side: pull throughput (a 64 MiB region pulled with the default three bulk
// streams, nothing touched) and fault latency (one thread touching every
// page of a region without pull, each touch a demand fault served by the
// source).
func BenchmarkTransport(b *testing.B) {
	uffdtest.SkipIfUnavailable(b)
	// The touching goroutine keeps its P while blocked in a fault, and the
	// page server runs in this process: give both ends room, as a target
	// process and a source process would have.
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
			mem    []byte
		)
		setup := func(b *testing.B, pages int) {
			mem = make([]byte, pages*ps)
			bench.Content{Seed: 5, ZeroFraction: 0}.Fill(mem, ps)
			// The server runs in this process on the same two CPUs: its
			// urgent connection's busy-poll (UrgentSpin) would take the CPU
			// the target's receive loop needs (with TLS the reply is read
			// by a goroutine, not the fault loop). A remote source does
			// not compete so; both transports run without it.
			opts := pageserver.Options{UrgentSpin: -1}
			if secure {
				ca := tlstest.NewCA(b, "bench CA")
				opts.TLS = tlstest.ServerConfig(ca, ca.Issue(b, tlstest.Loopback()))
				client = tlstest.ClientConfig(ca, ca.Issue(b, tlstest.ClientLeaf("bench")))
			}
			_, addr = loadServer(b, [][]byte{mem}, opts)
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
			b.SetBytes(int64(len(mem)))
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
		b.Run("fault/"+name, func(b *testing.B) {
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
				// Let the untouched pages arrive so that Close finds no
				// thread blocked (none is: this goroutine touched them all).
				h.Close()
				h.Release()
			}
			b.ReportMetric(float64(quantile(lat, 0.5).Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(quantile(lat, 0.99).Nanoseconds())/1e3, "p99-µs")
		})
	}
}
