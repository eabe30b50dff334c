package faulthandler

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zeebo/xxh3"
	"golang.org/x/sys/unix"

	"github.com/pagewarp/pagewarp/internal/spinconn"
	"github.com/pagewarp/pagewarp/wire"
)

// ClientName is sent in Hello.
const ClientName = "pagewarp-faulthandler"

var (
	// ErrServerGone is wrapped by the error of a migration whose server closed
	// the connection or said Bye before every page arrived, and could not be
	// reached again within Options.ResumeDeadline.
	ErrServerGone = errors.New("page server went away")
	// ErrResumeDeadline is wrapped by the error of a migration that lost its
	// connections to the page server and could not resume within
	// Options.ResumeDeadline. The error says how many pages are missing.
	ErrResumeDeadline = errors.New("resume deadline passed")
	// ErrStalled is wrapped by the loss of a connection that carried no
	// frame for Options.StallTimeout while requests on it were unanswered:
	// the link is resumed like a dropped one, and a migration that cannot
	// resume fails with it.
	ErrStalled = errors.New("connection stalled")
	// errLayout: a reconnection reached a server with another page size or
	// region list; resuming there would mix two sources.
	errLayout = errors.New("reconnected to a server with another layout")
)

// Backoff between reconnection attempts: doubling from resumeBackoffMin to
// resumeBackoffMax.
const (
	resumeBackoffMin = 20 * time.Millisecond
	resumeBackoffMax = time.Second
)

// Dial connects to the page server at addr over network ("tcp", "unix")
// with one urgent and Options.BulkStreams bulk connections, performs the
// handshake (TLS first with Options.TLS), and maps a region of the size the
// server announces. Call Start to begin.
//
// A handler made by Dial resumes: when a connection drops during post-copy
// it dials addr again (same network, same TLS configuration), tells the
// server which pages it holds and asks again for the pages it was waiting
// for; see Options.ResumeDeadline.
func Dial(ctx context.Context, network, addr string, opts Options) (*Handler, error) {
	opts.setDefaults()
	var tlsCfg *tls.Config
	if opts.TLS != nil {
		var err error
		if tlsCfg, err = wire.ClientTLS(opts.TLS, addr); err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
	}
	redial := func(ctx context.Context, urgent bool) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		if tlsCfg != nil {
			// Under TLS a receive loop goroutine reads the urgent replies (records to
			// decrypt): it busy-polls the socket for AwaitSpin before it parks, as the
			// fault loop does on a plain connection, or each reply would wait for a
			// parked thread's wake-up (on this project's 2-vCPU VM, a halted vCPU's:
			// about 300 µs per fault in BenchmarkTransport/fault/tls-nospin).
			tlsRaw := c
			if urgent && opts.AwaitSpin > 0 {
				sr := spinconn.NewReader(c)
				sr.SetSpin(opts.AwaitSpin)
				tlsRaw = spinconn.Conn{Conn: c, R: sr}
			}
			tc, err := wire.ClientHandshake(ctx, tlsRaw, tlsCfg, opts.IOTimeout)
			if err != nil {
				c.Close()
				return nil, fmt.Errorf("dial %s: %w", addr, err)
			}
			c = tc
		}
		return c, nil
	}
	conns := make([]net.Conn, 0, 1+opts.BulkStreams)
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for i := range 1 + opts.BulkStreams {
		c, err := redial(ctx, i == 0)
		if err != nil {
			closeAll()
			return nil, err
		}
		conns = append(conns, c)
	}
	h, err := newRemote(ctx, conns[0], conns[1:], opts, redial)
	if err != nil {
		closeAll()
		return nil, err
	}
	return h, nil
}

// NewRemote runs the handshake on connections to one page server, one
// urgent (demand requests only) and one or more bulk (the background
// pull), and maps the region. It takes ownership of the connections on
// success. A handler made by NewRemote cannot reconnect: a dropped
// connection fails the migration (closed, see Handler.Close).
func NewRemote(ctx context.Context, urgent net.Conn, bulk []net.Conn, opts Options) (*Handler, error) {
	return newRemote(ctx, urgent, bulk, opts, nil)
}

func newRemote(ctx context.Context, urgent net.Conn, bulk []net.Conn, opts Options, redial func(ctx context.Context, urgent bool) (net.Conn, error)) (*Handler, error) {
	opts.setDefaults()
	if len(bulk) == 0 {
		return nil, errors.New("no bulk connection")
	}
	var session [16]byte
	if _, err := rand.Read(session[:]); err != nil {
		return nil, err
	}
	r := &remote{digests: make(chan *wire.Digest, 1), session: session, redial: redial, ep: -1}
	r.features = wire.FeatureZeroPages | wire.FeaturePageHashes
	if !opts.NoPush {
		r.features |= wire.FeaturePush
	}
	l := newLink(1, urgent, bulk)
	var w *wire.Welcome
	for _, rc := range l.all() {
		wel, err := rc.handshake(ctx, r.hello(rc, false), opts.IOTimeout)
		if err != nil {
			return nil, err
		}
		if w == nil {
			w = wel
		} else if !sameLayout(w, wel) {
			return nil, fmt.Errorf("handshake (%s): this connection reached a server with another layout", rc.name)
		}
	}
	if len(w.Regions) == 0 {
		return nil, errors.New("handshake: the server has no regions")
	}
	reg := w.Regions[0]
	if opts.Region != nil {
		found := false
		for _, x := range w.Regions {
			if x.ID == *opts.Region {
				reg, found = x, true
			}
		}
		if !found {
			return nil, fmt.Errorf("handshake: the server has no region %d", *opts.Region)
		}
	}
	h, err := newHandler(int(w.PageSize), reg.Pages, opts)
	if err != nil {
		return nil, err
	}
	r.h = h
	r.region = reg
	r.welcome = w
	if w.Features&wire.FeaturePush != 0 && opts.ProbeEvery > 0 {
		h.stage = newStaging(opts.ProbeEvery, opts.ProbeExpiry)
	}
	for _, rc := range l.all() {
		rc.r.SetPageSize(int(w.PageSize))
	}
	if _, ok := urgent.(syscall.Conn); ok {
		// The fault loop reads the urgent connection itself, in the same
		// epoll as the userfaultfd: a demand reply is installed by the
		// thread that sent the request, with no goroutine hand-off. It
		// polls an epoll of its own (r.ep) that holds the current urgent
		// descriptor, so that a resumed connection can take its place.
		r.fdMode = true
		if r.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
			h.discard()
			return nil, fmt.Errorf("urgent connection epoll: %w", err)
		}
		if err := r.attachFD(l); err != nil {
			unix.Close(r.ep)
			h.discard()
			return nil, err
		}
	}
	r.cur = l
	h.fetch = r
	h.stats.connsOpen.Store(int64(len(l.all())))
	return h, nil
}

// hello is the Hello for connection rc; resume marks a reconnection.
func (r *remote) hello(rc *rconn, resume bool) *wire.Hello {
	ch := uint8(wire.ChannelBulk)
	if !rc.bulk {
		ch = wire.ChannelUrgent
	}
	return &wire.Hello{
		VersionMin: wire.Version, VersionMax: wire.Version,
		Features: r.features,
		Channel:  ch, Session: r.session, Client: ClientName, Resume: resume,
	}
}

func sameLayout(a, b *wire.Welcome) bool {
	return a.PageSize == b.PageSize && slices.Equal(a.Regions, b.Regions)
}

// attachFD duplicates l's urgent descriptor for the fault loop and adds it
// to r.ep.
func (r *remote) attachFD(l *link) error {
	raw, err := l.urgent.c.(syscall.Conn).SyscallConn()
	if err != nil {
		return fmt.Errorf("urgent connection descriptor: %w", err)
	}
	var derr error
	fd := -1
	if err := raw.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return fmt.Errorf("urgent connection descriptor: %w", err)
	}
	if derr != nil {
		return fmt.Errorf("urgent connection descriptor: %w", derr)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(r.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		return fmt.Errorf("urgent connection epoll: %w", err)
	}
	l.fdMu.Lock()
	l.ufd, l.ufr = fd, newFDReader(fd)
	l.fdMu.Unlock()
	return nil
}

// detachFD takes l's descriptor out of r.ep and closes it.
func (r *remote) detachFD(l *link) {
	l.fdMu.Lock()
	defer l.fdMu.Unlock()
	if l.ufd >= 0 {
		unix.EpollCtl(r.ep, unix.EPOLL_CTL_DEL, l.ufd, nil)
		unix.Close(l.ufd)
		l.ufd = -1
	}
}

// Welcome returns what the server said in the handshake, for a handler made
// by Dial or NewRemote (nil otherwise).
func (h *Handler) Welcome() *wire.Welcome {
	if r, ok := h.fetch.(*remote); ok {
		return r.welcome
	}
	return nil
}

// rconn is one connection to the server. Its writer is guarded by wmu: the
// owning loop writes, and finish writes Bye at the end.
type rconn struct {
	c    net.Conn
	name string
	bulk bool
	r    *wire.Reader
	wmu  sync.Mutex
	w    *wire.Writer
	done chan struct{} // closed when the receive loop exits

	// Background pull state of a bulk connection, owned by its receive loop.
	inflight  int    // requests sent and not yet answered in full
	cursor    uint64 // where the search for missing pages resumes
	seenFault uint64 // latestFault when cursor was last moved to it
	pullDone  bool   // no page was left to request

	// Progress, for the stall watchdog: asked counts the replies expected
	// (page requests sent, push notices received), answered the frames
	// flagged last received, frames every frame received. Whoever sends
	// or reads the connection adds; the watchdog reads.
	asked, answered, frames atomic.Uint64
	// The watchdog's own view (watch only): busy while replies were
	// outstanding at its last check, since when (nanotime) with no new
	// frame, and the frame count then.
	wdBusy   bool
	wdSince  int64
	wdFrames uint64
}

func newRConn(c net.Conn, name string, bulk bool) *rconn {
	return &rconn{c: c, name: name, bulk: bulk, r: wire.NewReader(c), w: wire.NewWriter(c), done: make(chan struct{})}
}

func (rc *rconn) handshake(ctx context.Context, hello *wire.Hello, timeout time.Duration) (*wire.Welcome, error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	rc.c.SetDeadline(deadline)
	defer rc.c.SetDeadline(time.Time{})
	if err := rc.w.WriteMessage(hello); err != nil {
		return nil, fmt.Errorf("handshake (%s): %w", rc.name, err)
	}
	if err := rc.w.Flush(); err != nil {
		return nil, fmt.Errorf("handshake (%s): %w", rc.name, err)
	}
	m, err := rc.r.ReadMessage()
	if err != nil {
		if _, secure := rc.c.(*tls.Conn); !secure && serverGone(err) {
			return nil, fmt.Errorf("handshake (%s): the server closed the connection before its welcome, "+
				"as a server that requires TLS does to a client without it: %w", rc.name, err)
		}
		return nil, fmt.Errorf("handshake (%s): %w", rc.name, err)
	}
	switch m := m.(type) {
	case *wire.Welcome:
		if m.Version != wire.Version {
			return nil, fmt.Errorf("handshake (%s): server chose version %d, this client speaks %d", rc.name, m.Version, wire.Version)
		}
		return m, nil
	case *wire.Error:
		return nil, fmt.Errorf("handshake (%s): server refused: %w", rc.name, m)
	default:
		return nil, fmt.Errorf("handshake (%s): server sent %v before welcome", rc.name, m.Type())
	}
}

// send writes one message and flushes it, under the connection's deadline.
func (rc *rconn) send(m wire.Message, timeout time.Duration) error {
	rc.wmu.Lock()
	defer rc.wmu.Unlock()
	if err := rc.w.WriteMessage(m); err != nil {
		return err
	}
	rc.c.SetWriteDeadline(time.Now().Add(timeout))
	return rc.w.Flush()
}

// link is one set of connections to the server, one urgent and one or more
// bulk: the first from Dial, then one per resume.
type link struct {
	gen    uint64
	urgent *rconn
	bulk   []*rconn
	// lost is set once, by whoever first sees one of the link's
	// connections fail; the link is then closed whole.
	lost atomic.Bool
	// lostCh is closed when lost is set by a loss that starts a resume.
	lostCh chan struct{}
	// loops counts the link's receive loop goroutines.
	loops sync.WaitGroup

	// fdMu guards ufd against a close racing a shutdown: ufd is a
	// duplicate of the urgent connection's descriptor that the fault loop
	// reads (-1 when none), ufr frames what it reads.
	fdMu sync.Mutex
	ufd  int
	ufr  *fdReader
}

func newLink(gen uint64, urgent net.Conn, bulk []net.Conn) *link {
	l := &link{gen: gen, urgent: newRConn(urgent, "urgent", false), ufd: -1, lostCh: make(chan struct{})}
	for i, c := range bulk {
		l.bulk = append(l.bulk, newRConn(c, fmt.Sprintf("bulk%d", i), true))
	}
	return l
}

// all returns every connection, urgent first.
func (l *link) all() []*rconn { return append([]*rconn{l.urgent}, l.bulk...) }

// carried reports whether any connection of l received a frame after the
// handshake.
func (l *link) carried() bool {
	for _, rc := range l.all() {
		if rc.frames.Load() > 0 {
			return true
		}
	}
	return false
}

// closeConns closes every connection of l; the fault loop's duplicate of
// the urgent descriptor is shut down, so that the server sees the
// connection end and the fault loop reads its end.
func (l *link) closeConns() {
	for _, rc := range l.all() {
		rc.c.Close()
	}
	l.fdMu.Lock()
	if l.ufd >= 0 {
		unix.Shutdown(l.ufd, unix.SHUT_RDWR)
	}
	l.fdMu.Unlock()
}

// connLost wraps an error that ended a connection's byte stream (the peer
// closed or reset it, a read or write failed, the server said Bye before
// the end), or, with corrupt, one about bytes damaged on their way (a frame
// that does not decode or whose checksum does not match, a page whose
// content hash does not): the connection cannot be trusted any more, and
// nothing it damaged was installed. Only connLost is resumed (an Error
// from the server, a frame outside the region, fail the migration); a
// corrupt one at most maxCorruptResumes times per migration, so that a
// server that keeps sending what does not decode is not retried forever.
type connLost struct {
	err     error
	corrupt bool
}

func (e *connLost) Error() string { return e.err.Error() }
func (e *connLost) Unwrap() error { return e.err }

func lostf(format string, args ...any) error { return &connLost{err: fmt.Errorf(format, args...)} }

func corruptf(format string, args ...any) error {
	return &connLost{err: fmt.Errorf(format, args...), corrupt: true}
}

// maxCorruptResumes bounds the resumes for damaged frames or pages in one migration.
const maxCorruptResumes = 8

// readFailed classifies a read error: a *wire.Error (a frame that does not
// decode, a bad length, a checksum that does not match) is damage in transit,
// anything else about the connection.
func readFailed(name string, err error) error {
	var werr *wire.Error
	if errors.As(err, &werr) {
		return corruptf("%s connection: %w", name, err)
	}
	if serverGone(err) {
		return lostf("%s connection: %w (%w)", name, ErrServerGone, err)
	}
	return lostf("%s connection: %w", name, err)
}

type remote struct {
	h        *Handler
	session  [16]byte
	features uint64
	region   wire.Region
	welcome  *wire.Welcome
	nextID   atomic.Uint64
	digests  chan *wire.Digest
	closing  atomic.Bool
	once     sync.Once
	// redial opens one connection to the server, TLS included, the urgent
	// one or a bulk one (nil: the handler cannot resume).
	redial func(ctx context.Context, urgent bool) (net.Conn, error)

	// cur is the link in use. The fault loop (or finish, once it has
	// stopped) replaces it, under linkMu; other goroutines read it under
	// linkMu. pending is a resumed link waiting for the fault loop.
	linkMu  sync.Mutex
	cur     *link
	pending *link
	// down is set while cur is lost and a resume is under way: demand
	// requests are not sent (the pages stay in stateDemand and are asked
	// for again on the resumed link).
	down   atomic.Bool
	downAt atomic.Int64 // nanotime of the loss
	// outageAt is the nanotime of the loss that began the current outage:
	// a link lost before it carried a single frame (a server that accepts
	// and handshakes, then stalls or closes) does not end the outage, so
	// ResumeDeadline bounds the time without progress, not one redial.
	outageAt atomic.Int64

	// fdMode: the fault loop reads the urgent connection itself through
	// ep, an epoll holding the current link's duplicate descriptor (the
	// fault loop's poller watches ep). Without it (net.Pipe, TLS) a
	// receive loop goroutine reads the urgent connection.
	fdMode bool
	ep     int
	// pendingDemand counts demand requests whose last reply frame has not
	// been read. Only used in fdMode, where the fault loop alone both
	// sends requests and reads replies.
	pendingDemand int
	// wakes are the runs installed from the urgent connection whose waiters
	// are still asleep (fault loop only; see install).
	wakes []wakeRange
}

func (r *remote) awaiting() bool { return r.fdMode && r.pendingDemand > 0 && !r.down.Load() }

// link returns the current link.
func (r *remote) link() *link {
	r.linkMu.Lock()
	defer r.linkMu.Unlock()
	return r.cur
}

func (r *remote) start(ctx context.Context) {
	r.startLoops(r.cur)
	if d := r.h.opts.StallTimeout; d > 0 {
		r.h.wg.Add(1)
		go func() {
			defer r.h.wg.Done()
			r.watch(d)
		}()
	}
}

// watch is the stall watchdog: every d/8 (at most a second) it checks the
// connections of the current link, and declares the link lost (ErrStalled)
// when one of them has had replies outstanding and received no frame for
// at least d. It costs the fault path nothing but the counting of frames
// (rconn.asked, answered, frames): no timer per request, no deadline per
// read. It ends when every page is resident (what is left to wait for,
// the digest and the goodbye, is bounded by Options.IOTimeout), on
// failure, and on Close.
func (r *remote) watch(d time.Duration) {
	h := r.h
	t := time.NewTicker(min(max(d/8, time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-h.complete:
			return
		case <-h.failed:
			return
		case <-h.ctx.Done():
			return
		}
		if r.down.Load() || r.closing.Load() {
			continue
		}
		l := r.link()
		if l.lost.Load() {
			continue
		}
		now := nanotime()
		for _, rc := range l.all() {
			waiting, quiet := rc.stalled(now)
			if quiet < d {
				continue
			}
			h.stats.stalls.Add(1)
			err := lostf("%s connection: %w: no frame for %v with %d replies outstanding",
				rc.name, ErrStalled, time.Duration(quiet).Round(time.Millisecond), waiting)
			if err = r.linkLost(l, err); err != nil {
				h.fail(err)
			}
			break
		}
	}
}

// stalled updates the watchdog's view of rc at nanotime now and returns
// the replies outstanding and for how long rc has carried no frame while
// some were: 0 unless replies were outstanding at the previous check and
// no frame arrived since. The quiet time is counted from the first check
// that saw replies outstanding or the last that saw a new frame, so it
// never exceeds the true time without a frame while waiting.
func (rc *rconn) stalled(now int64) (waiting uint64, quiet time.Duration) {
	answered := rc.answered.Load() // before asked: a reply never runs ahead of its request
	asked := rc.asked.Load()
	frames := rc.frames.Load()
	if asked <= answered {
		rc.wdBusy = false
		return 0, 0
	}
	if !rc.wdBusy || frames != rc.wdFrames {
		rc.wdBusy, rc.wdSince, rc.wdFrames = true, now, frames
		return asked - answered, 0
	}
	return asked - answered, time.Duration(now - rc.wdSince)
}

// startLoops spreads l's bulk streams over the region and starts the
// receive loops of l: one per bulk connection, and one for the urgent
// connection unless the fault loop reads it.
func (r *remote) startLoops(l *link) {
	for i, rc := range l.bulk {
		// Spread the streams' starting points over the region.
		rc.cursor = r.h.npages * uint64(i) / uint64(len(l.bulk))
	}
	for _, rc := range l.all() {
		kind := kindDemand
		if rc.bulk {
			kind = kindBackground
		} else if r.fdMode {
			close(rc.done) // the fault loop reads it
			continue
		}
		r.h.wg.Add(1)
		l.loops.Add(1)
		go func() {
			defer r.h.wg.Done()
			defer l.loops.Done()
			defer close(rc.done)
			if err := r.recvLoop(rc, kind); err != nil {
				if err = r.linkLost(l, err); err != nil {
					r.h.fail(err)
				}
			}
		}()
	}
}

// linkLost handles the failure err of one of l's connections. A failure
// of the connection itself (connLost) on a handler that can redial starts
// a resume, once per link, and linkLost returns nil; so does any failure
// on a link already lost or during the final goodbye. Anything else is
// returned: it fails the migration.
func (r *remote) linkLost(l *link, err error) error {
	if r.closing.Load() {
		return nil
	}
	var cl *connLost
	if !errors.As(err, &cl) {
		return err
	}
	if !l.lost.CompareAndSwap(false, true) {
		return nil // seen already
	}
	h := r.h
	if r.redial == nil || h.opts.ResumeDeadline < 0 || h.ctx == nil {
		return err
	}
	if cl.corrupt {
		if n := h.stats.corruptions.Add(1); n > maxCorruptResumes {
			return fmt.Errorf("%w (damaged data %d times in this migration: not resuming again)", err, n)
		}
	}
	now := nanotime()
	r.downAt.Store(now)
	if r.outageAt.Load() == 0 || l.carried() {
		r.outageAt.Store(now)
	}
	r.down.Store(true)
	close(l.lostCh)
	h.stats.linkLosses.Add(1)
	h.stats.connsOpen.Store(0)
	h.opts.Logger.Info("connection to the page server lost: resuming", "err", err,
		"missing", h.npages-h.resident.Load(), "deadline", h.opts.ResumeDeadline)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		r.resume(l, err)
	}()
	return nil
}

// resume closes the lost link l, waits for its receive loops, and dials
// the server again with backoff until a new link is up (handed to the fault
// loop, which adopts it) or Options.ResumeDeadline has passed since the
// loss (the migration fails with ErrResumeDeadline).
func (r *remote) resume(l *link, cause error) {
	h := r.h
	lostAt := time.Now().Add(-time.Duration(nanotime() - r.outageAt.Load()))
	deadline := lostAt.Add(h.opts.ResumeDeadline)
	l.closeConns()
	l.loops.Wait()
	backoff := resumeBackoffMin
	last := cause
	for attempt := 1; ; attempt++ {
		if h.ctx.Err() != nil || r.closing.Load() {
			return
		}
		nl, err := r.dialLink(l.gen+1, len(l.bulk), deadline)
		if err == nil {
			r.linkMu.Lock()
			if r.closing.Load() {
				r.linkMu.Unlock()
				nl.closeConns()
				r.detachFD(nl)
				return
			}
			r.pending = nl
			r.linkMu.Unlock()
			h.opts.Logger.Info("reconnected to the page server", "attempts", attempt, "after", time.Since(lostAt))
			h.poll.Wake()
			return
		}
		if errors.Is(err, errLayout) {
			h.fail(fmt.Errorf("resume: %w", err))
			return
		}
		last = err
		h.opts.Logger.Debug("reconnect failed", "attempt", attempt, "err", err)
		wait := min(backoff, time.Until(deadline))
		if wait <= 0 {
			missing := h.npages - h.resident.Load() - uint64(h.stagedCount())
			h.fail(fmt.Errorf("%w: no connection to the page server for %v (%d attempts), %d of %d pages still missing; lost: %w; last attempt: %v",
				ErrResumeDeadline, time.Since(lostAt).Round(time.Millisecond), attempt, missing, h.npages, cause, last))
			return
		}
		select {
		case <-time.After(wait):
		case <-h.ctx.Done():
			return
		}
		backoff = min(2*backoff, resumeBackoffMax)
	}
}

// dialLink opens a link of the same shape as the first and runs the
// handshake with Hello.Resume on each connection, within deadline and
// Options.IOTimeout.
func (r *remote) dialLink(gen uint64, bulk int, deadline time.Time) (*link, error) {
	h := r.h
	ctx, cancel := context.WithDeadline(h.ctx, deadline)
	defer cancel()
	ctx, cancel2 := context.WithTimeout(ctx, h.opts.IOTimeout)
	defer cancel2()
	n := 1 + bulk
	conns := make([]net.Conn, 0, n)
	for i := range n {
		c, err := r.redial(ctx, i == 0)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, err
		}
		conns = append(conns, c)
	}
	nl := newLink(gen, conns[0], conns[1:])
	for _, rc := range nl.all() {
		w, err := rc.handshake(ctx, r.hello(rc, true), h.opts.IOTimeout)
		if err == nil && !sameLayout(w, r.welcome) {
			err = fmt.Errorf("%w: page size %d and %d regions, was %d and %d", errLayout, w.PageSize, len(w.Regions), r.welcome.PageSize, len(r.welcome.Regions))
		}
		if err != nil {
			nl.closeConns()
			return nil, err
		}
		rc.r.SetPageSize(h.pageSize)
	}
	if r.fdMode {
		if err := r.attachFD(nl); err != nil {
			nl.closeConns()
			return nil, err
		}
	}
	return nl, nil
}

// maintain adopts a resumed link if one is waiting. The fault loop calls
// it before it blocks.
func (r *remote) maintain() error {
	r.linkMu.Lock()
	nl := r.pending
	r.pending = nil
	r.linkMu.Unlock()
	if nl == nil {
		return nil
	}
	return r.adopt(nl)
}

// adopt makes nl the current link. It runs on the fault loop (or, once the
// fault loop has stopped, in finish): the old link's receive loops have
// ended, so nothing else changes page states. Pages requested on the old
// link and not installed are claimed again: background ones become missing
// (the pull asks for them again), demand and announced-pushed ones are
// asked for again on the urgent connection, after Resident frames that tell
// the server what the target holds.
func (r *remote) adopt(nl *link) error {
	h := r.h
	old := r.cur
	if err := r.wakePending(); err != nil {
		return err
	}
	if r.fdMode {
		r.detachFD(old)
	}
	r.pendingDemand = 0
	var again []uint64
	for p := range h.npages {
		s := &h.state[p]
		switch s.Load() {
		case stateBackground:
			s.CompareAndSwap(stateBackground, stateMissing)
		case statePushed:
			// A thread that faulted on an announced page waits for it
			// without a request of its own.
			if s.CompareAndSwap(statePushed, stateDemand) {
				again = append(again, p)
			}
		case stateDemand:
			again = append(again, p)
		}
	}
	r.linkMu.Lock()
	r.cur = nl
	r.linkMu.Unlock()
	err := r.sendResume(nl, again)
	r.down.Store(false)
	h.stats.resumes.Add(1)
	h.stats.reRequested.Add(uint64(len(again)))
	h.stats.downNanos.Add(uint64(nanotime() - r.downAt.Load()))
	h.stats.connsOpen.Store(int64(len(nl.all())))
	h.opts.Logger.Info("resumed", "gen", nl.gen, "requested again", len(again),
		"missing", h.npages-h.resident.Load(), "down", time.Duration(nanotime()-r.downAt.Load()))
	r.startLoops(nl)
	if err != nil {
		return r.linkLost(nl, lostf("urgent connection: resume: %w", err))
	}
	return nil
}

// sendResume writes the Resident frames (pages installed or staged) and a
// demand request for each page of again on nl's urgent connection.
func (r *remote) sendResume(nl *link, again []uint64) error {
	h := r.h
	rc := nl.urgent
	rc.wmu.Lock()
	defer rc.wmu.Unlock()
	const span = 8 * wire.MaxResidentBytes
	bits := make([]byte, (min(h.npages, span)+7)/8)
	for first := uint64(0); first < h.npages; first += span {
		n := min(span, h.npages-first)
		b := bits[:(n+7)/8]
		clear(b)
		for i := range n {
			if s := h.state[first+i].Load(); s == stateResident || s == stateStaged {
				b[i/8] |= 1 << (i % 8)
			}
		}
		if err := rc.w.WriteMessage(&wire.Resident{Region: r.region.ID, First: first, Bits: b, Done: first+n == h.npages}); err != nil {
			return err
		}
	}
	for _, p := range again {
		h.demandStart[p].Store(nanotime())
		req := wire.Request{ReqID: r.nextID.Add(1), Region: r.region.ID, Page: p, Count: 1, Priority: wire.PriorityDemand}
		if err := rc.w.WriteMessage(&req); err != nil {
			return err
		}
		rc.asked.Add(1)
		if r.fdMode {
			r.pendingDemand++
		}
	}
	rc.c.SetWriteDeadline(time.Now().Add(h.opts.IOTimeout))
	return rc.w.Flush()
}

// demand queues a demand request; the fault loop calls flush after a batch.
// While the link is down nothing is sent: the page stays in stateDemand and
// adopt asks for it on the resumed link.
func (r *remote) demand(page uint64) error {
	if r.down.Load() {
		return nil
	}
	l := r.cur
	req := wire.Request{ReqID: r.nextID.Add(1), Region: r.region.ID, Page: page, Count: 1, Priority: wire.PriorityDemand}
	if r.fdMode {
		r.pendingDemand++ // the fault loop will read the reply itself
	}
	l.urgent.asked.Add(1) // before the write, which may flush: the reply must not come first
	l.urgent.wmu.Lock()
	defer l.urgent.wmu.Unlock()
	if err := l.urgent.w.WriteMessage(&req); err != nil {
		return r.linkLost(l, lostf("send demand request: %w", err))
	}
	return nil
}

func (r *remote) flush() error {
	if r.down.Load() {
		return nil
	}
	l := r.cur
	l.urgent.wmu.Lock()
	defer l.urgent.wmu.Unlock()
	// Reports ride along with demand requests; alone they wait until a few
	// have gathered, so that a well-predicted workload, which touches its
	// probes without demand faults, does not wake the server for each.
	for more := l.urgent.w.Buffered() > 0 || r.h.reportsPending() >= reportBatch; more; {
		var used, unused []uint64
		used, unused, more = r.h.takeReports()
		if len(used)+len(unused) == 0 {
			break
		}
		if err := l.urgent.w.WriteMessage(&wire.Feedback{Region: r.region.ID, Used: used, Unused: unused}); err != nil {
			return r.linkLost(l, lostf("send feedback: %w", err))
		}
	}
	l.urgent.c.SetWriteDeadline(time.Now().Add(r.h.opts.IOTimeout))
	if err := l.urgent.w.Flush(); err != nil {
		return r.linkLost(l, lostf("send demand requests: %w", err))
	}
	return nil
}

// reportBatch is how many probe reports are sent without a demand request
// to carry them.
const reportBatch = 64

// pull does nothing: the bulk receive loop drives the background pull
// itself (see pullMore), so that no goroutine hand-off sits between a reply
// and the next request. On a 2-vCPU guest each hand-off that wakes another
// thread costs an IPI to a halted vCPU, and profiles showed those wake-ups
// costing as much as the page copies.
func (r *remote) pull(context.Context) error { return nil }

// pullMore tops the window of background requests on bulk connection rc
// up to PullWindow, each for the next run of missing pages, restarting
// after the latest demand fault each time one happened, so the pages a
// workload is about to touch come early. Only rc's receive loop calls it.
func (r *remote) pullMore(rc *rconn) error {
	h := r.h
	if h.opts.NoPull || rc.pullDone {
		return nil
	}
	sent := false
	for rc.inflight < h.opts.PullWindow {
		if f := h.latestFault.Load(); f != rc.seenFault {
			rc.seenFault, rc.cursor = f, f
		}
		first, count, ok := h.nextMissingRun(rc.cursor, h.opts.PullChunk)
		if !ok {
			rc.pullDone = true
			break
		}
		rc.cursor = first + uint64(count)
		h.stats.pullRequests.Add(1)
		req := wire.Request{ReqID: r.nextID.Add(1), Region: r.region.ID, Page: first, Count: uint32(count), Priority: wire.PriorityBackground}
		rc.wmu.Lock()
		err := rc.w.WriteMessage(&req)
		rc.wmu.Unlock()
		if err != nil {
			return lostf("%s connection: send background request: %w", rc.name, err)
		}
		rc.asked.Add(1)
		rc.inflight++
		sent = true
	}
	if !sent {
		return nil
	}
	rc.wmu.Lock()
	defer rc.wmu.Unlock()
	rc.c.SetWriteDeadline(time.Now().Add(h.opts.IOTimeout))
	if err := rc.w.Flush(); err != nil {
		return lostf("%s connection: send background requests: %w", rc.name, err)
	}
	return nil
}

// recvLoop reads replies on one connection and installs them. On the bulk
// connection it also keeps the background pull going.
func (r *remote) recvLoop(rc *rconn, kind pageKind) error {
	if rc.bulk {
		if err := r.pullMore(rc); err != nil {
			return err
		}
	}
	for {
		m, err := rc.r.ReadMessage()
		if err != nil {
			if r.closing.Load() {
				return nil
			}
			return readFailed(rc.name, err)
		}
		if stop, err := r.handle(rc, kind, m); stop || err != nil {
			return err
		}
	}
}

// handle acts on one message from the server. stop is true when the
// connection ended normally (the server's Bye after ours).
func (r *remote) handle(rc *rconn, kind pageKind, m wire.Message) (stop bool, err error) {
	h := r.h
	rc.frames.Add(1)
	switch m := m.(type) {
	case *wire.Pages:
		if err := r.install(m, kind, !rc.bulk && r.fdMode); err != nil {
			return false, err
		}
		if m.Last() {
			rc.answered.Add(1)
		}
		if !rc.bulk && r.fdMode && m.Last() && r.pendingDemand > 0 {
			r.pendingDemand--
		}
		if rc.bulk && m.Last() && !m.Pushed() {
			rc.inflight--
			if err := r.pullMore(rc); err != nil {
				if r.closing.Load() {
					return true, nil
				}
				return false, err
			}
		}
	case *wire.Push:
		if rc.bulk || m.Region != r.region.ID {
			return false, fmt.Errorf("%s connection: unexpected push notice for region %d", rc.name, m.Region)
		}
		if err := h.announce(m); err != nil {
			return false, fmt.Errorf("%s connection: %w", rc.name, err)
		}
		rc.asked.Add(1) // its pushed frames end with one flagged last
		if r.fdMode {
			r.pendingDemand++ // keep the fault loop polling until the push is in
		}
	case *wire.Digest:
		select {
		case r.digests <- m:
		default:
		}
	case *wire.Error:
		switch m.Code {
		case wire.CodeMalformed, wire.CodeFrameTooLarge, wire.CodeUnknownType:
			// The server could not decode what this handler sent, which encodes only
			// well-formed frames: the bytes were damaged on the way up.
			return false, corruptf("%s connection: server error: %w", rc.name, m)
		}
		return false, fmt.Errorf("%s connection: server error: %w", rc.name, m)
	case *wire.Bye:
		if r.closing.Load() {
			return true, nil
		}
		return false, lostf("%s connection: server said bye (%q) with %d of %d pages resident: %w",
			rc.name, m.Reason, h.resident.Load(), h.npages, ErrServerGone)
	default:
		return false, fmt.Errorf("%s connection: unexpected %v from server", rc.name, m.Type())
	}
	return false, nil
}

// pollFD returns the descriptor the fault loop must watch besides the
// userfaultfd: the epoll holding the urgent connection's.
func (r *remote) pollFD() int {
	if !r.fdMode {
		return -1
	}
	return r.ep
}

// readable reads and handles every complete frame on the urgent
// connection; the fault loop calls it when the descriptor is readable. A
// lost connection starts a resume (linkLost) and is taken out of the
// fault loop's epoll.
func (r *remote) readable() error {
	l := r.cur
	_, err := r.drainUrgent(l)
	if err == nil {
		return nil
	}
	werr := r.wakePending() // pages installed before the failure
	var cl *connLost
	if errors.As(err, &cl) || l.lost.Load() {
		r.detachFD(l)
	}
	if err = r.linkLost(l, err); err == nil {
		err = werr
	}
	return err
}

// drainUrgent reads l's urgent descriptor until it would block, handling
// each frame. stop is true once the connection ended normally.
func (r *remote) drainUrgent(l *link) (stop bool, err error) {
	l.fdMu.Lock()
	ufr := l.ufr
	closed := l.ufd < 0
	l.fdMu.Unlock()
	if closed {
		return false, nil
	}
	for {
		got, ferr := ufr.fill()
		for {
			body, err := ufr.next()
			if err != nil {
				return false, corruptf("urgent connection: %w", err)
			}
			if body == nil {
				if err := r.wakePending(); err != nil {
					return false, err
				}
				break
			}
			m, err := wire.Decode(body)
			if err != nil {
				return false, corruptf("urgent connection: %w", err)
			}
			if stop, err := r.handle(l.urgent, kindDemand, m); stop || err != nil {
				return stop, err
			}
		}
		switch {
		case serverGone(ferr):
			if r.closing.Load() {
				return true, nil
			}
			return false, lostf("urgent connection: %w (%w)", ErrServerGone, ferr)
		case ferr != nil:
			if r.closing.Load() {
				return true, nil
			}
			return false, lostf("urgent connection: %w", ferr)
		case !got:
			return false, nil
		}
	}
}

// install verifies and installs one Pages frame. With deferWake (the fault
// loop reading the urgent connection) the threads waiting on its pages are
// woken only after every complete frame already read is installed
// (wakePending): a demand reply and the push that follows it usually arrive
// together, and a thread woken before the push is in would fault again on
// the next page at once.
func (r *remote) install(m *wire.Pages, kind pageKind, deferWake bool) error {
	h := r.h
	if m.Region != r.region.ID || m.Page >= h.npages || uint64(m.Count) > h.npages-m.Page {
		return fmt.Errorf("server sent pages %d+%d of region %d, outside region %d of %d pages", m.Page, m.Count, m.Region, r.region.ID, h.npages)
	}
	if m.Pushed() && (kind != kindDemand || h.opts.NoPush) {
		return fmt.Errorf("server pushed pages %d+%d on a connection that does not take pushes", m.Page, m.Count)
	}
	if deferWake {
		r.wakes = append(r.wakes, wakeRange{m.Page, uint64(m.Count)})
	}
	if m.Zero() {
		if m.Pushed() {
			return h.installPushed(m.Page, int(m.Count), nil, deferWake)
		}
		return h.installZeroMode(m.Page, int(m.Count), kindZero, deferWake)
	}
	ps := h.pageSize
	if len(m.Data) != int(m.Count)*ps || len(m.Hashes) != 8*int(m.Count) {
		return fmt.Errorf("server sent %d pages in %d data bytes with %d hash bytes, want %d and %d",
			m.Count, len(m.Data), len(m.Hashes), int(m.Count)*ps, 8*int(m.Count))
	}
	for i := 0; i < int(m.Count); i++ {
		if got := xxh3.Hash(m.Data[i*ps : (i+1)*ps]); got != m.Hash(i) {
			return corruptf("page %d: content hash %#x, the server's %#x: %w", m.Page+uint64(i), got, m.Hash(i), ErrHashMismatch)
		}
	}
	if m.Pushed() {
		h.stats.bytesReceived[kindPushed].Add(uint64(len(m.Data)))
		return h.installPushed(m.Page, int(m.Count), m.Data, deferWake)
	}
	h.stats.bytesReceived[kind].Add(uint64(len(m.Data)))
	return h.installDataMode(m.Page, int(m.Count), m.Data, kind, deferWake)
}

// finish verifies the region if asked and closes the connections with
// Bye. The fault loop has stopped: a link lost now (only local probes were
// left, or a connection dropped while the digest was on its way) is
// adopted here once a resume brings it, and the digest asked for again.
// Every page is resident by now, so a connection that fails during the
// goodbye fails nothing.
func (r *remote) finish(ctx context.Context) error {
	h := r.h
	var l *link
	for attempt := 1; ; attempt++ {
		if err := r.awaitLink(ctx); err != nil {
			return err
		}
		l = r.cur
		if !h.opts.Verify {
			break
		}
		d, err := r.digest(ctx, l)
		if err != nil {
			if attempt == maxDigestAttempts {
				return fmt.Errorf("no region digest after %d attempts: %w", attempt, err)
			}
			if err = r.linkLost(l, err); err != nil {
				return err
			}
			continue // lost: resumed, ask again
		}
		if d == nil {
			continue // lost while waiting
		}
		if d.Algorithm != wire.DigestXXH3Over64 {
			return fmt.Errorf("server digest uses algorithm %d, want %d", d.Algorithm, wire.DigestXXH3Over64)
		}
		if got := RegionDigest(h.mem, h.pageSize); got != d.Sum {
			return fmt.Errorf("region digest %x, the server's %x: %w", got, d.Sum, ErrHashMismatch)
		}
		break
	}
	r.closing.Store(true)
	ctx, cancel := context.WithTimeout(ctx, h.opts.IOTimeout)
	defer cancel()
	for _, rc := range l.all() {
		if err := rc.send(&wire.Bye{Reason: "complete"}, h.opts.IOTimeout); err != nil {
			h.opts.Logger.Info("bye not sent", "conn", rc.name, "err", err)
		}
	}
	// The server answers Bye and closes; the receive loops end on either.
	// The fault loop has stopped, so the urgent descriptor is read here.
	if r.fdMode {
		if err := r.awaitUrgentBye(ctx, l); err != nil {
			h.opts.Logger.Info("no bye from the server", "conn", "urgent", "err", err)
		}
	}
	for _, rc := range l.bulk {
		select {
		case <-rc.done:
		case <-ctx.Done():
			h.opts.Logger.Info("no bye from the server", "conn", rc.name, "err", ctx.Err())
		}
	}
	r.close()
	return nil
}

// awaitLink waits, once the fault loop has stopped, until no resume is
// under way, adopting the resumed link.
func (r *remote) awaitLink(ctx context.Context) error {
	h := r.h
	for r.down.Load() {
		r.linkMu.Lock()
		nl := r.pending
		r.pending = nil
		r.linkMu.Unlock()
		if nl != nil {
			if err := r.adopt(nl); err != nil {
				return err
			}
			continue
		}
		select {
		case <-h.failed:
			return h.failure()
		case <-ctx.Done():
			return fmt.Errorf("waiting to reconnect after every page arrived: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// digest asks for the region's digest on l and waits for it; nil without
// an error when l was lost meanwhile. An answer that does not come within
// digestPatience (the connection carrying it stalled: a server waiting for
// the rest of a frame whose length was damaged, say) is a lost link, so
// that finish resumes and asks again.
func (r *remote) digest(ctx context.Context, l *link) (*wire.Digest, error) {
	h := r.h
	req := wire.DigestRequest{ReqID: r.nextID.Add(1), Region: r.region.ID}
	if err := l.bulk[0].send(&req, h.opts.IOTimeout); err != nil {
		return nil, lostf("request digest: %w", err)
	}
	patience := h.digestPatience()
	t := time.NewTimer(patience)
	defer t.Stop()
	for {
		select {
		case d := <-r.digests:
			if d.ReqID != req.ReqID {
				continue // an answer to a request of a lost link
			}
			return d, nil
		case <-l.lostCh:
			return nil, nil
		case <-h.failed:
			return nil, h.failure()
		case <-t.C:
			h.stats.stalls.Add(1)
			return nil, lostf("%s connection: no digest within %v: %w", l.bulk[0].name, patience, ErrStalled)
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the digest: %w", ctx.Err())
		}
	}
}

// digestPatience is how long digest waits for one answer: the stall
// timeout, or the I/O timeout without stall detection.
func (h *Handler) digestPatience() time.Duration {
	if d := h.opts.StallTimeout; d > 0 {
		return d
	}
	return h.opts.IOTimeout
}

// maxDigestAttempts bounds the digests finish asks for, each on a fresh
// link after the one before went unanswered or was lost.
const maxDigestAttempts = 3

// awaitUrgentBye reads l's urgent descriptor until the server's Bye or the
// end of the connection.
func (r *remote) awaitUrgentBye(ctx context.Context, l *link) error {
	l.fdMu.Lock()
	fd := l.ufd
	l.fdMu.Unlock()
	if fd < 0 {
		return nil
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for ctx.Err() == nil {
		if _, err := unix.Poll(pfd, 100); err != nil && err != unix.EINTR {
			return fmt.Errorf("urgent connection: poll: %w", err)
		}
		stop, err := r.drainUrgent(l)
		if err != nil || stop {
			return err
		}
	}
	return fmt.Errorf("urgent connection: waiting for the server's bye: %w", ctx.Err())
}

// wakeRange is a run of pages installed without a wake.
type wakeRange struct{ page, count uint64 }

// wakePending wakes the threads waiting on the pages installed with
// deferWake, merging adjacent runs.
func (r *remote) wakePending() error {
	h := r.h
	for i := 0; i < len(r.wakes); {
		w := r.wakes[i]
		j := i + 1
		for j < len(r.wakes) && r.wakes[j].page == w.page+w.count {
			w.count += r.wakes[j].count
			j++
		}
		if err := h.uffd.Wake(h.addr(w.page), w.count*uint64(h.pageSize)); err != nil {
			return err
		}
		i = j
	}
	r.wakes = r.wakes[:0]
	return nil
}

// release closes the descriptors the fault loop used; the fault loop and
// every resume must have stopped.
func (r *remote) release() {
	if !r.fdMode {
		return
	}
	r.detachFD(r.cur)
	if r.ep >= 0 {
		unix.Close(r.ep)
		r.ep = -1
	}
}

// close closes the current link and a resumed one not yet adopted, and
// keeps any resume from handing over another.
func (r *remote) close() {
	r.once.Do(func() {
		r.linkMu.Lock()
		r.closing.Store(true)
		l, p := r.cur, r.pending
		r.pending = nil
		r.linkMu.Unlock()
		l.closeConns()
		if p != nil {
			p.closeConns()
			r.detachFD(p)
		}
		r.h.stats.connsOpen.Store(0)
	})
}

// serverGone reports whether a read error means the server closed or
// reset the connection (as opposed to sending something wrong).
func serverGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE)
}

// RegionDigest computes digest algorithm 1 of docs/protocol.md over mem:
// the xxh3-128 of every page's xxh3-64 hash, 8 bytes little-endian each, in
// page order; the sum big-endian.
func RegionDigest(mem []byte, pageSize int) [16]byte {
	hs := xxh3.New128()
	var buf [8 * 512]byte
	n := 0
	for off := 0; off < len(mem); off += pageSize {
		binary.LittleEndian.PutUint64(buf[n:], xxh3.Hash(mem[off:off+pageSize]))
		n += 8
		if n == len(buf) {
			hs.Write(buf[:n])
			n = 0
		}
	}
	hs.Write(buf[:n])
	return hs.Sum128().Bytes()
}
