package hybrid

// Precopy is classic pre-copy: it continues until the predicted downtime, the pages that
// would be left × PageSize / bandwidth, fits the budget, then stops and copies. After
// Env.MaxRounds rounds without fitting it gives up: StopAndCopy with Converged false. The
// caller reports the non-convergence and still has to finish the migration: it stops and
// copies anyway, so the downtime exceeds the budget.
type Precopy struct{}

// Name returns "precopy".
func (Precopy) Name() string { return "precopy" }

// Decide implements Policy.
func (p Precopy) Decide(env Env, rounds []Round) Decision {
	v := newView(env, rounds)
	d := v.decider(p.Name())
	d.common(v)
	if v.n == 0 {
		return d.decide(Continue, true, "no round yet: pre-copy starts with the full round")
	}
	if v.nothingLeft() {
		return nothingLeft(d, v)
	}
	t, ok := v.downtime(v.left)
	if !ok {
		if v.n >= v.env.MaxRounds {
			return d.decide(StopAndCopy, false, "did not converge in %s rounds: the bandwidth is unknown (no round measured bytes over a duration), so the caller stops and copies anyway with a downtime nobody predicted",
				d.c("rounds", float64(v.n)))
		}
		return d.decide(Continue, true, "bandwidth unknown (no round measured bytes over a duration): another round to measure it")
	}
	if t <= v.budget() {
		return fitsBudget(d, v, t)
	}
	if v.n >= v.env.MaxRounds {
		return d.decide(StopAndCopy, false, "did not converge in %s rounds: predicted downtime %s (%s at %s) exceeds the budget %s, so the caller stops and copies anyway and the downtime exceeds the budget",
			d.c("rounds", float64(v.n)), d.c("predicted_downtime_ms", ms(t)), d.c("left_pages", v.left), d.c("bandwidth_bytes_s", v.bw), d.c("budget_ms", ms(v.budget())))
	}
	return d.decide(Continue, true, "predicted downtime %s (%s at %s) exceeds the budget %s: another round",
		d.c("predicted_downtime_ms", ms(t)), d.c("left_pages", v.left), d.c("bandwidth_bytes_s", v.bw), d.c("budget_ms", ms(v.budget())))
}

// fitsBudget is the stop-and-copy of every policy that watches the budget,
// once the predicted downtime t (seconds) fits it.
func fitsBudget(d *decider, v view, t float64) Decision {
	return d.decide(StopAndCopy, true, "predicted downtime %s (%s at %s) fits the budget %s",
		d.c("predicted_downtime_ms", ms(t)), d.c("left_pages", v.left), d.c("bandwidth_bytes_s", v.bw), d.c("budget_ms", ms(v.budget())))
}

// nothingLeft is every policy's answer (postcopy's aside) after a round that found no dirty
// page with nothing remaining.
func nothingLeft(d *decider, v view) Decision {
	return d.decide(StopAndCopy, true, "round %s found no dirty page and nothing remains: stop and copy, nothing is left to send",
		d.c("round", float64(v.last.Index)))
}

// Postcopy is pure post-copy: it switches before any round (the caller asks with rounds
// nil), and switches if asked after a round too. It never looks at the budget.
type Postcopy struct{}

// Name returns "postcopy".
func (Postcopy) Name() string { return "postcopy" }

// Decide implements Policy.
func (p Postcopy) Decide(env Env, rounds []Round) Decision {
	v := newView(env, rounds)
	d := v.decider(p.Name())
	d.common(v)
	if v.n == 0 {
		return d.decide(Switch, true, "post-copy: switch before any pre-copy round, every page is fetched after the switch")
	}
	return d.decide(Switch, true, "post-copy: switch at once after round %s, %s left for post-copy",
		d.c("round", float64(v.last.Index)), d.c("left_pages", v.left))
}

// Traditional is the traditional hybrid, libvirt's postcopy-after-precopy: one full round
// (round 0), then switch, whatever the budget. It stops and copies only when a round left
// nothing (a region with no pages).
type Traditional struct{}

// Name returns "traditional".
func (Traditional) Name() string { return "traditional" }

// Decide implements Policy.
func (p Traditional) Decide(env Env, rounds []Round) Decision {
	v := newView(env, rounds)
	d := v.decider(p.Name())
	d.common(v)
	if v.n == 0 {
		return d.decide(Continue, true, "traditional hybrid: one full pre-copy round before the switch")
	}
	if v.nothingLeft() {
		return nothingLeft(d, v)
	}
	return d.decide(Switch, true, "traditional hybrid: switch after round %s, %s left for post-copy",
		d.c("round", float64(v.last.Index)), d.c("left_pages", v.left))
}
