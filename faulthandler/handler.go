package faulthandler

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pagewarp/pagewarp/internal/epoll"
	"github.com/pagewarp/pagewarp/internal/uffd"
)

// Page states. A page moves only forward, except that a background request
// may be upgraded to a demand request.
const (
	stateMissing    uint32 = iota
	stateDemand            // a demand request is in flight
	stateBackground        // a background request is in flight
	stateResident          // installed
	statePushed            // announced by the server's Push notice, on its way (or being installed from staging)
	stateStaged            // a pushed probe held back until touched (push.go)
)

var (
	// ErrClosed is returned by Wait after Close.
	ErrClosed = errors.New("faulthandler: closed")
	// ErrHashMismatch is wrapped by the error of a migration that received a
	// page whose content does not match its hash.
	ErrHashMismatch = errors.New("page hash mismatch")
)

// Options configure a Handler. The zero value is usable.
type Options struct {
	// AwaitSpin is how long the fault loop busy-polls for the reply to a
	// demand request it sent before it blocks in epoll (remote handlers
	// whose urgent connection the fault loop reads). A loop that blocks
	// lets its vCPU halt, and the reply must then wake it with an IPI: on a
	// 2-vCPU KVM guest that doubled the loopback fault latency. Once the
	// reply is installed the loop blocks again, leaving the CPU to the
	// thread it woke. Default 500µs; negative disables.
	AwaitSpin time.Duration
	// Spin is how long the fault loop busy-polls for the next fault after
	// handling a batch before it blocks in epoll. 0 (the default) or
	// negative: no spinning. Measured on a 2-vCPU KVM guest, blocking is the
	// better default: the kernel wakes the fault loop on the faulting
	// thread's CPU and both run there (p50 ~4 µs a fault), while a loop
	// spinning on the other vCPU must wake the faulting thread's halted vCPU
	// with an IPI (p50 4-60 µs, run to run). Spinning can pay off on hosts
	// whose idle vCPUs poll.
	Spin time.Duration
	// NoPull disables the background pull: pages arrive only on demand and
	// Wait returns only once the workload has touched every page. For
	// latency measurements.
	NoPull bool
	// PullChunk is the number of pages per background request (default 512,
	// at most 1024).
	PullChunk int
	// PullWindow is the number of background requests in flight on each
	// bulk connection (default 2).
	PullWindow int
	// BulkStreams is the number of bulk connections the pull uses, each with
	// its own receive loop installing pages (Dial; default 3). More streams
	// overlap more receiving, hashing and installing with the server's
	// sending; docs/benchmarks.md has the measurements behind the defaults.
	BulkStreams int
	// Region selects the region to migrate by id (remote handlers; default
	// the first region the server lists).
	Region *uint32
	// Verify makes Wait compare a digest of the whole region with the
	// source's after the last page is installed (remote handlers).
	Verify bool
	// IOTimeout bounds each write to the server and the handshake. Default 30s.
	IOTimeout time.Duration
	// Logger receives debug and error messages. Default: discard.
	Logger *slog.Logger
	// UserModeOnly opens the userfaultfd with UFFD_USER_MODE_ONLY even when
	// a full descriptor is allowed.
	UserModeOnly bool
	// NoPush declines the server's push of predicted pages (the push feature
	// is not offered in Hello).
	NoPush bool
	// ProbeEvery is how many pushed pages share one probe: a pushed page
	// held back until the workload touches it, so the target can report
	// to the server whether its predictions are used (push.go). Default 8;
	// 1 makes every pushed page a probe (exact reports, a local fault per
	// used page); negative: no probes, no reports.
	ProbeEvery int
	// ProbeExpiry is how many demand faults a probe waits to be touched
	// before it is installed and reported unused. Default 32.
	ProbeExpiry int
	// TLS, when set, makes Dial run a TLS 1.3 handshake on every connection
	// (urgent and bulk) before the protocol's: the server's certificate must
	// verify against RootCAs and name the dialled host (ServerName, by
	// default the host of addr), and the client presents Certificates for
	// the server to verify (see wire.ClientTLS). NewRemote takes
	// connections as they are and ignores it. With TLS the fault loop cannot
	// read the urgent connection's socket itself (the bytes are records to
	// decrypt): a receive loop goroutine reads it, as for net.Pipe.
	TLS *tls.Config
	// ResumeDeadline bounds how long a handler made by Dial tries to
	// reconnect after a connection to the server dropped during post-copy
	// (see Dial): faulting threads wait, blocked on their missing pages,
	// while it dials again with backoff (20 ms doubling to 1 s); past the
	// deadline the migration fails with ErrResumeDeadline and the number of
	// pages still missing, and the handler fails closed (see Close). The
	// deadline runs from the loss until a resumed link carries a frame: a
	// server that takes new connections and then stalls or drops them
	// before answering anything does not restart it.
	// Default 30s; negative: no resume, a dropped connection fails the
	// migration at once.
	ResumeDeadline time.Duration
	// StallTimeout bounds how long a connection of a handler made by Dial
	// or NewRemote may carry no frame while requests on it are unanswered
	// (demand requests and pushes on the urgent connection, the background
	// pull's requests on each bulk one): a connection that stops moving
	// without closing (a peer or middlebox that stopped forwarding, a
	// server waiting for bytes of a frame that will never come) is then
	// treated as lost, and the migration resumes as for a drop (see
	// ResumeDeadline; without resume it fails, wrapping ErrStalled).
	// Stats.Stalls counts them. A watchdog checks every connection at most
	// once a second (StallTimeout/8 when that is shorter); the fault path
	// only counts frames. Default 10s (DefaultStallTimeout); negative: no
	// stall detection.
	StallTimeout time.Duration
	// RecordFaults keeps the page of every demand fault in the order the
	// fault loop read them (FaultTrace): the first-touch sequence of the
	// pages the workload reached before the pull did. With NoPull it is
	// the complete first-touch order of the workload. 8 bytes a fault.
	RecordFaults bool
}

func (o *Options) setDefaults() {
	if o.AwaitSpin == 0 {
		o.AwaitSpin = 500 * time.Microsecond
	}
	if o.PullChunk <= 0 {
		o.PullChunk = 512
	}
	if o.PullChunk > 1024 {
		o.PullChunk = 1024
	}
	if o.PullWindow <= 0 {
		o.PullWindow = 2
	}
	if o.BulkStreams <= 0 {
		o.BulkStreams = 3
	}
	if o.IOTimeout <= 0 {
		o.IOTimeout = 30 * time.Second
	}
	if o.ResumeDeadline == 0 {
		o.ResumeDeadline = DefaultResumeDeadline
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if o.ProbeEvery == 0 {
		o.ProbeEvery = 8
	}
	if o.ProbeExpiry <= 0 {
		o.ProbeExpiry = 32
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// DefaultResumeDeadline is Options.ResumeDeadline's default.
const DefaultResumeDeadline = 30 * time.Second

// DefaultStallTimeout is Options.StallTimeout's default. It must never
// fire on a link that is healthy but slow, where frames keep arriving on
// every connection that waits for some. The longest healthy gap between
// two frames on one connection is one frame's transfer at the
// connection's share of the link: at most 64 pages (256 KiB) per frame,
// and on a 100 Mbit/s link shared by the urgent and 3 bulk connections,
// each with its pull window full, about 3 MB/s each: ~85 ms, however
// deep the socket buffers (queued bytes delay a reply but do not stop
// frames from arriving). A demand reply queued on the server waits for at
// most one 64-page chunk of background work. A lossy link adds TCP
// retransmission timeouts, doubling from 200 ms: five in a row are 6.2 s.
// 10 s is above all of these, over 100 times the frame gap of a full
// 100 Mbit/s link, while a stalled link costs the waiting threads 10 s
// and a reconnection instead of the whole migration.
const DefaultStallTimeout = 10 * time.Second

// fetcher is where pages come from: a remote server or a local source.
type fetcher interface {
	// demand asks for page (the fault loop has moved it to stateDemand). The
	// fault loop calls it for each fault of a batch, then flush once.
	demand(page uint64) error
	flush() error
	// maintain is called by the fault loop before it blocks: a remote
	// fetcher adopts a resumed connection there.
	maintain() error
	// pull runs the background pull until ctx ends or every page is
	// requested; it calls claim to pick pages.
	pull(ctx context.Context) error
	// start launches receive loops.
	start(ctx context.Context)
	// pollFD is a descriptor the fault loop watches besides the
	// userfaultfd (-1: none); readable is called when it is readable.
	pollFD() int
	readable() error
	// awaiting reports whether the fault loop has demand requests whose
	// replies it will read itself and that have not arrived yet.
	awaiting() bool
	// release frees what close left for after the fault loop stopped.
	release()
	// finish is called once every page is resident: verify, say goodbye.
	finish(ctx context.Context) error
	// close tears down connections; it must unblock every loop.
	close()
}

// Handler serves the faults of one migrated region.
type Handler struct {
	opts     Options
	mem      []byte
	base     uintptr
	pageSize int
	npages   uint64

	uffd  *uffd.FD
	poll  *epoll.Poller
	state []atomic.Uint32
	// demandStart[p] is the nanotime a demand request for p was sent, for
	// the service-time histogram.
	demandStart []atomic.Int64
	resident    atomic.Uint64
	// latestFault is the page of the most recent demand fault + 1 (0: none);
	// the pull restarts near it.
	latestFault atomic.Uint64

	fetch fetcher
	stage *staging // pushed probes; nil unless the server pushes and ProbeEvery > 0

	faultTrace []uint64 // demand faults in order (RecordFaults); fault loop only

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	err      error         // first failure
	failed   chan struct{} // closed on failure
	complete chan struct{} // closed when every page is resident
	finished chan struct{} // closed when the post-completion work is done
	loopDone chan struct{} // closed when the fault loop has returned
	closed   bool
	// unregistered is set once the region is no longer registered with
	// the userfaultfd (every page resident): only then may the
	// userfaultfd be closed.
	unregistered atomic.Bool
	// running is set by Start; until then markResident does not declare the
	// migration complete (pre-copy may still drop pages it installed).
	running      atomic.Bool
	completeOnce sync.Once

	started time.Time
	ended   atomic.Int64 // unix nanos when complete
	stats   counters
}

// newHandler maps the region and registers it; the caller sets fetch.
func newHandler(pageSize int, npages uint64, opts Options) (*Handler, error) {
	opts.setDefaults()
	if pageSize != os.Getpagesize() {
		return nil, fmt.Errorf("page size %d: this host maps %d-byte pages (huge pages are not supported yet)", pageSize, os.Getpagesize())
	}
	if npages == 0 {
		return nil, errors.New("empty region")
	}
	if npages > (1<<47)/uint64(pageSize) {
		return nil, fmt.Errorf("region of %d pages exceeds the address space", npages)
	}
	length := int(npages) * pageSize
	mem, err := unix.Mmap(-1, 0, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes: %w", length, err)
	}
	u, err := uffd.Open(uffd.OpenOptions{UserModeOnly: opts.UserModeOnly})
	if err != nil {
		unix.Munmap(mem)
		return nil, err
	}
	base := addrOf(mem)
	ioctls, err := u.Register(base, uint64(length), uffd.RegisterModeMissing)
	if err != nil {
		u.Close()
		unix.Munmap(mem)
		return nil, err
	}
	if want := uint64(uffd.IoctlBitCopy | uffd.IoctlBitZeropage | uffd.IoctlBitWake); ioctls&want != want {
		u.Close()
		unix.Munmap(mem)
		return nil, fmt.Errorf("registered range allows ioctls %#x, need COPY, ZEROPAGE and WAKE", ioctls)
	}
	h := &Handler{
		opts:        opts,
		mem:         mem,
		base:        base,
		pageSize:    pageSize,
		npages:      npages,
		uffd:        u,
		state:       make([]atomic.Uint32, npages),
		demandStart: make([]atomic.Int64, npages),
		failed:      make(chan struct{}),
		complete:    make(chan struct{}),
		finished:    make(chan struct{}),
		loopDone:    make(chan struct{}),
	}
	return h, nil
}

// Memory returns the migrated region. Touching a page that is not resident
// blocks the touching thread until the page arrives.
func (h *Handler) Memory() []byte { return h.mem }

// PageSize returns the page size in bytes.
func (h *Handler) PageSize() int { return h.pageSize }

// Pages returns the number of pages in the region.
func (h *Handler) Pages() uint64 { return h.npages }

// Resident returns the number of pages installed so far.
func (h *Handler) Resident() uint64 { return h.resident.Load() }

// discard undoes newHandler for a Handler that never started.
func (h *Handler) discard() {
	h.uffd.Close()
	unix.Munmap(h.mem)
	h.mem = nil
}

// Start launches the fault loop, the receive loops and the background pull.
// The workload may touch Memory() as soon as Start returns.
func (h *Handler) Start() {
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.started = time.Now()
	h.running.Store(true)
	if h.resident.Load() == h.npages {
		h.markComplete() // pre-copy installed every page
	}
	fds := []int{h.uffd.Int()}
	if fd := h.fetch.pollFD(); fd >= 0 {
		fds = append(fds, fd)
	}
	var err error
	if h.poll, err = epoll.New(fds...); err != nil {
		close(h.loopDone)
		h.fail(err)
		return
	}
	h.fetch.start(h.ctx)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer close(h.loopDone)
		if err := h.faultLoop(); err != nil {
			h.fail(err)
		}
	}()
	if !h.opts.NoPull {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			if err := h.fetch.pull(h.ctx); err != nil {
				h.fail(fmt.Errorf("background pull: %w", err))
			}
		}()
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		select {
		case <-h.complete:
		case <-h.ctx.Done():
			return
		}
		if err := h.completeMigration(); err != nil {
			h.fail(err)
			return
		}
		close(h.finished)
	}()
}

// completeMigration runs once every page is resident.
func (h *Handler) completeMigration() error {
	h.ended.Store(time.Now().UnixNano())
	if err := h.uffd.Unregister(h.base, uint64(len(h.mem))); err != nil {
		return err
	}
	h.unregistered.Store(true)
	h.poll.Close()
	<-h.loopDone // finish reads what the fault loop read until now
	// The digest may be asked for maxDigestAttempts times, each after a
	// resume; the goodbye that follows has its own IOTimeout.
	limit := h.opts.IOTimeout
	if h.opts.Verify {
		limit += maxDigestAttempts*h.digestPatience() + max(h.opts.ResumeDeadline, 0)
	}
	ctx, cancel := context.WithTimeout(h.ctx, limit)
	defer cancel()
	return h.fetch.finish(ctx)
}

// Wait blocks until the migration is complete (every page resident, the
// region unregistered, the connections closed cleanly and, with
// Options.Verify, the digest checked) or has failed, or ctx ends.
func (h *Handler) Wait(ctx context.Context) error {
	select {
	case <-h.finished:
		return nil
	case <-h.failed:
		return h.failure()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *Handler) failure() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// fail records the first failure. Faulting threads stay blocked: nothing is
// unregistered here.
func (h *Handler) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return
	}
	select {
	case <-h.finished:
		return // late errors from teardown after success
	default:
	}
	h.err = err
	close(h.failed)
	h.opts.Logger.Info("migration failed", "err", err)
}

// Close stops every loop and closes the connections.
//
// After a complete migration it closes the userfaultfd too; the region
// stays mapped with the source's content (Release unmaps it).
//
// Before completion (after a failure, or to abandon a migration) it fails
// closed: the userfaultfd stays open and the region registered, so a
// thread blocked on a missing page stays blocked, and so does any thread
// that touches a missing page later — none is ever woken to read a zero
// page. Such threads stay blocked until the process ends (see OnFailure
// and ExitOnFailure) or Release takes the region away.
func (h *Handler) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	if h.err == nil {
		select {
		case <-h.finished:
		default:
			h.err = ErrClosed
			close(h.failed)
		}
	}
	h.mu.Unlock()

	if h.cancel != nil {
		h.cancel()
	}
	if h.poll != nil {
		h.poll.Close()
	}
	h.fetch.close()
	h.wg.Wait()
	h.fetch.release()
	if h.poll != nil {
		h.poll.Release()
	}
	if !h.unregistered.Load() {
		// Fail closed: the userfaultfd is kept (closing it would wake the
		// waiting threads, which would then map zero pages).
		h.opts.Logger.Info("closed before every page arrived: the region stays registered, threads on missing pages stay blocked",
			"missing", h.npages-h.resident.Load())
		return nil
	}
	return h.uffd.Close()
}

// Release unmaps the region. Call it after Close when the memory is no
// longer needed.
//
// After a Close before completion, Release is the way to end the threads
// blocked on missing pages short of ending the process: it replaces the
// region with an inaccessible reservation of the same addresses
// (PROT_NONE; nothing else can be mapped there), then closes the
// userfaultfd, so every blocked thread, and every later touch of the
// region, gets SIGSEGV — never a zero page. The reservation is kept for
// the life of the process.
func (h *Handler) Release() error {
	if h.mem == nil {
		return nil
	}
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if !closed {
		return errors.New("faulthandler: Release before Close")
	}
	if !h.unregistered.Load() {
		if err := reserveInaccessible(h.mem); err != nil {
			return fmt.Errorf("replace the region with an inaccessible reservation: %w", err)
		}
		h.mem = nil
		return h.uffd.Close()
	}
	err := unix.Munmap(h.mem)
	h.mem = nil
	return err
}

// Failed returns a channel closed when the migration fails (or Close is
// called before it is complete); Err then says why.
func (h *Handler) Failed() <-chan struct{} { return h.failed }

// Err returns why the migration failed, or nil while it has not.
func (h *Handler) Err() error { return h.failure() }

// OnFailure calls f, once, on its own goroutine, with the failure's error
// if the migration fails before stop is called. A process whose workload
// touches the region uses it to end itself (ExitOnFailure): after a
// failure the threads on missing pages never return (see Close).
func (h *Handler) OnFailure(f func(error)) (stop func()) {
	done := make(chan struct{})
	var once sync.Once
	go func() {
		select {
		case <-h.failed:
			f(h.failure())
		case <-h.finished:
		case <-done:
		}
	}()
	return func() { once.Do(func() { close(done) }) }
}

// ExitOnFailure returns a function for OnFailure that writes the failure to
// w and ends the process with status code: the workload stops instead of
// waiting forever on pages that will not come.
func ExitOnFailure(w io.Writer, code int) func(error) {
	return func(err error) {
		fmt.Fprintf(w, "pagewarp: migration failed, stopping the process: %v\n", err)
		if f, ok := w.(interface{ Sync() error }); ok {
			f.Sync()
		}
		os.Exit(code)
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// faultLoop reads fault events and turns each into a demand fetch.
func (h *Handler) faultLoop() error {
	buf := make([]byte, uffd.MsgBufSize(64))
	msgs := make([]uffd.Msg, 0, 64)
	pageMask := ^uintptr(h.pageSize - 1)
	// pending says a read may find events: after a batch that did not fill
	// the buffer the loop goes straight to waiting, which saves a read that
	// would fail with EAGAIN on every fault.
	pending := true
	for {
		var err error
		if pending {
			msgs, err = h.uffd.ReadMsgs(msgs[:0], buf)
		} else {
			msgs, err = msgs[:0], unix.EAGAIN
		}
		pending = true
		if errors.Is(err, unix.EAGAIN) {
			if h.opts.AwaitSpin > 0 && h.fetch.awaiting() && h.spinFor(h.opts.AwaitSpin, true) {
				continue
			}
			if h.opts.Spin > 0 && h.spinFor(h.opts.Spin, false) {
				continue
			}
			if isClosed(h.complete) {
				return nil
			}
			if err := h.flushStagedIfLast(); err != nil {
				return err
			}
			if err := h.fetch.maintain(); err != nil {
				return err
			}
			ready, err := h.poll.Wait(-1)
			if err != nil {
				if errors.Is(err, epoll.ErrClosed) {
					return nil
				}
				return err
			}
			if ready&2 != 0 {
				if err := h.fetch.readable(); err != nil {
					return err
				}
			}
			continue
		}
		if err != nil {
			if h.ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read fault events: %w", err)
		}
		h.stats.faultEvents.Add(uint64(len(msgs)))
		h.stats.faultBatches.Add(1)
		requested := false
		for _, m := range msgs {
			if m.Event != uffd.EventPagefault {
				continue
			}
			addr := m.Address & pageMask
			if addr < h.base || addr >= h.base+uintptr(len(h.mem)) {
				h.opts.Logger.Warn("fault outside the region", "addr", fmt.Sprintf("%#x", m.Address))
				continue
			}
			page := uint64(addr-h.base) / uint64(h.pageSize)
			h.latestFault.Store(page + 1)
			if h.claimDemand(page) {
				if h.opts.RecordFaults {
					h.faultTrace = append(h.faultTrace, page)
				}
				h.demandStart[page].Store(nanotime())
				h.stats.demandRequests.Add(1)
				if err := h.fetch.demand(page); err != nil {
					return err
				}
				requested = true
			} else if ok, err := h.takeStaged(page); ok || err != nil {
				if err != nil {
					return err
				}
				requested = true // a report to send
			} else {
				h.stats.faultsCoalesced.Add(1)
			}
		}
		if h.stage != nil {
			if err := h.expireStaged(false); err != nil {
				return err
			}
		}
		if requested {
			if err := h.fetch.flush(); err != nil {
				return err
			}
		}
		pending = len(msgs) == cap(msgs)
	}
}

// flushStagedIfLast installs the staged probes once nothing else is
// missing, so that the migration completes.
func (h *Handler) flushStagedIfLast() error {
	st := h.stage
	if st == nil {
		return nil
	}
	n := uint64(st.n.Load())
	if n == 0 || h.resident.Load()+n != h.npages {
		return nil
	}
	return h.expireStaged(true)
}

// spinFor busy-polls the userfaultfd and the fetcher's descriptor for up
// to d, handling replies as they come. It reports whether a fault event
// is pending. With untilReplied it also stops once no reply is awaited.
func (h *Handler) spinFor(d time.Duration, untilReplied bool) bool {
	deadline := nanotime() + int64(d)
	pfd := []unix.PollFd{{Fd: int32(h.uffd.Int()), Events: unix.POLLIN}}
	if fd := h.fetch.pollFD(); fd >= 0 {
		pfd = append(pfd, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	for nanotime() < deadline {
		n, err := unix.Poll(pfd, 0)
		if err == nil && n > 0 {
			if len(pfd) > 1 && pfd[1].Revents != 0 {
				if err := h.fetch.readable(); err != nil {
					h.fail(err)
					return false
				}
			}
			if pfd[0].Revents != 0 {
				return true
			}
			if untilReplied && !h.fetch.awaiting() {
				return false
			}
			continue
		}
		if h.ctx.Err() != nil {
			return false
		}
		// Give the CPU to a thread woken here (the one whose page was just
		// installed) rather than make it wait for this loop's time slice.
		unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
	}
	return false
}

// claimDemand moves a page to stateDemand if it is missing or only
// requested in the background. It reports whether the caller must send a
// demand request.
func (h *Handler) claimDemand(page uint64) bool {
	s := &h.state[page]
	for {
		switch cur := s.Load(); cur {
		case stateMissing, stateBackground:
			if s.CompareAndSwap(cur, stateDemand) {
				return true
			}
		default:
			return false
		}
	}
}

// claimBackground moves a missing page to stateBackground.
func (h *Handler) claimBackground(page uint64) bool {
	return h.state[page].CompareAndSwap(stateMissing, stateBackground)
}

// nextMissingRun finds, from page from on (wrapping once), the first run of
// missing pages, claims up to max of them for the background and returns
// the run. ok is false when no page is missing.
func (h *Handler) nextMissingRun(from uint64, max int) (first uint64, count int, ok bool) {
	if from >= h.npages {
		from = 0
	}
	p := from
	for scanned := uint64(0); scanned < h.npages; scanned++ {
		if h.claimBackground(p) {
			first, count = p, 1
			for count < max && p+1 < h.npages && h.claimBackground(p+1) {
				p++
				count++
			}
			return first, count, true
		}
		p++
		if p == h.npages {
			p = 0
		}
	}
	return 0, 0, false
}

// installData installs count pages starting at page from data (count *
// pageSize bytes, already verified). Pages already present are skipped.
func (h *Handler) installData(page uint64, count int, data []byte, kind pageKind) error {
	return h.installDataMode(page, count, data, kind, false)
}

// installDataMode is installData; with dontWake the threads waiting on the
// pages are left asleep for a later Wake.
func (h *Handler) installDataMode(page uint64, count int, data []byte, kind pageKind, dontWake bool) error {
	mode := uint64(0)
	if dontWake {
		mode = uffd.CopyModeDontWake
	}
	return h.installRuns(page, count, kind, func(p uint64, n int) (int, error) {
		off := int(p-page) * h.pageSize
		return h.uffd.Copy(h.addr(p), data[off:off+n*h.pageSize], mode)
	})
}

// installZero installs count zero pages starting at page.
func (h *Handler) installZero(page uint64, count int, kind pageKind) error {
	return h.installZeroMode(page, count, kind, false)
}

func (h *Handler) installZeroMode(page uint64, count int, kind pageKind, dontWake bool) error {
	mode := uint64(0)
	if dontWake {
		mode = uffd.ZeropageModeDontWake
	}
	return h.installRuns(page, count, kind, func(p uint64, n int) (int, error) {
		return h.uffd.Zeropage(h.addr(p), uint64(n*h.pageSize), mode)
	})
}

// installRuns walks [page, page+count), installing each run of non-resident
// pages with one call of do. A page the kernel reports present (EEXIST; a
// racing install of the same page) is skipped.
func (h *Handler) installRuns(page uint64, count int, kind pageKind, do func(p uint64, n int) (int, error)) error {
	end := page + uint64(count)
	p := page
	for p < end {
		if s := h.state[p].Load(); s == stateResident || s == stateStaged {
			p++
			continue
		}
		q := p + 1
		for q < end {
			if s := h.state[q].Load(); s == stateResident || s == stateStaged {
				break
			}
			q++
		}
		n, err := do(p, int(q-p))
		installed := uint64(n / h.pageSize)
		h.markResident(p, installed, kind)
		p += installed
		switch {
		case err == nil:
		case errors.Is(err, unix.EEXIST):
			// Present already: installed by a racing reply. Its state is
			// resident or about to be; count nothing and move on.
			p++
		default:
			return fmt.Errorf("install page %d: %w", p, err)
		}
	}
	return nil
}

// markResident records n pages from p as installed.
func (h *Handler) markResident(p, n uint64, kind pageKind) {
	now := int64(0)
	var added uint64
	for i := p; i < p+n; i++ {
		old := h.state[i].Swap(stateResident)
		if old == stateResident {
			continue
		}
		added++
		if old == stateDemand {
			if t := h.demandStart[i].Load(); t != 0 {
				if now == 0 {
					now = nanotime()
				}
				h.stats.serviceTime.observe(time.Duration(now - t))
			}
		}
	}
	if added == 0 {
		return
	}
	h.stats.pages[kind].Add(added)
	r := h.resident.Add(added)
	if r == h.npages {
		if h.running.Load() {
			h.markComplete()
		}
		return
	}
	if st := h.stage; st != nil && r+uint64(st.n.Load()) == h.npages && h.poll != nil {
		h.poll.Wake() // only staged probes are left: the fault loop installs them
	}
}

// markComplete closes h.complete once.
func (h *Handler) markComplete() { h.completeOnce.Do(func() { close(h.complete) }) }

func (h *Handler) addr(page uint64) uintptr { return h.base + uintptr(page)*uintptr(h.pageSize) }

// FaultTrace returns the demand faults recorded with Options.RecordFaults,
// in order. Call it after Wait has returned (the fault loop has stopped).
func (h *Handler) FaultTrace() []uint64 {
	select {
	case <-h.loopDone:
		return h.faultTrace
	default:
		return nil
	}
}

// ReserveProcs raises GOMAXPROCS so that n goroutines blocked in faults on a
// migrated region still leave Ps for the fault loop and the receive loops.
// It returns the previous setting.
func ReserveProcs(n int) int {
	want := runtime.NumCPU() + n
	prev := runtime.GOMAXPROCS(0)
	if prev < want {
		runtime.GOMAXPROCS(want)
	}
	return prev
}
