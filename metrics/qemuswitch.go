package metrics

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pagewarp/pagewarp/hybrid"
	"github.com/pagewarp/pagewarp/qemu/qmp"
)

// subsystemQEMUSwitch is the subsystem of the QMP switch controller's metrics.
const subsystemQEMUSwitch = "qemuswitch"

// QEMUSwitch records what the QMP switch controller (qemu/switchctl) sees and decides: it
// implements switchctl.Observer. QEMU's figures are gauges mirroring the latest query-migrate
// of the source; rounds are counted; decisions use the pagewarp_hybrid_* names of the Precopy
// recorder, so that the same queries and dashboards read pagewarp's own migrations and QEMU's
// (the two recorders are not meant to share a registry). Its methods are safe for concurrent
// use; a nil *QEMUSwitch records nothing.
type QEMUSwitch struct {
	rounds                                    prometheus.Counter
	lastDirty, lastBytes, lastDur, lastRemain prometheus.Gauge
	transferred, remaining, total, bandwidth  prometheus.Gauge
	dirtyRate, syncs, postcopyRequests        prometheus.Gauge
	status                                    *prometheus.GaugeVec

	decisions *decisions

	mu         sync.Mutex
	lastStatus string // guarded by mu
}

// NewQEMUSwitch returns a QEMUSwitch whose metrics are registered on reg, each with the
// constant labels (nil: none).
func NewQEMUSwitch(reg prometheus.Registerer, labels prometheus.Labels) (*QEMUSwitch, error) {
	g := func(subsystem, name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: subsystem, Name: name, Help: help, ConstLabels: labels})
	}
	gv := func(name, help string, l ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: subsystemQEMUSwitch, Name: name, Help: help, ConstLabels: labels}, l)
	}
	s := &QEMUSwitch{
		rounds: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: subsystemQEMUSwitch,
			Name: "rounds_total", Help: "Pre-copy rounds of the source QEMU seen by the controller (increments of ram.dirty-sync-count).", ConstLabels: labels}),
		lastDirty:   g(subsystemQEMUSwitch, "last_round_dirty_pages", "Pages the last round had to send (round 0: every page)."),
		lastBytes:   g(subsystemQEMUSwitch, "last_round_transferred_bytes", "Bytes QEMU transferred during the last round."),
		lastDur:     g(subsystemQEMUSwitch, "last_round_duration_seconds", "Duration of the last round, to within the controller's sampling interval."),
		lastRemain:  g(subsystemQEMUSwitch, "last_round_remaining_pages", "Pages dirty after the last round (ram.remaining at the sync that ended it)."),
		transferred: g(subsystemQEMUSwitch, "transferred_bytes", "The source's ram.transferred in the latest sample."),
		remaining:   g(subsystemQEMUSwitch, "remaining_bytes", "The source's ram.remaining in the latest sample."),
		total:       g(subsystemQEMUSwitch, "ram_bytes", "The source's ram.total: RAM to migrate."),
		bandwidth:   g(subsystemQEMUSwitch, "bandwidth_bytes_per_second", "The source's ram.mbps in the latest sample, in bytes/s."),
		dirtyRate:   g(subsystemQEMUSwitch, "dirty_pages_rate", "The source's ram.dirty-pages-rate in the latest sample (pages/s, refreshed by QEMU at most once a second)."),
		syncs:       g(subsystemQEMUSwitch, "dirty_syncs", "The source's ram.dirty-sync-count in the latest sample: syncs of the dirty bitmap so far."),
		postcopyRequests: g(subsystemQEMUSwitch, "postcopy_requests", "The source's ram.postcopy-requests in the latest sample (every request message, "+
			"injected ones too)."),
		status:    gv("status_info", "The source's migration status in the latest sample: 1 for that one series.", "status"),
		decisions: newDecisions(labels),
	}
	for _, c := range []prometheus.Collector{
		s.rounds, s.lastDirty, s.lastBytes, s.lastDur, s.lastRemain,
		s.transferred, s.remaining, s.total, s.bandwidth, s.dirtyRate, s.syncs, s.postcopyRequests, s.status,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register QEMU switch metrics: %w", err)
		}
	}
	for _, c := range s.decisions.collectors() {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register QEMU switch metrics: %w", err)
		}
	}
	return s, nil
}

// ObserveMigration records a sample of the source's query-migrate.
func (s *QEMUSwitch) ObserveMigration(mi qmp.MigrationInfo) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.WithLabelValues(mi.Status).Set(1)
	if s.lastStatus != "" && s.lastStatus != mi.Status {
		s.status.DeleteLabelValues(s.lastStatus)
	}
	s.lastStatus = mi.Status
	if r := mi.RAM; r != nil {
		s.transferred.Set(float64(r.Transferred))
		s.remaining.Set(float64(r.Remaining))
		s.total.Set(float64(r.Total))
		s.bandwidth.Set(r.Mbps * 1e6 / 8)
		s.dirtyRate.Set(float64(r.DirtyPagesRate))
		s.syncs.Set(float64(r.DirtySyncCount))
		s.postcopyRequests.Set(float64(r.PostcopyRequests))
	}
}

// ObserveRound records a round completed.
func (s *QEMUSwitch) ObserveRound(r hybrid.Round) {
	if s == nil {
		return
	}
	s.rounds.Inc()
	s.lastDirty.Set(float64(r.Dirty))
	s.lastBytes.Set(float64(r.Bytes))
	s.lastDur.Set(r.Duration.Seconds())
	s.lastRemain.Set(float64(r.Remaining))
}

// ObserveDecision records a decision of the policy, as Precopy.ObserveDecision does.
func (s *QEMUSwitch) ObserveDecision(d hybrid.Decision) {
	if s == nil {
		return
	}
	s.decisions.observe(d)
}
