package bench

import (
	"fmt"
	"slices"

	"github.com/pagewarp/pagewarp/bench/report"
)

// Table is the QEMU table: one row per pattern and mode with the medians of its completed
// runs; the notes hold the targets and the proxy-none request check.
func (rep *QEMUReport) Table() *report.Table {
	s := rep.Setup
	postcopy := "uncapped by QEMU"
	if s.PostcopyBandwidth > 0 {
		postcopy = "capped at " + FormatSize(int64(s.PostcopyBandwidth)) + "/s"
	}
	link := s.Link
	if link == "" {
		link = "loopback" // reports saved before the link was recorded
	}
	cpus := ""
	if s.GuestCPUs > 1 {
		cpus = fmt.Sprintf(", %d guest vCPUs", s.GuestCPUs)
	}
	t := &report.Table{
		Title: fmt.Sprintf("QEMU post-copy (%s, %s, %d CPUs): %d MiB VM%s, guest region %s, think %d, pre-copy %.1fs at %s/s, post-copy %s, budget %d, preempt %v, median of %d; link: %s",
			s.QEMU, s.Accel, s.CPUs, s.MemMiB, cpus, FormatSize(int64(s.RegionPages)*4096), s.Think, s.PostcopyAfterSeconds,
			FormatSize(int64(s.MaxBandwidth)), postcopy, s.Budget, s.Preempt, s.Repeat, link),
		Columns: []report.Column{
			{Name: "pattern"}, {Name: "mode"}, {Name: "demand\nrequests", Format: "%.0f"}, {Name: "injected", Format: "%.0f"},
			{Name: "injected\nthen asked", Format: "%.0f"}, {Name: "source\nrequests", Format: "%.0f"},
			{Name: "blocktime\nms", Format: "%.0f"}, {Name: "guest wait\nms", Format: "%.0f"},
			{Name: "post-copy\ns", Format: "%.2f"}, {Name: "total\ns", Format: "%.2f"},
			{Name: "post-copy\nMiB", Format: "%.1f"}, {Name: "visits/s\nbefore", Format: "%.0f"},
			{Name: "visits\npost-copy", Format: "%.0f"},
			{Name: "runs ok"}, {Name: "memory"}, {Name: "status"},
		},
	}
	for _, r := range rep.Results {
		mem := "verified"
		if !r.MemoryVerified {
			mem = "NOT verified"
		}
		t.AddRow(r.Pattern, r.Mode, r.DemandRequests, r.Injected, r.InjectedThenRequested, r.SourceRequests,
			r.BlocktimeMS, r.GuestWaitMS, r.PostcopySeconds, r.TotalSeconds, r.PostcopyBytes/(1<<20), r.TouchRate, r.TouchesPostcopy,
			fmt.Sprintf("%d/%d", r.Completed, len(r.Runs)), mem, r.Status)
	}
	t.Notes = append(t.Notes, "demand requests: the destination's own (counted at the proxy; plain: the source's ram.postcopy-requests); source requests: demand + injected",
		"guest wait: post-copy time minus the guest's visits during post-copy at its rate before the migration (visits/s before): the time it lost, by its own count")
	if n, eq := rep.noneRequestsEqual(); n > 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("proxy-none: source's ram.postcopy-requests = proxy's real requests in %d of %d runs", eq, n))
	}
	for _, tg := range rep.Targets {
		met := "met"
		switch {
		case !tg.Applies:
			met = "n/a: " + tg.Why
		case !tg.Met:
			met = "MISSED"
		}
		t.Notes = append(t.Notes, fmt.Sprintf("target %-10s %s = %.2f (limit %.2f): %s", tg.Pattern, tg.Target, tg.Value, tg.Limit, met))
	}
	if rel := rep.Reliability; rel != nil {
		t.Notes = append(t.Notes, fmt.Sprintf("reliability: %d proxied migrations: %d completed, %d paused, %d failed; memory verified in %d; injection disabled in %d",
			rel.Migrations, rel.Completed, rel.Paused, rel.Failed, rel.Verified, rel.Disabled))
	}
	return t
}

// noneRequestsEqual counts the completed proxy-none runs and those where the source counted
// exactly the requests the proxy forwarded.
func (rep *QEMUReport) noneRequestsEqual() (n, eq int) {
	for _, r := range rep.Results {
		if r.Mode != QEMUProxyNone {
			continue
		}
		for _, run := range r.Runs {
			if run.Status != "completed" {
				continue
			}
			n++
			if run.SourceRequests == run.DemandRequests {
				eq++
			}
		}
	}
	return n, eq
}

// RunsTable lists every migration (the cells' runs, then the reliability runs).
func (rep *QEMUReport) RunsTable() *report.Table {
	t := &report.Table{
		Name:  "runs",
		Title: "every migration",
		Columns: []report.Column{
			{Name: "pattern"}, {Name: "mode"}, {Name: "run"}, {Name: "preempt"}, {Name: "demand"}, {Name: "injected"},
			{Name: "source\nrequests"}, {Name: "blocktime\nms", Format: "%.0f"}, {Name: "guest wait\nms", Format: "%.0f"}, {Name: "post-copy\ns", Format: "%.2f"},
			{Name: "passes\nbefore"}, {Name: "at\nswitch"}, {Name: "at\ncompletion"}, {Name: "after"}, {Name: "memory"}, {Name: "status"},
		},
	}
	add := func(prefix string, r QEMURun) {
		mem := "verified"
		if !r.MemoryVerified {
			mem = "NOT verified"
		}
		status := r.Status
		if r.InjectionDisabled != "" {
			status += " (injection disabled: " + r.InjectionDisabled + ")"
		}
		t.AddRow(r.Pattern, r.Mode, prefix+fmt.Sprint(r.Run), r.Preempt, r.DemandRequests, r.Injected, r.SourceRequests,
			r.BlocktimeMS, r.GuestWaitMS, r.PostcopySeconds, r.PassesBefore, r.PassesAtSwitch, r.PassesAtCompletion, r.PassesAfter, mem, status)
	}
	for _, c := range rep.Results {
		for _, r := range c.Runs {
			add("", r)
		}
	}
	if rep.Reliability != nil {
		for _, r := range rep.Reliability.Runs {
			add("rel ", r)
		}
	}
	return t
}

// Report is the QEMU report: the table, every run, and bar charts of demand requests and
// blocktime per pattern and mode.
func (rep *QEMUReport) Report() *report.Report {
	r := &report.Report{Name: "qemu", Title: "pagewarp bench qemu", Data: rep, Tables: []*report.Table{rep.Table(), rep.RunsTable()}}
	var groups []string
	var modes []string
	for _, c := range rep.Results {
		if c.Completed == 0 {
			continue
		}
		if !slices.Contains(groups, c.Pattern) {
			groups = append(groups, c.Pattern)
		}
		if !slices.Contains(modes, c.Mode) {
			modes = append(modes, c.Mode)
		}
	}
	if len(groups) == 0 {
		return r
	}
	bar := func(name, title, ylabel string, value func(QEMUResult) float64) *report.Bar {
		b := &report.Bar{Name: name, Title: title, YLabel: ylabel, Groups: groups}
		for _, m := range modes {
			s := report.BarSeries{Name: m, Values: map[string]float64{}}
			for _, c := range rep.Results {
				if c.Mode == m && c.Completed > 0 {
					s.Values[c.Pattern] = value(c)
				}
			}
			b.Series = append(b.Series, s)
		}
		return b
	}
	r.Charts = append(r.Charts,
		bar("qemu-demand", "Destination page requests (demand faults) per pattern and mode", "demand requests (median)",
			func(c QEMUResult) float64 { return c.DemandRequests }),
		bar("qemu-blocktime", "Destination post-copy blocktime per pattern and mode", "postcopy-blocktime, ms (median)",
			func(c QEMUResult) float64 { return c.BlocktimeMS }))
	return r
}
