package report

import (
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Timeline shows what happened when during one run: lanes of spans (the
// pre-copy rounds, the post-copy phase) and instants (one tick per event),
// vertical marks across the whole chart (the switch, completion), and,
// below the lanes on the same time axis, rates over time as lines (demand
// faults per second, pushes per second).
type Timeline struct {
	Name    string
	Title   string
	Caption string
	XLabel  string // default "seconds"
	// Lanes are drawn top to bottom in this order.
	Lanes []Lane
	Marks []Mark
	// Rates, if any, are drawn in a panel under the lanes; RateLabel is
	// its y axis' title.
	Rates     []Series
	RateLabel string
	Width     int
	Height    int
}

// Lane is one row of a Timeline.
type Lane struct {
	Name  string
	Spans []Span
	// Points are instants in the lane, each drawn as a short tick.
	Points []float64
	Colour color.Color // nil: the palette's colour of the lane's index
}

// Span is an interval [Start, End] in a lane, with an optional label drawn
// inside it when it fits.
type Span struct {
	Start, End float64
	Label      string
	Colour     color.Color // nil: the lane's colour, alternating shades
}

// Mark is a vertical line across the Timeline at an instant.
type Mark struct {
	At    float64
	Label string
}

func (t *Timeline) FileName() string { return t.Name }
func (t *Timeline) Describe() string { return describe(t.Caption, t.Title, "timeline") }
func (t *Timeline) size() (int, int) { return sizeOr(t.Width, t.Height) }

// Validate checks the name, that there is a lane or a rate, that lanes are
// named and hold a span or a point, spans end no earlier than they start,
// and every time and value is finite.
func (t *Timeline) Validate() error {
	if err := checkName("timeline", t.Name); err != nil {
		return err
	}
	where := "timeline " + quote(t.Name)
	if len(t.Lanes) == 0 && len(t.Rates) == 0 {
		return fmt.Errorf("%s: no lanes and no rates", where)
	}
	for i, l := range t.Lanes {
		w := fmt.Sprintf("%s: lane %d %q", where, i, l.Name)
		if l.Name == "" {
			return fmt.Errorf("%s: no name", w)
		}
		if len(l.Spans) == 0 && len(l.Points) == 0 {
			return fmt.Errorf("%s: empty (no spans, no points)", w)
		}
		for j, s := range l.Spans {
			if err := checkValues(fmt.Sprintf("%s: span %d", w, j), "start/end", []float64{s.Start, s.End}, false); err != nil {
				return err
			}
			if s.End < s.Start {
				return fmt.Errorf("%s: span %d ends at %v before it starts at %v", w, j, s.End, s.Start)
			}
		}
		if err := checkValues(w, "points", l.Points, false); err != nil {
			return err
		}
	}
	for i, m := range t.Marks {
		if err := checkValues(fmt.Sprintf("%s: mark %d %q", where, i, m.Label), "at", []float64{m.At}, false); err != nil {
			return err
		}
	}
	if len(t.Rates) > 0 {
		return checkSeries(where+": rates", t.Rates, false, false, nil)
	}
	return nil
}

// timeRange is the x range every panel shares.
func (t *Timeline) timeRange() (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	see := func(vs ...float64) {
		for _, v := range vs {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	for _, l := range t.Lanes {
		for _, s := range l.Spans {
			see(s.Start, s.End)
		}
		see(l.Points...)
	}
	for _, m := range t.Marks {
		see(m.At)
	}
	for _, s := range t.Rates {
		see(s.X...)
	}
	if lo == hi {
		lo, hi = lo-0.5, hi+0.5
	}
	return lo, hi
}

func (t *Timeline) draw(c draw.Canvas) error {
	if err := t.Validate(); err != nil {
		return err
	}
	lo, hi := t.timeRange()
	xl := t.XLabel
	if xl == "" {
		xl = "seconds"
	}
	var rows []*plot.Plot
	if len(t.Lanes) > 0 {
		laneX := xl
		if len(t.Rates) > 0 {
			laneX = ""
		}
		p := newPlot(t.Title, laneX, "")
		n := len(t.Lanes)
		ticks := make([]plot.Tick, n)
		for i, l := range t.Lanes {
			ticks[i] = plot.Tick{Value: float64(n - 1 - i), Label: l.Name}
		}
		p.Y.Tick.Marker = plot.ConstantTicks(ticks)
		p.Y.Min, p.Y.Max = -0.5, float64(n)-0.5
		p.Add(&lanes{t: t}, &marks{marks: t.Marks, labels: true})
		rows = append(rows, p)
	}
	var lg *legend
	if len(t.Rates) > 0 {
		title := ""
		if len(t.Lanes) == 0 {
			title = t.Title
		}
		p := newPlot(title, xl, t.RateLabel)
		cs := seriesColours(t.Rates, nil)
		addLines(p, t.Rates, cs, false, false)
		p.Add(&marks{marks: t.Marks, labels: len(t.Lanes) == 0})
		lg = newLegend(Outside)
		for i, s := range t.Rates {
			lg.add(s.Name, lineThumb(cs[i]))
		}
		rows = append(rows, p)
	}
	for _, p := range rows {
		p.X.Min, p.X.Max = lo, hi
	}
	if len(rows) == 1 {
		drawPanel(c, rows[0], lg)
		return nil
	}
	// Two panels on one time axis: aligned, the legend beside both.
	w := lg.width()
	grid := [][]*plot.Plot{{rows[0]}, {rows[1]}}
	canvases := plot.Align(grid, draw.Tiles{Rows: 2, Cols: 1, PadY: vg.Points(6)}, draw.Crop(c, 0, -w, 0, 0))
	rows[0].Draw(canvases[0][0])
	rows[1].Draw(canvases[1][0])
	// The legend names the rates: beside their panel.
	strip := c
	strip.Min.Y, strip.Max.Y = canvases[1][0].Min.Y, canvases[1][0].Max.Y
	lg.drawBeside(strip, w)
	return nil
}

// lanes is the plotter of a Timeline's spans and points.
type lanes struct{ t *Timeline }

func (l *lanes) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	n := len(l.t.Lanes)
	ts := p.X.Tick.Label
	ts.Font.Size = vg.Points(8)
	ts.XAlign, ts.YAlign = draw.XCenter, draw.YCenter
	outline := draw.LineStyle{Color: rgb(0x333333), Width: vg.Points(0.4)}
	for i, lane := range l.t.Lanes {
		y := float64(n - 1 - i)
		base := lane.Colour
		if base == nil {
			base = Palette[i%len(Palette)]
		}
		y0, y1 := trY(y-0.32), trY(y+0.32)
		for j, s := range lane.Spans {
			col := s.Colour
			if col == nil {
				col = base
				if j%2 == 1 {
					col = lighten(base)
				}
			}
			x0, x1 := trX(s.Start), trX(s.End)
			if x1-x0 < vg.Points(1) {
				x1 = x0 + vg.Points(1)
			}
			pts := []vg.Point{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}}
			c.FillPolygon(col, c.ClipPolygonXY(pts))
			c.StrokeLines(outline, c.ClipLinesXY(append(pts, pts[0]))...)
			if s.Label != "" && ts.Width(s.Label)+vg.Points(4) < x1-x0 {
				c.FillText(ts, vg.Point{X: (x0 + x1) / 2, Y: (y0 + y1) / 2}, s.Label)
			}
		}
		tick := draw.LineStyle{Color: base, Width: vg.Points(0.6)}
		for _, x := range lane.Points {
			xx := trX(x)
			if c.ContainsX(xx) {
				c.StrokeLine2(tick, xx, trY(y-0.25), xx, trY(y+0.25))
			}
		}
	}
}

// lighten mixes a colour halfway with white.
func lighten(c color.Color) color.Color {
	r, g, b, _ := c.RGBA()
	mix := func(v uint32) uint8 { return uint8((v>>8 + 255) / 2) }
	return color.RGBA{R: mix(r), G: mix(g), B: mix(b), A: 0xff}
}

// marks is the plotter of a Timeline's vertical marks.
type marks struct {
	marks  []Mark
	labels bool
}

func (m *marks) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	sty := draw.LineStyle{Color: rgb(0x333333), Width: vg.Points(1), Dashes: []vg.Length{vg.Points(4), vg.Points(3)}}
	ts := p.X.Tick.Label
	ts.Font.Size = vg.Points(9)
	ts.XAlign, ts.YAlign = draw.XLeft, draw.YTop
	for i, mk := range m.marks {
		x := trX(mk.At)
		if !c.ContainsX(x) {
			continue
		}
		c.StrokeLine2(sty, x, c.Min.Y, x, c.Max.Y)
		if m.labels && mk.Label != "" {
			// Staggered, so that marks close together keep readable
			// labels; on the left of a line near the right edge.
			y := c.Max.Y - vg.Points(2) - vg.Length(i%3)*ts.Height(mk.Label)
			ls, lx := ts, x+vg.Points(2)
			if x+ts.Width(mk.Label)+vg.Points(4) > c.Max.X {
				ls.XAlign, lx = draw.XRight, x-vg.Points(2)
			}
			c.FillText(ls, vg.Point{X: lx, Y: y}, mk.Label)
		}
	}
}
