// Mutators are the write side of the benchmarks: where a Workload reads a
// region, a Mutator writes into one from several goroutines while pre-copy
// runs, and can be paused at a step boundary and resumed on another copy of
// the region (live migration of the running program).
//
// Determinism. Thread t owns the contiguous share of the pages that share
// gives it and writes nothing else. Step k of thread t is a pure function of
// (Name, Seed, t, k) and of the current content of thread t's pages: its
// random numbers are the k-th output of a SplitMix64 generator seeded from
// (Name, Seed, t), computed directly from k (counter-based), so there is no
// generator state to save. Hence, from a region Init wrote, the memory once
// each thread t has done S_t steps depends only on (Name, Pages, Threads,
// Seed, S_0 … S_{Threads-1}): never on the interleaving, on Rate, or on
// where the run was paused and resumed.

package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeebo/xxh3"
)

// MutatorNames lists the mutators: "silent25", "silent50", "silent75",
// "phases", "zerodup", "dup8", "runaway". See NewMutator for what each does.
var MutatorNames = []string{"silent25", "silent50", "silent75", "phases", "zerodup", "dup8", "runaway"}

// ErrUnknownMutator is wrapped by NewMutator's error for a name that is not
// in MutatorNames.
var ErrUnknownMutator = errors.New("unknown mutator")

// MutatorConfig sets a mutator up. Pages and Threads are required.
type MutatorConfig struct {
	Name    string `json:"name"`
	Pages   int    `json:"pages"`   // region size in pages of PageSize bytes
	Threads int    `json:"threads"` // writing goroutines, at most Pages
	Seed    int64  `json:"seed"`
	// Rate is in steps per second per thread; 0 means as fast as it can.
	Rate float64 `json:"rate"`
	// Steps is the number of steps per thread (counted from step 0, not
	// from where a resumed run starts) after which a thread stops by itself;
	// 0 means until paused.
	Steps uint64 `json:"steps"`
}

// MutatorState is where a mutator's threads are: Steps[t] is the number of
// steps thread t has done since step 0. It is what Run needs to continue on
// another copy of the region.
type MutatorState struct {
	Steps []uint64 `json:"steps"`
}

// Tuning of the mutators. Each is part of a workload's definition: changing
// one changes the memory a given (config, state) produces.
const (
	// mutatorBatch is the number of steps between two checks for Pause and
	// two publications of the step counter; pacing sleeps per batch too
	// (fewer steps per batch at low rates, see pacedBatch).
	mutatorBatch = 64
	// maxPaceDebt is how far a paced thread may fall behind its schedule
	// (say, stalled on post-copy faults) before it forgets the debt instead
	// of catching up in a burst.
	maxPaceDebt = 100 * time.Millisecond

	// writeWords is the number of consecutive 8-byte words a silentX or
	// phases step reads and writes back (32 bytes, one cache line).
	writeWords = 4
	// phasesPeriod is the period, in steps of a thread, of phases' working
	// set: a triangle wave from phasesMinPct to phasesMaxPct of the thread's
	// pages and back.
	phasesPeriod = 1 << 18
	phasesMinPct = 5
	phasesMaxPct = 60
	// zerodupPatterns is the number of distinct non-zero pages zerodup
	// copies around.
	zerodupPatterns = 32
	// dup8Copies is K, the number of identical copies dup8's region holds.
	dup8Copies = 8
	// dup8WriteEvery: one step in dup8WriteEvery of dup8 writes; the others
	// read.
	dup8WriteEvery = 64

	splitmixGamma = 0x9e3779b97f4a7c15 // SplitMix64's increment, 2^64/φ

	// Domains of the hashes derived from a mutator's key, so that page
	// content, silent pages, patterns and thread seeds never share a stream.
	domainPage    = 0x70616765 // "page"
	domainSilent  = 0x73696c65 // "sile"
	domainPattern = 0x70617474 // "patt"
	domainLayout  = 0x6c61796f // "layo"
	domainThread  = 0x74687264 // "thrd"
)

// mutatorKind is the family of a mutator; the step loops switch on it.
type mutatorKind uint8

const (
	kindSilent mutatorKind = iota
	kindPhases
	kindZeroDup
	kindDup8
	kindRunaway
)

// Mutator writes into a region of Pages pages from Threads goroutines. Run
// starts it, Pause and Wait stop it; a Mutator runs on one region at a time.
// Its methods are safe for concurrent use.
type Mutator struct {
	cfg      MutatorConfig
	kind     mutatorKind
	pageSize int
	key      uint64 // seed and name mixed; every hash below derives from it
	// silentBelow: page p is silent (silentX) when its hash is below it;
	// 0 for the other mutators.
	silentBelow uint64
	patterns    []byte // zerodup: the zerodupPatterns pattern pages, back to back
	batch       uint64 // steps per batch, see pacedBatch
	threads     []mutatorThread

	mu   sync.Mutex    // guards cur and last
	cur  *mutatorRun   // the run Run started, until Pause or Wait ends it
	last *MutatorState // the state the latest run ended in, or started from
}

// mutatorThread is one writing goroutine: its share of the pages and its
// step counter. Only its goroutine writes steps and sink; the padding keeps
// them off the cache lines of its neighbours' fields.
type mutatorThread struct {
	seed  uint64 // SplitMix64 seed of its steps
	lo, n int    // its pages [lo, lo+n)
	steps atomic.Uint64
	// first and last are when the thread's first step of the current run
	// and its latest batch completed (unix nanoseconds; 0: not yet), for
	// measuring downtime: from the last step on the source to the first on
	// the target.
	first, last atomic.Int64
	// sink folds the words dup8's read steps load, so that the loads stay.
	sink uint64
	_    [64]byte
}

// mutatorRun is one Run, until its threads return.
type mutatorRun struct {
	stop   atomic.Bool   // checked by the threads between batches
	stopCh chan struct{} // closed with stop set: wakes paced threads
	live   atomic.Int32  // threads still running
	done   chan struct{} // closed once every thread returned and final is set
	final  MutatorState
}

// NewMutator checks cfg and sets the named mutator up. The mutators, each
// step picking one page of the thread (uniformly unless said otherwise) and
// writing to it:
//
//   - silent25, silent50, silent75: write-intensive with a share of silent
//     stores. X% (25, 50, 75) of the pages, chosen by a hash of (Seed, page),
//     are silent: a step on one reads 4 words and writes them back unchanged,
//     so the kernel sees the page dirty but its content does not change
//     ("fake dirty"). A step on any other page xors 4 words with non-zero
//     values drawn from the step's hash, so it always changes the page. As
//     pages are picked uniformly, X is the expected share of the written
//     pages (and of the writes) that are fake dirty: what a pre-copy hash
//     filter can skip. Init: random content.
//   - phases: a working set that grows and shrinks. Step k writes (as a
//     real silentX write) a page among the first w(k) pages of the thread's
//     share, w(k) going from 5% to 60% of the share and back, a triangle
//     wave of k with a period of 2^18 steps. The tail 40% of each share is
//     never written. Init: random content.
//   - zerodup: many zero and duplicate pages. Init makes about 40% zero
//     pages, 30% copies of 32 distinct random pattern pages and 30% unique
//     random pages (by a hash of (Seed, page)). A step overwrites a whole
//     page: with zeros (30% of steps), with one of the 32 patterns (30%) or
//     with new unique random content (40%).
//   - dup8: K = 8 identical copies of some content: Init writes Pages/8
//     random pages and repeats that block 8 times (page p holds the content
//     of page p mod Pages/8; Pages must be a multiple of 8). Writes are
//     rare: one step in 64 xors one word of its page with a non-zero value;
//     the other steps only read one word. It is meant for round 0.
//   - runaway: a dirty rate far above any link. Each step stores 8 random
//     bytes into a random word of a random page of the thread; run it
//     unpaced (Rate 0) to show plain pre-copy not converging.
//
// The page size is os.Getpagesize(); Pages*PageSize bytes must fit an int.
func NewMutator(cfg MutatorConfig) (*Mutator, error) {
	m := &Mutator{cfg: cfg, pageSize: os.Getpagesize()}
	switch cfg.Name {
	case "silent25":
		m.kind, m.silentBelow = kindSilent, 25*(math.MaxUint64/100)
	case "silent50":
		m.kind, m.silentBelow = kindSilent, 50*(math.MaxUint64/100)
	case "silent75":
		m.kind, m.silentBelow = kindSilent, 75*(math.MaxUint64/100)
	case "phases":
		m.kind = kindPhases
	case "zerodup":
		m.kind = kindZeroDup
	case "dup8":
		m.kind = kindDup8
	case "runaway":
		m.kind = kindRunaway
	default:
		return nil, fmt.Errorf("mutator %q: %w (want one of %s)", cfg.Name, ErrUnknownMutator, strings.Join(MutatorNames, ", "))
	}
	switch {
	case cfg.Pages < 1:
		return nil, fmt.Errorf("mutator %s: %d pages: want at least 1", cfg.Name, cfg.Pages)
	case cfg.Pages > math.MaxUint32 || cfg.Pages > math.MaxInt/m.pageSize:
		return nil, fmt.Errorf("mutator %s: %d pages: too large", cfg.Name, cfg.Pages)
	case cfg.Threads < 1 || cfg.Threads > cfg.Pages:
		return nil, fmt.Errorf("mutator %s: %d threads: want 1 to %d (one page per thread at least)", cfg.Name, cfg.Threads, cfg.Pages)
	case cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0):
		return nil, fmt.Errorf("mutator %s: rate %v: want a finite rate >= 0", cfg.Name, cfg.Rate)
	case m.kind == kindDup8 && cfg.Pages%dup8Copies != 0:
		return nil, fmt.Errorf("mutator %s: %d pages: want a multiple of %d", cfg.Name, cfg.Pages, dup8Copies)
	}
	m.key = mix(uint64(cfg.Seed) + splitmixGamma*nameStream("mutator "+cfg.Name))
	m.batch = pacedBatch(cfg.Rate)
	m.threads = make([]mutatorThread, cfg.Threads)
	for t := range m.threads {
		lo, hi := share(uint64(cfg.Pages), t, cfg.Threads)
		th := &m.threads[t]
		th.seed, th.lo, th.n = m.hash(domainThread, uint64(t)), int(lo), int(hi-lo)
	}
	if m.kind == kindZeroDup {
		m.patterns = make([]byte, zerodupPatterns*m.pageSize)
		for j := range zerodupPatterns {
			fillRandom(m.patterns[j*m.pageSize:(j+1)*m.pageSize], m.hash(domainPattern, uint64(j)))
		}
	}
	return m, nil
}

// pacedBatch returns the steps per batch at rate steps per second: a batch
// spans about a millisecond when paced (a sleep per batch, not per step),
// and mutatorBatch steps unpaced.
func pacedBatch(rate float64) uint64 {
	if rate == 0 {
		return mutatorBatch
	}
	return uint64(min(max(rate/1000, 1), mutatorBatch))
}

// Config returns the mutator's configuration.
func (m *Mutator) Config() MutatorConfig { return m.cfg }

// PageSize returns the size of a page of the region in bytes,
// os.Getpagesize().
func (m *Mutator) PageSize() int { return m.pageSize }

// hash returns the value of i in one domain of the mutator's hashes.
func (m *Mutator) hash(domain, i uint64) uint64 {
	return mix(m.key ^ mix(domain+splitmixGamma*(i+1)))
}

// stepHash returns the random number of step k of the thread with seed
// seed: the k-th output of a SplitMix64 generator seeded with seed.
func stepHash(seed, k uint64) uint64 { return mix(seed + splitmixGamma*(k+1)) }

// pickN maps the low 32 bits of x to [0, n) (Lemire's multiply-shift; n <
// 2^32).
func pickN(x uint64, n int) int { return int((x & math.MaxUint32) * uint64(n) >> 32) }

// page returns the page a uniform step with hash h writes: one of the
// thread's pages, from the high half of h.
func (th *mutatorThread) page(h uint64) int { return th.lo + pickN(h>>32, th.n) }

// isSilent reports whether page p is a silent page (silentX only).
func (m *Mutator) isSilent(p int) bool { return m.hash(domainSilent, uint64(p)) < m.silentBelow }

// phasesWindow returns w(k), the size of phases' working set at step k in
// a share of n pages: from 5% of n (k = 0) up to 60% (k = period/2) and
// back down, linearly; at least 1.
func phasesWindow(n int, k uint64) int {
	pos := 2 * (k % phasesPeriod) // in [0, 2*phasesPeriod)
	tri := pos                    // phasesPeriod - |pos - phasesPeriod|, in [0, phasesPeriod]
	if pos > phasesPeriod {
		tri = 2*phasesPeriod - pos
	}
	w := uint64(n) * (phasesMinPct*phasesPeriod + (phasesMaxPct-phasesMinPct)*tri) / (100 * phasesPeriod)
	return max(int(w), 1)
}

// fillRandom fills page (a multiple of 8 bytes) with the SplitMix64
// stream of seed.
func fillRandom(page []byte, seed uint64) {
	for i := 0; i+8 <= len(page); i += 8 {
		seed += splitmixGamma
		binary.LittleEndian.PutUint64(page[i:], mix(seed))
	}
}

// Init writes the initial content of the region into mem, deterministically
// from (Name, Pages, Seed) (Threads plays no part), using all cores.
// len(mem) must be Pages*PageSize(); Init panics otherwise.
func (m *Mutator) Init(mem []byte) {
	m.checkLen(mem)
	workers := min(runtime.NumCPU(), m.cfg.Pages)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			lo, hi := share(uint64(m.cfg.Pages), w, workers)
			for p := int(lo); p < int(hi); p++ {
				m.initPage(mem[p*m.pageSize:(p+1)*m.pageSize], p)
			}
		})
	}
	wg.Wait()
}

// initPage writes page p's initial content into dst.
func (m *Mutator) initPage(dst []byte, p int) {
	switch m.kind {
	case kindZeroDup:
		h := m.hash(domainLayout, uint64(p))
		switch c := pickN(h, 100); {
		case c < 40:
			clear(dst)
		case c < 70:
			j := pickN(h>>32, zerodupPatterns)
			copy(dst, m.patterns[j*m.pageSize:(j+1)*m.pageSize])
		default:
			fillRandom(dst, m.hash(domainPage, uint64(p)))
		}
	case kindDup8:
		fillRandom(dst, m.hash(domainPage, uint64(p%(m.cfg.Pages/dup8Copies))))
	default:
		fillRandom(dst, m.hash(domainPage, uint64(p)))
	}
}

func (m *Mutator) checkLen(mem []byte) {
	if len(mem) != m.cfg.Pages*m.pageSize {
		panic(fmt.Sprintf("bench: mutator %s: a region of %d bytes, want %d pages of %d", m.cfg.Name, len(mem), m.cfg.Pages, m.pageSize))
	}
}

// Run starts the threads writing into mem from state from (nil: from step
// 0, on a region Init wrote) and returns at once. mem must hold the content
// the run that produced from left, byte for byte (a copy will do: the
// region of another process); len(mem) must be Pages*PageSize() and from
// must have Threads entries. Run panics if they do not, or if the mutator
// is running (Pause or Wait ends a run). The caller must leave a P for each
// thread (faulthandler.ReserveProcs).
func (m *Mutator) Run(mem []byte, from *MutatorState) {
	m.checkLen(mem)
	if from != nil && len(from.Steps) != m.cfg.Threads {
		panic(fmt.Sprintf("bench: mutator %s: a state of %d threads, want %d", m.cfg.Name, len(from.Steps), m.cfg.Threads))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur != nil {
		select {
		case <-m.cur.done: // finished its steps; nobody waited for it
		default:
			panic(fmt.Sprintf("bench: mutator %s: Run while running", m.cfg.Name))
		}
	}
	r := &mutatorRun{stopCh: make(chan struct{}), done: make(chan struct{})}
	start := MutatorState{Steps: make([]uint64, m.cfg.Threads)}
	if from != nil {
		copy(start.Steps, from.Steps)
	}
	m.cur, m.last = r, &start
	for t := range m.threads {
		m.threads[t].steps.Store(start.Steps[t])
		m.threads[t].first.Store(0)
		m.threads[t].last.Store(0)
	}
	r.live.Store(int32(len(m.threads)))
	for t := range m.threads {
		go m.runThread(r, mem, &m.threads[t], start.Steps[t])
	}
}

// Pause stops every thread at a step boundary, waits for them and returns
// the state Run needs to continue on another copy of the region. It returns
// within a batch of steps (tens of microseconds), or at once from a paced
// sleep, unless a thread is blocked in a page fault. Pause on a stopped
// mutator returns the state it stopped in (zeros before any Run).
func (m *Mutator) Pause() MutatorState {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.cur; r != nil {
		r.stop.Store(true)
		close(r.stopCh)
		<-r.done
		m.cur, m.last = nil, &r.final
	}
	return m.lastState()
}

// Wait blocks until every thread has done its Steps and returns the final
// state. With Steps = 0 the threads never finish by themselves: Wait then
// returns when another goroutine pauses the mutator. Wait on a stopped
// mutator returns the state it stopped in.
func (m *Mutator) Wait() MutatorState {
	m.mu.Lock()
	r := m.cur
	if r == nil {
		defer m.mu.Unlock()
		return m.lastState()
	}
	m.mu.Unlock()
	<-r.done
	m.mu.Lock()
	if m.cur == r {
		m.cur, m.last = nil, &r.final
	}
	m.mu.Unlock()
	return MutatorState{Steps: slices.Clone(r.final.Steps)}
}

// lastState returns a copy of m.last, or zeros; m.mu must be held.
func (m *Mutator) lastState() MutatorState {
	if m.last == nil {
		return MutatorState{Steps: make([]uint64, m.cfg.Threads)}
	}
	return MutatorState{Steps: slices.Clone(m.last.Steps)}
}

// state reads the threads' step counters.
func (m *Mutator) state() MutatorState {
	st := MutatorState{Steps: make([]uint64, len(m.threads))}
	for t := range m.threads {
		st.Steps[t] = m.threads[t].steps.Load()
	}
	return st
}

// FirstStep returns when the first step of the latest Run completed (the
// earliest over the threads), or the zero time if none has.
func (m *Mutator) FirstStep() time.Time {
	var first int64
	for t := range m.threads {
		if f := m.threads[t].first.Load(); f != 0 && (first == 0 || f < first) {
			first = f
		}
	}
	if first == 0 {
		return time.Time{}
	}
	return time.Unix(0, first)
}

// LastStep returns when the latest step of the latest Run completed (the
// latest over the threads, to a batch of steps), or the zero time.
func (m *Mutator) LastStep() time.Time {
	var last int64
	for t := range m.threads {
		last = max(last, m.threads[t].last.Load())
	}
	if last == 0 {
		return time.Time{}
	}
	return time.Unix(0, last)
}

// Progress returns the total number of steps done by all threads since
// step 0 (a resumed run counts the steps of the state it started from). The
// threads publish their counts once per batch, so while running it lags by
// up to a batch per thread. It is a few atomic loads, safe at any time.
func (m *Mutator) Progress() uint64 {
	var n uint64
	for t := range m.threads {
		n += m.threads[t].steps.Load()
	}
	return n
}

// runThread runs thread th from step k until Steps, or until r stops.
// The last thread to return records the final state and closes r.done.
func (m *Mutator) runThread(r *mutatorRun, mem []byte, th *mutatorThread, k uint64) {
	defer func() {
		if r.live.Add(-1) == 0 {
			r.final = m.state()
			close(r.done)
		}
	}()
	limit := m.cfg.Steps
	if limit == 0 {
		limit = math.MaxUint64
	}
	var (
		timer *time.Timer
		start time.Time
		k0    = k
	)
	if m.cfg.Rate > 0 {
		timer = time.NewTimer(time.Hour)
		timer.Stop()
		defer timer.Stop()
		start = time.Now()
	}
	if k < limit && !r.stop.Load() {
		// The first step alone, to time it (see FirstStep).
		m.steps(mem, th, k, k+1)
		k++
		th.steps.Store(k)
		now := time.Now().UnixNano()
		th.first.Store(now)
		th.last.Store(now)
	}
	for k < limit && !r.stop.Load() {
		end := k + min(m.batch, limit-k)
		m.steps(mem, th, k, end)
		k = end
		th.steps.Store(k)
		th.last.Store(time.Now().UnixNano())
		if timer == nil {
			continue
		}
		due := min(float64(k-k0)/m.cfg.Rate*float64(time.Second), math.MaxInt64/2) // no overflow at tiny rates
		d := time.Duration(due) - time.Since(start)
		switch {
		case d < -maxPaceDebt:
			start, k0 = time.Now(), k
		case d > 0:
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-r.stopCh:
				return
			}
		}
	}
}

// steps runs steps k0 to k1-1 of thread th on mem. It allocates nothing.
func (m *Mutator) steps(mem []byte, th *mutatorThread, k0, k1 uint64) {
	ps := m.pageSize
	switch m.kind {
	case kindSilent:
		for k := k0; k < k1; k++ {
			h := stepHash(th.seed, k)
			p := th.page(h)
			mask := ^uint64(0)
			if m.isSilent(p) {
				mask = 0
			}
			xorWords(mem[p*ps:(p+1)*ps], h, mask)
		}
	case kindPhases:
		for k := k0; k < k1; k++ {
			h := stepHash(th.seed, k)
			p := th.lo + pickN(h>>32, phasesWindow(th.n, k))
			xorWords(mem[p*ps:(p+1)*ps], h, ^uint64(0))
		}
	case kindZeroDup:
		for k := k0; k < k1; k++ {
			h := stepHash(th.seed, k)
			p := th.page(h)
			page := mem[p*ps : (p+1)*ps]
			h2 := mix(h)
			switch c := pickN(h2, 10); {
			case c < 3:
				clear(page)
			case c < 6:
				j := pickN(h2>>32, zerodupPatterns)
				copy(page, m.patterns[j*ps:(j+1)*ps])
			default:
				fillRandom(page, h)
			}
		}
	case kindDup8:
		sink := th.sink
		for k := k0; k < k1; k++ {
			h := stepHash(th.seed, k)
			p := th.page(h)
			off := p*ps + pickN(h, ps/8)*8
			v := binary.LittleEndian.Uint64(mem[off:])
			if k%dup8WriteEvery == dup8WriteEvery-1 {
				binary.LittleEndian.PutUint64(mem[off:], v^(mix(h)|1))
			} else {
				sink ^= v
			}
		}
		th.sink = sink
	case kindRunaway:
		for k := k0; k < k1; k++ {
			h := stepHash(th.seed, k)
			p := th.page(h)
			off := p*ps + pickN(h, ps/8)*8
			binary.LittleEndian.PutUint64(mem[off:], mix(h))
		}
	}
}

// xorWords is a silentX write with hash h on page: it reads writeWords
// consecutive words (an aligned group drawn from h, in one cache line) and
// writes each back xored with a non-zero value drawn from h, and-ed with
// mask. With mask 0 the stores are silent; mask being a run-time value, the
// compiler cannot drop them as stores of the value just loaded.
func xorWords(page []byte, h, mask uint64) {
	g := page[pickN(h, len(page)/(8*writeWords))*8*writeWords:][:8*writeWords]
	for j := range writeWords {
		w := g[8*j : 8*j+8]
		binary.LittleEndian.PutUint64(w, binary.LittleEndian.Uint64(w)^((mix(h+splitmixGamma*uint64(j+1))|1)&mask))
	}
}

// Checksum returns a digest (XXH3-128) of mem and st: the result a migrated
// run must reproduce.
func Checksum(mem []byte, st MutatorState) [16]byte {
	h := xxh3.New()
	h.Write(mem)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(len(st.Steps)))
	h.Write(b[:])
	for _, s := range st.Steps {
		binary.LittleEndian.PutUint64(b[:], s)
		h.Write(b[:])
	}
	return h.Sum128().Bytes()
}
