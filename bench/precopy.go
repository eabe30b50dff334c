package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/pageserver"
	"github.com/pagewarp/pagewarp/precopy"
)

// PrecopyConfig sets up the pre-copy benchmark: for each mutator, filter
// setting and stream count, a live region is pre-copied over loopback while
// the mutator writes to it, then switched to post-copy and checked.
type PrecopyConfig struct {
	Workloads []string // mutator names (default: all)
	Size      int64    // region bytes (default 256 MiB)
	Threads   int      // mutator threads (default 2)
	Streams   []int    // pre-copy stream counts (default 1, 2, 4)
	Filters   []bool   // hash filter settings (default on and off)
	Rounds    int      // rounds after round 0 (default 6)
	// Interval is the time from one round's start to the next's (default
	// 100 ms), so that rounds see the same amount of writing whatever the
	// filter makes them cost. A round longer than Interval is followed at
	// once by the next.
	Interval time.Duration
	// Rate paces every mutator but runaway: steps per second per thread
	// (default 20000). Runaway writes as fast as it can.
	Rate  float64
	Track precopy.TrackMode
	Hash  precopy.HashAlg
	Seed  int64
	Log   io.Writer // progress lines (nil: none)
}

// PrecopyResult is one run: one mutator, filter setting and stream count.
type PrecopyResult struct {
	Workload string `json:"workload"`
	Filter   bool   `json:"filter"`
	Streams  int    `json:"streams"`
	Rounds   int    `json:"rounds"` // rounds run, round 0 included
	// Totals over every round.
	PagesDirty     uint64 `json:"pages_dirty"`
	PagesFakeDirty uint64 `json:"pages_fake_dirty"`
	PagesZero      uint64 `json:"pages_zero"`
	PagesDup       uint64 `json:"pages_dup"`
	PagesKnown     uint64 `json:"pages_known"`
	PagesSent      uint64 `json:"pages_sent"`
	PagesRejected  uint64 `json:"pages_rejected"`
	BytesSent      uint64 `json:"bytes_sent"`
	// Round 0 alone: bytes on the wire, seconds, and GB/s (wire bytes per
	// second of round time, the round's end being the target's
	// acknowledgement).
	Round0Bytes   uint64  `json:"round0_bytes"`
	Round0Seconds float64 `json:"round0_seconds"`
	Gbps          float64 `json:"gbps"`
	// Round 0 over the region: pages looked at (sent, zero, duplicate,
	// known) times the page size per second, which counts what the markers
	// and references spared the wire.
	EffectiveGbps float64 `json:"effective_gbps"`
	// Later rounds (1..): pages dirty and bytes sent.
	LaterDirty uint64 `json:"later_pages_dirty"`
	LaterBytes uint64 `json:"later_bytes_sent"`
	// Steady rounds (2..): bytes sent per dirty page, what the filter
	// comparison uses (it does not depend on how many pages the workload
	// happened to dirty between rounds). Round 1 is left out: besides the
	// workload's steady writes it also reports the writes that landed
	// during round 0 before their page was hashed, which the filter skips
	// too, so its fake-dirty share is higher than the workload's.
	SteadyDirty         uint64  `json:"steady_pages_dirty"`
	SteadyFakeDirty     uint64  `json:"steady_pages_fake_dirty"`
	SteadyBytesPerDirty float64 `json:"steady_bytes_per_dirty"`
	// TrackHashShare is tracking plus hashing time over round time, all
	// rounds (hashing summed over workers).
	TrackHashShare float64 `json:"track_hash_share"`
	// PostcopyPages is what post-copy fetched after the switch: the pages
	// written since the last round (and nothing pre-copy had delivered).
	PendingPages  uint64 `json:"pending_pages"`
	PostcopyPages uint64 `json:"postcopy_pages"`
	// MissingAfter is what the target lacked after the drop: post-copy
	// must fetch exactly these.
	MissingAfter uint64 `json:"missing_after_switch"`
	// FirstMismatch is the first page whose content differs between the
	// target and the source after the migration (-1: none).
	FirstMismatch int64                `json:"first_mismatch"`
	ResultOK      bool                 `json:"result_ok"`
	RoundStats    []precopy.RoundStats `json:"round_stats"`
	MemcpyGbps    float64              `json:"memcpy_gbps"`
}

// PrecopySetup records the run's parameters.
type PrecopySetup struct {
	Pages      uint64  `json:"pages"`
	PageSize   int     `json:"page_size"`
	Threads    int     `json:"threads"`
	Interval   string  `json:"interval"`
	Rate       float64 `json:"rate"`
	Track      string  `json:"track"`
	Hash       string  `json:"hash"`
	Link       string  `json:"link"`
	CPUs       int     `json:"cpus"`
	MemcpyGbps float64 `json:"memcpy_gbps"`
}

// PrecopyReport is the benchmark's output.
type PrecopyReport struct {
	Results []PrecopyResult `json:"results"`
	Setup   PrecopySetup    `json:"setup"`
}

// MemcpyGbps measures memcpy throughput on this machine now: the best of
// five copies of a 64 MiB buffer, in GB/s.
func MemcpyGbps() float64 {
	const n = 64 << 20
	src, dst := make([]byte, n), make([]byte, n)
	for i := range src {
		src[i] = byte(i)
	}
	copy(dst, src) // fault both in
	best := time.Duration(1 << 62)
	for range 5 {
		t := time.Now()
		copy(dst, src)
		best = min(best, time.Since(t))
	}
	return float64(n) / best.Seconds() / 1e9
}

// Precopy runs the benchmark.
func Precopy(ctx context.Context, cfg PrecopyConfig) (*PrecopyReport, error) {
	ps := os.Getpagesize()
	if cfg.Workloads == nil {
		cfg.Workloads = MutatorNames
	}
	for _, w := range cfg.Workloads {
		if !slices.Contains(MutatorNames, w) {
			return nil, fmt.Errorf("%w %q (have %v)", ErrUnknownMutator, w, MutatorNames)
		}
	}
	if cfg.Size == 0 {
		cfg.Size = 256 << 20
	}
	if cfg.Size < int64(ps) || cfg.Size%int64(ps) != 0 {
		return nil, fmt.Errorf("size %d is not a positive multiple of the page size %d", cfg.Size, ps)
	}
	if cfg.Threads <= 0 {
		cfg.Threads = 2
	}
	if cfg.Streams == nil {
		cfg.Streams = []int{1, 2, 4}
	}
	for _, n := range cfg.Streams {
		if n < 1 || n > 16 {
			return nil, fmt.Errorf("%d streams: want 1 to 16", n)
		}
	}
	if cfg.Filters == nil {
		cfg.Filters = []bool{true, false}
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = 6
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.Rate == 0 {
		cfg.Rate = 20000
	}
	if cfg.Hash == 0 {
		cfg.Hash = precopy.HashXXH3
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	faulthandler.ReserveProcs(cfg.Threads + 2)
	rep := &PrecopyReport{Setup: PrecopySetup{
		Pages: uint64(cfg.Size) / uint64(ps), PageSize: ps, Threads: cfg.Threads, Interval: cfg.Interval.String(),
		Rate: cfg.Rate, Hash: cfg.Hash.String(), Link: "loopback TCP, source and target in one process", CPUs: runtime.NumCPU(),
		MemcpyGbps: MemcpyGbps(),
	}}
	for _, w := range cfg.Workloads {
		for _, filter := range cfg.Filters {
			for _, streams := range cfg.Streams {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				r, err := precopyRun(ctx, cfg, w, filter, streams)
				if err != nil {
					return nil, fmt.Errorf("%s, filter %v, %d streams: %w", w, filter, streams, err)
				}
				r.MemcpyGbps = rep.Setup.MemcpyGbps
				if rep.Setup.Track == "" && len(r.RoundStats) > 0 {
					rep.Setup.Track = string(r.track)
				}
				fmt.Fprintf(cfg.Log, "precopy %-9s filter=%-5v streams=%d: round 0 %.2f GB/s, later %d dirty %d fake, %s sent, ok %v\n",
					w, filter, streams, r.Gbps, r.LaterDirty, r.PagesFakeDirty, FormatSize(int64(r.BytesSent)), r.ResultOK)
				rep.Results = append(rep.Results, r.PrecopyResult)
			}
		}
	}
	return rep, nil
}

type precopyOutcome struct {
	PrecopyResult
	track precopy.TrackMode
}

// precopyRun migrates one live region: rounds while the mutator writes,
// then the switch (pause, drop the pages written since the last round on
// the target, post-copy) and a byte-for-byte check.
func precopyRun(ctx context.Context, cfg PrecopyConfig, name string, filter bool, streams int) (out precopyOutcome, err error) {
	ps := os.Getpagesize()
	pages := int(cfg.Size / int64(ps))
	rate := cfg.Rate
	if name == "runaway" {
		rate = 0
	}
	m, err := NewMutator(MutatorConfig{Name: name, Pages: pages, Threads: cfg.Threads, Seed: cfg.Seed, Rate: rate})
	if err != nil {
		return out, err
	}
	mem, err := unix.Mmap(-1, 0, pages*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return out, err
	}
	defer unix.Munmap(mem)
	m.Init(mem)

	tr, err := precopy.NewTracker(cfg.Track, mem, ps)
	if err != nil {
		return out, err
	}
	defer tr.Close()
	out.track = tr.Mode()
	sender, err := precopy.NewSender([]precopy.Region{{ID: 0, Mem: mem, Tracker: tr}},
		precopy.SenderConfig{PageSize: ps, Hash: cfg.Hash, NoFilter: !filter})
	if err != nil {
		return out, err
	}
	defer sender.Close()
	src, err := pageserver.NewRegionSource(name, mem, ps)
	if err != nil {
		return out, err
	}
	srv := pageserver.New(src, pageserver.Options{Precopy: sender})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return out, err
	}
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()

	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	h, err := faulthandler.Dial(dctx, "tcp", addr, faulthandler.Options{})
	if err != nil {
		return out, err
	}
	defer h.Close()
	recv, err := precopy.Dial(dctx, "tcp", addr, []*faulthandler.Handler{h}, precopy.ReceiverConfig{Streams: streams, Hash: cfg.Hash})
	if err != nil {
		return out, err
	}
	recvErr := make(chan error, 1)
	rctx, stopRecv := context.WithCancel(ctx)
	recvDone := false
	defer func() {
		if !recvDone {
			stopRecv()
			<-recvErr
		}
	}()
	go func() { recvErr <- recv.Run(rctx) }()
	if err := sender.WaitReady(dctx); err != nil {
		return out, err
	}

	m.Run(mem, nil)
	paused := false
	defer func() {
		if !paused {
			m.Pause()
		}
	}()
	var last time.Time
	for i := 0; i <= cfg.Rounds; i++ {
		if i > 0 {
			if d := cfg.Interval - time.Since(last); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return out, ctx.Err()
				}
			}
		}
		last = time.Now()
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Minute)
		st, err := sender.Round(rctx)
		rcancel()
		if err != nil {
			return out, err
		}
		out.RoundStats = append(out.RoundStats, st)
	}
	// The switch: stop the workload at a safe point, take the pages written
	// since the last round, end pre-copy, drop them on the target.
	state := m.Pause()
	paused = true
	pending, err := sender.Pending()
	if err != nil {
		return out, err
	}
	stateJSON, err := json.Marshal(state)
	if err != nil {
		return out, err
	}
	if err := sender.Switch(pending, stateJSON); err != nil {
		return out, err
	}
	// Finish returned once the target closed every stream after its Bye.
	recvDone = true
	if err := <-recvErr; err != nil {
		return out, fmt.Errorf("receiver: %w", err)
	}
	stopRecv()
	got, _, _, ok := recv.Handover()
	var resumed MutatorState
	if !ok || json.Unmarshal(got, &resumed) != nil {
		return out, fmt.Errorf("the target got no usable workload state at the switch")
	}
	state = resumed
	missing := h.Pages() - h.Resident()
	h.Start()
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
	err = h.Wait(wctx)
	wcancel()
	if err != nil {
		return out, fmt.Errorf("post-copy: %w", err)
	}
	hs := h.Stats()
	r := &out.PrecopyResult
	r.Workload, r.Filter, r.Streams, r.Rounds = name, filter, streams, len(out.RoundStats)
	r.PendingPages = uint64(len(pending[0]))
	r.PostcopyPages = hs.DemandPages + hs.BackgroundPages + hs.PushedPages + hs.ZeroPages
	r.MissingAfter = missing
	r.FirstMismatch = -1
	if !bytes.Equal(h.Memory(), mem) {
		for p := 0; p < pages; p++ {
			if !bytes.Equal(h.Memory()[p*ps:(p+1)*ps], mem[p*ps:(p+1)*ps]) {
				r.FirstMismatch = int64(p)
				break
			}
		}
	}
	r.ResultOK = r.FirstMismatch < 0 && r.PostcopyPages == missing && Checksum(h.Memory(), state) == Checksum(mem, state)
	var track, dur time.Duration
	var steadyBytes uint64
	for i, st := range out.RoundStats {
		r.PagesDirty += st.Dirty
		r.PagesFakeDirty += st.FakeDirty
		r.PagesZero += st.Zero
		r.PagesDup += st.Dup
		r.PagesKnown += st.Known
		r.PagesSent += st.Sent
		r.PagesRejected += st.Rejected
		r.BytesSent += st.Bytes
		track += st.TrackTime + st.HashTime
		dur += st.Duration
		switch {
		case i == 0:
			r.Round0Bytes = st.Bytes
			r.Round0Seconds = st.Duration.Seconds()
			r.Gbps = st.WireGbps()
			if st.Duration > 0 {
				r.EffectiveGbps = float64((st.Sent+st.Zero+st.Dup+st.Known)*uint64(ps)) / st.Duration.Seconds() / 1e9
			}
		default:
			r.LaterDirty += st.Dirty
			r.LaterBytes += st.Bytes
		}
		if i >= 2 {
			r.SteadyDirty += st.Dirty
			r.SteadyFakeDirty += st.FakeDirty
			steadyBytes += st.Bytes
		}
	}
	if r.SteadyDirty > 0 {
		r.SteadyBytesPerDirty = float64(steadyBytes) / float64(r.SteadyDirty)
	}
	if dur > 0 {
		r.TrackHashShare = float64(track) / float64(dur)
	}
	return out, nil
}
