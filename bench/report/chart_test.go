package report

import (
	"bytes"
	"encoding/xml"
	"errors"
	"image"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testCharts returns one chart of every kind, with the features each has.
func testCharts() []Chart {
	xs := []float64{0, 0.1, 0.2, 0.3, 0.4, 0.5}
	line := &Line{Name: "line", Title: "demand faults over time", XLabel: "seconds", YLabel: "demand faults", Step: true,
		Series: []Series{
			{Name: "none", X: xs, Y: []float64{0, 100, 200, 300, 400, 500}, Colour: Grey},
			{Name: "ppm", X: xs, Y: []float64{0, 10, 20, 25, 27, 30}},
		},
		Refs: []Ref{{Y: 250, Label: "half"}}}
	logLine := &Line{Name: "loglines", Title: "bytes per round", XLabel: "round", YLabel: "MiB", LogY: true, Points: true,
		Series: []Series{{Name: "filter on", X: []float64{0, 1, 2, 3}, Y: []float64{256, 40, 12, 11}},
			{Name: "filter off", X: []float64{0, 1, 2, 3}, Y: []float64{256, 60, 30, 29}}}}
	lat := make([]float64, 5000)
	for i := range lat {
		lat[i] = 4 + float64(i%97)*0.3 + float64(i%1000)/50
	}
	q, err := QuantileCurve("loopback", []float64{20, 30, 40, 50, 400}, 50)
	if err != nil {
		panic(err)
	}
	cdf := &CDF{Name: "cdf", Title: "fault latency", XLabel: "µs", LogX: true,
		Samples: []Samples{{Name: "in-process", Values: lat}}, Curves: []Quantiles{q}}
	bar := &Bar{Name: "bar", Title: "demand faults / none", YLabel: "ratio", LogY: true,
		Groups: []string{"sequential", "strided", "random"},
		Series: []BarSeries{
			{Name: "nextn", Values: map[string]float64{"sequential": 0.059, "strided": 0.11, "random": 0.13}},
			{Name: "ppm", Values: map[string]float64{"sequential": 0.06, "random": 0.96}},
		},
		Refs: []Ref{{Y: 1.0 / 17, Label: "floor 1/(k+1)"}}}
	timeline := &Timeline{Name: "timeline", Title: "one migration",
		Lanes: []Lane{
			{Name: "pre-copy", Spans: []Span{{0, 0.3, "round 0", nil}, {0.3, 0.35, "1", nil}, {0.35, 0.37, "2", nil}}},
			{Name: "post-copy", Spans: []Span{{0.38, 0.9, "post-copy", nil}}},
			{Name: "demand faults", Points: []float64{0.4, 0.41, 0.45, 0.6, 0.61}},
		},
		Marks:     []Mark{{0.38, "switch"}, {0.9, "complete"}},
		Rates:     []Series{{Name: "pushes/s", X: []float64{0.38, 0.5, 0.7, 0.9}, Y: []float64{0, 3000, 2000, 0}}},
		RateLabel: "per second"}
	laneOnly := &Timeline{Name: "lanes", Title: "lanes only", Lanes: []Lane{{Name: "a", Spans: []Span{{1, 2, "x", nil}}}}, Marks: []Mark{{1.5, "m"}}}
	grid := &Grid{Name: "grid", Title: "small multiples", SharedLegend: true, Charts: []Chart{line, logLine, cdf}}
	gridOwn := &Grid{Name: "grid-own", Title: "own legends", Cols: 1, Charts: []Chart{bar, line}}
	return []Chart{line, logLine, cdf, bar, timeline, laneOnly, grid, gridOwn}
}

func TestChartsRender(t *testing.T) {
	keep := os.Getenv("REPORT_TEST_OUT") // to look at the images
	for _, c := range testCharts() {
		t.Run(c.FileName(), func(t *testing.T) {
			b, err := PNG(c)
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("PNG does not decode: %v", err)
			}
			w, h := c.size()
			if got := img.Bounds().Size(); got != (image.Point{X: w, Y: h}) {
				t.Errorf("PNG is %v, want %dx%d", got, w, h)
			}
			if n := colourCount(img); n < 3 {
				t.Errorf("PNG has %d colours: blank", n)
			}
			svg, err := SVG(c)
			if err != nil {
				t.Fatal(err)
			}
			texts := svgCheck(t, svg)
			if d := c.Describe(); !strings.Contains(texts, firstWord(d)) {
				t.Errorf("SVG text lacks the title's first word %q", firstWord(d))
			}
			again, err := SVG(c)
			if err != nil || !bytes.Equal(svg, again) {
				t.Errorf("second SVG render differs (err %v)", err)
			}
			if keep != "" {
				os.WriteFile(filepath.Join(keep, c.FileName()+".png"), b, 0o644)
				os.WriteFile(filepath.Join(keep, c.FileName()+".svg"), svg, 0o644)
			}
		})
	}
}

func firstWord(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return ""
}

// colourCount counts distinct colours, sampling every third pixel.
func colourCount(img image.Image) int {
	seen := map[[4]uint32]bool{}
	r := img.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y += 3 {
		for x := r.Min.X; x < r.Max.X; x += 3 {
			cr, cg, cb, ca := img.At(x, y).RGBA()
			seen[[4]uint32{cr, cg, cb, ca}] = true
		}
	}
	return len(seen)
}

// svgCheck parses the whole SVG document and returns its text content;
// it fails the test unless the root is <svg> with drawn paths.
func svgCheck(t *testing.T, svg []byte) string {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(svg))
	var root string
	paths := 0
	var text strings.Builder
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG does not parse: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
			}
			if tok.Name.Local == "path" {
				paths++
			}
		case xml.CharData:
			text.Write(tok)
		}
	}
	if root != "svg" {
		t.Fatalf("SVG root element %q", root)
	}
	if paths < 10 {
		t.Errorf("SVG has %d paths", paths)
	}
	return text.String()
}

func TestChartErrors(t *testing.T) {
	nan := math.NaN()
	ok := []float64{1, 2}
	for _, c := range []struct {
		chart Chart
		want  string
	}{
		{&Line{Name: "l"}, "no series"},
		{&Line{Name: "bad name!", Series: []Series{{Name: "a", X: ok, Y: ok}}}, "name must be"},
		{&Line{Name: "l", Series: []Series{{Name: "a"}}}, `series "a": empty`},
		{&Line{Name: "l", Series: []Series{{Name: "a", X: ok, Y: []float64{1}}}}, "2 x values, 1 y values"},
		{&Line{Name: "l", Series: []Series{{Name: "a", X: ok, Y: []float64{1, nan}}}}, "y[1] is NaN"},
		{&Line{Name: "l", Series: []Series{{Name: "a", X: ok, Y: []float64{1, math.Inf(1)}}}}, "y[1] is +Inf"},
		{&Line{Name: "l", LogY: true, Series: []Series{{Name: "a", X: ok, Y: []float64{0, 1}}}}, "y[0] = 0 on a log axis"},
		{&Line{Name: "l", Series: []Series{{Name: "a", X: ok, Y: ok}}, Refs: []Ref{{Y: nan}}}, "reference line 0"},
		{&CDF{Name: "c"}, "no samples and no curves"},
		{&CDF{Name: "c", Samples: []Samples{{Name: "s"}}}, `samples "s": empty`},
		{&CDF{Name: "c", Samples: []Samples{{Name: "s", Values: []float64{1, nan}}}}, "value[1] is NaN"},
		{&CDF{Name: "c", LogX: true, Samples: []Samples{{Name: "s", Values: []float64{0}}}}, "on a log axis"},
		{&CDF{Name: "c", Curves: []Quantiles{{Name: "q", P: []float64{0, 1}, X: []float64{1}}}}, "2 probabilities, 1 values"},
		{&CDF{Name: "c", Curves: []Quantiles{{Name: "q", P: []float64{0.5, 0.2}, X: ok}}}, "want ascending within [0, 1]"},
		{&Bar{Name: "b", Series: []BarSeries{{Name: "s", Values: map[string]float64{"g": 1}}}}, "no groups"},
		{&Bar{Name: "b", Groups: []string{"g"}}, "no series"},
		{&Bar{Name: "b", Groups: []string{"g", "g"}, Series: []BarSeries{{Name: "s", Values: map[string]float64{"g": 1}}}}, "named twice"},
		{&Bar{Name: "b", Groups: []string{"g"}, Series: []BarSeries{{Name: "s"}}}, `series "s": empty`},
		{&Bar{Name: "b", Groups: []string{"g"}, Series: []BarSeries{{Name: "s", Values: map[string]float64{"h": 1}}}}, `value for "h"`},
		{&Bar{Name: "b", Groups: []string{"g"}, Series: []BarSeries{{Name: "s", Values: map[string]float64{"g": nan}}}}, "is NaN"},
		{&Bar{Name: "b", LogY: true, Groups: []string{"g"}, Series: []BarSeries{{Name: "s", Values: map[string]float64{"g": -1}}}}, "on a log axis"},
		{&Timeline{Name: "t"}, "no lanes and no rates"},
		{&Timeline{Name: "t", Lanes: []Lane{{Name: "a"}}}, "empty (no spans, no points)"},
		{&Timeline{Name: "t", Lanes: []Lane{{Spans: []Span{{Start: 0, End: 1}}}}}, "no name"},
		{&Timeline{Name: "t", Lanes: []Lane{{Name: "a", Spans: []Span{{Start: 2, End: 1}}}}}, "ends at 1 before it starts at 2"},
		{&Timeline{Name: "t", Lanes: []Lane{{Name: "a", Points: []float64{nan}}}}, "points[0] is NaN"},
		{&Timeline{Name: "t", Lanes: []Lane{{Name: "a", Points: ok}}, Marks: []Mark{{At: nan, Label: "m"}}}, `mark 0 "m"`},
		{&Timeline{Name: "t", Rates: []Series{{Name: "r", X: ok}}}, "2 x values, 0 y values"},
		{&Grid{Name: "g"}, "no charts"},
		{&Grid{Name: "g", Charts: []Chart{&Timeline{Name: "t", Lanes: []Lane{{Name: "a", Points: ok}}}}}, "cannot be a cell"},
		{&Grid{Name: "g", Charts: []Chart{&Line{Name: "l"}}}, "cell 0: line chart \"l\": no series"},
	} {
		err := c.chart.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%T %q: error %v, want one containing %q", c.chart, c.chart.FileName(), err, c.want)
			continue
		}
		// Rendering reports the same error rather than drawing or panicking.
		if _, perr := PNG(c.chart); perr == nil || perr.Error() != err.Error() {
			t.Errorf("%T %q: PNG error %v, want %v", c.chart, c.chart.FileName(), perr, err)
		}
		if _, serr := SVG(c.chart); serr == nil || serr.Error() != err.Error() {
			t.Errorf("%T %q: SVG error %v, want %v", c.chart, c.chart.FileName(), serr, err)
		}
	}
}

func TestQuantileCurve(t *testing.T) {
	vals := []float64{5, 1, 4, 2, 3}
	q, err := QuantileCurve("q", vals, 5)
	if err != nil {
		t.Fatal(err)
	}
	wantP := []float64{0, 0.25, 0.5, 0.75, 1}
	wantX := []float64{1, 2, 3, 4, 5}
	for i := range wantP {
		if q.P[i] != wantP[i] || q.X[i] != wantX[i] {
			t.Errorf("point %d: (%v, %v), want (%v, %v)", i, q.P[i], q.X[i], wantP[i], wantX[i])
		}
	}
	if vals[0] != 5 {
		t.Error("QuantileCurve sorted the caller's slice")
	}
	for _, c := range []struct {
		vals []float64
		n    int
		want string
	}{{nil, 5, "no values"}, {vals, 1, "at least 2"}, {[]float64{1, math.NaN()}, 5, "NaN"}} {
		if _, err := QuantileCurve("q", c.vals, c.n); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("QuantileCurve(%v, %d): %v, want %q", c.vals, c.n, err, c.want)
		}
	}
}

func TestLogTicks(t *testing.T) {
	// Within three decades: 1, 2 and 5 times each power are labelled.
	var labels []string
	for _, tk := range (logTicks{}).Ticks(1, 100) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if got, want := strings.Join(labels, " "), "1 2 5 10 20 50 100"; got != want {
		t.Errorf("labels %q, want %q", got, want)
	}
	labels = nil
	for _, tk := range (logTicks{}).Ticks(0.001, 1000) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if got, want := strings.Join(labels, " "), "0.001 0.01 0.1 1 10 100 1000"; got != want {
		t.Errorf("labels %q, want %q", got, want)
	}
}
