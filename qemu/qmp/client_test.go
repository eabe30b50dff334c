package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeQEMU serves one QMP connection on a unix socket: the greeting, then handler for every
// command line it reads (handler writes the replies it wants).
func fakeQEMU(t *testing.T, handler func(w *bufio.Writer, cmd map[string]any)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		w := bufio.NewWriter(conn)
		fmt.Fprint(w, `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}`+"\r\n")
		w.Flush()
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var cmd map[string]any
			if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
				t.Errorf("fake QEMU: bad command %q", sc.Text())
				return
			}
			if cmd["execute"] == "qmp_capabilities" {
				fmt.Fprintf(w, `{"return": {}, "id": %q}`+"\r\n", cmd["id"])
			} else {
				handler(w, cmd)
			}
			w.Flush()
		}
	}()
	return path
}

func dial(t *testing.T, path string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestExecuteMatchesIDsAndEvents(t *testing.T) {
	var held []string // ids of query-status commands, answered in reverse order
	path := fakeQEMU(t, func(w *bufio.Writer, cmd map[string]any) {
		id := cmd["id"].(string)
		switch cmd["execute"] {
		case "query-status":
			held = append(held, id)
			if len(held) == 2 {
				fmt.Fprint(w, `{"event": "STOP", "data": {}, "timestamp": {"seconds": 5, "microseconds": 6}}`+"\r\n")
				fmt.Fprint(w, `{"return": {}, "id": "someone-else"}`+"\r\n")
				for i := len(held) - 1; i >= 0; i-- {
					fmt.Fprintf(w, `{"return": {"running": %v, "status": "s%d"}, "id": %q}`+"\r\n", i == 0, i, held[i])
				}
			}
		case "migrate":
			fmt.Fprintf(w, `{"id": %q, "error": {"class": "GenericError", "desc": "no"}}`+"\r\n", id)
		}
	})
	c := dial(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type res struct {
		s   Status
		err error
	}
	ch := make(chan res, 2)
	for i := 0; i < 2; i++ {
		go func() { s, err := c.QueryStatus(ctx); ch <- res{s, err} }()
		time.Sleep(50 * time.Millisecond) // the fake answers the second first
	}
	got := map[string]bool{}
	for i := 0; i < 2; i++ {
		r := <-ch
		if r.err != nil {
			t.Fatal(r.err)
		}
		got[r.s.Status] = r.s.Running
	}
	if len(got) != 2 || !got["s0"] || got["s1"] {
		t.Fatalf("replies matched wrongly: %v", got)
	}
	ev, err := c.WaitEvent(ctx, "STOP")
	if err != nil || ev.Seconds != 5 || ev.Microseconds != 6 {
		t.Fatalf("WaitEvent: %+v, %v", ev, err)
	}
	if c.Dropped() != 1 {
		t.Fatalf("Dropped = %d, want 1 (the reply to someone else)", c.Dropped())
	}
	err = c.Migrate(ctx, "tcp:127.0.0.1:1")
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "GenericError" || qe.Desc != "no" {
		t.Fatalf("Migrate error %v, want a *Error GenericError", err)
	}
}

func TestTimeoutAndClose(t *testing.T) {
	path := fakeQEMU(t, func(w *bufio.Writer, cmd map[string]any) {}) // never answers
	c := dial(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.QueryMigrate(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	if _, err := c.WaitEvent(ctx, "RESUME"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitEvent: got %v, want DeadlineExceeded", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Execute(context.Background(), "query-status", nil, nil) }()
	time.Sleep(50 * time.Millisecond)
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("pending command after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pending command not released by Close")
	}
	if err := c.Stop(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("command after Close: %v", err)
	}
}

// A hostile server: a garbage line ends the connection with ErrProtocol for pending commands.
func TestProtocolErrorCloses(t *testing.T) {
	path := fakeQEMU(t, func(w *bufio.Writer, cmd map[string]any) {
		fmt.Fprint(w, `{"return": {}, "error": {"class": "x", "desc": "y"}, "id": "pw-2"}`+"\n")
	})
	c := dial(t, path)
	err := c.Cont(context.Background())
	if !errors.Is(err, ErrClosed) || !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v, want ErrClosed wrapping ErrProtocol", err)
	}
}

func TestGreetingRequired(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			time.Sleep(2 * time.Second) // silent
			conn.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Dial(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial to a silent server: %v", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("Dial did not honour the context")
	}
}

// The table QEMU 7.2.22 returned for x-query-ramblock with -m 128M (default devices).
const ramblock72 = "              Block Name    PSize              Offset               Used              Total\n" +
	"                  pc.ram    4 KiB  0x0000000000000000 0x0000000008000000 0x0000000008000000\n" +
	"   0000:00:02.0/vga.vram    4 KiB  0x0000000008080000 0x0000000001000000 0x0000000001000000\n" +
	"    /rom@etc/acpi/tables    4 KiB  0x0000000009100000 0x0000000000020000 0x0000000000200000\n" +
	"                 pc.bios    4 KiB  0x0000000008000000 0x0000000000040000 0x0000000000040000\n"

func TestParseRAMBlocks(t *testing.T) {
	b, err := ParseRAMBlocks(ramblock72)
	if err != nil {
		t.Fatal(err)
	}
	want := []RAMBlock{
		{"pc.ram", 4096, 0, 128 << 20, 128 << 20},
		{"0000:00:02.0/vga.vram", 4096, 0x8080000, 16 << 20, 16 << 20},
		{"/rom@etc/acpi/tables", 4096, 0x9100000, 0x20000, 0x200000},
		{"pc.bios", 4096, 0x8000000, 0x40000, 0x40000},
	}
	if fmt.Sprint(b) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", b, want)
	}
	// HMP's `info ramblock` ends lines with \r\n.
	if b2, err := ParseRAMBlocks(strings.ReplaceAll(ramblock72, "\n", "\r\n")); err != nil || fmt.Sprint(b2) != fmt.Sprint(want) {
		t.Fatalf("CRLF: %v, %v", b2, err)
	}
	for _, bad := range []string{
		"",
		"pc.ram 4 KiB 0x0 0x1 0x1\n",
		strings.Split(ramblock72, "\n")[0] + "\npc.ram 4 KiB 0x0 0x1\n",
		strings.Split(ramblock72, "\n")[0] + "\npc.ram 4 PiB 0x0 0x1 0x1\n",
		strings.Split(ramblock72, "\n")[0] + "\npc.ram 4 KiB 0x0 12 0x1\n",
		strings.Split(ramblock72, "\n")[0] + "\npc.ram 4 KiB 0x0 0x2 0x1\n",
		strings.Split(ramblock72, "\n")[0] + "\npc.ram 4 KiB 0x0 0x1ffffffffffffffff 0x1\n",
	} {
		if _, err := ParseRAMBlocks(bad); !errors.Is(err, ErrProtocol) {
			t.Errorf("ParseRAMBlocks(%q) = %v, want ErrProtocol", bad, err)
		}
	}
}
