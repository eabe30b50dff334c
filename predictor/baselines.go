package predictor

// none predicts nothing: plain post-copy, every first touch is a demand fault.
type none struct{}

func (*none) Name() string                         { return "none" }
func (*none) Observe(uint64)                       {}
func (*none) Predict(dst []uint64, _ int) []uint64 { return dst }
func (*none) Feedback(uint64, bool)                {}
func (*none) Pushed(uint64)                        {}
func (*none) Resident(uint64)                      {}
func (*none) Reset()                               {}

// nextN predicts the k pages after the latest fault, skipping touched ones.
type nextN struct {
	touched
	last    uint64
	hasLast bool
}

func (p *nextN) Name() string { return "nextn" }

func (p *nextN) Observe(page uint64) {
	if p.touch(page) {
		p.last, p.hasLast = page, true
	}
}

func (p *nextN) Predict(dst []uint64, k int) []uint64 {
	if !p.hasLast {
		return dst
	}
	for q := p.last + 1; q <= p.last+uint64(max(k, 0)) && q < p.pages; q++ {
		if !p.seen.has(q) {
			dst = append(dst, q)
		}
	}
	return dst
}

func (p *nextN) Feedback(page uint64, used bool) {
	if used {
		p.touch(page)
	}
}

func (p *nextN) Pushed(page uint64) { p.touch(page) }

func (p *nextN) Reset() { p.hasLast = false }

// history is the last few touched pages, newest last.
type history struct {
	pages []uint64
	n     int
}

func newHistory(depth int) history { return history{pages: make([]uint64, depth)} }

func (h *history) push(page uint64) {
	if h.n == len(h.pages) {
		copy(h.pages, h.pages[1:])
		h.n--
	}
	h.pages[h.n] = page
	h.n++
}

// recent is the state stride and pivot share: the pages touched and the
// last few of them in order. A used push counts as a touch.
type recent struct {
	touched
	hist history
}

func newRecent(c Config) recent {
	return recent{touched: newTouched(c.Pages), hist: newHistory(max(c.Depth, 2))}
}

func (p *recent) Observe(page uint64) {
	if p.touch(page) {
		p.hist.push(page)
	}
}

func (p *recent) Feedback(page uint64, used bool) {
	if used {
		p.Observe(page)
	}
}

// Pushed is an assumed touch: the pushed page joins the history, so the next
// demand fault's delta is measured from the end of what was pushed.
func (p *recent) Pushed(page uint64) { p.Observe(page) }

func (p *recent) Reset() { p.hist.n = 0 }

// stride detects a constant delta over the last Depth touches and predicts page+d, page+2d, ...;
// its confidence counter is the run of equal deltas: it predicts nothing until Depth-1
// consecutive deltas agree.
type stride struct{ recent }

func newStride(c Config) *stride { return &stride{newRecent(c)} }

func (p *stride) Name() string { return "stride" }

// delta returns the stride every recorded delta agrees on (the confidence counter is the
// history length: all Depth-1 deltas must be equal).
func (p *stride) delta() (int64, bool) {
	h := p.hist.pages[:p.hist.n]
	if len(h) < len(p.hist.pages) {
		return 0, false
	}
	d := int64(h[1] - h[0])
	for i := 2; i < len(h); i++ {
		if int64(h[i]-h[i-1]) != d {
			return 0, false
		}
	}
	return d, d != 0
}

func (p *stride) Predict(dst []uint64, k int) []uint64 {
	d, ok := p.delta()
	if !ok {
		return dst
	}
	q := p.hist.pages[p.hist.n-1]
	for i := 0; i < k; i++ {
		q += uint64(d)
		if q >= p.pages { // also catches wrap-around below zero
			break
		}
		if !p.seen.has(q) {
			dst = append(dst, q)
		}
	}
	return dst
}

// pivot is Hines & Gopalan's post-copy "bubbling": pages around the latest fault, alternating
// forward and backward (p+1, p-1, p+2, p-2, ...). When the last Depth deltas mostly point one
// way, it takes two steps that way for each step the other way.
type pivot struct{ recent }

func newPivot(c Config) *pivot { return &pivot{newRecent(c)} }

func (p *pivot) Name() string { return "pivot" }

func (p *pivot) Predict(dst []uint64, k int) []uint64 {
	if p.hist.n == 0 || k <= 0 {
		return dst
	}
	h := p.hist.pages[:p.hist.n]
	bias := 0
	for i := 1; i < len(h); i++ {
		if h[i] > h[i-1] {
			bias++
		} else {
			bias--
		}
	}
	c := h[len(h)-1]
	start := len(dst)
	var fwd, back uint64 // distances taken so far each way
	// Scan a bounded neighbourhood: at most 4k steps, so a fully resident area costs O(k).
	for step := 0; len(dst)-start < k && step < 4*k; step++ {
		forward := step%2 == 0
		switch {
		case bias > 0:
			forward = step%3 != 2
		case bias < 0:
			forward = step%3 == 2
		}
		var q uint64
		if forward {
			fwd++
			q = c + fwd
		} else {
			back++
			if back > c {
				continue
			}
			q = c - back
		}
		if p.free(q) {
			dst = append(dst, q)
		}
	}
	return dst
}

// workingSet is REAP-style: warmed with the page order of an earlier run, it predicts the pages
// that followed the latest fault in that order. Unwarmed, or after a fault on a page the
// recording never touched, it predicts nothing.
type workingSet struct {
	touched
	order []uint64
	index map[uint64]int
	pos   int // index in order of the latest touch, -1 when unknown
}

func (p *workingSet) Name() string { return "workingset" }

// Warm replaces the recorded order with seq (pages outside the region and repeats skipped).
func (p *workingSet) Warm(seq []uint64) {
	p.order = p.order[:0]
	p.index = make(map[uint64]int, len(seq))
	for _, q := range seq {
		if q >= p.pages {
			continue
		}
		if _, dup := p.index[q]; dup {
			continue
		}
		p.index[q] = len(p.order)
		p.order = append(p.order, q)
	}
	p.pos = -1
}

func (p *workingSet) Observe(page uint64) {
	if !p.touch(page) {
		return
	}
	if i, ok := p.index[page]; ok {
		p.pos = i
	} else {
		p.pos = -1
	}
}

func (p *workingSet) Feedback(page uint64, used bool) {
	if used {
		p.Observe(page)
	}
}

// Pushed moves the position in the recorded order to page, as a touch would.
func (p *workingSet) Pushed(page uint64) { p.Observe(page) }

func (p *workingSet) Reset() { p.pos = -1 }

func (p *workingSet) Predict(dst []uint64, k int) []uint64 {
	if p.index == nil || p.pos < 0 {
		return dst
	}
	start := len(dst)
	for i := p.pos + 1; i < len(p.order) && len(dst)-start < k; i++ {
		if q := p.order[i]; !p.seen.has(q) {
			dst = append(dst, q)
		}
	}
	return dst
}

// oracle knows the future (Warm) and predicts exactly the next k pages of it that are not yet
// touched: the upper bound for any predictor with the same push budget.
type oracle struct {
	workingSet
}

func (p *oracle) Name() string { return "oracle" }

// Predict scans the future from the latest fault; when that page is not in the future it starts
// from the beginning, so the oracle still names the next untouched pages.
func (p *oracle) Predict(dst []uint64, k int) []uint64 {
	if p.index == nil {
		return dst
	}
	start := len(dst)
	for i := max(p.pos+1, 0); i < len(p.order) && len(dst)-start < k; i++ {
		if q := p.order[i]; !p.seen.has(q) {
			dst = append(dst, q)
		}
	}
	return dst
}
