package report

import (
	"fmt"
	"image/color"
	"math"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Series is a named sequence of points, X[i] with Y[i].
type Series struct {
	Name   string
	X, Y   []float64
	Colour color.Color // nil: the palette's next colour
}

// Line is a chart of several named XY series drawn as lines.
type Line struct {
	Name           string // file base name
	Title          string
	Caption        string // the README's line (default: Title)
	XLabel, YLabel string
	LogX, LogY     bool
	// Step draws each series as a staircase (a value holds until the next
	// point), for counts and other quantities that change in jumps.
	Step bool
	// Points marks every point with a dot, for series of few points.
	Points        bool
	Series        []Series
	Refs          []Ref
	Legend        Corner
	Width, Height int // pixels (default DefaultWidth × DefaultHeight)
}

func (l *Line) FileName() string         { return l.Name }
func (l *Line) Describe() string         { return describe(l.Caption, l.Title, "line chart") }
func (l *Line) size() (int, int)         { return sizeOr(l.Width, l.Height) }
func (l *Line) draw(c draw.Canvas) error { return drawBuilt(c, l) }
func (l *Line) seriesNames() []string    { return namesOf(l.Series) }

// Validate checks the name, that there is a series, and that every series
// has points, as many x as y values, finite values and positive ones on a
// log axis.
func (l *Line) Validate() error {
	if err := checkName("line chart", l.Name); err != nil {
		return err
	}
	return checkSeries("line chart "+quote(l.Name), l.Series, l.LogX, l.LogY, l.Refs)
}

func checkSeries(where string, ss []Series, logX, logY bool, refs []Ref) error {
	if len(ss) == 0 {
		return fmt.Errorf("%s: no series", where)
	}
	for _, s := range ss {
		w := fmt.Sprintf("%s: series %q", where, s.Name)
		if len(s.X) == 0 {
			return fmt.Errorf("%s: empty", w)
		}
		if len(s.X) != len(s.Y) {
			return fmt.Errorf("%s: %d x values, %d y values", w, len(s.X), len(s.Y))
		}
		if err := checkValues(w, "x", s.X, logX); err != nil {
			return err
		}
		if err := checkValues(w, "y", s.Y, logY); err != nil {
			return err
		}
	}
	return checkRefs(where, refs, logY)
}

func (l *Line) build(byName map[string]color.Color) (*plot.Plot, *legend, error) {
	if err := l.Validate(); err != nil {
		return nil, nil, err
	}
	p := newPlot(l.Title, l.XLabel, l.YLabel)
	cs := seriesColours(l.Series, byName)
	addLines(p, l.Series, cs, l.Step, l.Points)
	lg := newLegend(l.Legend)
	for i, s := range l.Series {
		lg.add(s.Name, lineThumb(cs[i]))
	}
	if len(l.Refs) > 0 {
		p.Add(refLines{l.Refs})
	}
	if l.LogX {
		setLog(&p.X)
		p.X.Min, p.X.Max = logRange(p.X.Min, p.X.Max)
	}
	if l.LogY {
		setLog(&p.Y)
		lo, hi := p.Y.Min, p.Y.Max
		for _, r := range l.Refs {
			lo, hi = min(lo, r.Y), max(hi, r.Y)
		}
		p.Y.Min, p.Y.Max = logRange(lo, hi)
	}
	return p, lg, nil
}

func seriesColours(ss []Series, byName map[string]color.Color) []color.Color {
	own := make([]color.Color, len(ss))
	for i, s := range ss {
		own[i] = s.Colour
	}
	return colours(namesOf(ss), own, byName)
}

func namesOf(ss []Series) []string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.Name
	}
	return names
}

// addLines adds the series to p in colours cs.
func addLines(p *plot.Plot, ss []Series, cs []color.Color, step, points bool) {
	for i, s := range ss {
		xy := make(plotter.XYs, len(s.X))
		for j := range s.X {
			xy[j] = plotter.XY{X: s.X[j], Y: s.Y[j]}
		}
		// Validated: NewLine cannot fail on finite values.
		ln, _ := plotter.NewLine(xy)
		ln.Color = cs[i]
		ln.Width = vg.Points(1.5)
		if step {
			ln.StepStyle = plotter.PostStep
		}
		p.Add(ln)
		if points || len(xy) == 1 {
			sc, _ := plotter.NewScatter(xy)
			sc.GlyphStyle = draw.GlyphStyle{Color: cs[i], Radius: vg.Points(2.2), Shape: draw.CircleGlyph{}}
			p.Add(sc)
		}
	}
}

func lineThumb(c color.Color) plot.Thumbnailer {
	return &plotter.Line{LineStyle: draw.LineStyle{Color: c, Width: vg.Points(2.5)}}
}

// drawBuilt draws a single-panel chart.
func drawBuilt(c draw.Canvas, pc panel) error {
	p, l, err := pc.build(nil)
	if err != nil {
		return err
	}
	drawPanel(c, p, l)
	return nil
}

func describe(caption, title, kind string) string {
	switch {
	case caption != "":
		return caption
	case title != "":
		return title
	}
	return kind
}

func quote(s string) string { return fmt.Sprintf("%q", s) }

// CDF is a chart of cumulative distributions: x a value (a latency, say),
// y the fraction of samples at or below it. Each distribution is given
// either as raw samples or as a quantile curve already computed.
type CDF struct {
	Name    string
	Title   string
	Caption string
	XLabel  string // default "value"
	LogX    bool
	Samples []Samples
	Curves  []Quantiles
	Legend  Corner
	Width   int
	Height  int
}

// Samples is a named set of raw values.
type Samples struct {
	Name   string
	Values []float64
	Colour color.Color
}

// Quantiles is a named quantile curve: X[i] is the P[i]-quantile, P
// ascending within [0, 1]. QuantileCurve computes one from samples.
type Quantiles struct {
	Name   string
	P, X   []float64
	Colour color.Color
}

// maxCDFPoints bounds the points drawn for a set of raw samples.
const maxCDFPoints = 1000

// QuantileCurve returns n points of the distribution of values (n ≥ 2):
// P evenly spaced from 0 to 1, X[i] the value at or below which a share
// P[i] of the values lie (the nearest-rank quantile; P 0 gives the
// minimum, 1 the maximum). NaN values are an error.
func QuantileCurve(name string, values []float64, n int) (Quantiles, error) {
	if len(values) == 0 {
		return Quantiles{}, fmt.Errorf("quantiles %q: no values", name)
	}
	if n < 2 {
		return Quantiles{}, fmt.Errorf("quantiles %q: %d points, want at least 2", name, n)
	}
	if err := checkValues("quantiles "+quote(name), "value", values, false); err != nil {
		return Quantiles{}, err
	}
	s := append([]float64(nil), values...)
	slices.Sort(s)
	q := Quantiles{Name: name, P: make([]float64, n), X: make([]float64, n)}
	for i := range n {
		p := float64(i) / float64(n-1)
		rank := int(math.Ceil(p*float64(len(s)))) - 1
		q.P[i] = p
		q.X[i] = s[max(0, min(rank, len(s)-1))]
	}
	return q, nil
}

func (c *CDF) FileName() string          { return c.Name }
func (c *CDF) Describe() string          { return describe(c.Caption, c.Title, "cumulative distribution") }
func (c *CDF) size() (int, int)          { return sizeOr(c.Width, c.Height) }
func (c *CDF) draw(dc draw.Canvas) error { return drawBuilt(dc, c) }

func (c *CDF) seriesNames() []string {
	var names []string
	for _, s := range c.Samples {
		names = append(names, s.Name)
	}
	for _, q := range c.Curves {
		names = append(names, q.Name)
	}
	return names
}

// Validate checks the name, that there is a distribution, that each has
// values (finite; positive on a log axis), and that a curve's P and X
// have the same length with P ascending within [0, 1].
func (c *CDF) Validate() error {
	if err := checkName("CDF chart", c.Name); err != nil {
		return err
	}
	where := "CDF chart " + quote(c.Name)
	if len(c.Samples)+len(c.Curves) == 0 {
		return fmt.Errorf("%s: no samples and no curves", where)
	}
	for _, s := range c.Samples {
		w := fmt.Sprintf("%s: samples %q", where, s.Name)
		if len(s.Values) == 0 {
			return fmt.Errorf("%s: empty", w)
		}
		if err := checkValues(w, "value", s.Values, c.LogX); err != nil {
			return err
		}
	}
	for _, q := range c.Curves {
		w := fmt.Sprintf("%s: curve %q", where, q.Name)
		if len(q.P) == 0 {
			return fmt.Errorf("%s: empty", w)
		}
		if len(q.P) != len(q.X) {
			return fmt.Errorf("%s: %d probabilities, %d values", w, len(q.P), len(q.X))
		}
		if err := checkValues(w, "x", q.X, c.LogX); err != nil {
			return err
		}
		if err := checkValues(w, "p", q.P, false); err != nil {
			return err
		}
		for i, p := range q.P {
			if p < 0 || p > 1 || (i > 0 && p < q.P[i-1]) {
				return fmt.Errorf("%s: p[%d] = %v, want ascending within [0, 1]", w, i, p)
			}
		}
	}
	return nil
}

// series turns samples and curves into lines, x the value, y the fraction.
func (c *CDF) series() ([]Series, error) {
	var ss []Series
	for _, s := range c.Samples {
		n := min(len(s.Values), maxCDFPoints)
		q, err := QuantileCurve(s.Name, s.Values, max(n, 2))
		if err != nil {
			return nil, err
		}
		ss = append(ss, Series{Name: s.Name, X: q.X, Y: q.P, Colour: s.Colour})
	}
	for _, q := range c.Curves {
		ss = append(ss, Series{Name: q.Name, X: q.X, Y: q.P, Colour: q.Colour})
	}
	return ss, nil
}

func (c *CDF) build(byName map[string]color.Color) (*plot.Plot, *legend, error) {
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	ss, err := c.series()
	if err != nil {
		return nil, nil, err
	}
	xl := c.XLabel
	if xl == "" {
		xl = "value"
	}
	p := newPlot(c.Title, xl, "fraction at or below")
	cs := seriesColours(ss, byName)
	addLines(p, ss, cs, false, false)
	p.Y.Min, p.Y.Max = 0, 1
	p.Y.Tick.Marker = plot.ConstantTicks([]plot.Tick{{Value: 0, Label: "0"}, {Value: 0.25, Label: "0.25"},
		{Value: 0.5, Label: "0.5"}, {Value: 0.75, Label: "0.75"}, {Value: 0.9, Label: "0.9"}, {Value: 1, Label: "1"}})
	if c.LogX {
		setLog(&p.X)
		p.X.Min, p.X.Max = logRange(p.X.Min, p.X.Max)
	}
	lg := newLegend(c.Legend)
	for i, s := range ss {
		lg.add(s.Name, lineThumb(cs[i]))
	}
	return p, lg, nil
}
