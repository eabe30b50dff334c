// Package progress draws a one-line progress report (done of total, bytes,
// rate, ETA) on a terminal, rewritten in place a few times a second, and
// stays quiet when the output is not a terminal (a pipe, a file, a test's
// buffer), so that logs and --json output are never interleaved with it.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// minInterval is the least time between two redraws.
const minInterval = 100 * time.Millisecond

// Line is one progress line. The zero value is not usable; use New. Its
// methods are safe for concurrent use.
type Line struct {
	w     io.Writer
	label string
	unit  string // what done and total count ("pages")

	mu       sync.Mutex
	start    time.Time
	last     time.Time
	lastLen  int
	lastText string
	finished bool
	now      func() time.Time
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// New returns a Line drawing on w when w is a terminal, and nil (whose
// methods do nothing) otherwise. label starts the line; unit names what
// Update's done and total count.
func New(w io.Writer, label, unit string) *Line {
	if !IsTerminal(w) {
		return nil
	}
	return newLine(w, label, unit, time.Now)
}

func newLine(w io.Writer, label, unit string, now func() time.Time) *Line {
	return &Line{w: w, label: label, unit: unit, start: now(), now: now}
}

// Update redraws the line with done of total units and bytes so far, at
// most every 100 ms (a call in between returns at once). The rate is bytes
// per second since New; the ETA extrapolates it to total.
func (l *Line) Update(done, total uint64, bytes int64) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.finished || (now.Sub(l.last) < minInterval && done < total) {
		return
	}
	l.last = now
	l.draw(Format(l.label, l.unit, done, total, bytes, now.Sub(l.start)))
}

// Done clears the line, so that what is printed next starts on a clean
// line. Later Updates do nothing.
func (l *Line) Done() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.finished && l.lastLen > 0 {
		fmt.Fprintf(l.w, "\r%s\r", strings.Repeat(" ", l.lastLen))
	}
	l.finished = true
}

func (l *Line) draw(s string) {
	pad := ""
	if n := l.lastLen - len(s); n > 0 {
		pad = strings.Repeat(" ", n) // erase the tail of a longer line
	}
	fmt.Fprintf(l.w, "\r%s%s", s, pad)
	l.lastLen, l.lastText = len(s), s
}

// Writer returns a writer for log lines that share the terminal with l:
// each write clears the progress line, writes, and draws the line again
// under what was written. With a nil Line it returns w itself.
func (l *Line) Writer(w io.Writer) io.Writer {
	if l == nil {
		return w
	}
	return logWriter{l, w}
}

type logWriter struct {
	l *Line
	w io.Writer
}

func (lw logWriter) Write(p []byte) (int, error) {
	l := lw.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lastLen > 0 && !l.finished {
		fmt.Fprintf(l.w, "\r%s\r", strings.Repeat(" ", l.lastLen))
	}
	n, err := lw.w.Write(p)
	if l.lastLen > 0 && !l.finished {
		fmt.Fprintf(l.w, "\r%s", l.lastText)
	}
	return n, err
}

// Format renders one progress line: "LABEL done/total UNIT (P%)  BYTES
// RATE  ETA T". The rate is bytes over elapsed; the ETA assumes the same
// rate per unit for what is left ("-" until there is a rate).
func Format(label, unit string, done, total uint64, bytes int64, elapsed time.Duration) string {
	var b strings.Builder
	if label != "" {
		b.WriteString(label)
		b.WriteString(" ")
	}
	pct := 0.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	fmt.Fprintf(&b, "%d/%d %s (%.0f%%)  %s", done, total, unit, pct, size(bytes))
	secs := elapsed.Seconds()
	if secs > 0 && bytes > 0 {
		fmt.Fprintf(&b, "  %s/s", size(int64(float64(bytes)/secs)))
	}
	eta := "-" // unknown: no total, or no rate yet
	switch {
	case total == 0:
	case done >= total:
		eta = "0s"
	case done > 0 && secs > 0:
		left := time.Duration(float64(total-done) / (float64(done) / secs) * float64(time.Second))
		eta = left.Round(100 * time.Millisecond).String()
	}
	b.WriteString("  ETA ")
	b.WriteString(eta)
	return b.String()
}

// size formats n bytes with a binary unit.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 3 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f%ciB", v, "KMGT"[i])
}
