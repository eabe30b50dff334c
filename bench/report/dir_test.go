package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func testTable() *Table {
	t := &Table{Title: "prefetch: 2048 pages", Columns: []Column{
		{Name: "workload"}, {Name: "predictor"}, {Name: "demand\nfaults"}, {Name: "precision", Format: "%.3f"}, {Name: "note"},
	}, Notes: []string{"warming: recorded run"}}
	t.AddRow("sequential", "none", 2048, 0.0, "a, \"quoted\" cell")
	t.AddRow("pointer-chase", "ppm", 120, 0.9261, "multi\nline")
	return t
}

func TestTableText(t *testing.T) {
	got := testTable().String()
	want := "prefetch: 2048 pages\n" +
		"                          demand\n" +
		"workload       predictor  faults  precision  note\n" +
		"sequential     none         2048      0.000  a, \"quoted\" cell\n" +
		"pointer-chase  ppm           120      0.926  multi\nline\n" +
		"warming: recorded run\n"
	if got != want {
		t.Errorf("text:\n%s\nwant:\n%s", got, want)
	}
	narrow := &Table{Columns: []Column{{Name: "a"}, {Name: "b"}}, Rows: [][]string{{"x", "1"}}, Gap: 1}
	if got, want := narrow.String(), "a b\nx 1\n"; got != want {
		t.Errorf("gap 1: %q, want %q", got, want)
	}
}

func TestTableCSVRoundTrip(t *testing.T) {
	tab := testTable()
	var b bytes.Buffer
	if err := tab.CSV(&b); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatalf("CSV does not parse: %v", err)
	}
	wantHeader := []string{"workload", "predictor", "demand faults", "precision", "note"}
	if !slices.Equal(recs[0], wantHeader) {
		t.Errorf("header %q, want %q", recs[0], wantHeader)
	}
	if len(recs) != 1+len(tab.Rows) {
		t.Fatalf("%d records, want %d", len(recs), 1+len(tab.Rows))
	}
	for i, r := range tab.Rows {
		if !slices.Equal(recs[i+1], r) {
			t.Errorf("row %d: %q, want %q", i, recs[i+1], r)
		}
	}
}

func TestTableErrors(t *testing.T) {
	tab := testTable()
	tab.AddRow("short")
	var b bytes.Buffer
	for name, f := range map[string]func() error{"Text": func() error { return tab.Text(&b) }, "CSV": func() error { return tab.CSV(&b) }} {
		if err := f(); err == nil || !strings.Contains(err.Error(), "row 2 has 1 cells, want 5") {
			t.Errorf("%s: %v, want the short row reported", name, err)
		}
	}
	if err := (&Table{Title: "x"}).Validate(); err == nil || !strings.Contains(err.Error(), "no columns") {
		t.Errorf("no columns: %v", err)
	}
}

func TestDirWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "run")
	data := map[string]any{"results": []int{1, 2}}
	second := &Table{Name: "filter", Title: "filter", Columns: []Column{{Name: "x"}}, Rows: [][]string{{"1"}}}
	charts := testCharts()
	rep := &Report{Name: "bench", Title: "pagewarp bench test", Command: "pagewarp bench test", Data: data,
		Tables: []*Table{testTable(), second}, Charts: charts[:2]}
	paths, err := Dir{Path: dir}.Write(rep)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range paths {
		if filepath.Dir(p) != dir {
			t.Errorf("%s written outside %s", p, dir)
		}
		names = append(names, filepath.Base(p))
	}
	want := []string{"bench.json", "bench.csv", "bench-filter.csv", "table.txt", "line.png", "line.svg", "loglines.png", "loglines.svg", "README.md"}
	if !slices.Equal(names, want) {
		t.Errorf("files %q, want %q", names, want)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(want) {
		t.Errorf("folder holds %d files, want %d", len(entries), len(want))
	}
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var back map[string]any
	if err := json.Unmarshal(read("bench.json"), &back); err != nil || len(back["results"].([]any)) != 2 {
		t.Errorf("bench.json: %v %v", back, err)
	}
	if got := string(read("table.txt")); got != testTable().String()+"\n"+second.String() {
		t.Errorf("table.txt:\n%s", got)
	}
	if _, err := png.Decode(bytes.NewReader(read("line.png"))); err != nil {
		t.Errorf("line.png: %v", err)
	}
	idx := string(read("README.md"))
	for _, n := range want {
		if !strings.Contains(idx, n) {
			t.Errorf("README.md does not list %s", n)
		}
	}
	for _, s := range []string{"# pagewarp bench test", "`pagewarp bench test`", "demand faults over time", "![bytes per round](loglines.svg)"} {
		if !strings.Contains(idx, s) {
			t.Errorf("README.md lacks %q:\n%s", s, idx)
		}
	}
}

func TestDirWriteErrors(t *testing.T) {
	base := t.TempDir()
	good := testCharts()[0]
	for _, c := range []struct {
		rep  *Report
		want string
	}{
		{&Report{Name: "r", Charts: []Chart{good, &Line{Name: "bad"}}}, `line chart "bad": no series`},
		{&Report{Name: "r", Charts: []Chart{good, good}}, "two files named line.png"},
		{&Report{Name: "../r"}, "name must be"},
		{&Report{Name: "r", Tables: []*Table{{Title: "t"}}}, "no columns"},
		{&Report{Name: "r", Data: func() {}}, "json"},
	} {
		dir := filepath.Join(base, "out")
		_, err := Dir{Path: dir}.Write(c.rep)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want one containing %q", err, c.want)
		}
		if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
			t.Errorf("%q: folder created although the report failed", c.want)
		}
	}
	if _, err := (Dir{}).Write(&Report{Name: "r"}); err == nil {
		t.Error("empty path accepted")
	}
}
