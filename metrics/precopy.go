package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pagewarp/pagewarp/hybrid"
	"github.com/pagewarp/pagewarp/precopy"
)

// Kinds of pages a pre-copy round handles (label kind of
// pagewarp_precopy_pages_total), besides kindZero (sent as a zero marker)
// and kindDuplicate (sent as a reference to a page of this migration the
// target holds): each dirty page the sender looked at is one of them.
const (
	kindData             = "data"               // sent with its content
	kindKnown            = "known"              // sent as a reference to the target's base snapshot
	kindFakeDirtySkipped = "fake_dirty_skipped" // not sent: written, but its content equals what the target holds
)

// Precopy records what the pre-copy sender and the hybrid policy report:
// ObserveRound after each round, ObserveDecision after each decision. Its
// methods are safe for concurrent use. A nil *Precopy records nothing, so
// that a migration without metrics can call it unconditionally.
type Precopy struct {
	rounds                                   prometheus.Counter
	pages                                    *prometheus.CounterVec
	dirty, carried, rejected, sentBytes      prometheus.Counter
	roundSeconds, trackSeconds, hashSeconds  prometheus.Counter
	lastRound, lastDirty, lastBytes, lastDur prometheus.Gauge
	streams                                  prometheus.Gauge

	decisions *decisions
}

// NewPrecopy returns a Precopy whose metrics are registered on reg, each
// with the constant labels (nil: none). It fails if reg already has
// metrics of the same names and labels.
func NewPrecopy(reg prometheus.Registerer, labels prometheus.Labels) (*Precopy, error) {
	pc := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: subsystemPrecopy,
			Name: name, Help: help, ConstLabels: labels})
	}
	pg := func(subsystem, name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: subsystem,
			Name: name, Help: help, ConstLabels: labels})
	}
	p := &Precopy{
		rounds: pc("rounds_total", "Pre-copy rounds completed (acknowledged by the target)."),
		pages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: subsystemPrecopy,
			Name: "pages_total", Help: "Dirty pages handled by pre-copy rounds, by kind: data, zero, duplicate, known, fake_dirty_skipped.",
			ConstLabels: labels}, []string{"kind"}),
		dirty:        pc("dirty_pages_total", "Pages pre-copy rounds looked at: every page in round 0, then those written since the previous round (carried ones included)."),
		carried:      pc("carried_pages_total", "Pages the target rejected in a round and that went again in the next."),
		rejected:     pc("rejected_pages_total", "Pages the target did not install (torn reads, stale references); they go again in the next round."),
		sentBytes:    pc("sent_bytes_total", "Bytes written on the pre-copy streams, frames included."),
		roundSeconds: pc("round_duration_seconds_total", "Time spent in rounds, from the scan to the target's acknowledgement."),
		trackSeconds: pc("track_seconds_total", "Time spent collecting dirty pages (arming the tracking, in round 0)."),
		hashSeconds:  pc("hash_cpu_seconds_total", "CPU time the hash workers spent hashing and zero-testing pages."),
		lastRound:    pg(subsystemPrecopy, "last_round", "Index of the last completed round (0 is the first)."),
		lastDirty:    pg(subsystemPrecopy, "last_round_dirty_pages", "Pages the last completed round looked at: how far the dirty set has shrunk."),
		lastBytes:    pg(subsystemPrecopy, "last_round_sent_bytes", "Bytes the last completed round wrote on its streams."),
		lastDur:      pg(subsystemPrecopy, "last_round_duration_seconds", "Duration of the last completed round."),
		streams:      pg(subsystemPrecopy, "streams", "Streams the last completed round used."),
		decisions:    newDecisions(labels),
	}
	// The kinds are known: start them at 0 so that rate() works from the
	// first round.
	for _, k := range []string{kindData, kindZero, kindDuplicate, kindKnown, kindFakeDirtySkipped} {
		p.pages.WithLabelValues(k)
	}
	for _, c := range []prometheus.Collector{
		p.rounds, p.pages, p.dirty, p.carried, p.rejected, p.sentBytes,
		p.roundSeconds, p.trackSeconds, p.hashSeconds,
		p.lastRound, p.lastDirty, p.lastBytes, p.lastDur, p.streams,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register pre-copy metrics: %w", err)
		}
	}
	for _, c := range p.decisions.collectors() {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register pre-copy metrics: %w", err)
		}
	}
	return p, nil
}

// ObserveRound records a completed pre-copy round.
func (p *Precopy) ObserveRound(r precopy.RoundStats) {
	if p == nil {
		return
	}
	p.rounds.Inc()
	p.pages.WithLabelValues(kindData).Add(float64(r.Sent))
	p.pages.WithLabelValues(kindZero).Add(float64(r.Zero))
	p.pages.WithLabelValues(kindDuplicate).Add(float64(r.Dup))
	p.pages.WithLabelValues(kindKnown).Add(float64(r.Known))
	p.pages.WithLabelValues(kindFakeDirtySkipped).Add(float64(r.FakeDirty))
	p.dirty.Add(float64(r.Dirty))
	p.carried.Add(float64(r.Carried))
	p.rejected.Add(float64(r.Rejected))
	p.sentBytes.Add(float64(r.Bytes))
	p.roundSeconds.Add(max(r.Duration.Seconds(), 0))
	p.trackSeconds.Add(max(r.TrackTime.Seconds(), 0))
	p.hashSeconds.Add(max(r.HashTime.Seconds(), 0))
	p.lastRound.Set(float64(r.Round))
	p.lastDirty.Set(float64(r.Dirty))
	p.lastBytes.Set(float64(r.Bytes))
	p.lastDur.Set(r.Duration.Seconds())
	p.streams.Set(float64(r.Streams))
}

// ObserveDecision records a decision of the switch policy: it counts it,
// and makes it the one pagewarp_hybrid_decision_info shows. The reason is
// a label value: each decision makes a new series, one at a time.
func (p *Precopy) ObserveDecision(d hybrid.Decision) {
	if p == nil {
		return
	}
	p.decisions.observe(d)
}
