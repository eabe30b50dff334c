// Package report turns a benchmark's results into files a person can read:
// a Table (aligned terminal text and CSV) and charts (Line, CDF, Bar,
// Timeline, and Grid of small multiples), each rendered to PNG and SVG with
// gonum.org/v1/plot. Dir writes a whole Report into a folder: NAME.json
// (the results as --json prints them), NAME.csv (the first table),
// table.txt (every table as the terminal shows it), CHART.png and
// CHART.svg, and a README.md that lists every file with one line on it.
//
// The model is generic: it knows nothing of pagewarp's suites. A suite
// builds a Report from its result type (package bench does it for faults,
// prefetch and pre-copy) and hands it to Dir.Write:
//
//	rep := &report.Report{Name: "hybrid", Title: "pagewarp bench hybrid", Data: res}
//	t := &report.Table{Title: "hybrid", Columns: []report.Column{{Name: "policy"}, {Name: "MiB", Format: "%.1f"}}}
//	t.AddRow("adaptive", 214.2)
//	rep.Tables = append(rep.Tables, t)
//	rep.Charts = append(rep.Charts, &report.Line{Name: "bytes-per-round", Title: "bytes per round",
//		XLabel: "round", YLabel: "MiB", Series: []report.Series{{Name: "adaptive", X: []float64{0, 1}, Y: []float64{128, 30}}}})
//	files, err := report.Dir{Path: "bench-results/hybrid"}.Write(rep)
//
// Invariants: charts are validated before anything is written (an empty
// series, a NaN, x and y of different lengths, a value a log axis cannot
// show each give an error naming the chart and series), so a folder is
// never left with half its files from a bad report; rendering depends only
// on the data, so the same report renders to the same bytes. Nothing here
// holds a lock or starts a goroutine: a Report may be rendered from any
// goroutine, but not mutated while it is.
package report
