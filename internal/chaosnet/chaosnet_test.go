package chaosnet

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// upstream is a server that, once a connection sends its first byte,
// sends want, then echoes what it receives until EOF. (Waiting for that
// byte keeps a fault from striking before the client's Dial returned.)
func upstream(t *testing.T, want []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
					return
				}
				c.Write(want)
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func proxy(t *testing.T, up string, faults ...Fault) *Proxy {
	t.Helper()
	var mu sync.Mutex
	p, err := Listen("127.0.0.1:0", up, faults, func(s string) { mu.Lock(); t.Log("fired: " + s); mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// dial connects to p and sends the byte that starts the upstream.
func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte{'g'}); err != nil {
		t.Fatal(err)
	}
	return c
}

// readN reads until n bytes or an error.
func readN(c net.Conn, n int) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, n)
	m, err := io.ReadFull(c, b)
	return b[:m], err
}

func TestCutAtByte(t *testing.T) {
	want := payload(200 << 10)
	p := proxy(t, upstream(t, want), Fault{Kind: Cut, Conn: 1, Dir: Down, At: 100001})
	// Connection 0 is not faulted.
	c0 := dial(t, p)
	if got, err := readN(c0, len(want)); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("connection 0: %d bytes, %v", len(got), err)
	}
	c1 := dial(t, p)
	got, err := readN(c1, len(want))
	if err == nil || len(got) != 100000 || !bytes.Equal(got, want[:100000]) {
		t.Fatalf("connection 1: %d bytes (want exactly the 100000 before the cut), err %v", len(got), err)
	}
	if p.Fired() != 1 || p.Conns() != 2 {
		t.Fatalf("fired %d of 1, %d connections", p.Fired(), p.Conns())
	}
}

func TestCorruptFlipsOneBit(t *testing.T) {
	want := payload(300 << 10)
	p := proxy(t, upstream(t, want), Fault{Kind: Corrupt, Conn: 0, Dir: Down, At: 200000, Bit: 5})
	c := dial(t, p)
	got, err := readN(c, len(want))
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		w := want[i]
		if i == 199999 {
			w ^= 1 << 5
		}
		if got[i] != w {
			t.Fatalf("byte %d: %#x, want %#x", i, got[i], w)
		}
	}
	// Up is untouched: the echo comes back intact.
	msg := payload(1000)
	c.Write(msg)
	if echo, err := readN(c, len(msg)); err != nil || !bytes.Equal(echo, msg) {
		t.Fatalf("echo: %v", err)
	}
}

func TestStallAndDelay(t *testing.T) {
	want := payload(1000)
	p := proxy(t, upstream(t, want),
		Fault{Kind: Stall, Conn: 0, Dir: Down, At: 500, For: 300 * time.Millisecond},
		Fault{Kind: Delay, Conn: 1, Dir: Up, For: 200 * time.Millisecond})
	start := time.Now()
	c0 := dial(t, p)
	if got, err := readN(c0, len(want)); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("stalled connection: %v", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("stall of 300ms took %v", d)
	}
	c1 := dial(t, p)
	readN(c1, len(want))
	start = time.Now()
	c1.Write([]byte("ping"))
	if echo, err := readN(c1, 4); err != nil || string(echo) != "ping" {
		t.Fatalf("delayed echo: %q %v", echo, err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("delay of 200ms took %v", d)
	}
}

func TestCutAfterTime(t *testing.T) {
	p := proxy(t, upstream(t, nil), Fault{Kind: Cut, Conn: 0, Dir: Up, After: 100 * time.Millisecond})
	c := dial(t, p)
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read succeeded on a cut connection")
	}
	if d := time.Since(start); d < 80*time.Millisecond || d > 3*time.Second {
		t.Fatalf("cut after %v, want ~100ms", d)
	}
}

func TestBadFaults(t *testing.T) {
	for _, f := range []Fault{{Kind: Corrupt}, {Kind: Corrupt, At: 1, Bit: 8}, {Kind: Stall}, {Kind: Delay}} {
		if p, err := Listen("127.0.0.1:0", "127.0.0.1:1", []Fault{f}, nil); err == nil {
			p.Close()
			t.Errorf("%v accepted", f)
		}
	}
}
