package report

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Align says how a column's cells line up in the terminal text.
type Align int

const (
	// AlignAuto right-aligns a column whose cells all read as numbers
	// ("12", "0.5", "-3e4", "19.4%", "-") and left-aligns any other.
	AlignAuto Align = iota
	AlignLeft
	AlignRight
)

// Column is one column of a Table.
type Column struct {
	// Name heads the column. A "\n" splits it over several header lines
	// in the terminal text ("demand\nfaults"); CSV joins the lines with a
	// space.
	Name string
	// Format is the fmt verb AddRow applies to this column's values
	// ("%.3f"); empty: fmt.Sprint (strings as they are).
	Format string
	Align  Align
}

// Table is a titled grid of text cells: rendered as aligned terminal text
// (Text) and as CSV (CSV). Every row must have one cell per column.
type Table struct {
	// Name is the CSV file's base name when the table is not a report's
	// first (Dir writes REPORT-NAME.csv); empty: "table" plus its index.
	Name string
	// Title is printed above the terminal text (it may hold several lines)
	// and is not part of the CSV.
	Title   string
	Columns []Column
	Rows    [][]string
	// Notes are lines printed as they are after the rows (terminal text
	// only): legends of the columns, derived comparisons.
	Notes []string
	// Gap is the number of spaces between columns in the terminal text
	// (default 2).
	Gap int
}

// AddRow appends a row, formatting each value with its column's Format.
// A row with a different number of values than columns is kept as it is
// and reported by Validate (and so by Text and CSV).
func (t *Table) AddRow(values ...any) {
	row := make([]string, len(values))
	for i, v := range values {
		f := ""
		if i < len(t.Columns) {
			f = t.Columns[i].Format
		}
		if s, ok := v.(string); ok && f == "" {
			row[i] = s
		} else if f == "" {
			row[i] = fmt.Sprint(v)
		} else {
			row[i] = fmt.Sprintf(f, v)
		}
	}
	t.Rows = append(t.Rows, row)
}

// Validate reports a table without columns or with a row whose cell count
// differs from the column count.
func (t *Table) Validate() error {
	if len(t.Columns) == 0 {
		return fmt.Errorf("table %q: no columns", t.Title)
	}
	for i, r := range t.Rows {
		if len(r) != len(t.Columns) {
			return fmt.Errorf("table %q: row %d has %d cells, want %d (one per column)", t.Title, i, len(r), len(t.Columns))
		}
	}
	return nil
}

// Text writes the table as aligned terminal text: the title, the header,
// the rows with Gap spaces between columns, then the notes.
func (t *Table) Text(w io.Writer) error {
	if err := t.Validate(); err != nil {
		return err
	}
	headers := make([][]string, len(t.Columns))
	headerLines := 0
	width := make([]int, len(t.Columns))
	right := make([]bool, len(t.Columns))
	for c, col := range t.Columns {
		headers[c] = strings.Split(col.Name, "\n")
		headerLines = max(headerLines, len(headers[c]))
		for _, h := range headers[c] {
			width[c] = max(width[c], utf8.RuneCountInString(h))
		}
		numeric := len(t.Rows) > 0
		for _, r := range t.Rows {
			width[c] = max(width[c], utf8.RuneCountInString(r[c]))
			numeric = numeric && isNumeric(r[c])
		}
		right[c] = col.Align == AlignRight || (col.Align == AlignAuto && numeric)
	}
	gap := strings.Repeat(" ", 2)
	if t.Gap > 0 {
		gap = strings.Repeat(" ", t.Gap)
	}
	var b strings.Builder
	line := func(cells func(c int) string) {
		var l strings.Builder
		for c := range t.Columns {
			if c > 0 {
				l.WriteString(gap)
			}
			s := cells(c)
			pad := strings.Repeat(" ", width[c]-utf8.RuneCountInString(s))
			if right[c] {
				l.WriteString(pad + s)
			} else {
				l.WriteString(s + pad)
			}
		}
		b.WriteString(strings.TrimRight(l.String(), " "))
		b.WriteByte('\n')
	}
	if t.Title != "" {
		b.WriteString(strings.TrimRight(t.Title, "\n"))
		b.WriteByte('\n')
	}
	// Multi-line headers are aligned at the bottom: the last lines meet
	// the rows.
	for l := range headerLines {
		line(func(c int) string {
			h := headers[c]
			if i := l - (headerLines - len(h)); i >= 0 {
				return h[i]
			}
			return ""
		})
	}
	for _, r := range t.Rows {
		line(func(c int) string { return r[c] })
	}
	for _, n := range t.Notes {
		b.WriteString(n)
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// String returns the terminal text, or the validation error's text.
func (t *Table) String() string {
	var b strings.Builder
	if err := t.Text(&b); err != nil {
		return err.Error()
	}
	return b.String()
}

// CSV writes the header (multi-line names joined with a space) and the
// rows as RFC 4180 CSV.
func (t *Table) CSV(w io.Writer) error {
	if err := t.Validate(); err != nil {
		return err
	}
	cw := csv.NewWriter(w)
	header := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		header[i] = strings.Join(strings.Fields(strings.ReplaceAll(c.Name, "\n", " ")), " ")
	}
	if err := cw.Write(header); err != nil {
		return err
	}
	if err := cw.WriteAll(t.Rows); err != nil {
		return err
	}
	return cw.Error()
}

// isNumeric says whether a cell reads as a number for AlignAuto.
func isNumeric(s string) bool {
	s = strings.TrimSpace(s)
	if s == "-" || s == "—" {
		return true
	}
	s = strings.TrimSuffix(s, "%")
	_, err := strconv.ParseFloat(s, 64)
	return err == nil || errors.Is(err, strconv.ErrRange)
}
