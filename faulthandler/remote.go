package faulthandler

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/pagewarp/pagewarp/wire"
)

// ClientName is sent in Hello.
const ClientName = "pagewarp-faulthandler"

// ErrServerGone is wrapped by the error of a migration whose server closed
// the connection or said Bye before every page arrived.
var ErrServerGone = errors.New("page server went away")

// Dial connects to the page server at addr over network ("tcp", "unix")
// with two connections, urgent and bulk, performs the handshake, and maps a
// region of the size the server announces. Call Start to begin.
func Dial(ctx context.Context, network, addr string, opts Options) (*Handler, error) {
	var d net.Dialer
	urgent, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	bulk, err := d.DialContext(ctx, network, addr)
	if err != nil {
		urgent.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if tc, ok := urgent.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	h, err := NewRemote(ctx, urgent, bulk, opts)
	if err != nil {
		urgent.Close()
		bulk.Close()
		return nil, err
	}
	return h, nil
}

// NewRemote runs the handshake on two connections to one page server (the
// urgent one carries demand requests only) and maps the region. It takes
// ownership of the connections on success.
func NewRemote(ctx context.Context, urgent, bulk net.Conn, opts Options) (*Handler, error) {
	opts.setDefaults()
	var session [16]byte
	if _, err := rand.Read(session[:]); err != nil {
		return nil, err
	}
	r := &remote{digests: make(chan *wire.Digest, 1)}
	r.urgent = newRConn(urgent, "urgent")
	r.bulk = newRConn(bulk, "bulk")
	var wels [2]*wire.Welcome
	for i, rc := range []*rconn{r.urgent, r.bulk} {
		ch := uint8(wire.ChannelUrgent)
		if rc == r.bulk {
			ch = wire.ChannelBulk
		}
		w, err := rc.handshake(ctx, &wire.Hello{
			VersionMin: wire.Version, VersionMax: wire.Version,
			Features: wire.FeatureZeroPages | wire.FeaturePageHashes,
			Channel:  ch, Session: session, Client: ClientName,
		}, opts.IOTimeout)
		if err != nil {
			return nil, err
		}
		wels[i] = w
	}
	w := wels[0]
	if w.PageSize != wels[1].PageSize || len(w.Regions) != len(wels[1].Regions) {
		return nil, errors.New("handshake: the two connections reached servers with different layouts")
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
	r.urgent.r.SetPageSize(int(w.PageSize))
	r.bulk.r.SetPageSize(int(w.PageSize))
	h.fetch = r
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
	r    *wire.Reader
	wmu  sync.Mutex
	w    *wire.Writer
	done chan struct{} // closed when the receive loop exits
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
	region  wire.Region
	welcome *wire.Welcome
	urgent  *rconn
	bulk    *rconn
	nextID  atomic.Uint64
	digests chan *wire.Digest

	// Background pull state, owned by the bulk receive loop.
	inflight  int    // background requests sent and not yet answered in full
	cursor    uint64 // where the search for missing pages resumes
	seenFault uint64 // latestFault when cursor was last moved to it
	pullDone  bool   // no page was left to request
	closing   atomic.Bool
	once      sync.Once
}

func (r *remote) start(ctx context.Context) {
	for _, rc := range []*rconn{r.urgent, r.bulk} {
		kind := kindDemand
		if rc == r.bulk {
			kind = kindBackground
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
	r.urgent.c.SetWriteDeadline(time.Now().Add(r.h.opts.IOTimeout))
	if err := r.urgent.w.Flush(); err != nil {
		return fmt.Errorf("send demand requests: %w", err)
	}
	return nil
}

// pull does nothing: the bulk receive loop drives the background pull
// itself (see pullMore), so that no goroutine hand-off sits between a reply
// and the next request. On a 2-vCPU guest each hand-off that wakes another
// thread costs an IPI to a halted vCPU, and profiles showed those wake-ups
// costing as much as the page copies.
func (r *remote) pull(context.Context) error { return nil }

// pullMore tops the window of background requests up to PullWindow, each
// for the next run of missing pages, restarting after the latest demand
// fault each time one happened, so the pages a workload is about to touch
// come early. Only the bulk receive loop calls it.
func (r *remote) pullMore() error {
	h := r.h
	if h.opts.NoPull || r.pullDone {
		return nil
	}
	sent := false
	for r.inflight < h.opts.PullWindow {
		if f := h.latestFault.Load(); f != r.seenFault {
			r.seenFault, r.cursor = f, f
		}
		first, count, ok := h.nextMissingRun(r.cursor, h.opts.PullChunk)
		if !ok {
			r.pullDone = true
			break
		}
		r.cursor = first + uint64(count)
		h.stats.pullRequests.Add(1)
		req := wire.Request{ReqID: r.nextID.Add(1), Region: r.region.ID, Page: first, Count: uint32(count), Priority: wire.PriorityBackground}
		r.bulk.wmu.Lock()
		err := r.bulk.w.WriteMessage(&req)
		r.bulk.wmu.Unlock()
		if err != nil {
			return fmt.Errorf("send background request: %w", err)
		}
		r.inflight++
		sent = true
	}
	if !sent {
		return nil
	}
	r.bulk.wmu.Lock()
	defer r.bulk.wmu.Unlock()
	r.bulk.c.SetWriteDeadline(time.Now().Add(h.opts.IOTimeout))
	if err := r.bulk.w.Flush(); err != nil {
		return fmt.Errorf("send background requests: %w", err)
	}
	return nil
}

// recvLoop reads replies on one connection and installs them. On the bulk
// connection it also keeps the background pull going.
func (r *remote) recvLoop(rc *rconn, kind pageKind) error {
	h := r.h
	if rc == r.bulk {
		if err := r.pullMore(); err != nil {
			return err
		}
	}
	for {
		m, err := rc.r.ReadMessage()
		if err != nil {
			if r.closing.Load() {
				return nil
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("%s connection: %w", rc.name, ErrServerGone)
			}
			return fmt.Errorf("%s connection: %w", rc.name, err)
		}
		switch m := m.(type) {
		case *wire.Pages:
			if err := r.install(m, kind); err != nil {
				return err
			}
			if rc == r.bulk && m.Last() {
				r.inflight--
				if err := r.pullMore(); err != nil {
					if r.closing.Load() {
						return nil
					}
					return err
				}
			}
		case *wire.Digest:
			select {
			case r.digests <- m:
			default:
			}
		case *wire.Error:
			return fmt.Errorf("%s connection: server error: %w", rc.name, m)
		case *wire.Bye:
			if r.closing.Load() {
				return nil
			}
			return fmt.Errorf("%s connection: server said bye (%q) with %d of %d pages resident: %w",
				rc.name, m.Reason, h.resident.Load(), h.npages, ErrServerGone)
		default:
			return fmt.Errorf("%s connection: unexpected %v from server", rc.name, m.Type())
		}
	}
}

// install verifies and installs one Pages frame.
func (r *remote) install(m *wire.Pages, kind pageKind) error {
	h := r.h
	if m.Region != r.region.ID || m.Page >= h.npages || uint64(m.Count) > h.npages-m.Page {
		return fmt.Errorf("server sent pages %d+%d of region %d, outside region %d of %d pages", m.Page, m.Count, m.Region, r.region.ID, h.npages)
	}
	if m.Zero() {
		return h.installZero(m.Page, int(m.Count), kindZero)
	}
	ps := h.pageSize
	for i := 0; i < int(m.Count); i++ {
		if got := xxh3.Hash(m.Data[i*ps : (i+1)*ps]); got != m.Hash(i) {
			return fmt.Errorf("page %d: content hash %#x, the server's %#x: %w", m.Page+uint64(i), got, m.Hash(i), ErrHashMismatch)
		}
	}
	h.stats.bytesReceived.Add(uint64(len(m.Data)))
	return h.installData(m.Page, int(m.Count), m.Data, kind)
}

// finish verifies the region if asked and closes both connections with Bye.
func (r *remote) finish(ctx context.Context) error {
	h := r.h
	if h.opts.Verify {
		req := wire.DigestRequest{ReqID: r.nextID.Add(1), Region: r.region.ID}
		if err := r.bulk.send(&req, h.opts.IOTimeout); err != nil {
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
	for _, rc := range []*rconn{r.urgent, r.bulk} {
		if err := rc.send(&wire.Bye{Reason: "complete"}, h.opts.IOTimeout); err != nil {
			return fmt.Errorf("%s connection: bye: %w", rc.name, err)
		}
	}
	// The server answers Bye and closes; the receive loops end on either.
	for _, rc := range []*rconn{r.urgent, r.bulk} {
		select {
		case <-rc.done:
		case <-ctx.Done():
			return fmt.Errorf("%s connection: waiting for the server's bye: %w", rc.name, ctx.Err())
		}
	}
	r.close()
	return nil
}

func (r *remote) close() {
	r.once.Do(func() {
		r.closing.Store(true)
		r.urgent.c.Close()
		r.bulk.c.Close()
	})
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
