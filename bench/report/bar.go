package report

import (
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Bar is a grouped bar chart: one group per category on the x axis, one
// bar per series in each group.
type Bar struct {
	Name    string
	Title   string
	Caption string
	YLabel  string
	// LogY draws the bars on a log axis, from the axis' bottom.
	LogY bool
	// Groups are the x categories, in order.
	Groups []string
	Series []BarSeries
	Refs   []Ref
	Legend Corner
	Width  int
	Height int
}

// BarSeries is one bar in each group: Values maps a group to its bar's
// height; a group it leaves out has no bar of this series.
type BarSeries struct {
	Name   string
	Values map[string]float64
	Colour color.Color
}

func (b *Bar) FileName() string         { return b.Name }
func (b *Bar) Describe() string         { return describe(b.Caption, b.Title, "bar chart") }
func (b *Bar) size() (int, int)         { return sizeOr(b.Width, b.Height) }
func (b *Bar) draw(c draw.Canvas) error { return drawBuilt(c, b) }

func (b *Bar) seriesNames() []string {
	names := make([]string, len(b.Series))
	for i, s := range b.Series {
		names[i] = s.Name
	}
	return names
}

// Validate checks the name, that there are groups (each named once) and
// series, that every series has a value, every value belongs to a group,
// and values are finite (positive on a log axis).
func (b *Bar) Validate() error {
	if err := checkName("bar chart", b.Name); err != nil {
		return err
	}
	where := "bar chart " + quote(b.Name)
	if len(b.Groups) == 0 {
		return fmt.Errorf("%s: no groups", where)
	}
	if len(b.Series) == 0 {
		return fmt.Errorf("%s: no series", where)
	}
	seen := map[string]bool{}
	for _, g := range b.Groups {
		if seen[g] {
			return fmt.Errorf("%s: group %q named twice", where, g)
		}
		seen[g] = true
	}
	for _, s := range b.Series {
		w := fmt.Sprintf("%s: series %q", where, s.Name)
		if len(s.Values) == 0 {
			return fmt.Errorf("%s: empty", w)
		}
		for _, g := range b.Groups {
			v, ok := s.Values[g]
			if !ok {
				continue
			}
			if err := checkValues(w, quote(g), []float64{v}, b.LogY); err != nil {
				return err
			}
		}
		for g := range s.Values {
			if !seen[g] {
				return fmt.Errorf("%s: value for %q, which is not one of the groups", w, g)
			}
		}
	}
	return checkRefs(where, b.Refs, b.LogY)
}

func (b *Bar) build(byName map[string]color.Color) (*plot.Plot, *legend, error) {
	if err := b.Validate(); err != nil {
		return nil, nil, err
	}
	p := newPlot(b.Title, "", b.YLabel)
	own := make([]color.Color, len(b.Series))
	for i, s := range b.Series {
		own[i] = s.Colour
	}
	bars := &groupedBars{b: b, colours: colours(b.seriesNames(), own, byName)}
	p.Add(bars)
	if len(b.Refs) > 0 {
		p.Add(refLines{b.Refs})
	}
	p.NominalX(b.Groups...)
	// Rotate the group names when they would not fit side by side.
	w, _ := b.size()
	var total vg.Length
	for _, g := range b.Groups {
		total += p.X.Tick.Label.Width(g) + vg.Points(6)
	}
	if total > pixels(w)*0.75 {
		p.X.Tick.Label.Rotation = math.Pi / 6
		p.X.Tick.Label.XAlign = draw.XRight
		p.X.Tick.Label.YAlign = draw.YCenter
	}
	lo, hi := bars.valueRange()
	for _, r := range b.Refs {
		lo, hi = min(lo, r.Y), max(hi, r.Y)
	}
	if b.LogY {
		setLog(&p.Y)
		p.Y.Min, p.Y.Max = logRange(lo, hi)
	} else {
		p.Y.Min, p.Y.Max = min(0, lo), max(0, hi)
		if p.Y.Max == p.Y.Min {
			p.Y.Max = p.Y.Min + 1
		}
	}
	lg := newLegend(b.Legend)
	for i, s := range b.Series {
		lg.add(s.Name, swatch{bars.colours[i]})
	}
	return p, lg, nil
}

// groupedBars is the gonum plotter of a Bar chart: group i is centred on
// x = i, its bars share 80% of the unit width.
type groupedBars struct {
	b       *Bar
	colours []color.Color
}

const barGroupFill = 0.8

func (g *groupedBars) valueRange() (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, s := range g.b.Series {
		for _, v := range s.Values {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	return lo, hi
}

// DataRange implements plot.DataRanger.
func (g *groupedBars) DataRange() (xmin, xmax, ymin, ymax float64) {
	lo, hi := g.valueRange()
	return -0.5, float64(len(g.b.Groups)) - 0.5, lo, hi
}

// Plot implements plot.Plotter.
func (g *groupedBars) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	base := 0.0
	if g.b.LogY {
		base = p.Y.Min
	}
	base = min(max(base, p.Y.Min), p.Y.Max)
	n := len(g.b.Series)
	w := barGroupFill / float64(n)
	outline := draw.LineStyle{Color: rgb(0x333333), Width: vg.Points(0.4)}
	for gi, group := range g.b.Groups {
		for si, s := range g.b.Series {
			v, ok := s.Values[group]
			if !ok {
				continue
			}
			v = min(max(v, p.Y.Min), p.Y.Max)
			x0 := float64(gi) - barGroupFill/2 + float64(si)*w
			left, right := trX(x0), trX(x0+w)
			y0, y1 := trY(base), trY(v)
			pts := []vg.Point{{X: left, Y: y0}, {X: right, Y: y0}, {X: right, Y: y1}, {X: left, Y: y1}}
			c.FillPolygon(g.colours[si], c.ClipPolygonXY(pts))
			c.StrokeLines(outline, c.ClipLinesXY(append(pts, pts[0]))...)
		}
	}
}
