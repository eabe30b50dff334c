package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Report is everything one benchmark run leaves in its folder.
type Report struct {
	// Name is the base name of the data files: NAME.json, NAME.csv.
	Name string
	// Title heads the folder's README.
	Title string
	// Command, if set, is quoted in the README as what made the report.
	Command string
	// Data is written as NAME.json, indented as the CLI's --json prints
	// it (nil: no JSON file).
	Data any
	// Tables are written, all, to table.txt as terminal text; the first
	// also as NAME.csv, each other as NAME-TABLE.csv (TABLE its Name, or
	// "table" and its index).
	Tables []*Table
	// Charts are written as CHART.png and CHART.svg.
	Charts []Chart
}

// File is one file Dir.Write wrote.
type File struct {
	Path        string // the file's path (Dir.Path joined with its name)
	Description string // the README's line for it
}

// Dir writes reports into the folder at Path.
type Dir struct {
	Path string
}

// Write renders every part of r, then creates the folder (and its
// parents) and writes the files and a README.md listing them. It returns
// the paths written, README.md last. Nothing is written when a part
// fails to render: the error names the table or chart.
func (d Dir) Write(r *Report) ([]string, error) {
	files, err := d.WriteFiles(r)
	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = f.Path
	}
	return paths, err
}

// WriteFiles is Write returning each file's description too.
func (d Dir) WriteFiles(r *Report) ([]File, error) {
	if d.Path == "" {
		return nil, fmt.Errorf("report folder: empty path")
	}
	if r == nil {
		return nil, fmt.Errorf("report folder %s: no report", d.Path)
	}
	if err := checkName("report", r.Name); err != nil {
		return nil, err
	}
	var parts []part
	seen := map[string]bool{}
	add := func(name, desc string, data []byte) error {
		if seen[name] {
			return fmt.Errorf("report %q: two files named %s", r.Name, name)
		}
		seen[name] = true
		parts = append(parts, part{name, desc, data})
		return nil
	}
	if r.Data != nil {
		b, err := json.MarshalIndent(r.Data, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("report %q: json: %w", r.Name, err)
		}
		if err := add(r.Name+".json", "the results, as `--json` prints them (re-render this folder with `--from` on it)", append(b, '\n')); err != nil {
			return nil, err
		}
	}
	if len(r.Tables) > 0 {
		var text bytes.Buffer
		for i, t := range r.Tables {
			if t == nil {
				return nil, fmt.Errorf("report %q: table %d is nil", r.Name, i)
			}
			if i > 0 {
				text.WriteByte('\n')
			}
			if err := t.Text(&text); err != nil {
				return nil, err
			}
			var c bytes.Buffer
			if err := t.CSV(&c); err != nil {
				return nil, err
			}
			name := r.Name + ".csv"
			if i > 0 {
				tn := t.Name
				if tn == "" {
					tn = fmt.Sprintf("table%d", i+1)
				}
				if err := checkName("table", tn); err != nil {
					return nil, err
				}
				name = r.Name + "-" + tn + ".csv"
			}
			if err := add(name, "CSV of the table "+oneLine(t.Title), c.Bytes()); err != nil {
				return nil, err
			}
		}
		if err := add("table.txt", "the table(s) as the terminal shows them", text.Bytes()); err != nil {
			return nil, err
		}
	}
	for i, c := range r.Charts {
		if c == nil {
			return nil, fmt.Errorf("report %q: chart %d is nil", r.Name, i)
		}
		png, err := PNG(c)
		if err != nil {
			return nil, err
		}
		svg, err := SVG(c)
		if err != nil {
			return nil, err
		}
		desc := oneLine(c.Describe())
		if err := add(c.FileName()+".png", desc+" (PNG)", png); err != nil {
			return nil, err
		}
		if err := add(c.FileName()+".svg", desc+" (SVG)", svg); err != nil {
			return nil, err
		}
	}
	if err := add("README.md", "this index", nil); err != nil {
		return nil, err
	}
	parts[len(parts)-1].data = readme(r, parts[:len(parts)-1])

	if err := os.MkdirAll(d.Path, 0o755); err != nil {
		return nil, fmt.Errorf("report folder: %w", err)
	}
	var files []File
	for _, p := range parts {
		path := filepath.Join(d.Path, p.name)
		if err := os.WriteFile(path, p.data, 0o644); err != nil {
			return files, fmt.Errorf("report folder: %w", err)
		}
		files = append(files, File{Path: path, Description: p.desc})
	}
	return files, nil
}

// part is one file of a report folder, rendered.
type part struct {
	name, desc string
	data       []byte
}

// readme is the folder's index: every file with its line, then the
// charts shown.
func readme(r *Report, parts []part) []byte {
	var b bytes.Buffer
	title := r.Title
	if title == "" {
		title = r.Name
	}
	fmt.Fprintf(&b, "# %s\n\n", oneLine(title))
	if r.Command != "" {
		fmt.Fprintf(&b, "Made by `%s`.\n\n", oneLine(r.Command))
	}
	b.WriteString("| file | what it holds |\n|---|---|\n")
	for _, p := range parts {
		fmt.Fprintf(&b, "| [%s](%s) | %s |\n", p.name, p.name, strings.ReplaceAll(p.desc, "|", "\\|"))
	}
	b.WriteString("| README.md | this index |\n")
	for _, c := range r.Charts {
		fmt.Fprintf(&b, "\n![%s](%s.svg)\n", oneLine(c.Describe()), c.FileName())
	}
	return b.Bytes()
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
