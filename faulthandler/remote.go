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

	"github.com/pagewarp/pagewarp/wire"
)

// ClientName is sent in Hello.
const ClientName = "pagewarp-faulthandler"

// ErrServerGone is wrapped by the error of a migration whose server closed
// the connection or said Bye before every page arrived.
var ErrServerGone = errors.New("page server went away")

// Dial connects to the page server at addr over network ("tcp", "unix")
// with one urgent and Options.BulkStreams bulk connections, performs the
// handshake (TLS first with Options.TLS), and maps a region of the size the
// server announces. Call Start to begin.
func Dial(ctx context.Context, network, addr string, opts Options) (*Handler, error) {
	opts.setDefaults()
	var tlsCfg *tls.Config
	if opts.TLS != nil {
		var err error
		if tlsCfg, err = wire.ClientTLS(opts.TLS, addr); err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
	}
	var d net.Dialer
	conns := make([]net.Conn, 0, 1+opts.BulkStreams)
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for range 1 + opts.BulkStreams {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		if tc, ok := c.(*net.TCPConn); ok && len(conns) == 0 {
			tc.SetNoDelay(true)
		}
		if tlsCfg != nil {
			tc, err := wire.ClientHandshake(ctx, c, tlsCfg, opts.IOTimeout)
			if err != nil {
				c.Close()
				closeAll()
				return nil, fmt.Errorf("dial %s: %w", addr, err)
			}
			c = tc
		}
		conns = append(conns, c)
	}
	h, err := NewRemote(ctx, conns[0], conns[1:], opts)
	if err != nil {
		closeAll()
		return nil, err
	}
	return h, nil
}

// NewRemote runs the handshake on connections to one page server, one
// urgent (demand requests only) and one or more bulk (the background
// pull), and maps the region. It takes ownership of the connections on
// success.
func NewRemote(ctx context.Context, urgent net.Conn, bulk []net.Conn, opts Options) (*Handler, error) {
	opts.setDefaults()
	if len(bulk) == 0 {
		return nil, errors.New("no bulk connection")
	}
	var session [16]byte
	if _, err := rand.Read(session[:]); err != nil {
		return nil, err
	}
	r := &remote{digests: make(chan *wire.Digest, 1), session: session}
	r.urgent = newRConn(urgent, "urgent")
	for i, c := range bulk {
		r.bulk = append(r.bulk, newRConn(c, fmt.Sprintf("bulk%d", i)))
	}
	var w *wire.Welcome
	features := wire.FeatureZeroPages | wire.FeaturePageHashes
	if !opts.NoPush {
		features |= wire.FeaturePush
	}
	for _, rc := range r.all() {
		ch := uint8(wire.ChannelBulk)
		if rc == r.urgent {
			ch = wire.ChannelUrgent
		}
		wel, err := rc.handshake(ctx, &wire.Hello{
			VersionMin: wire.Version, VersionMax: wire.Version,
			Features: features,
			Channel:  ch, Session: session, Client: ClientName,
		}, opts.IOTimeout)
		if err != nil {
			return nil, err
		}
		if w == nil {
			w = wel
		} else if wel.PageSize != w.PageSize || !slices.Equal(wel.Regions, w.Regions) {
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
	for _, rc := range r.all() {
		rc.r.SetPageSize(int(w.PageSize))
	}
	r.ufd = -1
	if sc, ok := urgent.(syscall.Conn); ok {
		// The fault loop reads the urgent connection itself, in the same
		// epoll as the userfaultfd: a demand reply is installed by the
		// thread that sent the request, with no goroutine hand-off.
		raw, err := sc.SyscallConn()
		if err == nil {
			var derr error
			err = raw.Control(func(fd uintptr) { r.ufd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
			if err == nil {
				err = derr
			}
		}
		if err != nil {
			h.discard()
			return nil, fmt.Errorf("urgent connection descriptor: %w", err)
		}
		r.ufr = newFDReader(r.ufd)
	}
	h.fetch = r
	h.stats.connsOpen.Store(int64(len(r.all())))
	return h, nil
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
}

func newRConn(c net.Conn, name string) *rconn {
	return &rconn{c: c, name: name, r: wire.NewReader(c), w: wire.NewWriter(c), done: make(chan struct{})}
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

type remote struct {
	h       *Handler
	session [16]byte
	region  wire.Region
	welcome *wire.Welcome
	urgent  *rconn
	bulk    []*rconn
	nextID  atomic.Uint64
	digests chan *wire.Digest
	closing atomic.Bool
	once    sync.Once

	// ufd is a duplicate of the urgent connection's descriptor that the
	// fault loop reads (-1 when the connection has none: then a receive
	// loop goroutine reads it). ufr frames what it reads.
	ufd int
	ufr *fdReader
	// pendingDemand counts demand requests whose last reply frame has not
	// been read. Only used when ufd >= 0, where the fault loop alone both
	// sends requests and reads replies.
	pendingDemand int
	// wakes are the runs installed from the urgent connection whose waiters
	// are still asleep (fault loop only; see install).
	wakes []wakeRange
}

func (r *remote) awaiting() bool { return r.ufd >= 0 && r.pendingDemand > 0 }

// all returns every connection, urgent first.
func (r *remote) all() []*rconn { return append([]*rconn{r.urgent}, r.bulk...) }

func (r *remote) start(ctx context.Context) {
	for i, rc := range r.bulk {
		rc.bulk = true
		// Spread the streams' starting points over the region.
		rc.cursor = r.h.npages * uint64(i) / uint64(len(r.bulk))
	}
	for _, rc := range r.all() {
		kind := kindDemand
		if rc.bulk {
			kind = kindBackground
		} else if r.ufd >= 0 {
			continue // the fault loop reads it
		}
		r.h.wg.Add(1)
		go func() {
			defer r.h.wg.Done()
			defer close(rc.done)
			if err := r.recvLoop(rc, kind); err != nil {
				r.h.fail(err)
			}
		}()
	}
}

// demand queues a demand request; the fault loop calls flush after a batch.
func (r *remote) demand(page uint64) error {
	req := wire.Request{ReqID: r.nextID.Add(1), Region: r.region.ID, Page: page, Count: 1, Priority: wire.PriorityDemand}
	if r.ufd >= 0 {
		r.pendingDemand++ // the fault loop will read the reply itself
	}
	r.urgent.wmu.Lock()
	defer r.urgent.wmu.Unlock()
	if err := r.urgent.w.WriteMessage(&req); err != nil {
		return fmt.Errorf("send demand request: %w", err)
	}
	return nil
}

func (r *remote) flush() error {
	r.urgent.wmu.Lock()
	defer r.urgent.wmu.Unlock()
	// Reports ride along with demand requests; alone they wait until a few
	// have gathered, so that a well-predicted workload, which touches its
	// probes without demand faults, does not wake the server for each.
	for more := r.urgent.w.Buffered() > 0 || r.h.reportsPending() >= reportBatch; more; {
		var used, unused []uint64
		used, unused, more = r.h.takeReports()
		if len(used)+len(unused) == 0 {
			break
		}
		if err := r.urgent.w.WriteMessage(&wire.Feedback{Region: r.region.ID, Used: used, Unused: unused}); err != nil {
			return fmt.Errorf("send feedback: %w", err)
		}
	}
	r.urgent.c.SetWriteDeadline(time.Now().Add(r.h.opts.IOTimeout))
	if err := r.urgent.w.Flush(); err != nil {
		return fmt.Errorf("send demand requests: %w", err)
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
			return fmt.Errorf("%s connection: send background request: %w", rc.name, err)
		}
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
		return fmt.Errorf("%s connection: send background requests: %w", rc.name, err)
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
			if serverGone(err) {
				return fmt.Errorf("%s connection: %w (%w)", rc.name, ErrServerGone, err)
			}
			return fmt.Errorf("%s connection: %w", rc.name, err)
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
	switch m := m.(type) {
	case *wire.Pages:
		if err := r.install(m, kind, rc == r.urgent && r.ufd >= 0); err != nil {
			return false, err
		}
		if rc == r.urgent && r.ufd >= 0 && m.Last() && r.pendingDemand > 0 {
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
		if rc != r.urgent || m.Region != r.region.ID {
			return false, fmt.Errorf("%s connection: unexpected push notice for region %d", rc.name, m.Region)
		}
		if err := h.announce(m); err != nil {
			return false, fmt.Errorf("%s connection: %w", rc.name, err)
		}
		if r.ufd >= 0 {
			r.pendingDemand++ // keep the fault loop polling until the push is in
		}
	case *wire.Digest:
		select {
		case r.digests <- m:
		default:
		}
	case *wire.Error:
		return false, fmt.Errorf("%s connection: server error: %w", rc.name, m)
	case *wire.Bye:
		if r.closing.Load() {
			return true, nil
		}
		return false, fmt.Errorf("%s connection: server said bye (%q) with %d of %d pages resident: %w",
			rc.name, m.Reason, h.resident.Load(), h.npages, ErrServerGone)
	default:
		return false, fmt.Errorf("%s connection: unexpected %v from server", rc.name, m.Type())
	}
	return false, nil
}

// pollFD returns the descriptor the fault loop must watch besides the
// userfaultfd: the urgent connection's.
func (r *remote) pollFD() int { return r.ufd }

// readable reads and handles every complete frame on the urgent
// connection; the fault loop calls it when the descriptor is readable.
func (r *remote) readable() error {
	_, err := r.drainUrgent()
	return err
}

// drainUrgent reads the urgent descriptor until it would block, handling
// each frame. stop is true once the connection ended normally.
func (r *remote) drainUrgent() (stop bool, err error) {
	for {
		got, ferr := r.ufr.fill()
		for {
			body, err := r.ufr.next()
			if err != nil {
				return false, fmt.Errorf("urgent connection: %w", err)
			}
			if body == nil {
				if err := r.wakePending(); err != nil {
					return false, err
				}
				break
			}
			m, err := wire.Decode(body)
			if err != nil {
				return false, fmt.Errorf("urgent connection: %w", err)
			}
			if stop, err := r.handle(r.urgent, kindDemand, m); stop || err != nil {
				return stop, err
			}
		}
		switch {
		case serverGone(ferr):
			if r.closing.Load() {
				return true, nil
			}
			return false, fmt.Errorf("urgent connection: %w (%w)", ErrServerGone, ferr)
		case ferr != nil:
			if r.closing.Load() {
				return true, nil
			}
			return false, fmt.Errorf("urgent connection: %w", ferr)
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
			return fmt.Errorf("page %d: content hash %#x, the server's %#x: %w", m.Page+uint64(i), got, m.Hash(i), ErrHashMismatch)
		}
	}
	if m.Pushed() {
		h.stats.bytesReceived[kindPushed].Add(uint64(len(m.Data)))
		return h.installPushed(m.Page, int(m.Count), m.Data, deferWake)
	}
	h.stats.bytesReceived[kind].Add(uint64(len(m.Data)))
	return h.installDataMode(m.Page, int(m.Count), m.Data, kind, deferWake)
}

// finish verifies the region if asked and closes both connections with Bye.
func (r *remote) finish(ctx context.Context) error {
	h := r.h
	if h.opts.Verify {
		req := wire.DigestRequest{ReqID: r.nextID.Add(1), Region: r.region.ID}
		if err := r.bulk[0].send(&req, h.opts.IOTimeout); err != nil {
			return fmt.Errorf("request digest: %w", err)
		}
		var d *wire.Digest
		select {
		case d = <-r.digests:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the digest: %w", ctx.Err())
		}
		if d.Algorithm != wire.DigestXXH3Over64 {
			return fmt.Errorf("server digest uses algorithm %d, want %d", d.Algorithm, wire.DigestXXH3Over64)
		}
		if got := RegionDigest(h.mem, h.pageSize); got != d.Sum {
			return fmt.Errorf("region digest %x, the server's %x: %w", got, d.Sum, ErrHashMismatch)
		}
	}
	r.closing.Store(true)
	for _, rc := range r.all() {
		if err := rc.send(&wire.Bye{Reason: "complete"}, h.opts.IOTimeout); err != nil {
			return fmt.Errorf("%s connection: bye: %w", rc.name, err)
		}
	}
	// The server answers Bye and closes; the receive loops end on either.
	// The fault loop has stopped, so the urgent descriptor is read here.
	if r.ufd >= 0 {
		if err := r.awaitUrgentBye(ctx); err != nil {
			return err
		}
	}
	for _, rc := range r.bulk {
		select {
		case <-rc.done:
		case <-ctx.Done():
			return fmt.Errorf("%s connection: waiting for the server's bye: %w", rc.name, ctx.Err())
		}
	}
	r.close()
	return nil
}

// awaitUrgentBye reads the urgent descriptor until the server's Bye or
// the end of the connection.
func (r *remote) awaitUrgentBye(ctx context.Context) error {
	pfd := []unix.PollFd{{Fd: int32(r.ufd), Events: unix.POLLIN}}
	for ctx.Err() == nil {
		if _, err := unix.Poll(pfd, 100); err != nil && err != unix.EINTR {
			return fmt.Errorf("urgent connection: poll: %w", err)
		}
		stop, err := r.drainUrgent()
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

// release closes the urgent descriptor's duplicate; the fault loop must
// have stopped.
func (r *remote) release() {
	if r.ufd >= 0 {
		unix.Close(r.ufd)
		r.ufd = -1
	}
}

func (r *remote) close() {
	r.once.Do(func() {
		r.closing.Store(true)
		for _, rc := range r.all() {
			rc.c.Close()
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
