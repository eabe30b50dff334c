package pageserver

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/wire"
)

// urgentClient opens an urgent connection with push for session id;
// resume sets Hello.Resume.
func urgentClient(t *testing.T, dial func() net.Conn, id [16]byte, resume bool) *client {
	t.Helper()
	c := rawClient(t, dial())
	c.send(&wire.Hello{VersionMin: wire.Version, VersionMax: wire.Version, Features: wire.FeaturePageHashes | wire.FeaturePush,
		Channel: wire.ChannelUrgent, Session: id, Client: "resume-test", Resume: resume})
	w, ok := c.read().(*wire.Welcome)
	if !ok || w.Features&wire.FeaturePush == 0 {
		t.Fatalf("handshake: %+v, want a Welcome with push", w)
	}
	c.r.SetPageSize(int(w.PageSize))
	return c
}

// demandPush sends a demand request for page and returns the pages of the
// Push notice that comes with the reply (nil without one), reading the
// reply and the pushed frames.
func (c *client) demandPush(id uint64, page uint64) []uint64 {
	c.t.Helper()
	c.send(&wire.Request{ReqID: id, Page: page, Count: 1, Priority: wire.PriorityDemand})
	var pushed []uint64
	replied, pushDone := false, true
	for !replied || !pushDone {
		switch m := c.read().(type) {
		case *wire.Push:
			pushed, pushDone = slices.Clone(m.Pages), false
		case *wire.Pages:
			if m.Pushed() {
				pushDone = pushDone || m.Last()
			} else if m.Last() {
				replied = true
			}
		default:
			c.t.Fatalf("got %s after a demand request", describe(m))
		}
	}
	return pushed
}

// TestResumeSession: a push session outlives its dropped connection; a
// resumed urgent connection of the same session finds it, and its Resident
// frames set what the server counts as sent: pages the target holds are
// never pushed, pages pushed on the dead connection that the target does
// not hold may be sent again. The session goes with the target's Bye.
func TestResumeSession(t *testing.T) {
	mem := randomRegion(256, 5)
	s := regionServer(t, mem, Options{Prefetch: Prefetch{Predictor: "nextn", Budget: 8, Fixed: true}, SessionLinger: time.Minute})
	dial := startServer(t, s, "tcp")
	id := [16]byte{1, 2, 3}

	c := urgentClient(t, dial, id, false)
	if got := c.demandPush(1, 10); !slices.Equal(got, []uint64{11, 12, 13, 14, 15, 16, 17, 18}) {
		t.Fatalf("first push %v, want 11..18", got)
	}
	c.nc.Close() // dropped: no Bye
	waitFor(t, "the connection to end", func() bool { return s.Stats().ConnectionsActive == 0 })
	if n := s.Sessions(); n != 1 {
		t.Fatalf("%d sessions after the drop, want the one lingering", n)
	}

	c = urgentClient(t, dial, id, true)
	// The target holds 10 and 11 (the rest of the push was lost) and 40..42,
	// which it fetched some other way.
	bits := make([]byte, 32)
	for _, p := range []int{10, 11, 40, 41, 42} {
		bits[p/8] |= 1 << (p % 8)
	}
	c.send(&wire.Resident{Region: 0, First: 0, Bits: bits, Done: true})
	if got := c.demandPush(2, 39); !slices.Equal(got, []uint64{43, 44, 45, 46, 47}) {
		t.Fatalf("push after resume %v, want 43..47 (40..42 are resident)", got)
	}
	ss := s.sessions[id]
	ss.mu.Lock()
	st := ss.regions[0]
	var sent []uint64
	for p := uint64(10); p < 19; p++ {
		if st.sent.has(p) {
			sent = append(sent, p)
		}
	}
	ss.mu.Unlock()
	if !slices.Equal(sent, []uint64{10, 11}) {
		t.Errorf("pages of the lost push counted sent: %v, want 10 and 11 only", sent)
	}
	if st := s.Stats(); st.Resumes != 1 || st.ResidentFrames != 1 {
		t.Errorf("stats: %d resumes, %d resident frames; want 1 and 1", st.Resumes, st.ResidentFrames)
	}
	c.send(&wire.Bye{Reason: "complete"})
	if _, ok := c.read().(*wire.Bye); !ok {
		t.Fatal("no bye back")
	}
	waitFor(t, "the session to go with the bye", func() bool { return s.Sessions() == 0 })
}

// TestSessionLingerExpires: a dropped session is forgotten after
// SessionLinger; a resumed connection then starts a fresh one.
func TestSessionLingerExpires(t *testing.T) {
	s := regionServer(t, randomRegion(64, 6), Options{Prefetch: Prefetch{Predictor: "nextn", Budget: 4, Fixed: true}, SessionLinger: 50 * time.Millisecond})
	dial := startServer(t, s, "tcp")
	c := urgentClient(t, dial, [16]byte{9}, false)
	c.demandPush(1, 1)
	c.nc.Close()
	waitFor(t, "the connection to end", func() bool { return s.Stats().ConnectionsActive == 0 })
	waitFor(t, "the session to expire", func() bool { return s.Sessions() == 0 })
	c = urgentClient(t, dial, [16]byte{9}, true)
	// A fresh predictor: page 2 is new to it, so 3..6 are pushed.
	if got := c.demandPush(2, 2); !slices.Equal(got, []uint64{3, 4, 5, 6}) {
		t.Fatalf("push %v after expiry, want 3..6", got)
	}
}

// TestResidentRefused: Resident only on a resumed urgent connection, and
// only naming pages of the region.
func TestResidentRefused(t *testing.T) {
	s := regionServer(t, randomRegion(20, 7), Options{Prefetch: Prefetch{Predictor: "nextn"}})
	dial := startServer(t, s, "tcp")
	for _, tc := range []struct {
		name    string
		resume  bool
		channel uint8
		m       *wire.Resident
		code    wire.ErrorCode
	}{
		{"not resumed", false, wire.ChannelUrgent, &wire.Resident{Bits: []byte{1}}, wire.CodeProtocol},
		{"bulk", true, wire.ChannelBulk, &wire.Resident{Bits: []byte{1}}, wire.CodeProtocol},
		{"unknown region", true, wire.ChannelUrgent, &wire.Resident{Region: 4, Bits: []byte{1}}, wire.CodeUnknownRegion},
		{"past the end", true, wire.ChannelUrgent, &wire.Resident{Bits: []byte{0xff, 0xff, 0x10}}, wire.CodeOutOfRange},
		{"first past the end", true, wire.ChannelUrgent, &wire.Resident{First: 20, Bits: []byte{0}}, wire.CodeOutOfRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawClient(t, dial())
			c.send(&wire.Hello{VersionMin: wire.Version, VersionMax: wire.Version, Features: wire.FeaturePageHashes | wire.FeaturePush,
				Channel: tc.channel, Session: [16]byte{4}, Resume: tc.resume})
			if _, ok := c.read().(*wire.Welcome); !ok {
				t.Fatal("no welcome")
			}
			c.send(tc.m)
			m, ok := c.read().(*wire.Error)
			if !ok || m.Code != tc.code {
				t.Fatalf("got %s, want error %s", describe(m), tc.code)
			}
		})
	}
	// Padding past the end is allowed when clear.
	c := rawClient(t, dial())
	c.send(&wire.Hello{VersionMin: wire.Version, VersionMax: wire.Version, Features: wire.FeaturePageHashes | wire.FeaturePush,
		Channel: wire.ChannelUrgent, Session: [16]byte{5}, Resume: true})
	c.read()
	c.send(&wire.Resident{Bits: []byte{0xff, 0xff, 0x0f}, Done: true}, &wire.Request{ReqID: 1, Page: 19, Count: 1})
	if p, ok := c.read().(*wire.Pages); !ok || p.Page != 19 {
		t.Fatalf("got %s, want page 19", describe(p))
	}
}

// A page pushed on a connection that died with it is not in the resuming target's Resident
// frame: the session forgets the push, and the predictor may name it, and the next push carry
// it, again. A pushed page the target holds stays pushed.
func TestResidentForgetsLostPushes(t *testing.T) {
	const pages = 64
	src, err := NewRegionSource("lost", make([]byte, pages*4096), 4096)
	if err != nil {
		t.Fatal(err)
	}
	s := New(src, Options{Prefetch: Prefetch{Predictor: "nextn", Budget: 4, Fixed: true}})
	defer s.Close()
	ss := &session{regions: make(map[uint32]*pushState)}
	got := ss.plan(s, 0, 10, nil)
	if !slices.Equal(got, []uint64{11, 12, 13, 14}) {
		t.Fatalf("first plan pushes %v, want 11..14", got)
	}
	// The target resumes holding 10, 11 and 12 (13 and 14 were lost with the connection).
	bits := make([]byte, pages/8)
	for _, p := range []int{10, 11, 12} {
		bits[p/8] |= 1 << (p % 8)
	}
	ss.resident(s, &wire.Resident{Region: 0, First: 0, Bits: bits, Done: true})
	st := ss.regions[0]
	if st.pushed.has(13) || st.pushed.has(14) || !st.pushed.has(11) || st.sent.has(13) {
		t.Fatalf("after Resident: pushed 11 %v 13 %v 14 %v, sent 13 %v", st.pushed.has(11), st.pushed.has(13), st.pushed.has(14), st.sent.has(13))
	}
	// The target faults on 12, a push it had not read yet (a use: nextn's sequence stays at
	// 10): nextn names 11..14 again, and the lost 13 and 14 go out again. Without the
	// forgetting they stayed touched, and nothing was pushed.
	if got := ss.plan(s, 0, 12, nil); !slices.Equal(got, []uint64{13, 14}) {
		t.Fatalf("plan after the resume pushes %v, want the lost 13 and 14", got)
	}
}
