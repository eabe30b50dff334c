package precopy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pagewarp/pagewarp/wire"
)

// Region is one live region the Sender pre-copies.
type Region struct {
	ID uint32
	// Mem is the region: page-aligned, a whole number of pages. The
	// workload may write to it while rounds run.
	Mem []byte
	// Tracker tracks writes to Mem. The Sender calls Start at round 0 and
	// Collect at every later round; the caller closes it.
	Tracker Tracker
}

// SenderConfig configures a Sender. The zero value (plus PageSize) is the
// default: xxh3-128, filter and references on, 64-page frames.
type SenderConfig struct {
	PageSize int
	// Hash identifies page content for the filter and the content index.
	Hash HashAlg
	// NoFilter sends every dirty page even when its content equals what
	// the target holds (to measure what the filter saves).
	NoFilter bool
	// NoDedup sends duplicate and known pages as data instead of
	// references.
	NoDedup bool
	// FramePages bounds the pages of one data frame (default 64: 256 KiB,
	// large enough for one writev to stream, small enough to spread
	// over streams).
	FramePages int
	// HashWorkers is the number of goroutines hashing pages (default: the
	// CPUs this process may run on; each holds a thread while it hashes).
	HashWorkers int
	// WriteTimeout bounds each frame write (default 30s).
	WriteTimeout time.Duration
	// AckTimeout bounds the wait for the target's RoundAck after the last
	// frame of a round (default 60s).
	AckTimeout time.Duration
	Logger     *slog.Logger
}

func (c *SenderConfig) setDefaults() {
	if c.Hash == 0 {
		c.Hash = HashXXH3
	}
	if c.FramePages <= 0 {
		c.FramePages = 64
	}
	if c.FramePages > wire.MaxPagesPerRequest {
		c.FramePages = wire.MaxPagesPerRequest
	}
	if c.HashWorkers <= 0 {
		c.HashWorkers = min(runtime.NumCPU(), runtime.GOMAXPROCS(0))
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 60 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// ErrSenderClosed is returned by a Sender's methods after Close.
var ErrSenderClosed = errors.New("precopy: sender closed")

// holder names a page the target holds: a page of a migrated region, or of
// its base snapshot (region wire.BaseRegion).
type holder struct {
	region uint32
	page   uint64
}

// sregion is a Region with what the Sender knows of the target's copy.
type sregion struct {
	Region
	npages uint64
	// held[p] is the content sum of what the target holds at page p, valid
	// when heldOK has bit p.
	held   []Sum
	heldOK bitmap
	dirty  Dirty
	// done marks the pages classified in the current round.
	done bitmap
	// carry holds pages to send again next round (rejected by the target).
	carry []uint64
	order []uint64 // the write order of the last round (wp-sync)
	// byContent: the tracker is TrackRehash. Its own baseline is the
	// content at its last Collect, not what was sent (a page changed
	// after Collect, sent, and changed back would go unreported), so the
	// Sender does not use it: every round hashes every page and sends those
	// whose sum differs from what the target holds.
	byContent bool
}

// Sender runs pre-copy rounds of one or more live regions to one target
// over the target's pre-copy streams. It implements
// pageserver.PrecopyServer: give it to pageserver.Options.Precopy and the
// target's streams reach it through the page server's listener.
//
// Use: NewSender, then WaitReady (the target's streams have arrived and it
// has advertised its base snapshot), Round as often as the caller's policy
// says, then Finish. Round is not safe for concurrent use.
type Sender struct {
	cfg     SenderConfig
	regions []*sregion
	byID    map[uint32]*sregion
	index   contentIndex
	zeroSum Sum
	// pendingSkipped: see PendingSkipped.
	pendingSkipped uint64

	mu          sync.Mutex
	session     [wire.SessionLen]byte
	haveSession bool
	want        int // streams the target opens
	streams     []*stream
	baseKnown   uint64 // entries received in Known
	known       chan struct{}
	knownOnce   sync.Once
	ready       chan struct{}
	readyOnce   sync.Once
	failed      chan struct{}
	err         error
	closed      bool

	acks chan *wire.RoundAck

	round  uint32
	rounds []RoundStats
}

// stream is one pre-copy connection.
type stream struct {
	idx  int
	nc   net.Conn
	r    *wire.Reader
	w    *wire.Writer
	done chan struct{} // closed when ServePrecopy returns
}

// NewSender prepares pre-copy of regions. Every region's Mem must be a
// whole number of pages and its Tracker set.
func NewSender(regions []Region, cfg SenderConfig) (*Sender, error) {
	cfg.setDefaults()
	if !wire.ValidPageSize(cfg.PageSize) {
		return nil, fmt.Errorf("page size %d is not one the protocol allows", cfg.PageSize)
	}
	if cfg.Hash != HashXXH3 && cfg.Hash != HashSHA256 {
		return nil, fmt.Errorf("unknown content hash %d", cfg.Hash)
	}
	if len(regions) == 0 {
		return nil, errors.New("no regions to pre-copy")
	}
	s := &Sender{
		cfg:    cfg,
		byID:   make(map[uint32]*sregion),
		known:  make(chan struct{}),
		ready:  make(chan struct{}),
		failed: make(chan struct{}),
		acks:   make(chan *wire.RoundAck, 16),
	}
	s.zeroSum, _ = sumPage(cfg.Hash, make([]byte, cfg.PageSize))
	total := 0
	for _, r := range regions {
		total += len(r.Mem) / cfg.PageSize
	}
	s.index = newContentIndex(total)
	for _, r := range regions {
		if len(r.Mem) == 0 || len(r.Mem)%cfg.PageSize != 0 {
			return nil, fmt.Errorf("region %d: %d bytes is not a whole number of %d-byte pages", r.ID, len(r.Mem), cfg.PageSize)
		}
		if r.Tracker == nil {
			return nil, fmt.Errorf("region %d: no tracker", r.ID)
		}
		if r.ID == wire.BaseRegion {
			return nil, fmt.Errorf("region id %#x is reserved for the base snapshot", r.ID)
		}
		if _, dup := s.byID[r.ID]; dup {
			return nil, fmt.Errorf("region %d listed twice", r.ID)
		}
		n := uint64(len(r.Mem) / cfg.PageSize)
		sr := &sregion{Region: r, npages: n, held: make([]Sum, n), heldOK: newBitmap(n), done: newBitmap(n),
			byContent: r.Tracker.Mode() == TrackRehash}
		s.regions = append(s.regions, sr)
		s.byID[r.ID] = sr
	}
	return s, nil
}

// ServePrecopy implements pageserver.PrecopyServer: it adopts one of the
// target's pre-copy streams and reads what the target sends on it (Known
// and RoundAck on stream 0) until the stream ends.
func (s *Sender) ServePrecopy(hello *wire.Hello, nc net.Conn, r *wire.Reader, w *wire.Writer) error {
	st := &stream{idx: int(hello.Stream), nc: nc, r: r, w: w, done: make(chan struct{})}
	defer close(st.done)
	if err := s.attach(hello, st); err != nil {
		w.WriteMessage(&wire.Error{Code: wire.CodeProtocol, Message: err.Error()})
		w.Flush()
		return err
	}
	err := s.readLoop(st)
	if err != nil {
		s.fail(fmt.Errorf("pre-copy stream %d: %w", st.idx, err))
	}
	return err
}

func (s *Sender) attach(hello *wire.Hello, st *stream) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errors.New("pre-copy is over")
	case s.err != nil:
		return fmt.Errorf("pre-copy failed: %w", s.err)
	case !s.haveSession:
		s.session, s.haveSession = hello.Session, true
		s.want = int(hello.Streams)
		s.streams = make([]*stream, s.want)
	case hello.Session != s.session:
		return errors.New("pre-copy is already streaming to another session")
	case int(hello.Streams) != s.want:
		return fmt.Errorf("stream %d says %d streams, stream 0 said %d", hello.Stream, hello.Streams, s.want)
	}
	if int(hello.Stream) >= s.want || s.streams[hello.Stream] != nil {
		return fmt.Errorf("stream %d of %d is already attached", hello.Stream, s.want)
	}
	s.streams[hello.Stream] = st
	for _, x := range s.streams {
		if x == nil {
			return nil
		}
	}
	s.readyOnce.Do(func() { close(s.ready) })
	return nil
}

// readLoop reads the target's frames on one stream.
func (s *Sender) readLoop(st *stream) error {
	for {
		m, err := st.r.ReadMessage()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			return err
		}
		switch m := m.(type) {
		case *wire.Known:
			if st.idx != 0 {
				return protoErr(st, "Known on stream %d, only stream 0 carries it", st.idx)
			}
			if err := s.addKnown(m); err != nil {
				return protoErr(st, "%v", err)
			}
		case *wire.RoundAck:
			if st.idx != 0 {
				return protoErr(st, "RoundAck on stream %d, only stream 0 carries it", st.idx)
			}
			// The reader's buffer is reused by the next read: keep a copy.
			a := &wire.RoundAck{Round: m.Round, Last: m.Last, Rejected: append([]byte(nil), m.Rejected...)}
			select {
			case s.acks <- a:
			case <-s.failed:
				return nil
			}
		case *wire.Bye:
			return nil
		case *wire.Error:
			return fmt.Errorf("target: %s: %s", m.Code, m.Message)
		default:
			return protoErr(st, "%s on a pre-copy stream", m.Type())
		}
	}
}

func protoErr(st *stream, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	st.w.WriteMessage(&wire.Error{Code: wire.CodeProtocol, Message: msg})
	st.w.Flush()
	return errors.New(msg)
}

// addKnown adds the target's base-snapshot hashes to the content index.
func (s *Sender) addKnown(k *wire.Known) error {
	select {
	case <-s.known:
		return errors.New("Known after the one marked done")
	default:
	}
	if HashAlg(k.Algorithm) != s.cfg.Hash {
		return fmt.Errorf("base snapshot advertised with %s, this sender identifies content with %s", HashAlg(k.Algorithm), s.cfg.Hash)
	}
	s.mu.Lock()
	for i := range k.Len() {
		sum := sumFromWire(s.cfg.Hash, k.Hash(i))
		if sum == s.zeroSum {
			continue // zero pages travel as markers anyway
		}
		s.index.add(sum, holder{region: wire.BaseRegion, page: k.First + uint64(i)})
	}
	s.baseKnown += uint64(k.Len())
	s.mu.Unlock()
	if k.Done {
		s.knownOnce.Do(func() { close(s.known) })
	}
	return nil
}

// WaitReady blocks until every pre-copy stream of the target has arrived
// and the target has advertised its base snapshot.
func (s *Sender) WaitReady(ctx context.Context) error {
	for _, ch := range []chan struct{}{s.ready, s.known} {
		select {
		case <-ch:
		case <-s.failed:
			return s.failure()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Streams returns how many pre-copy streams the target opened (0 before
// the first arrived).
func (s *Sender) Streams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.want
}

// BaseKnown returns how many base-snapshot pages the target advertised.
func (s *Sender) BaseKnown() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.baseKnown
}

func (s *Sender) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Sender) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.closed {
		return
	}
	s.err = err
	close(s.failed)
	for _, st := range s.streams {
		if st != nil {
			st.nc.Close()
		}
	}
}

func (s *Sender) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	return ErrSenderClosed
}

// Rounds returns the statistics of every round so far.
func (s *Sender) Rounds() []RoundStats { return append([]RoundStats(nil), s.rounds...) }

// WriteOrder returns the pages of region id in the order of their first
// write during the last round (wp-sync tracking only; nil otherwise). It
// can warm a predictor.
func (s *Sender) WriteOrder(id uint32) []uint64 {
	if r := s.byID[id]; r != nil {
		return r.order
	}
	return nil
}

// Finish ends pre-copy: it sends Bye on every stream and closes them. The
// target then holds every page of the rounds so far; pages written since
// the last round are for the caller to invalidate (the switch).
func (s *Sender) Finish(reason string) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrSenderClosed
	}
	s.closed = true
	streams := s.streams
	err := s.err
	s.mu.Unlock()
	for _, st := range streams {
		if st == nil {
			continue
		}
		st.nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		if err == nil {
			st.w.WriteMessage(&wire.Bye{Reason: reason})
			st.w.Flush()
		}
		if cw, ok := st.nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
	for _, st := range streams {
		if st == nil {
			continue
		}
		select {
		case <-st.done:
		case <-time.After(s.cfg.WriteTimeout):
			st.nc.Close()
		}
	}
	return err
}

// Switch ends pre-copy at the switch: with the workload stopped and after
// the last Round, it sends the target the pages written since that round
// (invalidate, per region: the target makes them missing, and post-copy
// fetches them; Pending lists them) and the workload's state (at most
// wire.MaxHandoverState bytes, opaque here), then says goodbye on every
// stream (Finish). For a stop-and-copy, run a last Round with the workload
// stopped and switch with nothing to invalidate.
func (s *Sender) Switch(invalidate map[uint32][]uint64, state []byte) error {
	if len(state) > wire.MaxHandoverState {
		return fmt.Errorf("workload state of %d bytes exceeds %d", len(state), wire.MaxHandoverState)
	}
	s.mu.Lock()
	if s.closed || s.err != nil || len(s.streams) == 0 || s.streams[0] == nil {
		s.mu.Unlock()
		if err := s.failure(); err != ErrSenderClosed {
			return err
		}
		return ErrSenderClosed
	}
	st := s.streams[0]
	s.mu.Unlock()
	st.nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	var buf []byte
	for id, pages := range invalidate {
		if s.byID[id] == nil {
			return fmt.Errorf("invalidate region %d, which this sender does not pre-copy", id)
		}
		for len(pages) > 0 {
			n := min(len(pages), wire.MaxInvalidate)
			buf = buf[:0]
			for _, p := range pages[:n] {
				buf = appendLE64(buf, p)
			}
			if err := st.w.WriteMessage(&wire.Invalidate{Region: id, Pages: buf}); err != nil {
				s.fail(err)
				return err
			}
			pages = pages[n:]
		}
	}
	if err := st.w.WriteMessage(&wire.Handover{State: state}); err != nil {
		s.fail(err)
		return err
	}
	return s.Finish("switch")
}

// Close tears the streams down without a goodbye.
func (s *Sender) Close() error {
	s.mu.Lock()
	s.closed = true
	streams := s.streams
	s.mu.Unlock()
	for _, st := range streams {
		if st != nil {
			st.nc.Close()
		}
	}
	return nil
}

// Pending returns, per region, the pages written since the last round
// began that the target does not hold as they are now (collecting them
// re-arms tracking). This is what the switch to post-copy invalidates on
// the target. Call it once, after the last Round, with the workload
// stopped.
//
// Unless NoFilter is set, a written page whose content equals what the
// target holds (a silent store, or a page changed and changed back) is left
// out: with the workload stopped its content cannot change again, so the
// target's copy is current and post-copy need not fetch it. The hashing
// runs on HashWorkers threads during the downtime; PendingSkipped says how
// many pages it saved.
func (s *Sender) Pending() (map[uint32][]uint64, error) {
	if s.round == 0 {
		return nil, errors.New("no round has run: every page is pending")
	}
	out := make(map[uint32][]uint64, len(s.regions))
	s.pendingSkipped = 0
	for _, r := range s.regions {
		if r.byContent {
			// Every page whose content is not what the target holds.
			all := make([]uint64, r.npages)
			for p := range all {
				all[p] = uint64(p)
			}
			out[r.ID] = s.differing(r, all)
			continue
		}
		if err := r.Tracker.Collect(&r.dirty); err != nil {
			return nil, fmt.Errorf("region %d: collect: %w", r.ID, err)
		}
		// Carried pages were rejected: the target does not hold them (their
		// heldOK bit is clear, so the filter keeps them).
		for _, p := range r.carry {
			r.dirty.Add(p)
		}
		var pages []uint64
		forEachBit(r.dirty.Bits, r.npages, func(p uint64) { pages = append(pages, p) })
		if !s.cfg.NoFilter {
			n := len(pages)
			pages = s.differing(r, pages)
			s.pendingSkipped += uint64(n - len(pages))
		}
		out[r.ID] = pages
	}
	return out, nil
}

// PendingSkipped returns how many written pages the last Pending left out
// because the target already holds their content.
func (s *Sender) PendingSkipped() uint64 { return s.pendingSkipped }

// differing returns, in order, the pages of r among pages whose content sum
// differs from what the target holds (or that the target does not hold),
// hashing on HashWorkers goroutines.
func (s *Sender) differing(r *sregion, pages []uint64) []uint64 {
	keep := make([]bool, len(pages))
	ps := s.cfg.PageSize
	workers := max(1, min(s.cfg.HashWorkers, len(pages)/256))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(pages); i += workers {
				p := pages[i]
				if !r.heldOK.has(p) {
					keep[i] = true
					continue
				}
				pg := r.Mem[int(p)*ps : int(p+1)*ps]
				sum := s.zeroSum
				if !isZero(pg) {
					sum, _ = sumPage(s.cfg.Hash, pg)
				}
				keep[i] = sum != r.held[p]
			}
		}()
	}
	wg.Wait()
	out := pages[:0:0]
	for i, p := range pages {
		if keep[i] {
			out = append(out, p)
		}
	}
	return out
}

// ProbeStats is what Probe measured.
type ProbeStats struct {
	// Written counts the distinct pages written in the window, silent
	// stores included (what the trackers see).
	Written uint64 `json:"pages_written"`
	// Sampled and SampledChanged: of the sampled pages written in the
	// window, how many there were and how many changed content.
	Sampled        uint64 `json:"sampled_written"`
	SampledChanged uint64 `json:"sampled_changed"`
	// Window is the time tracking was armed.
	Window time.Duration `json:"window_ns"`
}

// Changed estimates how many of the written pages changed content:
// Written scaled by the changed share of the sampled written pages (all of
// them when too few were sampled to tell).
func (p ProbeStats) Changed() uint64 {
	if p.Sampled < probeMinSample {
		return p.Written
	}
	return uint64(float64(p.Written) * float64(p.SampledChanged) / float64(p.Sampled))
}

// probeSample is the most pages per region Probe hashes to tell silent
// stores from changes; probeMinSample the fewest written ones it trusts.
const (
	probeSample    = 4096
	probeMinSample = 32
)

// Probe measures the workload's write rate before round 0, sending
// nothing: it arms dirty tracking on every region, waits window, and
// counts the distinct pages written meanwhile. To tell real changes from
// silent stores without hashing the whole region, it hashes an evenly
// spread sample of up to 4096 pages per region before and after. A policy
// can then weigh pre-copy against an immediate switch before paying for
// the full first round. Call it after WaitReady and before the first
// Round; round 0 re-arms tracking from scratch.
func (s *Sender) Probe(ctx context.Context, window time.Duration) (ProbeStats, error) {
	var st ProbeStats
	if s.round != 0 {
		return st, errors.New("probe after round 0: the rounds measure the write rate")
	}
	if s.isClosed() {
		return st, ErrSenderClosed
	}
	ps := s.cfg.PageSize
	type sample struct {
		pages []uint64
		sums  []Sum
	}
	samples := make([]sample, len(s.regions))
	start := time.Now()
	for i, r := range s.regions {
		if err := r.Tracker.Start(); err != nil {
			return st, fmt.Errorf("region %d: probe: %w", r.ID, err)
		}
		// Hash after arming: a change made while hashing is then both
		// tracked and (at worst) hashed in its new state, counted silent.
		stride := max(1, r.npages/probeSample)
		for p := uint64(0); p < r.npages; p += stride {
			sum, _ := sumPage(s.cfg.Hash, r.Mem[int(p)*ps:int(p+1)*ps])
			samples[i].pages = append(samples[i].pages, p)
			samples[i].sums = append(samples[i].sums, sum)
		}
	}
	t := time.NewTimer(max(0, window-time.Since(start)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return st, ctx.Err()
	}
	var d Dirty
	for i, r := range s.regions {
		if err := r.Tracker.Collect(&d); err != nil {
			return st, fmt.Errorf("region %d: probe: %w", r.ID, err)
		}
		st.Written += uint64(d.Count)
		for k, p := range samples[i].pages {
			if d.Bits[p/64]&(1<<(p%64)) == 0 {
				continue
			}
			st.Sampled++
			if sum, _ := sumPage(s.cfg.Hash, r.Mem[int(p)*ps:int(p+1)*ps]); sum != samples[i].sums[k] {
				st.SampledChanged++
			}
		}
	}
	st.Window = time.Since(start)
	return st, nil
}

// batch is up to FramePages dirty pages of one region, carried through the
// pipeline: hashed by a worker, classified and encoded in order, written by
// one stream.
type batch struct {
	r      *sregion
	pages  []uint64
	sums   []Sum
	checks []uint64
	zero   []bool
	hashed chan struct{}

	frames []wire.Message
	hashes []byte // backing store of the Pages frames' hashes
	refs   []byte // backing store of the Refs frame's entries
	npages uint64 // pages carried in Pages frames
	nrefs  uint64
}

// Round runs one pre-copy round: round 0 sends every page (and arms the
// trackers), each later round the pages written since the previous one.
// It returns when the target has acknowledged the round: the target then
// holds every page the round sent, except those it rejected, which go
// again in the next round.
func (s *Sender) Round(ctx context.Context) (RoundStats, error) {
	select {
	case <-s.ready:
	default:
		return RoundStats{}, errors.New("pre-copy streams are not ready (call WaitReady)")
	}
	if s.isClosed() {
		return RoundStats{}, ErrSenderClosed
	}
	start := time.Now()
	st := RoundStats{Round: s.round, Streams: len(s.streams), Hash: s.cfg.Hash.String()}

	// Scan: which pages to look at.
	for _, r := range s.regions {
		t := time.Now()
		var err error
		if s.round == 0 || r.byContent {
			if !r.byContent {
				err = r.Tracker.Start()
			}
			r.dirty.Bits = resizeBits(r.dirty.Bits, r.npages)
			for i := range r.dirty.Bits {
				r.dirty.Bits[i] = ^uint64(0)
			}
			clearTail(r.dirty.Bits, r.npages)
			r.dirty.Count = int(r.npages)
			r.dirty.Order = nil
		} else {
			err = r.Tracker.Collect(&r.dirty)
		}
		st.TrackTime += time.Since(t)
		if err != nil {
			return st, fmt.Errorf("region %d: track: %w", r.ID, err)
		}
		r.order = r.dirty.Order
		for _, p := range r.carry {
			r.dirty.Add(p)
		}
		st.Carried += uint64(len(r.carry))
		r.carry = r.carry[:0]
		st.Dirty += uint64(r.dirty.Count)
		r.done.clear()
	}

	pctx, cancel := context.WithCancel(ctx) // the pipeline's
	defer cancel()
	work := make(chan *batch, 4*s.cfg.HashWorkers)
	ordered := make(chan *batch, 8*s.cfg.HashWorkers+8)
	var hashNanos atomic.Int64
	var wg sync.WaitGroup

	// Stage 1, scan: cut the dirty pages into batches.
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(work)
		defer close(ordered)
		for _, r := range s.regions {
			var b *batch
			emit := func() bool {
				select {
				case work <- b:
				case <-pctx.Done():
					return false
				}
				select {
				case ordered <- b:
				case <-pctx.Done():
					return false
				}
				b = nil
				return true
			}
			ok := true
			forEachBit(r.dirty.Bits, r.npages, func(p uint64) {
				if !ok {
					return
				}
				if b == nil {
					b = s.newBatch(r)
				}
				b.pages = append(b.pages, p)
				if len(b.pages) == s.cfg.FramePages {
					ok = emit()
				}
			})
			if ok && b != nil {
				ok = emit()
			}
			if !ok {
				return
			}
		}
	}()
	// Stage 2, hash: content sums, checks and zero tests, in parallel.
	for range s.cfg.HashWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The worker's own thread, so that its CPU clock counts the
			// hashing alone: wall time would count the time other
			// goroutines ran on a busy machine.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for b := range work {
				t := threadCPU()
				ps := s.cfg.PageSize
				for i, p := range b.pages {
					pg := b.r.Mem[int(p)*ps : int(p+1)*ps]
					if isZero(pg) {
						b.zero[i] = true
						b.sums[i] = s.zeroSum
						continue
					}
					b.sums[i], b.checks[i] = sumPage(s.cfg.Hash, pg)
				}
				hashNanos.Add(int64(threadCPU() - t))
				close(b.hashed)
			}
		}()
	}
	// Stage 4, send: one writer per stream.
	outs := make([]chan *batch, len(s.streams))
	counts := make([]streamCount, len(s.streams))
	werrs := make(chan error, len(s.streams))
	var swg sync.WaitGroup
	for i, strm := range s.streams {
		outs[i] = make(chan *batch, 4)
		swg.Add(1)
		go func() {
			defer swg.Done()
			werrs <- s.writeStream(strm, outs[i], &counts[i])
		}()
	}
	// Stage 3, classify and encode, in page order (the content index
	// depends on it), then deal the batches out to the streams.
	next := 0
	var cerr error
	for b := range ordered {
		select {
		case <-b.hashed:
		case <-pctx.Done():
		}
		if pctx.Err() != nil {
			cerr = pctx.Err()
			break
		}
		s.classify(b, &st)
		if len(b.frames) == 0 {
			continue
		}
		select {
		case outs[next] <- b:
		case <-pctx.Done():
		case <-s.failed:
			cancel()
		}
		if pctx.Err() != nil {
			cerr = pctx.Err()
			break
		}
		next = (next + 1) % len(outs)
	}
	for _, o := range outs {
		close(o)
	}
	cancel()
	for range ordered {
	}
	wg.Wait()
	swg.Wait()
	close(werrs)
	for err := range werrs {
		if err != nil && cerr == nil {
			cerr = err
		}
	}
	st.HashTime = time.Duration(hashNanos.Load())
	for _, c := range counts {
		st.Bytes += c.bytes
	}
	if cerr != nil {
		if f := s.failure(); f != ErrSenderClosed {
			cerr = f
		}
		s.fail(cerr)
		return st, cerr
	}
	// Wait for the target's acknowledgement.
	if err := s.awaitAck(ctx, &st); err != nil {
		s.fail(err)
		return st, err
	}
	st.Duration = time.Since(start)
	s.rounds = append(s.rounds, st)
	s.round++
	return st, nil
}

type streamCount struct {
	pages, refs, bytes uint64
}

func (s *Sender) newBatch(r *sregion) *batch {
	n := s.cfg.FramePages
	return &batch{
		r:      r,
		pages:  make([]uint64, 0, n),
		sums:   make([]Sum, n),
		checks: make([]uint64, n),
		zero:   make([]bool, n),
		hashed: make(chan struct{}),
	}
}

// classify decides, page by page, what the target needs, updates what the
// Sender believes the target will hold at the end of the round, and encodes
// the batch's frames.
//
// A page is skipped when the filter is on and its sum equals what the
// target holds (fake dirty); sent as a zero marker when zero; sent as a
// reference when the content index names another page that holds the same
// content at the end of the round; sent as data otherwise. A reference may
// only name a page that is not rewritten later in this round: one not dirty
// in this round, or one already classified in it (the target resolves a
// reference to data still on another stream at the end of the round).
func (s *Sender) classify(b *batch, st *RoundStats) {
	r := b.r
	ps := s.cfg.PageSize
	b.hashes = make([]byte, 0, len(b.pages)*wire.HashLen)
	var runStart, runLen int
	var runZero bool
	flush := func() {
		if runLen == 0 {
			return
		}
		first := b.pages[runStart]
		m := &wire.Pages{ReqID: uint64(s.round), Region: r.ID, Page: first, Count: uint32(runLen), Flags: wire.FlagPrecopy}
		if runZero {
			m.Flags |= wire.FlagZero
		} else {
			h0 := len(b.hashes)
			for i := runStart; i < runStart+runLen; i++ {
				b.hashes = appendLE64(b.hashes, b.checks[i])
			}
			m.Hashes = b.hashes[h0:]
			m.Data = r.Mem[int(first)*ps : int(first+uint64(runLen))*ps]
		}
		b.frames = append(b.frames, m)
		b.npages += uint64(runLen)
		runLen = 0
	}
	add := func(i int, zero bool) {
		if runLen > 0 && (runZero != zero || b.pages[i] != b.pages[runStart+runLen-1]+1) {
			flush()
		}
		if runLen == 0 {
			runStart, runZero = i, zero
		}
		runLen++
	}
	for i, p := range b.pages {
		sum := b.sums[i]
		old, had := r.held[p], r.heldOK.has(p)
		r.done.set(p)
		if had && sum == old && r.byContent {
			st.Dirty-- // not written: looked at only because rehash looks at every page
			flush()
			continue
		}
		if had && sum == old && !s.cfg.NoFilter {
			st.FakeDirty++
			flush()
			continue
		}
		// The target's page p changes from old to sum: p no longer holds old.
		if had {
			s.index.forget(old, holder{region: r.ID, page: p})
		}
		r.held[p] = sum
		r.heldOK.set(p)
		if b.zero[i] {
			st.Zero++
			add(i, true)
			continue
		}
		if h, ok := s.index.get(sum); ok && !s.cfg.NoDedup && s.refOK(h, r.ID, p) {
			flush()
			if b.refs == nil {
				b.refs = make([]byte, 0, len(b.pages)*wire.RefLen)
			}
			b.refs = wire.AppendRef(b.refs, wire.Ref{Page: p, SrcRegion: h.region, SrcPage: h.page, Check: b.checks[i]})
			b.nrefs++
			if h.region == wire.BaseRegion {
				st.Known++
			} else {
				st.Dup++
			}
			continue
		}
		s.index.put(sum, holder{region: r.ID, page: p})
		st.Sent++
		add(i, false)
	}
	flush()
	if len(b.refs) > 0 {
		b.frames = append(b.frames, &wire.Refs{Round: s.round, Region: r.ID, Entries: b.refs})
	}
}

// refOK reports whether holder h may be named by a reference from page p of
// region id: it must be another page, and hold its content at the end of
// the round.
func (s *Sender) refOK(h holder, id uint32, p uint64) bool {
	if h.region == wire.BaseRegion {
		return true
	}
	if h.region == id && h.page == p {
		return false
	}
	hr := s.byID[h.region]
	if hr == nil {
		return false
	}
	// Dirty in this round and not classified yet: it may change.
	return !hr.dirty.Has(h.page) || hr.done.has(h.page)
}

// writeStream writes the batches dealt to one stream, then the round's
// RoundEnd.
func (s *Sender) writeStream(st *stream, in <-chan *batch, c *streamCount) error {
	before := st.w.Written()
	var err error
	for b := range in {
		if err != nil {
			continue // drain
		}
		st.nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		for _, m := range b.frames {
			if err = st.w.WriteMessage(m); err != nil {
				break
			}
		}
		c.pages += b.npages
		c.refs += b.nrefs
	}
	if err == nil {
		st.nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		err = st.w.WriteMessage(&wire.RoundEnd{Round: s.round, Pages: c.pages, Refs: c.refs})
		if err == nil {
			err = st.w.Flush()
		}
	}
	c.bytes = st.w.Written() - before
	if err != nil {
		return fmt.Errorf("stream %d: %w", st.idx, err)
	}
	return nil
}

// awaitAck waits for the round's RoundAck frames and takes the rejected
// pages back: the target does not hold them, and they go again next round.
func (s *Sender) awaitAck(ctx context.Context, st *RoundStats) error {
	timer := time.NewTimer(s.cfg.AckTimeout)
	defer timer.Stop()
	for {
		select {
		case a := <-s.acks:
			if a.Round != s.round {
				return fmt.Errorf("target acknowledged round %d during round %d", a.Round, s.round)
			}
			for i := range a.Len() {
				id, p := a.Entry(i)
				r := s.byID[id]
				if r == nil || p >= r.npages {
					return fmt.Errorf("target rejected page %d of region %d, which this sender does not have", p, id)
				}
				if r.heldOK.has(p) {
					s.index.forget(r.held[p], holder{region: id, page: p})
					r.heldOK.unset(p)
				}
				r.carry = append(r.carry, p)
				st.Rejected++
			}
			if a.Last {
				return nil
			}
		case <-s.failed:
			return s.failure()
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return fmt.Errorf("no acknowledgement of round %d from the target within %v", s.round, s.cfg.AckTimeout)
		}
	}
}

// threadCPU returns the calling thread's CPU time.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

func appendLE64(b []byte, v uint64) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56))
}

// bitmap is a fixed-size set of pages.
type bitmap []uint64

func newBitmap(n uint64) bitmap    { return make(bitmap, (n+63)/64) }
func (b bitmap) has(p uint64) bool { return b[p/64]&(1<<(p%64)) != 0 }
func (b bitmap) set(p uint64)      { b[p/64] |= 1 << (p % 64) }
func (b bitmap) unset(p uint64)    { b[p/64] &^= 1 << (p % 64) }
func (b bitmap) clear()            { clear(b) }

// forEachBit calls f for every set bit below n, in ascending order.
func forEachBit(words []uint64, n uint64, f func(p uint64)) {
	for i, w := range words {
		for w != 0 {
			p := uint64(i)*64 + uint64(bits.TrailingZeros64(w))
			if p >= n {
				return
			}
			f(p)
			w &= w - 1
		}
	}
}

func resizeBits(b []uint64, n uint64) []uint64 {
	w := int((n + 63) / 64)
	if cap(b) < w {
		return make([]uint64, w)
	}
	return b[:w]
}

func clearTail(b []uint64, n uint64) {
	if n%64 != 0 && len(b) > 0 {
		b[len(b)-1] &= (1 << (n % 64)) - 1
	}
}
