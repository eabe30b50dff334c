package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/hybrid"
	"github.com/pagewarp/pagewarp/internal/syncbuf"
	"github.com/pagewarp/pagewarp/metrics"
	"github.com/pagewarp/pagewarp/pageserver"
	"github.com/pagewarp/pagewarp/precopy"
	"github.com/pagewarp/pagewarp/wire"
)

// A live migration runs in three processes: the orchestrator (Migrate),
// a source (RunMigrateSource: the workload runs in it on its own memory,
// next to a page server with a pre-copy Sender) and a target
// (RunMigrateTarget: it pre-copies into faulthandler Handlers, takes the
// workload over at the switch and runs it to the end on the migrated
// memory while post-copy fetches the rest). Source and target are this
// binary re-executed, each in its own network namespace when the link is
// a veth pair. They talk to the orchestrator with JSON lines on stdout.

// MigrateSpec is what the source and the target are given (as JSON).
type MigrateSpec struct {
	Workload string        `json:"workload"`
	Pages    int           `json:"pages"`
	Threads  int           `json:"threads"`
	Steps    uint64        `json:"steps"` // per thread, the whole run
	Rate     float64       `json:"rate"`
	Seed     int64         `json:"seed"`
	Gang     int           `json:"gang"`   // regions (co-located workloads); 1 for a single one
	Shared   float64       `json:"shared"` // share of each gang member's pages that all members hold alike
	Policy   string        `json:"policy"`
	Budget   time.Duration `json:"downtime_budget"`
	// MaxRounds bounds pre-copy for every policy.
	MaxRounds int `json:"max_rounds"`
	Streams   int `json:"streams"`
	// Bandwidth is the link's rate in bytes/s when known (0: estimated
	// from the rounds).
	Bandwidth float64  `json:"bandwidth"`
	Link      LinkSpec `json:"link"`
	Listen    string   `json:"listen"` // source: where to listen
	Addr      string   `json:"addr"`   // target: where the source listens
	// Separate makes the source pre-copy each gang member with its own
	// content index (K separate migrations, for comparison).
	Separate bool `json:"separate"`
	// Probe, when positive, measures the workload's write rate for this
	// long before round 0 (precopy.Sender.Probe) and gives it to the
	// policy (hybrid.Env.ProbeDirty), which may then switch before any
	// round. Its time counts in the migration's.
	Probe time.Duration `json:"probe_ns,omitempty"`
	// StallPerPage is the policy's estimate of what post-copy costs the
	// workload per missing page (hybrid.Env.PostcopyStallPerPage; 0: its
	// default).
	StallPerPage time.Duration `json:"stall_per_page_ns,omitempty"`
	// MetricsSocket, when set, is the unix socket the child serves its
	// Prometheus metrics on (set by Migrate from MigrateConfig.Metrics).
	MetricsSocket string `json:"metrics_socket,omitempty"`
	// ResumeDeadline bounds how long the target tries to reconnect after
	// losing the source in post-copy (faulthandler.Options.ResumeDeadline;
	// 0: its default, negative: no resume).
	ResumeDeadline time.Duration `json:"resume_deadline_ns,omitempty"`
	// StallTimeout is how long the target lets a connection with replies
	// outstanding stay silent before it takes the link as lost and resumes
	// (faulthandler.Options.StallTimeout; 0: its default, negative: never).
	StallTimeout time.Duration `json:"stall_timeout_ns,omitempty"`
	// Sample is the target's period for sampling its counters into the
	// timeline (0: 10 ms).
	Sample time.Duration `json:"sample_ns,omitempty"`
}

// SourceReport is the source's account of a migration.
type SourceReport struct {
	Rounds      []precopy.RoundStats `json:"rounds"`
	Decisions   []hybrid.Decision    `json:"decisions"`
	Converged   bool                 `json:"converged"`
	Action      string               `json:"action"`      // the final decision: switch or stop-and-copy
	LastStep    time.Time            `json:"last_step"`   // the workload's last step on the source
	Start       time.Time            `json:"start"`       // the first pre-copy round began (or the switch, without one)
	PrecopyTime time.Duration        `json:"precopy_ns"`  // first round to the switch
	RateBefore  float64              `json:"rate_before"` // workload steps/s before pre-copy
	RateDuring  float64              `json:"rate_during"` // workload steps/s during pre-copy
	Invalidated uint64               `json:"invalidated"`
	PrecopyB    uint64               `json:"precopy_bytes"`
	PostcopyB   uint64               `json:"postcopy_bytes"` // page server bytes after the switch
	Demand      uint64               `json:"demand_requests"`
	// Times of the migration's steps, for the timeline: the probe, each
	// round (as many as Rounds), the switch (the workload stopped).
	ProbeSpan  *TimeSpan           `json:"probe_span,omitempty"`
	Probe      *precopy.ProbeStats `json:"probe,omitempty"`
	RoundSpans []TimeSpan          `json:"round_spans"`
	SwitchAt   time.Time           `json:"switch_at"`
	// PendingSkipped counts pages written after the last round whose
	// content the target already held: not invalidated.
	PendingSkipped uint64 `json:"pending_skipped"`
	Error          string `json:"error,omitempty"`
}

// TimeSpan is a start and an end in wall-clock time (both processes of a
// migration run on one host, so their clocks agree).
type TimeSpan struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// TargetReport is the target's account.
type TargetReport struct {
	FirstStep     time.Time     `json:"first_step"` // the workload's first step on the target
	Complete      time.Time     `json:"complete"`   // the last page arrived
	PostcopyTime  time.Duration `json:"postcopy_ns"`
	RateAfter     float64       `json:"rate_after"` // steps/s on the target
	DemandFaults  uint64        `json:"demand_faults"`
	PushedPages   uint64        `json:"pushed_pages"`
	PostcopyPages uint64        `json:"postcopy_pages"`
	Checksums     [][16]byte    `json:"checksums"` // per gang member
	// Samples are the target's counters every MigrateSpec.Sample from the
	// resume to the last page.
	Samples []TargetSample `json:"samples"`
	Error   string         `json:"error,omitempty"`
}

// TargetSample is the target's cumulative counters at one time, summed
// over its regions.
type TargetSample struct {
	At         time.Time `json:"at"`
	Demand     uint64    `json:"demand_faults"`    // demand requests sent to the source
	Pushed     uint64    `json:"pushed_pages"`     // pages installed from pushes
	Background uint64    `json:"background_pages"` // pages installed from the background pull
}

// gangInit fills member i of a gang: the workload's own content, then the
// first shared share of its pages from a seed common to all members.
func gangInit(m *Mutator, mem []byte, shared float64, seed int64) {
	m.Init(mem)
	ps := m.PageSize()
	n := int(shared * float64(len(mem)/ps))
	for p := range n {
		fillRandom(mem[p*ps:(p+1)*ps], uint64(seed)*0x9e3779b97f4a7c15^uint64(p)+1)
	}
}

func (s *MigrateSpec) mutators() ([]*Mutator, error) {
	var ms []*Mutator
	for i := range max(s.Gang, 1) {
		m, err := NewMutator(MutatorConfig{Name: s.Workload, Pages: s.Pages, Threads: s.Threads, Seed: s.Seed + int64(i),
			Rate: s.Rate, Steps: s.Steps})
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// ExpectedChecksums runs the spec's workloads to the end without migration
// and returns their checksums: what a migrated run must reproduce.
func (s *MigrateSpec) ExpectedChecksums() ([][16]byte, error) {
	ms, err := s.mutators()
	if err != nil {
		return nil, err
	}
	var sums [][16]byte
	for _, m := range ms {
		mem, err := unix.Mmap(-1, 0, s.Pages*m.PageSize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return nil, err
		}
		gangInit(m, mem, s.Shared, s.Seed)
		m.Run(mem, nil)
		st := m.Wait()
		sums = append(sums, Checksum(mem, st))
		unix.Munmap(mem)
	}
	return sums, nil
}

func writeLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// RunMigrateSource is the source process: it starts the workload, serves
// its memory, runs pre-copy rounds until the policy decides, stops the
// workload at a safe point, hands it over, and serves post-copy until the
// target is done. It prints {"addr": ...} once listening and its
// SourceReport at the end.
func RunMigrateSource(ctx context.Context, spec MigrateSpec, stdout io.Writer) error {
	rep := SourceReport{}
	err := runSource(ctx, spec, stdout, &rep)
	if err != nil {
		rep.Error = err.Error()
	}
	if werr := writeLine(stdout, &rep); err == nil {
		err = werr
	}
	return err
}

func runSource(ctx context.Context, spec MigrateSpec, stdout io.Writer, rep *SourceReport) error {
	policy, err := hybrid.New(spec.Policy)
	if err != nil {
		return err
	}
	ms, err := spec.mutators()
	if err != nil {
		return err
	}
	faulthandler.ReserveProcs(spec.Threads*len(ms) + 2)
	ps := ms[0].PageSize()
	var regions []precopy.Region
	var mems []pageserver.MemRegion
	for i, m := range ms {
		mem, err := unix.Mmap(-1, 0, spec.Pages*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return err
		}
		defer unix.Munmap(mem)
		gangInit(m, mem, spec.Shared, spec.Seed)
		tr, err := precopy.NewTracker(precopy.TrackAuto, mem, ps)
		if err != nil {
			return err
		}
		defer tr.Close()
		regions = append(regions, precopy.Region{ID: uint32(i), Mem: mem, Tracker: tr})
		mems = append(mems, pageserver.MemRegion{ID: uint32(i), Name: fmt.Sprintf("%s-%d", spec.Workload, i), Mem: mem})
	}
	senders := []*precopy.Sender{}
	var mux *precopyMux
	if spec.Separate {
		mux = &precopyMux{}
		for _, r := range regions {
			s, err := precopy.NewSender([]precopy.Region{r}, precopy.SenderConfig{PageSize: ps})
			if err != nil {
				return err
			}
			senders = append(senders, s)
		}
		mux.senders = senders
	} else {
		s, err := precopy.NewSender(regions, precopy.SenderConfig{PageSize: ps})
		if err != nil {
			return err
		}
		senders = append(senders, s)
	}
	for _, s := range senders {
		defer s.Close()
	}
	src, err := pageserver.NewRegionsSource(mems, ps)
	if err != nil {
		return err
	}
	var pc pageserver.PrecopyServer = senders[0]
	if mux != nil {
		pc = mux
	}
	srv := pageserver.New(src, pageserver.Options{Precopy: pc, Prefetch: pageserver.Prefetch{Predictor: "ppm"}})
	ln, err := net.Listen("tcp", spec.Listen)
	if err != nil {
		return err
	}
	if spec.Link.Kind == "shaped" {
		// The in-process shaper lives here, on the source's side of every
		// connection, in both directions.
		ln = newShapedLink(spec.Link, "").WrapListener(ln)
	}
	go srv.Serve(ln)
	defer srv.Close()
	var rec *metrics.Precopy
	if spec.MetricsSocket != "" {
		reg := prometheus.NewRegistry()
		labels := prometheus.Labels{"role": "source"}
		reg.MustRegister(metrics.NewPageServerCollector(srv, labels))
		if rec, err = metrics.NewPrecopy(reg, labels); err != nil {
			return err
		}
		stop, err := serveChildMetrics(spec.MetricsSocket, reg)
		if err != nil {
			return err
		}
		defer stop()
	}

	// The workload starts before the target connects: it is the running
	// workload we migrate.
	t0 := time.Now()
	for i, m := range ms {
		m.Run(regions[i].Mem, nil)
	}
	paused := false
	pauseAll := func() []MutatorState {
		var sts []MutatorState
		for _, m := range ms {
			sts = append(sts, m.Pause())
		}
		paused = true
		return sts
	}
	defer func() {
		if !paused {
			pauseAll()
		}
	}()
	progress := func() uint64 {
		var n uint64
		for _, m := range ms {
			n += m.Progress()
		}
		return n
	}
	if err := writeLine(stdout, map[string]string{"addr": ln.Addr().String()}); err != nil {
		return err
	}
	for _, s := range senders {
		// The target opens its streams within milliseconds of connecting; one
		// that never arrives (refused for a bad Hello, a target that died)
		// must not hold the source forever.
		wctx, wcancel := context.WithTimeout(ctx, streamsTimeout)
		err := s.WaitReady(wctx)
		wcancel()
		if err != nil {
			return fmt.Errorf("waiting for the target: %w", err)
		}
	}
	p0, tStart := progress(), time.Now()
	rep.Start = tStart
	if d := tStart.Sub(t0); d > 0 {
		rep.RateBefore = float64(p0) / d.Seconds()
	}

	env := hybrid.Env{PageSize: ps, TotalPages: uint64(spec.Pages * len(ms)), DowntimeBudget: spec.Budget,
		MaxRounds: spec.MaxRounds, Bandwidth: spec.Bandwidth, PostcopyStallPerPage: spec.StallPerPage}
	if spec.Probe > 0 {
		pst, err := probe(ctx, senders, spec.Probe)
		if err != nil {
			return err
		}
		rep.ProbeSpan = &TimeSpan{Start: tStart, End: time.Now()}
		rep.Probe = &pst
		// Silent stores need no sending: the policy gets the changes.
		env.ProbeDirty, env.ProbeWindow = pst.Changed(), pst.Window
	}
	var hist []hybrid.Round
	d := policy.Decide(env, hist)
	rep.Decisions = append(rep.Decisions, d)
	rec.ObserveDecision(d)
	for d.Action == hybrid.Continue {
		var st precopy.RoundStats
		span := TimeSpan{Start: time.Now()}
		for _, s := range senders {
			x, err := s.Round(ctx)
			if err != nil {
				return fmt.Errorf("pre-copy round %d: %w", len(hist), err)
			}
			st = mergeRound(st, x)
		}
		span.End = time.Now()
		rep.Rounds = append(rep.Rounds, st)
		rep.RoundSpans = append(rep.RoundSpans, span)
		rec.ObserveRound(st)
		hist = append(hist, hybrid.Round{Index: len(hist), Dirty: st.Dirty, FakeDirty: st.FakeDirty, Sent: st.Sent,
			Refs: st.Zero + st.Dup + st.Known, Bytes: st.Bytes, Duration: st.Duration})
		d = policy.Decide(env, hist)
		rep.Decisions = append(rep.Decisions, d)
		rec.ObserveDecision(d)
	}
	rep.Converged = d.Converged
	rep.Action = d.Action.String()
	tSwitch := time.Now()
	rep.SwitchAt = tSwitch
	rep.PrecopyTime = tSwitch.Sub(tStart)
	if d := tSwitch.Sub(tStart); d > 0 {
		rep.RateDuring = float64(progress()-p0) / d.Seconds()
	}

	// The switch: stop the workload at a step boundary.
	states := pauseAll()
	for _, m := range ms {
		rep.LastStep = later(rep.LastStep, m.LastStep())
	}
	state, err := json.Marshal(states)
	if err != nil {
		return err
	}
	for i, s := range senders {
		inv := map[uint32][]uint64{}
		if d.Action == hybrid.StopAndCopy && len(hist) > 0 {
			// A last round with the workload stopped: nothing is left.
			span := TimeSpan{Start: time.Now()}
			st, err := s.Round(ctx)
			if err != nil {
				return fmt.Errorf("stop-and-copy round: %w", err)
			}
			span.End = time.Now()
			rep.Rounds = append(rep.Rounds, st)
			rep.RoundSpans = append(rep.RoundSpans, span)
			rec.ObserveRound(st)
		} else if len(hist) > 0 {
			if inv, err = s.Pending(); err != nil {
				return err
			}
			rep.PendingSkipped += s.PendingSkipped()
		}
		for _, p := range inv {
			rep.Invalidated += uint64(len(p))
		}
		var st []byte
		if i == 0 {
			st = state
		}
		if err := s.Switch(inv, st); err != nil {
			return fmt.Errorf("switch: %w", err)
		}
	}
	for _, r := range rep.Rounds {
		rep.PrecopyB += r.Bytes
	}
	before := srv.Stats().BytesSent
	// Serve post-copy until the target has everything and says goodbye.
	for {
		if srv.Stats().ConnectionsActive == 0 && time.Since(tSwitch) > 100*time.Millisecond {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	st := srv.Stats()
	rep.PostcopyB = st.BytesSent - before
	rep.Demand = st.Requests[0]
	return nil
}

// streamsTimeout bounds the wait for the target's pre-copy streams.
const streamsTimeout = 15 * time.Second

// probe runs Sender.Probe on every sender at once for window and returns
// their figures, summed (the longest window).
func probe(ctx context.Context, senders []*precopy.Sender, window time.Duration) (precopy.ProbeStats, error) {
	type res struct {
		st  precopy.ProbeStats
		err error
	}
	out := make(chan res, len(senders))
	for _, s := range senders {
		go func() {
			st, err := s.Probe(ctx, window)
			out <- res{st, err}
		}()
	}
	var total precopy.ProbeStats
	var first error
	for range senders {
		r := <-out
		total.Written += r.st.Written
		total.Sampled += r.st.Sampled
		total.SampledChanged += r.st.SampledChanged
		total.Window = max(total.Window, r.st.Window)
		if r.err != nil && first == nil {
			first = fmt.Errorf("probe: %w", r.err)
		}
	}
	return total, first
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// mergeRound adds the stats of one sender's round to another's (separate
// gang migrations run their rounds back to back).
func mergeRound(a, b precopy.RoundStats) precopy.RoundStats {
	if a.Streams == 0 {
		return b
	}
	a.Dirty += b.Dirty
	a.Carried += b.Carried
	a.FakeDirty += b.FakeDirty
	a.Zero += b.Zero
	a.Dup += b.Dup
	a.Known += b.Known
	a.Sent += b.Sent
	a.Rejected += b.Rejected
	a.Bytes += b.Bytes
	a.Duration += b.Duration
	a.TrackTime += b.TrackTime
	a.HashTime += b.HashTime
	return a
}

// precopyMux routes pre-copy streams to one Sender per region (separate
// migrations, no shared content index): the target opens one receiver per
// region, and its Hello session tells them apart.
type precopyMux struct {
	mu       sync.Mutex
	senders  []*precopy.Sender
	sessions map[[16]byte]*precopy.Sender
}

func (x *precopyMux) ServePrecopy(hello *wire.Hello, nc net.Conn, r *wire.Reader, w *wire.Writer) error {
	x.mu.Lock()
	if x.sessions == nil {
		x.sessions = map[[16]byte]*precopy.Sender{}
	}
	s, ok := x.sessions[hello.Session]
	if !ok {
		if len(x.sessions) == len(x.senders) {
			x.mu.Unlock()
			return errors.New("more pre-copy sessions than regions")
		}
		s = x.senders[len(x.sessions)]
		x.sessions[hello.Session] = s
	}
	x.mu.Unlock()
	return s.ServePrecopy(hello, nc, r, w)
}

// RunMigrateTarget is the target process: it connects to the source,
// receives pre-copy into Handlers, and at the handover resumes the
// workload on the migrated memory while post-copy completes. It prints its
// TargetReport at the end.
func RunMigrateTarget(ctx context.Context, spec MigrateSpec, stdout io.Writer) error {
	rep := TargetReport{}
	err := runTarget(ctx, spec, &rep)
	if err != nil {
		rep.Error = err.Error()
	}
	if werr := writeLine(stdout, &rep); err == nil {
		err = werr
	}
	return err
}

func runTarget(ctx context.Context, spec MigrateSpec, rep *TargetReport) error {
	ms, err := spec.mutators()
	if err != nil {
		return err
	}
	faulthandler.ReserveProcs(spec.Threads*len(ms) + 2)
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var hs []*faulthandler.Handler
	// abandoned: post-copy failed while the workload's threads may be
	// blocked on missing pages. The handlers are then left open (closing
	// one would unregister its region and let those threads read zeros):
	// the process exits with the error, and the workload with it.
	abandoned := false
	defer func() {
		if !abandoned {
			for _, h := range hs {
				h.Close()
			}
		}
	}()
	for i := range ms {
		id := uint32(i)
		h, err := faulthandler.Dial(dctx, "tcp", spec.Addr, faulthandler.Options{Region: &id, ResumeDeadline: spec.ResumeDeadline, StallTimeout: spec.StallTimeout})
		if err != nil {
			return err
		}
		hs = append(hs, h)
	}
	if spec.MetricsSocket != "" {
		reg := prometheus.NewRegistry()
		for i, h := range hs {
			reg.MustRegister(metrics.NewFaultHandlerCollector(h, prometheus.Labels{"role": "target", "region": strconv.Itoa(i)}))
		}
		stop, err := serveChildMetrics(spec.MetricsSocket, reg)
		if err != nil {
			return err
		}
		defer stop()
	}
	groups := [][]*faulthandler.Handler{hs}
	if spec.Separate {
		groups = nil
		for _, h := range hs {
			groups = append(groups, []*faulthandler.Handler{h})
		}
	}
	// Every group's streams first (the source waits for all of them), then
	// the rounds.
	var recvs []*precopy.Receiver
	for _, g := range groups {
		recv, err := precopy.Dial(dctx, "tcp", spec.Addr, g, precopy.ReceiverConfig{Streams: max(spec.Streams, 1)})
		if err != nil {
			return err
		}
		recvs = append(recvs, recv)
	}
	errs := make(chan error, len(recvs))
	for _, recv := range recvs {
		go func() { errs <- recv.Run(ctx) }()
	}
	for range recvs {
		if err := <-errs; err != nil {
			return fmt.Errorf("pre-copy: %w", err)
		}
	}
	state, _, _, ok := recvs[0].Handover()
	if !ok {
		return errors.New("pre-copy ended without a handover")
	}
	states, err := decodeHandoverState(state, ms)
	if err != nil {
		return err
	}
	// The workload runs in this process, next to the fault handler. A
	// thread that faults on a missing page inside non-preemptible runtime
	// code (a copy()) cannot be stopped for a garbage collection, and the
	// fault loop cannot run while the world is stopping: no GC until the
	// region is complete (docs/architecture.md, "Threads and the Go
	// scheduler"). A workload in its own process does not have this problem.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	// Resume at once; post-copy brings what is missing.
	t0 := time.Now()
	for i, h := range hs {
		h.Start()
		ms[i].Run(h.Memory(), &states[i])
	}
	var p0 uint64
	for i := range ms {
		p0 += sumSteps(states[i])
	}
	stopSampling := sampleTarget(hs, spec.Sample, &rep.Samples)
	defer stopSampling()
	// The workload ends, or post-copy fails first: then its threads may
	// wait on pages that will never come, and waiting for the workload
	// would hang.
	failed := make(chan error, len(hs))
	fctx, fcancel := context.WithCancel(ctx)
	defer fcancel()
	for i, h := range hs {
		go func() {
			if err := h.Wait(fctx); err != nil && fctx.Err() == nil {
				failed <- fmt.Errorf("post-copy of region %d: %w", i, err)
			}
		}()
	}
	done := make(chan []MutatorState, 1)
	go func() {
		var finals []MutatorState
		for _, m := range ms {
			finals = append(finals, m.Wait())
		}
		done <- finals
	}()
	var finals []MutatorState
	select {
	case finals = <-done:
	case err := <-failed:
		abandoned = true
		return err
	}
	tEnd := time.Now()
	for _, m := range ms {
		if f := m.FirstStep(); !f.IsZero() && (rep.FirstStep.IsZero() || f.Before(rep.FirstStep)) {
			rep.FirstStep = f
		}
	}
	var p1 uint64
	for _, f := range finals {
		p1 += sumSteps(f)
	}
	if d := tEnd.Sub(t0); d > 0 {
		rep.RateAfter = float64(p1-p0) / d.Seconds()
	}
	for i, h := range hs {
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Minute)
		err := h.Wait(wctx)
		wcancel()
		if err != nil {
			return fmt.Errorf("post-copy of region %d: %w", i, err)
		}
		st := h.Stats()
		rep.PostcopyTime = max(rep.PostcopyTime, st.Elapsed)
		rep.Complete = later(rep.Complete, t0.Add(st.Elapsed))
		rep.DemandFaults += st.DemandRequests
		rep.PushedPages += st.PushedPages
		rep.PostcopyPages += st.DemandPages + st.BackgroundPages + st.PushedPages + st.ZeroPages
		rep.Checksums = append(rep.Checksums, Checksum(h.Memory(), finals[i]))
	}
	stopSampling()
	return nil
}

// maxSamples bounds a target's timeline samples: past it the sampler keeps
// every other one and doubles its period.
const maxSamples = 4096

// sampleTarget records the handlers' counters every period (0: 10 ms) into
// *out until the returned function is called (safe to call twice); a last
// sample is taken then.
func sampleTarget(hs []*faulthandler.Handler, period time.Duration, out *[]TargetSample) func() {
	if period <= 0 {
		period = 10 * time.Millisecond
	}
	sample := func() TargetSample {
		s := TargetSample{At: time.Now()}
		for _, h := range hs {
			st := h.Stats()
			s.Demand += st.DemandRequests
			s.Pushed += st.PushedPages
			s.Background += st.BackgroundPages
		}
		return s
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			*out = append(*out, sample())
			if len(*out) >= maxSamples {
				kept := (*out)[:0]
				for i := 0; i < len(*out); i += 2 {
					kept = append(kept, (*out)[i])
				}
				*out = kept
				period *= 2
				t.Reset(period)
			}
			select {
			case <-stop:
				*out = append(*out, sample())
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(stop); <-done })
	}
}

// decodeHandoverState decodes the workload state the source handed over
// (JSON: one MutatorState per workload) and checks it against the
// workloads this target runs: one state per workload, one step count per
// thread, none past the workload's end. It crossed the network: a state
// that does not fit is an error, never a panic or a workload resumed wrong.
func decodeHandoverState(b []byte, ms []*Mutator) ([]MutatorState, error) {
	var states []MutatorState
	if err := json.Unmarshal(b, &states); err != nil {
		return nil, fmt.Errorf("workload state from the source: %w", err)
	}
	if len(states) != len(ms) {
		return nil, fmt.Errorf("workload state from the source: %d states for %d workloads", len(states), len(ms))
	}
	for i, st := range states {
		cfg := ms[i].cfg
		if len(st.Steps) != cfg.Threads {
			return nil, fmt.Errorf("workload state from the source: workload %d has %d threads' steps, it runs %d threads", i, len(st.Steps), cfg.Threads)
		}
		for t, n := range st.Steps {
			if cfg.Steps > 0 && n > cfg.Steps {
				return nil, fmt.Errorf("workload state from the source: workload %d thread %d at step %d, past its last (%d)", i, t, n, cfg.Steps)
			}
		}
	}
	return states, nil
}

func sumSteps(s MutatorState) uint64 {
	var n uint64
	for _, x := range s.Steps {
		n += x
	}
	return n
}

// MigrateResult is one migration as the orchestrator reports it.
type MigrateResult struct {
	Workload  string `json:"workload"`
	Policy    string `json:"policy"`
	Link      string `json:"link"`
	Gang      int    `json:"gang"`
	Converged bool   `json:"converged"`
	Action    string `json:"action"`
	// TotalSeconds is the migration's time: from the first pre-copy round
	// to the last page on the target. WallSeconds is the whole run's,
	// the workload's time before and after included.
	TotalSeconds    float64           `json:"total_seconds"`
	WallSeconds     float64           `json:"wall_seconds"`
	DowntimeMs      float64           `json:"downtime_ms"`
	PrecopyRounds   int               `json:"precopy_rounds"`
	RoundBytes      []uint64          `json:"round_bytes"` // bytes each pre-copy round sent
	PrecopySeconds  float64           `json:"precopy_seconds"`
	PostcopySeconds float64           `json:"postcopy_seconds"`
	BytesSent       uint64            `json:"bytes_sent"`
	PrecopyBytes    uint64            `json:"precopy_bytes"`
	PostcopyBytes   uint64            `json:"postcopy_bytes"`
	DemandFaults    uint64            `json:"demand_faults"`
	Invalidated     uint64            `json:"invalidated"`
	RateBefore      float64           `json:"rate_before"`
	RateDuring      float64           `json:"rate_during"`
	RateAfter       float64           `json:"rate_after"`
	ResultOK        bool              `json:"result_ok"`
	Decisions       []hybrid.Decision `json:"decisions"`
	Timeline        *Timeline         `json:"timeline,omitempty"`
	Source          *SourceReport     `json:"source,omitempty"`
	Target          *TargetReport     `json:"target,omitempty"`
}

// MigrateConfig sets up one migration.
type MigrateConfig struct {
	Spec MigrateSpec
	// Argv runs this binary: Argv + ["migrate-source"|"migrate-target", "--spec", JSON].
	Argv []string
	// Expected, when set, are the checksums of the same run without
	// migration (ExpectedChecksums); nil computes them.
	Expected [][16]byte
	Log      io.Writer
	// Metrics, when set, has the source and target serve their metrics
	// for it to gather (see MigrateMetrics).
	Metrics *MigrateMetrics
	// Intercept, when set, is given the source's address and returns the
	// one the target dials instead (the chaos suite's fault injector).
	Intercept func(sourceAddr string) (string, error)
	// Started, when set, is called once both processes run.
	Started func(source, target *os.Process)
	// Ended, when set, is called with both reports as they were read and
	// each side's error, before Migrate returns, whatever it returns.
	Ended func(src *SourceReport, tgt *TargetReport, srcErr, tgtErr error)
}

// Migrate runs one live migration between a source and a target process
// over the configured link and reports it.
func Migrate(ctx context.Context, cfg MigrateConfig) (*MigrateResult, error) {
	spec := cfg.Spec
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	link, err := SetupLink(ctx, spec.Link, true)
	if err != nil {
		return nil, err
	}
	defer link.Close()
	if n := link.Note(); n != "" {
		fmt.Fprintf(cfg.Log, "link: %s\n", n)
	}
	spec.Link = link.Spec()
	spec.Listen = link.SourceListenAddr()
	if spec.Bandwidth == 0 && spec.Link.Rate > 0 {
		spec.Bandwidth = spec.Link.Rate / 8
	}
	if cfg.Metrics != nil {
		spec.MetricsSocket = cfg.Metrics.socket("source")
	}
	expected := cfg.Expected
	if expected == nil {
		if expected, err = spec.ExpectedChecksums(); err != nil {
			return nil, fmt.Errorf("reference run: %w", err)
		}
	}

	start := time.Now()
	srcOut, srcCmd, err := startChild(ctx, cfg.Argv, "migrate-source", spec, link.SourceCmd)
	if err != nil {
		return nil, err
	}
	defer srcCmd.Process.Kill()
	var addr struct {
		Addr string `json:"addr"`
	}
	line, err := srcOut.ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &addr) != nil || addr.Addr == "" {
		srcCmd.Process.Kill()
		srcCmd.Wait()
		return nil, fmt.Errorf("source did not start: %q %v", line, err)
	}
	spec.Addr = addr.Addr
	if cfg.Intercept != nil {
		if spec.Addr, err = cfg.Intercept(addr.Addr); err != nil {
			srcCmd.Process.Kill()
			srcCmd.Wait()
			return nil, fmt.Errorf("intercept: %w", err)
		}
	}
	if cfg.Metrics != nil {
		spec.MetricsSocket = cfg.Metrics.socket("target")
	}
	tgtOut, tgtCmd, err := startChild(ctx, cfg.Argv, "migrate-target", spec, link.TargetCmd)
	if err != nil {
		return nil, err
	}
	defer tgtCmd.Process.Kill()
	var src SourceReport
	var tgt TargetReport
	if cfg.Started != nil {
		cfg.Started(srcCmd.Process, tgtCmd.Process)
	}
	// Both at once: a side that waits on the other must not be held up by
	// the order the reports are read in.
	tgtDone := make(chan error, 1)
	go func() { tgtDone <- readReport(tgtOut, tgtCmd, &tgt) }()
	srcErr := readReport(srcOut, srcCmd, &src)
	tgtErr := <-tgtDone
	if cfg.Ended != nil {
		cfg.Ended(&src, &tgt, srcErr, tgtErr)
	}
	wall := time.Since(start)
	if srcErr != nil {
		return nil, fmt.Errorf("source: %w", srcErr)
	}
	if tgtErr != nil {
		return nil, fmt.Errorf("target: %w", tgtErr)
	}
	r := &MigrateResult{
		Workload: spec.Workload, Policy: spec.Policy, Link: link.Describe(), Gang: max(spec.Gang, 1),
		Converged: src.Converged, Action: src.Action, TotalSeconds: tgt.Complete.Sub(src.Start).Seconds(), WallSeconds: wall.Seconds(),
		PrecopyRounds: len(src.Rounds), PrecopySeconds: src.PrecopyTime.Seconds(), PostcopySeconds: tgt.PostcopyTime.Seconds(),
		PrecopyBytes: src.PrecopyB, PostcopyBytes: src.PostcopyB, BytesSent: src.PrecopyB + src.PostcopyB,
		DemandFaults: tgt.DemandFaults, Invalidated: src.Invalidated,
		RateBefore: src.RateBefore, RateDuring: src.RateDuring, RateAfter: tgt.RateAfter,
		Decisions: src.Decisions, Source: &src, Target: &tgt,
	}
	for _, st := range src.Rounds {
		r.RoundBytes = append(r.RoundBytes, st.Bytes)
	}
	r.Timeline = newTimeline(&src, &tgt)
	tgt.Samples = nil // in the timeline now
	r.DowntimeMs = -1 // the workload had finished before the switch: nothing to measure
	if !src.LastStep.IsZero() && !tgt.FirstStep.IsZero() {
		r.DowntimeMs = float64(tgt.FirstStep.Sub(src.LastStep)) / float64(time.Millisecond)
	}
	r.ResultOK = len(tgt.Checksums) == len(expected)
	for i := range expected {
		if !r.ResultOK || tgt.Checksums[i] != expected[i] {
			r.ResultOK = false
		}
	}
	return r, nil
}

func startChild(ctx context.Context, argv []string, role string, spec MigrateSpec, wrap func(*exec.Cmd) *exec.Cmd) (*bufio.Reader, *exec.Cmd, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, nil, err
	}
	args := append(append([]string{}, argv[1:]...), role, "--spec", string(b))
	cmd := wrap(exec.CommandContext(ctx, argv[0], args...))
	cmd.Stderr = &syncbuf.Buffer{Max: 64 << 10}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", role, err)
	}
	return bufio.NewReader(out), cmd, nil
}

// readReport reads a child's last JSON line into v and waits for it.
func readReport(r *bufio.Reader, cmd *exec.Cmd, v interface{ errorText() string }) error {
	var last []byte
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			last = line
		}
		if err != nil {
			break
		}
	}
	werr := cmd.Wait()
	stderr := ""
	if lb, ok := cmd.Stderr.(*syncbuf.Buffer); ok {
		stderr = strings.TrimSpace(lb.String())
	}
	if last == nil || json.Unmarshal(last, v) != nil {
		return fmt.Errorf("no report (%v): %s", werr, stderr)
	}
	if e := v.errorText(); e != "" {
		return errors.New(e)
	}
	if werr != nil {
		return fmt.Errorf("%v: %s", werr, stderr)
	}
	return nil
}

func (s *SourceReport) errorText() string { return s.Error }
func (t *TargetReport) errorText() string { return t.Error }

// CalibrateRate runs an unpaced workload for d on scratch memory and
// returns the steps per second one of its threads makes: how to size the
// Steps of a workload that must still be running after a given time.
func CalibrateRate(name string, pages, threads int, seed int64, d time.Duration) (float64, error) {
	m, err := NewMutator(MutatorConfig{Name: name, Pages: pages, Threads: threads, Seed: seed})
	if err != nil {
		return 0, err
	}
	mem, err := unix.Mmap(-1, 0, pages*m.PageSize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(mem)
	m.Init(mem)
	start := time.Now()
	m.Run(mem, nil)
	time.Sleep(d)
	st := m.Pause()
	return float64(sumSteps(st)) / float64(threads) / time.Since(start).Seconds(), nil
}

// Timeline is one migration's course, in seconds since its start (the
// probe, or the first round, or the switch without either): what the
// timeline plot draws.
type Timeline struct {
	Probe  *Span  `json:"probe,omitempty"`
	Rounds []Span `json:"rounds"`
	// Switch: the workload stopped on the source. Resume: its first step
	// on the target (-1: it had finished before). Complete: the last page
	// arrived.
	Switch   float64 `json:"switch"`
	Resume   float64 `json:"resume"`
	Complete float64 `json:"complete"`
	// Samples are the target's cumulative counters during post-copy.
	Samples []TimelinePoint `json:"samples"`
}

// Span is a start and an end, in seconds.
type Span struct {
	Start float64 `json:"start"`
	End   float64 `json:"end"`
}

// TimelinePoint is a TargetSample in seconds since the start.
type TimelinePoint struct {
	T          float64 `json:"t"`
	Demand     uint64  `json:"demand_faults"`
	Pushed     uint64  `json:"pushed_pages"`
	Background uint64  `json:"background_pages"`
}

func newTimeline(src *SourceReport, tgt *TargetReport) *Timeline {
	at := func(t time.Time) float64 { return t.Sub(src.Start).Seconds() }
	span := func(s TimeSpan) Span { return Span{Start: at(s.Start), End: at(s.End)} }
	tl := &Timeline{Switch: at(src.SwitchAt), Resume: -1, Complete: at(tgt.Complete)}
	if src.ProbeSpan != nil {
		p := span(*src.ProbeSpan)
		tl.Probe = &p
	}
	for _, s := range src.RoundSpans {
		tl.Rounds = append(tl.Rounds, span(s))
	}
	if !tgt.FirstStep.IsZero() {
		tl.Resume = at(tgt.FirstStep)
	}
	for _, s := range tgt.Samples {
		tl.Samples = append(tl.Samples, TimelinePoint{T: at(s.At), Demand: s.Demand, Pushed: s.Pushed, Background: s.Background})
		if tl.Samples[len(tl.Samples)-1].T >= tl.Complete {
			break // the workload runs on, but the migration is over
		}
	}
	return tl
}
