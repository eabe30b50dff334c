package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/internal/tlstest"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
)

// pki is a CA and certificates written as PEM files, as an operator would
// have them.
type pki struct {
	dir, ca                   string
	serverCert, serverKey     string
	clientCert, clientKey     string
	strangerCert, strangerKey string
}

func newPKI(t *testing.T) pki {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "pagewarp CLI test CA")
	other := tlstest.NewCA(t, "someone else's CA")
	p := pki{dir: dir, ca: ca.WriteCA(t, dir, "ca")}
	p.serverCert, p.serverKey = tlstest.WriteFiles(t, dir, "server", ca.Issue(t, tlstest.Loopback()))
	p.clientCert, p.clientKey = tlstest.WriteFiles(t, dir, "client", ca.Issue(t, tlstest.ClientLeaf("target")))
	p.strangerCert, p.strangerKey = tlstest.WriteFiles(t, dir, "stranger", other.Issue(t, tlstest.ClientLeaf("stranger")))
	return p
}

func (p pki) server() []string {
	return []string{"--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-ca", p.ca}
}
func (p pki) client() []string {
	return []string{"--tls-cert", p.clientCert, "--tls-key", p.clientKey, "--tls-ca", p.ca}
}

// TestServeReceiveTLS serves on every address (not loopback: allowed with
// TLS) and receives over mutual TLS; a receiver without TLS, or with a
// certificate from another CA, is refused, and serve counts the refusals.
func TestServeReceiveTLS(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	p := newPKI(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	served := make(chan error, 1)
	var serveOut bytes.Buffer
	go func() {
		served <- run(ctx, io.MultiWriter(pw, &serveOut), io.Discard, append([]string{"serve", "--demo", "4MiB", "--demo-seed", "9", "--listen", "0.0.0.0:0"}, p.server()...))
		pw.Close()
	}()
	var port string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if m := regexp.MustCompile(`listening on \S+:(\d+)`).FindStringSubmatch(sc.Text()); m != nil {
			port = m[1]
			break
		}
	}
	if port == "" {
		t.Fatalf("serve printed no address: %v", <-served)
	}
	go io.Copy(io.Discard, pr)
	addr := "127.0.0.1:" + port

	out := filepath.Join(t.TempDir(), "copy.img")
	var stdout bytes.Buffer
	if err := run(ctx, &stdout, io.Discard, append([]string{"receive", "--connect", addr, "--verify", "--out", out, "--touch-threads", "2"}, p.client()...)); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	c := bench.Content{Seed: 9, ZeroFraction: 0.25}
	if bad := c.Check(got, os.Getpagesize()); bad >= 0 {
		t.Fatalf("page %d of the received region differs from the source", bad)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no TLS", nil, "requires TLS"},
		{"certificate from another CA", []string{"--tls-cert", p.strangerCert, "--tls-key", p.strangerKey, "--tls-ca", p.ca}, "certificate required"},
		{"server name", append(p.client(), "--connect", "localhost:"+port), ""}, // the server's certificate names localhost too: accepted
	} {
		args := append([]string{"receive", "--connect", addr}, tc.args...)
		err := run(ctx, io.Discard, io.Discard, args)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
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
	// Two receivers refused, four connections each (urgent and 3 bulk).
	for _, want := range []string{"mutual TLS 1.3", "refused 8 connections in the TLS handshake"} {
		if !strings.Contains(serveOut.String(), want) {
			t.Errorf("serve output lacks %q:\n%s", want, serveOut.String())
		}
	}
}

// TestTLSFlagErrors checks the address rule and the flags' errors, before
// anything listens or connects.
func TestTLSFlagErrors(t *testing.T) {
	p := newPKI(t)
	expiredCert, expiredKey := tlstest.WriteFiles(t, p.dir, "expired", tlstest.SelfSigned(t, tlstest.Leaf{
		Name: "expired", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}))
	notPEM := filepath.Join(p.dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--demo", "1MiB", "--listen", "192.0.2.1:7070"}, "--tls-cert, --tls-key and --tls-ca"},
		{[]string{"serve", "--demo", "1MiB", "--tls-cert", p.serverCert}, "needs all of --tls-cert, --tls-key and --tls-ca"},
		{[]string{"serve", "--demo", "1MiB", "--tls-cert", p.serverCert, "--tls-key", p.clientKey, "--tls-ca", p.ca}, "private key does not match"},
		{[]string{"serve", "--demo", "1MiB", "--tls-cert", expiredCert, "--tls-key", expiredKey, "--tls-ca", p.ca}, "not now"},
		{[]string{"serve", "--demo", "1MiB", "--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-ca", notPEM}, "no PEM certificate"},
		{[]string{"receive", "--connect", "192.0.2.1:7070"}, "is not a loopback address"},
		{[]string{"receive", "--connect", "source.example:7070", "--tls-ca", p.ca}, "needs all of"},
		{append([]string{"receive", "--connect", "127.0.0.1:1"}, p.client()...), "connection refused"},
		{[]string{"trace", "record", "--connect", "192.0.2.1:7070", "--out-trace", filepath.Join(p.dir, "t")}, "is not a loopback address"},
	} {
		err := run(context.Background(), io.Discard, io.Discard, c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("pagewarp %s: error %v, want one containing %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}
