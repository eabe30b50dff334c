// Dirty tracking: a Tracker reports which pages of one live, in-process
// region were written since the previous Collect, while other goroutines
// keep writing to it. Pre-copy sends those pages again in the next round.
//
// Three methods, best first: userfaultfd async write-protect read back with
// PAGEMAP_SCAN (wp-async, one system call per Collect), synchronous
// userfaultfd write-protect with a handler thread (wp-sync, which also
// yields the order of first writes), and rehashing every page (rehash, no
// kernel help). Locks: each tracker has one mutex, mu, serialising its
// methods; the wp-sync handler thread takes no lock (it owns its state and
// answers requests over a pipe).

package precopy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"runtime"
	"sync"

	"github.com/zeebo/xxh3"
	"golang.org/x/sys/unix"

	"github.com/pagewarp/pagewarp/internal/pagemap"
	"github.com/pagewarp/pagewarp/internal/uffd"
)

// TrackMode names a dirty-tracking method.
type TrackMode string

const (
	// TrackAuto picks the best the kernel offers: wp-async, else wp-sync,
	// else rehash.
	TrackAuto TrackMode = ""
	// TrackWPAsync is userfaultfd write-protect with UFFD_FEATURE_WP_ASYNC
	// and WP_UNPOPULATED: the kernel resolves write faults itself and marks
	// the page written; PAGEMAP_SCAN with PM_SCAN_WP_MATCHING|
	// PM_SCAN_CHECK_WPASYNC reports the PAGE_IS_WRITTEN pages and
	// re-protects them in one call (Linux >= 6.7).
	TrackWPAsync TrackMode = "wp-async"
	// TrackWPSync is synchronous userfaultfd write-protect: a handler thread
	// receives the first write of each page in a round, records its order,
	// un-protects the page and wakes the writer. Each first write costs a
	// fault round trip (about 20 µs). The handler runs without a P, so
	// neither GOMAXPROCS nor a GC stop-the-world can keep it from waking a
	// writer (see wpSyncTracker). Its sets take 2×8 bytes per page. A
	// kernel write into the region (a read(2) into it, say) waits for the
	// handler like any other, unless the process could only open a
	// UFFD_USER_MODE_ONLY descriptor: then it fails with EFAULT.
	TrackWPSync TrackMode = "wp-sync"
	// TrackRehash needs no kernel help: every page is hashed (xxh3-64) at
	// each Collect and the pages whose hash changed are reported. A page
	// written back to the content it had at the previous Collect is not
	// reported, which is right for migration: the target already has it.
	TrackRehash TrackMode = "rehash"
)

// ErrTrackerClosed is returned by the methods of a closed Tracker (except
// Close).
var ErrTrackerClosed = errors.New("precopy: tracker closed")

// errNotStarted is returned by Collect before Start.
var errNotStarted = errors.New("collect before start")

// Dirty is the result of one Collect.
type Dirty struct {
	Bits  []uint64 // one bit per page, page p is bit p%64 of Bits[p/64]; Collect resizes/clears it
	Count int      // pages set in Bits
	Order []uint64 // TrackWPSync only: the dirty pages in the order of their first write in the round (each once); nil otherwise
}

// Has reports whether page p is set.
func (d *Dirty) Has(p uint64) bool {
	w := p / 64
	return w < uint64(len(d.Bits)) && d.Bits[w]&(1<<(p%64)) != 0
}

// Add sets page p (and counts it if it was not set), growing Bits as needed.
// It is for callers that merge pages in; it does not touch Order.
func (d *Dirty) Add(p uint64) {
	w := p / 64
	if w >= uint64(len(d.Bits)) {
		d.Bits = append(d.Bits, make([]uint64, w+1-uint64(len(d.Bits)))...)
	}
	m := uint64(1) << (p % 64)
	if d.Bits[w]&m == 0 {
		d.Bits[w] |= m
		d.Count++
	}
}

// reset makes d an empty set of pages pages, reusing its storage. Order is
// the caller's to set.
func (d *Dirty) reset(pages int) {
	n := (pages + 63) / 64
	if cap(d.Bits) >= n {
		d.Bits = d.Bits[:n]
		clear(d.Bits)
	} else {
		d.Bits = make([]uint64, n)
	}
	d.Count = 0
}

// addRange sets pages [first, first+n), counting those that were not set.
// Bits must be large enough.
func (d *Dirty) addRange(first, n uint64) {
	for n > 0 {
		w, b := first/64, first%64
		k := min(64-b, n)
		m := ^uint64(0) >> (64 - k) << b
		d.Count += bits.OnesCount64(m &^ d.Bits[w])
		d.Bits[w] |= m
		first += k
		n -= k
	}
}

// Tracker reports the pages of one region written since the previous Collect.
//
// Start, Collect and Close may be called from different goroutines but are
// serialised; the region may be written by any number of goroutines (or the
// kernel on their behalf) at any time.
type Tracker interface {
	Mode() TrackMode
	// Start arms tracking; every write that completes after Start returns is
	// reported by a later Collect. Calling it again re-arms from scratch and
	// forgets the pages not collected yet.
	Start() error
	// Collect reports into d the pages written since Start or the previous
	// Collect and re-arms them. A write that lands after its page was
	// reported is reported by the next Collect (no write is ever lost; a page
	// may be reported by two Collects).
	Collect(d *Dirty) error
	// Close stops tracking and releases the kernel resources; the region
	// stays mapped and writable. Safe to call twice.
	Close() error
}

// kernelSupport is what this kernel offers for dirty tracking, probed once.
type kernelSupport struct {
	features   uint64 // UFFD_FEATURE_* bits, when uffdErr is nil
	uffdErr    error  // why no userfaultfd could be opened
	pagemapErr error  // why PAGEMAP_SCAN is unusable
}

var probeKernel = sync.OnceValue(func() kernelSupport {
	var k kernelSupport
	k.features, k.uffdErr = uffd.Probe()
	k.pagemapErr = pagemap.Probe()
	return k
})

const (
	// wpSyncFeatures: WP_UNPOPULATED makes a write to a never-touched page a
	// write-protect fault instead of a silent allocation.
	wpSyncFeatures  = uffd.FeaturePagefaultFlagWP | uffd.FeatureWPUnpopulated
	wpAsyncFeatures = wpSyncFeatures | uffd.FeatureWPAsync
)

// missing returns nil when the kernel supports mode, else an error saying
// exactly what is missing.
func (k kernelSupport) missing(mode TrackMode) error {
	need := uint64(0)
	switch mode {
	case TrackRehash:
		return nil
	case TrackWPSync:
		need = wpSyncFeatures
	case TrackWPAsync:
		need = wpAsyncFeatures
	default:
		return fmt.Errorf("unknown track mode %q (want %q, %q, %q or empty for the best available)", mode, TrackWPAsync, TrackWPSync, TrackRehash)
	}
	if k.uffdErr != nil {
		return fmt.Errorf("track mode %s needs userfaultfd: %w", mode, k.uffdErr)
	}
	if lack := need &^ k.features; lack != 0 {
		var names []string
		for _, f := range []struct {
			bit  uint64
			name string
		}{
			{uffd.FeaturePagefaultFlagWP, "UFFD_FEATURE_PAGEFAULT_FLAG_WP (Linux 5.7+, CONFIG_HAVE_ARCH_USERFAULTFD_WP)"},
			{uffd.FeatureWPUnpopulated, "UFFD_FEATURE_WP_UNPOPULATED (Linux 6.4+)"},
			{uffd.FeatureWPAsync, "UFFD_FEATURE_WP_ASYNC (Linux 6.7+)"},
		} {
			if lack&f.bit != 0 {
				names = append(names, f.name)
			}
		}
		return fmt.Errorf("track mode %s: kernel lacks userfaultfd features %v (has %#x)", mode, names, k.features)
	}
	if mode == TrackWPAsync && k.pagemapErr != nil {
		return fmt.Errorf("track mode %s: %w", mode, k.pagemapErr)
	}
	return nil
}

// AvailableModes returns the modes this kernel supports, best first.
func AvailableModes() []TrackMode {
	k := probeKernel()
	var modes []TrackMode
	for _, m := range []TrackMode{TrackWPAsync, TrackWPSync, TrackRehash} {
		if k.missing(m) == nil {
			modes = append(modes, m)
		}
	}
	return modes
}

// NewTracker tracks mem (page-aligned anonymous private memory, len a
// multiple of pageSize) with mode. TrackAuto picks the best available; an
// explicit mode the kernel lacks is an error saying exactly what is missing.
//
// pageSize is the tracking granularity: a power of two; for the
// userfaultfd modes a multiple of the system page size (a tracked page is
// dirty when any system page in it was written). Tracking starts at Start.
func NewTracker(mode TrackMode, mem []byte, pageSize int) (Tracker, error) {
	r, err := newTrackRegion(mem, pageSize)
	if err != nil {
		return nil, err
	}
	if mode == TrackAuto {
		mode = AvailableModes()[0]
	}
	if err := probeKernel().missing(mode); err != nil {
		return nil, err
	}
	if mode != TrackRehash && pageSize%os.Getpagesize() != 0 {
		return nil, fmt.Errorf("track mode %s: page size %d is not a multiple of the system page size %d", mode, pageSize, os.Getpagesize())
	}
	switch mode {
	case TrackWPAsync:
		return newWPAsyncTracker(r)
	case TrackWPSync:
		return newWPSyncTracker(r)
	default:
		return newRehashTracker(r), nil
	}
}

// trackRegion is the tracked memory.
type trackRegion struct {
	mem      []byte
	base     uintptr
	pageSize int
	pages    int
}

func newTrackRegion(mem []byte, pageSize int) (trackRegion, error) {
	if pageSize <= 0 || pageSize&(pageSize-1) != 0 {
		return trackRegion{}, fmt.Errorf("track: page size %d is not a power of two", pageSize)
	}
	if len(mem) == 0 || len(mem)%pageSize != 0 {
		return trackRegion{}, fmt.Errorf("track: region of %d bytes is not a positive multiple of the page size %d", len(mem), pageSize)
	}
	base := trackAddr(mem)
	if base%uintptr(pageSize) != 0 || base%uintptr(os.Getpagesize()) != 0 {
		return trackRegion{}, fmt.Errorf("track: region at %#x is not page aligned", base)
	}
	return trackRegion{mem: mem, base: base, pageSize: pageSize, pages: len(mem) / pageSize}, nil
}

func (r *trackRegion) length() uint64 { return uint64(len(r.mem)) }

// openWP opens a userfaultfd with features and registers the region for
// write-protect.
func (r *trackRegion) openWP(features uint64) (*uffd.FD, error) {
	u, err := uffd.Open(uffd.OpenOptions{Features: features})
	if err != nil {
		return nil, fmt.Errorf("track: %w", err)
	}
	ioctls, err := u.Register(r.base, r.length(), uffd.RegisterModeWP)
	if err != nil {
		u.Close()
		return nil, fmt.Errorf("track: %w", err)
	}
	if ioctls&uffd.IoctlBitWriteprotect == 0 {
		u.Close()
		return nil, fmt.Errorf("track: region %#x+%d does not allow UFFDIO_WRITEPROTECT (ioctls %#x): is it anonymous private memory?", r.base, len(r.mem), ioctls)
	}
	return u, nil
}

// closeWP un-protects the whole region (waking any writer blocked in a
// fault), unregisters it and closes u. The region is then plainly writable.
func (r *trackRegion) closeWP(u *uffd.FD) error {
	return errors.Join(
		u.WriteProtect(r.base, r.length(), false, false),
		u.Unregister(r.base, r.length()),
		u.Close(),
	)
}

// wpAsyncTracker is TrackWPAsync.
type wpAsyncTracker struct {
	trackRegion
	mu      sync.Mutex
	u       *uffd.FD
	pm      *pagemap.File
	vec     []pagemap.Region
	started bool
	closed  bool
}

func newWPAsyncTracker(r trackRegion) (*wpAsyncTracker, error) {
	u, err := r.openWP(wpAsyncFeatures)
	if err != nil {
		return nil, err
	}
	pm, err := pagemap.Open()
	if err != nil {
		r.closeWP(u)
		return nil, fmt.Errorf("track: %w", err)
	}
	// 1024 runs (24 KiB) per system call: a round with more dirty runs than
	// that loops, resuming at walk_end.
	return &wpAsyncTracker{trackRegion: r, u: u, pm: pm, vec: make([]pagemap.Region, min(r.pages, 1024))}, nil
}

func (t *wpAsyncTracker) Mode() TrackMode { return TrackWPAsync }

// Start write-protects the whole region; with WP_UNPOPULATED that arms
// never-touched pages too (the kernel installs markers in their empty page
// table entries).
func (t *wpAsyncTracker) Start() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrTrackerClosed
	}
	if err := t.u.WriteProtect(t.base, t.length(), true, false); err != nil {
		return fmt.Errorf("track start: %w", err)
	}
	t.started = true
	return nil
}

// Collect scans the region for PAGE_IS_WRITTEN pages and write-protects
// them in the same page-table walk, so that a write after the walk passed a
// page faults (and is resolved by the kernel) and shows in the next scan.
func (t *wpAsyncTracker) Collect(d *Dirty) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrTrackerClosed
	}
	if !t.started {
		return errNotStarted
	}
	d.reset(t.pages)
	d.Order = nil
	end := t.base + uintptr(len(t.mem))
	ps := uintptr(t.pageSize)
	for at := t.base; at < end; {
		regions, walkEnd, err := t.pm.Scan(at, end, pagemap.WPMatching|pagemap.CheckWPAsync,
			pagemap.PageIsWritten, 0, 0, pagemap.PageIsWritten, t.vec)
		if err != nil {
			return fmt.Errorf("track collect: %w", err)
		}
		for _, r := range regions {
			s, e := uintptr(r.Start), uintptr(r.End)
			if s < t.base || e > end || s >= e {
				return fmt.Errorf("track collect: kernel reported %#x-%#x outside %#x-%#x", s, e, t.base, end)
			}
			first := (s - t.base) / ps
			last := (e - t.base + ps - 1) / ps
			d.addRange(uint64(first), uint64(last-first))
		}
		if walkEnd <= at || walkEnd > end {
			return fmt.Errorf("track collect: scan from %#x stopped at %#x (end %#x)", at, walkEnd, end)
		}
		at = walkEnd
	}
	return nil
}

func (t *wpAsyncTracker) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	return errors.Join(t.closeWP(t.u), t.pm.Close())
}

// wpSyncTracker is TrackWPSync.
//
// # Why the handler runs without a P
//
// A goroutine blocked in a userfaultfd fault is, to the Go runtime, running:
// it keeps its P, and a stop-the-world (every GC cycle has two) waits until
// it reaches a safe point. When the fault is at an instruction the runtime
// cannot preempt asynchronously (inside runtime.memmove, say, or the race
// detector's atomics, or C code), the world stops only once the fault is
// resolved. A handler that is an ordinary goroutine needs a P to run after
// its epoll_wait returns, and no P is handed out while the world is being
// stopped: the GC waits for the writer, the writer for the handler, the
// handler for the GC. (This deadlock showed in TestTrackNoLostWrite under
// -race.) So the handler thread enters the runtime's syscall state once,
// with runtime.entersyscall, and serves faults and requests in nosplit code
// that only makes raw system calls (wpHandler.serve, track_unsafe.go) until
// Close: it needs no P and the GC never waits for it.
//
// # Why no write is lost
//
// The handler thread alone records pages, un-protects them and
// re-protects them, and it keeps this invariant: a page is write-protected,
// or it is in the current set (and so will be re-protected and reported by
// the next Collect). For a fault it records the page and un-protects it
// (which wakes the writer) as one step; for a Collect it re-protects every
// page of the current set and switches to the other, empty set as one step.
// Nothing can run in between because one thread does both, which is what a
// mutex held across record+unprotect and across reprotect+swap would give
// two threads. Were a page un-protected before being recorded, a write could
// complete and a Collect run before the page is recorded: a write done
// before Collect reported only by the next. Were the record and un-protect
// split by a Collect, the page would be reported and re-protected, then
// un-protected: writable and unrecorded for a whole round, its writes lost.
//
// Collect sends the handler a request over a pipe and waits for its answer
// on another; the set the handler left is then the caller's to read and
// clear until the next request, which makes the handler fill it again.
type wpSyncTracker struct {
	trackRegion
	u  *uffd.FD
	h  *wpHandler
	wg sync.WaitGroup
	// fds are the pipes and epoll descriptor the handler uses, closed by
	// Close once the handler is gone.
	fds []int

	mu      sync.Mutex // serialises Start, Collect and Close
	reqW    int        // write end of the request pipe
	doneR   int        // read end of the answer pipe (blocking)
	next    int        // the set the handler fills now
	started bool
	closed  bool
	err     error // the handler stopped; tracking is off
}

func newWPSyncTracker(r trackRegion) (*wpSyncTracker, error) {
	u, err := r.openWP(wpSyncFeatures)
	if err != nil {
		return nil, err
	}
	t := &wpSyncTracker{trackRegion: r, u: u}
	fail := func(err error) (*wpSyncTracker, error) {
		for _, fd := range t.fds {
			unix.Close(fd)
		}
		r.closeWP(u)
		return nil, fmt.Errorf("track: %w", err)
	}
	var req, done [2]int
	if err := unix.Pipe2(req[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return fail(fmt.Errorf("pipe2: %w", err))
	}
	t.fds = append(t.fds, req[0], req[1])
	if err := unix.Pipe2(done[:], unix.O_CLOEXEC); err != nil {
		return fail(fmt.Errorf("pipe2: %w", err))
	}
	t.fds = append(t.fds, done[0], done[1])
	// The request pipe's write end blocks: a request is never dropped.
	if err := unix.SetNonblock(req[1], false); err != nil {
		return fail(fmt.Errorf("pipe2: %w", err))
	}
	// Not internal/epoll: its Wait is a Go system call, which needs a P.
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fail(fmt.Errorf("epoll_create1: %w", err))
	}
	t.fds = append(t.fds, epfd)
	for _, fd := range []int{u.Int(), req[0]} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return fail(fmt.Errorf("epoll_ctl add %d: %w", fd, err))
		}
	}
	t.reqW, t.doneR = req[1], done[0]
	t.h = newWPHandler(r, u.Int(), epfd, req[0], done[1])
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.h.run()
	}()
	return t, nil
}

func (t *wpSyncTracker) Mode() TrackMode { return TrackWPSync }

// request asks the handler to do op and waits for its answer. A failed
// op is returned as its errno; a handler that stopped turns tracking off.
func (t *wpSyncTracker) request(op uint64) error {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], op)
	if err := writeFull(t.reqW, b[:]); err != nil {
		return fmt.Errorf("request to the handler: %w", err)
	}
	if err := readFull(t.doneR, b[:]); err != nil {
		return fmt.Errorf("answer from the handler: %w", err)
	}
	r := binary.NativeEndian.Uint64(b[:])
	errno := unix.Errno(r >> 8)
	switch r & 0xff {
	case wpDoneOK:
		return nil
	case wpDoneFailed:
		return errno
	case wpDoneStopped:
		t.err = fmt.Errorf("track: wp-sync handler stopped, tracking is off: %w", errno)
		return t.err
	default:
		return fmt.Errorf("answer from the handler: %#x", r)
	}
}

func (t *wpSyncTracker) Start() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closed:
		return ErrTrackerClosed
	case t.err != nil:
		return t.err
	}
	if err := t.request(wpReqStart); err != nil {
		if err == t.err {
			return err
		}
		return fmt.Errorf("track start: write-protect %#x+%d: %w", t.base, len(t.mem), err)
	}
	t.started = true
	return nil
}

// Collect has the handler re-protect the pages recorded this round and
// switch sets, then moves the set it left into d.
func (t *wpSyncTracker) Collect(d *Dirty) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closed:
		return ErrTrackerClosed
	case t.err != nil:
		return t.err
	case !t.started:
		return errNotStarted
	}
	if err := t.request(wpReqCollect); err != nil {
		// The pages re-protected so far stay recorded: the handler
		// un-protects them again when they fault, so nothing is lost, and
		// the next Collect re-protects them.
		if err == t.err {
			return err
		}
		return fmt.Errorf("track collect: re-protect: %w", err)
	}
	s := &t.h.sets[t.next]
	t.next ^= 1
	d.reset(t.pages)
	for i, w := range s.bits {
		if w != 0 {
			d.Bits[i] = w
			s.bits[i] = 0
		}
	}
	d.Count = s.n
	d.Order = append(d.Order[:0], s.order[:s.n]...)
	s.n = 0
	return nil
}

// Close un-protects the region first, so that writers blocked in faults
// proceed whatever the handler is doing, then unregisters it, stops the
// handler and closes the descriptors.
func (t *wpSyncTracker) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var err error
	if t.err == nil { // else the handler unregistered the region as it stopped
		err = errors.Join(
			t.u.WriteProtect(t.base, t.length(), false, false),
			t.u.Unregister(t.base, t.length()),
		)
	}
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], wpReqStop)
	if werr := writeFull(t.reqW, b[:]); werr != nil {
		// The handler cannot be told to stop; leave it waiting on
		// descriptors that stay open rather than hang here.
		return errors.Join(err, fmt.Errorf("track close: stop the handler: %w", werr))
	}
	t.wg.Wait()
	for _, fd := range t.fds {
		unix.Close(fd)
	}
	return errors.Join(err, t.u.Close())
}

// writeFull writes b to the blocking descriptor fd.
func writeFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// readFull fills b from the blocking descriptor fd.
func readFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		b = b[n:]
	}
	return nil
}

// nextSet returns the first page >= from whose bit is set, or a value >=
// the number of pages when there is none. It is nosplit for the wp-sync
// handler.
//
//go:nosplit
//go:norace
func nextSet(b []uint64, from int) int {
	w := from / 64
	if w >= len(b) {
		return len(b) * 64
	}
	if x := b[w] >> (from % 64); x != 0 {
		return from + bits.TrailingZeros64(x)
	}
	for w++; w < len(b); w++ {
		if b[w] != 0 {
			return w*64 + bits.TrailingZeros64(b[w])
		}
	}
	return len(b) * 64
}

// nextClear returns the first page in [from, limit) whose bit is clear, or
// limit. It is nosplit for the wp-sync handler.
//
//go:nosplit
//go:norace
func nextClear(b []uint64, from, limit int) int {
	for p := from; p < limit; {
		w := p / 64
		if x := ^b[w] >> (p % 64); x != 0 {
			return min(p+bits.TrailingZeros64(x), limit)
		}
		p = (w + 1) * 64
	}
	return limit
}

// rehashTracker is TrackRehash.
type rehashTracker struct {
	trackRegion
	mu      sync.Mutex
	sums    []uint64 // xxh3-64 of each page at the last Start or Collect
	started bool
	closed  bool
}

func newRehashTracker(r trackRegion) *rehashTracker {
	return &rehashTracker{trackRegion: r}
}

func (t *rehashTracker) Mode() TrackMode { return TrackRehash }

func (t *rehashTracker) Start() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrTrackerClosed
	}
	if t.sums == nil {
		t.sums = make([]uint64, t.pages)
	}
	t.rehash(nil)
	t.started = true
	return nil
}

// Collect rehashes every page. A write that lands while its page is being
// hashed may or may not be in the hash taken; if not, the page differs at
// the next Collect.
func (t *rehashTracker) Collect(d *Dirty) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrTrackerClosed
	}
	if !t.started {
		return errNotStarted
	}
	d.reset(t.pages)
	d.Order = nil
	t.rehash(d)
	return nil
}

// rehash hashes every page into sums, in parallel over GOMAXPROCS
// goroutines, and sets in d (when not nil) the pages whose hash changed.
// Each goroutine owns a run of whole 64-page words of d.Bits.
func (t *rehashTracker) rehash(d *Dirty) {
	words := (t.pages + 63) / 64
	workers := min(runtime.GOMAXPROCS(0), words)
	if t.pages < 4096 {
		workers = 1 // a few MiB: not worth the goroutines
	}
	counts := make([]int, workers)
	var wg sync.WaitGroup
	for i := range workers {
		first := words * i / workers * 64
		last := min(words*(i+1)/workers*64, t.pages)
		wg.Go(func() {
			n := 0
			for p := first; p < last; p++ {
				s := xxh3.Hash(t.mem[p*t.pageSize : (p+1)*t.pageSize])
				if s != t.sums[p] {
					t.sums[p] = s
					if d != nil {
						d.Bits[p/64] |= 1 << (p % 64)
						n++
					}
				}
			}
			counts[i] = n
		})
	}
	wg.Wait()
	if d != nil {
		for _, n := range counts {
			d.Count += n
		}
	}
}

func (t *rehashTracker) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	t.sums = nil
	return nil
}
