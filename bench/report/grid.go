package report

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Grid is a set of small multiples: Line, CDF or Bar charts in rows of
// Cols cells, written as one image. The cells' own Name, Width and Height
// are ignored.
type Grid struct {
	Name    string
	Title   string
	Caption string
	// Cols is the number of cells in a row (default 2, or 1 for a single
	// chart).
	Cols   int
	Charts []Chart
	// SharedLegend draws one legend, at the right, for every cell: series
	// of the same name get the same colour in every cell, and the cells'
	// axes are aligned.
	SharedLegend bool
	// Width and Height in pixels (default DefaultWidth wide, 320 per row).
	Width, Height int
}

const gridRowHeight = 320

func (g *Grid) FileName() string { return g.Name }
func (g *Grid) Describe() string { return describe(g.Caption, g.Title, "small multiples") }

func (g *Grid) cols() int {
	switch {
	case g.Cols > 0:
		return g.Cols
	case len(g.Charts) == 1:
		return 1
	}
	return 2
}

func (g *Grid) rows() int { return (len(g.Charts) + g.cols() - 1) / g.cols() }

func (g *Grid) size() (int, int) {
	h := g.Height
	if h <= 0 {
		h = g.rows()*gridRowHeight + 40
	}
	return sizeOr(g.Width, h)
}

// Validate checks the name, that there are cells, each a valid Line, CDF
// or Bar chart.
func (g *Grid) Validate() error {
	if err := checkName("grid", g.Name); err != nil {
		return err
	}
	if len(g.Charts) == 0 {
		return fmt.Errorf("grid %q: no charts", g.Name)
	}
	for i, c := range g.Charts {
		if c == nil {
			return fmt.Errorf("grid %q: chart %d is nil", g.Name, i)
		}
		if _, ok := c.(panel); !ok {
			return fmt.Errorf("grid %q: chart %d (%T) cannot be a cell: want a Line, CDF or Bar", g.Name, i, c)
		}
		if err := c.Validate(); err != nil {
			return fmt.Errorf("grid %q: cell %d: %w", g.Name, i, err)
		}
	}
	return nil
}

func (g *Grid) draw(c draw.Canvas) error {
	if g.Title != "" {
		ts := plot.New().Title.TextStyle
		ts.Font.Size = vg.Points(13)
		ts.XAlign, ts.YAlign = draw.XCenter, draw.YTop
		c.FillText(ts, vg.Point{X: (c.Min.X + c.Max.X) / 2, Y: c.Max.Y - vg.Points(6)}, g.Title)
		c = draw.Crop(c, 0, 0, 0, -(ts.Height(g.Title) + vg.Points(12)))
	}
	tiles := draw.Tiles{Rows: g.rows(), Cols: g.cols(), PadX: vg.Points(10), PadY: vg.Points(10),
		PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(4)}
	panels := make([]panel, len(g.Charts))
	for i, ch := range g.Charts {
		panels[i] = ch.(panel)
	}
	if !g.SharedLegend {
		for i, pc := range panels {
			p, l, err := pc.build(nil)
			if err != nil {
				return err
			}
			drawPanel(tiles.At(c, i%g.cols(), i/g.cols()), p, l)
		}
		return nil
	}
	// One colour per series name across the cells, in order of first
	// appearance, and one legend for all of them.
	var names []string
	byName := map[string]color.Color{}
	for _, pc := range panels {
		for _, n := range pc.seriesNames() {
			if _, ok := byName[n]; !ok {
				byName[n] = Palette[len(names)%len(Palette)]
				names = append(names, n)
			}
		}
	}
	plots := make([][]*plot.Plot, g.rows())
	for r := range plots {
		plots[r] = make([]*plot.Plot, g.cols())
	}
	lg := newLegend(Outside)
	legendDone := map[string]bool{}
	for i, pc := range panels {
		p, pl, err := pc.build(byName)
		if err != nil {
			return err
		}
		plots[i/g.cols()][i%g.cols()] = p
		// The cell's legend knows the colour each name got (a series'
		// own colour wins over byName).
		if pl != nil {
			for j, n := range pl.names {
				if !legendDone[n] {
					legendDone[n] = true
					lg.add(n, pl.entries[j])
				}
			}
		}
	}
	w := lg.width()
	area := draw.Crop(c, 0, -w, 0, 0)
	canvases := plot.Align(plots, tiles, area)
	for r := range plots {
		for col, p := range plots[r] {
			if p != nil {
				p.Draw(canvases[r][col])
			}
		}
	}
	lg.drawBeside(c, w)
	return nil
}
