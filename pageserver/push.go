package pageserver

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/pagewarp/pagewarp/predictor"
	"github.com/pagewarp/pagewarp/wire"
)

// Prefetch configures the push of predicted pages after demand replies
// (wire.FeaturePush). The zero value pushes nothing.
type Prefetch struct {
	// Predictor names the predictor (one of predictor.Names()); "" or
	// "none" disables pushing.
	Predictor string
	// Budget is the most pages pushed after one demand fault (default 16,
	// at most wire.MaxPagesPerRequest). Every predictor gets the same
	// budget.
	Budget int
	// Fixed pushes up to Budget pages after every fault. Without it the push
	// window adapts to the target's reports: it starts at min(4, Budget)
	// pages, grows by 2 for every pushed page the target reports used and
	// halves for every one it reports unused (TCP-like additive increase,
	// multiplicative decrease), between 1 and Budget.
	Fixed bool
	// Warm holds a recorded first-touch sequence per region id (an earlier
	// run's trace, or the order pre-copy wrote pages), given to predictors
	// that learn from one (predictor.Warmer) when a session first faults on
	// the region.
	Warm map[uint32][]uint64
	// Config tunes the predictor; Pages is set per region.
	Config predictor.Config
}

// DefaultPushBudget is Prefetch.Budget's default.
const DefaultPushBudget = 16

// enabled reports whether pushing is configured.
func (p *Prefetch) enabled() bool { return p.Predictor != "" && p.Predictor != "none" }

func (p *Prefetch) check() error {
	if !p.enabled() {
		return nil
	}
	if p.Budget == 0 {
		p.Budget = DefaultPushBudget
	}
	if p.Budget < 0 || p.Budget > wire.MaxPagesPerRequest {
		return fmt.Errorf("pageserver: push budget %d not in 1..%d", p.Budget, wire.MaxPagesPerRequest)
	}
	cfg := p.Config
	cfg.Pages = 1
	if _, err := predictor.New(p.Predictor, cfg); err != nil {
		return fmt.Errorf("pageserver: %w", err)
	}
	return nil
}

// session is the push state the connections of one migration share (the
// Hello's session token): per region, a predictor and what was sent.
//
// A session outlives a dropped connection: when its last connection ends
// without the target's Bye it is kept for Options.SessionLinger, so that a
// target that reconnects and resumes (Hello.Resume) finds its predictor, its
// push window and its pushed-page record again. What the dead connections
// had in flight (queued requests, the rest of a push) died with them; the
// record of pages sent is reset from the target's Resident frames.
type session struct {
	id   [wire.SessionLen]byte
	refs int // connections using it; guarded by Server.sessMu
	// expiry forgets a session whose connections all dropped; guarded by
	// Server.sessMu.
	expiry *time.Timer

	mu      sync.Mutex
	regions map[uint32]*pushState
}

// pushState is one region's push state within a session. Guarded by
// session.mu.
type pushState struct {
	pred   predictor.Predictor
	sent   bitset // pages sent or requested in any way: never pushed again
	pushed bitset // pages sent as pushes
	window int
	buf    []uint64
}

// bitset is one bit per page.
type bitset []uint64

func newBitset(n uint64) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) has(i uint64) bool { return b[i>>6]&(1<<(i&63)) != 0 }
func (b bitset) set(i uint64)      { b[i>>6] |= 1 << (i & 63) }
func (b bitset) clear(i uint64)    { b[i>>6] &^= 1 << (i & 63) }
func (b bitset) testAndSet(i uint64) bool {
	w, m := &b[i>>6], uint64(1)<<(i&63)
	was := *w&m != 0
	*w |= m
	return was
}

// acquireSession returns the session with id, creating it; releaseSession
// drops a reference and forgets it with the last one.
func (s *Server) acquireSession(id [wire.SessionLen]byte) *session {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	ss := s.sessions[id]
	if ss == nil {
		ss = &session{id: id, regions: make(map[uint32]*pushState)}
		s.sessions[id] = ss
	}
	if ss.expiry != nil {
		ss.expiry.Stop()
		ss.expiry = nil
	}
	ss.refs++
	return ss
}

// releaseSession drops a connection's reference. With the last one the
// session is forgotten at once if the target said Bye (done) or lingering is
// off, else after Options.SessionLinger unless a connection takes it again.
func (s *Server) releaseSession(ss *session, done bool) {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if ss.refs--; ss.refs > 0 {
		return
	}
	if done || s.opts.SessionLinger < 0 {
		delete(s.sessions, ss.id)
		return
	}
	ss.expiry = time.AfterFunc(s.opts.SessionLinger, func() {
		s.sessMu.Lock()
		defer s.sessMu.Unlock()
		if ss.refs == 0 && s.sessions[ss.id] == ss {
			delete(s.sessions, ss.id)
		}
	})
}

// Sessions returns the number of push sessions the server holds, lingering
// ones included.
func (s *Server) Sessions() int {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	return len(s.sessions)
}

// resident applies a resuming target's Resident frame: the pages it covers
// are sent exactly when the target holds them, so a page that was pushed or
// requested on a dead connection and never arrived may be pushed again. The
// caller checked the region and the range.
func (ss *session) resident(s *Server, m *wire.Resident) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	st := ss.state(s, m.Region)
	end := min(m.First+m.Pages(), s.pages[m.Region])
	forget, _ := st.pred.(predictor.Forgetter)
	for p := m.First; p < end; p++ {
		if m.Has(p - m.First) {
			st.sent.set(p)
			continue
		}
		st.sent.clear(p)
		if st.pushed.has(p) {
			// Pushed on a dead connection and lost with it: the predictor may
			// name it again, and the next push may carry it.
			st.pushed.clear(p)
			if forget != nil {
				forget.Lost(p)
			}
		}
	}
}

// state returns region's push state, creating (and warming) its predictor on
// first use. The caller holds ss.mu.
func (ss *session) state(s *Server, region uint32) *pushState {
	if st := ss.regions[region]; st != nil {
		return st
	}
	pf := &s.opts.Prefetch
	cfg := pf.Config
	cfg.Pages = s.pages[region]
	if cfg.Window == 0 {
		// A pushed page joins the sequence at once, so the touch clock runs
		// budget+1 ticks a fault; the target reports on a probe within
		// its expiry (32 demand faults by default). The window must outlast
		// that, or reports arrive after the prediction expired unscored.
		cfg.Window = max(predictor.DefaultWindow, 64*(pf.Budget+1))
	}
	pred, err := predictor.New(pf.Predictor, cfg)
	if err != nil {
		// Checked in New for one page; a region larger than the predictor
		// can track pushes nothing.
		s.log.Info("predictor disabled for region", "region", region, "err", err)
		pred, _ = predictor.New("none", predictor.Config{Pages: 1})
	} else if w, ok := pred.(predictor.Warmer); ok && len(pf.Warm[region]) > 0 {
		w.Warm(pf.Warm[region])
	}
	st := &pushState{
		pred:   pred,
		sent:   newBitset(cfg.Pages),
		pushed: newBitset(cfg.Pages),
		window: pf.Budget,
		buf:    make([]uint64, 0, pf.Budget),
	}
	if !pf.Fixed {
		st.window = min(4, pf.Budget)
	}
	ss.regions[region] = st
	return st
}

// claimed records that the target requested [page, page+count) in the
// background: those pages are never pushed.
func (ss *session) claimed(s *Server, region uint32, page uint64, count uint32) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	st := ss.state(s, region)
	for p := page; p < page+uint64(count); p++ {
		if !st.sent.testAndSet(p) {
			st.pred.Resident(p)
		}
	}
}

// plan feeds a demand fault to the predictor and returns, in ascending
// order, the pages to push after the reply: predicted, never sent, at most
// the window. The slice is valid until the next call on the session.
func (ss *session) plan(s *Server, region uint32, page uint64, dst []uint64) []uint64 {
	t0 := time.Now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	st := ss.state(s, region)
	if st.pushed.has(page) {
		// The target faulted on a page whose push it had not read yet: a use.
		st.pred.Feedback(page, true)
	} else {
		st.pred.Observe(page)
	}
	st.sent.set(page)
	st.buf = st.pred.Predict(st.buf[:0], st.window)
	for _, q := range st.buf {
		if len(dst) == st.window {
			break
		}
		if !st.sent.testAndSet(q) {
			st.pushed.set(q)
			st.pred.Pushed(q)
			dst = append(dst, q)
		}
	}
	slices.Sort(dst)
	s.stats.predictCalls.Add(1)
	s.stats.predictNanos.Add(uint64(time.Since(t0)))
	return dst
}

// feedback applies a target's report on pushed pages to the predictor and
// the window.
func (ss *session) feedback(s *Server, m *wire.Feedback) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	st := ss.state(s, m.Region)
	budget := s.opts.Prefetch.Budget
	n := uint64(len(st.sent)) * 64
	for _, p := range m.Used {
		if p < n && st.pushed.has(p) {
			st.pred.Feedback(p, true)
			s.stats.pushUsed.Add(1)
			if !s.opts.Prefetch.Fixed {
				st.window = min(st.window+2, budget)
			}
		}
	}
	for _, p := range m.Unused {
		if p < n && st.pushed.has(p) {
			st.pred.Feedback(p, false)
			s.stats.pushUnused.Add(1)
			if !s.opts.Prefetch.Fixed {
				st.window = max(st.window/2, 1)
			}
		}
	}
}
