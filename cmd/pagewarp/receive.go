package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/internal/progress"
	"github.com/pagewarp/pagewarp/metrics"
	"github.com/pagewarp/pagewarp/predictor"
)

// receiveSummary is what receive prints (as text, or JSON with --json).
type receiveSummary struct {
	Server          string  `json:"server"`
	Pages           uint64  `json:"pages"`
	PageSize        int     `json:"page_size"`
	Bytes           int64   `json:"bytes"`
	Seconds         float64 `json:"seconds"`
	Gbps            float64 `json:"gbps"`
	FaultEvents     uint64  `json:"fault_events"`
	DemandRequests  uint64  `json:"demand_requests"`
	FaultsCoalesced uint64  `json:"faults_coalesced"`
	DemandPages     uint64  `json:"demand_pages"`
	BackgroundPages uint64  `json:"background_pages"`
	ZeroPages       uint64  `json:"zero_pages"`
	PushNotices     uint64  `json:"push_notices"`
	PushedPages     uint64  `json:"pushed_pages"`
	ProbesStaged    uint64  `json:"probes"`
	ProbesUsed      uint64  `json:"probes_used"`
	ProbesUnused    uint64  `json:"probes_unused"`
	BytesReceived   uint64  `json:"bytes_received"`
	ServiceP50us    float64 `json:"demand_service_p50_us"`
	ServiceP99us    float64 `json:"demand_service_p99_us"`
	Resumes         uint64  `json:"resumes"`
	ResumeSeconds   float64 `json:"resume_seconds"`
	Stalls          uint64  `json:"stalls"`
	Corruptions     uint64  `json:"corruptions"`
	Verified        bool    `json:"verified"`
	TouchThreads    int     `json:"touch_threads,omitempty"`
	TouchSeconds    float64 `json:"touch_seconds,omitempty"`
	Workload        string  `json:"workload,omitempty"`
	Out             string  `json:"out,omitempty"`
	Trace           string  `json:"trace,omitempty"`
	TraceFaults     int     `json:"trace_faults,omitempty"`
}

type receiveOpts struct {
	connect      string
	region       int64
	out          string
	verify       bool
	touchThreads int
	touchSeed    uint64
	workload     string // bench workload the touch threads run ("" = random order)
	noPull       bool
	noPush       bool
	probeEvery   int
	spin         time.Duration
	pullChunk    int
	pullWindow   int
	bulkStreams  int
	resumeWait   time.Duration // Options.ResumeDeadline (0: default; negative: no resume)
	stallTimeout time.Duration // Options.StallTimeout (0: default; negative: no stall detection)
	asJSON       bool
	traceOut     string // write the demand-fault sequence here (trace record)
	metricsAddr  string // serve the fault handler's metrics here ("": off)
	insecure     bool   // allow a non-loopback metricsAddr, and connect to a non-loopback server without TLS
	tls          tlsFlags
}

func newReceiveCmd(g *globals) *cobra.Command {
	var o receiveOpts
	cmd := &cobra.Command{
		Use:   "receive --connect HOST:PORT [--verify] [--out FILE]",
		Short: "Map a region and pull it from a page server (the target side)",
		Long: `receive connects to a page server, maps a region of the size it announces and
registers it with userfaultfd, then pulls every page: touches of missing pages (from
--touch-threads workers touching every page in random order) become demand requests
on an urgent connection, and a background pull on a bulk connection brings the rest.
Once every page is resident it unregisters the region, says goodbye, and prints a
summary. --verify compares a digest of the whole region with the server's.
A server that is not on loopback is reached only with mutual TLS (--tls-cert,
--tls-key, --tls-ca: the server's certificate must be signed by that CA and name
the host of --connect) or with --insecure.
--metrics-addr 127.0.0.1:9091 serves the fault handler's Prometheus metrics
(docs/metrics.md) at http://127.0.0.1:9091/metrics while the region arrives.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.connect == "" {
				return errors.New("--connect HOST:PORT is required")
			}
			if o.touchThreads < 0 {
				return fmt.Errorf("--touch-threads %d: want 0 or more", o.touchThreads)
			}
			if o.pullChunk < 0 || o.pullChunk > 1024 || o.pullWindow < 0 || o.bulkStreams < 0 || o.bulkStreams > 64 {
				return fmt.Errorf("--pull-chunk %d / --pull-window %d / --bulk-streams %d: want 0..1024, 0 or more, 0..64",
					o.pullChunk, o.pullWindow, o.bulkStreams)
			}
			if o.noPull && o.touchThreads == 0 {
				return errors.New("--no-pull needs --touch-threads: nothing would fetch the pages")
			}
			if o.metricsAddr != "" {
				if err := checkMetricsAddr(o.metricsAddr, o.insecure); err != nil {
					return err
				}
			}
			sum, err := receive(cmd.Context(), g, o)
			if err != nil {
				return err
			}
			return printReceive(g.stdout, sum, o.asJSON)
		},
	}
	f := cmd.Flags()
	addWorkloadFlags(f, &o, 0)
	f.Int64Var(&o.region, "region", -1, "region id to receive (default: the server's first)")
	f.StringVar(&o.out, "out", "", "write the received region to this file")
	f.BoolVar(&o.verify, "verify", false, "check the whole region against the server's digest")
	f.BoolVar(&o.noPull, "no-pull", false, "no background pull: pages arrive only when touched")
	f.BoolVar(&o.noPush, "no-push", false, "decline the server's push of predicted pages")
	f.IntVar(&o.probeEvery, "probe-every", 0, "hold back one pushed page in this many as a probe that reports use to the server (0: default 8; 1: every pushed page, exact; -1: none)")
	f.DurationVar(&o.spin, "spin", 0, "fault loop busy-poll time after each fault (0: none, the default)")
	f.IntVar(&o.pullChunk, "pull-chunk", 0, "pages per background request (0: default 512, at most 1024)")
	f.IntVar(&o.pullWindow, "pull-window", 0, "background requests in flight per bulk connection (0: default 2)")
	f.IntVar(&o.bulkStreams, "bulk-streams", 0, "bulk connections for the pull, each installing on its own (0: default 3)")
	f.DurationVar(&o.resumeWait, "resume-deadline", faulthandler.DefaultResumeDeadline,
		"how long to keep reconnecting to the server after a connection drops (threads on missing pages wait meanwhile); "+
			"past it the migration fails, naming the missing pages; negative: fail at the first drop")
	f.DurationVar(&o.stallTimeout, "stall-timeout", faulthandler.DefaultStallTimeout,
		"treat a connection that carries nothing for this long while replies are outstanding as dropped, and resume "+
			"(well above the gap between frames of a slow but healthy link); negative: never")
	f.BoolVar(&o.asJSON, "json", false, "print the summary as JSON")
	f.StringVar(&o.metricsAddr, "metrics-addr", "", metricsAddrUsage)
	f.Lookup("insecure").Usage = "connect to a non-loopback server without TLS, and allow a non-loopback --metrics-addr"
	return cmd
}

// addWorkloadFlags defines the flags receive and trace record share: where
// to connect and what the touch threads do.
func addWorkloadFlags(f *pflag.FlagSet, o *receiveOpts, threads int) {
	f.StringVar(&o.connect, "connect", "", "page server address HOST:PORT")
	f.IntVar(&o.touchThreads, "touch-threads", threads, "threads touching the region while it arrives")
	f.Uint64Var(&o.touchSeed, "touch-seed", 1, "seed of the touch order")
	f.StringVar(&o.workload, "workload", "", "access pattern of the touch threads: "+
		strings.Join(bench.WorkloadNames(), ", ")+" (default: every page once in random order)")
	o.tls.register(f, "target")
	f.BoolVar(&o.insecure, "insecure", false, "connect to a non-loopback server without TLS")
}

func receive(ctx context.Context, g *globals, o receiveOpts) (*receiveSummary, error) {
	if err := checkPageAddr("--connect", o.connect, o.tls.enabled(), o.insecure); err != nil {
		return nil, err
	}
	tlsConfig, err := o.tls.clientConfig()
	if err != nil {
		return nil, err
	}
	opts := faulthandler.Options{TLS: tlsConfig, Verify: o.verify, NoPull: o.noPull, NoPush: o.noPush, ProbeEvery: o.probeEvery, Spin: o.spin, Logger: g.logger(),
		PullChunk: o.pullChunk, PullWindow: o.pullWindow, BulkStreams: o.bulkStreams, RecordFaults: o.traceOut != "",
		ResumeDeadline: o.resumeWait, StallTimeout: o.stallTimeout}
	if o.region >= 0 {
		r := uint32(o.region)
		opts.Region = &r
	}
	if o.touchThreads > 0 {
		defer runtime.GOMAXPROCS(faulthandler.ReserveProcs(o.touchThreads))
		if o.workload != "" {
			// Fail on a bad name before anything connects.
			if _, err := bench.NewWorkload(o.workload, 1, 1, o.touchSeed); err != nil {
				return nil, err
			}
		}
	}
	// Metrics listen before anything connects, so that a taken port fails
	// the command early; the handler's collector joins once it exists.
	var reg *prometheus.Registry
	if o.metricsAddr != "" {
		reg = newMetricsRegistry()
		stop, err := serveMetrics(o.metricsAddr, reg)
		if err != nil {
			return nil, err
		}
		defer stop()
		fmt.Fprintf(g.stderr, "metrics on http://%s/metrics\n", o.metricsAddr)
	}
	h, err := faulthandler.Dial(ctx, "tcp", o.connect, opts)
	if err != nil {
		return nil, err
	}
	if reg != nil {
		reg.MustRegister(metrics.NewFaultHandlerCollector(h, prometheus.Labels{"region": strconv.FormatUint(uint64(h.RegionID()), 10)}))
	}
	// After a failure Close keeps the region registered: the touch threads
	// blocked on missing pages stay blocked (never woken to a zero page)
	// until the command returns its error and the process exits. Only a
	// complete region is released.
	complete := false
	defer func() {
		h.Close()
		if complete {
			h.Release()
		}
	}()
	h.Start()

	var touched chan bench.TouchResult
	if o.touchThreads > 0 {
		touched = make(chan bench.TouchResult, 1)
		if o.workload == "" {
			go func() { touched <- bench.TouchRandom(h.Memory(), h.PageSize(), o.touchThreads, o.touchSeed) }()
		} else {
			w, err := bench.NewWorkload(o.workload, uint32(h.Pages()), o.touchThreads, o.touchSeed)
			if err != nil {
				return nil, err
			}
			go func() { touched <- w.Run(h.Memory(), h.PageSize()) }()
		}
	}
	// On a terminal (and not --json), a line of pages resident, bytes
	// received, rate and ETA while the region arrives.
	var line *progress.Line
	if !o.asJSON {
		line = progress.New(g.stdout, "receive", "pages")
	}
	stopLine := make(chan struct{})
	lineDone := make(chan struct{})
	go func() {
		defer close(lineDone)
		if line == nil {
			return
		}
		defer line.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			line.Update(h.Resident(), h.Pages(), int64(h.Stats().BytesReceived))
			select {
			case <-stopLine:
				return
			case <-t.C:
			}
		}
	}()
	err = h.Wait(ctx)
	close(stopLine)
	<-lineDone
	if err != nil {
		return nil, fmt.Errorf("migration failed with %d of %d pages resident: %w", h.Resident(), h.Pages(), err)
	}
	complete = true
	st := h.Stats()
	sum := &receiveSummary{
		Server:          o.connect,
		Pages:           st.Pages,
		PageSize:        st.PageSize,
		Bytes:           int64(st.Pages) * int64(st.PageSize),
		Seconds:         st.Elapsed.Seconds(),
		FaultEvents:     st.FaultEvents,
		DemandRequests:  st.DemandRequests,
		FaultsCoalesced: st.FaultsCoalesced,
		DemandPages:     st.DemandPages,
		BackgroundPages: st.BackgroundPages,
		ZeroPages:       st.ZeroPages,
		PushNotices:     st.PushNotices,
		PushedPages:     st.PushedPages,
		ProbesStaged:    st.ProbesStaged,
		ProbesUsed:      st.ProbesUsed,
		ProbesUnused:    st.ProbesUnused,
		BytesReceived:   st.BytesReceived,
		ServiceP50us:    float64(st.ServiceP50.Nanoseconds()) / 1e3,
		ServiceP99us:    float64(st.ServiceP99.Nanoseconds()) / 1e3,
		Resumes:         st.Resumes,
		ResumeSeconds:   st.DownTime.Seconds(),
		Stalls:          st.Stalls,
		Corruptions:     st.Corruptions,
		Verified:        o.verify,
	}
	sum.Gbps = float64(sum.Bytes) / st.Elapsed.Seconds() / 1e9
	if touched != nil {
		t := <-touched
		sum.TouchThreads, sum.TouchSeconds, sum.Workload = o.touchThreads, t.Elapsed.Seconds(), o.workload
	}
	if o.out != "" {
		if err := writeFile(o.out, h.Memory()); err != nil {
			return nil, err
		}
		sum.Out = o.out
	}
	if o.traceOut != "" {
		t := predictor.Trace{PageSize: uint32(st.PageSize), Pages: st.Pages, Seq: h.FaultTrace()}
		if err := writeTrace(o.traceOut, t); err != nil {
			return nil, err
		}
		sum.Trace, sum.TraceFaults = o.traceOut, len(t.Seq)
	}
	return sum, nil
}

func writeFile(path string, mem []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(mem); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

func printReceive(w io.Writer, s *receiveSummary, asJSON bool) error {
	if asJSON {
		return printJSON(w, s)
	}
	fmt.Fprintf(w, "received %s (%d pages of %d bytes) from %s in %.3fs (%.2f GB/s)\n",
		bench.FormatSize(s.Bytes), s.Pages, s.PageSize, s.Server, s.Seconds, s.Gbps)
	fmt.Fprintf(w, "  demand:     %d fault events, %d demand requests (%d faults coalesced), %d pages\n",
		s.FaultEvents, s.DemandRequests, s.FaultsCoalesced, s.DemandPages)
	fmt.Fprintf(w, "  background: %d pages; zero pages: %d; page bytes received: %s\n",
		s.BackgroundPages, s.ZeroPages, bench.FormatSize(int64(s.BytesReceived)))
	if s.PushNotices > 0 {
		fmt.Fprintf(w, "  pushed:     %d pages after %d demand replies; probes %d: %d touched, %d expired untouched\n",
			s.PushedPages, s.PushNotices, s.ProbesStaged, s.ProbesUsed, s.ProbesUnused)
	}
	if s.DemandRequests > 0 {
		fmt.Fprintf(w, "  demand service time (request sent to page installed): p50 %.1f µs, p99 %.1f µs\n", s.ServiceP50us, s.ServiceP99us)
	}
	if s.Resumes > 0 {
		fmt.Fprintf(w, "  resumed:    %d times after the connection dropped (%d stalled, %d on damaged data), %.3fs without a connection in all\n",
			s.Resumes, s.Stalls, s.Corruptions, s.ResumeSeconds)
	}
	if s.TouchThreads > 0 {
		pattern := "every page in random order"
		if s.Workload != "" {
			pattern = "the " + s.Workload + " workload"
		}
		fmt.Fprintf(w, "  workload:   %d threads touched %s in %.3fs\n", s.TouchThreads, pattern, s.TouchSeconds)
	}
	if s.Verified {
		fmt.Fprintln(w, "  verified:   region digest matches the server's (xxh3-128 over per-page xxh3-64)")
	}
	if s.Out != "" {
		fmt.Fprintf(w, "  written to: %s\n", s.Out)
	}
	if s.Trace != "" {
		fmt.Fprintf(w, "  trace:      %d demand faults in order written to %s\n", s.TraceFaults, s.Trace)
	}
	fmt.Fprintln(w, "  every page resident; region unregistered; connections closed with bye")
	return nil
}
