package precopy_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/internal/tlstest"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
	"github.com/pagewarp/pagewarp/pageserver"
	"github.com/pagewarp/pagewarp/precopy"
)

// newTLSRig is newRig with mutual TLS on every connection: the page
// server's, the handler's urgent and bulk ones and the pre-copy streams.
// streamTLS is the pre-copy streams' config (the handler always uses
// pki.client).
func newTLSRig(t *testing.T, src []byte, pki testPKI, streamTLS *tls.Config) (*rig, error) {
	t.Helper()
	uffdtest.SkipIfUnavailable(t)
	faulthandler.ReserveProcs(4)
	rg := &rig{src: [][]byte{src}, recvErr: make(chan error, 1)}
	tr, err := precopy.NewTracker(precopy.TrackAuto, src, pageSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	rg.trackers = []precopy.Tracker{tr}
	s, err := precopy.NewSender([]precopy.Region{{ID: 0, Mem: src, Tracker: tr}}, precopy.SenderConfig{PageSize: pageSize})
	if err != nil {
		t.Fatal(err)
	}
	rg.sender = s
	source, err := pageserver.NewRegionsSource([]pageserver.MemRegion{{ID: 0, Name: "r0", Mem: src}}, pageSize)
	if err != nil {
		t.Fatal(err)
	}
	rg.server = pageserver.New(source, pageserver.Options{Precopy: s, TLS: pki.server})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go rg.server.Serve(ln)
	t.Cleanup(func() { rg.server.Close() })
	rg.addr = ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := faulthandler.Dial(ctx, "tcp", rg.addr, faulthandler.Options{TLS: pki.client})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	rg.handlers = []*faulthandler.Handler{h}
	rg.recv, err = precopy.Dial(ctx, "tcp", rg.addr, rg.handlers, precopy.ReceiverConfig{Streams: 3, TLS: streamTLS})
	if err != nil {
		return rg, err
	}
	runCtx, stopRecv := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { rg.recvErr <- rg.recv.Run(runCtx); close(runDone) }()
	t.Cleanup(func() { stopRecv(); <-runDone })
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return rg, nil
}

// testPKI is a CA's server and client configs.
type testPKI struct{ server, client *tls.Config }

func newPKI(t *testing.T) testPKI {
	ca := tlstest.NewCA(t, "pagewarp test CA")
	return testPKI{
		server: tlstest.ServerConfig(ca, ca.Issue(t, tlstest.Loopback())),
		client: tlstest.ClientConfig(ca, ca.Issue(t, tlstest.ClientLeaf("target"))),
	}
}

// TestPrecopyOverTLS runs two rounds, the switch and post-copy with every
// connection under mutual TLS; the target ends byte-exact.
func TestPrecopyOverTLS(t *testing.T) {
	pki := newPKI(t)
	const n = 1024
	mem := mapRegion(t, n)
	fillUnique(mem, 0, n, 11)
	rg, err := newTLSRig(t, mem, pki, pki.client)
	if err != nil {
		t.Fatal(err)
	}
	if st := rg.round(t); st.Sent != n {
		t.Fatalf("round 0 sent %d pages, want %d", st.Sent, n)
	}
	fillUnique(mem, 100, 200, 12)
	if st := rg.round(t); st.Sent != 100 {
		t.Fatalf("round 1 sent %d pages, want 100", st.Sent)
	}
	fillUnique(mem, 500, 510, 13)
	rg.finish(t)
	if st := rg.server.Stats(); st.TLSRefused != 0 {
		t.Fatalf("%d connections refused", st.TLSRefused)
	}
}

// TestPrecopyTLSRefused checks that pre-copy streams without TLS, or with a
// certificate from another CA, are refused by a TLS page server.
func TestPrecopyTLSRefused(t *testing.T) {
	pki := newPKI(t)
	other := tlstest.NewCA(t, "someone else's CA")
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"plain", nil},
		{"other CA", tlstest.ClientConfig(other, other.Issue(t, tlstest.ClientLeaf("stranger")))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			if cfg != nil {
				// Trust the real server, present the stranger's certificate.
				cfg = cfg.Clone()
				cfg.RootCAs = pki.client.RootCAs
			}
			mem := mapRegion(t, 64)
			fillUnique(mem, 0, 64, 1)
			rg, err := newTLSRig(t, mem, pki, cfg)
			if err == nil {
				t.Fatal("pre-copy streams were accepted")
			}
			t.Logf("refused: %v", err)
			if tc.cfg != nil && !strings.Contains(err.Error(), "certificate") {
				t.Errorf("error %q does not name the certificate", err)
			}
			if st := rg.server.Stats(); st.TLSRefused == 0 || st.PagesSent != 0 {
				t.Errorf("server stats %+v: want a refusal and no page sent", st)
			}
		})
	}
}
