package metrics

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pagewarp/pagewarp/hybrid"
)

// decisions are the pagewarp_hybrid_decision* metrics of a switch policy,
// shared by the Precopy recorder (pagewarp's own migrations) and the
// QEMUSwitch recorder (QEMU's), so that the same queries read both.
type decisions struct {
	count     *prometheus.CounterVec
	info      *prometheus.GaugeVec
	round     prometheus.Gauge
	converged prometheus.Gauge

	mu       sync.Mutex // orders observe calls
	lastInfo []string   // label values of the decision_info series set last; guarded by mu
}

func newDecisions(labels prometheus.Labels) *decisions {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: subsystemHybrid, Name: name, Help: help, ConstLabels: labels})
	}
	return &decisions{
		count: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: subsystemHybrid,
			Name: "decisions_total", Help: "Decisions of the switch policy, by policy and action (continue, stop-and-copy, switch).",
			ConstLabels: labels}, []string{"policy", "action"}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: subsystemHybrid,
			Name: "decision_info", Help: "The latest decision of the switch policy, with its reason: 1 for that one series.",
			ConstLabels: labels}, []string{"policy", "action", "reason"}),
		round:     g("decision_round", "Round the latest decision was taken after (-1: before any round)."),
		converged: g("decision_converged", "1 unless the latest decision gave up on convergence (e.g. pre-copy after its last round)."),
	}
}

// collectors returns the metrics to register.
func (d *decisions) collectors() []prometheus.Collector {
	return []prometheus.Collector{d.count, d.info, d.round, d.converged}
}

// observe counts dec and makes it the one pagewarp_hybrid_decision_info
// shows. The reason is a label value: each decision makes a new series,
// one at a time.
func (d *decisions) observe(dec hybrid.Decision) {
	action := dec.Action.String()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.count.WithLabelValues(dec.Policy, action).Inc()
	info := []string{dec.Policy, action, dec.Reason}
	// Set the new series before deleting the old one, so that a scrape in
	// between sees a decision (perhaps two) rather than none.
	d.info.WithLabelValues(info...).Set(1)
	if d.lastInfo != nil && !slices.Equal(d.lastInfo, info) {
		d.info.DeleteLabelValues(d.lastInfo...)
	}
	d.lastInfo = info
	d.round.Set(float64(dec.Round))
	d.converged.Set(boolValue(dec.Converged))
}
