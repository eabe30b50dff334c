package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/loopholelabs/userfaultfd-go/pkg/mapper"
	"golang.org/x/sys/unix"

	"github.com/pagewarp/pagewarp/bench/report"
	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/internal/syncbuf"
	"github.com/pagewarp/pagewarp/internal/uffd"
	"github.com/pagewarp/pagewarp/pageserver"
)

// FaultsConfig configures the fault benchmark.
type FaultsConfig struct {
	// Samples is the number of faults timed per mode (default 20000).
	Samples int
	// PullSize is the size of the region pulled for pull_gbps (default 256 MiB).
	PullSize int64
	// ServerArgv starts a page server in another process serving a demo
	// region of at least max(PullSize, Samples pages) with Seed: the
	// command prints "listening on ADDR" on its first line of stdout. Built
	// by the caller (the CLI re-executes itself as `pagewarp serve`).
	ServerArgv []string
	// Seed of the demo content.
	Seed uint64
	// Spin is the fault loop's busy-poll time of the headline modes (0:
	// faulthandler's default, no spinning). The in-process mode is also run
	// with 50 µs of spin, side by side, for comparison.
	Spin time.Duration
	// AwaitSpin is passed to the loopback handlers (0: faulthandler's default).
	AwaitSpin time.Duration
	// Log receives progress lines (nil: none).
	Log io.Writer
}

// FaultsResult is the JSON of `pagewarp bench faults`. Latencies are in
// microseconds as seen by the faulting thread: from just before the load
// that faults to just after it returns.
type FaultsResult struct {
	InprocessP50 float64 `json:"inprocess_p50_us"`
	InprocessP99 float64 `json:"inprocess_p99_us"`
	LoopbackP50  float64 `json:"loopback_p50_us"`
	LoopbackP99  float64 `json:"loopback_p99_us"`
	BaselineP50  float64 `json:"baseline_p50_us"`
	BaselineP99  float64 `json:"baseline_p99_us"`
	PullGbps     float64 `json:"pull_gbps"`

	// Context for the figures above.
	InprocessSpinP50  float64 `json:"inprocess_spin_p50_us"` // with 50 µs of busy-polling
	InprocessSpinP99  float64 `json:"inprocess_spin_p99_us"`
	InprocessOverBase float64 `json:"inprocess_over_baseline_p50"`
	Samples           int     `json:"samples"`
	PullBytes         int64   `json:"pull_bytes"`
	PullSeconds       float64 `json:"pull_seconds"`
	SpinMicros        float64 `json:"spin_us"`
	CPUs              int     `json:"cpus"`
	GoVersion         string  `json:"go_version"`
	Kernel            string  `json:"kernel"`
	BaselineNote      string  `json:"baseline_note,omitempty"`

	// CDF holds each mode's latency distribution as a quantile curve of
	// CDFPoints points (absent from reports made before it was added).
	CDF []LatencyCDF `json:"cdf,omitempty"`
}

// LatencyCDF is one mode's fault latency distribution: US[i] is the
// P[i]-quantile in µs, P evenly spaced from 0 (the fastest fault) to 1
// (the slowest).
type LatencyCDF struct {
	Mode  string    `json:"mode"`  // inprocess, inprocess_spin, loopback, baseline
	Label string    `json:"label"` // what the table calls it
	P     []float64 `json:"p"`
	US    []float64 `json:"us"`
}

// CDFPoints is the number of quantile points kept per mode.
const CDFPoints = 200

// latencyCDF reduces a mode's latencies (µs) to CDFPoints quantiles,
// rounded to the nanosecond (P to 4 decimals) to keep the JSON small.
func latencyCDF(mode, label string, lat []float64) (LatencyCDF, error) {
	q, err := report.QuantileCurve(label, lat, CDFPoints)
	if err != nil {
		return LatencyCDF{}, fmt.Errorf("%s latency CDF: %w", mode, err)
	}
	c := LatencyCDF{Mode: mode, Label: label, P: q.P, US: q.X}
	for i := range c.P {
		c.P[i] = math.Round(c.P[i]*1e4) / 1e4
		c.US[i] = math.Round(c.US[i]*1e3) / 1e3
	}
	return c, nil
}

// Labels of the fault modes, shared by the table and the CDF.
const (
	labelBaseline = "userfaultfd-go mapper.Handle (baseline)"
	labelSpin     = "pagewarp in-process (spin 50µs)"
	labelLoopback = "pagewarp, page server over loopback TCP"
)

func labelInprocess(spinMicros float64) string {
	return fmt.Sprintf("pagewarp in-process (spin %.0fµs)", spinMicros)
}

// Faults runs the fault benchmark: the same sequential fault workload
// served by pagewarp in-process, by pagewarp from a page server in another
// process over loopback TCP, and by userfaultfd-go's mapper.Handle, then a
// full background pull over loopback. All in one run, side by side.
func Faults(ctx context.Context, cfg FaultsConfig) (*FaultsResult, error) {
	if cfg.Samples <= 0 {
		cfg.Samples = 20000
	}
	if cfg.PullSize <= 0 {
		cfg.PullSize = 256 << 20
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	pageSize := os.Getpagesize()
	res := &FaultsResult{
		Samples:   cfg.Samples,
		CPUs:      runtime.NumCPU(),
		GoVersion: runtime.Version(),
		Kernel:    kernelRelease(),
	}
	defer runtime.GOMAXPROCS(faulthandler.ReserveProcs(1))

	content := Content{Seed: cfg.Seed}
	src := make([]byte, cfg.Samples*pageSize)
	content.Fill(src, pageSize)

	res.SpinMicros = max(0, float64(cfg.Spin)/1e3)
	addCDF := func(mode, label string, lat []float64) error {
		c, err := latencyCDF(mode, label, lat)
		if err == nil {
			res.CDF = append(res.CDF, c)
		}
		return err
	}

	// In-process, with the configured spin and with 50 µs of it.
	for i, spin := range []time.Duration{cfg.Spin, 50 * time.Microsecond} {
		lat, err := inprocessFaults(src, pageSize, spin)
		if err != nil {
			return nil, fmt.Errorf("in-process: %w", err)
		}
		p50, p99 := percentile(lat, 0.50), percentile(lat, 0.99)
		mode, label := "inprocess", labelInprocess(res.SpinMicros)
		if i == 0 {
			res.InprocessP50, res.InprocessP99 = p50, p99
		} else {
			res.InprocessSpinP50, res.InprocessSpinP99 = p50, p99
			mode, label = "inprocess_spin", labelSpin
		}
		if err := addCDF(mode, label, lat); err != nil {
			return nil, err
		}
		fmt.Fprintf(cfg.Log, "in-process (spin %v): p50 %.1f µs p99 %.1f µs\n", spin, p50, p99)
	}

	// userfaultfd-go's own loop.
	lat, err := baselineFaults(src, pageSize)
	if err != nil {
		res.BaselineNote = err.Error()
		fmt.Fprintf(cfg.Log, "baseline: %v\n", err)
	} else {
		res.BaselineP50, res.BaselineP99 = percentile(lat, 0.50), percentile(lat, 0.99)
		res.InprocessOverBase = res.InprocessP50 / res.BaselineP50
		if err := addCDF("baseline", labelBaseline, lat); err != nil {
			return nil, err
		}
		fmt.Fprintf(cfg.Log, "userfaultfd-go mapper.Handle: p50 %.1f µs p99 %.1f µs\n", res.BaselineP50, res.BaselineP99)
	}

	// A page server in another process.
	if len(cfg.ServerArgv) == 0 {
		return nil, errors.New("no server command to run the loopback modes")
	}
	srv, err := StartServer(ctx, cfg.ServerArgv)
	if err != nil {
		return nil, err
	}
	defer srv.Stop()

	lat, err = loopbackFaults(ctx, srv.Addr, cfg.Samples, faulthandler.Options{NoPull: true, Spin: cfg.Spin, AwaitSpin: cfg.AwaitSpin})
	if err != nil {
		return nil, fmt.Errorf("loopback: %w", err)
	}
	res.LoopbackP50, res.LoopbackP99 = percentile(lat, 0.50), percentile(lat, 0.99)
	if err := addCDF("loopback", labelLoopback, lat); err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Log, "loopback: p50 %.1f µs p99 %.1f µs\n", res.LoopbackP50, res.LoopbackP99)

	h, err := faulthandler.Dial(ctx, "tcp", srv.Addr, faulthandler.Options{Spin: cfg.Spin, AwaitSpin: cfg.AwaitSpin})
	if err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	defer func() { h.Close(); h.Release() }()
	h.Start()
	if err := h.Wait(ctx); err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	st := h.Stats()
	res.PullBytes = int64(st.Pages) * int64(st.PageSize)
	res.PullSeconds = st.Elapsed.Seconds()
	res.PullGbps = float64(res.PullBytes) / st.Elapsed.Seconds() / 1e9
	fmt.Fprintf(cfg.Log, "pull: %s in %v = %.2f GB/s\n", FormatSize(res.PullBytes), st.Elapsed.Round(time.Millisecond), res.PullGbps)
	if p := content.Check(h.Memory(), pageSize); p >= 0 {
		return nil, fmt.Errorf("pull: page %d differs from the source", p)
	}
	return res, nil
}

// timeTouches reads one byte of every page of mem in a fixed shuffled
// order and returns each read's latency in µs.
func timeTouches(mem []byte, pageSize int) []float64 {
	pages := len(mem) / pageSize
	order := rand.New(rand.NewPCG(1, 2)).Perm(pages)
	lat := make([]float64, pages)
	var s uint64
	for i, p := range order {
		t0 := time.Now()
		s += uint64(mem[p*pageSize+i%pageSize])
		lat[i] = float64(time.Since(t0).Nanoseconds()) / 1e3
	}
	sink.Add(s)
	return lat
}

var sink atomic.Uint64

func inprocessFaults(src []byte, pageSize int, spin time.Duration) ([]float64, error) {
	rs, err := pageserver.NewRegionSource("bench", src, pageSize)
	if err != nil {
		return nil, err
	}
	h, err := faulthandler.NewLocal(rs, 0, faulthandler.Options{NoPull: true, Spin: spin})
	if err != nil {
		return nil, err
	}
	h.Start()
	lat := timeTouches(h.Memory(), pageSize)
	if err := h.Wait(context.Background()); err != nil {
		return nil, err
	}
	if !bytes.Equal(h.Memory(), src) {
		return nil, errors.New("region differs from the source after the faults")
	}
	h.Close()
	h.Release()
	return lat, nil
}

func loopbackFaults(ctx context.Context, addr string, samples int, opts faulthandler.Options) ([]float64, error) {
	h, err := faulthandler.Dial(ctx, "tcp", addr, opts)
	if err != nil {
		return nil, err
	}
	defer func() { h.Close(); h.Release() }()
	if h.Pages() < uint64(samples) {
		return nil, fmt.Errorf("server region has %d pages, need %d", h.Pages(), samples)
	}
	h.Start()
	return timeTouches(h.Memory()[:samples*h.PageSize()], h.PageSize()), nil
}

// baselineFaults serves the same workload with userfaultfd-go's
// mapper.Register and mapper.Handle (a blocking poll, one read and one
// UFFDIO_COPY per fault).
func baselineFaults(src []byte, pageSize int) (lat []float64, err error) {
	mem, fd, start, err := mapper.Register(len(src))
	if err != nil {
		return nil, fmt.Errorf("userfaultfd-go mapper.Register: %w", err)
	}
	// mapper.Register opens the descriptor without O_CLOEXEC; keep it out of
	// the page server processes started later.
	unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
	done := make(chan error, 1)
	go func() {
		// mapper.Handle returns on errors a fault handler must ride out:
		// EINTR when a signal (the runtime's preemption signal, SIGURG)
		// interrupts its poll(2), and EEXIST from UFFDIO_COPY when the
		// kernel delivered a second fault event for a page it already
		// installed (a faulting thread interrupted by a signal faults
		// again). It formats the latter with %v, so it is matched by its
		// message. It keeps no state, so it is started again; a bound keeps
		// a persistent error from spinning.
		for restarts := 0; ; restarts++ {
			err := mapper.Handle(fd, start, bytes.NewReader(src))
			if restarts < 100000 && (errors.Is(err, unix.EINTR) || err.Error() == unix.EEXIST.Error()) {
				continue
			}
			// Without a handler the touching thread would wait forever:
			// unregister the range so it finishes (reading zeros, which
			// the byte compare below reports).
			u := uffd.Wrap(int(fd))
			u.Unregister(start, uint64(len(mem)))
			u.Disown()
			done <- err
			return
		}
	}()
	lat = timeTouches(mem, pageSize)
	if !bytes.Equal(mem, src) {
		err = errors.New("userfaultfd-go region differs from the source")
	}
	// mapper.Handle has no way to stop: it polls forever, and closing the
	// descriptor does not wake a poll(2) already blocked on it. Worse, its
	// loop (and the EINTR restart above) polls and reads the descriptor BY
	// NUMBER: once closed, the number can be reused by another file (the
	// pipe from a child's stdout, say) and the handler would read from it.
	// So the descriptor stays open, with no range registered, until the
	// process exits, and the goroutine stays parked in poll (one thread).
	select {
	case herr := <-done:
		if err == nil {
			err = fmt.Errorf("userfaultfd-go mapper.Handle: %w", herr)
		}
	default:
	}
	unix.Munmap(mem[:cap(mem)])
	return lat, err
}

func percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// Server is a page server running in another process.
type Server struct {
	Addr    string
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process has been waited for
	waitErr error
}

var listenRE = regexp.MustCompile(`listening on (\S+)`)

// StartServer runs argv and waits for its "listening on ADDR" line. It
// returns early, with the process's stderr, if the process exits first.
func StartServer(ctx context.Context, argv []string) (*Server, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr syncbuf.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start page server: %w", err)
	}
	s := &Server{cmd: cmd, exited: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		s.waitErr = cmd.Wait() // after stdout is drained, as os/exec requires
		close(s.exited)
	}()
	select {
	case s.Addr = <-addr:
		return s, nil
	case <-s.exited:
		return nil, fmt.Errorf("page server %q exited before listening (%v): %s", strings.Join(argv, " "), s.waitErr, stderr.String())
	case <-time.After(60 * time.Second):
		s.Stop()
		return nil, fmt.Errorf("page server %q printed no address within 60s: %s", strings.Join(argv, " "), stderr.String())
	case <-ctx.Done():
		s.Stop()
		return nil, ctx.Err()
	}
}

// Stop ends the server process (SIGTERM, then SIGKILL after 5s).
func (s *Server) Stop() error {
	select {
	case <-s.exited:
		return s.waitErr
	default:
	}
	s.cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	return s.waitErr
}
