package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/bench/report"
	"github.com/pagewarp/pagewarp/precopy"
)

func plotTestReport() *PrefetchReport {
	return &PrefetchReport{
		Setup: PrefetchSetup{Pages: 16384, Threads: 4, Budget: 16},
		Results: []PrefetchResult{
			{Workload: "sequential", Predictor: "none", DemandFaults: 16384,
				DemandOverTime: &CountCurve{Seconds: []float64{0, 0.1, 0.2}, Count: []uint64{0, 9000, 16384}}},
			{Workload: "sequential", Predictor: "nextn", DemandFaults: 964, Pushed: 15420, PushedUsed: 15400, Precision: 0.9987,
				DemandOverTime: &CountCurve{Seconds: []float64{0, 0.05, 0.1}, Count: []uint64{0, 500, 964}}},
			{Workload: "sequential", Predictor: "ppm", DemandFaults: 2000, Pushed: 14000, PushedUsed: 9800, Precision: 0.7},
			{Workload: "a<&>b", Predictor: "none", DemandFaults: 1000},
			// Worse than none, and no demand fault at all (no bar on a log axis).
			{Workload: "a<&>b", Predictor: "nextn", DemandFaults: 1500, Pushed: 100, PushedUsed: 3, Precision: 0.03},
			{Workload: "a<&>b", Predictor: "ppm", DemandFaults: 0, Pushed: 1000, PushedUsed: 1000, Precision: 1},
		},
	}
}

// svgText parses the whole document and returns its character data.
func svgText(t *testing.T, svg []byte) string {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(svg))
	var text strings.Builder
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG does not parse as XML: %v", err)
		}
		if cd, ok := tok.(xml.CharData); ok {
			text.Write(cd)
			text.WriteByte('\n')
		}
	}
	return text.String()
}

func TestPrefetchChart(t *testing.T) {
	g := PrefetchChart(plotTestReport())
	if g == nil || len(g.Charts) != 2 {
		t.Fatalf("chart %+v, want two panels", g)
	}
	ratio, precision := g.Charts[0].(*report.Bar), g.Charts[1].(*report.Bar)
	if !slices.Equal(ratio.Groups, []string{"sequential", "a<&>b"}) {
		t.Errorf("groups %q", ratio.Groups)
	}
	want := map[string]map[string]float64{
		"none":  {"sequential": 1, "a<&>b": 1},
		"nextn": {"sequential": 964.0 / 16384, "a<&>b": 1.5},
		"ppm":   {"sequential": 2000.0 / 16384}, // no demand fault: no bar on the log axis
	}
	for _, s := range ratio.Series {
		if w := want[s.Name]; len(w) != len(s.Values) {
			t.Errorf("demand/none %s: %v, want %v", s.Name, s.Values, w)
		} else {
			for k, v := range w {
				if got := s.Values[k]; got < v*0.9999 || got > v*1.0001 {
					t.Errorf("demand/none %s/%s = %v, want %v", s.Name, k, got, v)
				}
			}
		}
	}
	if len(ratio.Refs) != 1 || ratio.Refs[0].Y != 1.0/17 {
		t.Errorf("floor reference %v, want 1/17", ratio.Refs)
	}
	// none pushes nothing: no precision series.
	var names []string
	for _, s := range precision.Series {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"nextn", "ppm"}) {
		t.Errorf("precision series %q, want nextn, ppm", names)
	}

	svg, err := PrefetchSVG(plotTestReport())
	if err != nil {
		t.Fatal(err)
	}
	text := svgText(t, svg)
	for _, s := range []string{"pagewarp prefetch: 16384 pages, 4 threads, budget 16", "none", "nextn", "ppm", "floor 1/(k+1)", "target 0.7", "sequential", "a<&>b"} {
		if !strings.Contains(text, s) {
			t.Errorf("SVG text %q missing", s)
		}
	}
	if bytes.Contains(svg, []byte("a<&>b")) {
		t.Error("workload name a<&>b not escaped")
	}
	if again, _ := PrefetchSVG(plotTestReport()); !bytes.Equal(svg, again) {
		t.Error("second render differs")
	}
}

func TestPrefetchChartEdgeCases(t *testing.T) {
	if PrefetchChart(&PrefetchReport{}) != nil {
		t.Error("empty report: want no chart")
	}
	if _, err := PrefetchSVG(&PrefetchReport{}); err == nil {
		t.Error("empty report: PrefetchSVG gave no error")
	}
	// Without any "none" run only the precision panel is left.
	rep := plotTestReport()
	rep.Results = slices.DeleteFunc(rep.Results, func(r PrefetchResult) bool { return r.Predictor == "none" })
	g := PrefetchChart(rep)
	if g == nil || len(g.Charts) != 1 || g.Charts[0].(*report.Bar).Name != "precision" {
		t.Fatalf("without none: %+v, want the precision panel alone", g)
	}
	if _, err := report.PNG(g); err != nil {
		t.Error(err)
	}
}

func TestPrefetchDemandChart(t *testing.T) {
	g := PrefetchDemandChart(plotTestReport())
	if g == nil || len(g.Charts) != 1 {
		t.Fatalf("%+v: want one panel (only sequential has curves)", g)
	}
	l := g.Charts[0].(*report.Line)
	if l.Title != "sequential" || len(l.Series) != 2 || l.Series[1].Name != "nextn" || l.Series[1].Y[2] != 964 {
		t.Errorf("panel %+v", l)
	}
	rep := plotTestReport()
	for i := range rep.Results {
		rep.Results[i].DemandOverTime = nil
	}
	if PrefetchDemandChart(rep) != nil {
		t.Error("no curves: want no chart")
	}
	if n := len(rep.Report().Charts); n != 1 {
		t.Errorf("report without curves has %d charts, want 1", n)
	}
}

func TestBinCounts(t *testing.T) {
	ms := time.Millisecond
	samples := []countSample{{1 * ms, 5}, {2 * ms, 9}, {3 * ms, 12}, {7 * ms, 20}}
	c := binCounts(samples, 10*ms, 25, 5)
	wantS := []float64{0, 0.002, 0.004, 0.006, 0.008, 0.01}
	wantN := []uint64{0, 9, 12, 12, 20, 25}
	if !slices.Equal(c.Seconds, wantS) || !slices.Equal(c.Count, wantN) {
		t.Errorf("binCounts: %v %v, want %v %v", c.Seconds, c.Count, wantS, wantN)
	}
	if c := binCounts(nil, 0, 0, 4); len(c.Count) != 5 || c.Count[4] != 0 {
		t.Errorf("no samples: %+v", c)
	}
}

func TestFaultsReport(t *testing.T) {
	lat := []float64{3, 4, 5, 6, 200}
	r := &FaultsResult{Samples: 5, CPUs: 2, Kernel: "6.18", InprocessP50: 5, BaselineP50: 7, InprocessOverBase: 0.71,
		PullBytes: 1 << 20, PullSeconds: 0.01, PullGbps: 0.1}
	for _, m := range []string{"inprocess", "baseline"} {
		c, err := latencyCDF(m, m+" label", lat)
		if err != nil {
			t.Fatal(err)
		}
		r.CDF = append(r.CDF, c)
	}
	text := r.Table().String()
	for _, s := range []string{"userfaultfd-go mapper.Handle", "loopback TCP", "background pull over loopback", "= 0.71"} {
		if !strings.Contains(text, s) {
			t.Errorf("table lacks %q:\n%s", s, text)
		}
	}
	rep := r.Report()
	if len(rep.Charts) != 1 {
		t.Fatalf("%d charts, want the CDF", len(rep.Charts))
	}
	c := rep.Charts[0].(*report.CDF)
	if len(c.Curves) != 2 || len(c.Curves[0].X) != CDFPoints || c.Curves[0].X[0] != 3 || c.Curves[0].X[CDFPoints-1] != 200 {
		t.Errorf("CDF curves %+v", c.Curves)
	}
	dir := t.TempDir()
	paths, err := report.Dir{Path: dir}.Write(rep)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 6 { // json, csv, table.txt, png, svg, README
		t.Errorf("wrote %q", paths)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "faults-cdf.png"))
	if _, err := png.Decode(bytes.NewReader(b)); err != nil {
		t.Error(err)
	}
	// The JSON round-trips to the same report.
	var back FaultsResult
	jb, _ := os.ReadFile(filepath.Join(dir, "faults.json"))
	if err := json.Unmarshal(jb, &back); err != nil || len(back.CDF) != 2 || back.CDF[1].Mode != "baseline" {
		t.Errorf("faults.json: %v %+v", err, back.CDF)
	}
	if _, err := latencyCDF("x", "x", nil); err == nil {
		t.Error("latencyCDF of no samples: no error")
	}
}

func TestPrecopyRoundsChart(t *testing.T) {
	rounds := func(bytes ...uint64) []precopy.RoundStats {
		var rs []precopy.RoundStats
		for i, b := range bytes {
			rs = append(rs, precopy.RoundStats{Round: uint32(i), Bytes: b})
		}
		return rs
	}
	rep := &PrecopyReport{Results: []PrecopyResult{
		{Workload: "silent50", Filter: true, Streams: 1, SteadyBytesPerDirty: 2000, RoundStats: rounds(8<<20, 1<<20, 1<<19)},
		{Workload: "silent50", Filter: false, Streams: 1, SteadyBytesPerDirty: 4000, RoundStats: rounds(8<<20, 2<<20, 0)},
		{Workload: "dup8", Filter: true, Streams: 2, RoundStats: rounds(1<<20, 1<<10)},
		{Workload: "empty"},
	}}
	g := PrecopyRoundsChart(rep)
	if g == nil || len(g.Charts) != 2 {
		t.Fatalf("%+v: want panels silent50 and dup8", g)
	}
	l := g.Charts[0].(*report.Line)
	if l.Title != "silent50" || len(l.Series) != 2 || l.Series[0].Name != "filter on, 1 stream" || l.Series[0].Y[1] != 1 {
		t.Errorf("silent50 panel %+v", l)
	}
	if len(l.Series[1].X) != 2 || !strings.Contains(g.Title, "left out") {
		t.Errorf("a round of 0 bytes should be left out and said: %+v, %q", l.Series[1], g.Title)
	}
	if _, err := report.SVG(g); err != nil {
		t.Error(err)
	}
	text := rep.Table().String()
	if !strings.Contains(text, "silent50  streams=1  0.500") {
		t.Errorf("table lacks the filter comparison:\n%s", text)
	}
}
