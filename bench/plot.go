package bench

import (
	"fmt"
	"math"

	"github.com/pagewarp/pagewarp/bench/report"
)

// This file turns the suites' results into report.Reports: the table the
// terminal shows (and table.txt and the CSV hold) and the charts. Each
// builder depends only on the result, so a report saved with --json
// re-renders to the same folder with --from.

// Table is the faults table: p50 and p99 per mode, the ratio to the
// baseline and the pull throughput.
func (r *FaultsResult) Table() *report.Table {
	t := &report.Table{
		Title:   fmt.Sprintf("fault latency seen by the faulting thread (%d faults each, %d CPUs, Linux %s)", r.Samples, r.CPUs, r.Kernel),
		Columns: []report.Column{{Name: "served by"}, {Name: "p50 µs", Format: "%.1f"}, {Name: "p99 µs", Format: "%.1f"}},
	}
	if r.BaselineNote != "" {
		t.AddRow(labelBaseline, "-", "-")
	} else {
		t.AddRow(labelBaseline, r.BaselineP50, r.BaselineP99)
	}
	t.AddRow(labelInprocess(r.SpinMicros), r.InprocessP50, r.InprocessP99)
	t.AddRow(labelSpin, r.InprocessSpinP50, r.InprocessSpinP99)
	t.AddRow(labelLoopback, r.LoopbackP50, r.LoopbackP99)
	if r.BaselineNote != "" {
		t.Notes = append(t.Notes, "baseline unavailable: "+r.BaselineNote)
	} else {
		t.Notes = append(t.Notes, fmt.Sprintf("in-process p50 / baseline p50 = %.2f", r.InprocessOverBase))
	}
	t.Notes = append(t.Notes, fmt.Sprintf("background pull over loopback: %s in %.3fs = %.2f GB/s", FormatSize(r.PullBytes), r.PullSeconds, r.PullGbps))
	return t
}

// cdfFloorMicros is where a latency below the clock's resolution (1 ns) is
// drawn on the CDF's log axis.
const cdfFloorMicros = 0.001

// Report is the faults report: the table and, when the result has them,
// the latency CDFs of every mode on one log axis.
func (r *FaultsResult) Report() *report.Report {
	rep := &report.Report{Name: "faults", Title: "pagewarp bench faults", Data: r, Tables: []*report.Table{r.Table()}}
	if len(r.CDF) > 0 {
		c := &report.CDF{
			Name:    "faults-cdf",
			Title:   fmt.Sprintf("Fault latency seen by the faulting thread (%d faults per mode)", r.Samples),
			Caption: "fault latency CDF per mode (log x)",
			XLabel:  "latency (µs, log scale)",
			LogX:    true,
			Legend:  report.BottomRight,
		}
		for _, m := range r.CDF {
			us := make([]float64, len(m.US))
			for i, v := range m.US {
				us[i] = max(v, cdfFloorMicros)
			}
			q := report.Quantiles{Name: m.Label, P: m.P, X: us}
			if m.Mode == "baseline" {
				q.Colour = report.Grey
			}
			c.Curves = append(c.Curves, q)
		}
		rep.Charts = append(rep.Charts, c)
	}
	return rep
}

// Table is the prefetch table: one row per workload and predictor, with
// demand faults and post-copy time relative to "none".
func (rep *PrefetchReport) Table() *report.Table {
	s := rep.Setup
	t := &report.Table{
		Title: fmt.Sprintf("prefetch: %d pages of %d bytes, %d threads, budget %d pages per fault (%s), probe every %d, pull %v",
			s.Pages, s.PageSize, s.Threads, s.Budget, s.Window, s.ProbeEvery, s.Pull),
		Columns: []report.Column{
			{Name: "workload"}, {Name: "predictor"}, {Name: "demand\nfaults"}, {Name: "pushed"}, {Name: "used"},
			{Name: "precis.", Format: "%.3f"}, {Name: "postcopy\nseconds", Format: "%.3f"}, {Name: "faults\n/none"},
			{Name: "time\n/none"}, {Name: "ok"},
		},
		Notes: []string{"warming: " + s.Warming},
		Gap:   1, // ten columns: as compact as the table always was
	}
	none := map[string]uint64{}
	noneSec := map[string]float64{}
	for _, r := range rep.Results {
		if r.Predictor == "none" {
			none[r.Workload], noneSec[r.Workload] = r.DemandFaults, r.PostcopySeconds
		}
	}
	for _, r := range rep.Results {
		fr, tr := "-", "-"
		if n := none[r.Workload]; n > 0 {
			fr = fmt.Sprintf("%.3f", float64(r.DemandFaults)/float64(n))
		}
		if n := noneSec[r.Workload]; n > 0 {
			tr = fmt.Sprintf("%.3f", r.PostcopySeconds/n)
		}
		t.AddRow(r.Workload, r.Predictor, r.DemandFaults, r.Pushed, r.PushedUsed, r.Precision, r.PostcopySeconds, fr, tr, r.ResultOK)
	}
	return t
}

// prefetchTarget is the precision target drawn on the precision chart.
const prefetchTarget = 0.7

// prefetchOrder returns the workloads and predictors in order of first
// appearance and the first result of each pair.
func prefetchOrder(rep *PrefetchReport) (workloads, predictors []string, cell map[[2]string]*PrefetchResult) {
	seenW, seenP := map[string]bool{}, map[string]bool{}
	cell = map[[2]string]*PrefetchResult{}
	for i := range rep.Results {
		r := &rep.Results[i]
		if !seenW[r.Workload] {
			seenW[r.Workload] = true
			workloads = append(workloads, r.Workload)
		}
		if !seenP[r.Predictor] {
			seenP[r.Predictor] = true
			predictors = append(predictors, r.Predictor)
		}
		if k := [2]string{r.Workload, r.Predictor}; cell[k] == nil {
			cell[k] = r
		}
	}
	return workloads, predictors, cell
}

// PrefetchChart is the prefetch comparison in two panels of grouped bars,
// one group per workload and one bar per predictor (in order of first
// appearance in rep.Results, the first result of a pair counting):
//
//   - demand faults relative to the predictor "none" of the same workload,
//     on a log axis, with the floor 1/(budget+1) that a predictor pushing
//     its whole budget after every fault can reach at best; a workload
//     without a "none" result (or whose "none" run had no demand fault),
//     and a run with no demand fault at all, have no bar here;
//   - precision (pushed pages used / pushed) from 0 to 1 with the target
//     0.7; "none" pushes nothing and has no bar.
//
// It returns nil when rep has no bar to draw.
func PrefetchChart(rep *PrefetchReport) *report.Grid {
	workloads, predictors, cell := prefetchOrder(rep)
	ratio := &report.Bar{Name: "demand", Title: "Demand faults relative to none (log scale, lower is better)",
		YLabel: "demand faults / none", LogY: true, Groups: workloads}
	if k := rep.Setup.Budget; k > 0 {
		ratio.Refs = []report.Ref{{Y: 1 / float64(k+1), Label: fmt.Sprintf("floor 1/(k+1) = %.3f", 1/float64(k+1))}}
	}
	precision := &report.Bar{Name: "precision", Title: "Precision: pushed pages used / pushed (higher is better)",
		YLabel: "precision", Groups: workloads, Refs: []report.Ref{{Y: prefetchTarget, Label: "target 0.7"}}}
	for _, p := range predictors {
		rs := report.BarSeries{Name: p, Values: map[string]float64{}}
		ps := report.BarSeries{Name: p, Values: map[string]float64{}}
		if p == "none" {
			rs.Colour, ps.Colour = report.Grey, report.Grey
		}
		for _, w := range workloads {
			r := cell[[2]string{w, p}]
			if r == nil {
				continue
			}
			if base := cell[[2]string{w, "none"}]; base != nil && base.DemandFaults > 0 && r.DemandFaults > 0 {
				rs.Values[w] = float64(r.DemandFaults) / float64(base.DemandFaults)
			}
			if p != "none" && !math.IsNaN(r.Precision) && !math.IsInf(r.Precision, 0) {
				ps.Values[w] = r.Precision
			}
		}
		if len(rs.Values) > 0 {
			ratio.Series = append(ratio.Series, rs)
		}
		if len(ps.Values) > 0 {
			precision.Series = append(precision.Series, ps)
		}
	}
	g := &report.Grid{
		Name:         "prefetch",
		Title:        fmt.Sprintf("pagewarp prefetch: %d pages, %d threads, budget %d", rep.Setup.Pages, rep.Setup.Threads, rep.Setup.Budget),
		Caption:      "demand faults relative to none (log) and precision, per workload and predictor",
		Cols:         1,
		SharedLegend: true,
		Width:        1100,
		Height:       760,
	}
	for _, b := range []*report.Bar{ratio, precision} {
		if len(b.Series) > 0 {
			g.Charts = append(g.Charts, b)
		}
	}
	if len(g.Charts) == 0 {
		return nil
	}
	return g
}

// PrefetchSVG renders PrefetchChart(rep) as SVG.
func PrefetchSVG(rep *PrefetchReport) ([]byte, error) {
	g := PrefetchChart(rep)
	if g == nil {
		return nil, fmt.Errorf("prefetch plot: no results to plot")
	}
	return report.SVG(g)
}

// PrefetchDemandChart is demand faults over time since the post-copy
// started, one panel per workload and one step line per predictor, from
// the runs' DemandOverTime (nil when no run has one: reports made before
// it was recorded).
func PrefetchDemandChart(rep *PrefetchReport) *report.Grid {
	workloads, predictors, cell := prefetchOrder(rep)
	g := &report.Grid{
		Name:         "prefetch-demand",
		Title:        "Demand faults since the post-copy started (cumulative)",
		Caption:      "cumulative demand faults over time, one panel per workload, one line per predictor",
		SharedLegend: true,
	}
	for _, w := range workloads {
		l := &report.Line{Name: fmt.Sprintf("cell%d", len(g.Charts)), Title: w, XLabel: "seconds since the post-copy start", YLabel: "demand faults", Step: true}
		for _, p := range predictors {
			r := cell[[2]string{w, p}]
			if r == nil || r.DemandOverTime == nil || len(r.DemandOverTime.Seconds) == 0 {
				continue
			}
			c := r.DemandOverTime
			s := report.Series{Name: p, X: c.Seconds, Y: make([]float64, len(c.Count))}
			for i, n := range c.Count {
				s.Y[i] = float64(n)
			}
			if p == "none" {
				s.Colour = report.Grey
			}
			l.Series = append(l.Series, s)
		}
		if len(l.Series) > 0 {
			g.Charts = append(g.Charts, l)
		}
	}
	if len(g.Charts) == 0 {
		return nil
	}
	return g
}

// Report is the prefetch report: the table, the comparison chart and,
// when recorded, demand faults over time.
func (rep *PrefetchReport) Report() *report.Report {
	r := &report.Report{Name: "prefetch", Title: "pagewarp bench prefetch", Data: rep, Tables: []*report.Table{rep.Table()}}
	if g := PrefetchChart(rep); g != nil {
		r.Charts = append(r.Charts, g)
	}
	if g := PrefetchDemandChart(rep); g != nil {
		r.Charts = append(r.Charts, g)
	}
	return r
}

// Table is the pre-copy table: one row per workload, filter setting and
// stream count; the notes hold the filter comparison (bytes per dirty page
// in rounds 2 and later, filter on over off).
func (rep *PrecopyReport) Table() *report.Table {
	s := rep.Setup
	t := &report.Table{
		Title: fmt.Sprintf("precopy: %d pages of %d bytes, %d writer threads at %.0f steps/s (runaway unpaced), rounds every %s, tracking %s, hash %s, %s, %d CPUs\nmemcpy %.2f GB/s",
			s.Pages, s.PageSize, s.Threads, s.Rate, s.Interval, s.Track, s.Hash, s.Link, s.CPUs, s.MemcpyGbps),
		Columns: []report.Column{
			{Name: "workload"}, {Name: "filter"}, {Name: "streams"}, {Name: "rounds"}, {Name: "dirty"}, {Name: "fake"},
			{Name: "zero"}, {Name: "dup"}, {Name: "rejected"}, {Name: "sent", Align: report.AlignRight},
			{Name: "r0 GB/s", Format: "%.2f"}, {Name: "r0/mcpy", Format: "%.2f"}, {Name: "r0 eff", Format: "%.2f"},
			{Name: "trk+hash", Format: "%.1f%%"}, {Name: "ok"},
		},
		Notes: []string{"r0 GB/s: round 0's bytes on the wire per second; r0 eff: region bytes covered (data, zero, references) per second"},
	}
	for _, r := range rep.Results {
		mcpy := 0.0
		if s.MemcpyGbps > 0 {
			mcpy = r.Gbps / s.MemcpyGbps
		}
		t.AddRow(r.Workload, onOff(r.Filter), r.Streams, r.Rounds, r.PagesDirty, r.PagesFakeDirty, r.PagesZero, r.PagesDup, r.PagesRejected,
			FormatSize(int64(r.BytesSent)), r.Gbps, mcpy, r.EffectiveGbps, 100*r.TrackHashShare, r.ResultOK)
	}
	// The filter comparison: later-round bytes per dirty page, on over off.
	type key struct {
		w string
		n int
	}
	off := map[key]float64{}
	for _, r := range rep.Results {
		if !r.Filter {
			off[key{r.Workload, r.Streams}] = r.SteadyBytesPerDirty
		}
	}
	first := true
	for _, r := range rep.Results {
		o := off[key{r.Workload, r.Streams}]
		if !r.Filter || o == 0 {
			continue
		}
		if first {
			t.Notes = append(t.Notes, "", "rounds 2 and later, bytes per dirty page with the filter over without (and the share of dirty pages found fake):")
			first = false
		}
		share := 0.0
		if r.SteadyDirty > 0 {
			share = float64(r.SteadyFakeDirty) / float64(r.SteadyDirty)
		}
		t.Notes = append(t.Notes, fmt.Sprintf("  %-9s streams=%d  %.3f  (fake %.3f)", r.Workload, r.Streams, r.SteadyBytesPerDirty/o, share))
	}
	return t
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// PrecopyRoundsChart is the bytes sent in each round, one panel per
// workload and one line per filter setting and stream count, on a log axis
// (round 0 carries the whole region, later rounds what was written). A
// round that sent no byte cannot be drawn on it and is left out (the
// title says so). Nil when no run has round stats.
func PrecopyRoundsChart(rep *PrecopyReport) *report.Grid {
	var workloads []string
	byWorkload := map[string][]*PrecopyResult{}
	dropped := false
	for i := range rep.Results {
		r := &rep.Results[i]
		if len(r.RoundStats) == 0 {
			continue
		}
		if byWorkload[r.Workload] == nil {
			workloads = append(workloads, r.Workload)
		}
		byWorkload[r.Workload] = append(byWorkload[r.Workload], r)
	}
	g := &report.Grid{
		Name:         "precopy-rounds",
		Title:        "Bytes sent per pre-copy round (log scale)",
		Caption:      "bytes sent per round, one panel per workload, one line per filter setting and stream count",
		SharedLegend: true,
	}
	for _, w := range workloads {
		l := &report.Line{Name: fmt.Sprintf("cell%d", len(g.Charts)), Title: w, XLabel: "round", YLabel: "MiB sent", LogY: true, Points: true}
		for _, r := range byWorkload[w] {
			streams := "streams"
			if r.Streams == 1 {
				streams = "stream"
			}
			s := report.Series{Name: fmt.Sprintf("filter %s, %d %s", onOff(r.Filter), r.Streams, streams)}
			for _, st := range r.RoundStats {
				if st.Bytes == 0 {
					dropped = true
					continue
				}
				s.X = append(s.X, float64(st.Round))
				s.Y = append(s.Y, float64(st.Bytes)/(1<<20))
			}
			if len(s.X) > 0 {
				l.Series = append(l.Series, s)
			}
		}
		if len(l.Series) > 0 {
			g.Charts = append(g.Charts, l)
		}
	}
	if len(g.Charts) == 0 {
		return nil
	}
	if dropped {
		g.Title += "; rounds that sent nothing left out"
	}
	return g
}

// Report is the pre-copy report: the table and bytes per round.
func (rep *PrecopyReport) Report() *report.Report {
	r := &report.Report{Name: "precopy", Title: "pagewarp bench precopy", Data: rep, Tables: []*report.Table{rep.Table()}}
	if g := PrecopyRoundsChart(rep); g != nil {
		r.Charts = append(r.Charts, g)
	}
	return r
}
