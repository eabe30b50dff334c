package predictor

import "math"

// Model indices of ppm.
const (
	modelDelta = 0 // contexts of page deltas along a stream
	modelAbs   = 1 // contexts of absolute pages in touch order
	numModels  = 2
)

// far is the delta symbol for a jump larger than Config.MaxDelta or the start of a new stream.
const far = math.MinInt64

// escapeBelow is the probability under which a context's best successor is not trusted and
// prediction escapes to the next shorter context.
const escapeBelow = 0.4

// shadowPerCall is how many predictions too weak to return are still tracked per call: enough to
// keep measuring precision while silent, few enough that a silent phase leaves few pending misses.
const shadowPerCall = 1

// head is the newest page of one stream with the deltas that led to it (hist[0] newest).
type head struct {
	page  uint64
	hist  [maxOrder]int64
	n     int // valid entries of hist
	stamp uint64
	valid bool
}

// pending is one prediction waiting to be touched.
type pending struct {
	page uint64
	at   uint64 // touch clock when made
	mask uint8  // models that made it
}

// cand is a candidate page with its score.
type cand struct {
	page  uint64
	score float64
	model uint8
}

// ppm is Prediction by Partial Match with two models: deltas along streams and absolute pages,
// merged by score. See doc.go and docs/prefetch.md.
type ppm struct {
	cfg Config
	touched
	tables [numModels]ctxTable

	heads   []head
	last    int // index in heads of the latest touch, -1 when none
	clock   uint64
	absHist [maxOrder]int64
	absN    int

	// Precision tracking: pend[m] has the pages model m predicted in the last Window touches
	// that are not touched yet; ring holds them in order of prediction.
	pend              [numModels]bitmap
	assumed           bitmap // pushed pages whose predictions wait for Feedback (see Pushed)
	ring              []pending
	ringHead, ringLen int
	hits, misses      [numModels]float64

	scratch [numModels][]cand
}

func newPPM(c Config) *ppm {
	p := &ppm{
		cfg:     c,
		touched: newTouched(c.Pages),
		heads:   make([]head, c.Streams),
		last:    -1,
		ring:    make([]pending, 4096),
		assumed: newBitmap(c.Pages),
	}
	for m := range p.tables {
		p.tables[m] = newCtxTable(c.MaxContexts)
		p.pend[m] = newBitmap(c.Pages)
		p.hits[m] = 2 // prior: precision 2/3 before any evidence
		p.misses[m] = 1
	}
	return p
}

func (p *ppm) Name() string { return "ppm" }

// Warm learns seq as a recorded touch sequence without predicting and without marking pages
// touched; the sequence position is forgotten before and after.
func (p *ppm) Warm(seq []uint64) {
	p.Reset()
	for _, q := range seq {
		if q < p.pages {
			p.learn(q)
		}
	}
	p.Reset()
}

func (p *ppm) Reset() {
	for i := range p.heads {
		p.heads[i].valid = false
	}
	p.last = -1
	p.absN = 0
}

func (p *ppm) Observe(page uint64) { p.touchPage(page) }

// Feedback(page, true) is a touch of a pushed page: it enters the sequence, unless Pushed already
// put it there. Feedback(page, false) counts the prediction of page as a miss at once.
func (p *ppm) Feedback(page uint64, used bool) {
	if page >= p.pages {
		return
	}
	if p.assumed.has(page) {
		p.assumed.clear(page)
		p.settle(page, used)
		return
	}
	if used {
		p.touchPage(page)
		return
	}
	p.settle(page, false)
}

// settle scores the pending predictions of page as hits or misses.
func (p *ppm) settle(page uint64, hit bool) {
	for m := range p.pend {
		if p.pend[m].has(page) {
			p.pend[m].clear(page)
			p.score(m, hit)
		}
	}
}

// Pushed is an assumed touch: the page joins the sequence now, and its prediction stays pending,
// unscored, until Feedback settles it or it expires.
func (p *ppm) Pushed(page uint64) {
	if !p.touch(page) {
		return
	}
	p.assumed.set(page)
	p.clock++
	p.expire()
	p.learn(page)
}

// Lost makes a pushed page that never arrived predictable again; its prediction, still
// pending, is dropped unscored (Forgetter).
func (p *ppm) Lost(page uint64) {
	if page >= p.pages {
		return
	}
	p.touched.Lost(page)
	p.assumed.clear(page)
	for m := range p.pend {
		p.pend[m].clear(page)
	}
}

// Resident marks page present without a touch; a prediction of it still pending is dropped
// unscored (it is neither right nor wrong: the page came another way).
func (p *ppm) Resident(page uint64) {
	if page >= p.pages || p.seen.has(page) {
		return
	}
	p.seen.set(page)
	for m := range p.pend {
		p.pend[m].clear(page)
	}
}

func (p *ppm) touchPage(page uint64) {
	if !p.touch(page) {
		return
	}
	p.settle(page, true)
	p.clock++
	p.expire()
	p.learn(page)
}

// score records a hit or a miss of model m. Counts halve past 64 so precision follows the
// recent past (a phase change shows within a few dozen predictions).
func (p *ppm) score(m int, hit bool) {
	if hit {
		p.hits[m]++
	} else {
		p.misses[m]++
	}
	if p.hits[m]+p.misses[m] > 64 {
		p.hits[m] /= 2
		p.misses[m] /= 2
	}
}

func (p *ppm) precision(m int) float64 { return (p.hits[m] + 0.5) / (p.hits[m] + p.misses[m] + 1) }

// expire retires predictions older than Window touches; those still pending are misses.
func (p *ppm) expire() {
	for p.ringLen > 0 {
		e := p.ring[p.ringHead]
		if p.clock-e.at < uint64(p.cfg.Window) {
			return
		}
		p.retire()
	}
}

func (p *ppm) retire() {
	e := p.ring[p.ringHead]
	p.ringHead = (p.ringHead + 1) % len(p.ring)
	p.ringLen--
	if p.assumed.has(e.page) {
		// Pushed and never settled: the target did not report on it. Unscored.
		p.assumed.clear(e.page)
		for m := range p.pend {
			p.pend[m].clear(e.page)
		}
		return
	}
	for m := range p.pend {
		if e.mask&(1<<m) != 0 && p.pend[m].has(e.page) {
			p.pend[m].clear(e.page)
			p.score(m, false)
		}
	}
}

func (p *ppm) track(page uint64, model uint8) {
	if p.ringLen == len(p.ring) {
		p.retire()
	}
	p.ring[(p.ringHead+p.ringLen)%len(p.ring)] = pending{page: page, at: p.clock, mask: 1 << model}
	p.ringLen++
	p.pend[model].set(page)
}

// learn updates both models with one touch and moves the sequence position to it.
func (p *ppm) learn(page uint64) {
	// Delta model: the predecessor is the nearest recent stream head.
	best := -1
	var bestDist uint64
	for i := range p.heads {
		h := &p.heads[i]
		if !h.valid {
			continue
		}
		d := absDiff(page, h.page)
		if d != 0 && (best < 0 || d < bestDist) {
			best, bestDist = i, d
		}
	}
	if best >= 0 && bestDist <= uint64(p.cfg.StreamGap) {
		// Continue the stream of the nearest head.
		h := &p.heads[best]
		p.learnDelta(h, int64(page-h.page))
	} else {
		// A new stream: its predecessor is the latest touch (a jump in the global sequence, so
		// regular jumps are learned too); it takes the least recently touched head slot, and the
		// old streams stay.
		slot := 0
		for i := range p.heads {
			if !p.heads[i].valid {
				slot = i
				break
			}
			if p.heads[i].stamp < p.heads[slot].stamp {
				slot = i
			}
		}
		nh := head{valid: true}
		if p.last >= 0 {
			prev := &p.heads[p.last]
			d := int64(page - prev.page)
			if absDiff(page, prev.page) > uint64(p.cfg.MaxDelta) {
				d = far
			}
			nh.hist, nh.n = prev.hist, prev.n
			p.learnDelta(&nh, d)
		}
		p.heads[slot] = nh
		best = slot
	}
	h := &p.heads[best]
	h.page = page
	h.stamp = p.clock
	p.last = best

	// Absolute model: contexts of the last 1..AbsOrder pages in touch order.
	for o := 1; o <= min(p.absN, p.cfg.AbsOrder); o++ {
		p.tables[modelAbs].update(ctxKey(modelAbs, o, &p.absHist), int64(page))
	}
	copy(p.absHist[1:], p.absHist[:maxOrder-1])
	p.absHist[0] = int64(page)
	p.absN = min(p.absN+1, maxOrder)
}

// learnDelta counts d as the successor of h's contexts and appends it to h's history.
func (p *ppm) learnDelta(h *head, d int64) {
	for o := 0; o <= min(h.n, p.cfg.Order); o++ {
		p.tables[modelDelta].update(ctxKey(modelDelta, o, &h.hist), d)
	}
	copy(h.hist[1:], h.hist[:maxOrder-1])
	h.hist[0] = d
	h.n = min(h.n+1, maxOrder)
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

// lookup finds the longest context of hist (orders maxO down to minO) whose best successor is
// trusted, escaping to shorter contexts otherwise.
func (p *ppm) lookup(model int, hist *[maxOrder]int64, maxO, minO int) (int64, float64, bool) {
	for o := maxO; o >= minO; o-- {
		e := p.tables[model].find(ctxKey(model, o, hist))
		if e == nil {
			continue
		}
		if s, pr := e.best(); pr >= escapeBelow && s != far {
			return s, pr, true
		}
	}
	return 0, 0, false
}

// chain predicts speculatively, several steps ahead: it takes the best successor, appends it to a
// copy of the context and predicts again. Pages already touched or pending are stepped over.
// The score of a step is the weakest step probability so far times the model's precision.
func (p *ppm) chain(model int, out []cand, k int) []cand {
	var hist [maxOrder]int64
	var n int
	var cur uint64
	if model == modelDelta {
		h := &p.heads[p.last]
		hist, n, cur = h.hist, h.n, h.page
	} else {
		hist, n = p.absHist, p.absN
	}
	prec := p.precision(model)
	conf := 1.0
	for step := 0; len(out) < k && step < 2*k+8; step++ {
		var s int64
		var pr float64
		var ok bool
		if model == modelDelta {
			s, pr, ok = p.lookup(model, &hist, min(n, p.cfg.Order), 0)
		} else {
			s, pr, ok = p.lookup(model, &hist, min(n, p.cfg.AbsOrder), 1)
		}
		if !ok {
			break
		}
		next := uint64(s)
		if model == modelDelta {
			next = cur + uint64(s)
		}
		if next >= p.pages {
			break
		}
		conf = min(conf, pr)
		copy(hist[1:], hist[:maxOrder-1])
		hist[0] = s
		n = min(n+1, maxOrder)
		cur = next
		if p.seen.has(next) || p.pend[modelDelta].has(next) || p.pend[modelAbs].has(next) {
			continue
		}
		out = append(out, cand{page: next, score: conf * prec, model: uint8(model)})
	}
	return out
}

// Predict merges the chains of both models by score. Candidates scoring at least MinConfidence
// are returned (and tracked); up to shadowPerCall weaker ones are only tracked, so that precision keeps
// being measured while the predictor stays silent.
func (p *ppm) Predict(dst []uint64, k int) []uint64 {
	if p.last < 0 || k <= 0 {
		return dst
	}
	a := p.chain(modelDelta, p.scratch[modelDelta][:0], k)
	b := p.chain(modelAbs, p.scratch[modelAbs][:0], k)
	p.scratch[modelDelta], p.scratch[modelAbs] = a, b
	start := len(dst)
	shadow := 0
	for i, j := 0, 0; i < len(a) || j < len(b); {
		var c cand
		if j >= len(b) || (i < len(a) && a[i].score >= b[j].score) {
			c = a[i]
			i++
		} else {
			c = b[j]
			j++
		}
		if p.pend[modelDelta].has(c.page) || p.pend[modelAbs].has(c.page) {
			continue // the other chain already named it in this call
		}
		if c.score >= p.cfg.MinConfidence && len(dst)-start < k {
			dst = append(dst, c.page)
		} else if shadow < shadowPerCall {
			shadow++
		} else {
			continue
		}
		p.track(c.page, c.model)
	}
	return dst
}

// contexts returns the number of contexts held by each model (for tests).
func (p *ppm) contexts() (delta, abs int) { return p.tables[modelDelta].used, p.tables[modelAbs].used }
