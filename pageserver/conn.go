package pageserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/pagewarp/pagewarp/internal/spinconn"
	"github.com/pagewarp/pagewarp/wire"
)

// errAbort stops a background job between chunks when the connection is ending (a fatal error from
// the receive loop, Close, or the peer gone); the send loop then handles the cause.
var errAbort = errors.New("job aborted")

// job is one unit of work for the send loop: a page request, a digest
// request, or the rest of a push the receive loop left when a demand request
// arrived.
type job struct {
	req    wire.Request // for a digest: ReqID and Region only; for a push: ReqID and Region
	digest bool
	push   []uint64 // pages still to push, ascending
}

// conn is one client connection: a receive loop (the goroutine of ServeConn) and a send loop.
type conn struct {
	s   *Server
	nc  net.Conn // the connection frames go through: raw, or TLS over raw
	raw net.Conn // with TLS, the accepted connection under nc; nil without
	log *slog.Logger
	r   *wire.Reader     // receive loop only
	sr  *spinconn.Reader // under r
	w   *wire.Writer     // send loop only (the handshake, before the send loop starts)

	features uint64
	hello    *wire.Hello
	sess     *session // the migration's shared push state (with Prefetch)
	// byeReceived: the target said Bye (receive loop only; read after it
	// ends): its session need not linger.
	byeReceived bool
	push        bool // push after demand replies: urgent channel, FeaturePush negotiated
	demand      chan job
	pushq       chan job // rests of pushes, served after demand and before background
	bg          chan job
	ctrl        chan wire.Message // the receive loop's last word: an *wire.Error or a *wire.Bye
	fatal       atomic.Bool       // set before an *wire.Error goes to ctrl: abort background work
	gone        chan struct{}     // closed by the receive loop when the peer left without a last word
	sendDone    chan struct{}     // closed when the send loop has finished

	// wmu is held by whichever loop writes: the send loop around every job
	// and its last frame, the receive loop when it serves a demand request
	// inline (see serveInline). It guards w and the send loop state below.
	wmu sync.Mutex

	mu      sync.Mutex // guards started, closing and the write deadline
	started bool       // the handshake is done and the send loop runs
	closing bool       // Close was called: writes get shutdownGrace
	// handedOff: a pre-copy connection given to Options.Precopy; Close
	// closes it, since nothing of the server's writes to it.
	handedOff bool

	// Send loop state.
	written uint64 // w.Written() already counted in stats
	linger  bool   // a last frame went out: discard input until the peer closes
	scratch []byte // pages read from a non-slicing source
	hashes  []byte
	zero    []bool
	pg      wire.Pages
	plan    []uint64 // the current push
}

func newConn(s *Server, nc net.Conn) *conn {
	sr := spinconn.NewReader(nc)
	var (
		raw net.Conn
		r   io.Reader = sr
	)
	if s.tls != nil {
		// TLS reads the socket through the spinning reader, so that an
		// urgent connection busy-polls for the next record as it does for
		// the next plain frame.
		raw = nc
		nc = tls.Server(spinconn.Conn{Conn: raw, R: sr}, s.tls)
		r = nc
	}
	return &conn{
		sr:       sr,
		s:        s,
		nc:       nc,
		raw:      raw,
		log:      s.log.With("remote", nc.RemoteAddr().String()),
		r:        wire.NewReader(r),
		w:        wire.NewWriter(nc),
		demand:   make(chan job, queueDepth),
		pushq:    make(chan job, queueDepth),
		bg:       make(chan job, queueDepth),
		ctrl:     make(chan wire.Message, 1),
		gone:     make(chan struct{}),
		sendDone: make(chan struct{}),
	}
}

// serve runs the connection to its end. The caller closes nc.
func (c *conn) serve() {
	if c.raw != nil && !c.tlsHandshake() {
		return
	}
	ok := c.handshake()
	if c.sess != nil {
		defer func() { c.s.releaseSession(c.sess, c.byeReceived) }()
	}
	if !ok {
		return
	}
	if c.hello.Channel == wire.ChannelPrecopy {
		// The pre-copy sender owns the connection from here on; Close
		// closes it under the sender, which then returns.
		c.mu.Lock()
		c.handedOff = true
		closing := c.closing
		c.mu.Unlock()
		if closing {
			return
		}
		if err := c.s.opts.Precopy.ServePrecopy(c.hello, c.nc, c.r, c.w); err != nil {
			c.log.Info("pre-copy stream ended", "err", err)
		}
		return
	}
	go c.sendLoop()
	c.recvLoop()
	<-c.sendDone
	if c.linger {
		discard(c.nc)
	}
}

// shutdown is called by Server.Close with s.mu held.
func (c *conn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	if !c.started || c.handedOff {
		// In the handshake: nothing to say goodbye to yet. With TLS the raw
		// connection is closed: closing the TLS one would first write a
		// close_notify alert, which can block while s.mu is held.
		if c.raw != nil {
			c.raw.Close()
		} else {
			c.nc.Close()
		}
		return
	}
	c.nc.SetWriteDeadline(time.Now().Add(shutdownGrace))
}

// setWriteDeadline is called before every write.
func (c *conn) setWriteDeadline() {
	c.mu.Lock()
	d := c.s.opts.WriteTimeout
	if c.closing {
		d = min(d, shutdownGrace)
	}
	c.nc.SetWriteDeadline(time.Now().Add(d))
	c.mu.Unlock()
}

func (c *conn) flush() error {
	c.setWriteDeadline()
	err := c.w.Flush()
	c.account()
	return err
}

// account adds the bytes written since the last call to the server's counter.
func (c *conn) account() {
	if n := c.w.Written(); n != c.written {
		c.s.stats.bytes.Add(n - c.written)
		c.written = n
	}
}

// last sends m (a Bye or an Error) as the connection's last frame, then half-closes it and arms the
// linger: the peer gets lingerTimeout to read it and close.
func (c *conn) last(m wire.Message) {
	if werr, ok := m.(*wire.Error); ok {
		if len(werr.Message) > wire.MaxErrorMessageLen {
			werr.Message = werr.Message[:wire.MaxErrorMessageLen]
		}
		if int(werr.Code) < wire.NumCodes {
			c.s.stats.errors[werr.Code].Add(1)
		}
		c.log.Info("closing connection on error", "code", werr.Code.String(), "req", werr.ReqID, "err", werr.Message)
	}
	c.setWriteDeadline()
	err := c.w.WriteMessage(m)
	if err == nil {
		err = c.flush()
	}
	if err != nil {
		c.log.Debug("last frame not sent", "type", m.Type().String(), "err", err)
		return
	}
	// Half-close and linger where the transport can (TCP, Unix sockets, TLS). Elsewhere (net.Pipe,
	// which is synchronous) the peer has read the frame once the write returned.
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
		c.linger = true
	}
}

// tlsHandshake runs the server side of the TLS handshake within
// HandshakeTimeout. A client whose certificate the server does not verify
// gets the TLS alert and nothing else: no frame has been read or written.
func (c *conn) tlsHandshake() bool {
	err := wire.ServerHandshake(context.Background(), c.nc.(*tls.Conn), c.raw, c.s.opts.HandshakeTimeout)
	if err != nil {
		c.s.stats.tlsRefused.Add(1)
		c.log.Info("tls handshake failed: connection refused", "err", err)
		return false
	}
	return true
}

// handshake reads Hello and answers Welcome, or an Error. It reports whether to go on.
func (c *conn) handshake() bool {
	c.nc.SetReadDeadline(time.Now().Add(c.s.opts.HandshakeTimeout))
	m, err := c.r.ReadMessage()
	if err != nil {
		var werr *wire.Error
		if errors.As(err, &werr) {
			c.abort(werr)
		} else {
			c.log.Debug("handshake: read hello", "err", err)
		}
		return false
	}
	hello, ok := m.(*wire.Hello)
	if !ok {
		c.abort(&wire.Error{Code: wire.CodeProtocol, Message: fmt.Sprintf("first frame is %s, want hello", m.Type())})
		return false
	}
	if c.s.err != nil {
		c.abort(&wire.Error{Code: wire.CodeInternal, Message: "server misconfigured"})
		return false
	}
	if hello.VersionMin > wire.Version || hello.VersionMax < wire.Version {
		c.abort(&wire.Error{Code: wire.CodeUnsupportedVersion, Message: fmt.Sprintf(
			"server speaks versions %d..%d, client %d..%d", wire.Version, wire.Version, hello.VersionMin, hello.VersionMax)})
		return false
	}
	if hello.Channel == wire.ChannelPrecopy && c.s.opts.Precopy == nil {
		c.abort(&wire.Error{Code: wire.CodeProtocol, Message: "this server has no pre-copy to stream"})
		return false
	}
	c.nc.SetReadDeadline(time.Time{})
	c.hello = hello
	c.features = hello.Features & c.s.features
	if c.features&wire.FeaturePush != 0 {
		c.sess = c.s.acquireSession(hello.Session)
		c.push = hello.Channel == wire.ChannelUrgent
	}
	if hello.Channel == wire.ChannelUrgent {
		c.sr.SetSpin(c.s.opts.UrgentSpin)
	}
	raw := c.nc
	if c.raw != nil {
		raw = c.raw
	}
	if tc, ok := raw.(*net.TCPConn); ok && (hello.Channel == wire.ChannelBulk || hello.Channel == wire.ChannelPrecopy) {
		// A bulk connection should let the send loop run ahead of a target
		// busy installing pages: with the default 16 KiB start of the send
		// buffer the two sides take turns instead of overlapping.
		tc.SetWriteBuffer(bulkSendBuffer)
	}
	c.log = c.log.With("session", fmt.Sprintf("%x", hello.Session), "channel", hello.Channel)
	c.log.Debug("hello", "client", hello.Client, "features", hello.Features, "resume", hello.Resume)
	if hello.Resume {
		c.s.stats.resumes.Add(1)
		c.log.Info("target resumes", "client", hello.Client)
	}
	welcome := &wire.Welcome{
		Version:  wire.Version,
		Features: c.features,
		PageSize: uint32(c.s.pageSize),
		Regions:  c.s.regions,
		Server:   c.s.opts.Name,
	}
	c.mu.Lock()
	closing := c.closing
	c.started = !closing
	c.mu.Unlock()
	if closing {
		return false
	}
	if err := c.w.WriteMessage(welcome); err != nil {
		c.log.Info("handshake: encode welcome", "err", err)
		return false
	}
	if err := c.flush(); err != nil {
		c.log.Debug("handshake: write welcome", "err", err)
		return false
	}
	return true
}

// abort sends werr as the last frame during the handshake and waits for the peer to close.
func (c *conn) abort(werr *wire.Error) {
	c.last(werr)
	if c.linger {
		discard(c.nc)
	}
}

// fail hands the send loop the connection's last word. It returns once the send loop has it or is gone.
func (c *conn) fail(m wire.Message) {
	if _, ok := m.(*wire.Error); ok {
		c.fatal.Store(true)
	}
	select {
	case c.ctrl <- m:
	case <-c.sendDone:
	}
}

// recvLoop reads frames and queues work until the peer leaves, a protocol error, or the send loop ends.
func (c *conn) recvLoop() {
	for {
		m, err := c.r.ReadMessage()
		if err != nil {
			select {
			case <-c.sendDone: // the send loop ended the connection
				return
			default:
			}
			var werr *wire.Error
			if errors.As(err, &werr) {
				c.fail(werr)
				return
			}
			if err != io.EOF {
				c.log.Debug("read", "err", err)
			}
			close(c.gone)
			return
		}
		switch m := m.(type) {
		case *wire.Request:
			pages, ok := c.s.pages[m.Region]
			if !ok {
				c.fail(&wire.Error{Code: wire.CodeUnknownRegion, ReqID: m.ReqID, Message: fmt.Sprintf("region %d is not served", m.Region)})
				return
			}
			if checkRange(pages, m.Page, uint64(m.Count)) != nil {
				c.fail(&wire.Error{Code: wire.CodeOutOfRange, ReqID: m.ReqID,
					Message: fmt.Sprintf("pages %d+%d outside region %d of %d pages", m.Page, m.Count, m.Region, pages)})
				return
			}
			c.s.stats.requests[m.Priority].Add(1)
			if c.sess != nil && m.Priority == wire.PriorityBackground {
				c.sess.claimed(c.s, m.Region, m.Page, m.Count)
			}
			if m.Priority == wire.PriorityDemand {
				served, err := c.serveInline(*m)
				if err != nil {
					if last, _ := c.failure(err); last != nil {
						c.fail(last)
					} else {
						close(c.gone)
					}
					return
				}
				if served {
					continue
				}
			}
			q := c.bg
			if m.Priority == wire.PriorityDemand {
				q = c.demand
			}
			if !c.enqueue(q, job{req: *m}) {
				return
			}
		case *wire.DigestRequest:
			if _, ok := c.s.pages[m.Region]; !ok {
				c.fail(&wire.Error{Code: wire.CodeUnknownRegion, ReqID: m.ReqID, Message: fmt.Sprintf("region %d is not served", m.Region)})
				return
			}
			c.s.stats.digests.Add(1)
			if !c.enqueue(c.bg, job{req: wire.Request{ReqID: m.ReqID, Region: m.Region}, digest: true}) {
				return
			}
		case *wire.Feedback:
			if c.sess == nil {
				c.fail(&wire.Error{Code: wire.CodeProtocol, Message: "feedback without the push feature"})
				return
			}
			pages, ok := c.s.pages[m.Region]
			if !ok {
				c.fail(&wire.Error{Code: wire.CodeUnknownRegion, Message: fmt.Sprintf("feedback for region %d, which is not served", m.Region)})
				return
			}
			for _, l := range [][]uint64{m.Used, m.Unused} {
				for _, p := range l {
					if p >= pages {
						c.fail(&wire.Error{Code: wire.CodeOutOfRange, Message: fmt.Sprintf("feedback on page %d outside region %d of %d pages", p, m.Region, pages)})
						return
					}
				}
			}
			c.sess.feedback(c.s, m)
		case *wire.Resident:
			if !c.hello.Resume || c.hello.Channel != wire.ChannelUrgent {
				c.fail(&wire.Error{Code: wire.CodeProtocol, Message: "resident outside a resumed urgent connection"})
				return
			}
			pages, ok := c.s.pages[m.Region]
			if !ok {
				c.fail(&wire.Error{Code: wire.CodeUnknownRegion, Message: fmt.Sprintf("resident for region %d, which is not served", m.Region)})
				return
			}
			if err := checkResident(m, pages); err != nil {
				c.fail(err)
				return
			}
			c.s.stats.residentFrames.Add(1)
			if c.sess != nil {
				c.sess.resident(c.s, m)
			}
		case *wire.Bye:
			c.byeReceived = true
			c.log.Debug("bye from client", "reason", m.Reason)
			c.fail(&wire.Bye{Reason: "bye"})
			return
		case *wire.Error:
			c.log.Info("error from client", "code", m.Code.String(), "req", m.ReqID, "err", m.Message)
			close(c.gone)
			return
		case *wire.Pages, *wire.Push:
			c.fail(&wire.Error{Code: wire.CodeUnknownType, Message: fmt.Sprintf("a server never accepts %s", m.Type())})
			return
		default: // Hello, Welcome, Digest
			c.fail(&wire.Error{Code: wire.CodeProtocol, Message: fmt.Sprintf("unexpected %s after the handshake", m.Type())})
			return
		}
	}
}

// checkResident checks that a Resident frame's set bits name pages of a
// region of pages pages (bits past the end are padding and must be clear).
func checkResident(m *wire.Resident, pages uint64) *wire.Error {
	if m.First >= pages {
		return &wire.Error{Code: wire.CodeOutOfRange, Message: fmt.Sprintf("resident from page %d, outside a region of %d pages", m.First, pages)}
	}
	for i := pages - m.First; i < m.Pages(); i++ {
		if m.Has(i) {
			return &wire.Error{Code: wire.CodeOutOfRange, Message: fmt.Sprintf("resident marks page %d, outside a region of %d pages", m.First+i, pages)}
		}
	}
	return nil
}

// serveInline serves a demand request on the receive loop itself when the
// send loop is idle and no other demand request waits: the reply then
// leaves without a hand-off between goroutines. On a small VM each hand-off
// that wakes a thread on another vCPU costs tens of microseconds, more than
// serving the page. When the send loop is busy (in a background chunk) the
// request is queued instead, and the send loop serves it before its next
// chunk. It reports whether it served the request.
func (c *conn) serveInline(req wire.Request) (bool, error) {
	if len(c.demand) > 0 || !c.wmu.TryLock() {
		return false, nil
	}
	defer c.wmu.Unlock()
	if len(c.demand) > 0 || c.interrupted() {
		return false, nil
	}
	if h := c.s.hooks.enqueued; h != nil {
		h(req)
	}
	return true, c.serveDemand(req, true)
}

// enqueue blocks until q has room (back-pressure), the send loop ends, or the server closes.
func (c *conn) enqueue(q chan job, j job) bool {
	select {
	case q <- j:
		if h := c.s.hooks.enqueued; h != nil {
			h(j.req)
		}
		return true
	case <-c.sendDone:
		return false
	case <-c.s.done:
		return false
	}
}

// sendLoop owns the Writer. It serves demand jobs strictly before background ones and ends the
// connection: it sends the last frame, if any, and makes the receive loop stop.
func (c *conn) sendLoop() {
	defer close(c.sendDone)
	if m := c.run(); m != nil {
		c.wmu.Lock()
		c.last(m)
		c.wmu.Unlock()
	}
	if !c.linger {
		c.nc.SetReadDeadline(time.Now()) // unblock the receive loop
	}
}

// run serves jobs until the connection ends and returns its last frame (nil for none).
func (c *conn) run() wire.Message {
	for {
		// Strict priority: the receive loop's last word, shutdown, a vanished peer, demand, background.
		select {
		case m := <-c.ctrl:
			return c.finish(m)
		default:
		}
		select {
		case <-c.s.done:
			return &wire.Bye{Reason: "shutdown"}
		case <-c.gone:
			return nil
		default:
		}
		select {
		case j := <-c.demand:
			if err := c.locked(j, false); err != nil {
				if m, stop := c.failure(err); stop {
					return m
				}
			}
			continue
		default:
		}
		select {
		case j := <-c.pushq:
			if err := c.locked(j, false); err != nil {
				if m, stop := c.failure(err); stop {
					return m
				}
			}
			continue
		default:
		}
		if h := c.s.hooks.beforeJob; h != nil {
			h()
		}
		var err error
		select {
		case m := <-c.ctrl:
			return c.finish(m)
		case <-c.s.done:
			return &wire.Bye{Reason: "shutdown"}
		case <-c.gone:
			return nil
		case j := <-c.demand:
			err = c.locked(j, false)
		case j := <-c.pushq:
			err = c.locked(j, false)
		case j := <-c.bg:
			err = c.locked(j, true)
		}
		if err != nil {
			if m, stop := c.failure(err); stop {
				return m
			}
		}
	}
}

// failure turns a job's error into the connection's last frame. An abort is not a failure: the loop
// goes round and finds its cause.
func (c *conn) failure(err error) (last wire.Message, stop bool) {
	if errors.Is(err, errAbort) {
		return nil, false
	}
	var werr *wire.Error
	if errors.As(err, &werr) {
		return werr, true
	}
	c.log.Debug("write", "err", err)
	return nil, true // the stream is broken: nothing more can be sent
}

// finish handles the receive loop's last word. After a Bye the jobs already queued are served first.
func (c *conn) finish(m wire.Message) wire.Message {
	if _, ok := m.(*wire.Bye); !ok {
		return m
	}
	for {
		var j job
		var background bool
		select {
		case j = <-c.demand:
		default:
			select {
			case j = <-c.demand:
			case j = <-c.pushq:
			case j = <-c.bg:
				background = true
			default:
				return m
			}
		}
		if err := c.locked(j, background); err != nil {
			last, _ := c.failure(err)
			if errors.Is(err, errAbort) {
				return &wire.Bye{Reason: "shutdown"}
			}
			return last
		}
	}
}

// interrupted reports whether background work should stop.
func (c *conn) interrupted() bool {
	if c.fatal.Load() {
		return true
	}
	select {
	case <-c.s.done:
		return true
	case <-c.gone:
		return true
	default:
		return false
	}
}

// drainDemand serves every queued demand job. Background work calls it before each chunk.
func (c *conn) drainDemand() error {
	for {
		select {
		case j := <-c.demand:
			if err := c.do(j, false); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// locked runs a job of the send loop under wmu.
func (c *conn) locked(j job, background bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.do(j, background)
}

func (c *conn) do(j job, background bool) error {
	switch {
	case j.digest:
		return c.serveDigest(j.req)
	case j.push != nil:
		return c.sendPush(j.req, j.push, false)
	case !background && c.push:
		return c.serveDemand(j.req, false)
	}
	return c.serveRequest(j.req, background)
}

// serveDemand answers a demand request and pushes what the predictor expects
// next: the Push notice and the page go out in one write (the notice first,
// so the target knows what is coming before the faulting thread resumes),
// then the pushed pages. inline says the caller is the receive loop.
func (c *conn) serveDemand(req wire.Request, inline bool) error {
	if !c.push {
		return c.serveRequest(req, false)
	}
	c.plan = c.sess.plan(c.s, req.Region, req.Page, c.plan[:0])
	if len(c.plan) > 0 {
		c.s.stats.pushes.Add(1)
		c.s.stats.pushedPages.Add(uint64(len(c.plan)))
		if err := c.w.WriteMessage(&wire.Push{ReqID: req.ReqID, Region: req.Region, Pages: c.plan}); err != nil {
			return err
		}
	}
	if err := c.serveRequest(req, false); err != nil {
		return err
	}
	if len(c.plan) == 0 {
		return nil
	}
	return c.sendPush(wire.Request{ReqID: req.ReqID, Region: req.Region}, c.plan, inline)
}

// sendPush sends the pushed pages (ascending) in runs of consecutive pages,
// the last frame flagged last. Demand requests come first: when one is
// waiting (queued, or unread on the connection while the receive loop is
// the caller) the rest of the push is queued for the send loop, which serves
// it after the demand queue.
func (c *conn) sendPush(req wire.Request, pages []uint64, inline bool) error {
	for i := 0; i < len(pages); {
		if i > 0 && c.demandWaiting(inline) {
			rest := slices.Clone(pages[i:])
			select {
			case c.pushq <- job{req: req, push: rest}:
				return c.flush()
			default: // the queue is full: go on here
			}
		}
		j := i + 1
		for j < len(pages) && pages[j] == pages[j-1]+1 && j-i < c.s.framePages {
			j++
		}
		data, err := c.read(req.Region, pages[i], j-i)
		if err != nil {
			c.log.Info("source read", "region", req.Region, "page", pages[i], "count", j-i, "err", err)
			return &wire.Error{Code: wire.CodeSourceRead, ReqID: req.ReqID,
				Message: fmt.Sprintf("read region %d pages %d+%d: %v", req.Region, pages[i], j-i, err)}
		}
		c.setWriteDeadline()
		if err := c.writeRuns(req, pages[i], j-i, data, j == len(pages), wire.FlagPushed); err != nil {
			return err
		}
		i = j
	}
	return c.flush()
}

// demandWaiting reports whether a demand request waits: in the queue, or, for
// the receive loop (inline), unread in its buffer or on the socket.
func (c *conn) demandWaiting(inline bool) bool {
	if len(c.demand) > 0 {
		return true
	}
	return inline && (c.r.Buffered() > 0 || c.sr.Readable())
}

// read returns count pages from page: a slice of the source when it is a Slicer, else a copy in the
// scratch buffer (valid until the next call).
func (c *conn) read(region uint32, page uint64, count int) ([]byte, error) {
	if c.s.slicer != nil {
		if b, err := c.s.slicer.Slice(region, page, count); err == nil {
			return b, nil
		}
		// Fall back to ReadPages (a file's partial last page), which reports real errors.
	}
	n := count * c.s.pageSize
	if cap(c.scratch) < n {
		c.scratch = make([]byte, c.s.framePages*c.s.pageSize)
	}
	b := c.scratch[:n]
	if err := c.s.src.ReadPages(region, page, b); err != nil {
		return nil, err
	}
	return b, nil
}

// serveRequest sends req's pages in chunks of at most framePages, each split into zero and data runs.
// Background requests serve queued demand requests before each chunk.
func (c *conn) serveRequest(req wire.Request, background bool) error {
	fp := uint32(c.s.framePages)
	for off := uint32(0); off < req.Count; {
		if background {
			if h := c.s.hooks.beforeChunk; h != nil {
				h(req)
			}
			if err := c.drainDemand(); err != nil {
				return err
			}
			if c.interrupted() {
				return errAbort
			}
		}
		n := min(fp, req.Count-off)
		page := req.Page + uint64(off)
		data, err := c.read(req.Region, page, int(n))
		if err != nil {
			c.log.Info("source read", "region", req.Region, "page", page, "count", n, "err", err)
			return &wire.Error{Code: wire.CodeSourceRead, ReqID: req.ReqID,
				Message: fmt.Sprintf("read region %d pages %d+%d: %v", req.Region, page, n, err)}
		}
		off += n
		c.setWriteDeadline()
		err = c.writeRuns(req, page, int(n), data, off == req.Count, 0)
		if err == nil {
			err = c.flush()
		}
		c.account()
		if err != nil {
			return err
		}
	}
	return nil
}

// writeRuns writes count pages from page as Pages frames split at zero/non-zero boundaries (only
// when zero pages were negotiated), each with flags; last marks the request's final frame.
//
// A page is compared with the zero page only when its first 8 bytes are zero, so a typical data page
// is read once (by the hash) and a zero page once (by the comparison), never both.
func (c *conn) writeRuns(req wire.Request, page uint64, count int, data []byte, last bool, flags uint8) error {
	ps := c.s.pageSize
	zeroOK := c.features&wire.FeatureZeroPages != 0
	c.zero = c.zero[:0]
	for i := range count {
		pg := data[i*ps : (i+1)*ps]
		c.zero = append(c.zero, zeroOK && binary.LittleEndian.Uint64(pg) == 0 && bytes.Equal(pg, c.s.zeroPage))
	}
	p := &c.pg
	for i := 0; i < count; {
		j := i + 1
		for j < count && c.zero[j] == c.zero[i] {
			j++
		}
		*p = wire.Pages{ReqID: req.ReqID, Region: req.Region, Page: page + uint64(i), Count: uint32(j - i), Flags: flags}
		if last && j == count {
			p.Flags |= wire.FlagLast
		}
		if c.zero[i] {
			p.Flags |= wire.FlagZero
			c.s.stats.zeroPages.Add(uint64(j - i))
		} else {
			p.Data = data[i*ps : j*ps]
			c.hashes = appendHashes(c.hashes[:0], p.Data, ps)
			p.Hashes = c.hashes
			c.s.stats.pages.Add(uint64(j - i))
		}
		err := c.w.WritePages(p)
		p.Data = nil // do not keep the source's memory reachable
		if err != nil {
			return err
		}
		i = j
	}
	return nil
}

// appendHashes appends the little-endian xxh3-64 of each page of data to dst.
func appendHashes(dst, data []byte, pageSize int) []byte {
	for off := 0; off < len(data); off += pageSize {
		dst = binary.LittleEndian.AppendUint64(dst, xxh3.Hash(data[off:off+pageSize]))
	}
	return dst
}

// serveDigest computes (or takes from the cache) a region's digest in chunks, serving demand requests
// between chunks, and sends it.
func (c *conn) serveDigest(req wire.Request) error {
	sum, ok := c.s.cachedDigest(req.Region)
	if !ok {
		pages := c.s.pages[req.Region]
		h := xxh3.New128()
		fp := uint64(c.s.framePages)
		for page := uint64(0); page < pages; page += fp {
			if err := c.drainDemand(); err != nil {
				return err
			}
			if c.interrupted() {
				return errAbort
			}
			n := min(fp, pages-page)
			data, err := c.read(req.Region, page, int(n))
			if err != nil {
				return &wire.Error{Code: wire.CodeSourceRead, ReqID: req.ReqID,
					Message: fmt.Sprintf("digest: read region %d pages %d+%d: %v", req.Region, page, n, err)}
			}
			c.hashes = appendHashes(c.hashes[:0], data, c.s.pageSize)
			h.Write(c.hashes)
		}
		sum = h.Sum128().Bytes()
		c.s.storeDigest(req.Region, sum)
	}
	c.setWriteDeadline()
	err := c.w.WriteMessage(&wire.Digest{ReqID: req.ReqID, Region: req.Region, Algorithm: wire.DigestXXH3Over64, Sum: sum})
	if err == nil {
		err = c.flush()
	}
	return err
}
