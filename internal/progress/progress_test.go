package progress

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/internal/ptytest"
)

func openPTY(t *testing.T) (master, slave *os.File) { return ptytest.Open(t) }

func TestQuietWhenNotATerminal(t *testing.T) {
	var buf bytes.Buffer
	if l := New(&buf, "receive", "pages"); l != nil {
		t.Fatal("New on a buffer returned a line")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	l := New(w, "receive", "pages")
	if l != nil {
		t.Fatal("New on a pipe returned a line")
	}
	l.Update(1, 2, 4096) // a nil Line does nothing
	l.Done()
	if IsTerminal(os.NewFile(^uintptr(0), "bad")) {
		t.Fatal("a bad descriptor is a terminal")
	}
}

func TestDrawsOnATerminal(t *testing.T) {
	master, slave := openPTY(t)
	if !IsTerminal(slave) {
		t.Fatal("the pty's slave is not a terminal")
	}
	l := New(slave, "receive", "pages")
	if l == nil {
		t.Fatal("New on a terminal returned nil")
	}
	l.Update(50, 100, 50*4096)
	l.Update(51, 100, 51*4096) // within 100 ms: not drawn
	l.Update(100, 100, 100*4096)
	l.Done()
	l.Update(1, 100, 1) // after Done: nothing
	slave.Close()
	out := readAll(t, master)
	if got := strings.Count(out, "ETA"); got != 2 {
		t.Fatalf("%d lines drawn, want 2 (the throttled one skipped): %q", got, out)
	}
	for _, want := range []string{"\rreceive 50/100 pages (50%)", "\rreceive 100/100 pages (100%)  400.0KiB", "ETA 0s"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q: %q", want, out)
		}
	}
	if !strings.HasSuffix(out, "\r") {
		t.Errorf("Done did not leave the cursor at the start of a cleared line: %q", out)
	}
}

func readAll(t *testing.T, master *os.File) string { return ptytest.ReadAll(t, master) }

// TestWriter: a log line written through Writer clears the progress line
// first and the progress line is drawn again after it.
func TestWriter(t *testing.T) {
	master, slave := openPTY(t)
	l := New(slave, "", "runs")
	l.Update(1, 4, 100)
	w := l.Writer(slave)
	if _, err := w.Write([]byte("run 1 done\n")); err != nil {
		t.Fatal(err)
	}
	l.Done()
	slave.Close()
	out := readAll(t, master)
	first := "1/4 runs (25%)  100B"
	i := strings.Index(out, first)
	j := strings.Index(out, "run 1 done")
	k := strings.LastIndex(out, first)
	if i < 0 || j < i || k < j {
		t.Fatalf("want the progress line, the log line, then the progress line again: %q", out)
	}
	if New(&bytes.Buffer{}, "", "").Writer(slave) != slave {
		t.Fatal("a nil Line's Writer is not the writer itself")
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		done, total uint64
		bytes       int64
		elapsed     time.Duration
		want        string
	}{
		{0, 1000, 0, 0, "x 0/1000 pages (0%)  0B  ETA -"},
		{250, 1000, 250 << 12, time.Second, "x 250/1000 pages (25%)  1000.0KiB  1000.0KiB/s  ETA 3s"},
		{1000, 1000, 1000 << 12, 2 * time.Second, "x 1000/1000 pages (100%)  3.9MiB  2.0MiB/s  ETA 0s"},
		{1, 0, 10, time.Second, "x 1/0 pages (0%)  10B  10B/s  ETA -"},
	} {
		if got := Format("x", "pages", c.done, c.total, c.bytes, c.elapsed); got != c.want {
			t.Errorf("Format(%d, %d, %d, %v) = %q, want %q", c.done, c.total, c.bytes, c.elapsed, got, c.want)
		}
	}
}

func TestConcurrentUpdates(t *testing.T) {
	_, slave := openPTY(t)
	l := newLine(slave, "", "pages", time.Now)
	done := make(chan struct{})
	for i := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := range 1000 {
				l.Update(uint64(i*1000+j), 4000, int64(j))
			}
		}()
	}
	for range 4 {
		<-done
	}
	l.Done()
}
