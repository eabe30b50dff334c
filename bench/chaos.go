package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pagewarp/pagewarp/internal/chaosnet"
)

// ChaosScenarios are the fault kinds a chaos trial draws from.
var ChaosScenarios = []string{"drop", "kill-source", "stall", "slow", "reorder", "corrupt"}

// chaosPolicies cycle over the trials (offset from the scenarios, which
// cycle too), so that faults land in pre-copy, at the switch and in
// post-copy alike.
var chaosPolicies = []string{"traditional", "postcopy", "intelligent", "adaptive"}

// ChaosConfig sets up a fault-injection run.
type ChaosConfig struct {
	// Spec is the migration every trial runs (Policy is overridden per
	// trial; the link must be loopback or shaped, so that the injector can
	// sit between the processes).
	Spec   MigrateSpec
	Argv   []string
	Trials int
	Seed   uint64
	// Scenarios to draw from (nil: all of ChaosScenarios).
	Scenarios []string
	// Conns is how many of the target's first connections a fault may
	// pick (0: 4: the post-copy connections and the pre-copy streams).
	Conns int
	// Window is the time span after a migration's start over which timed
	// faults are spread (0: measured: a fault-free migration per policy
	// first, and each policy's trials spread their faults over its
	// migration time, so that they land in every phase).
	Window time.Duration
	// TrialTimeout bounds a trial; a trial still running then is a hang
	// (0: 90 s).
	TrialTimeout time.Duration
	// ResumeDeadline is the target's time to reconnect to a lost source
	// (0: 5 s, so that a killed source ends a trial soon).
	ResumeDeadline time.Duration
	// StallTimeout is the target's time before a silent connection with
	// replies outstanding counts as lost (0: 2 s, so that the longer of the
	// injected stalls, up to 3 s, are caught and resumed, the shorter not).
	StallTimeout time.Duration
	Log          io.Writer
}

// Outcomes of a trial. Correct and CleanFailure pass; Corrupt and Hang
// fail.
const (
	OutcomeCorrect      = "correct"       // the workload's result equals the run without migration
	OutcomeCleanFailure = "clean-failure" // the migration failed with an error and the target's workload stopped
	OutcomeCorrupt      = "CORRUPT"       // the target finished with a result that differs: silent corruption
	OutcomeHang         = "HANG"          // no end within the trial timeout
)

// ChaosTrial is one trial.
type ChaosTrial struct {
	N         int     `json:"n"`
	Scenario  string  `json:"scenario"`
	Fault     string  `json:"fault"`
	Policy    string  `json:"policy"`
	Fired     int     `json:"fired"` // injected faults that fired (a fault planned after the migration ended does not)
	Conns     int     `json:"conns"` // connections the target opened through the injector
	Outcome   string  `json:"outcome"`
	Detail    string  `json:"detail,omitempty"`
	Seconds   float64 `json:"seconds"`           // the trial's, the workload's time before and after included
	Migration float64 `json:"migration_seconds"` // the migration's, when it ended with a result
	Passed    bool    `json:"passed"`
	Downtime  float64 `json:"downtime_ms,omitempty"`
}

// ChaosReport is the JSON of `pagewarp chaos`.
type ChaosReport struct {
	Seed   uint64       `json:"seed"`
	Trials []ChaosTrial `json:"trials"`
	Passed int          `json:"passed"`
	// FiredTrials counts the trials whose fault struck (one drawn for a
	// time after the migration ended does not, and tests nothing).
	FiredTrials int `json:"fired_trials"`
	Failed      int `json:"failed"`
	// ByOutcome counts trials per outcome.
	ByOutcome map[string]int `json:"by_outcome"`
	// Windows are the spans timed faults were drawn from, per policy, in
	// seconds.
	Windows map[string]float64 `json:"windows_s"`
}

// Chaos runs cfg.Trials migrations, each with one fault drawn from the
// scenarios with a generator seeded by (Seed, trial), and classifies each:
// every page byte-correct, or a clean failure with the workload stopped.
// Anything else (a wrong result, a hang) fails.
func Chaos(ctx context.Context, cfg ChaosConfig) (*ChaosReport, error) {
	if cfg.Trials <= 0 {
		cfg.Trials = 100
	}
	if len(cfg.Scenarios) == 0 {
		cfg.Scenarios = ChaosScenarios
	}
	for _, s := range cfg.Scenarios {
		if !slices.Contains(ChaosScenarios, s) {
			return nil, fmt.Errorf("scenario %q: want one of %s", s, strings.Join(ChaosScenarios, ", "))
		}
	}
	if cfg.Conns <= 0 {
		cfg.Conns = 4
	}
	if cfg.TrialTimeout <= 0 {
		cfg.TrialTimeout = 90 * time.Second
	}
	if cfg.ResumeDeadline == 0 {
		cfg.ResumeDeadline = 5 * time.Second
	}
	cfg.Spec.ResumeDeadline = cfg.ResumeDeadline
	if cfg.StallTimeout == 0 {
		cfg.StallTimeout = 2 * time.Second
	}
	cfg.Spec.StallTimeout = cfg.StallTimeout
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if k := cfg.Spec.Link.Kind; k != "" && k != "loopback" && k != "shaped" {
		return nil, fmt.Errorf("link %s: the chaos suite needs loopback or shaped (the injector sits on loopback)", k)
	}
	expected, err := cfg.Spec.ExpectedChecksums()
	if err != nil {
		return nil, fmt.Errorf("reference run: %w", err)
	}
	rep := &ChaosReport{Seed: cfg.Seed, ByOutcome: map[string]int{}, Windows: map[string]float64{}}
	windows := map[string]time.Duration{}
	for _, p := range chaosPolicies {
		windows[p] = cfg.Window
		if cfg.Window > 0 {
			continue
		}
		spec := cfg.Spec
		spec.Policy = p
		res, err := Migrate(ctx, MigrateConfig{Spec: spec, Argv: cfg.Argv, Expected: expected})
		if err != nil {
			return nil, fmt.Errorf("fault-free migration with %s: %w", p, err)
		}
		if !res.ResultOK {
			return nil, fmt.Errorf("fault-free migration with %s: the result differs from the run without migration", p)
		}
		windows[p] = time.Duration(res.TotalSeconds * 1.1 * float64(time.Second))
		fmt.Fprintf(cfg.Log, "fault-free migration with %-11s %.2fs: timed faults fall within %v of a trial's migration\n",
			p, res.TotalSeconds, windows[p].Round(time.Millisecond))
	}
	for p, w := range windows {
		rep.Windows[p] = w.Seconds()
	}
	for i := range cfg.Trials {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		t := runChaosTrial(ctx, cfg, i, expected, windows)
		rep.Trials = append(rep.Trials, t)
		rep.ByOutcome[t.Outcome]++
		if t.Fired > 0 {
			rep.FiredTrials++
		}
		if t.Passed {
			rep.Passed++
		} else {
			rep.Failed++
		}
		fmt.Fprintf(cfg.Log, "trial %3d/%d %-11s %-11s %-48s fired %d of %d conns, %.1fs: %s %s\n", i+1, cfg.Trials, t.Scenario, t.Policy, t.Fault,
			t.Fired, t.Conns, t.Seconds, t.Outcome, t.Detail)
	}
	return rep, nil
}

// chaosPlan is one trial's fault.
type chaosPlan struct {
	scenario string
	faults   []chaosnet.Fault
	kill     time.Duration // kill-source: when (-1: no kill)
}

func (p chaosPlan) String() string {
	if p.kill >= 0 {
		return fmt.Sprintf("SIGKILL source after %v", p.kill.Round(time.Millisecond))
	}
	var s []string
	for _, f := range p.faults {
		s = append(s, f.String())
	}
	return strings.Join(s, "; ")
}

// chaosPolicy is the policy trial n migrates with.
func chaosPolicy(cfg ChaosConfig, n int) string {
	return chaosPolicies[(n/len(cfg.Scenarios))%len(chaosPolicies)]
}

// drawChaos draws trial n's fault from its own generator; timed faults
// fall within window of the migration's start.
func drawChaos(cfg ChaosConfig, n int, window time.Duration) chaosPlan {
	r := rand.New(rand.NewPCG(cfg.Seed, uint64(n)))
	// Scenarios take turns, so that every one is tried as often; what and
	// when within one is drawn.
	p := chaosPlan{scenario: cfg.Scenarios[n%len(cfg.Scenarios)], kill: -1}
	when := func() time.Duration { return time.Duration(r.Int64N(int64(max(window, time.Millisecond)))) }
	conn := func() int { return r.IntN(cfg.Conns) }
	dir := func() chaosnet.Direction { return chaosnet.Direction(r.IntN(2)) }
	switch p.scenario {
	case "drop":
		p.faults = []chaosnet.Fault{{Kind: chaosnet.Cut, Conn: conn(), Dir: dir(), After: when()}}
	case "kill-source":
		p.kill = when()
	case "stall":
		p.faults = []chaosnet.Fault{{Kind: chaosnet.Stall, Conn: conn(), Dir: dir(), After: when(),
			For: time.Duration(100+r.IntN(2900)) * time.Millisecond}}
	case "slow":
		p.faults = []chaosnet.Fault{{Kind: chaosnet.Delay, Conn: conn(), Dir: chaosnet.Down,
			For: time.Duration(1+r.IntN(10)) * time.Millisecond}}
	case "reorder":
		// Two connections slowed by different amounts: bytes sent on one
		// after the other arrive before them.
		a := conn()
		b := (a + 1 + r.IntN(cfg.Conns-1)) % cfg.Conns
		p.faults = []chaosnet.Fault{
			{Kind: chaosnet.Delay, Conn: a, Dir: chaosnet.Down, For: time.Duration(2+r.IntN(8)) * time.Millisecond},
			{Kind: chaosnet.Delay, Conn: b, Dir: chaosnet.Up, For: time.Duration(1+r.IntN(5)) * time.Millisecond},
		}
	case "corrupt":
		d := dir()
		// Most bytes flow down (pages); up carries requests and acks.
		// A connection that carries pages carries at least 1 MiB of them;
		// requests and acknowledgements go up, a few KiB.
		span := int64(1 << 20)
		if d == chaosnet.Up {
			span = 2048
		}
		p.faults = []chaosnet.Fault{{Kind: chaosnet.Corrupt, Conn: conn(), Dir: d, At: 1 + r.Int64N(span), Bit: uint(r.IntN(8))}}
	}
	return p
}

func runChaosTrial(ctx context.Context, cfg ChaosConfig, n int, expected [][16]byte, windows map[string]time.Duration) ChaosTrial {
	spec := cfg.Spec
	spec.Policy = chaosPolicy(cfg, n)
	plan := drawChaos(cfg, n, windows[spec.Policy])
	t := ChaosTrial{N: n + 1, Scenario: plan.scenario, Fault: plan.String(), Policy: spec.Policy}
	tctx, cancel := context.WithTimeout(ctx, cfg.TrialTimeout)
	defer cancel()

	var proxy *chaosnet.Proxy
	var killed sync.WaitGroup
	stopKill := make(chan struct{})
	mcfg := MigrateConfig{
		Spec: spec, Argv: cfg.Argv, Expected: expected,
		Intercept: func(addr string) (string, error) {
			var err error
			proxy, err = chaosnet.Listen("127.0.0.1:0", addr, plan.faults, nil)
			if err != nil {
				return "", err
			}
			return proxy.Addr(), nil
		},
	}
	if plan.kill >= 0 {
		mcfg.Started = func(src, _ *os.Process) {
			killed.Add(1)
			go func() {
				defer killed.Done()
				select {
				case <-time.After(plan.kill):
					if src.Signal(syscall.SIGKILL) == nil {
						t.Fired = 1
					}
				case <-stopKill:
				}
			}()
		}
	}
	var tgt *TargetReport
	var tgtErr error
	mcfg.Ended = func(_ *SourceReport, tr *TargetReport, _, te error) { tgt, tgtErr = tr, te }
	start := time.Now()
	res, err := Migrate(tctx, mcfg)
	t.Seconds = time.Since(start).Seconds()
	close(stopKill)
	killed.Wait()
	if proxy != nil {
		proxy.Close()
		t.Fired += proxy.Fired()
		t.Conns = proxy.Conns()
	}

	switch {
	case tctx.Err() != nil && ctx.Err() == nil:
		t.Outcome, t.Detail = OutcomeHang, fmt.Sprintf("no end within %v", cfg.TrialTimeout)
	case tgt != nil && len(tgt.Checksums) > 0:
		// The target finished its workload: its result must be right,
		// whatever else failed (a source killed after the last page, say).
		ok := len(tgt.Checksums) == len(expected)
		for i := range expected {
			if !ok || tgt.Checksums[i] != expected[i] {
				ok = false
			}
		}
		if ok {
			t.Outcome = OutcomeCorrect
			if err != nil {
				t.Detail = "target complete and right; " + oneLineErr(err)
			}
		} else {
			t.Outcome, t.Detail = OutcomeCorrupt, "the target's result differs from the run without migration"
		}
	case err != nil && tgtErr != nil:
		t.Outcome, t.Detail = OutcomeCleanFailure, oneLineErr(tgtErr)
	case err != nil:
		// The target ended without a result and without an error: not a
		// clean end.
		t.Outcome, t.Detail = OutcomeCorrupt, "the target ended with neither a result nor an error: "+oneLineErr(err)
	default:
		t.Outcome, t.Detail = OutcomeCorrupt, "no result"
	}
	if res != nil {
		t.Downtime = res.DowntimeMs
		t.Migration = res.TotalSeconds
	}
	t.Passed = t.Outcome == OutcomeCorrect || t.Outcome == OutcomeCleanFailure
	return t
}

func oneLineErr(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

// errChaosFailed is returned by callers when a chaos run had failures.
var errChaosFailed = errors.New("chaos: trials failed")

// ErrChaosFailed reports that at least one trial ended with corruption or
// a hang.
func ErrChaosFailed(rep *ChaosReport) error {
	if rep.Failed == 0 {
		return nil
	}
	return fmt.Errorf("%w: %d of %d", errChaosFailed, rep.Failed, len(rep.Trials))
}
