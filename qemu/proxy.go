package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pagewarp/pagewarp/predictor"
	"github.com/pagewarp/pagewarp/qemu/qmp"
	"github.com/pagewarp/pagewarp/qemu/returnpath"
)

// Defaults of ProxyConfig. DefaultBudget is the budget that did best in bench qemu (veth
// 1 Gbit/s, postcopy-preempt, reverse-walk guest; docs/benchmarks.md): 8 left one real request
// per 8 visits, 256 queued a megabyte of injected pages at the source ahead of the next real
// request, which waits behind them (the source serves requests in order).
const (
	DefaultBudget      = 64
	DefaultCloseGrace  = 2 * time.Second
	DefaultDialTimeout = 10 * time.Second
)

// ProxyConfig configures a Proxy.
type ProxyConfig struct {
	// Listen is the address the source migrates to ("127.0.0.1:0" picks a port; see Addr).
	Listen string
	// Dest is the destination QEMU's -incoming / migrate-incoming address ("127.0.0.1:4444").
	Dest string
	// Blocks are the source's RAM blocks (qmp.Client.RAMBlocks on the source). Only blocks listed
	// here with a non-zero page size and used length are ever injected into; with none listed
	// the proxy only forwards (injection is disabled from the start, see Stats.DisabledReason).
	Blocks []qmp.RAMBlock
	// Predictor is a predictor.Names() name ("none" injects nothing). Default "ppm".
	Predictor string
	// PredictorConfig is passed to predictor.New for each block; its Pages is set to the
	// block's used length in pages.
	PredictorConfig predictor.Config
	// Budget is how many predicted pages are injected after each real request (default 8).
	Budget int
	// CloseGrace is how long a connection pair stays half-open after one direction ended
	// cleanly (default 2 s).
	CloseGrace time.Duration
	// DialTimeout bounds each dial of the destination (default 10 s).
	DialTimeout time.Duration
	// Listener, if set, is where the proxy accepts the source's connections instead of
	// listening on Listen itself (a listener made in another network namespace, say); the
	// proxy closes it.
	Listener net.Listener
	// Dial, if set, dials the destination instead of a net.Dialer (it gets the DialTimeout as
	// ctx's deadline).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// NotSentLowat is TCP_NOTSENT_LOWAT on the connections to the destination (default
	// DefaultNotSentLowat; negative: the kernel's default, no limit). See DefaultNotSentLowat.
	NotSentLowat int
	// Logger receives connection events and the reason injection stopped (default: discard).
	Logger *slog.Logger
}

// DefaultNotSentLowat keeps at most 128 KiB not yet sent in each socket to the destination.
// Without it the kernel queues up to a whole autotuned send buffer (megabytes) there and wakes
// the proxy only once a third of it has drained, so the proxy stops reading the source for
// milliseconds at a time and the source blocks in its write of the main connection; QEMU 7.2's
// migration thread, which sends both the background stream and the requested pages, then
// serves a queued page request only when that write returns. Measured (QEMU trace events,
// pointer-chase guest, veth 1 Gbit/s, postcopy-preempt): a request waited 9.3 ms (median)
// between its arrival at the source and get_queued_page through the proxy without the limit,
// 0.09 ms with it, as without the proxy.
const DefaultNotSentLowat = 128 << 10

// Stats are the proxy's counters.
type Stats struct {
	// Connections is the number of connection pairs accepted and dialled; OpenConnections the
	// pairs still forwarding (0 again once the migration's connections have all ended).
	Connections, OpenConnections int64
	// RealRequests counts the destination's own page requests (messages); RealPages the pages
	// they asked for in blocks of the block list (a request outside it has no known page size).
	RealRequests, RealPages int64
	// Injected counts the REQ_PAGES_ID messages (one page each) the proxy added.
	Injected int64
	// InjectedThenRequested counts injected pages the destination requested afterwards anyway.
	InjectedThenRequested int64
	// SkippedInvalid counts predicted pages not injected because they failed validation (out of
	// the block); SkippedRequested those already requested or injected before.
	SkippedInvalid, SkippedRequested int64
	// BytesToDest and BytesToSource count the bytes forwarded each way (injected frames included).
	BytesToDest, BytesToSource int64
	// InjectionDisabled is set when the proxy stopped injecting (see DisabledReason).
	InjectionDisabled bool
	DisabledReason    string
}

// Proxy is a post-copy prefetching proxy for one migration.
type Proxy struct {
	cfg    ProxyConfig
	ln     net.Listener
	log    *slog.Logger
	blocks map[string]*blockState

	connections, realRequests, realPages, injected, injThenReq atomic.Int64
	skippedInvalid, skippedRequested, toDest, toSource         atomic.Int64
	open                                                       atomic.Int64
	disabled                                                   atomic.Pointer[string]
	// fwdCounts and fwdSum are the forward-latency histogram (see ForwardLatency), written by
	// the return-path goroutine, read by ForwardLatency.
	fwdCounts [ForwardBuckets + 1]atomic.Uint64
	fwdSum    atomic.Int64 // ns

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// ForwardBuckets is the number of bounded buckets of the forward-latency histogram: bucket k
// counts requests forwarded in (2^(k-1), 2^k] µs, bucket 0 those in at most 1 µs, so the upper
// bounds run 1 µs, 2 µs, 4 µs … 131 ms (2^17 µs); one more bucket counts anything slower. A
// forward is a read of a frame of at most 516 bytes and one write: a few µs on
// an idle host, up to ms when QEMU's vCPU threads and the proxy share few cores; beyond 131 ms
// something is wrong, and the exact figure matters less.
const ForwardBuckets = 18

// ForwardBucketBound returns the upper bound of bucket k of the forward-latency histogram,
// 2^k µs, for k < ForwardBuckets.
func ForwardBucketBound(k int) time.Duration { return time.Microsecond << k }

// ForwardLatency is the latency the proxy adds to the destination's page requests on the return
// path: for each request, the time from the kernel's receipt of its last segment (the
// socket's SO_TIMESTAMPNS receive timestamp, so the time it waited in the socket for the
// proxy to be woken counts) to the end of the write that forwarded it to the source, on its
// own: the predictor's step and the injections come after that write. Without kernel
// timestamps (a connection that is not TCP) it starts at the read that delivered the request.
// The page direction (splice) is not in it.
type ForwardLatency struct {
	// Counts[k] counts the requests of bucket k (ForwardBuckets; not cumulative), and
	// Counts[ForwardBuckets] those slower than the last bound.
	Counts [ForwardBuckets + 1]uint64
	// Sum is the total of the latencies counted.
	Sum time.Duration
}

// Count returns the number of requests counted.
func (l ForwardLatency) Count() uint64 {
	var n uint64
	for _, c := range l.Counts {
		n += c
	}
	return n
}

// forwardBucket returns the bucket of latency d.
func forwardBucket(d time.Duration) int {
	if d <= time.Microsecond {
		return 0
	}
	us := uint64((d + time.Microsecond - 1) / time.Microsecond) // ceil: d <= us µs
	return min(bits.Len64(us-1), ForwardBuckets)
}

func (p *Proxy) observeForward(d time.Duration) {
	p.fwdCounts[forwardBucket(d)].Add(1)
	p.fwdSum.Add(int64(d))
}

// ForwardLatency returns a snapshot of the forward-latency histogram. The buckets are read one
// by one while requests are forwarded, so a snapshot may be mildly inconsistent (as Stats are).
func (p *Proxy) ForwardLatency() ForwardLatency {
	var l ForwardLatency
	for i := range l.Counts {
		l.Counts[i] = p.fwdCounts[i].Load()
	}
	l.Sum = time.Duration(p.fwdSum.Load())
	return l
}

// blockState is the return-path goroutine's view of one RAM block.
type blockState struct {
	qmp.RAMBlock
	pages uint64
	pred  predictor.Predictor
	// asked has a bit per page requested by the destination or injected; injected one per page
	// injected (for InjectedThenRequested).
	asked, injected []uint64
}

func testBit(b []uint64, i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }
func setBit(b []uint64, i uint64)       { b[i/64] |= 1 << (i % 64) }

// NewProxy validates cfg and listens on cfg.Listen (or takes cfg.Listener).
func NewProxy(cfg ProxyConfig) (*Proxy, error) {
	if cfg.Predictor == "" {
		cfg.Predictor = "ppm"
	}
	if cfg.Budget == 0 {
		cfg.Budget = DefaultBudget
	}
	if cfg.Budget < 0 || cfg.Budget > 1024 {
		return nil, fmt.Errorf("qemu proxy: budget %d not in 1..1024", cfg.Budget)
	}
	if cfg.CloseGrace == 0 {
		cfg.CloseGrace = DefaultCloseGrace
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.NotSentLowat == 0 {
		cfg.NotSentLowat = DefaultNotSentLowat
	}
	if cfg.Dest == "" {
		return nil, errors.New("qemu proxy: no destination address")
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger, blocks: map[string]*blockState{}, conns: map[net.Conn]struct{}{}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	for _, b := range cfg.Blocks {
		if b.PageSize == 0 || b.PageSize > 1<<30 || b.PageSize&(b.PageSize-1) != 0 || b.Used == 0 || b.Used%b.PageSize != 0 {
			return nil, fmt.Errorf("qemu proxy: block %q: page size %d, used %d", b.Name, b.PageSize, b.Used)
		}
		if _, dup := p.blocks[b.Name]; dup {
			return nil, fmt.Errorf("qemu proxy: block %q listed twice", b.Name)
		}
		pages := b.Used / b.PageSize
		if pages > predictor.MaxPages {
			continue // never injected into
		}
		pc := cfg.PredictorConfig
		pc.Pages = pages
		pred, err := predictor.New(cfg.Predictor, pc)
		if err != nil {
			return nil, fmt.Errorf("qemu proxy: block %q: %w", b.Name, err)
		}
		words := (pages + 63) / 64
		p.blocks[b.Name] = &blockState{RAMBlock: b, pages: pages, pred: pred, asked: make([]uint64, words), injected: make([]uint64, words)}
	}
	if len(cfg.Blocks) == 0 {
		p.disable("no RAM block list (ProxyConfig.Blocks): requests cannot be validated, so nothing is injected")
	}
	if cfg.Listener != nil {
		p.ln = cfg.Listener
		return p, nil
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("qemu proxy: %w", err)
	}
	p.ln = ln
	return p, nil
}

// Addr is the address the proxy listens on: the source migrates to tcp:Addr.
func (p *Proxy) Addr() net.Addr { return p.ln.Addr() }

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	s := Stats{
		Connections:           p.connections.Load(),
		OpenConnections:       p.open.Load(),
		RealRequests:          p.realRequests.Load(),
		RealPages:             p.realPages.Load(),
		Injected:              p.injected.Load(),
		InjectedThenRequested: p.injThenReq.Load(),
		SkippedInvalid:        p.skippedInvalid.Load(),
		SkippedRequested:      p.skippedRequested.Load(),
		BytesToDest:           p.toDest.Load(),
		BytesToSource:         p.toSource.Load(),
	}
	if r := p.disabled.Load(); r != nil {
		s.InjectionDisabled, s.DisabledReason = true, *r
	}
	return s
}

// Serve accepts the source's connections, in order, until ctx ends or Close is called, then
// closes every connection and waits for its goroutines. It returns nil after Close or the end
// of ctx, and the error of a failed dial of the destination (after which the source's
// connection is closed and Serve stops accepting: the migration cannot proceed).
func (p *Proxy) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { p.Close() })
	defer stop()
	defer p.wg.Wait()
	defer p.Close()
	for i := 0; ; i++ {
		src, err := p.ln.Accept()
		if err != nil {
			if p.isClosed() {
				return nil
			}
			return fmt.Errorf("qemu proxy: accept: %w", err)
		}
		// Dial before accepting the next connection: the destination must see them in the
		// source's order.
		dst, err := p.dial(ctx)
		if err != nil {
			src.Close()
			p.Close()
			if p.isClosed() && ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("qemu proxy: dial destination %s: %w", p.cfg.Dest, err)
		}
		if err := setNotSentLowat(dst, p.cfg.NotSentLowat); err != nil {
			p.log.Warn("qemu proxy: TCP_NOTSENT_LOWAT not set", "err", err)
		}
		if !p.track(src, dst) {
			return nil
		}
		p.connections.Add(1)
		p.open.Add(1)
		p.log.Info("qemu proxy: connection", "n", i, "source", src.RemoteAddr(), "destination", dst.RemoteAddr())
		p.wg.Add(1)
		go func() { defer p.wg.Done(); defer p.open.Add(-1); p.pair(src, dst, i == 0) }()
	}
}

// setNotSentLowat sets TCP_NOTSENT_LOWAT on c if it is a TCP connection and v > 0.
func setNotSentLowat(c net.Conn, v int) error {
	if v <= 0 {
		return nil
	}
	_, err := setsockoptTCP(c, unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, v)
	if err == errNotTCP {
		return nil
	}
	return err
}

var errNotTCP = errors.New("not a TCP connection")

// setsockoptTCP sets an integer socket option on c, a TCP connection (errNotTCP otherwise), and
// returns its raw connection.
func setsockoptTCP(c net.Conn, level, opt, v int) (syscall.RawConn, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, errNotTCP
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, v) }); err != nil {
		return nil, err
	}
	return raw, serr
}

// dial dials the destination, through cfg.Dial if set, within DialTimeout.
func (p *Proxy) dial(ctx context.Context) (net.Conn, error) {
	if p.cfg.Dial == nil {
		d := net.Dialer{Timeout: p.cfg.DialTimeout}
		return d.DialContext(ctx, "tcp", p.cfg.Dest)
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	return p.cfg.Dial(ctx, p.cfg.Dest)
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// track registers a pair's sockets for Close; false (sockets closed) if the proxy is closed.
func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

// Close stops accepting and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	err := p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	return err
}

// pair forwards one connection pair until either side ends.
func (p *Proxy) pair(src, dst net.Conn, main bool) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			src.Close()
			dst.Close()
			p.mu.Lock()
			delete(p.conns, src)
			delete(p.conns, dst)
			p.mu.Unlock()
		})
	}
	defer closeBoth()
	done := make(chan error, 2)
	go func() { done <- p.copyStream(dst, src, &p.toDest) }()
	go func() {
		if main {
			done <- p.returnPath(src, dst)
		} else {
			done <- p.copyStream(src, dst, &p.toSource)
		}
	}()
	for n := 0; n < 2; n++ {
		var err error
		if n == 0 {
			err = <-done
		} else {
			select {
			case err = <-done:
			case <-time.After(p.cfg.CloseGrace):
				p.log.Info("qemu proxy: closing a half-open connection after the grace period")
				return
			}
		}
		if err != nil {
			p.log.Info("qemu proxy: connection ended", "err", err)
			return // closeBoth: an error ends both directions at once
		}
	}
}

// copyStream copies from r to w until EOF (then half-closes w and returns nil) or an error.
// Between two TCP connections the bytes move by splice(2), in the kernel, without a copy
// through the proxy (page data is most of a migration); count grows by spliceChunk at a time.
func (p *Proxy) copyStream(w, r net.Conn, count *atomic.Int64) error {
	if tw, ok := w.(*net.TCPConn); ok {
		if tr, ok := r.(*net.TCPConn); ok {
			lr := &io.LimitedReader{R: tr}
			for {
				lr.N = spliceChunk
				n, err := tw.ReadFrom(lr)
				count.Add(n)
				if err != nil {
					return err
				}
				if lr.N > 0 { // ReadFrom stopped short of the chunk without an error: EOF
					return halfClose(w)
				}
			}
		}
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			count.Add(int64(n))
		}
		if err == io.EOF {
			return halfClose(w)
		}
		if err != nil {
			return err
		}
	}
}

// spliceChunk is how many bytes copyStream splices before it counts them: the byte counters
// lag the stream by at most this much. Data moves on as it arrives whatever the chunk.
const spliceChunk = 256 << 10

func halfClose(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// returnPath forwards the main connection's destination → source direction, message by
// message, rewriting requests and injecting predictions.
func (p *Proxy) returnPath(src, dst net.Conn) error {
	in := newStampReader(dst)
	r := returnpath.NewReader(in)
	w := countWriter{src, &p.toSource}
	current := ""  // the block the destination named last
	var out []byte // frames to write for one message
	predicted := make([]uint64, 0, p.cfg.Budget)
	for {
		m, raw, err := r.Next()
		if err == io.EOF {
			return halfClose(src)
		}
		if err != nil {
			p.disable(fmt.Sprintf("return path: %v", err))
			return fmt.Errorf("return path: %w", err)
		}
		out = out[:0]
		arrived := in.last
		request := false
		switch m.Type {
		case returnpath.ReqPagesID, returnpath.ReqPages:
			request = true
			if m.Type == returnpath.ReqPagesID {
				current = m.Block
			}
			if current == "" {
				// A plain REQ_PAGES before any block was named: the source will refuse it;
				// forward it as it is and inject no more.
				p.disable("REQ_PAGES before any REQ_PAGES_ID")
				out = append(out, raw...)
				break
			}
			// The real request goes out first, on its own: the predictor's step
			// (and the injections) must not delay what a vCPU waits for.
			out, _ = returnpath.AppendReqPagesID(out, m.Start, m.Len, current) // current is 1..255 bytes: it came in a frame
			if _, err := w.Write(out); err != nil {
				return err
			}
			p.observeForward(time.Since(arrived))
			if out = p.onRequest(out[:0], current, m.Start, m.Len, predicted[:0]); len(out) == 0 {
				continue
			}
			request = false // forwarded above; what follows are the injections
		case returnpath.RecvBitmap:
			if _, err := w.Write(raw); err != nil {
				return err
			}
			if _, err := r.Bitmap(w); err != nil {
				p.disable(fmt.Sprintf("return path: %v", err))
				return fmt.Errorf("return path: %w", err)
			}
			continue
		default:
			out = append(out, raw...)
		}
		if _, err := w.Write(out); err != nil {
			return err
		}
		if request {
			p.observeForward(time.Since(arrived))
		}
	}
}

// stampReader records when the bytes its last Read returned arrived: for a TCP connection the
// kernel's receive timestamp of the last segment read (SO_TIMESTAMPNS), which includes the
// time the bytes waited in the socket before the proxy was woken to read them; otherwise (or
// when the kernel gives none: it turns receive timestamps on lazily, so the first segments
// after the host's first SO_TIMESTAMPNS come without) the time the Read returned.
type stampReader struct {
	r    io.Reader
	raw  syscall.RawConn // nil: no kernel timestamps
	oob  []byte
	last time.Time
}

func newStampReader(c net.Conn) *stampReader {
	s := &stampReader{r: c}
	raw, err := setsockoptTCP(c, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	if err != nil {
		return s
	}
	s.raw, s.oob = raw, make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))
	return s
}

func (s *stampReader) Read(b []byte) (int, error) {
	if s.raw == nil {
		n, err := s.r.Read(b)
		if n > 0 {
			s.last = time.Now()
		}
		return n, err
	}
	var n, oobn int
	var rerr error
	err := s.raw.Read(func(fd uintptr) bool {
		for {
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), b, s.oob, 0)
			switch rerr {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // wait in the netpoller
			}
			return true
		}
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, err
	}
	if n == 0 && len(b) > 0 {
		return 0, io.EOF
	}
	s.last = time.Now()
	if msgs, perr := unix.ParseSocketControlMessage(s.oob[:oobn]); perr == nil {
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
				ts := *(*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
				if t := time.Unix(ts.Unix()); !t.After(s.last) {
					s.last = t
				}
			}
		}
	}
	return n, nil
}

// onRequest books a real request of length bytes at start of block and appends the injected
// requests for the predicted pages to out.
func (p *Proxy) onRequest(out []byte, block string, start uint64, length uint32, predicted []uint64) []byte {
	p.realRequests.Add(1)
	b, ok := p.blocks[block]
	if !ok {
		p.disable(fmt.Sprintf("request for block %q, not in the source's block list", block))
		return out
	}
	ps := b.PageSize
	if length == 0 || start%ps != 0 || uint64(length)%ps != 0 || start >= b.Used || uint64(length) > b.Used-start {
		p.disable(fmt.Sprintf("request %#x+%d out of block %q (used %#x, page %d)", start, length, block, b.Used, ps))
		return out
	}
	first, n := start/ps, uint64(length)/ps
	p.realPages.Add(int64(n))
	for pg := first; pg < first+n; pg++ {
		if testBit(b.injected, pg) {
			p.injThenReq.Add(1)
		}
		setBit(b.asked, pg)
		b.pred.Observe(pg)
	}
	if p.disabled.Load() != nil {
		return out
	}
	for _, pg := range b.pred.Predict(predicted, p.cfg.Budget) {
		switch {
		case pg >= b.pages:
			p.skippedInvalid.Add(1)
			continue
		case testBit(b.asked, pg):
			p.skippedRequested.Add(1)
			continue
		}
		setBit(b.asked, pg)
		setBit(b.injected, pg)
		out, _ = returnpath.AppendReqPagesID(out, pg*ps, uint32(ps), block)
		b.pred.Pushed(pg)
		p.injected.Add(1)
	}
	return out
}

func (p *Proxy) disable(reason string) {
	if p.disabled.CompareAndSwap(nil, &reason) {
		p.log.Warn("qemu proxy: injection disabled", "reason", reason)
	}
}
