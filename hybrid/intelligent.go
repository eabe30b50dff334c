package hybrid

// DefaultMinShrink is Intelligent.MinShrink when it is 0.
const DefaultMinShrink = 0.10

// Intelligent is the intelligent hybrid switch of seed 000: pre-copy continues while each
// round meaningfully shrinks what the target lacks, and switches to post-copy at the round
// where it stops doing so, so that post-copy has the least left to fetch. In order, after a
// round:
//
//  1. the predicted downtime fits the budget: StopAndCopy;
//  2. the dirty rate (pages that need sending per second) exceeds the link rate
//     (bandwidth / PageSize): Switch, pre-copy cannot catch up;
//  3. what the target lacks after this round is less than MinShrink smaller than after the
//     previous one: Switch;
//  4. otherwise Continue; after Env.MaxRounds rounds, Switch with Converged false.
type Intelligent struct {
	// MinShrink is the smallest relative reduction of what the target lacks, from one round
	// to the next, that is worth another round (0: DefaultMinShrink, 10%).
	MinShrink float64
}

// Name returns "intelligent".
func (Intelligent) Name() string { return "intelligent" }

// Decide implements Policy.
func (p Intelligent) Decide(env Env, rounds []Round) Decision {
	minShrink := p.MinShrink
	if !(minShrink > 0) {
		minShrink = DefaultMinShrink
	}
	v := newView(env, rounds)
	d := v.decider(p.Name())
	d.common(v)
	d.note("min_shrink_pct", 100*minShrink)
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
	if v.rateKnown && v.bw > 0 && v.rate > v.linkRate() {
		return d.decide(Switch, true, "the dirty rate %s exceeds the link rate %s: pre-copy cannot catch up, switch with %s left",
			d.c("dirty_rate_pages_s", v.rate), d.c("link_rate_pages_s", v.linkRate()), d.c("left_pages", v.left))
	}
	now, before, ok := shrinkPair(v)
	if !ok {
		return p.orGiveUp(d, v, "the full round done and what it left unmeasured: another round to see whether rounds shrink what the target lacks")
	}
	shrink := 0.0
	if before > 0 {
		shrink = 1 - now/before
	}
	if shrink < minShrink {
		return d.decide(Switch, true, "another round no longer shrinks what the target lacks: %s after round %s%s against %s before it, a shrink of %s under the %s worth a round",
			d.c("left_pages", now), d.c("round", float64(v.last.Index)), estimated(v), d.c("before_pages", before), d.c("shrink_pct", 100*shrink), d.c("min_shrink_pct", 100*minShrink))
	}
	return p.orGiveUp(d, v, "the last round shrank what the target lacks to %s%s from %s, a shrink of %s, at least the %s worth a round: another round",
		d.c("left_pages", now), estimated(v), d.c("before_pages", before), d.c("shrink_pct", 100*shrink), d.c("min_shrink_pct", 100*minShrink))
}

// orGiveUp continues, or switches with Converged false once MaxRounds rounds are done.
func (p Intelligent) orGiveUp(d *decider, v view, format string, args ...any) Decision {
	if v.n >= v.env.MaxRounds {
		return d.decide(Switch, false, "gave up on pre-copy after %s rounds, the most allowed: switch with %s left",
			d.c("rounds", float64(v.n)), d.c("left_pages", v.left))
	}
	return d.decide(Continue, true, format, args...)
}

// estimated qualifies a lack that was not measured.
func estimated(v view) string {
	if v.leftMeasured {
		return ""
	}
	return " (estimated from dirty counts)"
}

// shrinkPair returns what the target lacks after the last round (now) and after the one
// before it (before), each measured or estimated, so that the two describe consecutive
// rounds. With the last round's Remaining unknown both come from needed pages, one round
// late: needed(i) is what the target lacked after round i-1. ok is false when there is only
// round 0 and its Remaining is unknown.
func shrinkPair(v view) (now, before float64, ok bool) {
	i := v.n - 1
	if r := v.rounds[i].Remaining; r > 0 {
		switch {
		case i == 0:
			// Before round 0 the target lacked everything.
			return float64(r), max(needed(v.rounds[0]), float64(v.env.TotalPages)), true
		case v.rounds[i-1].Remaining > 0:
			return float64(r), float64(v.rounds[i-1].Remaining), true
		default:
			return float64(r), needed(v.rounds[i]), true
		}
	}
	if i == 0 {
		return 0, 0, false
	}
	return needed(v.rounds[i]), needed(v.rounds[i-1]), true
}
