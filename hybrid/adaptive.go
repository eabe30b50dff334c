package hybrid

// invalidationBytes is what the switch sends per page the target must drop: a page number.
const invalidationBytes = 8

// Adaptive is pagewarp's own policy: of every plan "k more rounds, then stop-and-copy or
// switch" (k from 0 to the rounds MaxRounds still allows), it picks the one of least
// predicted cost, the migration time still to come plus the post-copy stall, among those
// whose downtime fits the budget, and does its first step. With L pages missing, B the
// bandwidth, P the page size, S the stall per post-copy page, N the region's pages, I the
// last round's Interval (0 back to back), and λ the dirty rate as uniform writes over N
// pages (λ = -ln(1-D/N)/w from the latest rounds' D needed pages in windows w; ≈ r/N while
// D ≪ N, infinite once a round dirtied every page):
//
//	a round:        takes R = L·P/B, lasts w = max(R, I), leaves L' = N·(1-exp(-λ·w))
//	stop-and-copy:  downtime L·P/B,  cost L·P/B
//	switch:         downtime L·8/B,  cost L·8/B + L·P/B + L·S  (invalidations, push, stall)
//	plan cost:      Σ w of its rounds + the cost of its last step
//
// Ties go to the plan with fewer rounds, and stop-and-copy before switch. An unknown dirty
// rate (round 0 alone, unmeasured) allows only plans of 0 rounds; when the best of those is
// a switch, Adaptive continues instead, to measure the rate.
//
// Before any round Adaptive runs the full round 0 unless the write rate was probed
// (Env.ProbeDirty, ProbeWindow) and the bandwidth and region size are known: then round 0 is
// the first round of the plans above, with L = N, and when none of them beats switching at
// once, Adaptive switches before sending anything (pure post-copy). See docs/hybrid.md.
type Adaptive struct{}

// Name returns "adaptive".
func (Adaptive) Name() string { return "adaptive" }

// plan is one candidate: rounds more rounds, then action.
type plan struct {
	rounds   int
	action   Action
	cost     float64 // seconds: time to come plus post-copy stall
	downtime float64 // seconds
	left     float64 // pages missing at the final step
}

// plans returns the cheapest plan within horizon more rounds that fits the budget (found
// false: none does), and the plans of 0 rounds for each final action, fitting or not.
func (p Adaptive) plans(v view, horizon int) (best plan, found bool, stopNow, switchNow plan) {
	P, B, S := float64(v.env.PageSize), v.bw, v.env.PostcopyStallPerPage.Seconds()
	budget := v.budget()
	consider := func(c plan) {
		if c.downtime <= budget && (!found || c.cost < best.cost) {
			best, found = c, true
		}
	}
	L, elapsed := v.left, 0.0
	for k := 0; ; k++ {
		push := L * P / B
		stop := plan{rounds: k, action: StopAndCopy, cost: elapsed + push, downtime: push, left: L}
		inval := L * invalidationBytes / B
		sw := plan{rounds: k, action: Switch, cost: elapsed + inval + push + L*S, downtime: inval, left: L}
		consider(stop)
		consider(sw)
		if k == 0 {
			stopNow, switchNow = stop, sw
		}
		if k >= horizon || !v.rateKnown {
			return
		}
		w := max(push, v.last.Interval.Seconds())
		elapsed += w
		L = v.predictLack(w)
	}
}

// Decide implements Policy.
func (p Adaptive) Decide(env Env, rounds []Round) Decision {
	v := newView(env, rounds)
	d := v.decider(p.Name())
	d.common(v)
	d.note("stall_per_page_ms", ms(v.env.PostcopyStallPerPage.Seconds()))
	if v.n == 0 {
		return p.first(v, d)
	}
	if v.nothingLeft() {
		return nothingLeft(d, v)
	}
	if v.bw <= 0 {
		if v.n >= v.env.MaxRounds {
			return d.decide(Switch, false, "gave up on pre-copy after %s rounds, the most allowed, with the bandwidth unknown: switch with %s left",
				d.c("rounds", float64(v.n)), d.c("left_pages", v.left))
		}
		return d.decide(Continue, true, "bandwidth unknown (no round measured bytes over a duration): another round to measure it")
	}
	horizon := max(v.env.MaxRounds-v.n, 0)
	best, found, stopNow, switchNow := p.plans(v, horizon)
	d.note("stop_now_downtime_ms", ms(stopNow.downtime))
	d.note("stop_now_cost_ms", ms(stopNow.cost))
	d.note("switch_now_downtime_ms", ms(switchNow.downtime))
	d.note("switch_now_cost_ms", ms(switchNow.cost))
	if !found {
		return d.decide(Switch, false, "no plan fits the budget %s, not even the switch's downtime %s: switch now, the least downtime there is",
			d.c("budget_ms", ms(v.budget())), d.c("switch_now_downtime_ms", ms(switchNow.downtime)))
	}
	d.note("plan_rounds", float64(best.rounds))
	d.note("plan_cost_ms", ms(best.cost))
	d.note("plan_left_pages", best.left)

	if !v.rateKnown && best.action == Switch && v.n < v.env.MaxRounds {
		return d.decide(Continue, true, "dirty rate not measured yet and the predicted downtime %s exceeds the budget %s: another round to measure the rate before choosing the switch",
			d.c("predicted_downtime_ms", ms(stopNow.downtime)), d.c("budget_ms", ms(v.budget())))
	}
	if best.rounds == 0 {
		if horizon == 0 && v.rateKnown {
			// MaxRounds allows no round more: would one more have paid?
			if more, ok, _, _ := p.plans(v, 1); ok && more.rounds == 1 {
				return d.decide(Switch, false, "gave up on pre-copy after %s rounds, the most allowed, though another round would still pay (%s against %s now): switch with %s left",
					d.c("rounds", float64(v.n)), d.c("plan_cost_ms", ms(more.cost)), d.c("switch_now_cost_ms", ms(switchNow.cost)), d.c("left_pages", v.left))
			}
		}
		if best.action == StopAndCopy {
			return d.decide(StopAndCopy, true, "stop-and-copy now costs least: %s of downtime within the budget %s, against %s to switch now",
				d.c("stop_now_downtime_ms", ms(stopNow.downtime)), d.c("budget_ms", ms(v.budget())), d.c("switch_now_cost_ms", ms(switchNow.cost)))
		}
		// A switch is best now only when stopping now does not fit: at the same L it costs
		// the same push plus the stall.
		return d.decide(Switch, true, "switch now costs least: %s of time and stall with %s left, stop-and-copy's downtime %s exceeds the budget %s and more rounds do not pay",
			d.c("switch_now_cost_ms", ms(switchNow.cost)), d.c("left_pages", v.left), d.c("stop_now_downtime_ms", ms(stopNow.downtime)), d.c("budget_ms", ms(v.budget())))
	}
	return d.decide(Continue, true, "another round pays: %s more round(s) then %s cost %s, against %s to switch now (dirty rate %s, link %s)",
		d.c("plan_rounds", float64(best.rounds)), best.action, d.c("plan_cost_ms", ms(best.cost)), d.c("switch_now_cost_ms", ms(switchNow.cost)),
		d.c("dirty_rate_pages_s", v.rate), d.c("bandwidth_bytes_s", v.bw))
}

// first decides before round 0.
func (p Adaptive) first(v view, d *decider) Decision {
	if !v.rateKnown || v.bw <= 0 || v.capPages <= 0 {
		return d.decide(Continue, true, "no round yet and no probed write rate: pre-copy starts with the full round")
	}
	d.note("probe_pages_dirty", float64(v.env.ProbeDirty))
	d.note("probe_window_ms", ms(v.env.ProbeWindow.Seconds()))
	best, found, _, switchNow := p.plans(v, v.env.MaxRounds)
	d.note("switch_now_cost_ms", ms(switchNow.cost))
	d.note("switch_now_downtime_ms", ms(switchNow.downtime))
	if found && best.rounds > 0 {
		d.note("plan_rounds", float64(best.rounds))
		d.note("plan_left_pages", best.left)
		return d.decide(Continue, true, "pre-copy pays: %s round(s) then %s cost %s, against %s to switch before any round (probed write rate %s, link %s)",
			d.c("plan_rounds", float64(best.rounds)), best.action, d.c("plan_cost_ms", ms(best.cost)), d.c("switch_now_cost_ms", ms(switchNow.cost)),
			d.c("dirty_rate_pages_s", v.rate), d.c("bandwidth_bytes_s", v.bw))
	}
	if found && best.action == StopAndCopy {
		// The whole region fits the budget: the full round with the workload running
		// costs the same bytes and no downtime, and its result decides.
		return d.decide(Continue, true, "the whole region fits the downtime budget %s: pre-copy starts with the full round",
			d.c("budget_ms", ms(v.budget())))
	}
	return d.decide(Switch, true, "switch before any round: no plan of pre-copy rounds beats %s for switching now (probed write rate %s over %s, link %s)",
		d.c("switch_now_cost_ms", ms(switchNow.cost)), d.c("dirty_rate_pages_s", v.rate), d.c("total_pages", v.capPages), d.c("bandwidth_bytes_s", v.bw))
}
