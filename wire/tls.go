package wire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// TLS policy (docs/protocol.md, "Transport security"): every connection of
// a migration is TLS 1.3 with a certificate on both ends, verified against
// the operator's CA. Both ends are pagewarp, so nothing older needs to be
// spoken: TLS 1.3 has a one-round-trip handshake, only AEAD ciphers, and
// sends the client's certificate encrypted. This file holds the one place
// that policy is applied to a *tls.Config; pageserver and the dialling
// packages (faulthandler, precopy) call it.

// ErrTLSConfig is wrapped by the errors of ServerTLS and ClientTLS.
var ErrTLSConfig = errors.New("invalid TLS configuration")

// ServerTLS returns a copy of cfg fit to serve pages: it must hold a
// certificate (Certificates or GetCertificate; not GetConfigForClient,
// whose configs would escape these checks), require and verify client
// certificates (ClientAuth tls.RequireAndVerifyClientCert) against an
// explicit pool (ClientCAs: a nil pool would accept any certificate the
// system roots trust). The copy's MinVersion is TLS 1.3.
func ServerTLS(cfg *tls.Config) (*tls.Config, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: nil config", ErrTLSConfig)
	}
	if len(cfg.Certificates) == 0 && cfg.GetCertificate == nil {
		return nil, fmt.Errorf("%w: the server has no certificate", ErrTLSConfig)
	}
	if cfg.GetConfigForClient != nil {
		// The config it returns would escape the checks below.
		return nil, fmt.Errorf("%w: GetConfigForClient is not supported", ErrTLSConfig)
	}
	if cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, fmt.Errorf("%w: client certificates must be required and verified (ClientAuth %v, want %v)",
			ErrTLSConfig, cfg.ClientAuth, tls.RequireAndVerifyClientCert)
	}
	if cfg.ClientCAs == nil {
		return nil, fmt.Errorf("%w: no ClientCAs to verify client certificates against", ErrTLSConfig)
	}
	c := cfg.Clone()
	c.MinVersion = max(c.MinVersion, tls.VersionTLS13)
	// A page reply goes out as one record: dynamic sizing would cut the
	// first megabyte of every connection into 1.2 KB records.
	c.DynamicRecordSizingDisabled = true
	return c, nil
}

// ClientTLS returns a copy of cfg for dialling addr (HOST:PORT): when
// cfg.ServerName is empty it is set to HOST, so that the server's
// certificate must name that host or IP address. InsecureSkipVerify is
// refused. The copy's MinVersion is TLS 1.3. cfg need not hold a client
// certificate; a server following ServerTLS then refuses the connection.
func ClientTLS(cfg *tls.Config, addr string) (*tls.Config, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: nil config", ErrTLSConfig)
	}
	if cfg.InsecureSkipVerify {
		return nil, fmt.Errorf("%w: InsecureSkipVerify would accept any server", ErrTLSConfig)
	}
	c := cfg.Clone()
	c.MinVersion = max(c.MinVersion, tls.VersionTLS13)
	if c.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			return nil, fmt.Errorf("%w: no ServerName, and %q has no host to check the server's certificate against", ErrTLSConfig, addr)
		}
		c.ServerName = host
	}
	return c, nil
}

// ClientHandshake runs the client side of a TLS handshake on nc with cfg
// (from ClientTLS) within timeout (and ctx), and returns the TLS
// connection. On error nc is left to the caller to close.
//
// With TLS 1.3 the client's handshake ends before the server has checked
// the client's certificate: a server that refuses it says so with an alert
// that the client reads as the error of its first read (the Welcome).
func ClientHandshake(ctx context.Context, nc net.Conn, cfg *tls.Config, timeout time.Duration) (*tls.Conn, error) {
	tc := tls.Client(nc, cfg)
	if err := handshake(ctx, tc, nc, timeout); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	return tc, nil
}

// ServerHandshake runs the server side of a TLS handshake on tc within
// timeout (and ctx); raw is tc's underlying connection.
func ServerHandshake(ctx context.Context, tc *tls.Conn, raw net.Conn, timeout time.Duration) error {
	return handshake(ctx, tc, raw, timeout)
}

func handshake(ctx context.Context, tc *tls.Conn, raw net.Conn, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// The deadline is set on the raw connection: a peer that sends nothing,
	// or half a ClientHello, holds the connection until then and no longer.
	raw.SetDeadline(deadline)
	defer raw.SetDeadline(time.Time{})
	return tc.HandshakeContext(ctx)
}
