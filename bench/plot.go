package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// Layout of the prefetch chart, in SVG user units (pixels).
const (
	plotWidth       = 1100
	plotHeight      = 700
	plotLeft        = 80  // room for the y tick labels and the axis title
	plotRight       = 24  // room for the reference line labels
	plotTop         = 78  // title, legend and the first panel's title above
	plotPanelGap    = 34  // between the first panel's x labels and the second panel
	plotBottomPad   = 8   // below the second panel's x labels
	plotFontSize    = 11  // tick and x labels
	plotLabelMax    = 24  // longest x label in runes before it is shortened
	plotCharWidth   = 6.6 // rough advance of one character at plotFontSize
	plotLogMin      = 0.01
	plotLogMax      = 1.0
	plotTarget      = 0.7 // the precision target drawn in the second panel
	plotGroupFill   = 0.8 // share of a group's width taken by its bars
	plotLabelRotate = 35  // degrees, when the x labels do not fit flat
)

// plotNoneColour is the colour of the baseline predictor "none".
const plotNoneColour = "#999999"

// plotPalette is the Okabe-Ito colour-blind-safe palette (black last: it is
// the heaviest on a bar chart). Predictors other than "none" take its
// colours in order of first appearance, repeating after eight.
var plotPalette = [...]string{
	"#E69F00", // orange
	"#56B4E9", // sky blue
	"#009E73", // bluish green
	"#F0E442", // yellow
	"#0072B2", // blue
	"#D55E00", // vermillion
	"#CC79A7", // reddish purple
	"#000000", // black
}

// PrefetchSVG renders rep as a self-contained SVG chart of two stacked
// panels of grouped bars, one group per workload and one bar per predictor
// (both in order of first appearance in rep.Results):
//
//   - top: demand faults relative to the predictor "none" of the same
//     workload, on a log axis from 0.01 to 1 (values outside are clamped
//     and marked with a small triangle), with the floor 1/(budget+1) that a
//     predictor pushing its whole budget after every fault can reach at
//     best; a workload without a "none" result (or whose "none" run had no
//     demand fault) has no bars here;
//   - bottom: precision (pushed pages used / pushed) on a linear axis from 0
//     to 1 with the target 0.7; "none" pushes nothing and has no bar.
//
// Each bar carries a <title> with its exact value. The output depends only
// on rep: the same report renders to the same bytes.
func PrefetchSVG(rep *PrefetchReport) []byte {
	if rep == nil {
		rep = &PrefetchReport{}
	}

	// Workloads and predictors in order of first appearance; the first
	// result of each workload × predictor pair counts.
	type pair struct{ workload, predictor string }
	var workloads, predictors []string
	seenW := map[string]bool{}
	seenP := map[string]bool{}
	cell := map[pair]*PrefetchResult{}
	for i := range rep.Results {
		r := &rep.Results[i]
		if !seenW[r.Workload] {
			seenW[r.Workload] = true
			workloads = append(workloads, r.Workload)
		}
		if !seenP[r.Predictor] {
			seenP[r.Predictor] = true
			predictors = append(predictors, r.Predictor)
		}
		if k := (pair{r.Workload, r.Predictor}); cell[k] == nil {
			cell[k] = r
		}
	}
	colours := make([]string, len(predictors))
	next := 0
	for i, p := range predictors {
		if p == "none" {
			colours[i] = plotNoneColour
			continue
		}
		colours[i] = plotPalette[next%len(plotPalette)]
		next++
	}

	// X layout, shared by both panels.
	plotW := float64(plotWidth - plotLeft - plotRight)
	groupW := plotW
	if len(workloads) > 0 {
		groupW = plotW / float64(len(workloads))
	}
	barW := groupW * plotGroupFill
	if len(predictors) > 0 {
		barW /= float64(len(predictors))
	}
	barX := func(g, p int) float64 {
		return plotLeft + float64(g)*groupW + groupW*(1-plotGroupFill)/2 + float64(p)*barW
	}
	labels := make([]string, len(workloads))
	longest := 0
	for i, w := range workloads {
		labels[i] = plotShorten(w, plotLabelMax)
		longest = max(longest, utf8.RuneCountInString(labels[i]))
	}
	rotate := float64(longest)*plotCharWidth > groupW-4
	labelBand := 22.0
	if rotate {
		rad := plotLabelRotate * math.Pi / 180
		labelBand = 16 + float64(longest)*plotCharWidth*math.Sin(rad)
		// A rotated label ends at its group's centre and runs down to the
		// left: shorten those of the first groups to stay on the canvas.
		for g := range labels {
			cx := plotLeft + (float64(g)+0.5)*groupW
			labels[g] = plotShorten(labels[g], int((cx-4)/(plotCharWidth*math.Cos(rad))))
		}
	}

	// Y layout: two panels of equal height.
	panelH := (plotHeight - plotTop - 2*labelBand - plotPanelGap - plotBottomPad) / 2
	top1 := float64(plotTop)
	bottom1 := top1 + panelH
	top2 := bottom1 + labelBand + plotPanelGap
	bottom2 := top2 + panelH
	right := float64(plotWidth - plotRight)

	logY := func(v float64) float64 {
		lo, hi := math.Log10(plotLogMin), math.Log10(plotLogMax)
		return bottom1 - (math.Log10(v)-lo)/(hi-lo)*panelH
	}
	linY := func(v float64) float64 { return bottom2 - v*panelH }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="%d">`+"\n",
		plotWidth, plotHeight, plotWidth, plotHeight, plotFontSize)
	fmt.Fprintf(&b, `<rect class="background" x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", plotWidth, plotHeight)

	title := fmt.Sprintf("pagewarp prefetch: %d pages, %d threads, budget %d",
		rep.Setup.Pages, rep.Setup.Threads, rep.Setup.Budget)
	fmt.Fprintf(&b, `<text class="title" x="%s" y="24" text-anchor="middle" font-size="16" font-weight="bold">%s</text>`+"\n",
		plotNum(plotWidth/2), plotEscape(title))

	// Legend, on one line under the title.
	b.WriteString(`<g class="legend">` + "\n")
	lx := float64(plotLeft)
	for i, p := range predictors {
		fmt.Fprintf(&b, `<rect class="swatch" x="%s" y="36" width="12" height="12" fill="%s" stroke="#333333" stroke-width="0.5"/>`+"\n",
			plotNum(lx), colours[i])
		fmt.Fprintf(&b, `<text x="%s" y="46">%s</text>`+"\n", plotNum(lx+16), plotEscape(p))
		lx += 16 + float64(utf8.RuneCountInString(p))*plotCharWidth + 18
	}
	b.WriteString("</g>\n")

	// Axes, gridlines and reference lines of a panel.
	panelFrame := func(top, bottom float64, title, axis string, ticks []float64, tickLabels []string, y func(float64) float64) {
		fmt.Fprintf(&b, `<text class="panel-title" x="%d" y="%s" font-size="13" font-weight="bold">%s</text>`+"\n",
			plotLeft, plotNum(top-12), plotEscape(title))
		for i, t := range ticks {
			ty := y(t)
			fmt.Fprintf(&b, `<line class="grid" x1="%d" y1="%s" x2="%s" y2="%s" stroke="#dddddd" stroke-width="1"/>`+"\n",
				plotLeft, plotNum(ty), plotNum(right), plotNum(ty))
			fmt.Fprintf(&b, `<text x="%d" y="%s" text-anchor="end">%s</text>`+"\n",
				plotLeft-6, plotNum(ty+4), plotEscape(tickLabels[i]))
		}
		fmt.Fprintf(&b, `<line class="axis" x1="%d" y1="%s" x2="%d" y2="%s" stroke="#333333" stroke-width="1"/>`+"\n",
			plotLeft, plotNum(top), plotLeft, plotNum(bottom))
		fmt.Fprintf(&b, `<line class="axis" x1="%d" y1="%s" x2="%s" y2="%s" stroke="#333333" stroke-width="1"/>`+"\n",
			plotLeft, plotNum(bottom), plotNum(right), plotNum(bottom))
		ax, ay := 22.0, (top+bottom)/2
		fmt.Fprintf(&b, `<text class="axis-title" x="%s" y="%s" text-anchor="middle" transform="rotate(-90 %s %s)">%s</text>`+"\n",
			plotNum(ax), plotNum(ay), plotNum(ax), plotNum(ay), plotEscape(axis))
	}
	refLine := func(yv float64, label string) {
		fmt.Fprintf(&b, `<line class="reference" x1="%d" y1="%s" x2="%s" y2="%s" stroke="#333333" stroke-width="1.2" stroke-dasharray="6 4"/>`+"\n",
			plotLeft, plotNum(yv), plotNum(right), plotNum(yv))
		fmt.Fprintf(&b, `<text class="reference-label" x="%s" y="%s" text-anchor="end" fill="#333333" stroke="#ffffff" stroke-width="3" paint-order="stroke">%s</text>`+"\n",
			plotNum(right-2), plotNum(yv-4), plotEscape(label))
	}
	xLabels := func(bottom float64) {
		for g, l := range labels {
			cx := plotLeft + (float64(g)+0.5)*groupW
			ty := bottom + 16
			if rotate {
				fmt.Fprintf(&b, `<text class="xlabel" x="%s" y="%s" text-anchor="end" transform="rotate(-%d %s %s)">%s</text>`+"\n",
					plotNum(cx), plotNum(ty), plotLabelRotate, plotNum(cx), plotNum(ty), plotEscape(l))
			} else {
				fmt.Fprintf(&b, `<text class="xlabel" x="%s" y="%s" text-anchor="middle">%s</text>`+"\n",
					plotNum(cx), plotNum(ty), plotEscape(l))
			}
		}
	}
	bar := func(x, y0, y1 float64, colour, tip string) {
		fmt.Fprintf(&b, `<rect class="bar" x="%s" y="%s" width="%s" height="%s" fill="%s" stroke="#333333" stroke-width="0.5"><title>%s</title></rect>`+"\n",
			plotNum(x), plotNum(y1), plotNum(barW), plotNum(max(y0-y1, 0)), colour, plotEscape(tip))
	}
	// clampMark draws a small triangle at (x, y) on a bar whose value lies
	// outside the axis: pointing up above it, or down at the baseline.
	clampMark := func(x, y float64, up bool) {
		cx, h, w := x+barW/2, 5.0, min(barW/2, 5)
		if up {
			fmt.Fprintf(&b, `<path class="clamped" d="M%s %sL%s %sL%s %sZ" fill="#333333"/>`+"\n",
				plotNum(cx-w), plotNum(y-2), plotNum(cx+w), plotNum(y-2), plotNum(cx), plotNum(y-2-h))
		} else {
			fmt.Fprintf(&b, `<path class="clamped" d="M%s %sL%s %sL%s %sZ" fill="#333333"/>`+"\n",
				plotNum(cx-w), plotNum(y-2-h), plotNum(cx+w), plotNum(y-2-h), plotNum(cx), plotNum(y-2))
		}
	}

	// Top panel: demand faults relative to none.
	b.WriteString(`<g class="panel" id="demand-faults">` + "\n")
	panelFrame(top1, bottom1, "Demand faults relative to none (log scale, lower is better)", "demand faults / none",
		[]float64{0.01, 0.03, 0.1, 0.3, 1}, []string{"0.01", "0.03", "0.1", "0.3", "1"}, logY)
	for g, w := range workloads {
		base := cell[pair{w, "none"}]
		if base == nil || base.DemandFaults == 0 {
			continue
		}
		for p, name := range predictors {
			r := cell[pair{w, name}]
			if r == nil {
				continue
			}
			ratio := float64(r.DemandFaults) / float64(base.DemandFaults)
			v := min(max(ratio, plotLogMin), plotLogMax)
			x, y := barX(g, p), logY(v)
			tip := fmt.Sprintf("%s / %s: %.4f of none (%d / %d demand faults)",
				w, name, ratio, r.DemandFaults, base.DemandFaults)
			bar(x, bottom1, y, colours[p], tip)
			if ratio > plotLogMax {
				clampMark(x, y, true)
			} else if ratio < plotLogMin {
				clampMark(x, bottom1, false)
			}
		}
	}
	// Reference lines go over the bars so that they stay visible.
	if k := rep.Setup.Budget; k > 0 {
		if floor := 1 / float64(k+1); floor >= plotLogMin && floor <= plotLogMax {
			refLine(logY(floor), fmt.Sprintf("floor 1/(k+1) = %.3f", floor))
		}
	}
	xLabels(bottom1)
	b.WriteString("</g>\n")

	// Bottom panel: precision.
	b.WriteString(`<g class="panel" id="precision">` + "\n")
	panelFrame(top2, bottom2, "Precision: pushed pages used / pushed (higher is better)", "precision",
		[]float64{0, 0.25, 0.5, 0.75, 1}, []string{"0", "0.25", "0.5", "0.75", "1"}, linY)
	for g, w := range workloads {
		for p, name := range predictors {
			r := cell[pair{w, name}]
			if r == nil || name == "none" || math.IsNaN(r.Precision) {
				continue
			}
			v := min(max(r.Precision, 0), 1)
			tip := fmt.Sprintf("%s / %s: precision %.4f (%d of %d pushed pages used)",
				w, name, r.Precision, r.PushedUsed, r.Pushed)
			bar(barX(g, p), bottom2, linY(v), colours[p], tip)
		}
	}
	refLine(linY(plotTarget), "target 0.7")
	xLabels(bottom2)
	b.WriteString("</g>\n")

	b.WriteString("</svg>\n")
	return b.Bytes()
}

// plotNum formats a coordinate with one decimal, never as "-0.0".
func plotNum(v float64) string {
	s := strconv.FormatFloat(v, 'f', 1, 64)
	if s == "-0.0" {
		s = "0.0"
	}
	return s
}

// plotEscape escapes s for XML text and attribute values; characters XML
// cannot hold become U+FFFD.
func plotEscape(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s)) // a bytes.Buffer does not fail
	return b.String()
}

// plotShorten cuts s to at most n runes, ending it with "…" when cut.
func plotShorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n < 1 {
		return ""
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
