package hybrid

import (
	"fmt"
	"math"
	"strings"
)

// maxFinite bounds the inputs taken as finite rates.
const maxFinite = math.MaxFloat64 / 4

// rateRounds is how many of the latest rounds the dirty rate is averaged over.
const rateRounds = 3

// view is what every policy derives from (env, rounds): the estimates of docs/hybrid.md,
// "Estimates".
type view struct {
	env    Env // defaults applied
	rounds []Round
	n      int   // rounds done
	last   Round // rounds[n-1]; zero when n == 0

	// bw is the link rate in bytes/s; 0: unknown.
	bw float64
	// left is what the target lacks after the last round, in pages; leftMeasured: it is the
	// round's Remaining, not the Dirty-FakeDirty estimate.
	left         float64
	leftMeasured bool
	// rate is the rate of writes that need sending (fake dirty excluded), pages/s; rateKnown
	// false when no round gives a window to divide by.
	rate      float64
	rateKnown bool
	// lambda is the same writes seen as uniform over capPages pages, per second: a window w
	// dirties capPages·(1-exp(-lambda·w)) distinct pages (see predictLack); +Inf when a
	// round dirtied every page. Known when rateKnown.
	lambda float64
	// capPages bounds what can be missing: TotalPages, or the most pages a round looked at
	// or reported remaining if more.
	capPages float64
}

func newView(env Env, rounds []Round) view {
	v := view{env: env.withDefaults(), rounds: rounds, n: len(rounds)}
	v.capPages = float64(v.env.TotalPages)
	if v.n == 0 {
		// Before any round the target lacks every page.
		v.left, v.leftMeasured = v.capPages, v.capPages > 0
	} else {
		v.last = rounds[v.n-1]
		v.left, v.leftMeasured = lackAfter(rounds, v.n-1)
		for _, r := range rounds {
			v.capPages = max(v.capPages, float64(r.Dirty), float64(r.Remaining))
		}
	}

	if v.env.Bandwidth > 0 {
		v.bw = v.env.Bandwidth
	} else {
		var bytes, secs float64
		for _, r := range rounds {
			if r.Duration > 0 {
				bytes += float64(r.Bytes)
				secs += r.Duration.Seconds()
			}
		}
		if bytes > 0 && secs > 0 {
			v.bw = bytes / secs
		}
	}

	// The dirty rate: pages that needed sending over the windows they were written in,
	// summed over the latest rounds after round 0.
	var pages, hits, secs float64
	add := func(dirty, w float64) {
		pages += dirty
		if dirty > 0 { // then capPages >= dirty > 0
			hits += -math.Log1p(-min(dirty/v.capPages, 1)) // +Inf when every page was dirty
		}
		secs += w
	}
	for i := v.n - 1; i >= 1 && i >= v.n-rateRounds; i-- {
		if w := window(rounds, i); w > 0 {
			add(needed(rounds[i]), w)
		}
	}
	if secs == 0 && v.n == 1 && rounds[0].Remaining > 0 && rounds[0].Duration > 0 {
		// Round 0 alone: the pages written while it ran.
		add(float64(rounds[0].Remaining), rounds[0].Duration.Seconds())
	}
	if secs == 0 && v.env.ProbeWindow > 0 && v.capPages > 0 {
		// No round gives a window yet: the probe before round 0 does.
		add(float64(v.env.ProbeDirty), v.env.ProbeWindow.Seconds())
	}
	if secs > 0 {
		v.rate, v.lambda, v.rateKnown = pages/secs, hits/secs, true
	}
	return v
}

// predictLack returns how many distinct pages a window of w seconds leaves dirty, writes
// taken as uniform over capPages pages at the rate lambda: capPages·(1-exp(-lambda·w)).
// While few pages are dirty this is rate·w; it never exceeds capPages, and a workload that
// dirtied every page in a round keeps every page dirty. Precondition: rateKnown.
func (v view) predictLack(w float64) float64 {
	if math.IsInf(v.lambda, 1) {
		return v.capPages
	}
	return -v.capPages * math.Expm1(-v.lambda*w)
}

// needed returns the pages of r that needed sending: its Dirty less its FakeDirty.
func needed(r Round) float64 {
	if r.FakeDirty >= r.Dirty {
		return 0
	}
	return float64(r.Dirty - r.FakeDirty)
}

// window returns, in seconds, the time in which round i's dirty pages were written: its
// Interval, or the previous round's Duration when rounds run back to back (0: unknown).
// Precondition: i >= 1.
func window(rounds []Round, i int) float64 {
	if w := rounds[i].Interval; w > 0 {
		return w.Seconds()
	}
	if d := rounds[i-1].Duration; d > 0 {
		return d.Seconds()
	}
	return 0
}

// lackAfter returns what the target lacks after round i: its Remaining if measured, else
// the round's needed pages (what the target lacked after round i-1, the next-best estimate).
func lackAfter(rounds []Round, i int) (pages float64, measured bool) {
	if r := rounds[i].Remaining; r > 0 {
		return float64(r), true
	}
	return needed(rounds[i]), false
}

// nothingLeft reports that the last round found no dirty page and nothing remains.
func (v view) nothingLeft() bool {
	return v.n > 0 && v.last.Dirty == 0 && v.last.Remaining == 0
}

// downtime returns the predicted stop-and-copy downtime for pages pages, in seconds:
// pages × PageSize / bandwidth; ok false when the bandwidth is unknown (and pages > 0).
func (v view) downtime(pages float64) (secs float64, ok bool) {
	if pages <= 0 {
		return 0, true
	}
	if v.bw <= 0 {
		return 0, false
	}
	return pages * float64(v.env.PageSize) / v.bw, true
}

// budget returns the downtime budget in seconds.
func (v view) budget() float64 { return v.env.DowntimeBudget.Seconds() }

// linkRate returns the link rate in pages/s (0: unknown).
func (v view) linkRate() float64 { return v.bw / float64(v.env.PageSize) }

// roundIndex returns the Decision.Round for v: the last round's index, -1 before any.
func (v view) roundIndex() int {
	if v.n == 0 {
		return -1
	}
	return v.last.Index
}

// decider builds one Decision: c cites a figure into Numbers and returns it as the reason
// quotes it, so that a reason cannot quote a figure Numbers lacks.
type decider struct {
	policy string
	round  int
	nums   map[string]float64
}

func (v view) decider(policy string) *decider {
	d := &decider{policy: policy, round: v.roundIndex(), nums: map[string]float64{}}
	if v.n > 0 {
		d.note("round", float64(v.last.Index))
		d.note("rounds", float64(v.n))
	}
	return d
}

// c records key = x and returns x as reasons show it (see show).
func (d *decider) c(key string, x float64) string {
	d.note(key, x)
	return show(key, x)
}

// note records key = x without quoting it. Non-finite values are left out.
func (d *decider) note(key string, x float64) {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return
	}
	d.nums[key] = x
}

// common notes the figures every policy weighed.
func (d *decider) common(v view) {
	d.note("budget_ms", ms(v.budget()))
	d.note("max_rounds", float64(v.env.MaxRounds))
	if v.n == 0 {
		return
	}
	d.note("left_pages", v.left)
	if v.bw > 0 {
		d.note("bandwidth_bytes_s", v.bw)
	}
	if t, ok := v.downtime(v.left); ok {
		d.note("predicted_downtime_ms", ms(t))
	}
	if v.rateKnown {
		d.note("dirty_rate_pages_s", v.rate)
	}
}

func (d *decider) decide(a Action, converged bool, format string, args ...any) Decision {
	return Decision{
		Action: a, Policy: d.policy, Round: d.round, Converged: converged,
		Reason: fmt.Sprintf(format, args...), Numbers: d.nums,
	}
}

// ms converts seconds to milliseconds.
func ms(secs float64) float64 { return secs * 1e3 }

// show formats x as a reason quotes the Numbers entry key: the key's suffix names the unit.
func show(key string, x float64) string {
	switch {
	case strings.HasSuffix(key, "_ms"):
		return sig(x) + " ms"
	case strings.HasSuffix(key, "_bytes_s"):
		return sig(x/1e6) + " MB/s"
	case strings.HasSuffix(key, "_pages_s"):
		return fmt.Sprintf("%.0f pages/s", x)
	case strings.HasSuffix(key, "_pages_round"):
		return fmt.Sprintf("%+.1f pages/round", x)
	case strings.HasSuffix(key, "_pages"):
		return fmt.Sprintf("%.0f pages", x)
	case strings.HasSuffix(key, "_pct"):
		return fmt.Sprintf("%.1f%%", x)
	}
	return fmt.Sprintf("%.0f", x) // counts and round indexes
}

// sig formats x with about three significant digits, fixed point.
func sig(x float64) string {
	switch a := math.Abs(x); {
	case a >= 100:
		return fmt.Sprintf("%.0f", x)
	case a >= 10:
		return fmt.Sprintf("%.1f", x)
	}
	return fmt.Sprintf("%.2f", x)
}
