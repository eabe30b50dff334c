package bench

import (
	"fmt"
	"math"
	"strconv"

	"github.com/pagewarp/pagewarp/bench/report"
)

// HybridReport is the JSON of `pagewarp bench hybrid`: one migration per
// workload and policy, over one link.
type HybridReport struct {
	Results []*MigrateResult `json:"results"`
}

// Table is the hybrid table: one row per workload and policy.
func (h *HybridReport) Table() *report.Table {
	title := "hybrid"
	if len(h.Results) > 0 {
		title = "hybrid: link " + h.Results[0].Link
	}
	t := &report.Table{
		Title: title,
		Columns: []report.Column{
			{Name: "workload"}, {Name: "policy"}, {Name: "converged"}, {Name: "total s", Format: "%.2f"},
			{Name: "downtime\nms", Format: "%.1f"}, {Name: "rounds"}, {Name: "postcopy\ns", Format: "%.2f"},
			{Name: "bytes", Align: report.AlignRight}, {Name: "demand"}, {Name: "ok"},
		},
		Notes: []string{"total: from the probe or first round to the last page on the target; downtime: the workload's last step on the source to its first on the target"},
	}
	for _, r := range h.Results {
		t.AddRow(r.Workload, r.Policy, r.Converged, r.TotalSeconds, r.DowntimeMs, r.PrecopyRounds, r.PostcopySeconds,
			FormatSize(int64(r.BytesSent)), r.DemandFaults, r.ResultOK)
	}
	return t
}

// Report is the hybrid report: the table, bytes per round per policy,
// total and post-copy time per workload and policy, and a timeline of one
// migration per workload (adaptive's when it ran).
func (h *HybridReport) Report() *report.Report {
	r := &report.Report{Name: "hybrid", Title: "pagewarp bench hybrid", Data: h, Tables: []*report.Table{h.Table()}}
	if g := h.roundsChart(); g != nil {
		r.Charts = append(r.Charts, g)
	}
	if b := h.timesChart(); b != nil {
		r.Charts = append(r.Charts, b)
	}
	for _, res := range h.timelineRuns() {
		if tl := MigrationTimeline(res); tl != nil {
			r.Charts = append(r.Charts, tl)
		}
	}
	return r
}

// workloads returns the workloads in order of first appearance, and each
// one's results in order.
func (h *HybridReport) workloads() ([]string, map[string][]*MigrateResult) {
	var names []string
	by := map[string][]*MigrateResult{}
	for _, r := range h.Results {
		if by[r.Workload] == nil {
			names = append(names, r.Workload)
		}
		by[r.Workload] = append(by[r.Workload], r)
	}
	return names, by
}

// roundsChart: MiB sent in each pre-copy round and in post-copy, one panel
// per workload, one bar per policy.
func (h *HybridReport) roundsChart() *report.Grid {
	names, by := h.workloads()
	g := &report.Grid{Name: "hybrid-rounds", Title: "MiB sent per pre-copy round and in post-copy, per policy",
		Caption: "bytes per round per policy, one panel per workload", SharedLegend: true}
	for _, w := range names {
		most := 0
		for _, r := range by[w] {
			most = max(most, len(r.RoundBytes))
		}
		b := &report.Bar{Name: fmt.Sprintf("cell%d", len(g.Charts)), Title: w, YLabel: "MiB"}
		for i := range most {
			b.Groups = append(b.Groups, "r"+strconv.Itoa(i))
		}
		b.Groups = append(b.Groups, "post")
		for _, r := range by[w] {
			s := report.BarSeries{Name: r.Policy, Values: map[string]float64{"post": float64(r.PostcopyBytes) / (1 << 20)}}
			for i, b := range r.RoundBytes {
				s.Values["r"+strconv.Itoa(i)] = float64(b) / (1 << 20)
			}
			b.Series = append(b.Series, s)
		}
		g.Charts = append(g.Charts, b)
	}
	if len(g.Charts) == 0 {
		return nil
	}
	return g
}

// timesChart: total and post-copy seconds per workload and policy.
func (h *HybridReport) timesChart() *report.Grid {
	names, by := h.workloads()
	if len(names) == 0 {
		return nil
	}
	var policies []string
	seen := map[string]bool{}
	for _, r := range h.Results {
		if !seen[r.Policy] {
			seen[r.Policy] = true
			policies = append(policies, r.Policy)
		}
	}
	g := &report.Grid{Name: "hybrid-times", Title: "Migration time and post-copy time per workload and policy",
		Caption: "total and post-copy seconds per workload and policy", SharedLegend: true}
	for _, which := range []string{"total", "post-copy"} {
		b := &report.Bar{Name: "cell-" + which, Title: which + " seconds", YLabel: "seconds", Groups: names}
		for _, p := range policies {
			s := report.BarSeries{Name: p, Values: map[string]float64{}}
			for _, w := range names {
				for _, r := range by[w] {
					if r.Policy != p {
						continue
					}
					v := r.TotalSeconds
					if which == "post-copy" {
						v = r.PostcopySeconds
					}
					s.Values[w] = v
				}
			}
			b.Series = append(b.Series, s)
		}
		g.Charts = append(g.Charts, b)
	}
	return g
}

// timelineRuns picks one run per workload to draw: adaptive's, else the
// workload's last.
func (h *HybridReport) timelineRuns() []*MigrateResult {
	names, by := h.workloads()
	var out []*MigrateResult
	for _, w := range names {
		pick := by[w][len(by[w])-1]
		for _, r := range by[w] {
			if r.Policy == "adaptive" {
				pick = r
			}
		}
		out = append(out, pick)
	}
	return out
}

// maxTimelinePoints bounds the demand-fault ticks a timeline draws.
const maxTimelinePoints = 2000

// MigrationTimeline draws one migration: the probe, the pre-copy rounds,
// post-copy, the demand faults as ticks, marks at the switch, the resume
// and completion, and under them demand faults, pushed and background
// pages per second. Nil when r has no timeline.
func MigrationTimeline(r *MigrateResult) *report.Timeline {
	tl := r.Timeline
	if tl == nil {
		return nil
	}
	t := &report.Timeline{
		Name:      fmt.Sprintf("timeline-%s-%s", r.Workload, r.Policy),
		Title:     fmt.Sprintf("%s migrated with policy %s", r.Workload, r.Policy),
		Caption:   fmt.Sprintf("timeline of %s with policy %s: rounds, switch, demand faults, pushes, completion", r.Workload, r.Policy),
		RateLabel: "pages/s",
	}
	if tl.Probe != nil {
		t.Lanes = append(t.Lanes, report.Lane{Name: "probe", Spans: []report.Span{{Start: tl.Probe.Start, End: tl.Probe.End}}})
	}
	if len(tl.Rounds) > 0 {
		l := report.Lane{Name: "pre-copy"}
		for i, s := range tl.Rounds {
			l.Spans = append(l.Spans, report.Span{Start: s.Start, End: s.End, Label: "r" + strconv.Itoa(i)})
		}
		t.Lanes = append(t.Lanes, l)
	}
	if tl.Complete > tl.Switch {
		t.Lanes = append(t.Lanes, report.Lane{Name: "post-copy", Spans: []report.Span{{Start: tl.Switch, End: tl.Complete}}})
	}
	// Demand faults: a tick at each sample where the count rose (one per
	// sample period at most, so ticks mark when faults happened).
	var ticks []float64
	for i := 1; i < len(tl.Samples); i++ {
		if tl.Samples[i].Demand > tl.Samples[i-1].Demand {
			ticks = append(ticks, tl.Samples[i].T)
		}
	}
	if len(ticks) > maxTimelinePoints {
		ticks = ticks[:maxTimelinePoints]
	}
	if len(ticks) > 0 {
		t.Lanes = append(t.Lanes, report.Lane{Name: "demand faults", Points: ticks})
	}
	t.Marks = append(t.Marks, report.Mark{At: tl.Switch, Label: "switch"})
	if tl.Resume >= 0 && tl.Resume-tl.Switch > 0.02*(tl.Complete+1e-9) {
		// The resume follows the switch by the downtime: a mark of its own
		// only when it can be told apart.
		t.Marks = append(t.Marks, report.Mark{At: tl.Resume, Label: "resume"})
	}
	t.Marks = append(t.Marks, report.Mark{At: tl.Complete, Label: "complete"})
	demand, pushed, background := rates(tl.Samples)
	for _, s := range []report.Series{demand, pushed, background} {
		if len(s.X) > 0 {
			t.Rates = append(t.Rates, s)
		}
	}
	if len(t.Lanes) == 0 && len(t.Rates) == 0 {
		return nil
	}
	return t
}

// rates turns cumulative samples into per-second rates between samples.
func rates(ss []TimelinePoint) (demand, pushed, background report.Series) {
	demand.Name, pushed.Name, background.Name = "demand faults/s", "pushed pages/s", "background pages/s"
	for i := 1; i < len(ss); i++ {
		dt := ss[i].T - ss[i-1].T
		if !(dt > 0) || math.IsInf(dt, 0) {
			continue
		}
		mid := ss[i].T
		demand.X, demand.Y = append(demand.X, mid), append(demand.Y, float64(ss[i].Demand-ss[i-1].Demand)/dt)
		pushed.X, pushed.Y = append(pushed.X, mid), append(pushed.Y, float64(ss[i].Pushed-ss[i-1].Pushed)/dt)
		background.X, background.Y = append(background.X, mid), append(background.Y, float64(ss[i].Background-ss[i-1].Background)/dt)
	}
	return
}
