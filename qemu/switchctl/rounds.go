package switchctl

import (
	"time"

	"github.com/pagewarp/pagewarp/hybrid"
	"github.com/pagewarp/pagewarp/qemu/qmp"
)

// tracker turns successive query-migrate samples of an active pre-copy into hybrid rounds (the
// mapping in the package documentation). It does no I/O.
type tracker struct {
	started bool
	late    bool      // the first sample came after round 0
	syncs   uint64    // dirty-sync-count that began the current round
	at      time.Time // when the current round began
	// QEMU's counters when the current round began.
	transferred, normal, duplicate uint64
	dirty                          uint64 // pages the current round had to send
	mbpsSum                        float64
	mbpsN                          int
	bandwidth                      float64 // bytes/s over the latest complete round; 0 unknown
	rounds                         []hybrid.Round
}

// pageSize returns the sample's page size (4096 when QEMU does not say).
func pageSize(r *qmp.RAMStats) uint64 {
	if r.PageSize == 0 {
		return hybrid.DefaultPageSize
	}
	return r.PageSize
}

// observe takes a sample taken at at and returns the round it completed, if any. Samples other
// than an active pre-copy with RAM figures are ignored.
func (t *tracker) observe(at time.Time, mi qmp.MigrationInfo) (hybrid.Round, bool) {
	r := mi.RAM
	if r == nil || mi.Status != "active" {
		return hybrid.Round{}, false
	}
	ps := pageSize(r)
	if r.Mbps > 0 {
		t.mbpsSum += r.Mbps
		t.mbpsN++
	}
	if !t.started {
		t.started = true
		t.syncs = r.DirtySyncCount
		if r.DirtySyncCount <= 1 {
			// The bulk pass, running since setup ended; QEMU's counters started at 0.
			since := time.Duration(mi.TotalTime-min(mi.SetupTime, mi.TotalTime)) * time.Millisecond
			t.at = at.Add(-since)
			t.dirty = r.Total / ps
			return hybrid.Round{}, false
		}
		t.late = true
		t.begin(at, r)
		return hybrid.Round{}, false
	}
	if r.DirtySyncCount <= t.syncs {
		return hybrid.Round{}, false
	}
	round := hybrid.Round{
		Index:     len(t.rounds),
		Dirty:     t.dirty,
		Sent:      r.Normal - min(t.normal, r.Normal),
		Refs:      r.Duplicate - min(t.duplicate, r.Duplicate),
		Bytes:     r.Transferred - min(t.transferred, r.Transferred),
		Duration:  max(at.Sub(t.at), 0),
		Remaining: r.Remaining / ps,
	}
	t.rounds = append(t.rounds, round)
	t.bandwidth = 0
	if t.mbpsN > 0 {
		t.bandwidth = t.mbpsSum / float64(t.mbpsN) * 1e6 / 8
	}
	t.mbpsSum, t.mbpsN = 0, 0
	t.syncs = r.DirtySyncCount
	t.begin(at, r)
	return round, true
}

// begin starts a round at at, after the sync whose figures r shows.
func (t *tracker) begin(at time.Time, r *qmp.RAMStats) {
	t.at = at
	t.transferred, t.normal, t.duplicate = r.Transferred, r.Normal, r.Duplicate
	t.dirty = r.Remaining / pageSize(r)
}

// env returns the policy's environment for the latest sample's figures.
func (t *tracker) env(r *qmp.RAMStats, budget time.Duration, maxRounds int, stall time.Duration) hybrid.Env {
	e := hybrid.Env{
		DowntimeBudget:       budget,
		MaxRounds:            maxRounds,
		Bandwidth:            t.bandwidth,
		PostcopyStallPerPage: stall,
	}
	if r != nil {
		ps := pageSize(r)
		e.PageSize = int(ps)
		e.TotalPages = r.Total / ps
		if e.Bandwidth == 0 && r.Mbps > 0 {
			e.Bandwidth = r.Mbps * 1e6 / 8
		}
	}
	return e
}
