package pageserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/internal/tlstest"
	"github.com/pagewarp/pagewarp/wire"
)

// tlsServer serves mem with mutual TLS under ca on loopback TCP and returns
// the server and its address.
func tlsServer(t *testing.T, mem []byte, ca *tlstest.CA, opts Options) (*Server, string) {
	t.Helper()
	opts.TLS = tlstest.ServerConfig(ca, ca.Issue(t, tlstest.Loopback()))
	s := regionServer(t, mem, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, ln.Addr().String()
}

// TestTLSServe fetches pages over mutual TLS, over TCP and a pipe.
func TestTLSServe(t *testing.T) {
	ca := tlstest.NewCA(t, "pagewarp test CA")
	mem := randomRegion(300, 5, 7, 8)
	serverCert := ca.Issue(t, tlstest.Loopback())
	clientCfg := tlstest.ClientConfig(ca, ca.Issue(t, tlstest.ClientLeaf("target-1")))
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s := regionServer(t, mem, Options{TLS: tlstest.ServerConfig(ca, serverCert)})
			dial := startServer(t, s, tr)
			cfg, err := wire.ClientTLS(clientCfg, "127.0.0.1:7070")
			if err != nil {
				t.Fatal(err)
			}
			raw := dial()
			tc, err := wire.ClientHandshake(context.Background(), raw, cfg, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if v := tc.ConnectionState().Version; v != tls.VersionTLS13 {
				t.Fatalf("negotiated TLS version %#x, want 1.3", v)
			}
			c := newClient(t, tc, wire.FeaturePageHashes|wire.FeatureZeroPages)
			// Close the pipe under TLS first (cleanups run last first): a
			// close_notify written to a synchronous pipe nobody reads would
			// wait for its 5 s deadline.
			t.Cleanup(func() { raw.Close() })
			req := &wire.Request{ReqID: 1, Region: 0, Page: 0, Count: 300, Priority: wire.PriorityBackground}
			_, got := c.fetch(req, &wire.Request{ReqID: 2, Page: 123, Count: 1, Priority: wire.PriorityDemand})
			check(t, "region over TLS", got[1], mem)
			check(t, "demand page over TLS", got[2], pagesOf(mem, 123, 1))
			c.send(&wire.Bye{Reason: "done"})
			if m := c.read(); m.Type() != wire.TypeBye {
				t.Fatalf("got %s, want bye", describe(m))
			}
			if st := s.Stats(); st.TLSRefused != 0 {
				t.Fatalf("%d connections refused, want 0", st.TLSRefused)
			}
		})
	}
}

// TestTLSRefusesClients checks that every client without a valid
// certificate is refused in the TLS handshake: it reads no frame, and the
// server wrote not one byte of the protocol (no Welcome, no page).
func TestTLSRefusesClients(t *testing.T) {
	ca := tlstest.NewCA(t, "pagewarp test CA")
	other := tlstest.NewCA(t, "someone else's CA")
	mem := randomRegion(16, 9)
	s, addr := tlsServer(t, mem, ca, Options{})
	expired := tlstest.ClientLeaf("expired")
	expired.NotBefore, expired.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	future := tlstest.ClientLeaf("not yet valid")
	future.NotBefore = time.Now().Add(time.Hour)
	serverOnly := tlstest.Leaf{Name: "server usage only", Server: true}
	valid := ca.Issue(t, tlstest.ClientLeaf("valid"))

	clients := []struct {
		name string
		cfg  *tls.Config // nil: plain TCP
	}{
		{"no certificate", tlstest.ClientConfig(ca, tls.Certificate{})},
		{"self-signed", tlstest.ClientConfig(ca, tlstest.SelfSigned(t, tlstest.ClientLeaf("self")))},
		{"other CA", tlstest.ClientConfig(ca, other.Issue(t, tlstest.ClientLeaf("stranger")))},
		{"expired", tlstest.ClientConfig(ca, ca.Issue(t, expired))},
		{"not yet valid", tlstest.ClientConfig(ca, ca.Issue(t, future))},
		{"server usage only", tlstest.ClientConfig(ca, ca.Issue(t, serverOnly))},
		{"TLS 1.2", func() *tls.Config {
			c := tlstest.ClientConfig(ca, valid)
			c.MaxVersion = tls.VersionTLS12
			return c
		}()},
		{"plain TCP", nil},
	}
	for i, tc := range clients {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(10 * time.Second))
			var conn net.Conn = nc
			if tc.cfg != nil {
				tconn := tls.Client(nc, &tls.Config{
					RootCAs: tc.cfg.RootCAs, Certificates: tc.cfg.Certificates,
					MaxVersion: tc.cfg.MaxVersion, ServerName: "127.0.0.1",
				})
				// With TLS 1.3 the client's half of the handshake may
				// complete: the server's verdict comes as an alert.
				if err := tconn.Handshake(); err != nil {
					t.Logf("handshake: %v", err)
				}
				conn = tconn
			}
			w := wire.NewWriter(conn)
			w.WriteMessage(&wire.Hello{VersionMin: wire.Version, VersionMax: wire.Version, Channel: wire.ChannelBulk, Client: "intruder"})
			w.Flush()
			w.WriteMessage(&wire.Request{ReqID: 1, Page: 0, Count: 16, Priority: wire.PriorityBackground})
			w.Flush()
			got, err := io.ReadAll(conn)
			if tc.cfg != nil && len(got) > 0 {
				t.Fatalf("read %d bytes through TLS, want none", len(got))
			}
			if tc.cfg == nil {
				// Plain TCP: at most a TLS alert record (content type 21),
				// never a frame.
				if len(got) > 0 && got[0] != 21 {
					t.Fatalf("read % x in clear, want nothing or a TLS alert", got)
				}
				if bytes.Contains(got, mem[:64]) {
					t.Fatal("page data in clear")
				}
			}
			if err == nil && tc.cfg != nil {
				t.Fatal("the TLS connection ended cleanly, want the server's alert")
			}
			if tc.cfg != nil && !strings.Contains(err.Error(), "tls") {
				t.Errorf("error %q does not come from TLS", err)
			}
			t.Logf("client sees: %v", err)
			waitFor(t, "refusal counted", func() bool { return s.Stats().TLSRefused == uint64(i+1) })
			if st := s.Stats(); st.BytesSent != 0 || st.PagesSent != 0 || st.Requests != [2]uint64{} {
				t.Fatalf("stats %+v: the server spoke the protocol to a refused client", st)
			}
		})
	}
}

// TestTLSSilentClient checks that a client that connects and sends nothing,
// or half a ClientHello, is dropped after HandshakeTimeout.
func TestTLSSilentClient(t *testing.T) {
	ca := tlstest.NewCA(t, "pagewarp test CA")
	const timeout = 300 * time.Millisecond
	s, addr := tlsServer(t, randomRegion(4, 1), ca, Options{HandshakeTimeout: timeout})
	for i, partial := range [][]byte{nil, {22, 3, 1, 0x02, 0x00, 1, 0, 1}} {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		nc.Write(partial)
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := io.Copy(io.Discard, nc)
		took := time.Since(start)
		nc.Close()
		if err != nil {
			t.Fatalf("client %d: %v (after %v), want the server to close", i, err, took)
		}
		if took < timeout/2 || took > timeout+2*time.Second {
			t.Fatalf("client %d: closed after %v, want about %v", i, took, timeout)
		}
		t.Logf("silent client %d: closed after %v, %d bytes", i, took, n)
		waitFor(t, "refusal counted", func() bool { return s.Stats().TLSRefused == uint64(i+1) })
		waitFor(t, "connection gone", func() bool { return s.Stats().ConnectionsActive == 0 })
	}
}

// TestTLSServerName checks that the target refuses a server whose
// certificate names another host, or comes from another CA.
func TestTLSServerName(t *testing.T) {
	ca := tlstest.NewCA(t, "pagewarp test CA")
	other := tlstest.NewCA(t, "someone else's CA")
	clientCert := ca.Issue(t, tlstest.ClientLeaf("target"))
	for _, tc := range []struct {
		name   string
		server tls.Certificate
		want   string
	}{
		{"other name and IP", ca.Issue(t, tlstest.Leaf{Name: "elsewhere", DNS: []string{"source.example"}, IPs: []net.IP{net.IPv4(192, 0, 2, 7)}, Server: true}), "not 127.0.0.1"},
		{"other CA", other.Issue(t, tlstest.Loopback()), "unknown authority"},
		{"expired", ca.Issue(t, func() tlstest.Leaf {
			l := tlstest.Loopback()
			l.NotBefore, l.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
			return l
		}()), "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := regionServer(t, randomRegion(4, 1), Options{TLS: tlstest.ServerConfig(ca, tc.server)})
			dial := startServer(t, s, "tcp")
			nc := dial()
			defer nc.Close()
			cfg, err := wire.ClientTLS(tlstest.ClientConfig(ca, clientCert), "127.0.0.1:7070")
			if err != nil {
				t.Fatal(err)
			}
			_, err = wire.ClientHandshake(context.Background(), nc, cfg, 5*time.Second)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("handshake: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestTLSBadConfig checks that a server whose TLS config would not verify
// clients refuses to serve, and says nothing in clear.
func TestTLSBadConfig(t *testing.T) {
	ca := tlstest.NewCA(t, "pagewarp test CA")
	cfg := tlstest.ServerConfig(ca, ca.Issue(t, tlstest.Loopback()))
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	s := regionServer(t, randomRegion(4, 1), Options{TLS: cfg})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); !errors.Is(err, wire.ErrTLSConfig) {
		t.Fatalf("Serve: %v, want %v", err, wire.ErrTLSConfig)
	}
	a, b := net.Pipe()
	defer a.Close()
	go s.ServeConn(b)
	a.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := a.Read(make([]byte, 64)); err != io.EOF {
		t.Fatalf("read %d bytes, %v: want the connection closed", n, err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
