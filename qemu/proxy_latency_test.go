package qemu

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/qemu/qmp"
	"github.com/pagewarp/pagewarp/qemu/returnpath"
)

func TestForwardBucket(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int
	}{
		{0, 0}, {time.Nanosecond, 0}, {time.Microsecond, 0},
		{time.Microsecond + 1, 1}, {2 * time.Microsecond, 1},
		{2*time.Microsecond + 1, 2}, {4 * time.Microsecond, 2}, {5 * time.Microsecond, 3},
		{ForwardBucketBound(ForwardBuckets - 1), ForwardBuckets - 1},
		{ForwardBucketBound(ForwardBuckets-1) + 1, ForwardBuckets},
		{time.Hour, ForwardBuckets},
	} {
		if got := forwardBucket(c.d); got != c.want {
			t.Errorf("forwardBucket(%v) = %d, want %d", c.d, got, c.want)
		}
		// Every latency lies within its bucket's bounds.
		k := forwardBucket(c.d)
		if k < ForwardBuckets && c.d > ForwardBucketBound(k) || k > 0 && c.d <= ForwardBucketBound(k-1) {
			t.Errorf("%v in bucket %d, bounds (%v, %v]", c.d, k, ForwardBucketBound(k-1), ForwardBucketBound(k))
		}
	}
	if got := ForwardBucketBound(ForwardBuckets - 1); got != 131072*time.Microsecond {
		t.Errorf("last bound %v, want 131.072ms", got)
	}
}

// Every forwarded request is timed once; other messages are not; the open-connection count
// returns to 0 when the pair ends.
func TestProxyForwardLatency(t *testing.T) {
	p, src, dst, _ := fakePair(t, ProxyConfig{Predictor: "ppm"})
	for deadline := time.Now().Add(10 * time.Second); p.Stats().Connections == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond) // the destination accepted before the proxy counted the pair
	}
	if st := p.Stats(); st.OpenConnections != 1 || st.Connections != 1 {
		t.Fatalf("stats %+v, want 1 connection open", st)
	}
	start := time.Now()
	dst.Write(frames(t,
		returnpath.Message{Type: returnpath.ReqPagesID, Start: 1 * 4096, Len: 4096, Block: "pc.ram"},
		returnpath.Message{Type: returnpath.Pong, Value: 1},
		returnpath.Message{Type: returnpath.ReqPages, Start: 9 * 4096, Len: 4096},
		returnpath.Message{Type: returnpath.ReqPages, Start: 17 * 4096, Len: 8192},
		returnpath.Message{Type: returnpath.Shut},
	))
	dst.(*net.TCPConn).CloseWrite()
	readAll(t, src)
	elapsed := time.Since(start)
	src.Close()
	dst.Close()
	l := p.ForwardLatency()
	if l.Count() != 3 {
		t.Fatalf("%d requests timed, want 3: %+v", l.Count(), l)
	}
	if l.Sum <= 0 || l.Sum > 3*elapsed {
		t.Fatalf("latency sum %v, want in (0, 3 x %v]", l.Sum, elapsed)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.Stats().OpenConnections != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if st := p.Stats(); st.OpenConnections != 0 {
		t.Fatalf("stats %+v after both sides closed, want no connection open", st)
	}
}

// Without a block list the proxy forwards every request (as REQ_PAGES_ID) and injects nothing,
// disabled from the start with a reason that says why.
func TestProxyNoBlocksForwardsOnly(t *testing.T) {
	p, src, dst, _ := fakePair(t, ProxyConfig{Predictor: "nextn", Blocks: []qmp.RAMBlock{}})
	st := p.Stats()
	if !st.InjectionDisabled || !strings.Contains(st.DisabledReason, "no RAM block list") {
		t.Fatalf("stats %+v before any request, want injection disabled for want of a block list", st)
	}
	dst.Write(frames(t,
		returnpath.Message{Type: returnpath.ReqPagesID, Start: 4096, Len: 4096, Block: "pc.ram"},
		returnpath.Message{Type: returnpath.ReqPages, Start: 2 * 4096, Len: 4096},
	))
	dst.(*net.TCPConn).CloseWrite()
	ms := readAll(t, src)
	want := []returnpath.Message{
		{Type: returnpath.ReqPagesID, Start: 4096, Len: 4096, Block: "pc.ram"},
		{Type: returnpath.ReqPagesID, Start: 2 * 4096, Len: 4096, Block: "pc.ram"},
	}
	if len(ms) != len(want) || ms[0] != want[0] || ms[1] != want[1] {
		t.Fatalf("source got %v, want %v", ms, want)
	}
	if st := p.Stats(); st.RealRequests != 2 || st.Injected != 0 || !strings.Contains(st.DisabledReason, "no RAM block list") {
		t.Fatalf("stats %+v", st)
	}
}
