package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/pagewarp/pagewarp/qemu"
	"github.com/pagewarp/pagewarp/qemu/guest"
	"github.com/pagewarp/pagewarp/qemu/launch"
)

// The modes of the QEMU benchmark: QEMU's own post-copy, and the same migration through the
// prefetching proxy with each predictor.
const (
	QEMUPlain      = "plain"
	QEMUProxyNone  = "proxy-none"
	QEMUProxyNextN = "proxy-nextn"
	QEMUProxyPPM   = "proxy-ppm"
)

// QEMUDefaultBudget is the benchmark's push budget: injected pages per real request, for every
// predictor (the proxy's own default, qemu.DefaultBudget).
const QEMUDefaultBudget = qemu.DefaultBudget

// QEMUDefaultThink is the benchmark guest's default work between page visits: about 2,000
// visits/s under TCG here, half of what the capped post-copy stream delivers (4,096 pages/s at
// 16 MiB/s). A guest that computes on its pages instead of rewriting its memory flat out: it
// waits during post-copy only when its next page is neither sent nor requested yet, so page
// order, not bandwidth alone, decides its waiting. Run flat out (Think -1) every pattern waits
// on the stream from the first page to the last, whatever is predicted.
const QEMUDefaultThink = 200000

// QEMUDefaultLink is the benchmark's default network: 1 Gbit/s, over which the default 256 MiB
// region takes about 2.2 s to cross. Its tc queue holds 5 ms of traffic (bench.SetupLink); at
// 100 Mbit/s the same four 128 KiB bursts are 42 ms, which every urgent page waits behind.
var QEMUDefaultLink = LinkSpec{Kind: LinkVeth, Rate: 1e9}

// QEMUNoCap as PostcopyBandwidth leaves post-copy uncapped by QEMU.
const QEMUNoCap = ^uint64(0)

// QEMUModes lists the modes in the order the benchmark runs them.
var QEMUModes = []string{QEMUPlain, QEMUProxyNone, QEMUProxyNextN, QEMUProxyPPM}

// QEMULearnable are the guest patterns whose page order a predictor can learn from the faults
// of one migration (constant deltas); the pointer chase visits pages in a pseudo-random cycle
// that one post-copy phase shows only once, so it is reported but not held to the targets.
var QEMULearnable = []string{"sequential", "strided", "hotset", "reverse"}

// QEMUConfig configures QEMU: every cell (pattern x mode) is one post-copy migration of a fresh
// pair of QEMU processes booting the pattern's guest image, with the same caps and timing.
type QEMUConfig struct {
	// Patterns are guest pattern names (default: all of guest.Patterns).
	Patterns []string
	// Modes are QEMUModes names (default: all).
	Modes []string
	// Budget is the proxy's injected pages per real request, the same for every predictor
	// (default QEMUDefaultBudget).
	Budget int
	// Repeat runs every cell this many times (default 1); the result holds the medians and every
	// run.
	Repeat int
	// MemMiB is the VM's RAM (default 320); RegionPages the guest's working region in 4 KiB
	// pages (default 65536: 256 MiB), which must fit in RAM above 1 MiB.
	MemMiB      int
	RegionPages uint32
	// Link is the network between the two QEMUs (default QEMUDefaultLink): a veth link puts the
	// source (and the proxy) and the destination in two network namespaces joined by a veth
	// pair shaped by tc, so the network, not QEMU, limits post-copy, and urgent pages queue
	// behind the background stream as they would on a real link. A loopback link leaves both on
	// 127.0.0.1, and post-copy's bandwidth is then QEMU's max-postcopy-bandwidth. When the veth
	// link cannot be made (not root, no iproute2) the benchmark falls back to loopback and says
	// so in Setup.LinkNote.
	Link LinkSpec
	// MaxBandwidth caps pre-copy (default 32 MiB/s) and PostcopyBandwidth post-copy's background
	// transfer (default: none on a veth link, 16 MiB/s on loopback; QEMUNoCap for none), in
	// bytes/s; PostcopyAfter is the pre-copy time before migrate-start-postcopy (default 500 ms).
	MaxBandwidth, PostcopyBandwidth uint64
	PostcopyAfter                   time.Duration
	// CPUs is the guest's vCPUs (guest.Config.CPUs: 1 or 2, default 1), each running the
	// pattern over its half of the region.
	CPUs int
	// Think is the guest's delay-loop iterations between page visits (guest.Config.Think; default
	// QEMUDefaultThink, -1 for none: the pattern flat out).
	Think int
	// Preempt enables postcopy-preempt in every migration.
	Preempt bool
	// Settle is how long the guest runs on the destination after completion before its memory
	// is verified (default 300 ms).
	Settle time.Duration
	// Reliability adds that many proxied migrations (cycling over the proxy modes of Modes, or
	// all three if Modes has none, the patterns, and postcopy-preempt off and on) and counts how
	// many completed, paused or failed.
	Reliability int
	// RunTimeout bounds each migration, start to verification (default 3 min).
	RunTimeout time.Duration
	// Log receives one line per migration (nil: none).
	Log io.Writer

	link *Link // set up by QEMU
}

// QEMURun is one migration of the QEMU benchmark.
type QEMURun struct {
	Pattern string `json:"pattern"`
	Mode    string `json:"mode"`
	Run     int    `json:"run"`
	Preempt bool   `json:"preempt,omitempty"`
	// Status is "completed" when both sides completed, else the source's last status
	// ("postcopy-paused", "failed", ...) or "error".
	Status   string   `json:"status"`
	Statuses []string `json:"statuses,omitempty"`
	Error    string   `json:"error,omitempty"`
	// DemandRequests are the destination's own page requests: counted by the proxy, or for
	// plain the source's ram.postcopy-requests (every request is the destination's there).
	DemandRequests int64 `json:"demand_requests"`
	// SourceRequests is the source's ram.postcopy-requests: demand plus injected requests.
	SourceRequests        int64 `json:"source_requests"`
	Injected              int64 `json:"injected"`
	InjectedThenRequested int64 `json:"injected_then_requested"`
	// InjectionDisabled is the proxy's reason to stop injecting, if it did.
	InjectionDisabled string `json:"injection_disabled,omitempty"`
	// ForwardMeanUS is the proxy's mean forward latency per request (qemu.ForwardLatency: from the
	// request's arrival in the proxy's socket to the end of the forwarding write), in µs.
	ForwardMeanUS float64 `json:"forward_mean_us,omitempty"`
	// BlocktimeMS is the destination's postcopy-blocktime (ms, all vCPUs blocked at once);
	// VCPUBlocktimeMS per vCPU.
	BlocktimeMS     float64   `json:"blocktime_ms"`
	VCPUBlocktimeMS []float64 `json:"vcpu_blocktime_ms,omitempty"`
	// PostcopySeconds runs from migrate-start-postcopy to the source's completion; TotalSeconds
	// from migrate to the destination's completion.
	PostcopySeconds float64 `json:"postcopy_seconds"`
	TotalSeconds    float64 `json:"total_seconds"`
	// Bytes the source sent in each phase, and in all (ram.transferred).
	PrecopyBytes     uint64 `json:"precopy_bytes"`
	PostcopyBytes    uint64 `json:"postcopy_bytes"`
	TransferredBytes uint64 `json:"transferred_bytes"`
	// Guest passes completed: on the source just before migrate; on the source once it
	// completed (its guest stopped at the switch, so this is where the destination resumed);
	// on the destination as soon as it completed, and after Settle (when memory is verified).
	// PassesAtCompletion - PassesAtSwitch is how far the guest got during post-copy: a measure
	// of its blocked time independent of QEMU's postcopy-blocktime.
	PassesBefore       uint32 `json:"passes_before"`
	PassesAtSwitch     uint32 `json:"passes_at_switch"`
	PassesAtCompletion uint32 `json:"passes_at_completion"`
	PassesAfter        uint32 `json:"passes_after"`
	// TouchRate is the guest's page visits per second on the source just before the migration
	// (over QEMURateWindow); TouchesPostcopy its visits on the destination during post-copy (the
	// destination's counter at completion minus the source's, stopped at the switch).
	// GuestWaitMS = post-copy time - TouchesPostcopy / TouchRate: the time the guest lost
	// during post-copy by its own count, whichever way it waited (a cross-check of QEMU's
	// blocktime, which counts only the faults it matches to a placement).
	TouchRate       float64 `json:"touch_rate"`
	TouchesPostcopy uint32  `json:"touches_postcopy"`
	GuestWaitMS     float64 `json:"guest_wait_ms"`
	// MemoryVerified: the destination's guest memory satisfies the pattern's invariant and the
	// guest kept running there (guest.Check, guest.CheckTouches).
	MemoryVerified bool `json:"memory_verified"`
}

// QEMURateWindow is how long the benchmark watches the source's guest before each migration to
// measure its visit rate.
const QEMURateWindow = 300 * time.Millisecond

// QEMUResult is one cell of the QEMU benchmark: the medians over its completed runs, and
// every run.
type QEMUResult struct {
	Pattern string `json:"pattern"`
	Mode    string `json:"mode"`
	// Status is "completed" when every run completed, else the first other status.
	Status                string  `json:"status"`
	Completed             int     `json:"runs_completed"`
	DemandRequests        float64 `json:"demand_requests"`
	SourceRequests        float64 `json:"source_requests"`
	Injected              float64 `json:"injected"`
	InjectedThenRequested float64 `json:"injected_then_requested"`
	BlocktimeMS           float64 `json:"blocktime_ms"`
	PostcopySeconds       float64 `json:"postcopy_seconds"`
	TotalSeconds          float64 `json:"total_seconds"`
	PostcopyBytes         float64 `json:"postcopy_bytes"`
	TransferredBytes      float64 `json:"transferred_bytes"`
	// PassesDuring is the median of the guest passes completed during the migration
	// (PassesAtCompletion - PassesBefore), PassesPostcopy of those completed on the destination
	// during post-copy (PassesAtCompletion - PassesAtSwitch).
	PassesDuring   float64 `json:"passes_during_migration"`
	PassesPostcopy float64 `json:"passes_during_postcopy"`
	// TouchRate, TouchesPostcopy and GuestWaitMS are the medians of the runs' (QEMURun).
	TouchRate       float64 `json:"touch_rate"`
	TouchesPostcopy float64 `json:"touches_postcopy"`
	GuestWaitMS     float64 `json:"guest_wait_ms"`
	// MemoryVerified: every run's memory was verified.
	MemoryVerified bool      `json:"memory_verified"`
	Runs           []QEMURun `json:"runs"`
}

// QEMUSetup records what every migration shared.
type QEMUSetup struct {
	QEMU                 string  `json:"qemu"`
	Accel                string  `json:"accel"`
	CPUs                 int     `json:"cpus"`
	Kernel               string  `json:"kernel"`
	MemMiB               int     `json:"mem_mib"`
	RegionPages          uint32  `json:"region_pages"`
	Link                 string  `json:"link"`
	LinkNote             string  `json:"link_note,omitempty"`
	MaxBandwidth         uint64  `json:"max_bandwidth"`
	PostcopyBandwidth    uint64  `json:"max_postcopy_bandwidth"`
	PostcopyAfterSeconds float64 `json:"postcopy_after_seconds"`
	Preempt              bool    `json:"preempt"`
	Think                int     `json:"think"`
	GuestCPUs            int     `json:"guest_cpus"`
	Budget               int     `json:"budget"`
	Repeat               int     `json:"repeat"`
	SettleSeconds        float64 `json:"settle_seconds"`
}

// QEMUTarget is one of issue 7's targets checked on one learnable pattern.
type QEMUTarget struct {
	Pattern string  `json:"pattern"`
	Target  string  `json:"target"`
	Value   float64 `json:"value"`
	Limit   float64 `json:"limit"`
	Met     bool    `json:"met"`
	// Applies is false when plain's guest waited less than QEMUWaitFloor of its post-copy:
	// QEMU's own scan after each fault then brought nearly everything in time and there is
	// nothing for a predictor to remove (Why says how little plain waited); Met is false then.
	Applies bool   `json:"applies"`
	Why     string `json:"why,omitempty"`
}

// QEMUWaitFloor is the share of post-copy that plain's guest must wait (guest wait / post-copy
// time) for issue 7's targets to apply to a pattern.
const QEMUWaitFloor = 0.10

// QEMUReliability counts the outcome of the reliability migrations.
type QEMUReliability struct {
	Migrations int       `json:"migrations"`
	Completed  int       `json:"completed"`
	Paused     int       `json:"paused"`
	Failed     int       `json:"failed"`
	Verified   int       `json:"memory_verified"`
	Disabled   int       `json:"injection_disabled"`
	Runs       []QEMURun `json:"runs"`
}

// QEMUReport is what `pagewarp bench qemu --json` prints.
type QEMUReport struct {
	Results     []QEMUResult     `json:"results"`
	Targets     []QEMUTarget     `json:"targets,omitempty"`
	Reliability *QEMUReliability `json:"reliability,omitempty"`
	Setup       QEMUSetup        `json:"setup"`
}

// QEMU runs the QEMU benchmark: for each repetition, pattern and mode, a fresh source and
// destination QEMU booting that pattern's guest image migrate with post-copy (directly, or
// through a qemu.Proxy with the mode's predictor), and the destination's memory is verified.
// Cells that fail are reported with their status, not dropped; the error is for setup problems
// (QEMU missing, bad configuration, ctx ended).
func QEMU(ctx context.Context, cfg QEMUConfig) (*QEMUReport, error) {
	cfg, patterns, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	bin, err := launch.Binary()
	if err != nil {
		return nil, fmt.Errorf("bench qemu: qemu-system-x86_64 not found (make deps-qemu installs it): %w", err)
	}
	if err := launch.PostcopyUsable(); err != nil {
		return nil, fmt.Errorf("bench qemu: %w", err)
	}
	var linkNote string
	link, err := SetupLink(ctx, cfg.Link, false)
	if err != nil {
		if ctx.Err() != nil || cfg.Link.Kind != LinkVeth {
			return nil, fmt.Errorf("bench qemu: %w", err)
		}
		linkNote = fmt.Sprintf("veth link unavailable (%v): loopback, post-copy capped by QEMU instead", err)
		fmt.Fprintf(cfg.Log, "bench qemu: %s\n", linkNote)
		link, _ = SetupLink(ctx, LinkSpec{Kind: LinkLoopback}, false)
	}
	defer link.Close()
	cfg.link = link
	switch {
	case cfg.PostcopyBandwidth == QEMUNoCap:
		cfg.PostcopyBandwidth = 0
	case cfg.PostcopyBandwidth == 0 && link.Spec().Kind == LinkLoopback:
		cfg.PostcopyBandwidth = 16 << 20
	}
	rep := &QEMUReport{Setup: QEMUSetup{
		Link: link.Describe(), LinkNote: linkNote,
		QEMU: qemuVersion(ctx, bin), Accel: "tcg", CPUs: runtime.NumCPU(), Kernel: kernelRelease(),
		MemMiB: cfg.MemMiB, RegionPages: cfg.RegionPages, MaxBandwidth: cfg.MaxBandwidth,
		PostcopyBandwidth: cfg.PostcopyBandwidth, PostcopyAfterSeconds: cfg.PostcopyAfter.Seconds(),
		Preempt: cfg.Preempt, Think: cfg.Think, GuestCPUs: max(cfg.CPUs, 1), Budget: cfg.Budget, Repeat: cfg.Repeat, SettleSeconds: cfg.Settle.Seconds(),
	}}
	cells := map[[2]string]*QEMUResult{}
	for _, p := range patterns {
		for _, m := range cfg.Modes {
			rep.Results = append(rep.Results, QEMUResult{Pattern: p.String(), Mode: m})
		}
	}
	for i := range rep.Results {
		cells[[2]string{rep.Results[i].Pattern, rep.Results[i].Mode}] = &rep.Results[i]
	}
	// Repetitions outermost, modes innermost: drift of the machine's load spreads over all
	// modes instead of favouring one.
	for r := 0; r < cfg.Repeat; r++ {
		for _, p := range patterns {
			for _, m := range cfg.Modes {
				run, err := qemuRun(ctx, cfg, p, m, cfg.Preempt, r)
				if err != nil {
					return nil, err
				}
				c := cells[[2]string{p.String(), m}]
				c.Runs = append(c.Runs, run)
			}
		}
	}
	for i := range rep.Results {
		rep.Results[i].summarise()
	}
	rep.Targets = qemuTargets(rep.Results)
	if cfg.Reliability > 0 {
		rel, err := qemuReliability(ctx, cfg, patterns)
		if err != nil {
			return nil, err
		}
		rep.Reliability = rel
	}
	return rep, nil
}

func (cfg QEMUConfig) withDefaults() (QEMUConfig, []guest.Pattern, error) {
	if cfg.Budget == 0 {
		cfg.Budget = QEMUDefaultBudget
	}
	if cfg.Budget < 1 || cfg.Budget > 1024 {
		return cfg, nil, fmt.Errorf("bench qemu: budget %d not in 1..1024", cfg.Budget)
	}
	if cfg.Repeat == 0 {
		cfg.Repeat = 1
	}
	switch {
	case cfg.Think == 0:
		cfg.Think = QEMUDefaultThink
	case cfg.Think < -1 || cfg.Think > 1<<30:
		return cfg, nil, fmt.Errorf("bench qemu: think %d not in -1 (none) or 1..2^30", cfg.Think)
	}
	if cfg.Repeat < 1 || cfg.Reliability < 0 {
		return cfg, nil, fmt.Errorf("bench qemu: repeat %d / reliability %d: want at least 1 / 0", cfg.Repeat, cfg.Reliability)
	}
	if cfg.MemMiB == 0 {
		cfg.MemMiB = 320
	}
	if cfg.RegionPages == 0 {
		cfg.RegionPages = 65536
	}
	gc := cfg.guestConfig()
	if _, err := guest.Build(guest.Sequential, gc); err != nil {
		return cfg, nil, fmt.Errorf("bench qemu: %w", err)
	}
	if end := gc.RegionEnd(); end > uint64(cfg.MemMiB)<<20 {
		return cfg, nil, fmt.Errorf("bench qemu: a region of %d pages ends at %d MiB, beyond the VM's %d MiB", cfg.RegionPages, end>>20, cfg.MemMiB)
	}
	if cfg.MaxBandwidth == 0 {
		cfg.MaxBandwidth = 32 << 20
	}
	if cfg.Link.Kind == "" {
		cfg.Link = QEMUDefaultLink
	}
	if cfg.Link.Kind == LinkShaped {
		return cfg, nil, errors.New("bench qemu: the in-process shaped link cannot carry QEMU's connections: use veth or loopback")
	}
	if cfg.PostcopyAfter == 0 {
		cfg.PostcopyAfter = 500 * time.Millisecond
	}
	if cfg.Settle == 0 {
		cfg.Settle = 300 * time.Millisecond
	}
	if cfg.RunTimeout == 0 {
		cfg.RunTimeout = 3 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if len(cfg.Modes) == 0 {
		cfg.Modes = QEMUModes
	}
	for _, m := range cfg.Modes {
		if !slices.Contains(QEMUModes, m) {
			return cfg, nil, fmt.Errorf("bench qemu: unknown mode %q (valid: %s)", m, strings.Join(QEMUModes, ", "))
		}
	}
	var patterns []guest.Pattern
	if len(cfg.Patterns) == 0 {
		patterns = guest.Patterns
	}
	for _, name := range cfg.Patterns {
		p, err := guest.ParsePattern(name)
		if err != nil {
			return cfg, nil, fmt.Errorf("bench qemu: %w", err)
		}
		patterns = append(patterns, p)
	}
	return cfg, patterns, nil
}

// guestConfig is the guest of every migration.
func (cfg QEMUConfig) guestConfig() guest.Config {
	return guest.Config{Pages: cfg.RegionPages, Think: uint32(max(cfg.Think, 0)), CPUs: uint32(max(cfg.CPUs, 1))}
}

// qemuPredictor is the proxy predictor of a proxy mode ("" for plain).
func qemuPredictor(mode string) string {
	name, _ := strings.CutPrefix(mode, "proxy-")
	if name == mode {
		return ""
	}
	return name
}

// qemuRun runs one migration. Its error is only for ctx ending; a migration that fails is a
// QEMURun with that status.
func qemuRun(ctx context.Context, cfg QEMUConfig, p guest.Pattern, mode string, preempt bool, n int) (QEMURun, error) {
	run := QEMURun{Pattern: p.String(), Mode: mode, Run: n, Preempt: preempt}
	start := time.Now()
	err := qemuMigrate(ctx, cfg, p, mode, &run)
	if ctx.Err() != nil {
		return run, ctx.Err()
	}
	if err != nil {
		run.Error = err.Error()
		if run.Status == "" || run.Status == "completed" {
			run.Status = "error"
		}
	}
	fmt.Fprintf(cfg.Log, "qemu %-10s %-11s run %d%s: %s, demand %d, injected %d, blocktime %.0f ms, guest wait %.0f ms, post-copy %.2fs, %.0f visits/s, %d visits in post-copy, verified %v (%.1fs)%s\n",
		run.Pattern, run.Mode, n, map[bool]string{true: " preempt"}[preempt], run.Status, run.DemandRequests, run.Injected,
		run.BlocktimeMS, run.GuestWaitMS, run.PostcopySeconds, run.TouchRate, run.TouchesPostcopy, run.MemoryVerified,
		time.Since(start).Seconds(), map[bool]string{true: ": " + run.Error}[run.Error != ""])
	return run, nil
}

func qemuMigrate(ctx context.Context, cfg QEMUConfig, p guest.Pattern, mode string, run *QEMURun) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.RunTimeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "pwqemu")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	gc := cfg.guestConfig()
	link := cfg.link
	wrap := func(name string, cmd *exec.Cmd) *exec.Cmd {
		if name == "dst" {
			return link.TargetCmd(cmd)
		}
		return link.SourceCmd(cmd)
	}
	src, dst, err := launch.StartPair(ctx, launch.Options{Dir: dir, MemMiB: cfg.MemMiB, Wrap: wrap}, p, gc)
	if err != nil {
		return err
	}
	defer src.Kill()
	defer dst.Kill()
	port, err := launch.FreePort()
	if err != nil {
		return err
	}
	listen := netip.AddrPortFrom(link.TargetAddr(), uint16(port)).String()
	connect := listen
	var proxy *qemu.Proxy
	serveErr := make(chan error, 1)
	if pred := qemuPredictor(mode); pred != "" {
		blocks, err := src.QMP.RAMBlocks(ctx)
		if err != nil {
			return fmt.Errorf("source ramblocks: %w", err)
		}
		// The proxy is on the source's side of the link: it listens and dials from the source's
		// namespace.
		var ln net.Listener
		if err := link.InSource(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
			return fmt.Errorf("proxy listener: %w", err)
		}
		dial := func(ctx context.Context, addr string) (c net.Conn, err error) {
			err = link.InSource(func() error { c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr); return err })
			return c, err
		}
		proxy, err = qemu.NewProxy(qemu.ProxyConfig{Listener: ln, Dial: dial, Dest: listen, Blocks: blocks, Predictor: pred, Budget: cfg.Budget})
		if err != nil {
			ln.Close()
			return err
		}
		connect = proxy.Addr().String()
		go func() { serveErr <- proxy.Serve(ctx) }()
		defer func() {
			proxy.Close()
			<-serveErr
		}()
	}
	t0, err := src.Touches(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := qemuSleep(ctx, QEMURateWindow); err != nil {
		return err
	}
	t1, err := src.Touches(ctx)
	if err != nil {
		return err
	}
	run.TouchRate = float64(t1-t0) / time.Since(start).Seconds()
	if run.PassesBefore, err = src.Passes(ctx, p); err != nil {
		return err
	}
	res, merr := launch.Migrate(ctx, src, dst, launch.Migration{
		ListenURI: "tcp:" + listen, ConnectURI: "tcp:" + connect, Preempt: run.Preempt,
		MaxBandwidth: cfg.MaxBandwidth, PostcopyBandwidth: cfg.PostcopyBandwidth, PostcopyAfter: cfg.PostcopyAfter,
	})
	run.Statuses = res.Statuses
	if n := len(res.Statuses); n > 0 {
		run.Status = res.Statuses[n-1]
	}
	if merr == nil {
		run.Status = "completed"
	}
	if ram := res.Source.RAM; ram != nil {
		run.SourceRequests = int64(ram.PostcopyRequests)
		run.PrecopyBytes, run.PostcopyBytes, run.TransferredBytes = ram.PrecopyBytes, ram.PostcopyBytes, ram.Transferred
	}
	if bt := res.Dest.PostcopyBlocktime; bt != nil {
		run.BlocktimeMS = float64(*bt)
	}
	for _, v := range res.Dest.PostcopyVCPUBlocktime {
		run.VCPUBlocktimeMS = append(run.VCPUBlocktimeMS, float64(v))
	}
	run.PostcopySeconds, run.TotalSeconds = res.Postcopy.Seconds(), res.Total.Seconds()
	if proxy != nil {
		// The counters are final once the destination completed: it sends no request after
		// its last page arrived.
		st := proxy.Stats()
		run.DemandRequests, run.Injected, run.InjectedThenRequested = st.RealRequests, st.Injected, st.InjectedThenRequested
		if st.InjectionDisabled {
			run.InjectionDisabled = st.DisabledReason
		}
		if fl := proxy.ForwardLatency(); fl.Count() > 0 {
			run.ForwardMeanUS = float64(fl.Sum.Microseconds()) / float64(fl.Count())
		}
	} else {
		run.DemandRequests = run.SourceRequests
	}
	if merr != nil {
		return fmt.Errorf("%w\nsource: %s\ndestination: %s", merr, qemuLastLines(src.Stderr(), 5), qemuLastLines(dst.Stderr(), 5))
	}
	if run.PassesAtCompletion, err = dst.Passes(ctx, p); err != nil {
		return err
	}
	dstTouches, err := dst.Touches(ctx)
	if err != nil {
		return err
	}
	if run.PassesAtSwitch, err = src.Passes(ctx, p); err != nil {
		return fmt.Errorf("source after the migration: %w", err)
	}
	srcTouches, err := src.Touches(ctx)
	if err != nil {
		return fmt.Errorf("source after the migration: %w", err)
	}
	run.TouchesPostcopy = dstTouches - srcTouches
	if run.TouchRate > 0 {
		run.GuestWaitMS = 1000 * max(0, run.PostcopySeconds-float64(run.TouchesPostcopy)/run.TouchRate)
	}
	if err := qemuSleep(ctx, cfg.Settle); err != nil {
		return err
	}
	after, err := dst.Touches(ctx)
	if err != nil {
		return err
	}
	if after == dstTouches {
		return fmt.Errorf("the guest made no progress on the destination: %d page visits at completion and %v later", after, cfg.Settle)
	}
	if run.PassesAfter, err = dst.Verify(ctx, p, gc); err != nil {
		return fmt.Errorf("verify destination memory: %w", err)
	}
	run.MemoryVerified = true
	return nil
}

func qemuLastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func qemuSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// qemuVersion is the first line of `qemu-system-x86_64 --version`.
func qemuVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// summarise sets the cell's medians over its completed runs, its status and verification.
func (c *QEMUResult) summarise() {
	c.Status, c.MemoryVerified = "completed", len(c.Runs) > 0
	var ok []QEMURun
	for _, r := range c.Runs {
		if r.Status != "completed" {
			if c.Status == "completed" {
				c.Status = r.Status
			}
		} else {
			ok = append(ok, r)
		}
		c.MemoryVerified = c.MemoryVerified && r.MemoryVerified
	}
	c.Completed = len(ok)
	med := func(f func(QEMURun) float64) float64 {
		vs := make([]float64, len(ok))
		for i, r := range ok {
			vs[i] = f(r)
		}
		return qemuMedian(vs)
	}
	c.DemandRequests = med(func(r QEMURun) float64 { return float64(r.DemandRequests) })
	c.SourceRequests = med(func(r QEMURun) float64 { return float64(r.SourceRequests) })
	c.Injected = med(func(r QEMURun) float64 { return float64(r.Injected) })
	c.InjectedThenRequested = med(func(r QEMURun) float64 { return float64(r.InjectedThenRequested) })
	c.BlocktimeMS = med(func(r QEMURun) float64 { return r.BlocktimeMS })
	c.PostcopySeconds = med(func(r QEMURun) float64 { return r.PostcopySeconds })
	c.TotalSeconds = med(func(r QEMURun) float64 { return r.TotalSeconds })
	c.PostcopyBytes = med(func(r QEMURun) float64 { return float64(r.PostcopyBytes) })
	c.TransferredBytes = med(func(r QEMURun) float64 { return float64(r.TransferredBytes) })
	c.PassesDuring = med(func(r QEMURun) float64 { return float64(r.PassesAtCompletion) - float64(r.PassesBefore) })
	c.PassesPostcopy = med(func(r QEMURun) float64 { return float64(r.PassesAtCompletion) - float64(r.PassesAtSwitch) })
	c.TouchRate = med(func(r QEMURun) float64 { return r.TouchRate })
	c.TouchesPostcopy = med(func(r QEMURun) float64 { return float64(r.TouchesPostcopy) })
	c.GuestWaitMS = med(func(r QEMURun) float64 { return r.GuestWaitMS })
}

// qemuMedian is the median of vs (0 for none; the mean of the middle two for an even count).
func qemuMedian(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// qemuTargets checks issue 7's targets on every learnable pattern that has the cells they
// compare: proxy-ppm at most 0.5 x plain's demand requests and at least 40% less blocktime;
// proxy-none at most 10% more blocktime than plain. A comparison with a plain median of 0 has
// no ratio and does not apply; on a pattern where plain's guest waited less than QEMUWaitFloor of
// its post-copy the targets are reported as not applying.
func qemuTargets(results []QEMUResult) []QEMUTarget {
	find := func(p, m string) *QEMUResult {
		for i := range results {
			if r := &results[i]; r.Pattern == p && r.Mode == m && r.Completed > 0 {
				return r
			}
		}
		return nil
	}
	var ts []QEMUTarget
	for _, p := range QEMULearnable {
		plain := find(p, QEMUPlain)
		if plain == nil {
			continue
		}
		applies, why := true, ""
		if share := plain.GuestWaitMS / 1000 / max(plain.PostcopySeconds, 1e-9); share < QEMUWaitFloor {
			applies = false
			why = fmt.Sprintf("plain's guest waited %.0f ms, %.1f%% of its post-copy: QEMU's own scan left nothing to predict", plain.GuestWaitMS, 100*share)
		}
		add := func(t QEMUTarget) {
			t.Pattern, t.Applies, t.Why = p, applies, why
			t.Met = t.Met && applies
			ts = append(ts, t)
		}
		// ratio adds target t with value f(a/b) and met(value), or not applying when b is 0.
		ratio := func(t QEMUTarget, a, b float64, f func(float64) float64, met func(float64) bool, what string) {
			if b == 0 {
				t.Pattern, t.Why = p, "plain's "+what+" was 0: nothing to compare with"
				ts = append(ts, t)
				return
			}
			t.Value = f(a / b)
			t.Met = met(t.Value)
			add(t)
		}
		same := func(v float64) float64 { return v }
		atMost := func(l float64) func(float64) bool { return func(v float64) bool { return v <= l } }
		if ppm := find(p, QEMUProxyPPM); ppm != nil {
			ratio(QEMUTarget{Target: "ppm demand / plain demand", Limit: 0.5}, ppm.DemandRequests, plain.DemandRequests,
				same, atMost(0.5), "demand")
			ratio(QEMUTarget{Target: "ppm blocktime reduction vs plain", Limit: 0.4}, ppm.BlocktimeMS, plain.BlocktimeMS,
				func(v float64) float64 { return 1 - v }, func(v float64) bool { return v >= 0.4 }, "blocktime")
		}
		if none := find(p, QEMUProxyNone); none != nil {
			ratio(QEMUTarget{Target: "proxy-none blocktime overhead vs plain", Limit: 0.1}, none.BlocktimeMS, plain.BlocktimeMS,
				func(v float64) float64 { return v - 1 }, atMost(0.1), "blocktime")
		}
	}
	return ts
}

// qemuReliability runs cfg.Reliability proxied migrations: run i uses postcopy-preempt when i is
// odd, pattern (i/2) mod P and the proxy mode (i/2P) mod M, ppm first.
func qemuReliability(ctx context.Context, cfg QEMUConfig, patterns []guest.Pattern) (*QEMUReliability, error) {
	var modes []string
	for _, m := range []string{QEMUProxyPPM, QEMUProxyNextN, QEMUProxyNone} {
		if slices.Contains(cfg.Modes, m) {
			modes = append(modes, m)
		}
	}
	if len(modes) == 0 {
		modes = []string{QEMUProxyPPM, QEMUProxyNextN, QEMUProxyNone}
	}
	rel := &QEMUReliability{Migrations: cfg.Reliability}
	for i := 0; i < cfg.Reliability; i++ {
		p := patterns[(i/2)%len(patterns)]
		m := modes[(i/(2*len(patterns)))%len(modes)]
		run, err := qemuRun(ctx, cfg, p, m, i%2 == 1, i)
		if err != nil {
			return nil, err
		}
		switch {
		case run.Status == "completed":
			rel.Completed++
		case strings.Contains(run.Status, "paused"):
			rel.Paused++
		default:
			rel.Failed++
		}
		if run.MemoryVerified {
			rel.Verified++
		}
		if run.InjectionDisabled != "" {
			rel.Disabled++
		}
		rel.Runs = append(rel.Runs, run)
	}
	return rel, nil
}
