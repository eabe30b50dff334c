package bench

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/pagewarp/pagewarp/bench/report"
)

// TestQEMUSummary checks a cell's medians (completed runs only), its status, the targets and
// that the report renders, from runs made up here (the real runs are TestBenchQEMU's).
func TestQEMUSummary(t *testing.T) {
	run := func(mode string, demand, injected int64, bt float64, status string) QEMURun {
		return QEMURun{Pattern: "sequential", Mode: mode, Status: status, DemandRequests: demand, SourceRequests: demand + injected,
			Injected: injected, BlocktimeMS: bt, GuestWaitMS: bt / 4, PostcopySeconds: 1, MemoryVerified: status == "completed", PassesBefore: 1, PassesAtCompletion: 5}
	}
	rep := &QEMUReport{Results: []QEMUResult{
		{Pattern: "sequential", Mode: QEMUPlain, Runs: []QEMURun{run(QEMUPlain, 100, 0, 1000, "completed"), run(QEMUPlain, 300, 0, 3000, "completed"), run(QEMUPlain, 200, 0, 2000, "completed")}},
		{Pattern: "sequential", Mode: QEMUProxyNone, Runs: []QEMURun{run(QEMUProxyNone, 210, 0, 2100, "completed"), run(QEMUProxyNone, 1, 0, 1, "postcopy-paused")}},
		{Pattern: "sequential", Mode: QEMUProxyPPM, Runs: []QEMURun{run(QEMUProxyPPM, 80, 900, 1000, "completed"), run(QEMUProxyPPM, 120, 1100, 1400, "completed")}},
		{Pattern: "chase", Mode: QEMUPlain, Runs: []QEMURun{run(QEMUPlain, 5, 0, 5, "failed")}},
	}}
	for i := range rep.Results {
		rep.Results[i].summarise()
	}
	plain, none, ppm, chase := rep.Results[0], rep.Results[1], rep.Results[2], rep.Results[3]
	if plain.DemandRequests != 200 || plain.BlocktimeMS != 2000 || plain.Status != "completed" || !plain.MemoryVerified || plain.PassesDuring != 4 {
		t.Errorf("plain cell %+v", plain)
	}
	if none.Completed != 1 || none.DemandRequests != 210 || none.Status != "postcopy-paused" || none.MemoryVerified {
		t.Errorf("proxy-none cell: the paused run must set the status and stay out of the medians: %+v", none)
	}
	if ppm.DemandRequests != 100 || ppm.Injected != 1000 || ppm.BlocktimeMS != 1200 {
		t.Errorf("ppm cell (medians of two are means): %+v", ppm)
	}
	if chase.Completed != 0 || chase.Status != "failed" || chase.DemandRequests != 0 {
		t.Errorf("chase cell %+v", chase)
	}
	rep.Targets = qemuTargets(rep.Results)
	want := map[string]struct {
		v   float64
		met bool
	}{
		"ppm demand / plain demand":              {0.5, true},
		"ppm blocktime reduction vs plain":       {0.4, true},
		"proxy-none blocktime overhead vs plain": {0.05, true},
	}
	if len(rep.Targets) != len(want) {
		t.Fatalf("targets %+v", rep.Targets)
	}
	for _, tg := range rep.Targets {
		w, ok := want[tg.Target]
		if !ok || math.Abs(tg.Value-w.v) > 1e-9 || tg.Met != w.met || !tg.Applies || tg.Pattern != "sequential" {
			t.Errorf("target %+v, want %+v", tg, w)
		}
	}
	// A pattern whose plain guest hardly waited (QEMU's scan kept ahead): the targets are
	// computed but do not apply, and none is met.
	hot := func(mode string, demand int64, wait float64) QEMUResult {
		r := QEMURun{Pattern: "hotset", Mode: mode, Status: "completed", DemandRequests: demand, BlocktimeMS: wait, GuestWaitMS: wait, PostcopySeconds: 2, MemoryVerified: true}
		c := QEMUResult{Pattern: "hotset", Mode: mode, Runs: []QEMURun{r}}
		c.summarise()
		return c
	}
	quiet := qemuTargets([]QEMUResult{hot(QEMUPlain, 10, 150), hot(QEMUProxyPPM, 2, 10)})
	if len(quiet) != 2 {
		t.Fatalf("hot-set targets %+v", quiet)
	}
	for _, tg := range quiet {
		if tg.Applies || tg.Met || tg.Why == "" {
			t.Errorf("target %+v: plain waited 7.5%% of post-copy, below the floor: must not apply", tg)
		}
	}
	if n, eq := rep.noneRequestsEqual(); n != 1 || eq != 1 {
		t.Errorf("proxy-none request check %d/%d, want 1/1", eq, n)
	}
	files, err := report.Dir{Path: filepath.Join(t.TempDir(), "qemu")}.Write(rep.Report())
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 9 {
		t.Errorf("report files %q", files)
	}
}
