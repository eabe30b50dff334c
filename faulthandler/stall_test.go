package faulthandler_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/internal/syncbuf"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
	"github.com/pagewarp/pagewarp/pageserver"
	"github.com/pagewarp/pagewarp/wire"
)

// stallProxy is a TCP forwarder between targets and a page server that
// stops forwarding a connection without closing it: both directions hold
// what they read from then on, and the sockets stay open, as behind a
// middlebox that lost its state or a peer that hangs. The server's bytes
// are forwarded frame by frame, so that the freeze falls between frames.
type stallProxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	accepted atomic.Int64
	// plan says, for the n-th connection accepted (0 is the first
	// handler's urgent connection, 1 to 3 its bulk ones), after how many
	// frames from the server it freezes (-1: never), or how long it pauses
	// after that many frames before it goes on (pause > 0).
	plan func(n int) (frames int, pause time.Duration)
	// frozenAt is the time (unix nanoseconds) the first freeze or pause
	// began, taken before the last frame through is written.
	frozenAt atomic.Int64
	freezes  atomic.Int64

	// pairs maps each open pair to a channel closed when it is cut,
	// which releases its frozen directions.
	mu    sync.Mutex
	pairs map[*proxyPair]chan struct{}
	wg    sync.WaitGroup
}

func newStallProxy(t testing.TB, target string, plan func(n int) (int, time.Duration)) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{t: t, ln: ln, target: target, plan: plan, pairs: make(map[*proxyPair]chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

func (p *stallProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		n := int(p.accepted.Add(1) - 1)
		after, pause := p.plan(n)
		pair := &proxyPair{client: c, server: s}
		var frozen atomic.Bool
		closed := make(chan struct{})
		p.mu.Lock()
		p.pairs[pair] = closed
		p.mu.Unlock()
		cut := func() { p.cut(pair, false) }
		p.wg.Add(2)
		go func() { // target to server
			defer p.wg.Done()
			defer cut()
			buf := make([]byte, 64<<10)
			for {
				k, err := c.Read(buf)
				if frozen.Load() {
					<-closed // hold the bytes and the end, keep the server's socket open
					return
				}
				if k > 0 {
					if _, werr := s.Write(buf[:k]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
		go func() { // server to target, frame by frame
			defer p.wg.Done()
			defer cut()
			buf := make([]byte, 4+wire.MaxFrameSize)
			for i := 1; ; i++ {
				if _, err := io.ReadFull(s, buf[:4]); err != nil {
					return
				}
				k := int(binary.BigEndian.Uint32(buf[:4]))
				if k == 0 || k > wire.MaxFrameSize {
					return
				}
				if _, err := io.ReadFull(s, buf[4:4+k]); err != nil {
					return
				}
				if i == after {
					p.frozenAt.CompareAndSwap(0, time.Now().UnixNano())
					p.freezes.Add(1)
					if pause == 0 {
						frozen.Store(true)
					}
				}
				if frozen.Load() && i > after {
					<-closed
					return
				}
				if _, err := c.Write(buf[:4+k]); err != nil {
					return
				}
				if i == after && pause > 0 {
					time.Sleep(pause) // neither direction is read meanwhile on this side
				}
			}
		}()
	}
}

// cut closes both sides of pair and releases its frozen directions.
func (p *stallProxy) cut(pair *proxyPair, reset bool) {
	pair.cut(reset)
	p.mu.Lock()
	defer p.mu.Unlock()
	if closed, ok := p.pairs[pair]; ok {
		delete(p.pairs, pair)
		close(closed)
	}
}

func (p *stallProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	pairs := make([]*proxyPair, 0, len(p.pairs))
	for pair := range p.pairs {
		pairs = append(pairs, pair)
	}
	p.mu.Unlock()
	for _, pair := range pairs {
		p.cut(pair, true)
	}
	p.wg.Wait()
}

// stallRun migrates through a stallProxy with threads running plans (none:
// the pull alone), and checks that every thread read the source's bytes,
// Wait succeeded with the digest checked and the region is byte-exact. It
// returns the stats, the handler's log, and when the first stall was
// counted (unix nanoseconds; 0: none).
func stallRun(t *testing.T, r *resumeRig, p *stallProxy, opts faulthandler.Options, plans [][]touch) (faulthandler.Stats, string, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var log syncbuf.Buffer
	opts.Verify = true
	opts.Logger = slog.New(slog.NewTextHandler(&log, nil))
	h, err := faulthandler.Dial(ctx, "tcp", p.addr(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { h.Close(); h.Release() }()
	h.Start() // before Stats is called from another goroutine
	var stallAt atomic.Int64
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			if h.Stats().Stalls > 0 {
				stallAt.Store(time.Now().UnixNano())
				return
			}
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	_, ok := runPlans(t, h.Memory(), r.mem, os.Getpagesize(), plans, time.Minute)
	werr := h.Wait(ctx)
	close(done)
	<-watched
	if !ok {
		t.FailNow()
	}
	if werr != nil {
		t.Fatalf("wait: %v (stats %+v)\nlog:\n%s", werr, h.Stats(), log.String())
	}
	if !bytes.Equal(h.Memory(), r.mem) {
		t.Fatal("region differs from the source")
	}
	st := h.Stats()
	if st.LinkLosses != st.Resumes {
		t.Errorf("%d link losses, %d resumes: every loss must end in a resume", st.LinkLosses, st.Resumes)
	}
	return st, log.String(), stallAt.Load()
}

// TestStallResume freezes one connection mid-migration without closing
// it: the urgent one while eight threads fault (their demand requests and
// replies stop), or a bulk one while the pull alone runs (its background
// requests stop). The handler must notice after StallTimeout, not before,
// resume through fresh connections, and end byte-exact. A pause shorter
// than StallTimeout must not count as a stall.
func TestStallResume(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	faulthandler.ReserveProcs(8)
	const stall = 300 * time.Millisecond
	// The watchdog checks every stall/8; it may see the stall up to two
	// checks late, and the test polls Stats every millisecond.
	const late = 2*stall/8 + 150*time.Millisecond
	for _, tc := range []struct {
		name    string
		conn    int // the first link's connection to freeze: 0 urgent, 1-3 bulk
		frames  int // after this many frames from the server
		pause   time.Duration
		threads int
		noPull  bool          // demand and pushes only: every page crosses the urgent connection
		delay   time.Duration // per source read: slows the pull down so that the freeze comes first
		stalls  uint64
		log     string
	}{
		{name: "urgent", conn: 0, frames: 200, threads: 8, noPull: true, stalls: 1, log: "urgent connection: connection stalled"},
		{name: "bulk", conn: 2, frames: 20, threads: 0, delay: 300 * time.Microsecond, stalls: 1, log: "bulk1 connection: connection stalled"},
		{name: "pause", conn: 0, frames: 200, pause: stall * 6 / 10, threads: 8, noPull: true, stalls: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newResumeRig(t, 8192, tc.delay, pageserver.Options{Prefetch: pageserver.Prefetch{Predictor: "ppm"}}, false)
			p := newStallProxy(t, r.proxy.target, func(n int) (int, time.Duration) {
				if n == tc.conn {
					return tc.frames, tc.pause
				}
				return -1, 0
			})
			var plans [][]touch
			if tc.threads > 0 {
				plans = loadPlan(8192, tc.threads, 64, 5)
			}
			st, log, stallAt := stallRun(t, r, p, faulthandler.Options{PullChunk: 64, NoPull: tc.noPull, StallTimeout: stall, ResumeDeadline: 20 * time.Second}, plans)
			if p.freezes.Load() != 1 {
				t.Fatalf("the proxy froze %d connections, want 1: the migration ended before frame %d (stats %+v)", p.freezes.Load(), tc.frames, st)
			}
			if st.Stalls != tc.stalls || st.Resumes != tc.stalls {
				t.Fatalf("%d stalls, %d resumes, want %d of each\nlog:\n%s", st.Stalls, st.Resumes, tc.stalls, log)
			}
			if tc.stalls == 0 {
				return
			}
			if !strings.Contains(log, tc.log) {
				t.Errorf("log does not say %q:\n%s", tc.log, log)
			}
			took := time.Duration(stallAt - p.frozenAt.Load())
			if took < stall || took > stall+late {
				t.Errorf("stall counted %v after the freeze, want between %v and %v", took, stall, stall+late)
			}
			t.Logf("stall noticed %v after the freeze; resumed in %v; %d pages asked again; %d demand, %d background, %d pushed pages",
				took, st.DownTime, st.ReRequested, st.DemandPages, st.BackgroundPages, st.PushedPages)
		})
	}
}

// TestStallNoResume: a handler that cannot redial (NewRemote) fails on a
// stall, with ErrStalled, instead of waiting for ever.
func TestStallNoResume(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	r := newResumeRig(t, 4096, 300*time.Microsecond, pageserver.Options{}, false)
	p := newStallProxy(t, r.proxy.target, func(n int) (int, time.Duration) {
		if n == 1 {
			return 3, 0
		}
		return -1, 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var conns []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", p.addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	const stall = 200 * time.Millisecond
	h, err := faulthandler.NewRemote(ctx, conns[0], conns[1:], faulthandler.Options{PullChunk: 64, StallTimeout: stall})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close() // nothing touches the region
	h.Start()
	werr := h.Wait(ctx)
	if !errors.Is(werr, faulthandler.ErrStalled) || !strings.Contains(werr.Error(), "bulk0 connection") {
		t.Fatalf("wait: %v; want ErrStalled on bulk0", werr)
	}
	if st := h.Stats(); st.Stalls != 1 || !st.Failed || st.Resident == st.Pages {
		t.Errorf("stats %+v: want one stall, failed, pages missing", st)
	}
}

// TestStallPastDeadline: the server takes every connection and answers
// its handshake, then never answers anything (each connection freezes
// after the Welcome). A thread waits on a page. Each link stalls, is
// resumed, and stalls again without carrying a frame, so the resume
// deadline runs from the first stall: the migration fails with
// ErrResumeDeadline wrapping ErrStalled soon after it, instead of
// resuming for ever, and the waiting thread stays blocked through Close,
// then ends as the process chooses, never with zeros (run in a child, see
// runFailScenario).
func TestStallPastDeadline(t *testing.T) {
	for _, end := range []string{"stay", "release", "exit"} {
		t.Run(end, func(t *testing.T) { testStallPastDeadline(t, end) })
	}
}

func testStallPastDeadline(t *testing.T, end string) {
	uffdtest.SkipIfUnavailable(t)
	r := newResumeRig(t, 64, 0, pageserver.Options{}, false)
	p := newStallProxy(t, r.proxy.target, func(int) (int, time.Duration) { return 1, 0 })
	const stall, deadline = 200 * time.Millisecond, 700 * time.Millisecond
	stdout, stderr, err := runFailChild(t, "stall", p.addr(), end, deadline, "PAGEWARP_TEST_STALL="+stall.String())
	if end != "exit" {
		if !strings.Contains(stdout, "resume deadline: true, stalled: true") || !strings.Contains(stdout, "64 of 64 pages still missing") {
			t.Fatalf("want ErrResumeDeadline with ErrStalled and the missing pages:\n%s\n%s", stdout, stderr)
		}
		var took time.Duration
		var stalls, resumes int
		for _, line := range strings.Split(stdout, "\n") {
			if v, ok := strings.CutPrefix(line, "failed after: "); ok {
				took, _ = time.ParseDuration(v)
			}
			fmt.Sscanf(line, "stalls: %d, resumes: %d", &stalls, &resumes)
		}
		// The first stall after StallTimeout, then resumed links stalling
		// until the deadline has passed since it: at most one more
		// StallTimeout (and the watchdog's lag) beyond the deadline.
		if took < stall+deadline || took > 2*stall+deadline+time.Second {
			t.Errorf("failed %v after the wait began, want between %v and %v", took, stall+deadline, 2*stall+deadline+time.Second)
		}
		if stalls < 2 || resumes < 1 || stalls != resumes+1 {
			t.Errorf("%d stalls, %d resumes: want a resume after each stall but the last", stalls, resumes)
		}
	}
	if end == "exit" && !strings.Contains(stdout, "64 of 64 pages still missing") {
		t.Fatalf("want the missing pages in the exit message:\n%s\n%s", stdout, stderr)
	}
	checkFailedClosed(t, end, stdout, stderr, err)
}
