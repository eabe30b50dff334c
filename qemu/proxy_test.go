package qemu

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pagewarp/pagewarp/qemu/qmp"
	"github.com/pagewarp/pagewarp/qemu/returnpath"
)

// fakePair runs a Proxy between a fake source (the returned src connection, dialled to the
// proxy) and a fake destination (dst, accepted from the proxy).
func fakePair(t *testing.T, cfg ProxyConfig) (p *Proxy, src net.Conn, dst net.Conn, dstLn net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cfg.Listen, cfg.Dest = "127.0.0.1:0", ln.Addr().String()
	if cfg.Blocks == nil {
		cfg.Blocks = []qmp.RAMBlock{{Name: "pc.ram", PageSize: 4096, Used: 64 * 4096, Total: 64 * 4096}}
	}
	p, err = NewProxy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	src, err = net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	dst, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	return p, src, dst, ln
}

func frames(t *testing.T, ms ...returnpath.Message) []byte {
	var b []byte
	for _, m := range ms {
		var err error
		if b, err = m.Append(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// readAll reads messages from the source's side of the return path until it ends.
func readAll(t *testing.T, c net.Conn) []returnpath.Message {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := returnpath.NewReader(c)
	var out []returnpath.Message
	for {
		m, _, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("source side of the return path: %v after %v", err, out)
		}
		out = append(out, m)
	}
}

func TestProxyRewritesAndInjects(t *testing.T) {
	p, src, dst, _ := fakePair(t, ProxyConfig{Predictor: "nextn", Budget: 4})
	// Source -> destination: unchanged.
	stream := bytes.Repeat([]byte("QEVM\x00\x00\x00\x03"), 1000)
	go src.Write(stream)
	got := make([]byte, len(stream))
	dst.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(dst, got); err != nil || !bytes.Equal(got, stream) {
		t.Fatalf("stream to the destination: %v, equal %v", err, bytes.Equal(got, stream))
	}
	dst.Write(frames(t,
		returnpath.Message{Type: returnpath.ReqPagesID, Start: 1 * 4096, Len: 4096, Block: "pc.ram"},
		returnpath.Message{Type: returnpath.ReqPages, Start: 2 * 4096, Len: 4096},
		returnpath.Message{Type: returnpath.Pong, Value: 5},
		returnpath.Message{Type: returnpath.ReqPages, Start: 62 * 4096, Len: 8192},
		returnpath.Message{Type: returnpath.ReqPagesID, Start: 0, Len: 4096, Block: "0000:00:02.0/vga.vram"}, // not in the block list
		returnpath.Message{Type: returnpath.ReqPages, Start: 40 * 4096, Len: 4096},
		returnpath.Message{Type: returnpath.Shut},
	))
	dst.(*net.TCPConn).CloseWrite()
	ms := readAll(t, src)

	want := []returnpath.Message{
		{Type: returnpath.ReqPagesID, Start: 1 * 4096, Len: 4096, Block: "pc.ram"},
		{Type: returnpath.ReqPagesID, Start: 2 * 4096, Len: 4096, Block: "pc.ram"},
		{Type: returnpath.Pong, Value: 5},
		{Type: returnpath.ReqPagesID, Start: 62 * 4096, Len: 8192, Block: "pc.ram"},
		{Type: returnpath.ReqPagesID, Start: 0, Len: 4096, Block: "0000:00:02.0/vga.vram"},
		{Type: returnpath.ReqPagesID, Start: 40 * 4096, Len: 4096, Block: "0000:00:02.0/vga.vram"},
		{Type: returnpath.Shut},
	}
	// The forwarded messages must appear in order; everything else is an injection.
	var injected []returnpath.Message
	i := 0
	for _, m := range ms {
		if m.Type == returnpath.ReqPages {
			t.Fatalf("a plain REQ_PAGES reached the source: %v", m)
		}
		if i < len(want) && m == want[i] {
			i++
			continue
		}
		injected = append(injected, m)
	}
	if i != len(want) {
		t.Fatalf("forwarded %v\nwant in order %v", ms, want)
	}
	seen := map[uint64]bool{}
	for _, m := range injected {
		pg := m.Start / 4096
		if m.Type != returnpath.ReqPagesID || m.Block != "pc.ram" || m.Len != 4096 || m.Start%4096 != 0 || pg >= 64 || pg == 1 || pg == 62 || pg == 63 {
			t.Fatalf("bad injection %v", m)
		}
		if seen[pg] {
			t.Fatalf("page %d injected twice", pg)
		}
		seen[pg] = true
	}
	if !seen[2] || !seen[3] || !seen[4] || !seen[5] { // nextn: the Budget pages after page 1
		t.Fatalf("nextn's pages after the faults not injected: %v", injected)
	}
	st := p.Stats()
	if st.RealRequests != 5 || st.RealPages != 4 || int(st.Injected) != len(injected) || st.InjectedThenRequested != 1 {
		t.Fatalf("stats %+v with %d injected seen (plus page 2)", st, len(injected))
	}
	if !st.InjectionDisabled {
		t.Fatalf("a request for a block outside the list did not disable injection: %+v", st)
	}
	for deadline := time.Now().Add(5 * time.Second); st.BytesToDest != int64(len(stream)) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond) // the counter is added after the write the destination read
		st = p.Stats()
	}
	if st.BytesToDest != int64(len(stream)) {
		t.Fatalf("BytesToDest %d, want %d", st.BytesToDest, len(stream))
	}
}

// A malformed return path closes both sides at once; a clean EOF from the source reaches the
// destination as EOF.
func TestProxyMalformedClosesBoth(t *testing.T) {
	p, src, dst, _ := fakePair(t, ProxyConfig{Predictor: "none"})
	dst.Write([]byte{0, 9, 0, 0}) // type 9
	src.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := src.Read(make([]byte, 1)); err == nil {
		t.Fatalf("source read %d bytes, want the connection closed", n)
	}
	dst.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := dst.Read(make([]byte, 1)); err == nil {
		t.Fatalf("destination read %d bytes, want the connection closed", n)
	}
	if st := p.Stats(); !st.InjectionDisabled {
		t.Fatalf("stats %+v", st)
	}
}

func TestProxyHalfClose(t *testing.T) {
	_, src, dst, _ := fakePair(t, ProxyConfig{Predictor: "none", CloseGrace: 5 * time.Second})
	src.Write([]byte("last bytes"))
	src.(*net.TCPConn).CloseWrite()
	dst.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(dst)
	if err != nil || string(b) != "last bytes" {
		t.Fatalf("destination read %q, %v; want the bytes then EOF", b, err)
	}
	// The return path still works after the source's half-close: SHUT reaches the source.
	dst.Write(frames(t, returnpath.Message{Type: returnpath.Shut}))
	dst.Close()
	if ms := readAll(t, src); len(ms) != 1 || ms[0].Type != returnpath.Shut {
		t.Fatalf("source got %v, want SHUT then EOF", ms)
	}
}

// Connections reach the destination in the order the source opened them.
func TestProxyConnectionOrder(t *testing.T) {
	_, src, dst, ln := fakePair(t, ProxyConfig{Predictor: "none"})
	// Open a second connection to the proxy; the destination must accept it second.
	p2 := src.RemoteAddr().String()
	c2, err := net.Dial("tcp", p2)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	d2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	c2.Write([]byte("preempt"))
	src.Write([]byte("main"))
	buf := make([]byte, 16)
	d2.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := d2.Read(buf)
	if err != nil || string(buf[:n]) != "preempt" {
		t.Fatalf("second destination connection got %q, %v", buf[:n], err)
	}
	dst.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err = dst.Read(buf)
	if err != nil || string(buf[:n]) != "main" {
		t.Fatalf("first destination connection got %q, %v", buf[:n], err)
	}
}

func TestNewProxyRejects(t *testing.T) {
	for _, cfg := range []ProxyConfig{
		{Dest: "127.0.0.1:1", Predictor: "nope"},
		{Dest: "127.0.0.1:1", Budget: -1},
		{},
		{Dest: "127.0.0.1:1", Blocks: []qmp.RAMBlock{{Name: "x", PageSize: 3000, Used: 6000}}},
		{Dest: "127.0.0.1:1", Blocks: []qmp.RAMBlock{{Name: "x", PageSize: 4096, Used: 4096}, {Name: "x", PageSize: 4096, Used: 4096}}},
	} {
		if cfg.Blocks == nil {
			cfg.Blocks = []qmp.RAMBlock{{Name: "pc.ram", PageSize: 4096, Used: 4096}}
		}
		cfg.Listen = "127.0.0.1:0"
		if p, err := NewProxy(cfg); err == nil {
			p.Close()
			t.Errorf("NewProxy(%+v) accepted", cfg)
		}
	}
}

// The proxy's sockets to the destination carry TCP_NOTSENT_LOWAT (DefaultNotSentLowat unless
// configured), and a negative setting leaves the kernel's default; the Dial hook is used.
func TestProxyNotSentLowat(t *testing.T) {
	for _, c := range []struct {
		cfg, want int
	}{{0, DefaultNotSentLowat}, {64 << 10, 64 << 10}, {-1, -1}} {
		dialled := make(chan *net.TCPConn, 1)
		dial := func(ctx context.Context, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err == nil {
				dialled <- conn.(*net.TCPConn)
			}
			return conn, err
		}
		_, src, dst, _ := fakePair(t, ProxyConfig{Predictor: "none", Dial: dial, NotSentLowat: c.cfg})
		// One byte each way proves the pair is forwarding, so the option was set before.
		src.Write([]byte{1})
		dst.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(dst, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		conn := <-dialled
		rc, err := conn.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var got int
		var gerr error
		rc.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT) })
		if gerr != nil {
			t.Fatal(gerr)
		}
		if c.want > 0 && got != c.want {
			t.Errorf("NotSentLowat %d: the destination socket has %d, want %d", c.cfg, got, c.want)
		}
		if c.want < 0 && got == DefaultNotSentLowat {
			t.Errorf("NotSentLowat %d: the proxy set %d anyway", c.cfg, got)
		}
	}
}

// The return path's arrival times come from the kernel: bytes that waited 50 ms in the socket
// before the proxy read them are stamped with their arrival, not with the read.
func TestStampReaderKernelTime(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s := newStampReader(b)
	if s.raw == nil {
		t.Fatal("no kernel timestamps on a TCP connection")
	}
	// The kernel turns receive timestamps on lazily (a deferred static key): the first segments
	// after the first SO_TIMESTAMPNS on the host may come without one, and the reader then
	// stamps the read. Try a few messages; one must carry the kernel's time.
	buf := make([]byte, 16)
	var waited time.Duration
	for try := 0; try < 5; try++ {
		sent := time.Now()
		a.Write([]byte("request"))
		time.Sleep(50 * time.Millisecond)
		n, err := s.Read(buf)
		read := time.Now()
		if err != nil || string(buf[:n]) != "request" {
			t.Fatalf("read %q, %v", buf[:n], err)
		}
		if s.last.Before(sent.Add(-time.Second)) {
			t.Fatalf("stamped %v, before the bytes were sent (%v)", s.last, sent)
		}
		if waited = read.Sub(s.last); waited >= 40*time.Millisecond {
			break
		}
	}
	if waited < 40*time.Millisecond {
		t.Fatalf("stamped %v before the read in 5 tries, want the ~50 ms the bytes waited in the socket", waited)
	}
	a.Close()
	if n, err := s.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after close: %d, %v, want EOF", n, err)
	}
}
