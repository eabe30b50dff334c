package wire

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
)

func TestServerTLS(t *testing.T) {
	cert := tls.Certificate{Certificate: [][]byte{{1}}}
	pool := x509.NewCertPool()
	good := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	c, err := ServerTLS(good)
	if err != nil {
		t.Fatal(err)
	}
	if c == good || c.MinVersion != tls.VersionTLS13 || good.MinVersion != 0 {
		t.Fatalf("want a copy with MinVersion TLS 1.3, the original untouched: %#x, %#x", c.MinVersion, good.MinVersion)
	}
	for _, bad := range []struct {
		name string
		edit func(*tls.Config)
		want string
	}{
		{"no certificate", func(c *tls.Config) { c.Certificates = nil }, "no certificate"},
		{"client certificate optional", func(c *tls.Config) { c.ClientAuth = tls.VerifyClientCertIfGiven }, "required and verified"},
		{"client certificate not verified", func(c *tls.Config) { c.ClientAuth = tls.RequireAnyClientCert }, "required and verified"},
		{"no client CAs", func(c *tls.Config) { c.ClientCAs = nil }, "ClientCAs"},
		{"per-client configs", func(c *tls.Config) {
			c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return nil, nil }
		}, "GetConfigForClient"},
	} {
		c := good.Clone()
		bad.edit(c)
		if _, err := ServerTLS(c); !errors.Is(err, ErrTLSConfig) || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want %v saying %q", bad.name, err, ErrTLSConfig, bad.want)
		}
	}
}

func TestClientTLS(t *testing.T) {
	for _, tc := range []struct {
		addr, name, want string
	}{
		{"source.example:7070", "", "source.example"},
		{"10.0.0.1:7070", "", "10.0.0.1"},
		{"[::1]:7070", "", "::1"},
		{"/run/pagewarp.sock", "source.example", "source.example"},
		{"10.0.0.1:7070", "source.example", "source.example"},
	} {
		c, err := ClientTLS(&tls.Config{ServerName: tc.name}, tc.addr)
		if err != nil {
			t.Fatalf("%s: %v", tc.addr, err)
		}
		if c.ServerName != tc.want || c.MinVersion != tls.VersionTLS13 {
			t.Errorf("%s with %q: ServerName %q MinVersion %#x, want %q and TLS 1.3", tc.addr, tc.name, c.ServerName, c.MinVersion, tc.want)
		}
	}
	if _, err := ClientTLS(&tls.Config{}, "/run/pagewarp.sock"); !errors.Is(err, ErrTLSConfig) {
		t.Errorf("a unix socket path without ServerName: %v, want %v", err, ErrTLSConfig)
	}
	if _, err := ClientTLS(&tls.Config{InsecureSkipVerify: true}, "a:1"); !errors.Is(err, ErrTLSConfig) {
		t.Errorf("InsecureSkipVerify: %v, want %v", err, ErrTLSConfig)
	}
}
