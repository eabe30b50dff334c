package pageserver

import (
	"errors"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/wire"
)

func TestServe(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			mem := randomRegion(300, 1, 5, 6, 7)
			s := regionServer(t, mem, Options{Name: "test-server"})
			dial := startServer(t, s, tr)
			c := newClient(t, dial(), wire.FeatureZeroPages|wire.FeaturePageHashes|1<<7)

			w := c.welcome
			if w.Version != wire.Version || w.Features != wire.FeatureZeroPages|wire.FeaturePageHashes || w.PageSize != testPageSize ||
				w.Server != "test-server" || len(w.Regions) != 1 || w.Regions[0] != (wire.Region{ID: 0, Name: "mem", Pages: 300}) {
				t.Fatalf("welcome %+v", w)
			}

			_, data := c.fetch(&wire.Request{ReqID: 1, Page: 17, Count: 1, Priority: wire.PriorityDemand})
			check(t, "demand page", data[1], pagesOf(mem, 17, 1))

			_, data = c.fetch(
				&wire.Request{ReqID: 2, Page: 0, Count: 300, Priority: wire.PriorityBackground},
				&wire.Request{ReqID: 3, Page: 299, Count: 1, Priority: wire.PriorityDemand},
				&wire.Request{ReqID: 4, Page: 100, Count: 150, Priority: wire.PriorityBackground},
			)
			check(t, "background 0+300", data[2], mem)
			check(t, "demand 299", data[3], pagesOf(mem, 299, 1))
			check(t, "background 100+150", data[4], pagesOf(mem, 100, 150))

			st := s.Stats()
			if st.Requests[wire.PriorityDemand] != 2 || st.Requests[wire.PriorityBackground] != 2 ||
				st.PagesSent+st.ZeroPagesSent != 452 || st.ZeroPagesSent != 3 || st.ConnectionsActive != 1 || st.ConnectionsAccepted != 1 {
				t.Fatalf("stats %+v", st)
			}

			// Bye: the server answers Bye and closes.
			c.send(&wire.Bye{Reason: "done"})
			if m, ok := c.read().(*wire.Bye); !ok {
				t.Fatalf("got %s, want Bye", describe(m))
			}
			c.expectClosed()
			// Every frame was accounted before the Bye went out.
			if st := s.Stats(); st.BytesSent < 449*testPageSize {
				t.Fatalf("bytes sent %d", st.BytesSent)
			}
		})
	}
}

func TestZeroRuns(t *testing.T) {
	// Pages 10..99 zero, 110 zero, 120..200 zero (spans chunks), the last page zero.
	var zero []int
	for p := 10; p < 100; p++ {
		zero = append(zero, p)
	}
	zero = append(zero, 110)
	for p := 120; p <= 200; p++ {
		zero = append(zero, p)
	}
	zero = append(zero, 255)
	mem := randomRegion(256, 2, zero...)
	clear(mem[5*testPageSize : 5*testPageSize+100]) // starts like a zero page, is not one
	mem[254*testPageSize+testPageSize-1] = 0        // nor is this one
	for _, tr := range transports {
		for _, features := range []uint64{wire.FeatureZeroPages | wire.FeaturePageHashes, wire.FeaturePageHashes} {
			name := tr + "/with-zero-pages"
			if features&wire.FeatureZeroPages == 0 {
				name = tr + "/without-zero-pages"
			}
			t.Run(name, func(t *testing.T) {
				s := regionServer(t, mem, Options{})
				c := newClient(t, startServer(t, s, tr)(), features)
				a, data := c.fetch(&wire.Request{ReqID: 9, Page: 0, Count: 256, Priority: wire.PriorityBackground})
				check(t, "region", data[9], mem)
				zeroPages := 0
				for _, p := range a.frames {
					if p.Zero() {
						zeroPages += int(p.Count)
						for i := range int(p.Count) {
							if !isIn(zero, int(p.Page)+i) {
								t.Fatalf("page %d sent as zero", int(p.Page)+i)
							}
						}
					} else {
						for i := range int(p.Count) {
							if features&wire.FeatureZeroPages != 0 && isIn(zero, int(p.Page)+i) {
								t.Fatalf("zero page %d sent as data", int(p.Page)+i)
							}
						}
					}
				}
				if features&wire.FeatureZeroPages == 0 {
					if zeroPages != 0 {
						t.Fatalf("%d zero pages sent without the feature", zeroPages)
					}
					if len(a.frames) != 4 {
						t.Fatalf("%d frames, want 4 of 64 pages", len(a.frames))
					}
				} else if zeroPages != len(zero) {
					t.Fatalf("%d zero pages sent, want %d", zeroPages, len(zero))
				}
			})
		}
	}
}

func isIn(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestFrameSplitting(t *testing.T) {
	mem := randomRegion(1100, 3)
	s := regionServer(t, mem, Options{})
	c := newClient(t, startServer(t, s, "tcp")(), wire.FeatureZeroPages)
	for _, tc := range []struct{ page, count, frames int }{
		{0, 1024, 16}, {1, 64, 1}, {5, 65, 2}, {1099, 1, 1}, {76, 1000, 16},
	} {
		a, data := c.fetch(&wire.Request{ReqID: 1, Page: uint64(tc.page), Count: uint32(tc.count), Priority: wire.PriorityBackground})
		check(t, "pages", data[1], pagesOf(mem, tc.page, tc.count))
		if len(a.frames) != tc.frames {
			t.Fatalf("%d+%d: %d frames, want %d", tc.page, tc.count, len(a.frames), tc.frames)
		}
	}
}

// TestPriority checks strict priority deterministically: the send loop is held until every request is
// queued, so the order of frames on the wire is the server's choice alone.
func TestPriority(t *testing.T) {
	mem := randomRegion(1024, 4)
	for _, tr := range transports {
		t.Run(tr+"/queued", func(t *testing.T) {
			s := regionServer(t, mem, Options{})
			gate := make(chan struct{})
			enqueued := make(chan wire.Request, 100)
			var once sync.Once
			s.hooks.beforeJob = func() { once.Do(func() { <-gate }) }
			s.hooks.enqueued = func(r wire.Request) { enqueued <- r }
			c := newClient(t, startServer(t, s, tr)(), wire.FeatureZeroPages)
			a := newAssembler(t, testPageSize)
			var reqs []wire.Message
			for i := range 8 {
				r := &wire.Request{ReqID: uint64(10 + i), Page: uint64(i * 128), Count: 128, Priority: wire.PriorityBackground}
				a.expect(r)
				reqs = append(reqs, r)
			}
			demand := []*wire.Request{
				{ReqID: 1, Page: 1000, Count: 1, Priority: wire.PriorityDemand},
				{ReqID: 2, Page: 3, Count: 70, Priority: wire.PriorityDemand},
			}
			for _, r := range demand {
				a.expect(r)
				reqs = append(reqs, r)
			}
			// Replies are read as they come: a demand request the receive loop
			// serves inline is written at once, while the send loop is still held.
			orderc := make(chan []uint64, 1)
			go func() {
				var order []uint64
				for done := 0; done < len(reqs); {
					p := c.read().(*wire.Pages)
					if a.add(p) {
						done++
					}
					if len(order) == 0 || order[len(order)-1] != p.ReqID {
						order = append(order, p.ReqID)
					}
				}
				orderc <- order
			}()
			go c.send(reqs...)
			for range reqs {
				<-enqueued
			}
			close(gate)
			order := <-orderc
			// Demand first (in their order), then background in order, no interleaving.
			want := []uint64{1, 2, 10, 11, 12, 13, 14, 15, 16, 17}
			if len(order) != len(want) {
				t.Fatalf("request order on the wire %v, want %v", order, want)
			}
			for i := range want {
				if order[i] != want[i] {
					t.Fatalf("request order on the wire %v, want %v", order, want)
				}
			}
			check(t, "demand", a.data[2], pagesOf(mem, 3, 70))
		})
		t.Run(tr+"/between-chunks", func(t *testing.T) {
			s := regionServer(t, mem, Options{})
			enqueued := make(chan wire.Request, 100)
			s.hooks.enqueued = func(r wire.Request) { enqueued <- r }
			dial := startServer(t, s, tr)
			c := newClient(t, dial(), wire.FeatureZeroPages)
			chunks := 0
			demand := &wire.Request{ReqID: 2, Page: 500, Count: 2, Priority: wire.PriorityDemand}
			s.hooks.beforeChunk = func(r wire.Request) {
				chunks++
				if chunks == 3 { // after two chunks of the background request went out
					c.send(demand)
					for (<-enqueued).ReqID != demand.ReqID {
					}
				}
			}
			a := newAssembler(t, testPageSize)
			bg := &wire.Request{ReqID: 1, Page: 0, Count: 1024, Priority: wire.PriorityBackground}
			a.expect(bg)
			a.expect(demand)
			c.send(bg)
			var seq []uint64
			for done := 0; done < 2; {
				p := c.read().(*wire.Pages)
				if a.add(p) {
					done++
				}
				seq = append(seq, p.ReqID)
			}
			// 16 frames of 64 pages for the background request, the demand reply right after the
			// second of them.
			if len(seq) != 17 || seq[2] != 2 {
				t.Fatalf("frame sequence %v: want the demand reply third", seq)
			}
			check(t, "background", a.data[1], mem)
			check(t, "demand", a.data[2], pagesOf(mem, 500, 2))
		})
	}
}

func TestBadFrames(t *testing.T) {
	hello := func(vmin, vmax uint16) wire.Message {
		return &wire.Hello{VersionMin: vmin, VersionMax: vmax, Features: wire.FeatureZeroPages, Session: [16]byte{1}}
	}
	encode := func(m wire.Message) []byte {
		b, err := wire.AppendFrame(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	helloFrame := encode(hello(1, 1))
	// request builds a Request frame by hand, so that invalid counts can be sent.
	request := func(reqID, region, page uint64, count uint32) []byte {
		body := []byte{0x95, 0xcf}
		for i := 7; i >= 0; i-- {
			body = append(body, byte(reqID>>(8*i)))
		}
		body = append(body, 0xce, byte(region>>24), byte(region>>16), byte(region>>8), byte(region), 0xcf)
		for i := 7; i >= 0; i-- {
			body = append(body, byte(page>>(8*i)))
		}
		body = append(body, 0xce, byte(count>>24), byte(count>>16), byte(count>>8), byte(count), 0x00)
		return frame(byte(wire.TypeRequest), body...)
	}
	cases := []struct {
		name      string
		handshake bool // send Hello and read Welcome first
		send      []byte
		code      wire.ErrorCode
		reqID     uint64
	}{
		{"oversized length", true, []byte{0x00, 0x41, 0x00, 0x01}, wire.CodeFrameTooLarge, 0},
		{"4 GiB length", true, []byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3}, wire.CodeFrameTooLarge, 0},
		{"zero length", true, []byte{0, 0, 0, 0}, wire.CodeMalformed, 0},
		{"garbage msgpack", true, frame(byte(wire.TypeRequest), 0xc1, 0x00, 0xff), wire.CodeMalformed, 0},
		{"garbage before hello", false, frame(byte(wire.TypeHello), 0x93, 0xa1, 'x'), wire.CodeMalformed, 0},
		{"unknown type", true, frame(42, 0x90), wire.CodeUnknownType, 0},
		{"wrong version", false, encode(hello(wire.Version+1, wire.Version+2)), wire.CodeUnsupportedVersion, 0},
		// A version 2 Hello has six elements (no stream numbers): [2, 2, features, channel, session, client].
		{"version 2 peer", false, frame(byte(wire.TypeHello), append(append([]byte{0x96, 2, 2, 1, 0, 0xc4, 16}, make([]byte, 16)...), 0xa0)...),
			wire.CodeUnsupportedVersion, 0},
		{"push to server", true, encode(&wire.Push{ReqID: 3, Pages: []uint64{1}}), wire.CodeUnknownType, 0},
		{"feedback without push", true, encode(&wire.Feedback{Used: []uint64{1}}), wire.CodeProtocol, 0},
		{"out of range page", true, request(7, 0, 100, 1), wire.CodeOutOfRange, 7},
		{"range past the end", true, request(8, 0, 90, 11), wire.CodeOutOfRange, 8},
		{"page overflow", true, request(9, 0, math.MaxUint64, 2), wire.CodeOutOfRange, 9},
		{"count 0", true, request(10, 0, 0, 0), wire.CodeOutOfRange, 10},
		{"count 1025", true, request(11, 0, 0, 1025), wire.CodeOutOfRange, 11},
		{"unknown region", true, request(12, 5, 0, 1), wire.CodeUnknownRegion, 12},
		{"unknown region digest", true, encode(&wire.DigestRequest{ReqID: 13, Region: 1}), wire.CodeUnknownRegion, 13},
		{"request before hello", false, request(14, 0, 0, 1), wire.CodeProtocol, 0},
		{"second hello", true, helloFrame, wire.CodeProtocol, 0},
		{"welcome to server", true, encode(&wire.Welcome{Version: 1, PageSize: 4096}), wire.CodeProtocol, 0},
		{"digest to server", true, encode(&wire.Digest{ReqID: 1}), wire.CodeProtocol, 0},
		{"pages to server", true, encode(&wire.Pages{ReqID: 1, Count: 1, Flags: wire.FlagZero}), wire.CodeUnknownType, 0},
		{"truncated body", true, frame(byte(wire.TypeRequest), 0x95, 0x01), wire.CodeMalformed, 1},
	}
	mem := randomRegion(100, 5, 50)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			s := regionServer(t, mem, Options{})
			dial := startServer(t, s, tr)
			// A well-behaved client stays connected throughout and keeps being served.
			good := newClient(t, dial(), wire.FeatureZeroPages)
			for i, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					var c *client
					if tc.handshake {
						c = newClient(t, dial(), wire.FeatureZeroPages)
					} else {
						c = rawClient(t, dial())
					}
					go c.sendRaw(tc.send)
					m := c.read()
					werr, ok := m.(*wire.Error)
					if !ok {
						t.Fatalf("got %s, want Error", describe(m))
					}
					if werr.Code != tc.code || werr.ReqID != tc.reqID {
						t.Fatalf("got %v (req %d), want %s (req %d)", werr, werr.ReqID, tc.code, tc.reqID)
					}
					c.expectClosed()

					page := (i * 7) % 100
					_, data := good.fetch(&wire.Request{ReqID: uint64(100 + i), Page: uint64(page), Count: 1, Priority: wire.PriorityDemand})
					check(t, "other client's page", data[uint64(100+i)], pagesOf(mem, page, 1))
				})
			}
			// Every error was counted by code, and the good client is still there.
			st := s.Stats()
			var total uint64
			for _, n := range st.Errors {
				total += n
			}
			if total != uint64(len(cases)) || st.Errors[wire.CodeOutOfRange] != 5 {
				t.Fatalf("errors by code %v", st.Errors)
			}
			_, data := good.fetch(&wire.Request{ReqID: 1, Page: 0, Count: 100, Priority: wire.PriorityBackground})
			check(t, "whole region", data[1], mem)
		})
	}
}

func TestHandshakeTimeout(t *testing.T) {
	s := regionServer(t, randomRegion(1, 6), Options{HandshakeTimeout: 50 * time.Millisecond})
	c := rawClient(t, startServer(t, s, "tcp")())
	c.expectClosed()
}

func TestClose(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			mem := randomRegion(64, 7)
			s := regionServer(t, mem, Options{})
			dial := startServer(t, s, tr)
			a := newClient(t, dial(), 0)
			b := newClient(t, dial(), 0)
			a.fetch(&wire.Request{ReqID: 1, Count: 1})
			closed := make(chan error, 1)
			go func() { closed <- s.Close() }()
			for _, c := range []*client{a, b} {
				m := c.read()
				if bye, ok := m.(*wire.Bye); !ok || bye.Reason != "shutdown" {
					t.Fatalf("got %s, want Bye shutdown", describe(m))
				}
				c.nc.Close()
			}
			select {
			case err := <-closed:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Close did not return")
			}
			if st := s.Stats(); st.ConnectionsActive != 0 || st.ConnectionsAccepted != 2 {
				t.Fatalf("stats %+v", st)
			}
			if tr == "tcp" {
				if _, err := net.DialTimeout("tcp", a.nc.RemoteAddr().String(), time.Second); err == nil {
					t.Fatal("listener still accepting")
				}
			}
		})
	}
}

func TestCloseWithSilentClient(t *testing.T) {
	// A client that never reads nor closes: Close still returns promptly.
	mem := randomRegion(1024, 8)
	s := regionServer(t, mem, Options{})
	dial := startServer(t, s, "tcp")
	c := newClient(t, dial(), 0)
	var reqs []wire.Message
	for i := range 32 {
		reqs = append(reqs, &wire.Request{ReqID: uint64(i + 1), Count: 1024, Priority: wire.PriorityBackground})
	}
	go c.send(reqs...)
	time.Sleep(50 * time.Millisecond) // let the socket buffers fill; not needed for correctness
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v", d)
	}
}

func TestDigest(t *testing.T) {
	mem := randomRegion(200, 9, 3, 4, 150)
	want := digestOf(mem, testPageSize)

	dir := t.TempDir()
	path := filepath.Join(dir, "vm.mem")
	if err := os.WriteFile(path, mem, 0o600); err != nil {
		t.Fatal(err)
	}
	fsrc, err := OpenFile(path, testPageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer fsrc.Close()
	rsrc, err := NewRegionSource("mem", mem, testPageSize)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Digest(rsrc, 0); err != nil || got != want {
		t.Fatalf("Digest = %x, %v; want %x", got, err, want)
	}
	if _, err := Digest(rsrc, 1); !errors.Is(err, ErrUnknownRegion) {
		t.Fatalf("Digest of region 1: %v", err)
	}
	for _, tr := range transports {
		for _, src := range []Source{rsrc, fsrc} {
			s := New(src, Options{})
			c := newClient(t, startServer(t, s, tr)(), wire.FeatureZeroPages)
			for i := range 2 { // the second time from the cache for the file
				c.send(&wire.DigestRequest{ReqID: uint64(5 + i), Region: 0})
				m := c.read()
				d, ok := m.(*wire.Digest)
				if !ok || d.ReqID != uint64(5+i) || d.Region != 0 || d.Algorithm != wire.DigestXXH3Over64 || d.Sum != want {
					t.Fatalf("%s %T: got %s, want digest %x", tr, src, describe(m), want)
				}
			}
			if _, cached := s.cachedDigest(0); cached != (src == Source(fsrc)) {
				t.Fatalf("%T: cached %v", src, cached)
			}
		}
	}
	// A region source is live: its digest follows the memory.
	s := New(rsrc, Options{})
	c := newClient(t, startServer(t, s, "pipe")(), 0)
	mem[12345]++
	c.send(&wire.DigestRequest{ReqID: 1})
	if d := c.read().(*wire.Digest); d.Sum != digestOf(mem, testPageSize) || d.Sum == want {
		t.Fatalf("digest after a write %x", d.Sum)
	}
}

func TestFileSource(t *testing.T) {
	dir := t.TempDir()
	t.Run("partial last page", func(t *testing.T) {
		mem := randomRegion(11, 10)
		content := mem[:10*testPageSize+100]
		path := filepath.Join(dir, "partial.mem")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		src, err := OpenFile(path, testPageSize)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		if r := src.Regions(); len(r) != 1 || r[0] != (wire.Region{ID: 0, Name: "partial.mem", Pages: 11}) {
			t.Fatalf("regions %+v", r)
		}
		want := make([]byte, 11*testPageSize)
		copy(want, content)
		if _, err := src.Slice(0, 10, 1); err == nil {
			t.Fatal("Slice of the partial page succeeded")
		}
		if b, err := src.Slice(0, 2, 8); err != nil || len(b) != 8*testPageSize {
			t.Fatalf("Slice(2, 8): %d bytes, %v", len(b), err)
		}
		got := make([]byte, 2*testPageSize)
		for i := range got {
			got[i] = 0xff // the padding must be written, not left
		}
		if err := src.ReadPages(0, 9, got); err != nil {
			t.Fatal(err)
		}
		check(t, "pages 9-10", got, want[9*testPageSize:])
		for _, tc := range []struct {
			region uint32
			page   uint64
			n      int
			want   error
		}{
			{0, 11, 1, ErrOutOfRange}, {0, 10, 2, ErrOutOfRange}, {0, math.MaxUint64, 1, ErrOutOfRange},
			{1, 0, 1, ErrUnknownRegion}, {0, 0, 0, nil},
		} {
			if err := src.ReadPages(tc.region, tc.page, make([]byte, tc.n*testPageSize)); !errors.Is(err, tc.want) {
				t.Errorf("ReadPages(%d, %d, %d pages) = %v, want %v", tc.region, tc.page, tc.n, err, tc.want)
			}
		}
		if err := src.ReadPages(0, 0, make([]byte, 100)); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("ReadPages of 100 bytes: %v", err)
		}
		for _, tr := range transports {
			s := New(src, Options{})
			c := newClient(t, startServer(t, s, tr)(), wire.FeatureZeroPages)
			_, data := c.fetch(&wire.Request{ReqID: 1, Page: 0, Count: 11, Priority: wire.PriorityBackground},
				&wire.Request{ReqID: 2, Page: 10, Count: 1})
			check(t, tr+" whole file", data[1], want)
			check(t, tr+" last page", data[2], want[10*testPageSize:])
		}
	})
	t.Run("sparse", func(t *testing.T) {
		const pages = 16384 // 64 MiB, nearly all holes
		path := filepath.Join(dir, "sparse.mem")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(pages * testPageSize); err != nil {
			t.Fatal(err)
		}
		data := randomRegion(3, 11)
		for i, p := range []int64{0, 5000, pages - 1} {
			if _, err := f.WriteAt(pagesOf(data, i, 1), p*testPageSize); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		if st.Blocks*512 >= pages*testPageSize/2 {
			t.Logf("file system did not keep the file sparse (%d blocks)", st.Blocks)
		}
		src, err := OpenFile(path, testPageSize)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		s := New(src, Options{})
		dial := startServer(t, s, "tcp")

		// Two clients read the whole file concurrently.
		var wg sync.WaitGroup
		for k := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := newClient(t, dial(), wire.FeatureZeroPages)
				var zeroPages uint64
				for i := 0; i < pages; i += 1024 {
					a, got := c.fetch(&wire.Request{ReqID: uint64(i + 1), Page: uint64(i), Count: 1024, Priority: wire.PriorityBackground})
					for _, p := range a.frames {
						if p.Zero() {
							zeroPages += uint64(p.Count)
						}
					}
					for j := range 1024 {
						page := got[uint64(i+1)][j*testPageSize : (j+1)*testPageSize]
						var want []byte
						switch i + j {
						case 0:
							want = pagesOf(data, 0, 1)
						case 5000:
							want = pagesOf(data, 1, 1)
						case pages - 1:
							want = pagesOf(data, 2, 1)
						default:
							want = make([]byte, testPageSize)
						}
						check(t, "sparse page", page, want)
					}
				}
				if zeroPages != pages-3 {
					t.Errorf("client %d: %d zero pages, want %d", k, zeroPages, pages-3)
				}
			}()
		}
		wg.Wait()
	})
	t.Run("errors", func(t *testing.T) {
		empty := filepath.Join(dir, "empty.mem")
		os.WriteFile(empty, nil, 0o600)
		if _, err := OpenFile(empty, testPageSize); err == nil {
			t.Fatal("empty file opened")
		}
		if _, err := OpenFile(filepath.Join(dir, "missing"), testPageSize); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("missing file: %v", err)
		}
		if _, err := OpenFile(dir, testPageSize); err == nil {
			t.Fatal("directory opened")
		}
		if _, err := OpenFile(empty, 1000); err == nil {
			t.Fatal("page size 1000 accepted")
		}
	})
}

func TestRegionSource(t *testing.T) {
	if _, err := NewRegionSource("x", make([]byte, 5000), testPageSize); err == nil {
		t.Fatal("length not a page multiple accepted")
	}
	if _, err := NewRegionSource("x", nil, 3000); err == nil {
		t.Fatal("page size 3000 accepted")
	}
	mem := randomRegion(4, 12)
	src, err := NewRegionSource("r", mem, testPageSize)
	if err != nil {
		t.Fatal(err)
	}
	b, err := src.Slice(0, 1, 2)
	if err != nil || &b[0] != &mem[testPageSize] || len(b) != 2*testPageSize || cap(b) != len(b) {
		t.Fatalf("Slice: %v", err)
	}
	if _, err := src.Slice(0, 3, 2); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("Slice past the end: %v", err)
	}
	if _, err := src.Slice(2, 0, 1); !errors.Is(err, ErrUnknownRegion) {
		t.Fatalf("Slice of region 2: %v", err)
	}
}

// failingSource fails reads of one page.
type failingSource struct{ rs *RegionSource } // not embedded: it must not be a Slicer

func (f failingSource) PageSize() int          { return f.rs.PageSize() }
func (f failingSource) Regions() []wire.Region { return f.rs.Regions() }
func (f failingSource) ReadPages(region uint32, page uint64, dst []byte) error {
	if page <= 3 && page+uint64(len(dst)/testPageSize) > 3 {
		return io.ErrUnexpectedEOF
	}
	return f.rs.ReadPages(region, page, dst)
}

func TestSourceReadError(t *testing.T) {
	rs, _ := NewRegionSource("r", randomRegion(8, 13), testPageSize)
	s := New(failingSource{rs}, Options{}) // not a Slicer: every read goes through ReadPages
	c := newClient(t, startServer(t, s, "pipe")(), 0)
	c.fetch(&wire.Request{ReqID: 1, Page: 4, Count: 4})
	c.send(&wire.Request{ReqID: 2, Page: 0, Count: 8})
	m := c.read()
	if werr, ok := m.(*wire.Error); !ok || werr.Code != wire.CodeSourceRead || werr.ReqID != 2 {
		t.Fatalf("got %s, want source_read for req 2", m.Type())
	}
	c.expectClosed()
}

func TestInvalidSource(t *testing.T) {
	s := New(badSource{}, Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); err == nil {
		t.Fatal("Serve with a bad source succeeded")
	}
}

type badSource struct{}

func (badSource) PageSize() int                          { return 1000 }
func (badSource) Regions() []wire.Region                 { return nil }
func (badSource) ReadPages(uint32, uint64, []byte) error { return nil }

// blockingPrecopy takes pre-copy connections and reads them until they end,
// as a pre-copy sender waiting for its target does.
type blockingPrecopy struct{ attached chan struct{} }

func (b *blockingPrecopy) ServePrecopy(_ *wire.Hello, nc net.Conn, r *wire.Reader, _ *wire.Writer) error {
	b.attached <- struct{}{}
	for {
		if _, err := r.ReadMessage(); err != nil {
			return err
		}
	}
}

// TestClosePrecopyStream: Close returns with a pre-copy stream handed to
// Options.Precopy whose peer stays silent (it closes the connection under
// the handler), on both transports.
func TestClosePrecopyStream(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			pc := &blockingPrecopy{attached: make(chan struct{}, 1)}
			s := regionServer(t, randomRegion(8, 1), Options{Precopy: pc})
			dial := startServer(t, s, tr)
			nc := dial()
			defer nc.Close()
			w, r := wire.NewWriter(nc), wire.NewReader(nc)
			w.WriteMessage(&wire.Hello{VersionMin: wire.Version, VersionMax: wire.Version, Features: wire.FeaturePrecopy | wire.FeaturePageHashes,
				Channel: wire.ChannelPrecopy, Session: [16]byte{9}, Stream: 0, Streams: 1})
			w.Flush()
			if m, err := r.ReadMessage(); err != nil || m.Type() != wire.TypeWelcome {
				t.Fatalf("handshake: %v %v", m, err)
			}
			<-pc.attached
			done := make(chan struct{})
			go func() { s.Close(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Close hangs on a pre-copy stream whose peer is silent")
			}
		})
	}
}
