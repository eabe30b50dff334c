package pageserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/pagewarp/pagewarp/wire"
)

const (
	defaultWriteTimeout     = 10 * time.Second
	defaultHandshakeTimeout = 5 * time.Second
	defaultName             = "pagewarp-pageserver"
	defaultSessionLinger    = 2 * time.Minute

	// serverFeatures are the feature bits this server implements; it offers
	// wire.FeaturePush too when Options.Prefetch names a predictor.
	serverFeatures = wire.FeatureZeroPages | wire.FeaturePageHashes

	// maxFramePages bounds the pages in one Pages frame, so that a demand reply waits behind at most
	// one such frame of a background request (256 KiB with 4 KiB pages).
	maxFramePages = 64
	// maxFrameData is the page data one Pages frame may carry under wire.MaxFrameSize, leaving room for
	// the header and hashes.
	maxFrameData = wire.MaxPageSize

	// queueDepth bounds each connection's demand and background queues. When one is full the receive
	// loop stops reading, and TCP flow control pushes back on the target.
	queueDepth = 64

	// shutdownGrace bounds the writes of a connection once Close is called, Bye included.
	shutdownGrace = time.Second
	// lingerTimeout bounds how long a connection that sent its last frame (Bye or Error) waits for the
	// peer to close, discarding what it sends, so that closing with unread input does not reset the
	// connection before the peer has read that frame.
	lingerTimeout = 500 * time.Millisecond
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// Logger receives connection events at Debug and Info; nil discards them.
	Logger *slog.Logger
	// Name is sent in Welcome (at most wire.MaxNameLen bytes); default "pagewarp-pageserver".
	Name string
	// WriteTimeout bounds every flush to a connection; default 10s.
	WriteTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake (with TLS) and then the
	// wait for Hello, each; default 5s. A client that connects and stays
	// silent holds its connection this long and no longer.
	HandshakeTimeout time.Duration
	// TLS, when set, makes every connection mutual TLS 1.3: the server runs
	// the TLS handshake on each accepted connection before it reads a
	// frame, and a client without a certificate that ClientCAs verifies is
	// refused there, before anything of the source (not even the Welcome
	// with its region list) is sent. The config must require and verify
	// client certificates (see wire.ServerTLS); otherwise Serve returns the
	// reason and every client is refused. Serve and ServeConn take raw
	// connections, not ones already wrapped in TLS.
	TLS *tls.Config
	// UrgentSpin is how long the receive loop of an urgent connection
	// busy-polls for the next demand request before it parks; default
	// 200µs, negative disables. See docs/benchmarks.md for why.
	UrgentSpin time.Duration
	// Prefetch makes the server push the pages a predictor expects next
	// after each demand reply, to targets that negotiate wire.FeaturePush.
	Prefetch Prefetch
	// SessionLinger is how long a push session (a predictor, its push
	// window and the record of pages sent, shared by a target's connections)
	// is kept after its last connection dropped without the target's Bye,
	// for the target to reconnect and resume (wire.Hello.Resume). Default
	// 2 minutes; negative forgets a session with its last connection.
	SessionLinger time.Duration
	// Precopy, when set, takes the pre-copy streams (wire.ChannelPrecopy)
	// of a target: the server offers wire.FeaturePrecopy and hands each
	// such connection over after the handshake. Without it a pre-copy
	// Hello is answered with a protocol error.
	Precopy PrecopyServer
}

// PrecopyServer is what a server hands pre-copy connections to (package
// precopy's Sender implements it).
type PrecopyServer interface {
	// ServePrecopy runs one pre-copy stream whose Hello it is given and
	// whose Welcome went out. It returns when it is done with the
	// connection; the server then closes it. r and w are the connection's
	// framed reader and writer (w is flushed).
	ServePrecopy(hello *wire.Hello, nc net.Conn, r *wire.Reader, w *wire.Writer) error
}

// Stats are a Server's counters since New.
type Stats struct {
	ConnectionsAccepted uint64
	ConnectionsActive   int64
	// TLSRefused counts connections closed because their TLS handshake
	// failed or timed out (a missing, untrusted or expired client
	// certificate, a client speaking something else, a silent client).
	TLSRefused uint64
	// Requests counts page requests by priority: Requests[wire.PriorityDemand] and
	// Requests[wire.PriorityBackground].
	Requests       [2]uint64
	DigestRequests uint64
	// PagesSent counts pages sent with their data; ZeroPagesSent pages sent as zero runs.
	PagesSent     uint64
	ZeroPagesSent uint64
	// BytesSent counts every byte written to connections, frame headers included.
	BytesSent uint64
	// Errors counts Error messages sent to clients, by code (each closes its connection).
	Errors [wire.NumCodes]uint64
	// Pushes counts Push notices sent (demand replies followed by a push);
	// PagesPushed the pages they announced.
	Pushes      uint64
	PagesPushed uint64
	// PushReportedUsed and PushReportedUnused count pushed pages the targets
	// reported touched and untouched (a sample: see faulthandler's
	// Options.ProbeEvery).
	PushReportedUsed   uint64
	PushReportedUnused uint64
	// Resumes counts connections opened again by a target resuming its
	// post-copy after a drop (Hello.Resume); ResidentFrames the Resident
	// frames they sent.
	Resumes        uint64
	ResidentFrames uint64
	// PredictCalls counts predictor consultations (one per demand fault with
	// pushing on); PredictTime is their total time, locks included.
	PredictCalls uint64
	PredictTime  time.Duration
}

type counters struct {
	accepted, digests, pages, zeroPages, bytes atomic.Uint64
	tlsRefused                                 atomic.Uint64
	active                                     atomic.Int64
	requests                                   [2]atomic.Uint64
	errors                                     [wire.NumCodes]atomic.Uint64
	pushes, pushedPages, pushUsed, pushUnused  atomic.Uint64
	predictCalls, predictNanos                 atomic.Uint64
	resumes, residentFrames                    atomic.Uint64
}

// Server serves pages from a Source to targets, one connection per channel. See the package
// documentation for its goroutines and invariants.
type Server struct {
	src      Source
	slicer   Slicer // nil if src is not one
	cache    bool   // src is Immutable: digests are cached
	log      *slog.Logger
	opts     Options
	tls      *tls.Config // from Options.TLS through wire.ServerTLS; nil: plain TCP
	err      error       // invalid configuration, reported by Serve and to clients
	pageSize int
	regions  []wire.Region
	pages    map[uint32]uint64 // region id -> pages
	// framePages is the number of pages per Pages frame: min(64, what fits in one frame).
	framePages int
	zeroPage   []byte

	done chan struct{} // closed by Close

	mu        sync.Mutex // guards closed, listeners, conns
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	wg        sync.WaitGroup // connections and Serve loops

	digestMu sync.Mutex
	digests  map[uint32][16]byte // guarded by digestMu; only when cache

	sessMu   sync.Mutex
	sessions map[[wire.SessionLen]byte]*session // guarded by sessMu; only with Prefetch
	features uint64                             // what this server offers

	stats counters
	hooks testHooks
}

// testHooks let tests order events deterministically. All are nil outside tests.
type testHooks struct {
	enqueued    func(wire.Request) // receive loop, after a request is queued or before it is served inline
	beforeJob   func()             // send loop, before it waits for the next job
	beforeChunk func(wire.Request) // send loop, before each chunk of a background request
}

// New returns a Server for src. If src is not usable (an invalid page size, too many regions,
// duplicate region ids), Serve returns the reason and every client gets an internal error.
func New(src Source, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Name == "" {
		opts.Name = defaultName
	}
	if len(opts.Name) > wire.MaxNameLen {
		opts.Name = opts.Name[:wire.MaxNameLen]
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = defaultWriteTimeout
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = defaultHandshakeTimeout
	}
	if opts.UrgentSpin == 0 {
		opts.UrgentSpin = 200 * time.Microsecond
	}
	if opts.SessionLinger == 0 {
		opts.SessionLinger = defaultSessionLinger
	}
	s := &Server{
		src:       src,
		log:       opts.Logger,
		opts:      opts,
		done:      make(chan struct{}),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		digests:   make(map[uint32][16]byte),
		pages:     make(map[uint32]uint64),
		sessions:  make(map[[wire.SessionLen]byte]*session),
		features:  serverFeatures,
	}
	if opts.TLS != nil {
		cfg, err := wire.ServerTLS(opts.TLS)
		if err != nil {
			s.err = fmt.Errorf("pageserver: %w", err)
			return s
		}
		s.tls = cfg
	}
	if err := s.opts.Prefetch.check(); err != nil {
		s.err = err
		return s
	}
	if s.opts.Prefetch.enabled() {
		s.features |= wire.FeaturePush
	}
	if s.opts.Precopy != nil {
		s.features |= wire.FeaturePrecopy
	}
	s.slicer, _ = src.(Slicer)
	if im, ok := src.(Immutable); ok {
		s.cache = im.Immutable()
	}
	s.pageSize = src.PageSize()
	s.regions = src.Regions()
	if err := checkPageSize(s.pageSize); err != nil {
		s.err = fmt.Errorf("pageserver: source: %w", err)
		return s
	}
	if len(s.regions) > wire.MaxRegions {
		s.err = fmt.Errorf("pageserver: source has %d regions, limit %d", len(s.regions), wire.MaxRegions)
		return s
	}
	for _, r := range s.regions {
		if _, dup := s.pages[r.ID]; dup {
			s.err = fmt.Errorf("pageserver: source has two regions with id %d", r.ID)
			return s
		}
		if len(r.Name) > wire.MaxNameLen {
			s.err = fmt.Errorf("pageserver: region %d name is %d bytes, limit %d", r.ID, len(r.Name), wire.MaxNameLen)
			return s
		}
		s.pages[r.ID] = r.Pages
	}
	s.framePages = min(maxFramePages, maxFrameData/s.pageSize)
	s.zeroPage = make([]byte, s.pageSize)
	return s
}

// Serve accepts connections on ln and serves each in its own goroutines until Close. It returns nil
// after Close, else the error that stopped Accept. ln is closed when Serve returns.
func (s *Server) Serve(ln net.Listener) error {
	if s.err != nil {
		ln.Close()
		return s.err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
		s.wg.Done()
	}()
	for {
		nc, err := ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return nil
			default:
			}
			return fmt.Errorf("pageserver: accept: %w", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.wg.Add(1) // taken here so that Close waits for this connection
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.ServeConn(nc)
		}()
	}
}

// bulkSendBuffer is SO_SNDBUF for bulk connections (the kernel caps it at
// net.core.wmem_max).
const bulkSendBuffer = 4 << 20

// ServeConn serves one connection until the peer leaves, a protocol error, or Close, and closes it.
// It can be called directly with any net.Conn, a net.Pipe end included. With Options.TLS, nc is the
// raw connection: ServeConn runs the TLS handshake on it first.
func (s *Server) ServeConn(nc net.Conn) {
	if s.opts.TLS != nil && s.tls == nil {
		// The TLS configuration was refused: nothing is said in clear.
		nc.Close()
		return
	}
	c := newConn(s, nc)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.stats.accepted.Add(1)
	s.stats.active.Add(1)
	defer func() {
		nc.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.stats.active.Add(-1)
		s.wg.Done()
	}()
	c.serve()
}

// Close stops accepting, sends Bye{"shutdown"} to connected clients (best effort, within a second),
// closes every connection and waits for all goroutines. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	close(s.done)
	var err error
	for ln := range s.listeners {
		if e := ln.Close(); e != nil && !errors.Is(e, net.ErrClosed) && err == nil {
			err = fmt.Errorf("pageserver: close listener: %w", e)
		}
	}
	for c := range s.conns {
		c.shutdown()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// Stats returns a snapshot of the counters. Counters are read one by one, so a snapshot taken while
// serving may be mildly inconsistent across fields.
func (s *Server) Stats() Stats {
	st := Stats{
		ConnectionsAccepted: s.stats.accepted.Load(),
		TLSRefused:          s.stats.tlsRefused.Load(),
		ConnectionsActive:   s.stats.active.Load(),
		DigestRequests:      s.stats.digests.Load(),
		PagesSent:           s.stats.pages.Load(),
		ZeroPagesSent:       s.stats.zeroPages.Load(),
		BytesSent:           s.stats.bytes.Load(),
		Pushes:              s.stats.pushes.Load(),
		PagesPushed:         s.stats.pushedPages.Load(),
		PushReportedUsed:    s.stats.pushUsed.Load(),
		PushReportedUnused:  s.stats.pushUnused.Load(),
		PredictCalls:        s.stats.predictCalls.Load(),
		PredictTime:         time.Duration(s.stats.predictNanos.Load()),
		Resumes:             s.stats.resumes.Load(),
		ResidentFrames:      s.stats.residentFrames.Load(),
	}
	for i := range st.Requests {
		st.Requests[i] = s.stats.requests[i].Load()
	}
	for i := range st.Errors {
		st.Errors[i] = s.stats.errors[i].Load()
	}
	return st
}

// digest returns the cached digest of region, if any.
func (s *Server) cachedDigest(region uint32) ([16]byte, bool) {
	if !s.cache {
		return [16]byte{}, false
	}
	s.digestMu.Lock()
	defer s.digestMu.Unlock()
	sum, ok := s.digests[region]
	return sum, ok
}

func (s *Server) storeDigest(region uint32, sum [16]byte) {
	if !s.cache {
		return
	}
	s.digestMu.Lock()
	s.digests[region] = sum
	s.digestMu.Unlock()
}

// discard reads and drops what the peer still sends, up to the read deadline already set, so that
// closing does not reset the connection under a frame the peer has yet to read.
func discard(nc net.Conn) {
	io.Copy(io.Discard, io.LimitReader(nc, 4<<20))
}

// Digest computes the protocol's digest algorithm 1 (wire.DigestXXH3Over64) over a whole region of
// src: the xxh3-128 of every page's xxh3-64 hash as 8 little-endian bytes, big-endian. A target uses the
// same function over its own copy.
func Digest(src Source, region uint32) ([16]byte, error) {
	var pages uint64
	found := false
	for _, r := range src.Regions() {
		if r.ID == region {
			pages, found = r.Pages, true
			break
		}
	}
	if !found {
		return [16]byte{}, fmt.Errorf("digest region %d: %w", region, ErrUnknownRegion)
	}
	ps := src.PageSize()
	if err := checkPageSize(ps); err != nil {
		return [16]byte{}, fmt.Errorf("digest region %d: %w", region, err)
	}
	h := xxh3.New128()
	chunk := uint64(min(maxFramePages, maxFrameData/ps))
	buf := make([]byte, int(chunk)*ps)
	hashes := make([]byte, 0, int(chunk)*wire.HashLen)
	for page := uint64(0); page < pages; page += chunk {
		n := min(chunk, pages-page)
		data := buf[:int(n)*ps]
		if err := src.ReadPages(region, page, data); err != nil {
			return [16]byte{}, fmt.Errorf("digest region %d: %w", region, err)
		}
		hashes = appendHashes(hashes[:0], data, ps)
		h.Write(hashes)
	}
	return h.Sum128().Bytes(), nil
}
