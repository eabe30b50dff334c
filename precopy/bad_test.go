package precopy_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
	"github.com/pagewarp/pagewarp/pageserver"
	"github.com/pagewarp/pagewarp/precopy"
	"github.com/pagewarp/pagewarp/wire"
)

// fakeSource is a hand-driven pre-copy server: a real page server for the
// handler's own connections, whose pre-copy stream the test writes frames
// to directly.
type fakeSource struct {
	streams chan *fakeStream
}

type fakeStream struct {
	nc   net.Conn
	r    *wire.Reader
	w    *wire.Writer
	done chan struct{}
}

func (f *fakeSource) ServePrecopy(_ *wire.Hello, nc net.Conn, r *wire.Reader, w *wire.Writer) error {
	s := &fakeStream{nc: nc, r: r, w: w, done: make(chan struct{})}
	f.streams <- s
	<-s.done
	return nil
}

func (s *fakeStream) send(t *testing.T, ms ...wire.Message) {
	t.Helper()
	for _, m := range ms {
		if err := s.w.WriteMessage(m); err != nil {
			t.Fatalf("write %s: %v", m.Type(), err)
		}
	}
	if err := s.w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// setupFake returns a target (one handler over 16 pages, a Receiver with
// one stream, running) and the server side of its pre-copy stream, past
// the Known advertisement.
func setupFake(t *testing.T) (*fakeStream, *faulthandler.Handler, chan error) {
	t.Helper()
	uffdtest.SkipIfUnavailable(t)
	const n = 16
	mem := make([]byte, n*pageSize)
	src, err := pageserver.NewRegionSource("fake", mem, pageSize)
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeSource{streams: make(chan *fakeStream, 1)}
	srv := pageserver.New(src, pageserver.Options{Precopy: fake})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := faulthandler.Dial(ctx, "tcp", ln.Addr().String(), faulthandler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	recv, err := precopy.Dial(ctx, "tcp", ln.Addr().String(), []*faulthandler.Handler{h}, precopy.ReceiverConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s := <-fake.streams
	t.Cleanup(func() { close(s.done) })
	m, err := s.r.ReadMessage()
	if k, ok := m.(*wire.Known); err != nil || !ok || !k.Done || k.Len() != 0 {
		t.Fatalf("first frame from the target: %v %v, want an empty Known with done", m, err)
	}
	errc := make(chan error, 1)
	done := make(chan struct{})
	go func() { errc <- recv.Run(context.Background()); close(done) }()
	t.Cleanup(func() { s.nc.Close(); <-done })
	return s, h, errc
}

func page(b byte) []byte {
	p := make([]byte, pageSize)
	for i := range p {
		p[i] = b + byte(i)
	}
	return p
}

func hashes(pages ...[]byte) []byte {
	var out []byte
	for _, p := range pages {
		v := xxh3.Hash(p)
		for i := range 8 {
			out = append(out, byte(v>>(8*i)))
		}
	}
	return out
}

func dataFrame(round uint64, first uint64, pages ...[]byte) *wire.Pages {
	var data []byte
	for _, p := range pages {
		data = append(data, p...)
	}
	return &wire.Pages{ReqID: round, Region: 0, Page: first, Count: uint32(len(pages)), Flags: wire.FlagPrecopy,
		Hashes: hashes(pages...), Data: data}
}

// TestReceiverRejectsTornPage: a page whose data does not match its hash is
// not installed, is reported in RoundAck, and a page the target held from an
// earlier round becomes missing again.
func TestReceiverRejectsTornPage(t *testing.T) {
	s, h, errc := setupFake(t)
	a, b := page(1), page(2)
	s.send(t, dataFrame(0, 3, a, b), &wire.RoundEnd{Round: 0, Pages: 2})
	ack := readAck(t, s)
	if ack.Round != 0 || ack.Len() != 0 || !ack.Last {
		t.Fatalf("round 0 ack: %+v", ack)
	}
	if !h.IsResident(3) || !h.IsResident(4) {
		t.Fatal("round 0 pages not resident")
	}
	// Round 1: page 3 again, torn (hash of other content); page 5 new, fine.
	torn := dataFrame(1, 3, page(7))
	torn.Hashes = hashes(page(8))
	s.send(t, torn, dataFrame(1, 5, page(9)), &wire.RoundEnd{Round: 1, Pages: 2})
	ack = readAck(t, s)
	if ack.Len() != 1 {
		t.Fatalf("round 1 ack rejects %d pages, want 1", ack.Len())
	}
	if id, p := ack.Entry(0); id != 0 || p != 3 {
		t.Fatalf("rejected region %d page %d, want page 3", id, p)
	}
	if h.IsResident(3) || !h.IsResident(4) || !h.IsResident(5) {
		t.Fatal("after the torn page: page 3 should be missing, 4 and 5 resident")
	}
	select {
	case err := <-errc:
		t.Fatalf("receiver stopped: %v", err)
	default:
	}
}

// TestReceiverReferences: a reference to a page that arrives later in the
// same round on the stream is resolved at the end of the round; a reference
// whose source never matches is rejected.
func TestReceiverReferences(t *testing.T) {
	s, h, _ := setupFake(t)
	a := page(3)
	var refs []byte
	refs = wire.AppendRef(refs, wire.Ref{Page: 1, SrcRegion: 0, SrcPage: 9, Check: xxh3.Hash(a)})     // source comes next
	refs = wire.AppendRef(refs, wire.Ref{Page: 2, SrcRegion: 0, SrcPage: 9, Check: xxh3.Hash(a) + 1}) // never matches
	s.send(t, &wire.Refs{Round: 0, Region: 0, Entries: refs}, dataFrame(0, 9, a), &wire.RoundEnd{Round: 0, Pages: 1, Refs: 2})
	ack := readAck(t, s)
	if ack.Len() != 1 {
		t.Fatalf("ack rejects %d, want 1", ack.Len())
	}
	if _, p := ack.Entry(0); p != 2 {
		t.Fatalf("rejected page %d, want 2", p)
	}
	got, ok := h.PrecopyPage(1)
	if !ok || string(got) != string(a) {
		t.Fatal("page 1 was not filled from its reference")
	}
	if h.IsResident(2) {
		t.Fatal("page 2 installed from a reference that did not match")
	}
}

// TestReceiverBadFrames: each bad frame ends pre-copy with a clear error
// and an Error frame to the server.
func TestReceiverBadFrames(t *testing.T) {
	cases := []struct {
		name  string
		frame []wire.Message
		code  wire.ErrorCode
		want  string
	}{
		{"wrong round", []wire.Message{dataFrame(4, 0, page(1))}, wire.CodeProtocol, "round 4 during round 0"},
		{"unknown region", []wire.Message{&wire.Pages{ReqID: 0, Region: 7, Page: 0, Count: 1, Flags: wire.FlagPrecopy | wire.FlagZero}},
			wire.CodeUnknownRegion, "region 7"},
		{"out of range", []wire.Message{&wire.Pages{ReqID: 0, Region: 0, Page: 15, Count: 2, Flags: wire.FlagPrecopy | wire.FlagZero}},
			wire.CodeOutOfRange, "outside region"},
		{"not precopy", []wire.Message{&wire.Pages{ReqID: 1, Region: 0, Page: 0, Count: 1, Flags: wire.FlagZero | wire.FlagLast}},
			wire.CodeProtocol, "without the precopy flag"},
		{"lost pages", []wire.Message{dataFrame(0, 0, page(1)), &wire.RoundEnd{Round: 0, Pages: 2}},
			wire.CodeProtocol, "2 pages and 0 references"},
		{"request", []wire.Message{&wire.Request{ReqID: 1, Region: 0, Page: 0, Count: 1}}, wire.CodeProtocol, "request on a pre-copy stream"},
		{"ref out of range", []wire.Message{&wire.Refs{Round: 0, Region: 0, Entries: wire.AppendRef(nil, wire.Ref{Page: 1, SrcPage: 99})}},
			wire.CodeOutOfRange, "does not hold"},
		{"base ref without base", []wire.Message{&wire.Refs{Round: 0, Region: 0, Entries: wire.AppendRef(nil, wire.Ref{Page: 1, SrcRegion: wire.BaseRegion})}},
			wire.CodeOutOfRange, "base"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, _, errc := setupFake(t)
			s.send(t, c.frame...)
			var err error
			select {
			case err = <-errc:
			case <-time.After(10 * time.Second):
				t.Fatal("receiver did not stop")
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("receiver error %v, want one containing %q", err, c.want)
			}
			m, rerr := s.r.ReadMessage()
			var werr *wire.Error
			if e, ok := m.(*wire.Error); ok {
				werr = e
			}
			if rerr != nil || werr == nil || werr.Code != c.code {
				t.Fatalf("server got %v (%v), want an Error with code %s", m, rerr, c.code)
			}
		})
	}
}

func readAck(t *testing.T, s *fakeStream) *wire.RoundAck {
	t.Helper()
	s.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := s.r.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	a, ok := m.(*wire.RoundAck)
	if !ok {
		t.Fatalf("got %s, want round_ack", m.Type())
	}
	return &wire.RoundAck{Round: a.Round, Last: a.Last, Rejected: append([]byte(nil), a.Rejected...)}
}

// TestSenderRefusesStrangers: a second session, a stream number twice, and
// a base snapshot advertised with another hash are refused with an error.
func TestSenderRefusesStrangers(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	const n = 64
	mem := mapRegion(t, n)
	fillUnique(mem, 0, n, 21)
	tr, err := precopy.NewTracker(precopy.TrackAuto, mem, pageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	sender, err := precopy.NewSender([]precopy.Region{{ID: 0, Mem: mem, Tracker: tr}}, precopy.SenderConfig{PageSize: pageSize})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	src, _ := pageserver.NewRegionSource("r", mem, pageSize)
	srv := pageserver.New(src, pageserver.Options{Precopy: sender})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()
	hello := func(session byte, stream, streams uint8) (*wire.Reader, *wire.Writer, net.Conn) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		w, r := wire.NewWriter(c), wire.NewReader(c)
		w.WriteMessage(&wire.Hello{VersionMin: wire.Version, VersionMax: wire.Version, Features: wire.FeaturePrecopy | wire.FeaturePageHashes,
			Channel: wire.ChannelPrecopy, Session: [16]byte{session}, Stream: stream, Streams: streams})
		w.Flush()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		m, err := r.ReadMessage()
		if wel, ok := m.(*wire.Welcome); !ok || err != nil || wel.Features&wire.FeaturePrecopy == 0 {
			t.Fatalf("handshake: %v %v", m, err)
		}
		return r, w, c
	}
	expectError := func(r *wire.Reader, want string) {
		t.Helper()
		m, err := r.ReadMessage()
		e, ok := m.(*wire.Error)
		if err != nil || !ok || !strings.Contains(e.Message, want) {
			t.Fatalf("got %v %v, want an error containing %q", m, err, want)
		}
	}
	r0, w0, _ := hello(1, 0, 2)
	// The server welcomes a stream before it hands it to the sender: wait
	// until session 1 is the sender's, or the stranger could come first.
	for deadline := time.Now().Add(10 * time.Second); sender.Streams() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first stream never reached the sender")
		}
	}
	r, _, _ := hello(2, 1, 2)
	expectError(r, "another session")
	r, _, _ = hello(1, 0, 2)
	expectError(r, "already attached")
	hello(1, 1, 2)
	w0.WriteMessage(&wire.Known{Algorithm: wire.ContentSHA256, Done: true})
	w0.Flush()
	expectError(r0, "sha256")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sender.WaitReady(ctx); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady after a bad Known: %v, want the stream's error", err)
	}
}
