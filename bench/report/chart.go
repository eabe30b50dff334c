package report

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"regexp"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Chart is a chart Dir writes as NAME.png and NAME.svg: *Line, *CDF, *Bar,
// *Timeline or *Grid.
type Chart interface {
	// FileName is the base name of the chart's files: letters, digits,
	// '.', '_' and '-'.
	FileName() string
	// Describe is the one line the folder's README gives the chart.
	Describe() string
	// Validate reports the first problem with the chart's data.
	Validate() error
	// size is the chart's size in pixels (at 96 dpi).
	size() (w, h int)
	// draw renders the validated chart onto c.
	draw(c draw.Canvas) error
}

// panel is a chart drawn as one gonum plot plus its legend, which a Grid
// can place in a cell.
type panel interface {
	Chart
	// build returns the plot and its legend (nil: none). Series without a
	// colour of their own take byName's colour for their name when byName
	// has one (a Grid's shared legend), else the palette's next.
	build(byName map[string]color.Color) (*plot.Plot, *legend, error)
	// seriesNames lists the names the legend shows, in order.
	seriesNames() []string
}

// Default chart size in pixels.
const (
	DefaultWidth  = 900
	DefaultHeight = 540
)

// dpi of the PNG files; SVG sizes are the same at 96 user units per inch.
const dpi = 96

func pixels(n int) vg.Length { return vg.Length(n) * vg.Inch / dpi }

func sizeOr(w, h int) (int, int) {
	if w <= 0 {
		w = DefaultWidth
	}
	if h <= 0 {
		h = DefaultHeight
	}
	return w, h
}

// PNG renders c as a PNG image of its size.
func PNG(c Chart) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	w, h := c.size()
	img := vgimg.NewWith(vgimg.UseWH(pixels(w), pixels(h)), vgimg.UseDPI(dpi), vgimg.UseBackgroundColor(color.White))
	if err := c.draw(draw.New(img)); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&b); err != nil {
		return nil, fmt.Errorf("chart %q: png: %w", c.FileName(), err)
	}
	return b.Bytes(), nil
}

// SVG renders c as an SVG document (fonts named, not embedded, to keep
// the file small).
func SVG(c Chart) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	w, h := c.size()
	s := vgsvg.NewWith(vgsvg.UseWH(pixels(w), pixels(h)))
	dc := draw.New(s)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	if err := c.draw(dc); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if _, err := s.WriteTo(&b); err != nil {
		return nil, fmt.Errorf("chart %q: svg: %w", c.FileName(), err)
	}
	return b.Bytes(), nil
}

// Palette is the Okabe-Ito colour-blind-safe palette, in the order series
// without a Colour of their own take it (repeating after eight).
var Palette = []color.Color{
	rgb(0xE69F00), // orange
	rgb(0x56B4E9), // sky blue
	rgb(0x009E73), // bluish green
	rgb(0x0072B2), // blue
	rgb(0xD55E00), // vermillion
	rgb(0xCC79A7), // reddish purple
	rgb(0x000000), // black
	rgb(0xF0E442), // yellow (last: faint on white)
}

// Grey is a neutral colour for a baseline series.
var Grey = rgb(0x999999)

func rgb(v uint32) color.Color {
	return color.RGBA{R: uint8(v >> 16), G: uint8(v >> 8), B: uint8(v), A: 0xff}
}

// colours assigns each series its own colour, else byName's for its name,
// else the palette's next.
func colours(names []string, own []color.Color, byName map[string]color.Color) []color.Color {
	out := make([]color.Color, len(own))
	next := 0
	for i, c := range own {
		if c == nil {
			c = byName[names[i]]
		}
		if c != nil {
			out[i] = c
			continue
		}
		out[i] = Palette[next%len(Palette)]
		next++
	}
	return out
}

// Corner places a chart's legend; legends sit beside the plot, on its
// right, unless a Corner puts them inside.
type Corner int

const (
	// Outside puts the legend to the right of the plot area (the default).
	Outside Corner = iota
	TopLeft
	TopRight
	BottomLeft
	BottomRight
)

// Ref is a horizontal reference line across a Line or Bar chart.
type Ref struct {
	Y     float64
	Label string
}

var fileNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func checkName(kind, name string) error {
	if !fileNameRE.MatchString(name) {
		return fmt.Errorf("%s %q: name must be letters, digits, '.', '_' or '-' (it names the chart's files)", kind, name)
	}
	return nil
}

// checkValues reports a NaN or infinite value, or one a log axis cannot
// show, naming where it is.
func checkValues(where, axis string, vs []float64, log bool) error {
	for i, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%s: %s[%d] is %v, want a finite number", where, axis, i, v)
		}
		if log && v <= 0 {
			return fmt.Errorf("%s: %s[%d] = %v on a log axis, want > 0", where, axis, i, v)
		}
	}
	return nil
}

func checkRefs(where string, refs []Ref, log bool) error {
	for i, r := range refs {
		if math.IsNaN(r.Y) || math.IsInf(r.Y, 0) || (log && r.Y <= 0) {
			return fmt.Errorf("%s: reference line %d (%q) at %v cannot be drawn", where, i, r.Label, r.Y)
		}
	}
	return nil
}

// newPlot returns a plot with the package's common style.
func newPlot(title, xlabel, ylabel string) *plot.Plot {
	p := plot.New()
	p.X.Tick.Marker = plainTicks{}
	p.Y.Tick.Marker = plainTicks{}
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(12)
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	p.Add(&plotter.Grid{
		Vertical:   draw.LineStyle{Color: rgb(0xe4e4e4), Width: vg.Points(0.5)},
		Horizontal: draw.LineStyle{Color: rgb(0xe4e4e4), Width: vg.Points(0.5)},
	})
	return p
}

// legend is a plot.Legend that remembers its entries' names (to size it).
type legend struct {
	plot.Legend
	at      Corner
	names   []string
	entries []plot.Thumbnailer
}

func (l *legend) add(name string, thumb plot.Thumbnailer) {
	l.Add(name, thumb)
	l.names = append(l.names, name)
	l.entries = append(l.entries, thumb)
}

func newLegend(at Corner) *legend {
	l := &legend{Legend: plot.NewLegend(), at: at}
	l.ThumbnailWidth = vg.Points(18)
	l.Padding = vg.Points(2)
	l.Top = at == Outside || at == TopLeft || at == TopRight
	l.Left = at == Outside || at == TopLeft || at == BottomLeft
	if at != Outside {
		l.XOffs, l.YOffs = vg.Points(6), vg.Points(-6)
		if !l.Left {
			l.XOffs = -l.XOffs
		}
		if !l.Top {
			l.YOffs = vg.Points(6)
		}
	}
	return l
}

// plainTicks are gonum's default ticks with their labels' trailing zeros
// cut ("250.00" becomes "250", "0.50" "0.5").
type plainTicks struct{}

func (plainTicks) Ticks(min, max float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(min, max)
	for i, t := range ts {
		if l := t.Label; strings.Contains(l, ".") && !strings.ContainsAny(l, "eE") {
			ts[i].Label = strings.TrimSuffix(strings.TrimRight(l, "0"), ".")
		}
	}
	return ts
}

// setLog makes an axis logarithmic with readable ticks.
func setLog(a *plot.Axis) {
	a.Scale = plot.LogScale{}
	a.Tick.Marker = logTicks{}
}

// logTicks labels 1, 2 and 5 times each power of ten when the axis spans
// less than three decades, else each power of ten (with unlabelled minor
// ticks at 2..9 times it).
type logTicks struct{}

func (logTicks) Ticks(min, max float64) []plot.Tick {
	if min <= 0 || max <= 0 || min > max {
		return nil
	}
	lo, hi := math.Floor(math.Log10(min)), math.Ceil(math.Log10(max))
	fine := hi-lo < 3
	var ts []plot.Tick
	for e := lo; e <= hi; e++ {
		base := math.Pow(10, e)
		for m := 1; m < 10; m++ {
			v := base * float64(m)
			if v < min*(1-1e-9) || v > max*(1+1e-9) {
				continue
			}
			label := ""
			if m == 1 || (fine && (m == 2 || m == 5)) {
				label = strconv.FormatFloat(v, 'g', 6, 64)
			}
			ts = append(ts, plot.Tick{Value: v, Label: label})
		}
	}
	return ts
}

// logRange widens [lo, hi] to whole decades (a log axis of data within one
// decade still gets two labelled ticks).
func logRange(lo, hi float64) (float64, float64) {
	return math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)))
}

// refLines draws horizontal dashed lines with their labels at the right.
type refLines struct{ refs []Ref }

func (r refLines) Plot(c draw.Canvas, p *plot.Plot) {
	_, y := p.Transforms(&c)
	sty := draw.LineStyle{Color: rgb(0x333333), Width: vg.Points(1), Dashes: []vg.Length{vg.Points(5), vg.Points(3)}}
	ts := plot.New().Legend.TextStyle
	ts.Font.Size = vg.Points(9)
	ts.XAlign, ts.YAlign = draw.XRight, draw.YBottom
	for _, ref := range r.refs {
		if ref.Y < p.Y.Min || ref.Y > p.Y.Max {
			continue
		}
		yy := y(ref.Y)
		c.StrokeLine2(sty, c.Min.X, yy, c.Max.X, yy)
		if ref.Label != "" {
			c.FillText(ts, vg.Point{X: c.Max.X - vg.Points(2), Y: yy + vg.Points(1)}, ref.Label)
		}
	}
}

// drawPanel draws p with its legend: beside it (Outside) or inside.
func drawPanel(c draw.Canvas, p *plot.Plot, l *legend) {
	if l == nil || len(l.names) == 0 {
		p.Draw(c)
		return
	}
	if l.at != Outside {
		p.Legend = l.Legend
		p.Draw(c)
		return
	}
	w := l.width()
	p.Draw(draw.Crop(c, 0, -w, 0, 0))
	l.drawBeside(c, w)
}

// drawBeside draws the legend in the strip of width w at c's right edge,
// from the top (below the height of a title).
func (l *legend) drawBeside(c draw.Canvas, w vg.Length) {
	l.Legend.Draw(draw.Crop(c, c.Max.X-c.Min.X-w+vg.Points(8), 0, 0, -vg.Points(28)))
}

// width is the room the legend takes to the right of a plot (0: none).
func (l *legend) width() vg.Length {
	if l == nil || len(l.names) == 0 {
		return 0
	}
	var w vg.Length
	for _, n := range l.names {
		w = max(w, l.TextStyle.Width(n))
	}
	return w + l.ThumbnailWidth + vg.Points(20)
}

// swatch is a legend thumbnail of a filled square.
type swatch struct{ c color.Color }

func (s swatch) Thumbnail(c *draw.Canvas) {
	side := min(c.Max.Y-c.Min.Y, c.Max.X-c.Min.X)
	x0 := c.Min.X
	y0 := c.Min.Y + (c.Max.Y-c.Min.Y-side)/2
	pts := []vg.Point{{X: x0, Y: y0}, {X: x0 + side, Y: y0}, {X: x0 + side, Y: y0 + side}, {X: x0, Y: y0 + side}}
	c.FillPolygon(s.c, pts)
}
