package hybrid

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Defaults that Env's zero fields stand for.
const (
	// DefaultMaxRounds is Env.MaxRounds when it is 0.
	DefaultMaxRounds = 30
	// DefaultPostcopyStallPerPage is Env.PostcopyStallPerPage when it is 0: a demand fault's
	// round trip plus installation, rounded up from the measured 16–21 µs fault round trip
	// and ~11 µs loopback request (docs/DESIGN) to leave room for a real network.
	DefaultPostcopyStallPerPage = 100 * time.Microsecond
	// DefaultDowntimeBudget is Env.DowntimeBudget when it is 0: QEMU's default downtime-limit.
	DefaultDowntimeBudget = 300 * time.Millisecond
	// DefaultPageSize is Env.PageSize when it is 0.
	DefaultPageSize = 4096
)

// ErrUnknownPolicy means New was given a name that is not one of Names().
var ErrUnknownPolicy = errors.New("unknown hybrid policy")

// Round is what one pre-copy round measured (the caller converts precopy.RoundStats).
//
// A history passed to Decide holds every round so far, in order: rounds[i].Index == i.
type Round struct {
	Index     int    `json:"index"`            // 0 = the full first round
	Dirty     uint64 `json:"pages_dirty"`      // pages looked at (written since the previous round; round 0: all)
	FakeDirty uint64 `json:"pages_fake_dirty"` // skipped by the hash filter
	Sent      uint64 `json:"pages_sent"`       // pages whose data was sent
	Refs      uint64 `json:"pages_refs"`       // pages sent as references or zero markers (cheap)
	Bytes     uint64 `json:"bytes_sent"`       // bytes on the wire
	// Duration is the round's time, scan to acknowledgement.
	Duration time.Duration `json:"duration_ns"`
	// Interval is the time from the previous round's scan to this round's: the window in
	// which this round's Dirty pages were written. 0 means rounds run back to back, so the
	// window is the previous round's Duration. A caller that paces its rounds (the benchmark
	// starts one every 100 ms) sets it, or the dirty rate comes out too high.
	Interval time.Duration `json:"interval_ns,omitempty"`
	// Remaining is what the target lacks after this round: pages written since this round's
	// scan that the target does not hold yet (the caller measures it, e.g. a tracker peek, or
	// estimates with the next round's dirty count; 0 if unknown). When it is 0 the policies
	// use the next-best estimate, this round's Dirty less its FakeDirty: what the target
	// lacked after the previous round.
	Remaining uint64 `json:"pages_remaining"`
}

// Env is what a policy knows besides the rounds. Zero fields take the Default* values.
type Env struct {
	PageSize   int    `json:"page_size"`   // bytes (0: DefaultPageSize)
	TotalPages uint64 `json:"total_pages"` // pages in the region (0: unknown)
	// DowntimeBudget is the most the workload may be stopped at the switch
	// (0: DefaultDowntimeBudget).
	DowntimeBudget time.Duration `json:"downtime_budget_ns"`
	// MaxRounds gives up on convergence after this many rounds, round 0 included
	// (0: DefaultMaxRounds).
	MaxRounds int `json:"max_rounds"`
	// Bandwidth is the link's measured or configured rate in bytes/s (0: estimate from the
	// rounds, total Bytes over total Duration).
	Bandwidth float64 `json:"bandwidth_bytes_s"`
	// PostcopyStallPerPage estimates what a post-copy demand fault costs the workload
	// (0: DefaultPostcopyStallPerPage), for policies that weigh post-copy.
	PostcopyStallPerPage time.Duration `json:"postcopy_stall_per_page_ns"`
	// ProbeDirty is how many distinct pages the workload wrote in a window of ProbeWindow
	// measured before round 0, tracking armed and nothing sent (precopy.Sender.Probe);
	// silent stores count too. With it a policy knows the write rate before paying for the
	// full first round. ProbeWindow 0: no probe.
	ProbeDirty  uint64        `json:"probe_pages_dirty,omitempty"`
	ProbeWindow time.Duration `json:"probe_window_ns,omitempty"`
}

// withDefaults returns e with its zero (or negative) fields replaced by the defaults.
func (e Env) withDefaults() Env {
	if e.PageSize <= 0 {
		e.PageSize = DefaultPageSize
	}
	if e.DowntimeBudget <= 0 {
		e.DowntimeBudget = DefaultDowntimeBudget
	}
	if e.MaxRounds <= 0 {
		e.MaxRounds = DefaultMaxRounds
	}
	if !(e.Bandwidth > 0) || e.Bandwidth > maxFinite { // NaN, negative, Inf: unknown
		e.Bandwidth = 0
	}
	if e.PostcopyStallPerPage <= 0 {
		e.PostcopyStallPerPage = DefaultPostcopyStallPerPage
	}
	if e.ProbeWindow <= 0 {
		e.ProbeWindow, e.ProbeDirty = 0, 0
	}
	return e
}

// Action is what the migration does next.
type Action int

const (
	Continue    Action = iota // run another pre-copy round
	StopAndCopy               // stop the workload, send what is left, resume on the target: no post-copy
	Switch                    // stop the workload, send the invalidations, resume on the target, post-copy the rest
)

// String returns "continue", "stop-and-copy" or "switch".
func (a Action) String() string {
	switch a {
	case Continue:
		return "continue"
	case StopAndCopy:
		return "stop-and-copy"
	case Switch:
		return "switch"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// MarshalText encodes a as its String, so that a Decision reads well in JSON and logs.
func (a Action) MarshalText() ([]byte, error) {
	switch a {
	case Continue, StopAndCopy, Switch:
		return []byte(a.String()), nil
	}
	return nil, fmt.Errorf("marshal %s: not an action", a)
}

// UnmarshalText decodes what MarshalText encodes.
func (a *Action) UnmarshalText(b []byte) error {
	for _, c := range []Action{Continue, StopAndCopy, Switch} {
		if string(b) == c.String() {
			*a = c
			return nil
		}
	}
	return fmt.Errorf("action %q: want continue, stop-and-copy or switch", b)
}

// Decision is a policy's answer with its reason.
type Decision struct {
	Action Action `json:"action"`
	Policy string `json:"policy"`
	// Round is the index of the round it was taken after; -1 before any round.
	Round int `json:"round"`
	// Reason is one human sentence: why.
	Reason string `json:"reason"`
	// Numbers holds the figures the reason cites (predicted_downtime_ms,
	// dirty_rate_pages_s, bandwidth_bytes_s, ...), and a few more it weighed. A key's
	// suffix names its unit.
	Numbers map[string]float64 `json:"numbers"`
	// Converged is false when the policy gave up (e.g. precopy after MaxRounds); true
	// otherwise, Continue included.
	Converged bool `json:"converged"`
}

// Policy decides after each round. Implementations are pure: Decide depends only on its
// arguments.
type Policy interface {
	Name() string
	// Decide returns what to do after rounds (nil: before any round). rounds holds every
	// round so far in order; Decide does not modify it.
	Decide(env Env, rounds []Round) Decision
}

// policies lists the policies with their default settings, in Names order.
var policies = []Policy{Precopy{}, Postcopy{}, Traditional{}, Intelligent{}, WWS{}, Adaptive{}}

// Names returns the policy names New accepts: "precopy", "postcopy", "traditional",
// "intelligent", "wws", "adaptive".
func Names() []string {
	names := make([]string, len(policies))
	for i, p := range policies {
		names[i] = p.Name()
	}
	return names
}

// New returns the named policy with its default settings.
func New(name string) (Policy, error) {
	for _, p := range policies {
		if p.Name() == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("policy %q: %w (want one of %s)", name, ErrUnknownPolicy, strings.Join(Names(), ", "))
}
