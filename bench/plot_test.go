package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func plotTestReport() *PrefetchReport {
	return &PrefetchReport{
		Setup: PrefetchSetup{Pages: 16384, Threads: 4, Budget: 16},
		Results: []PrefetchResult{
			{Workload: "sequential", Predictor: "none", DemandFaults: 16384},
			{Workload: "sequential", Predictor: "nextn", DemandFaults: 964, Pushed: 15420, PushedUsed: 15400, Precision: 0.9987},
			{Workload: "sequential", Predictor: "ppm", DemandFaults: 2000, Pushed: 14000, PushedUsed: 9800, Precision: 0.7},
			{Workload: "a<&>b", Predictor: "none", DemandFaults: 1000},
			// Worse than none (clamped at 1) and no faults left (clamped at 0.01).
			{Workload: "a<&>b", Predictor: "nextn", DemandFaults: 1500, Pushed: 100, PushedUsed: 3, Precision: 0.03},
			{Workload: "a<&>b", Predictor: "ppm", DemandFaults: 0, Pushed: 1000, PushedUsed: 1000, Precision: 1},
		},
	}
}

// plotParse decodes the whole document and counts the elements of each
// name (and of each name.class) and collects the character data.
func plotParse(t *testing.T, svg []byte) (map[string]int, string) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(svg))
	counts := map[string]int{}
	var text strings.Builder
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG does not parse as XML: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			counts[tok.Name.Local]++
			for _, a := range tok.Attr {
				if a.Name.Local == "class" {
					counts[tok.Name.Local+"."+a.Value]++
				}
			}
		case xml.CharData:
			text.Write(tok)
			text.WriteByte('\n')
		}
	}
	return counts, text.String()
}

func TestPrefetchSVG(t *testing.T) {
	rep := plotTestReport()
	svg := PrefetchSVG(rep)
	counts, text := plotParse(t, svg)

	if counts["svg"] != 1 {
		t.Errorf("%d svg elements, want 1", counts["svg"])
	}
	title := "pagewarp prefetch: 16384 pages, 4 threads, budget 16"
	if !strings.Contains(text, title) {
		t.Errorf("title %q missing", title)
	}
	// Top panel: 2 workloads × 3 predictors; bottom panel: 2 × 2 (none has
	// no precision bar).
	if got, want := counts["rect.bar"], 2*3+2*2; got != want {
		t.Errorf("%d bars, want %d", got, want)
	}
	if got, want := counts["rect.swatch"], 3; got != want {
		t.Errorf("%d legend swatches, want %d", got, want)
	}
	for _, s := range []string{"none", "nextn", "ppm", "floor 1/(k+1)", "target 0.7", "sequential", "a<&>b"} {
		if !strings.Contains(text, s) {
			t.Errorf("text %q missing", s)
		}
	}
	if got := counts["path.clamped"]; got != 2 {
		t.Errorf("%d clamp marks, want 2", got)
	}
	if bytes.Contains(svg, []byte("a<&>b")) {
		t.Error("workload name a<&>b not escaped")
	}
	if !bytes.Contains(svg, []byte("a&lt;&amp;&gt;b")) {
		t.Error("escaped workload name a&lt;&amp;&gt;b missing")
	}
	if again := PrefetchSVG(plotTestReport()); !bytes.Equal(svg, again) {
		t.Error("second render differs")
	}
}

func TestPrefetchSVGMissingNone(t *testing.T) {
	rep := plotTestReport()
	// Drop the baseline of the second workload: its top-panel bars go,
	// its precision bars stay.
	var kept []PrefetchResult
	for _, r := range rep.Results {
		if !(r.Workload == "a<&>b" && r.Predictor == "none") {
			kept = append(kept, r)
		}
	}
	rep.Results = kept
	counts, _ := plotParse(t, PrefetchSVG(rep))
	if got, want := counts["rect.bar"], 3+2*2; got != want {
		t.Errorf("%d bars, want %d", got, want)
	}
	if got, want := counts["rect.swatch"], 3; got != want {
		t.Errorf("%d legend swatches, want %d", got, want)
	}
}

func TestPrefetchSVGEdgeCases(t *testing.T) {
	// Empty and nil reports render a valid document.
	plotParse(t, PrefetchSVG(nil))
	plotParse(t, PrefetchSVG(&PrefetchReport{}))

	// Many workloads with long names: the labels are rotated and shortened,
	// and characters XML cannot hold are replaced.
	rep := &PrefetchReport{Setup: PrefetchSetup{Budget: 4}}
	workloads := []string{"ctl\x01\"'", "x"}
	for i := range 8 {
		workloads = append(workloads, fmt.Sprintf("a-very-long-workload-name-indeed-%d", i))
	}
	for _, w := range workloads {
		for _, p := range []string{"none", "stride"} {
			rep.Results = append(rep.Results, PrefetchResult{Workload: w, Predictor: p, DemandFaults: 10, Precision: 0.5})
		}
	}
	svg := PrefetchSVG(rep)
	counts, _ := plotParse(t, svg)
	if got, want := counts["rect.bar"], 10*2+10; got != want {
		t.Errorf("%d bars, want %d", got, want)
	}
	if !bytes.Contains(svg, []byte("rotate(-35")) {
		t.Error("long x labels not rotated")
	}
}
