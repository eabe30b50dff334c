package switchctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pagewarp/pagewarp/hybrid"
	"github.com/pagewarp/pagewarp/qemu/qmp"
)

// DefaultPoll is Config.Poll when it is 0.
const DefaultPoll = 50 * time.Millisecond

// MaxDowntimeLimit is the largest downtime-limit QEMU accepts (MAX_MIGRATE_DOWNTIME_SECONDS,
// 2000 s), set for a stop-and-copy.
const MaxDowntimeLimit = 2000 * time.Second

// Outcomes of a migration (Result.Outcome).
const (
	OutcomePostcopy = "postcopy" // the source entered post-copy
	OutcomePrecopy  = "precopy"  // completed without post-copy (Result.Note says why)
)

// ErrMigration is wrapped by the error of a migration that failed, was cancelled or paused.
var ErrMigration = errors.New("migration did not complete")

// Observer receives what the controller sees and decides (metrics.QEMUSwitch implements it).
// Its methods are called from Run's goroutine.
type Observer interface {
	ObserveMigration(qmp.MigrationInfo) // every sample of the source
	ObserveRound(hybrid.Round)          // every round completed
	ObserveDecision(hybrid.Decision)    // every decision taken
}

// Config configures Run.
type Config struct {
	// Source is the source QEMU's QMP client (required); Dest the destination's (optional: then
	// its capabilities are set and its figures reported).
	Source, Dest *qmp.Client
	// Policy decides after each round (required).
	Policy hybrid.Policy
	// Budget is the downtime budget, set as the source's downtime-limit so that QEMU's own
	// convergence test and the policy agree. 0: the source's current downtime-limit.
	Budget time.Duration
	// MaxRounds is Env.MaxRounds (0: hybrid.DefaultMaxRounds).
	MaxRounds int
	// StallPerPage is Env.PostcopyStallPerPage (0: the hybrid default).
	StallPerPage time.Duration
	// Migrate, if set, is the URI the controller migrates the source to once the capabilities
	// are set (tcp:HOST:PORT). Empty: it waits for a migration started by someone else.
	Migrate string
	// MaxBandwidth, if non-zero, is set as the source's max-bandwidth (bytes/s).
	MaxBandwidth uint64
	// Poll is the query-migrate interval (default DefaultPoll).
	Poll time.Duration
	// Logger receives the decisions and events (default: discard).
	Logger *slog.Logger
	// Observer, if set, receives the samples, rounds and decisions.
	Observer Observer
}

// Decision is a decision of the policy and what the controller did about it.
type Decision struct {
	hybrid.Decision
	// At is the time since the migration started (the controller's first sample of it).
	At time.Duration `json:"at_ns"`
	// DirtySyncCount is the source's dirty-sync-count when the decision was taken.
	DirtySyncCount uint64 `json:"dirty_sync_count"`
	// Acted says what the controller did: "" (continue), "migrate-start-postcopy" or
	// "downtime-limit 2000000 ms".
	Acted string `json:"acted,omitempty"`
}

// Result is what Run observed.
type Result struct {
	Policy string        `json:"policy"`
	Budget time.Duration `json:"budget_ns"`
	// Rounds are the rounds given to the policy; Decisions every decision, in order.
	Rounds    []hybrid.Round `json:"rounds"`
	Decisions []Decision     `json:"decisions"`
	// Outcome is OutcomePostcopy or OutcomePrecopy; Note explains it in one sentence.
	Outcome string `json:"outcome"`
	Note    string `json:"note"`
	// SwitchRequested is when migrate-start-postcopy was issued (since the migration started;
	// 0 with SwitchRequestedOK false: never).
	SwitchRequested   time.Duration `json:"switch_requested_ns,omitempty"`
	SwitchRequestedOK bool          `json:"switch_requested"`
	// Statuses is the source's sequence of distinct statuses.
	Statuses []string `json:"statuses"`
	// Source and Dest are the last query-migrate of each side (Dest nil without a destination
	// client); Dest carries the post-copy blocktime once completed.
	Source qmp.MigrationInfo  `json:"source"`
	Dest   *qmp.MigrationInfo `json:"destination,omitempty"`
}

// running reports whether status is that of a migration under way.
func running(status string) bool {
	switch status {
	case "setup", "active", "postcopy-active", "postcopy-paused", "postcopy-recover", "pre-switchover", "device", "wait-unplug":
		return true
	}
	return false
}

// Run sets the capabilities, optionally starts the migration, watches it to its end, and
// returns what it saw. It returns an error wrapping ErrMigration if the source reports failed,
// cancelled or postcopy-paused (the Result so far comes with it), and ctx's error if ctx ends
// first.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Source == nil || cfg.Policy == nil {
		return Result{}, errors.New("switchctl: a source QMP client and a policy are required")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	res := Result{Policy: cfg.Policy.Name()}
	src := cfg.Source

	first, err := src.QueryMigrate(ctx)
	if err != nil {
		return res, fmt.Errorf("source: %w", err)
	}
	if running(first.Status) {
		// Capabilities cannot change during a migration: postcopy-ram must be on already.
		on, err := capability(ctx, src, "postcopy-ram")
		if err != nil {
			return res, fmt.Errorf("source: %w", err)
		}
		if !on {
			return res, fmt.Errorf("source: a migration is already %s without postcopy-ram: it cannot switch to post-copy", first.Status)
		}
		if cfg.Migrate != "" {
			return res, fmt.Errorf("source: a migration is already %s: not starting another", first.Status)
		}
		log.Warn("attached to a migration already under way: the rounds before the next sync are not in the history", "status", first.Status)
	} else if err := src.SetCapabilities(ctx, map[string]bool{"postcopy-ram": true}); err != nil {
		return res, fmt.Errorf("source: %w", err)
	}
	if cfg.Dest != nil {
		if err := cfg.Dest.SetCapabilities(ctx, map[string]bool{"postcopy-ram": true, "postcopy-blocktime": true}); err != nil {
			return res, fmt.Errorf("destination: %w", err)
		}
	}
	params := map[string]any{}
	if cfg.Budget > 0 {
		params["downtime-limit"] = uint64(cfg.Budget / time.Millisecond)
	}
	if cfg.MaxBandwidth > 0 {
		params["max-bandwidth"] = cfg.MaxBandwidth
	}
	if len(params) > 0 {
		if err := src.SetParameters(ctx, params); err != nil {
			return res, fmt.Errorf("source: %w", err)
		}
	}
	limit, err := downtimeLimit(ctx, src)
	if err != nil {
		return res, fmt.Errorf("source: %w", err)
	}
	res.Budget = limit
	if cfg.Migrate != "" {
		if err := src.Migrate(ctx, cfg.Migrate); err != nil {
			return res, fmt.Errorf("source: migrate %s: %w", cfg.Migrate, err)
		}
		log.Info("migration started", "uri", cfg.Migrate)
	} else if !running(first.Status) {
		log.Info("waiting for a migration to start on the source", "status", first.Status)
	}

	var (
		tr          tracker
		begun       time.Time
		decided     bool // the policy's final answer (switch or stop-and-copy) was carried out
		askedFirst  bool // the policy was asked before any round
		raised      bool // downtime-limit raised for a stop-and-copy
		postcopy    bool
		stopAndCopy bool
	)
	decide := func(at time.Time, mi qmp.MigrationInfo, rounds []hybrid.Round) error {
		env := tr.env(mi.RAM, limit, cfg.MaxRounds, cfg.StallPerPage)
		d := Decision{Decision: cfg.Policy.Decide(env, rounds), At: at.Sub(begun), DirtySyncCount: mi.RAM.DirtySyncCount}
		switch d.Action {
		case hybrid.Switch:
			if err := src.StartPostcopy(ctx); err != nil {
				return fmt.Errorf("source: %w", err)
			}
			d.Acted = "migrate-start-postcopy"
			res.SwitchRequested, res.SwitchRequestedOK = d.At, true
			decided = true
		case hybrid.StopAndCopy:
			ms := uint64(MaxDowntimeLimit / time.Millisecond)
			if err := src.SetParameters(ctx, map[string]any{"downtime-limit": ms}); err != nil {
				return fmt.Errorf("source: %w", err)
			}
			d.Acted = fmt.Sprintf("downtime-limit %d ms", ms)
			raised, stopAndCopy, decided = true, true, true
		}
		res.Decisions = append(res.Decisions, d)
		log.Info("decision", "policy", d.Policy, "round", d.Round, "action", d.Action.String(), "reason", d.Reason,
			"converged", d.Converged, "acted", d.Acted, "at", d.At.Round(time.Millisecond))
		if cfg.Observer != nil {
			cfg.Observer.ObserveDecision(d.Decision)
		}
		return nil
	}
	defer func() {
		if raised {
			// Best effort, with a context of its own: ctx may have ended.
			c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := src.SetParameters(c, map[string]any{"downtime-limit": uint64(limit / time.Millisecond)}); err != nil {
				log.Warn("could not restore the source's downtime-limit", "limit", limit, "err", err)
			}
		}
	}()

	tick := time.NewTicker(cfg.Poll)
	defer tick.Stop()
	for {
		mi, err := src.QueryMigrate(ctx)
		if err != nil {
			return res, fmt.Errorf("source: %w", err)
		}
		now := time.Now()
		if begun.IsZero() && (running(mi.Status) || cfg.Migrate != "" && mi.Status == "completed") {
			// After our migrate command the status is setup at once, so a completed one is
			// ours, however fast.
			begun = now
		}
		if !begun.IsZero() {
			res.Source = mi
			if n := len(res.Statuses); n == 0 || res.Statuses[n-1] != mi.Status {
				res.Statuses = append(res.Statuses, mi.Status)
				log.Info("source status", "status", mi.Status)
			}
			if cfg.Observer != nil {
				cfg.Observer.ObserveMigration(mi)
			}
			switch mi.Status {
			case "active":
				if !decided && !askedFirst && mi.RAM != nil && !tr.late && mi.RAM.DirtySyncCount <= 1 {
					askedFirst = true
					if err := decide(now, mi, nil); err != nil {
						return res, err
					}
				}
				if decided {
					break // the syncs after the final decision (QEMU's completion) are not rounds the policy saw
				}
				if r, ok := tr.observe(now, mi); ok {
					res.Rounds = append(res.Rounds, r)
					log.Info("round", "index", r.Index, "dirty_pages", r.Dirty, "sent_pages", r.Sent, "zero_pages", r.Refs,
						"bytes", r.Bytes, "duration", r.Duration.Round(time.Millisecond), "remaining_pages", r.Remaining,
						"qemu_dirty_pages_rate", mi.RAM.DirtyPagesRate, "dirty_sync_count", mi.RAM.DirtySyncCount)
					if cfg.Observer != nil {
						cfg.Observer.ObserveRound(r)
					}
					if err := decide(now, mi, res.Rounds); err != nil {
						return res, err
					}
				}
			case "postcopy-active":
				postcopy = true
			case "completed":
				if mi.RAM != nil && mi.RAM.PostcopyBytes > 0 {
					postcopy = true
				}
				res.Outcome, res.Note = outcome(postcopy, res.SwitchRequestedOK, stopAndCopy)
				log.Info("source completed", "outcome", res.Outcome, "note", res.Note)
				if cfg.Dest != nil {
					d, err := waitDest(ctx, cfg.Dest, cfg.Poll)
					res.Dest = &d
					if err != nil {
						return res, err
					}
				}
				return res, nil
			case "failed", "cancelled", "postcopy-paused":
				return res, fmt.Errorf("source: %w: status %s (%s); statuses %v", ErrMigration, mi.Status, mi.ErrorDesc, res.Statuses)
			}
		} else if cfg.Migrate != "" && (mi.Status == "failed" || mi.Status == "cancelled") {
			return res, fmt.Errorf("source: %w: status %s (%s)", ErrMigration, mi.Status, mi.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-tick.C:
		}
	}
}

// outcome names how the migration ended and why.
func outcome(postcopy, switchRequested, stopAndCopy bool) (string, string) {
	switch {
	case postcopy:
		return OutcomePostcopy, "the source switched to post-copy after migrate-start-postcopy"
	case switchRequested:
		return OutcomePrecopy, "migrate-start-postcopy was issued but QEMU completed in pre-copy: what remained was below bandwidth x downtime-limit, and QEMU switches only above it"
	case stopAndCopy:
		return OutcomePrecopy, "stop-and-copy: with downtime-limit raised QEMU stopped the guest and sent what remained"
	}
	return OutcomePrecopy, "QEMU completed pre-copy on its own: what remained fell below bandwidth x downtime-limit before the policy chose to stop"
}

// waitDest polls the destination until it reports completed (its blocktime is final then).
func waitDest(ctx context.Context, dst *qmp.Client, poll time.Duration) (qmp.MigrationInfo, error) {
	for {
		d, err := dst.QueryMigrate(ctx)
		if err != nil {
			return d, fmt.Errorf("destination: %w", err)
		}
		switch d.Status {
		case "completed":
			return d, nil
		case "failed", "cancelled", "postcopy-paused":
			return d, fmt.Errorf("destination: %w: status %s (%s)", ErrMigration, d.Status, d.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return d, fmt.Errorf("waiting for the destination to complete (last %q): %w", d.Status, ctx.Err())
		case <-time.After(poll):
		}
	}
}

// capability reports whether the named migration capability is on.
func capability(ctx context.Context, c *qmp.Client, name string) (bool, error) {
	var caps []struct {
		Capability string `json:"capability"`
		State      bool   `json:"state"`
	}
	if err := c.Execute(ctx, "query-migrate-capabilities", nil, &caps); err != nil {
		return false, err
	}
	for _, cp := range caps {
		if cp.Capability == name {
			return cp.State, nil
		}
	}
	return false, nil
}

// downtimeLimit returns the source's downtime-limit.
func downtimeLimit(ctx context.Context, c *qmp.Client) (time.Duration, error) {
	var p struct {
		DowntimeLimit *uint64 `json:"downtime-limit"`
	}
	if err := c.Execute(ctx, "query-migrate-parameters", nil, &p); err != nil {
		return 0, err
	}
	if p.DowntimeLimit == nil {
		return 0, errors.New("query-migrate-parameters: no downtime-limit")
	}
	if *p.DowntimeLimit > uint64(MaxDowntimeLimit/time.Millisecond) {
		return 0, fmt.Errorf("query-migrate-parameters: downtime-limit %d ms out of range", *p.DowntimeLimit)
	}
	return time.Duration(*p.DowntimeLimit) * time.Millisecond, nil
}
