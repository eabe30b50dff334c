package predictor

import (
	"errors"
	"fmt"
	"strings"
)

// Predictor turns the fault sequence of one region into predictions. No I/O.
//
// A Predictor is not safe for concurrent use: the page server and the QEMU proxy drive one
// Predictor per migration from one goroutine.
type Predictor interface {
	Name() string
	// Observe records a demand fault on page (a page index, 0..pages-1). Pages outside the
	// region and pages already touched are ignored.
	Observe(page uint64)
	// Predict appends up to k pages it expects to be touched next (most likely first) to dst and
	// returns it. It never returns a page already touched (observed, or reported used through
	// Feedback), never duplicates within one call, never returns pages >= pages.
	Predict(dst []uint64, k int) []uint64
	// Feedback tells the predictor that a page it predicted was (used=true) or was not yet
	// (used=false) touched. Every predictor in this package treats Feedback(page, true) as a touch
	// of page: it joins the touch sequence the models learn from (see docs/prefetch.md).
	Feedback(page uint64, used bool)
	// Pushed tells the predictor that page was sent to the target unasked, as one of its
	// predictions. A pushed page that is used does not fault, so it joins the touch sequence the
	// models learn from at once (an assumed touch, as Feedback(page, true) would make it). Its
	// prediction is scored only when Feedback settles it (a target reports a sample of its pushed
	// pages); one never settled expires unscored.
	Pushed(page uint64)
	// Resident tells the predictor that page reached the target another way (the background
	// pull, pre-copy): it is never predicted again, and it is not a touch.
	Resident(page uint64)
	// Reset forgets the current sequence position (not learned statistics, and not which pages
	// are resident).
	Reset()
}

// Forgetter is implemented by predictors that remember which pages they may not predict
// again: Lost tells one that page, pushed earlier (Pushed), never reached the target (the
// connection it went out on was lost), so it may be predicted, and pushed, again. It is not
// an untouch of anything the models learned.
type Forgetter interface {
	Lost(page uint64)
}

// Warmer is implemented by predictors that learn from a recorded sequence (ppm, workingset) or,
// for oracle, are told the future. Warm produces no predictions and leaves no sequence position
// behind; pages outside the region are skipped.
type Warmer interface {
	Warm(seq []uint64)
}

// MaxPages is the largest region Config accepts: every predictor keeps bitmaps of Pages bits.
const MaxPages = 1 << 36

// Config is shared by the constructors. Zero values select the documented defaults.
type Config struct {
	// Pages is the region size in pages; predictions are clipped to it. Required, 1..MaxPages.
	Pages uint64
	// Order is the longest delta context of ppm (contexts of the last 0..Order deltas).
	// Default 4, at most 8.
	Order int
	// AbsOrder is the longest absolute-page context of ppm (contexts of the last 1..AbsOrder
	// pages). Default 1: a first-touch trace gives each page one successor, so order 1 is exact
	// for one recorded run; higher orders only separate runs that diverge. At most 8.
	AbsOrder int
	// MaxContexts caps the contexts each ppm model keeps (two models). Default 1<<16; rounded
	// down to a power of two, at least 4.
	MaxContexts int
	// MaxDelta is the largest page delta ppm uses as a symbol; farther jumps become the "far"
	// symbol, which is learned but never predicted. Default 1<<20.
	MaxDelta int64
	// Streams is how many recent stream heads ppm matches a fault against to find its
	// predecessor (interleaved streams). Default 16, at most 256.
	Streams int
	// StreamGap is the largest distance in pages from a recent stream head at which a touch
	// continues that stream; a farther touch starts a new stream whose predecessor is the
	// previous touch. Default 256.
	StreamGap int
	// Window is how many touches a ppm prediction stays pending; a prediction not touched within
	// it counts as a miss for the model that made it. Default 128.
	Window int
	// MinConfidence is the score (model probability times measured precision) a ppm prediction
	// needs to be returned; weaker ones are only tracked, to keep measuring precision.
	// Default 0.3.
	MinConfidence float64
	// Depth is how many faults stride and pivot look back. Default 4.
	Depth int
}

// Defaults.
const (
	DefaultOrder         = 4
	DefaultAbsOrder      = 1
	DefaultMaxContexts   = 1 << 16
	DefaultMaxDelta      = 1 << 20
	DefaultStreams       = 16
	DefaultStreamGap     = 256
	DefaultWindow        = 128
	DefaultMinConfidence = 0.3
	DefaultDepth         = 4
	maxOrder             = 8
)

// ErrUnknownPredictor is returned (wrapped) by New for a name it does not know.
var ErrUnknownPredictor = errors.New("unknown predictor")

// ErrConfig is returned (wrapped) by New for an invalid Config.
var ErrConfig = errors.New("invalid predictor config")

var names = []string{"none", "nextn", "stride", "pivot", "workingset", "ppm", "oracle"}

// Names returns the names New accepts.
func Names() []string { return append([]string(nil), names...) }

// New returns the predictor called name for cfg.
func New(name string, cfg Config) (Predictor, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	switch name {
	case "none":
		return &none{}, nil
	case "nextn":
		return &nextN{touched: newTouched(c.Pages)}, nil
	case "stride":
		return newStride(c), nil
	case "pivot":
		return newPivot(c), nil
	case "workingset":
		return &workingSet{touched: newTouched(c.Pages), pos: -1}, nil
	case "ppm":
		return newPPM(c), nil
	case "oracle":
		return &oracle{workingSet{touched: newTouched(c.Pages), pos: -1}}, nil
	}
	return nil, fmt.Errorf("%w %q (valid: %s)", ErrUnknownPredictor, name, strings.Join(names, ", "))
}

func (c Config) withDefaults() (Config, error) {
	if c.Pages == 0 || c.Pages > MaxPages {
		return c, fmt.Errorf("%w: pages %d not in 1..%d", ErrConfig, c.Pages, uint64(MaxPages))
	}
	def := func(v *int, d, max int, what string) error {
		if *v == 0 {
			*v = d
		}
		if *v < 0 || *v > max {
			return fmt.Errorf("%w: %s %d not in 1..%d", ErrConfig, what, *v, max)
		}
		return nil
	}
	for _, e := range []error{
		def(&c.Order, DefaultOrder, maxOrder, "order"),
		def(&c.AbsOrder, DefaultAbsOrder, maxOrder, "abs order"),
		def(&c.MaxContexts, DefaultMaxContexts, 1<<28, "max contexts"),
		def(&c.Streams, DefaultStreams, 256, "streams"),
		def(&c.StreamGap, DefaultStreamGap, 1<<30, "stream gap"),
		def(&c.Window, DefaultWindow, 1<<20, "window"),
		def(&c.Depth, DefaultDepth, 64, "depth"),
	} {
		if e != nil {
			return c, e
		}
	}
	if c.MaxDelta == 0 {
		c.MaxDelta = DefaultMaxDelta
	}
	if c.MaxDelta < 0 || c.MaxDelta > 1<<40 {
		return c, fmt.Errorf("%w: max delta %d not in 1..%d", ErrConfig, c.MaxDelta, int64(1<<40))
	}
	if c.MinConfidence == 0 {
		c.MinConfidence = DefaultMinConfidence
	}
	if !(c.MinConfidence > 0 && c.MinConfidence <= 1) {
		return c, fmt.Errorf("%w: min confidence %v not in (0, 1]", ErrConfig, c.MinConfidence)
	}
	return c, nil
}

// bitmap is one bit per page.
type bitmap []uint64

func newBitmap(n uint64) bitmap    { return make(bitmap, (n+63)/64) }
func (b bitmap) has(i uint64) bool { return b[i>>6]&(1<<(i&63)) != 0 }
func (b bitmap) set(i uint64)      { b[i>>6] |= 1 << (i & 63) }
func (b bitmap) clear(i uint64)    { b[i>>6] &^= 1 << (i & 63) }

// touched is the set of pages touched so far (observed or reported used), shared by every
// predictor so none predicts a resident page.
type touched struct {
	pages uint64
	seen  bitmap
}

func newTouched(pages uint64) touched { return touched{pages: pages, seen: newBitmap(pages)} }

// touch marks page touched and reports whether it is new and in range.
func (t *touched) touch(page uint64) bool {
	if page >= t.pages || t.seen.has(page) {
		return false
	}
	t.seen.set(page)
	return true
}

// Resident marks page as present on the target without touching it.
func (t *touched) Resident(page uint64) {
	if page < t.pages {
		t.seen.set(page)
	}
}

// Lost makes page predictable again (Forgetter).
func (t *touched) Lost(page uint64) {
	if page < t.pages {
		t.seen.clear(page)
	}
}

// free reports whether page is in range and not touched.
func (t *touched) free(page uint64) bool { return page < t.pages && !t.seen.has(page) }

// contains reports whether page is among dst[from:]; predictions are short, a scan is cheapest.
func contains(dst []uint64, from int, page uint64) bool {
	for _, q := range dst[from:] {
		if q == page {
			return true
		}
	}
	return false
}
