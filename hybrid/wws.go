package hybrid

import "math"

// DefaultWWSHistory is WWS.History when it is 0.
const DefaultWWSHistory = 8

// WWS is the writable-working-set downtime control of seed 003. The writable working set
// after round x, W(x), is what the target lacks after it (Remaining, or the next round's
// needed pages). A least-squares line W(x) ≈ a + b·x over the latest History rounds after
// round 0 predicts the WWS, and so the downtime W × PageSize / bandwidth, of the rounds to
// come. After a round:
//
//  1. the predicted downtime fits the budget now: StopAndCopy;
//  2. fewer than two points: Continue (after MaxRounds: Switch, Converged false);
//  3. b >= 0, the WWS does not shrink: the downtime is smallest now and does not fit: Switch;
//  4. b < 0: the first round m where a + b·m fits the budget (budget × bandwidth /
//     PageSize pages); if m is within Env.MaxRounds, Continue (then StopAndCopy once it
//     fits), else Switch now: the trend says it never fits in time.
type WWS struct {
	// History is how many of the latest WWS points the line is fitted to (0:
	// DefaultWWSHistory). Older rounds are left out so that a workload that changes phase
	// is followed.
	History int
}

// Name returns "wws".
func (WWS) Name() string { return "wws" }

// Decide implements Policy.
func (p WWS) Decide(env Env, rounds []Round) Decision {
	history := p.History
	if history < 2 {
		history = DefaultWWSHistory
	}
	v := newView(env, rounds)
	d := v.decider(p.Name())
	d.common(v)
	if v.n == 0 {
		return d.decide(Continue, true, "no round yet: pre-copy starts with the full round")
	}
	if v.nothingLeft() {
		return nothingLeft(d, v)
	}
	t, tok := v.downtime(v.left)
	if tok && t <= v.budget() {
		return fitsBudget(d, v, t)
	}
	giveUp := func() Decision {
		return d.decide(Switch, false, "gave up on pre-copy after %s rounds, the most allowed: switch with %s left",
			d.c("rounds", float64(v.n)), d.c("left_pages", v.left))
	}
	if !tok {
		if v.n >= v.env.MaxRounds {
			return giveUp()
		}
		return d.decide(Continue, true, "bandwidth unknown (no round measured bytes over a duration): another round to measure it")
	}
	xs, ys := wwsPoints(v.rounds, history)
	if len(xs) < 2 {
		if v.n >= v.env.MaxRounds {
			return giveUp()
		}
		return d.decide(Continue, true, "the WWS trend needs two points (rounds after the full one, with a known WWS), %s so far: another round",
			d.c("wws_points", float64(len(xs))))
	}
	a, b := fitLine(xs, ys)
	d.note("wws_intercept_pages", a)
	d.note("wws_slope_pages_round", b)
	budgetPages := v.budget() * v.bw / float64(v.env.PageSize)
	d.note("budget_pages", budgetPages)
	if b >= 0 {
		return d.decide(Switch, true, "the WWS does not shrink (%s over the last %s rounds): the predicted downtime %s is the smallest it gets and exceeds the budget %s, switch now",
			d.c("wws_slope_pages_round", b), d.c("wws_points", float64(len(xs))), d.c("predicted_downtime_ms", ms(t)), d.c("budget_ms", ms(v.budget())))
	}
	cur := v.last.Index
	m := cur + 1
	if at := math.Ceil((a - budgetPages) / -b); at > float64(m) {
		m = int(math.Min(at, float64(cur+v.env.MaxRounds+1))) // bounded: past MaxRounds is all the same
	}
	fit, _ := v.downtime(max(a+b*float64(m), 0))
	if v.n >= v.env.MaxRounds {
		return giveUp()
	}
	if v.n+(m-cur) > v.env.MaxRounds {
		return d.decide(Switch, true, "the WWS shrinks too slowly (%s): it fits the budget %s only after round %s, past the %s rounds allowed, switch now",
			d.c("wws_slope_pages_round", b), d.c("budget_ms", ms(v.budget())), d.c("fit_round", float64(m)), d.c("max_rounds", float64(v.env.MaxRounds)))
	}
	return d.decide(Continue, true, "the WWS shrinks (%s): predicted downtime %s after round %s fits the budget %s, another round",
		d.c("wws_slope_pages_round", b), d.c("fit_downtime_ms", ms(fit)), d.c("fit_round", float64(m)), d.c("budget_ms", ms(v.budget())))
}

// wwsPoints returns the WWS history, at most history points: for each round x >= 1, what
// the target lacked after it, its Remaining if measured, else round x+1's needed pages.
// Round 0 is left out: it is the full copy, far longer than the rounds after it.
func wwsPoints(rounds []Round, history int) (xs, ys []float64) {
	for x := 1; x < len(rounds); x++ {
		switch {
		case rounds[x].Remaining > 0:
			xs, ys = append(xs, float64(rounds[x].Index)), append(ys, float64(rounds[x].Remaining))
		case x+1 < len(rounds):
			xs, ys = append(xs, float64(rounds[x].Index)), append(ys, needed(rounds[x+1]))
		}
	}
	if len(xs) > history {
		xs, ys = xs[len(xs)-history:], ys[len(ys)-history:]
	}
	return xs, ys
}

// fitLine returns the least-squares line y ≈ a + b·x. Precondition: len(xs) >= 2 with at
// least two distinct xs.
func fitLine(xs, ys []float64) (a, b float64) {
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx /= float64(len(xs))
	my /= float64(len(xs))
	var sxy, sxx float64
	for i := range xs {
		sxy += (xs[i] - mx) * (ys[i] - my)
		sxx += (xs[i] - mx) * (xs[i] - mx)
	}
	if sxx == 0 {
		return my, 0
	}
	b = sxy / sxx
	return my - b*mx, b
}
