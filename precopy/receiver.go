package precopy

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/wire"
)

// ReceiverConfig configures the target side of pre-copy.
type ReceiverConfig struct {
	// Streams is the number of pre-copy connections to open (default 1,
	// at most wire.MaxStreams).
	Streams int
	// Hash is the content hash the base snapshot is advertised with; it
	// must be the sender's (default xxh3-128).
	Hash HashAlg
	// Base is a snapshot of memory the target holds locally (for example
	// an earlier image of the same workload, mapped from a file). Its
	// pages are advertised by hash, and the sender sends a reference
	// instead of any page whose content it holds. Nil: none.
	Base []byte
	// IOTimeout bounds the handshake (default 10s).
	IOTimeout time.Duration
	// TLS, when set, makes Dial run a TLS 1.3 handshake on every stream
	// before the protocol's, as faulthandler.Options.TLS does (see
	// wire.ClientTLS). A page server configured with TLS refuses streams
	// without it.
	TLS    *tls.Config
	Logger *slog.Logger
}

// ReceivedRound is one round as the target saw it.
type ReceivedRound struct {
	Round    uint32        `json:"round"`
	Pages    uint64        `json:"pages"` // data pages installed
	Zero     uint64        `json:"zero"`  // zero pages installed
	Refs     uint64        `json:"refs"`  // pages installed from references
	Rejected uint64        `json:"rejected"`
	Bytes    uint64        `json:"bytes"` // page bytes received
	Duration time.Duration `json:"duration_ns"`
}

// Receiver installs pre-copy rounds into the regions of one or more
// handlers (one per migrated region; several for a gang migration) before
// they start. Run it between Dial/NewRemote and Handler.Start.
type Receiver struct {
	cfg      ReceiverConfig
	pageSize int
	handlers map[uint32]*faulthandler.Handler
	streams  []*rstream
	ackMu    sync.Mutex // serialises writes on stream 0 (Known, RoundAck)

	mu       sync.Mutex
	round    uint32
	ended    int
	started  time.Time
	cur      ReceivedRound
	rejected map[uint32][]uint64 // pages whose data failed its hash this round, by region
	pending  []pendingRef
	rounds   []ReceivedRound

	// The switch (stream 0): pages made missing, and the workload's state.
	invalidated uint64
	state       []byte
	handedOver  bool
	handoverAt  time.Time
}

type rstream struct {
	idx   int
	nc    net.Conn
	r     *wire.Reader
	w     *wire.Writer
	pages uint64 // pages and refs received in the current round
	refs  uint64
}

type pendingRef struct {
	region uint32
	ref    wire.Ref
}

// Dial opens cfg.Streams pre-copy connections to the page server at addr
// for the given handlers (made by faulthandler.Dial to the same server and
// not yet started), and runs the handshakes.
func Dial(ctx context.Context, network, addr string, handlers []*faulthandler.Handler, cfg ReceiverConfig) (*Receiver, error) {
	if cfg.Streams <= 0 {
		cfg.Streams = 1
	}
	var tlsCfg *tls.Config
	if cfg.TLS != nil {
		var err error
		if tlsCfg, err = wire.ClientTLS(cfg.TLS, addr); err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
	}
	var d net.Dialer
	conns := make([]net.Conn, 0, cfg.Streams)
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for range cfg.Streams {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		if tlsCfg != nil {
			tc, err := wire.ClientHandshake(ctx, c, tlsCfg, cmp.Or(cfg.IOTimeout, 10*time.Second))
			if err != nil {
				c.Close()
				closeAll()
				return nil, fmt.Errorf("dial %s: %w", addr, err)
			}
			c = tc
		}
		conns = append(conns, c)
	}
	r, err := NewReceiver(ctx, conns, handlers, cfg)
	if err != nil {
		closeAll()
		return nil, err
	}
	return r, nil
}

// NewReceiver runs the pre-copy handshake on conns (stream i is conns[i])
// and advertises the base snapshot. It takes ownership of conns on success.
func NewReceiver(ctx context.Context, conns []net.Conn, handlers []*faulthandler.Handler, cfg ReceiverConfig) (*Receiver, error) {
	if cfg.Hash == 0 {
		cfg.Hash = HashXXH3
	}
	if cfg.IOTimeout <= 0 {
		cfg.IOTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(conns) == 0 || len(conns) > wire.MaxStreams {
		return nil, fmt.Errorf("%d pre-copy streams: want 1 to %d", len(conns), wire.MaxStreams)
	}
	if len(handlers) == 0 {
		return nil, errors.New("no handlers to pre-copy into")
	}
	rc := &Receiver{cfg: cfg, handlers: make(map[uint32]*faulthandler.Handler), pageSize: handlers[0].PageSize()}
	for _, h := range handlers {
		if h.PageSize() != rc.pageSize {
			return nil, errors.New("handlers with different page sizes")
		}
		if _, dup := rc.handlers[h.RegionID()]; dup {
			return nil, fmt.Errorf("two handlers for region %d", h.RegionID())
		}
		rc.handlers[h.RegionID()] = h
	}
	if len(cfg.Base)%rc.pageSize != 0 {
		return nil, fmt.Errorf("base snapshot of %d bytes is not a whole number of %d-byte pages", len(cfg.Base), rc.pageSize)
	}
	session := handlers[0].Session()
	for i, c := range conns {
		s := &rstream{idx: i, nc: c, r: wire.NewReader(c), w: wire.NewWriter(c)}
		if err := rc.handshake(ctx, s, session, len(conns)); err != nil {
			return nil, err
		}
		s.r.SetPageSize(rc.pageSize)
		rc.streams = append(rc.streams, s)
	}
	if err := rc.advertise(); err != nil {
		return nil, err
	}
	return rc, nil
}

func (rc *Receiver) handshake(ctx context.Context, s *rstream, session [wire.SessionLen]byte, n int) error {
	deadline := time.Now().Add(rc.cfg.IOTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	s.nc.SetDeadline(deadline)
	defer s.nc.SetDeadline(time.Time{})
	hello := &wire.Hello{
		VersionMin: wire.Version, VersionMax: wire.Version,
		Features: wire.FeatureZeroPages | wire.FeaturePageHashes | wire.FeaturePrecopy,
		Channel:  wire.ChannelPrecopy, Session: session, Client: faulthandler.ClientName,
		Stream: uint8(s.idx), Streams: uint8(n),
	}
	if err := s.w.WriteMessage(hello); err != nil {
		return fmt.Errorf("pre-copy handshake (stream %d): %w", s.idx, err)
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("pre-copy handshake (stream %d): %w", s.idx, err)
	}
	m, err := s.r.ReadMessage()
	if err != nil {
		return fmt.Errorf("pre-copy handshake (stream %d): %w", s.idx, err)
	}
	switch m := m.(type) {
	case *wire.Welcome:
		if m.Features&wire.FeaturePrecopy == 0 {
			return fmt.Errorf("pre-copy handshake (stream %d): the server did not agree to pre-copy", s.idx)
		}
		if int(m.PageSize) != rc.pageSize {
			return fmt.Errorf("pre-copy handshake (stream %d): server page size %d, target maps %d", s.idx, m.PageSize, rc.pageSize)
		}
		for id, h := range rc.handlers {
			i := slices.IndexFunc(m.Regions, func(r wire.Region) bool { return r.ID == id })
			if i < 0 || m.Regions[i].Pages != h.Pages() {
				return fmt.Errorf("pre-copy handshake (stream %d): the server has no region %d of %d pages", s.idx, id, h.Pages())
			}
		}
		return nil
	case *wire.Error:
		return fmt.Errorf("pre-copy handshake (stream %d): server: %s: %s", s.idx, m.Code, m.Message)
	default:
		return fmt.Errorf("pre-copy handshake (stream %d): got %s, want welcome", s.idx, m.Type())
	}
}

// advertise sends the base snapshot's content hashes on stream 0.
func (rc *Receiver) advertise() error {
	s := rc.streams[0]
	ps := rc.pageSize
	n := len(rc.cfg.Base) / ps
	hl := wire.ContentHashLen(uint8(rc.cfg.Hash))
	buf := make([]byte, 0, wire.MaxPagesPerRequest*hl)
	first := 0
	for {
		buf = buf[:0]
		end := min(first+wire.MaxPagesPerRequest, n)
		for p := first; p < end; p++ {
			sum, _ := sumPage(rc.cfg.Hash, rc.cfg.Base[p*ps:(p+1)*ps])
			buf = appendSum(buf, rc.cfg.Hash, sum)
		}
		k := &wire.Known{Algorithm: uint8(rc.cfg.Hash), First: uint64(first), Hashes: buf, Done: end == n}
		if err := s.w.WriteMessage(k); err != nil {
			return fmt.Errorf("advertise base snapshot: %w", err)
		}
		if end == n {
			break
		}
		first = end
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("advertise base snapshot: %w", err)
	}
	return nil
}

// Run receives rounds until the sender says goodbye on every stream, or
// fails. On failure it closes the streams; the handlers are the caller's.
func (rc *Receiver) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(rc.streams))
	for _, s := range rc.streams {
		go func() { errs <- rc.recvLoop(s) }()
	}
	stop := context.AfterFunc(ctx, func() {
		for _, s := range rc.streams {
			s.nc.Close()
		}
	})
	defer stop()
	var first error
	for range rc.streams {
		if err := <-errs; err != nil && first == nil {
			first = err
			for _, s := range rc.streams {
				s.nc.Close()
			}
		}
	}
	for _, s := range rc.streams {
		s.nc.Close()
	}
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return first
}

// Rounds returns what the target received in each completed round.
func (rc *Receiver) Rounds() []ReceivedRound {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]ReceivedRound(nil), rc.rounds...)
}

func (rc *Receiver) fatal(s *rstream, code wire.ErrorCode, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if s.idx == 0 {
		rc.ackMu.Lock()
		defer rc.ackMu.Unlock()
	}
	s.w.WriteMessage(&wire.Error{Code: code, Message: msg})
	s.w.Flush()
	return fmt.Errorf("pre-copy stream %d: %s", s.idx, msg)
}

func (rc *Receiver) recvLoop(s *rstream) error {
	for {
		m, err := s.r.ReadMessage()
		if err != nil {
			var werr *wire.Error
			if errors.As(err, &werr) {
				return rc.fatal(s, werr.Code, "%s", werr.Message)
			}
			return fmt.Errorf("pre-copy stream %d: %w", s.idx, err)
		}
		switch m := m.(type) {
		case *wire.Pages:
			if err := rc.pages(s, m); err != nil {
				return err
			}
		case *wire.Refs:
			if err := rc.refs(s, m); err != nil {
				return err
			}
		case *wire.RoundEnd:
			if err := rc.roundEnd(s, m); err != nil {
				return err
			}
		case *wire.Invalidate:
			if err := rc.invalidate(s, m); err != nil {
				return err
			}
		case *wire.Handover:
			if s.idx != 0 {
				return rc.fatal(s, wire.CodeProtocol, "handover on stream %d, only stream 0 carries it", s.idx)
			}
			rc.mu.Lock()
			rc.state = append([]byte(nil), m.State...)
			rc.handedOver = true
			rc.handoverAt = time.Now()
			rc.mu.Unlock()
		case *wire.Bye:
			return nil
		case *wire.Error:
			return fmt.Errorf("pre-copy stream %d: server: %s: %s", s.idx, m.Code, m.Message)
		default:
			return rc.fatal(s, wire.CodeProtocol, "%s on a pre-copy stream", m.Type())
		}
	}
}

// invalidate makes the listed pages missing: the workload wrote them after
// the last round.
func (rc *Receiver) invalidate(s *rstream, m *wire.Invalidate) error {
	if s.idx != 0 {
		return rc.fatal(s, wire.CodeProtocol, "invalidate on stream %d, only stream 0 carries it", s.idx)
	}
	rc.mu.Lock()
	mid := rc.ended != 0 || !rc.started.IsZero() || rc.handedOver
	rc.mu.Unlock()
	if mid {
		return rc.fatal(s, wire.CodeProtocol, "invalidate in the middle of a round or after the handover")
	}
	h, err := rc.handler(s, m.Region)
	if err != nil {
		return err
	}
	pages := make([]uint64, m.Len())
	for i := range pages {
		if pages[i] = m.Page(i); pages[i] >= h.Pages() {
			return rc.fatal(s, wire.CodeOutOfRange, "invalidate page %d outside region %d of %d pages", pages[i], m.Region, h.Pages())
		}
	}
	slices.Sort(pages)
	if err := h.Drop(pages); err != nil {
		return err
	}
	rc.mu.Lock()
	rc.invalidated += uint64(len(pages))
	rc.mu.Unlock()
	return nil
}

// Handover returns the workload state the source handed over at the switch
// (ok false if pre-copy ended without one), the pages the switch made
// missing, and when the handover arrived.
func (rc *Receiver) Handover() (state []byte, invalidated uint64, at time.Time, ok bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.state, rc.invalidated, rc.handoverAt, rc.handedOver
}

func (rc *Receiver) currentRound() uint32 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.started.IsZero() {
		rc.started = time.Now()
	}
	return rc.round
}

func (rc *Receiver) handler(s *rstream, id uint32) (*faulthandler.Handler, error) {
	h := rc.handlers[id]
	if h == nil {
		return nil, rc.fatal(s, wire.CodeUnknownRegion, "region %d is not migrating to this target", id)
	}
	return h, nil
}

// pages verifies and installs one run. A page whose data does not match
// its hash is a torn read (the workload wrote it while it was being sent):
// it is not installed, and is reported rejected at the end of the round.
func (rc *Receiver) pages(s *rstream, m *wire.Pages) error {
	if !m.Precopy() {
		return rc.fatal(s, wire.CodeProtocol, "Pages without the precopy flag on a pre-copy stream")
	}
	if r := rc.currentRound(); m.ReqID != uint64(r) {
		return rc.fatal(s, wire.CodeProtocol, "Pages of round %d during round %d", m.ReqID, r)
	}
	h, err := rc.handler(s, m.Region)
	if err != nil {
		return err
	}
	n := int(m.Count)
	if m.Page >= h.Pages() || uint64(n) > h.Pages()-m.Page {
		return rc.fatal(s, wire.CodeOutOfRange, "pages %d+%d outside region %d of %d pages", m.Page, n, m.Region, h.Pages())
	}
	s.pages += uint64(n)
	if m.Flags&wire.FlagZero != 0 {
		if err := h.PrecopyZero(m.Page, n); err != nil {
			return err
		}
		rc.mu.Lock()
		rc.cur.Zero += uint64(n)
		rc.mu.Unlock()
		return nil
	}
	ps := rc.pageSize
	var bad []uint64
	runStart := 0
	install := func(end int) error {
		if end > runStart {
			if err := h.PrecopyData(m.Page+uint64(runStart), m.Data[runStart*ps:end*ps]); err != nil {
				return err
			}
		}
		return nil
	}
	for i := range n {
		if xxh3.Hash(m.Data[i*ps:(i+1)*ps]) == m.Hash(i) {
			continue
		}
		if err := install(i); err != nil {
			return err
		}
		runStart = i + 1
		bad = append(bad, m.Page+uint64(i))
	}
	if err := install(n); err != nil {
		return err
	}
	rc.mu.Lock()
	rc.cur.Pages += uint64(n - len(bad))
	rc.cur.Bytes += uint64((n - len(bad)) * ps)
	for _, p := range bad {
		if rc.rejected == nil {
			rc.rejected = make(map[uint32][]uint64)
		}
		rc.rejected[m.Region] = append(rc.rejected[m.Region], p)
	}
	rc.mu.Unlock()
	return nil
}

// refs installs pages from references; one whose source does not match
// yet (data still coming on another stream) waits for the end of the round.
func (rc *Receiver) refs(s *rstream, m *wire.Refs) error {
	if r := rc.currentRound(); m.Round != r {
		return rc.fatal(s, wire.CodeProtocol, "Refs of round %d during round %d", m.Round, r)
	}
	h, err := rc.handler(s, m.Region)
	if err != nil {
		return err
	}
	entries := make([]wire.Ref, m.Len())
	for i := range entries {
		e := m.Entry(i)
		if e.Page >= h.Pages() {
			return rc.fatal(s, wire.CodeOutOfRange, "reference to page %d outside region %d of %d pages", e.Page, m.Region, h.Pages())
		}
		if e.SrcRegion != wire.BaseRegion {
			src := rc.handlers[e.SrcRegion]
			if src == nil || e.SrcPage >= src.Pages() {
				return rc.fatal(s, wire.CodeOutOfRange, "reference to page %d of region %d, which this target does not hold", e.SrcPage, e.SrcRegion)
			}
		} else if e.SrcPage >= uint64(len(rc.cfg.Base)/rc.pageSize) {
			return rc.fatal(s, wire.CodeOutOfRange, "reference to base page %d beyond the %d-page base snapshot", e.SrcPage, len(rc.cfg.Base)/rc.pageSize)
		}
		entries[i] = e
	}
	var later []pendingRef
	var done uint64
	// Consecutive pages whose sources are consecutive too (a copied block)
	// are verified page by page and installed with one copy.
	for i := 0; i < len(entries); {
		j := i + 1
		for j < len(entries) && entries[j].Page == entries[j-1].Page+1 &&
			entries[j].SrcRegion == entries[i].SrcRegion && entries[j].SrcPage == entries[j-1].SrcPage+1 {
			j++
		}
		run := entries[i:j]
		if run[0].SrcRegion == m.Region && overlaps(run[0].Page, run[0].SrcPage, uint64(len(run))) {
			run = entries[i : i+1]
		}
		n, failed, err := rc.resolveRun(h, run)
		if err != nil {
			return err
		}
		done += n
		for _, e := range failed {
			later = append(later, pendingRef{region: m.Region, ref: e})
		}
		i += len(run)
	}
	s.refs += uint64(m.Len())
	rc.mu.Lock()
	rc.cur.Refs += done
	rc.pending = append(rc.pending, later...)
	rc.mu.Unlock()
	return nil
}

// overlaps reports whether [a, a+n) and [b, b+n) intersect.
func overlaps(a, b, n uint64) bool { return a < b+n && b < a+n }

// resolveRun installs a run of references to consecutive source pages:
// the verified pages with one copy per stretch, returning the count and the
// references whose source does not (yet) match.
func (rc *Receiver) resolveRun(h *faulthandler.Handler, run []wire.Ref) (uint64, []wire.Ref, error) {
	ps := rc.pageSize
	first := run[0]
	var src []byte
	if first.SrcRegion == wire.BaseRegion {
		src = rc.cfg.Base[int(first.SrcPage)*ps : int(first.SrcPage+uint64(len(run)))*ps]
	} else if b, ok := rc.handlers[first.SrcRegion].PrecopyPages(first.SrcPage, len(run)); ok {
		src = b
	}
	if src == nil || (first.SrcRegion == h.RegionID() && first.SrcPage == first.Page) {
		// Some source page is not resident (or a page names itself): one by one.
		var done uint64
		var failed []wire.Ref
		for _, e := range run {
			ok, err := rc.resolve(h, e)
			if err != nil {
				return done, failed, err
			}
			if ok {
				done++
			} else {
				failed = append(failed, e)
			}
		}
		return done, failed, nil
	}
	var done uint64
	var failed []wire.Ref
	start := 0
	flush := func(end int) error {
		if end > start {
			if err := h.PrecopyData(run[start].Page, src[start*ps:end*ps]); err != nil {
				return err
			}
			done += uint64(end - start)
		}
		return nil
	}
	for i, e := range run {
		if xxh3.Hash(src[i*ps:(i+1)*ps]) == e.Check {
			continue
		}
		if err := flush(i); err != nil {
			return done, failed, err
		}
		failed = append(failed, e)
		start = i + 1
	}
	return done, failed, flush(len(run))
}

// resolve copies a reference's source page to its page if the source holds
// the content the reference names.
func (rc *Receiver) resolve(h *faulthandler.Handler, e wire.Ref) (bool, error) {
	var src []byte
	if e.SrcRegion == wire.BaseRegion {
		src = rc.cfg.Base[int(e.SrcPage)*rc.pageSize : int(e.SrcPage+1)*rc.pageSize]
	} else {
		var ok bool
		if src, ok = rc.handlers[e.SrcRegion].PrecopyPage(e.SrcPage); !ok {
			return false, nil
		}
	}
	if xxh3.Hash(src) != e.Check {
		return false, nil
	}
	if e.SrcRegion == h.RegionID() && e.SrcPage == e.Page {
		return true, nil
	}
	return true, h.PrecopyData(e.Page, src)
}

// roundEnd checks the stream's counts; the last stream to end the round
// resolves the references left, drops the rejected pages and acknowledges.
func (rc *Receiver) roundEnd(s *rstream, m *wire.RoundEnd) error {
	if r := rc.currentRound(); m.Round != r {
		return rc.fatal(s, wire.CodeProtocol, "RoundEnd of round %d during round %d", m.Round, r)
	}
	if m.Pages != s.pages || m.Refs != s.refs {
		return rc.fatal(s, wire.CodeProtocol, "round %d: the server sent %d pages and %d references on this stream, %d and %d arrived",
			m.Round, m.Pages, m.Refs, s.pages, s.refs)
	}
	s.pages, s.refs = 0, 0
	rc.mu.Lock()
	rc.ended++
	last := rc.ended == len(rc.streams)
	rc.mu.Unlock()
	if !last {
		return nil
	}
	return rc.acknowledge(m.Round)
}

func (rc *Receiver) acknowledge(round uint32) error {
	rc.mu.Lock()
	pending, rejected := rc.pending, rc.rejected
	rc.pending, rc.rejected = nil, nil
	rc.mu.Unlock()
	if rejected == nil {
		rejected = make(map[uint32][]uint64)
	}
	var refs uint64
	for _, pr := range pending {
		h := rc.handlers[pr.region]
		ok, err := rc.resolve(h, pr.ref)
		if err != nil {
			return err
		}
		if ok {
			refs++
			continue
		}
		rejected[pr.region] = append(rejected[pr.region], pr.ref.Page)
	}
	// A rejected page may hold an older round's content: make it missing,
	// so that the target never holds what the sender does not know of.
	var entries []byte
	var nrej uint64
	for id, pages := range rejected {
		slices.Sort(pages)
		pages = slices.Compact(pages)
		if err := rc.handlers[id].Drop(pages); err != nil {
			return fmt.Errorf("drop rejected pages: %w", err)
		}
		for _, p := range pages {
			entries = wire.AppendReject(entries, id, p)
		}
		nrej += uint64(len(pages))
	}
	rc.mu.Lock()
	rc.cur.Round = round
	rc.cur.Refs += refs
	rc.cur.Rejected = nrej
	rc.cur.Duration = time.Since(rc.started)
	rc.rounds = append(rc.rounds, rc.cur)
	rc.cur = ReceivedRound{}
	rc.ended = 0
	rc.started = time.Time{}
	rc.round++
	rc.mu.Unlock()

	s := rc.streams[0]
	rc.ackMu.Lock()
	defer rc.ackMu.Unlock()
	for {
		n := min(len(entries)/wire.RejectLen, wire.MaxRejected)
		a := &wire.RoundAck{Round: round, Rejected: entries[:n*wire.RejectLen], Last: n*wire.RejectLen == len(entries)}
		if err := s.w.WriteMessage(a); err != nil {
			return fmt.Errorf("acknowledge round %d: %w", round, err)
		}
		entries = entries[n*wire.RejectLen:]
		if a.Last {
			break
		}
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("acknowledge round %d: %w", round, err)
	}
	return nil
}
