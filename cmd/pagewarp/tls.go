package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// tlsFlags are the mutual-TLS flags of serve and receive (and trace record,
// which receives): this side's certificate and key, and the CA that signs
// the other side's certificate. docs/operations.md shows how to make them.
type tlsFlags struct {
	cert, key, ca string
}

func (f *tlsFlags) register(fs *pflag.FlagSet, side string) {
	fs.StringVar(&f.cert, "tls-cert", "", "mutual TLS: this "+side+"'s certificate (PEM; with --tls-key and --tls-ca)")
	fs.StringVar(&f.key, "tls-key", "", "mutual TLS: the private key of --tls-cert (PEM)")
	fs.StringVar(&f.ca, "tls-ca", "", "mutual TLS: the CA certificate(s) (PEM) that must have signed the peer's certificate")
}

// enabled reports whether any TLS flag was given.
func (f *tlsFlags) enabled() bool { return f.cert != "" || f.key != "" || f.ca != "" }

// load reads the certificate, its key and the CA pool; all three flags must
// be given together.
func (f *tlsFlags) load() (tls.Certificate, *x509.CertPool, error) {
	if f.cert == "" || f.key == "" || f.ca == "" {
		return tls.Certificate{}, nil, errors.New("mutual TLS needs all of --tls-cert, --tls-key and --tls-ca")
	}
	cert, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", f.cert, f.key, err)
	}
	now := time.Now()
	if leaf := cert.Leaf; leaf != nil && (now.Before(leaf.NotBefore) || now.After(leaf.NotAfter)) {
		return tls.Certificate{}, nil, fmt.Errorf("--tls-cert %s is valid from %s to %s, not now: peers would refuse it",
			f.cert, leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	pem, err := os.ReadFile(f.ca)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return tls.Certificate{}, nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", f.ca)
	}
	return cert, pool, nil
}

// serverConfig is the page server's config: its certificate, and client
// certificates required and verified against --tls-ca. Nil without flags.
func (f *tlsFlags) serverConfig() (*tls.Config, error) {
	if !f.enabled() {
		return nil, nil
	}
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// clientConfig is the target's config: its certificate, and the server's
// verified against --tls-ca (and against the host dialled). Nil without
// flags.
func (f *tlsFlags) clientConfig() (*tls.Config, error) {
	if !f.enabled() {
		return nil, nil
	}
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// isLoopback reports whether HOST of addr (HOST:PORT) is a loopback address
// or "localhost".
func isLoopback(flag, addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("%s %q: %w", flag, addr, err)
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback(), nil
}

// checkPageAddr enforces the rule that page contents cross the network only
// under mutual TLS, or when the operator says --insecure: a non-loopback
// --listen (serve) or --connect (receive) without TLS is refused.
func checkPageAddr(flag, addr string, secure, insecure bool) error {
	lo, err := isLoopback(flag, addr)
	if err != nil || lo || secure || insecure {
		return err
	}
	return fmt.Errorf("%s %s is not a loopback address: page contents are secrets and would cross the network in clear; "+
		"give --tls-cert, --tls-key and --tls-ca for mutual TLS (docs/operations.md, \"TLS\"), "+
		"or pass --insecure on a network you trust", flag, addr)
}
