package precopy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
	"github.com/pagewarp/pagewarp/pageserver"
	"github.com/pagewarp/pagewarp/precopy"
)

var pageSize = os.Getpagesize()

// mapRegion maps n pages of anonymous memory (what the trackers need).
func mapRegion(t testing.TB, n int) []byte {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, n*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

// fillUnique writes distinct content into pages [from, to).
func fillUnique(mem []byte, from, to int, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 1))
	for p := from; p < to; p++ {
		pg := mem[p*pageSize : (p+1)*pageSize]
		for i := 0; i < len(pg); i += 8 {
			binary.LittleEndian.PutUint64(pg[i:], r.Uint64())
		}
	}
}

// rig is one source (live regions, a tracker each, a page server with a
// Sender) and one target (a Handler per region, a Receiver).
type rig struct {
	src      [][]byte
	trackers []precopy.Tracker
	sender   *precopy.Sender
	server   *pageserver.Server
	addr     string
	handlers []*faulthandler.Handler
	recv     *precopy.Receiver
	recvErr  chan error
}

type rigConfig struct {
	mode    precopy.TrackMode
	streams int
	send    precopy.SenderConfig
	recv    precopy.ReceiverConfig
	fh      faulthandler.Options
}

func newRig(t *testing.T, src [][]byte, cfg rigConfig) *rig {
	t.Helper()
	uffdtest.SkipIfUnavailable(t)
	faulthandler.ReserveProcs(4)
	rg := &rig{src: src, recvErr: make(chan error, 1)}
	var regions []precopy.Region
	var mems []pageserver.MemRegion
	for i, mem := range src {
		tr, err := precopy.NewTracker(cfg.mode, mem, pageSize)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		rg.trackers = append(rg.trackers, tr)
		regions = append(regions, precopy.Region{ID: uint32(i), Mem: mem, Tracker: tr})
		mems = append(mems, pageserver.MemRegion{ID: uint32(i), Name: fmt.Sprintf("r%d", i), Mem: mem})
	}
	cfg.send.PageSize = pageSize
	s, err := precopy.NewSender(regions, cfg.send)
	if err != nil {
		t.Fatal(err)
	}
	rg.sender = s
	source, err := pageserver.NewRegionsSource(mems, pageSize)
	if err != nil {
		t.Fatal(err)
	}
	rg.server = pageserver.New(source, pageserver.Options{Precopy: s})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go rg.server.Serve(ln)
	t.Cleanup(func() { rg.server.Close() })
	rg.addr = ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range src {
		id := uint32(i)
		opts := cfg.fh
		opts.Region = &id
		h, err := faulthandler.Dial(ctx, "tcp", rg.addr, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		rg.handlers = append(rg.handlers, h)
	}
	if cfg.streams == 0 {
		cfg.streams = 2
	}
	cfg.recv.Streams = cfg.streams
	rg.recv, err = precopy.Dial(ctx, "tcp", rg.addr, rg.handlers, cfg.recv)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRecv := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { rg.recvErr <- rg.recv.Run(runCtx); close(runDone) }()
	t.Cleanup(func() { stopRecv(); <-runDone }) // before the handlers close
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return rg
}

func (rg *rig) round(t *testing.T) precopy.RoundStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := rg.sender.Round(ctx)
	if err != nil {
		t.Fatalf("round: %v", err)
	}
	t.Logf("round %d: dirty %d fake %d zero %d dup %d known %d sent %d rejected %d bytes %d in %v",
		st.Round, st.Dirty, st.FakeDirty, st.Zero, st.Dup, st.Known, st.Sent, st.Rejected, st.Bytes, st.Duration)
	return st
}

// finish ends pre-copy, drops the pages written since the last round on
// the target (what the switch does), runs post-copy and checks that the
// target's memory equals the source's byte for byte. It returns the pages
// post-copy fetched per region.
func (rg *rig) finish(t *testing.T) []uint64 {
	t.Helper()
	pending, err := rg.sender.Pending()
	if err != nil {
		t.Fatal(err)
	}
	state := []byte("workload state at the switch")
	if err := rg.sender.Switch(pending, state); err != nil {
		t.Fatal(err)
	}
	if err := <-rg.recvErr; err != nil {
		t.Fatalf("receiver: %v", err)
	}
	got, invalidated, _, ok := rg.recv.Handover()
	npending := 0
	for _, p := range pending {
		npending += len(p)
	}
	if !ok || string(got) != string(state) || invalidated != uint64(npending) {
		t.Fatalf("handover: state %q ok %v, %d pages invalidated; want %q and %d", got, ok, invalidated, state, npending)
	}
	return rg.postcopy(t)
}

// postcopy starts every handler after the switch, waits for post-copy to
// complete and checks the target byte for byte; it returns the pages
// post-copy fetched per region.
func (rg *rig) postcopy(t *testing.T) []uint64 {
	t.Helper()
	var fetched []uint64
	for i, h := range rg.handlers {
		missing := h.Pages() - h.Resident()
		h.Start()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := h.Wait(ctx)
		cancel()
		if err != nil {
			t.Fatalf("region %d post-copy: %v", i, err)
		}
		st := h.Stats()
		got := st.DemandPages + st.BackgroundPages + st.PushedPages + st.ZeroPages
		if got != missing {
			t.Errorf("region %d: post-copy fetched %d pages, %d were missing after pre-copy", i, got, missing)
		}
		if !bytes.Equal(h.Memory(), rg.src[i]) {
			for p := 0; p < len(rg.src[i])/pageSize; p++ {
				a, b := h.Memory()[p*pageSize:(p+1)*pageSize], rg.src[i][p*pageSize:(p+1)*pageSize]
				if !bytes.Equal(a, b) {
					t.Fatalf("region %d page %d differs after migration", i, p)
				}
			}
		}
		fetched = append(fetched, got)
	}
	return fetched
}

func modes(t *testing.T) []precopy.TrackMode {
	m := precopy.AvailableModes()
	if len(m) == 0 {
		t.Fatal("no tracking mode available (rehash needs nothing from the kernel)")
	}
	return m
}

// TestRoundsLive runs pre-copy rounds while a writer changes a known set of
// pages between rounds, then post-copy; the target ends byte-exact and
// post-copy fetches exactly the pages pre-copy did not leave correct.
func TestRoundsLive(t *testing.T) {
	for _, mode := range modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			const n = 2048
			mem := mapRegion(t, n)
			fillUnique(mem, 0, n*3/4, 1) // the last quarter stays zero
			rg := newRig(t, [][]byte{mem}, rigConfig{mode: mode, streams: 2})
			st := rg.round(t)
			if st.Dirty != n || st.Zero != n/4 || st.Sent != n*3/4 || st.Rejected != 0 {
				t.Fatalf("round 0: %+v", st)
			}
			// Real writes to 100 pages (some of them zero before).
			written := map[uint64]bool{}
			for i := range 100 {
				p := uint64(i*19+7) % n
				mem[int(p)*pageSize+8*i] ^= 0xff
				written[p] = true
			}
			st = rg.round(t)
			if mode == precopy.TrackRehash || mode == precopy.TrackWPAsync || mode == precopy.TrackWPSync {
				if st.Dirty != uint64(len(written)) {
					t.Errorf("round 1 dirty %d, wrote %d pages", st.Dirty, len(written))
				}
			}
			if st.Sent+st.Zero+st.Dup != uint64(len(written)) || st.FakeDirty != 0 {
				t.Errorf("round 1 sent %d zero %d dup %d fake %d; want %d real changes", st.Sent, st.Zero, st.Dup, st.FakeDirty, len(written))
			}
			// Writes after the last round: the switch must drop them.
			for i := range 10 {
				mem[(i*97)%n*pageSize] ^= 1
			}
			fetched := rg.finish(t)
			if fetched[0] != 10 {
				t.Errorf("post-copy fetched %d pages, 10 were written after the last round", fetched[0])
			}
		})
	}
}

// TestFilterSkipsSilentStores: pages written with the value already there
// are dirty for the tracker but skipped by the filter; without the filter
// they are sent.
func TestFilterSkipsSilentStores(t *testing.T) {
	for _, mode := range modes(t) {
		if mode == precopy.TrackRehash {
			continue // rehash never reports a page whose content did not change
		}
		for _, filter := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/filter=%v", mode, filter), func(t *testing.T) {
				const n = 1024
				mem := mapRegion(t, n)
				fillUnique(mem, 0, n, 2)
				rg := newRig(t, [][]byte{mem}, rigConfig{mode: mode, send: precopy.SenderConfig{NoFilter: !filter}})
				rg.round(t)
				silent, real := 0, 0
				for p := 0; p < n; p += 2 {
					off := p * pageSize
					if p%4 == 0 {
						v := binary.LittleEndian.Uint64(mem[off:])
						binary.LittleEndian.PutUint64(mem[off:], v) // silent store
						silent++
					} else {
						mem[off] ^= 0x5a
						real++
					}
				}
				st := rg.round(t)
				if st.Dirty != uint64(silent+real) {
					t.Errorf("dirty %d, wrote %d pages", st.Dirty, silent+real)
				}
				wantFake, wantSent := uint64(silent), uint64(real)
				if !filter {
					wantFake, wantSent = 0, uint64(silent+real)
				}
				if st.FakeDirty != wantFake || st.Sent != wantSent {
					t.Errorf("fake dirty %d sent %d, want %d and %d", st.FakeDirty, st.Sent, wantFake, wantSent)
				}
				rg.finish(t)
			})
		}
	}
}

// TestSwitchSkipsSilentStores: at the switch, pages written after the last
// round with the content the target already holds (silent stores, a change
// undone) are not invalidated; real changes are, and post-copy fetches
// exactly those. Without the filter every page the tracker saw written is
// invalidated.
func TestSwitchSkipsSilentStores(t *testing.T) {
	for _, mode := range modes(t) {
		for _, filter := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/filter=%v", mode, filter), func(t *testing.T) {
				const n = 1024
				mem := mapRegion(t, n)
				fillUnique(mem, 0, n, 3)
				rg := newRig(t, [][]byte{mem}, rigConfig{mode: mode, send: precopy.SenderConfig{NoFilter: !filter}})
				rg.round(t)
				real := map[uint64]bool{}
				silent := 0
				for p := 0; p < n; p += 3 {
					off := p * pageSize
					switch p % 9 {
					case 0: // silent store
						v := binary.LittleEndian.Uint64(mem[off:])
						binary.LittleEndian.PutUint64(mem[off:], v)
						silent++
					case 3: // changed and changed back
						mem[off+64] ^= 0xa5
						mem[off+64] ^= 0xa5
						silent++
					default:
						mem[off+128] ^= 0x3c
						real[uint64(p)] = true
					}
				}
				pending, err := rg.sender.Pending()
				if err != nil {
					t.Fatal(err)
				}
				got := pending[0]
				want := len(real)
				if !filter && mode != precopy.TrackRehash {
					want += silent // the tracker saw every write; rehash sees content only
				}
				if len(got) != want {
					t.Fatalf("%d pages pending, want %d (%d real changes, %d silent)", len(got), want, len(real), silent)
				}
				for i, p := range got {
					if i > 0 && got[i-1] >= p {
						t.Fatalf("pending pages out of order at %d: %d after %d", i, p, got[i-1])
					}
					if filter && !real[p] {
						t.Fatalf("page %d pending but its content is what the target holds", p)
					}
				}
				if filter && mode != precopy.TrackRehash && rg.sender.PendingSkipped() != uint64(silent) {
					t.Errorf("PendingSkipped %d, want %d", rg.sender.PendingSkipped(), silent)
				}
				if err := rg.sender.Switch(pending, nil); err != nil {
					t.Fatal(err)
				}
				if err := <-rg.recvErr; err != nil {
					t.Fatalf("receiver: %v", err)
				}
				if fetched := rg.postcopy(t); fetched[0] != uint64(want) {
					t.Errorf("post-copy fetched %d pages, %d were invalidated", fetched[0], want)
				}
			})
		}
	}
}

// TestProbe: Probe counts the distinct pages written in its window, tells
// the real changes from silent stores by its sample (here every page) and
// sends nothing; round 0 then runs as usual.
func TestProbe(t *testing.T) {
	for _, mode := range modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			const n, written, silent = 512, 37, 40
			mem := mapRegion(t, n)
			fillUnique(mem, 0, n, 4)
			rg := newRig(t, [][]byte{mem}, rigConfig{mode: mode})
			done := make(chan struct{})
			go func() {
				defer close(done)
				time.Sleep(200 * time.Millisecond) // well inside the window
				for i := range written {
					p := (i * 13) % n
					mem[p*pageSize+8+i] ^= 0xff
					mem[p*pageSize] ^= 1 // twice to the same page: one page
				}
				for i := range silent {
					p := (i*13 + 1) % n
					v := binary.LittleEndian.Uint64(mem[p*pageSize:])
					binary.LittleEndian.PutUint64(mem[p*pageSize:], v)
				}
			}()
			got, err := rg.sender.Probe(context.Background(), time.Second)
			<-done
			if err != nil {
				t.Fatal(err)
			}
			seen := uint64(written + silent)
			if mode == precopy.TrackRehash {
				seen = written // rehash sees content changes only
			}
			if got.Written != seen || got.Sampled != seen || got.SampledChanged != written || got.Changed() != written {
				t.Errorf("probe %+v (changed %d): want %d pages written, all sampled, %d changed", got, got.Changed(), seen, written)
			}
			if got.Window < time.Second {
				t.Errorf("probe window %v, asked for 1s", got.Window)
			}
			if st := rg.round(t); st.Dirty != n || st.Sent != n {
				t.Errorf("round 0 after a probe: %+v", st)
			}
			if _, err := rg.sender.Probe(context.Background(), time.Millisecond); err == nil {
				t.Error("probe after round 0 succeeded")
			}
			rg.finish(t)
		})
	}
}

// TestDuplicatesTravelAsReferences: a region of 8 identical copies sends
// one copy's data and references for the rest, about 1/8 of the bytes.
func TestDuplicatesTravelAsReferences(t *testing.T) {
	const n, k = 2048, 8
	mem := mapRegion(t, n)
	fillUnique(mem, 0, n/k, 3)
	for c := 1; c < k; c++ {
		copy(mem[c*n/k*pageSize:(c+1)*n/k*pageSize], mem[:n/k*pageSize])
	}
	rg := newRig(t, [][]byte{mem}, rigConfig{mode: precopy.TrackAuto, streams: 4})
	st := rg.round(t)
	if st.Sent != n/k || st.Dup != n-n/k {
		t.Errorf("sent %d dup %d, want %d and %d", st.Sent, st.Dup, n/k, n-n/k)
	}
	if ratio := float64(st.Bytes) / float64(n*pageSize); ratio > 1.0/k*1.1 {
		t.Errorf("bytes sent %d = %.3f of the region, want about 1/%d", st.Bytes, ratio, k)
	}
	if fetched := rg.finish(t); fetched[0] != 0 {
		t.Errorf("post-copy fetched %d pages after a full pre-copy of an idle region", fetched[0])
	}
}

// TestGangAndBase: two regions share content (gang migration: the second
// region's copies travel as references to the first), and the target's base
// snapshot holds a third of the content (references to the base).
func TestGangAndBase(t *testing.T) {
	const n = 900
	a, b := mapRegion(t, n), mapRegion(t, n)
	fillUnique(a, 0, n, 4)
	copy(b, a) // b is a copy of a, except its last third
	fillUnique(b, 2*n/3, n, 5)
	base := make([]byte, n/3*pageSize)
	copy(base, b[2*n/3*pageSize:]) // the base holds b's own third
	rg := newRig(t, [][]byte{a, b}, rigConfig{mode: precopy.TrackAuto, recv: precopy.ReceiverConfig{Base: base}})
	if got := rg.sender.BaseKnown(); got != n/3 {
		t.Fatalf("sender knows %d base pages, target has %d", got, n/3)
	}
	st := rg.round(t)
	if st.Sent != n || st.Dup != 2*n/3 || st.Known != n/3 {
		t.Errorf("sent %d dup %d known %d, want %d, %d, %d", st.Sent, st.Dup, st.Known, n, 2*n/3, n/3)
	}
	rg.finish(t)
}

// TestWriteOrder: wp-sync records the order of the first writes of a round.
func TestWriteOrder(t *testing.T) {
	if !hasMode(precopy.TrackWPSync) {
		t.Skip("wp-sync tracking unavailable on this kernel (needs userfaultfd write-protect)")
	}
	const n = 512
	mem := mapRegion(t, n)
	fillUnique(mem, 0, n, 6)
	rg := newRig(t, [][]byte{mem}, rigConfig{mode: precopy.TrackWPSync, streams: 1})
	rg.round(t)
	order := []uint64{300, 5, 77, 6, 400, 1}
	for _, p := range order {
		mem[int(p)*pageSize] ^= 1
		mem[int(p)*pageSize+1] ^= 1 // a second write to the same page is not a first write
	}
	rg.round(t)
	got := rg.sender.WriteOrder(0)
	if fmt.Sprint(got) != fmt.Sprint(order) {
		t.Errorf("write order %v, wrote %v", got, order)
	}
	rg.finish(t)
}

func hasMode(m precopy.TrackMode) bool {
	for _, x := range precopy.AvailableModes() {
		if x == m {
			return true
		}
	}
	return false
}

// TestConcurrentWriters: pre-copy rounds while writers change pages as fast
// as they can; whatever the interleaving, the target ends byte-exact after
// the switch, and torn pages (if any) are rejected, never installed.
func TestConcurrentWriters(t *testing.T) {
	for _, mode := range modes(t) {
		for _, toggle := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/toggle=%v", mode, toggle), func(t *testing.T) {
				testConcurrentWriters(t, mode, toggle)
			})
		}
	}
}

func testConcurrentWriters(t *testing.T, mode precopy.TrackMode, toggle bool) {
	{
		{
			const n = 4096
			mem := mapRegion(t, n)
			fillUnique(mem, 0, n, 7)
			rg := newRig(t, [][]byte{mem}, rigConfig{mode: mode, streams: 2})
			faulthandler.ReserveProcs(2)
			stop := make(chan struct{})
			done := make(chan struct{})
			writers := 2
			for w := range writers {
				go func() {
					defer func() { done <- struct{}{} }()
					r := rand.New(rand.NewPCG(uint64(w), 9))
					for i := 0; ; i++ {
						if i%256 == 0 {
							select {
							case <-stop:
								return
							default:
							}
							runtime.Gosched()
						}
						p := r.IntN(n/writers)*writers + w
						if toggle {
							// Two contents per page: a page often goes back to
							// what it held at the last round's scan.
							binary.LittleEndian.PutUint64(mem[p*pageSize:], uint64(r.IntN(2)))
							continue
						}
						off := p*pageSize + r.IntN(pageSize/8)*8
						binary.LittleEndian.PutUint64(mem[off:], r.Uint64())
					}
				}()
			}
			stopped := false
			stopWriters := func() {
				if !stopped {
					stopped = true
					close(stop)
					for range writers {
						<-done
					}
				}
			}
			t.Cleanup(stopWriters) // before the region is unmapped
			var rejected uint64
			for range 4 {
				st := rg.round(t)
				rejected += st.Rejected
			}
			stopWriters()
			t.Logf("%d pages rejected as torn over 4 rounds", rejected)
			rg.finish(t)
		}
	}
}
