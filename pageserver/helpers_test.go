package pageserver

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/pagewarp/pagewarp/wire"
)

const testPageSize = 4096

// transports run every scenario over an in-memory pipe and over real loopback TCP.
var transports = []string{"pipe", "tcp"}

// startServer starts s on transport tr and returns a dial function. The server is closed at cleanup.
func startServer(t testing.TB, s *Server, tr string) func() net.Conn {
	t.Helper()
	var dial func() net.Conn
	switch tr {
	case "pipe":
		var wg sync.WaitGroup
		dial = func() net.Conn {
			a, b := net.Pipe()
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.ServeConn(b)
			}()
			return a
		}
		t.Cleanup(wg.Wait)
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- s.Serve(ln) }()
		t.Cleanup(func() {
			if err := <-served; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
		dial = func() net.Conn {
			nc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			return nc
		}
	default:
		t.Fatalf("transport %q", tr)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return dial
}

// randomRegion returns pages of random data with the listed pages zeroed.
func randomRegion(pages int, seed uint64, zero ...int) []byte {
	mem := make([]byte, pages*testPageSize)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(mem)
	for _, p := range zero {
		clear(mem[p*testPageSize : (p+1)*testPageSize])
	}
	return mem
}

func regionServer(t testing.TB, mem []byte, opts Options) *Server {
	t.Helper()
	src, err := NewRegionSource("mem", mem, testPageSize)
	if err != nil {
		t.Fatal(err)
	}
	return New(src, opts)
}

// client is a minimal target for tests: it checks every frame it receives against the spec.
type client struct {
	t       testing.TB
	nc      net.Conn
	r       *wire.Reader
	mu      sync.Mutex // guards w: tests send from hooks too
	w       *wire.Writer
	welcome *wire.Welcome
}

func rawClient(t testing.TB, nc net.Conn) *client {
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, r: wire.NewReader(nc), w: wire.NewWriter(nc)}
}

func newClient(t testing.TB, nc net.Conn, features uint64) *client {
	t.Helper()
	c := rawClient(t, nc)
	c.send(&wire.Hello{VersionMin: wire.Version, VersionMax: wire.Version, Features: features, Channel: wire.ChannelBulk,
		Session: [16]byte{0xaa, 0xbb}, Client: "pageserver-test"})
	m := c.read()
	w, ok := m.(*wire.Welcome)
	if !ok {
		t.Fatalf("handshake: got %s, want Welcome", describe(m))
	}
	c.welcome = w
	c.r.SetPageSize(int(w.PageSize))
	return c
}

func (c *client) send(ms ...wire.Message) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range ms {
		if err := c.w.WriteMessage(m); err != nil {
			c.t.Fatalf("send %T: %v", m, err)
		}
	}
	if err := c.w.Flush(); err != nil {
		c.t.Fatalf("flush: %v", err)
	}
}

// sendRaw writes bytes as they are.
func (c *client) sendRaw(b []byte) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next message; Pages are copied out of the reader's buffer.
func (c *client) read() wire.Message {
	c.t.Helper()
	m, err := c.r.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	if p, ok := m.(*wire.Pages); ok {
		cp := *p
		cp.Data = bytes.Clone(p.Data)
		cp.Hashes = bytes.Clone(p.Hashes)
		return &cp
	}
	return m
}

// expectClosed reads until the connection ends, failing on anything but EOF-like errors.
func (c *client) expectClosed() {
	c.t.Helper()
	m, err := c.r.ReadMessage()
	if err == nil {
		c.t.Fatalf("got %s, want the connection closed", describe(m))
	}
	var werr *wire.Error
	if errors.As(err, &werr) {
		c.t.Fatalf("got %v, want the connection closed", err)
	}
}

// verify checks a Pages frame: its hashes match its data.
func verify(t testing.TB, p *wire.Pages, pageSize int) {
	t.Helper()
	if p.Zero() {
		return
	}
	for i := range int(p.Count) {
		if got := xxh3.Hash(p.Data[i*pageSize : (i+1)*pageSize]); got != p.Hash(i) {
			t.Fatalf("req %d page %d: hash %#x, frame says %#x", p.ReqID, p.Page+uint64(i), got, p.Hash(i))
		}
	}
}

// assembler collects the frames of several requests and checks the per-request invariants: frames in
// ascending order, without gaps or overlap, at most maxFramePages each, FlagLast only on the last.
type assembler struct {
	t        testing.TB
	pageSize int
	reqs     map[uint64]*wire.Request
	next     map[uint64]uint64 // next expected page
	data     map[uint64][]byte
	done     map[uint64]bool
	frames   []*wire.Pages
}

func newAssembler(t testing.TB, pageSize int) *assembler {
	return &assembler{t: t, pageSize: pageSize, reqs: map[uint64]*wire.Request{}, next: map[uint64]uint64{},
		data: map[uint64][]byte{}, done: map[uint64]bool{}}
}

func (a *assembler) expect(r *wire.Request) {
	a.reqs[r.ReqID] = r
	a.next[r.ReqID] = r.Page
}

// add takes one frame and reports whether its request is complete.
func (a *assembler) add(p *wire.Pages) bool {
	a.t.Helper()
	r, ok := a.reqs[p.ReqID]
	if !ok || a.done[p.ReqID] {
		a.t.Fatalf("frame for unknown or finished req %d", p.ReqID)
	}
	if p.Region != r.Region || p.Page != a.next[p.ReqID] {
		a.t.Fatalf("req %d: frame at region %d page %d, want page %d", p.ReqID, p.Region, p.Page, a.next[p.ReqID])
	}
	if p.Count > maxFramePages {
		a.t.Fatalf("req %d: frame of %d pages", p.ReqID, p.Count)
	}
	verify(a.t, p, a.pageSize)
	a.frames = append(a.frames, p)
	a.next[p.ReqID] += uint64(p.Count)
	if p.Zero() {
		a.data[p.ReqID] = append(a.data[p.ReqID], make([]byte, int(p.Count)*a.pageSize)...)
	} else {
		a.data[p.ReqID] = append(a.data[p.ReqID], p.Data...)
	}
	end := r.Page + uint64(r.Count)
	if a.next[p.ReqID] > end {
		a.t.Fatalf("req %d: frames beyond the request", p.ReqID)
	}
	if p.Last() != (a.next[p.ReqID] == end) {
		a.t.Fatalf("req %d: last flag %v at page %d of [%d, %d)", p.ReqID, p.Last(), p.Page, r.Page, end)
	}
	a.done[p.ReqID] = p.Last()
	return p.Last()
}

// fetch sends requests and returns each one's assembled data, checked frame by frame.
func (c *client) fetch(reqs ...*wire.Request) (*assembler, map[uint64][]byte) {
	c.t.Helper()
	a := newAssembler(c.t, int(c.welcome.PageSize))
	ms := make([]wire.Message, len(reqs))
	for i, r := range reqs {
		a.expect(r)
		ms[i] = r
	}
	go c.send(ms...) // on a pipe, writes wait for the server's reads
	for left := len(reqs); left > 0; {
		m := c.read()
		p, ok := m.(*wire.Pages)
		if !ok {
			c.t.Fatalf("got %s, want Pages", describe(m))
		}
		if a.add(p) {
			left--
		}
	}
	return a, a.data
}

func pagesOf(mem []byte, page, count int) []byte {
	return mem[page*testPageSize : (page+count)*testPageSize]
}

func check(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: %d bytes, want %d; first difference at byte %d (page %d)", what, len(got), len(want), i, i/testPageSize)
	}
}

// digestOf computes algorithm 1 independently: hash every page, then xxh3-128 over the concatenation.
func digestOf(mem []byte, pageSize int) [16]byte {
	var all []byte
	for off := 0; off < len(mem); off += pageSize {
		var b [8]byte
		h := xxh3.Hash(mem[off : off+pageSize])
		for i := range b {
			b[i] = byte(h >> (8 * i))
		}
		all = append(all, b[:]...)
	}
	return xxh3.Hash128(all).Bytes()
}

// frame builds a raw frame with a correct length prefix.
func frame(typ byte, body ...byte) []byte {
	f := wire.AppendChecksum(append([]byte{typ}, body...))
	n := len(f)
	return append([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, f...)
}

// describe prints a message without its page data.
func describe(m wire.Message) string {
	if p, ok := m.(*wire.Pages); ok {
		return fmt.Sprintf("pages{req %d region %d page %d count %d flags %d}", p.ReqID, p.Region, p.Page, p.Count, p.Flags)
	}
	return fmt.Sprintf("%T %+v", m, m)
}
