package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/predictor"
)

// PrefetchConfig configures the prefetch benchmark.
type PrefetchConfig struct {
	// Workloads to run (default: the whole suite, WorkloadNames).
	Workloads []string
	// Predictors to compare (default: predictor.Names()).
	Predictors []string
	// Size of the region in bytes (default 64 MiB).
	Size int64
	// Threads running each workload (default 4).
	Threads int
	// Seed is the layout and run seed of the measured runs and the seed of
	// the region's content; the warm-up recording uses run seed Seed+1.
	Seed uint64
	// Budget is the most pages pushed after one demand fault, the same for
	// every predictor (default 16).
	Budget int
	// Adaptive lets the server adapt its push window to the target's probe
	// reports; default off, so every predictor may push its full budget
	// after every fault and nextn pushes exactly Budget pages.
	Adaptive bool
	// ProbeEvery is the target's probe sampling (faulthandler
	// Options.ProbeEvery). Default 8, the target's default: pushed_used is
	// estimated from the sample. 1 makes every pushed page a probe, so
	// pushed_used is counted exactly, at the cost of a local fault for every
	// used pushed page (which slows the post-copy).
	ProbeEvery int
	// Pull turns the background pull on (default off: pages arrive only by
	// demand and push, which isolates the predictors).
	Pull bool
	// ServerArgv starts a page server in another process serving a demo
	// region of Size bytes with content seed Seed (the CLI re-executes itself
	// as `pagewarp serve --demo`); the benchmark appends --predictor,
	// --push-budget, --push-fixed and --warm.
	ServerArgv []string
	// Dir holds the recorded traces (default: a temporary directory,
	// removed at the end).
	Dir string
	// Log receives progress lines (nil: none).
	Log io.Writer
}

// PrefetchResult is one workload × predictor run.
type PrefetchResult struct {
	Workload  string `json:"workload"`
	Predictor string `json:"predictor"`
	// Warm says what the server's predictor was warmed with: "" (nothing),
	// "recorded run" (the first-touch order of an earlier run of the same
	// workload, run seed Seed+1) or "future" (oracle: this run's own order).
	Warm string `json:"warm,omitempty"`
	// DemandFaults counts demand requests: faults that went to the source.
	DemandFaults uint64 `json:"demand_faults"`
	// Pushed counts pages installed from pushes.
	Pushed uint64 `json:"pushed"`
	// PushedUsed counts pushed pages the workload touched within the probe
	// window (exact when every pushed page is a probe, else estimated from
	// the probes).
	PushedUsed uint64  `json:"pushed_used"`
	Precision  float64 `json:"precision"`
	// PostcopySeconds runs from the handler's start to the last page
	// resident.
	PostcopySeconds float64 `json:"postcopy_seconds"`

	// Context.
	FaultsCoalesced uint64  `json:"faults_coalesced"`
	Probes          uint64  `json:"probes"`
	ProbesUsed      uint64  `json:"probes_used"`
	ProbesUnused    uint64  `json:"probes_unused"`
	StallSeconds    float64 `json:"stall_seconds"` // demand service time summed over demand faults
	ServiceP50us    float64 `json:"service_p50_us"`
	ServiceP99us    float64 `json:"service_p99_us"`
	TouchSeconds    float64 `json:"touch_seconds"`
	// ResultOK says the workload's checksum equals that of the same
	// workload over the source's memory.
	ResultOK bool `json:"result_ok"`
	// DemandOverTime is the cumulative count of demand faults against the
	// time since the post-copy started (the target handler's Start),
	// sampled every millisecond from the handler's counters and kept at
	// DemandBins+1 evenly spaced instants, the last one the post-copy's
	// end. Absent from reports made before it was added.
	DemandOverTime *CountCurve `json:"demand_over_time,omitempty"`
}

// CountCurve is a cumulative count over time: Count[i] events had happened
// Seconds[i] after the start.
type CountCurve struct {
	Seconds []float64 `json:"seconds"`
	Count   []uint64  `json:"count"`
}

// DemandBins is the number of intervals of a run's DemandOverTime.
const DemandBins = 100

// demandSampleEvery is how often a measured run samples its demand count:
// a goroutine reading the handler's atomic counters, about a microsecond
// of CPU per sample.
const demandSampleEvery = time.Millisecond

// countSample is one reading of a cumulative count.
type countSample struct {
	at time.Duration
	n  uint64
}

// binCounts resamples readings (in time order) at bins+1 instants evenly
// spaced over [0, end]: each takes the last reading at or before it, the
// last instant the final count.
func binCounts(samples []countSample, end time.Duration, final uint64, bins int) *CountCurve {
	c := &CountCurve{Seconds: make([]float64, bins+1), Count: make([]uint64, bins+1)}
	j := 0
	var n uint64
	for k := 0; k <= bins; k++ {
		t := time.Duration(int64(end) * int64(k) / int64(bins))
		for j < len(samples) && samples[j].at <= t {
			n = samples[j].n
			j++
		}
		c.Seconds[k] = math.Round(t.Seconds()*1e6) / 1e6
		c.Count[k] = min(n, final)
	}
	c.Count[bins] = final
	return c
}

// PrefetchSetup records the configuration of a prefetch run.
type PrefetchSetup struct {
	Pages      uint64 `json:"pages"`
	PageSize   int    `json:"page_size"`
	Threads    int    `json:"threads"`
	Seed       uint64 `json:"seed"`
	Budget     int    `json:"budget"`
	Window     string `json:"window"`
	ProbeEvery int    `json:"probe_every"`
	Pull       bool   `json:"pull"`
	Warming    string `json:"warming"`
	CPUs       int    `json:"cpus"`
	Kernel     string `json:"kernel"`
}

// PrefetchReport is the JSON of `pagewarp bench prefetch`.
type PrefetchReport struct {
	Results []PrefetchResult `json:"results"`
	Setup   PrefetchSetup    `json:"setup"`
}

// warmingNote explains the warm-up to readers of the report.
const warmingNote = "ppm and workingset are warmed, for every workload alike, with the first-touch order " +
	"recorded (no push, no pull) from an earlier run of the same workload: same layout seed (the program's " +
	"data: strides, records, the pointer structure, the hot set), run seed+1 (what differs between runs: " +
	"interleavings, zipf draws, random orders). oracle is given the measured run's own first-touch order " +
	"(threads merged round-robin): the upper bound for the budget. The others learn online only."

// Prefetch runs every workload with every predictor against a page server
// in another process over loopback and measures demand faults, pushes and
// their use, and the post-copy time. Every run's result is checked against
// the source.
func Prefetch(ctx context.Context, cfg PrefetchConfig) (*PrefetchReport, error) {
	if len(cfg.Workloads) == 0 {
		cfg.Workloads = WorkloadNames()
	}
	if len(cfg.Predictors) == 0 {
		cfg.Predictors = predictor.Names()
	}
	if cfg.Size <= 0 {
		cfg.Size = 64 << 20
	}
	if cfg.Threads <= 0 {
		cfg.Threads = 4
	}
	if cfg.Budget <= 0 {
		cfg.Budget = 16
	}
	if cfg.ProbeEvery == 0 {
		cfg.ProbeEvery = 8
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if len(cfg.ServerArgv) == 0 {
		return nil, errors.New("no server command")
	}
	for _, w := range cfg.Workloads {
		if _, err := NewWorkload(w, 1, 1, 0); err != nil {
			return nil, err
		}
	}
	for _, p := range cfg.Predictors {
		if _, err := predictor.New(p, predictor.Config{Pages: 1}); err != nil {
			return nil, err
		}
	}
	pageSize := os.Getpagesize()
	if cfg.Size%int64(pageSize) != 0 {
		return nil, fmt.Errorf("region size %d is not a multiple of the page size %d", cfg.Size, pageSize)
	}
	pages := uint64(cfg.Size) / uint64(pageSize)
	if pages > math.MaxUint32 {
		return nil, fmt.Errorf("region of %d pages: the workloads address at most 2^32", pages)
	}
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "pagewarp-prefetch-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		cfg.Dir = dir
	}
	window := "fixed: the full budget after every fault"
	if cfg.Adaptive {
		window = "adaptive (AIMD on the target's probe reports)"
	}
	rep := &PrefetchReport{Setup: PrefetchSetup{
		Pages: pages, PageSize: pageSize, Threads: cfg.Threads, Seed: cfg.Seed, Budget: cfg.Budget, Window: window,
		ProbeEvery: cfg.ProbeEvery, Pull: cfg.Pull, Warming: warmingNote, CPUs: runtime.NumCPU(), Kernel: kernelRelease(),
	}}
	defer runtime.GOMAXPROCS(faulthandler.ReserveProcs(cfg.Threads))

	// The source's content, to check every run's result against.
	src := make([]byte, cfg.Size)
	Content{Seed: cfg.Seed}.Fill(src, pageSize)

	for _, name := range cfg.Workloads {
		w, err := NewWorkloadRun(name, uint32(pages), cfg.Threads, cfg.Seed, cfg.Seed)
		if err != nil {
			return nil, err
		}
		want := w.Run(src, pageSize).Checksum

		// The warm-up: an earlier run of the same program, recorded.
		earlier, err := NewWorkloadRun(name, uint32(pages), cfg.Threads, cfg.Seed, cfg.Seed+1)
		if err != nil {
			return nil, err
		}
		rec, err := prefetchRun(ctx, append(cfg.ServerArgv, "--predictor", "none"), earlier,
			faulthandler.Options{NoPull: true, NoPush: true, RecordFaults: true}, false)
		if err != nil {
			return nil, fmt.Errorf("%s: recording the warm-up run: %w", name, err)
		}
		warmFile := filepath.Join(cfg.Dir, name+".recorded.pwt")
		if err := writeTraceFile(warmFile, predictor.Trace{PageSize: uint32(pageSize), Pages: pages, Seq: rec.trace}); err != nil {
			return nil, err
		}
		futureFile := filepath.Join(cfg.Dir, name+".future.pwt")
		if err := writeTraceFile(futureFile, predictor.Trace{PageSize: uint32(pageSize), Pages: pages, Seq: w.FirstTouches()}); err != nil {
			return nil, err
		}

		for _, pn := range cfg.Predictors {
			argv := append(append([]string(nil), cfg.ServerArgv...), "--predictor", pn, "--push-budget", strconv.Itoa(cfg.Budget))
			if !cfg.Adaptive {
				argv = append(argv, "--push-fixed")
			}
			warm := ""
			switch pn {
			case "ppm", "workingset":
				argv, warm = append(argv, "--warm", warmFile), "recorded run"
			case "oracle":
				argv, warm = append(argv, "--warm", futureFile), "future"
			}
			run, err := prefetchRun(ctx, argv, w, faulthandler.Options{NoPull: !cfg.Pull, ProbeEvery: cfg.ProbeEvery}, true)
			if err != nil {
				return nil, fmt.Errorf("%s with %s: %w", name, pn, err)
			}
			st := run.stats
			r := PrefetchResult{
				Workload: name, Predictor: pn, Warm: warm,
				DemandFaults:    st.DemandRequests,
				Pushed:          st.PushedPages,
				PostcopySeconds: st.Elapsed.Seconds(),
				FaultsCoalesced: st.FaultsCoalesced,
				Probes:          st.ProbesStaged,
				ProbesUsed:      st.ProbesUsed,
				ProbesUnused:    st.ProbesUnused,
				StallSeconds:    st.DemandServiceTotal.Seconds(),
				ServiceP50us:    float64(st.ServiceP50.Nanoseconds()) / 1e3,
				ServiceP99us:    float64(st.ServiceP99.Nanoseconds()) / 1e3,
				TouchSeconds:    run.touch.Elapsed.Seconds(),
				ResultOK:        run.touch.Checksum == want,
				DemandOverTime:  run.demand,
			}
			if settled := st.ProbesUsed + st.ProbesUnused; settled > 0 {
				if cfg.ProbeEvery == 1 {
					r.PushedUsed = st.ProbesUsed
				} else {
					r.PushedUsed = uint64(math.Round(float64(r.Pushed) * float64(st.ProbesUsed) / float64(settled)))
				}
			}
			if r.Pushed > 0 {
				r.Precision = float64(r.PushedUsed) / float64(r.Pushed)
			}
			fmt.Fprintf(cfg.Log, "%-13s %-10s demand faults %6d  pushed %6d  used %6d  precision %.3f  post-copy %.3fs  ok %v\n",
				name, pn, r.DemandFaults, r.Pushed, r.PushedUsed, r.Precision, r.PostcopySeconds, r.ResultOK)
			rep.Results = append(rep.Results, r)
		}
	}
	return rep, nil
}

type prefetchOutcome struct {
	stats  faulthandler.Stats
	touch  TouchResult
	trace  []uint64
	demand *CountCurve // with sampling
}

// prefetchRun starts a server with argv, migrates its region into this
// process while w runs on it, and returns the target's figures; with
// sample, also its demand faults over time. The target handler runs in
// this process, so the sampler reads its counters directly.
func prefetchRun(ctx context.Context, argv []string, w *Workload, opts faulthandler.Options, sample bool) (*prefetchOutcome, error) {
	srv, err := StartServer(ctx, argv)
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	h, err := faulthandler.Dial(ctx, "tcp", srv.Addr, opts)
	if err != nil {
		return nil, err
	}
	h.Start()
	var (
		samples     []countSample
		stopSampler = func() {}
	)
	if sample {
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			tk := time.NewTicker(demandSampleEvery)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tk.C:
					st := h.Stats()
					samples = append(samples, countSample{st.Elapsed, st.DemandRequests})
				}
			}
		}()
		var once sync.Once
		stopSampler = func() { once.Do(func() { close(stop); <-done }) }
		defer stopSampler()
	}
	touched := make(chan TouchResult, 1)
	go func() { touched <- w.Run(h.Memory(), h.PageSize()) }()
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := h.Wait(waitCtx); err != nil {
		// Threads may still be blocked in faults: the process must not
		// unmap under them (Close would); report and leave it to exit.
		return nil, fmt.Errorf("migration failed with %d of %d pages resident: %w", h.Resident(), h.Pages(), err)
	}
	stopSampler()
	out := &prefetchOutcome{touch: <-touched, stats: h.Stats(), trace: h.FaultTrace()}
	if sample {
		out.demand = binCounts(samples, out.stats.Elapsed, out.stats.DemandRequests, DemandBins)
	}
	h.Close()
	h.Release()
	return out, nil
}

func writeTraceFile(path string, t predictor.Trace) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := predictor.WriteTrace(f, t); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
