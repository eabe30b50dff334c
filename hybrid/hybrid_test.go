package hybrid

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	testPages    = 16384 // 64 MiB of 4 KiB pages
	testPageSize = 4096
	testLink     = 1e9 // bytes/s
)

// testEnv is a 64 MiB region on a 1 GB/s link with a 5 ms budget (1220 pages).
func testEnv() Env {
	return Env{PageSize: testPageSize, TotalPages: testPages, DowntimeBudget: 5 * time.Millisecond, MaxRounds: 10}
}

// mkRound makes round i from its dirty and fake-dirty counts, back to back on the 1 GB/s
// link: what is not fake is sent with its data.
func mkRound(i int, dirty, fake uint64) Round {
	sent := dirty - fake
	bytes := sent * (testPageSize + 24)
	return Round{
		Index: i, Dirty: dirty, FakeDirty: fake, Sent: sent, Bytes: bytes,
		Duration: time.Duration(float64(bytes)/testLink*1e9) + 200*time.Microsecond,
	}
}

// withRemaining sets every round's Remaining to the next round's needed pages, the last one's
// to last (0: unknown).
func withRemaining(rs []Round, last uint64) []Round {
	out := slices.Clone(rs)
	for i := range out {
		if i+1 < len(out) {
			out[i].Remaining = out[i+1].Dirty - out[i+1].FakeDirty
		} else {
			out[i].Remaining = last
		}
	}
	return out
}

// converging: the dirty set halves every round (round 1: 4096 pages).
func converging() []Round {
	rs := []Round{mkRound(0, testPages, 0)}
	for i, d := 1, uint64(4096); i < 10; i, d = i+1, d/2 {
		rs = append(rs, mkRound(i, d, 0))
	}
	return rs
}

// nonConverging: the workload dirties ~every page each round, faster than the link.
func nonConverging() []Round {
	rs := []Round{mkRound(0, testPages, 0)}
	for i := 1; i < 12; i++ {
		rs = append(rs, mkRound(i, testPages-uint64(i%3), 0))
	}
	return rs
}

// fakeHeavy: 8000 pages dirty per round, 90% of them written back unchanged.
func fakeHeavy() []Round {
	rs := []Round{mkRound(0, testPages, 0)}
	for i := 1; i < 8; i++ {
		rs = append(rs, mkRound(i, 8000, 7200))
	}
	return rs
}

// idle: nothing written after round 0.
func idle() []Round {
	return []Round{mkRound(0, testPages, 0), mkRound(1, 0, 0), mkRound(2, 0, 0)}
}

func mustNew(t testing.TB, name string) Policy {
	t.Helper()
	p, err := New(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// decisions asks p after every prefix of rs (rounds 1..len), returning the actions.
func decisions(p Policy, env Env, rs []Round) []Action {
	var out []Action
	for n := 1; n <= len(rs); n++ {
		out = append(out, p.Decide(env, rs[:n]).Action)
	}
	return out
}

// firstNot returns the index of the first prefix whose decision is not Continue, -1 if none.
func firstNot(as []Action) int {
	return slices.IndexFunc(as, func(a Action) bool { return a != Continue })
}

func TestNamesAndNew(t *testing.T) {
	want := []string{"precopy", "postcopy", "traditional", "intelligent", "wws", "adaptive"}
	if got := Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	for _, n := range want {
		if p := mustNew(t, n); p.Name() != n {
			t.Errorf("New(%q).Name() = %q", n, p.Name())
		}
	}
	_, err := New("greedy")
	if !errors.Is(err, ErrUnknownPolicy) {
		t.Fatalf("New(greedy) = %v, want ErrUnknownPolicy", err)
	}
	for _, n := range want {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not list %q", err, n)
		}
	}
}

func TestActionText(t *testing.T) {
	for a, s := range map[Action]string{Continue: "continue", StopAndCopy: "stop-and-copy", Switch: "switch"} {
		if a.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(a), a.String(), s)
		}
		b, err := json.Marshal(a)
		if err != nil || string(b) != `"`+s+`"` {
			t.Errorf("Marshal(%s) = %s, %v", s, b, err)
		}
		var back Action
		if err := json.Unmarshal(b, &back); err != nil || back != a {
			t.Errorf("Unmarshal(%s) = %v, %v", b, back, err)
		}
	}
	if s := Action(7).String(); s != "Action(7)" {
		t.Errorf("Action(7).String() = %q", s)
	}
	if _, err := json.Marshal(Action(7)); err == nil {
		t.Error("Marshal(Action(7)) succeeded")
	}
	var a Action
	if err := a.UnmarshalText([]byte("pause")); err == nil {
		t.Error("UnmarshalText(pause) succeeded")
	}
}

func TestPrecopy(t *testing.T) {
	p, env := mustNew(t, "precopy"), testEnv()
	t.Run("converging", func(t *testing.T) {
		// Remaining unknown: after round i the lack is estimated by round i's dirty count;
		// 1024 pages (round 3) is the first under the budget's 1220.
		as := decisions(p, env, converging())
		if i := firstNot(as); i != 3 || as[i] != StopAndCopy {
			t.Fatalf("decisions %v: want Continue up to round 2, then StopAndCopy", as)
		}
		// Measured: the lack after round 2 is round 3's 1024 pages.
		as = decisions(p, env, withRemaining(converging(), 0))
		if i := firstNot(as); i != 2 || as[i] != StopAndCopy {
			t.Fatalf("measured: decisions %v: want StopAndCopy after round 2", as)
		}
	})
	t.Run("non-converging", func(t *testing.T) {
		rs := nonConverging()
		for n := 1; n <= len(rs); n++ {
			d := p.Decide(env, rs[:n])
			if n < env.MaxRounds {
				if d.Action != Continue || !d.Converged {
					t.Fatalf("after %d rounds: %+v, want Continue", n, d)
				}
				continue
			}
			if d.Action != StopAndCopy || d.Converged || !strings.HasPrefix(d.Reason, "did not converge") {
				t.Fatalf("after %d rounds (MaxRounds %d): %+v, want StopAndCopy, not converged", n, env.MaxRounds, d)
			}
		}
	})
	t.Run("fake-dirty heavy", func(t *testing.T) {
		// 800 needed pages fit; without the filter 8000 would not.
		if d := p.Decide(env, fakeHeavy()[:2]); d.Action != StopAndCopy || d.Numbers["left_pages"] != 800 {
			t.Fatalf("%+v, want StopAndCopy with 800 pages left", d)
		}
		noFilter := []Round{mkRound(0, testPages, 0), mkRound(1, 8000, 0)}
		if d := p.Decide(env, noFilter); d.Action != Continue {
			t.Fatalf("without the filter: %+v, want Continue", d)
		}
	})
	t.Run("idle", func(t *testing.T) {
		d := p.Decide(env, idle()[:2])
		if d.Action != StopAndCopy || !d.Converged || !strings.Contains(d.Reason, "nothing is left") {
			t.Fatalf("%+v, want StopAndCopy: nothing left", d)
		}
	})
}

func TestPostcopy(t *testing.T) {
	p, env := mustNew(t, "postcopy"), testEnv()
	for _, rs := range [][]Round{converging(), nonConverging(), fakeHeavy(), idle()} {
		for n := 0; n <= len(rs); n++ {
			if d := p.Decide(env, rs[:n]); d.Action != Switch || !d.Converged {
				t.Fatalf("after %d rounds: %+v, want Switch", n, d)
			}
		}
	}
}

func TestTraditional(t *testing.T) {
	p, env := mustNew(t, "traditional"), testEnv()
	for _, rs := range [][]Round{converging(), nonConverging(), fakeHeavy(), idle()} {
		if d := p.Decide(env, nil); d.Action != Continue || d.Round != -1 {
			t.Fatalf("before any round: %+v, want Continue", d)
		}
		if d := p.Decide(env, rs[:1]); d.Action != Switch || d.Round != 0 {
			t.Fatalf("after round 0: %+v, want Switch", d)
		}
	}
	// Asked after an idle round anyway: nothing is left to post-copy.
	if d := p.Decide(env, idle()[:2]); d.Action != StopAndCopy {
		t.Fatalf("after an idle round: %+v, want StopAndCopy", d)
	}
}

func TestIntelligent(t *testing.T) {
	p, env := mustNew(t, "intelligent"), testEnv()
	t.Run("converging", func(t *testing.T) {
		// Halving shrinks 50% a round: it continues until the downtime fits.
		as := decisions(p, env, converging())
		if i := firstNot(as); i != 3 || as[i] != StopAndCopy {
			t.Fatalf("decisions %v: want StopAndCopy after round 3", as)
		}
	})
	t.Run("non-converging", func(t *testing.T) {
		// The lack does not shrink from round 0's (measured) to round 1's: switch at once.
		d := p.Decide(env, withRemaining(nonConverging(), 0)[:1])
		if d.Action != Switch || !d.Converged {
			t.Fatalf("after round 0, measured: %+v, want Switch", d)
		}
		// Unmeasured, the first comparison is after round 1.
		as := decisions(p, env, nonConverging())
		if i := firstNot(as); i != 1 || as[i] != Switch {
			t.Fatalf("decisions %v: want Switch after round 1", as)
		}
	})
	t.Run("dirty rate over the link", func(t *testing.T) {
		// 30% shrink a round, but 17000 pages in two windows of 2 ms: 4.25e6 pages/s, far
		// over the link's 244140.
		rs := []Round{mkRound(0, testPages, 0), mkRound(1, 10000, 0), mkRound(2, 7000, 0)}
		rs[1].Interval, rs[2].Interval = 2*time.Millisecond, 2*time.Millisecond
		d := p.Decide(env, rs)
		if d.Action != Switch || !strings.Contains(d.Reason, "exceeds the link rate") {
			t.Fatalf("%+v, want Switch: dirty rate over the link", d)
		}
		if r := d.Numbers["dirty_rate_pages_s"]; math.Abs(r-4.25e6) > 1 {
			t.Errorf("dirty rate %v, want 4.25e6", r)
		}
	})
	t.Run("small shrink", func(t *testing.T) {
		rs := []Round{mkRound(0, testPages, 0), mkRound(1, 5000, 0), mkRound(2, 4700, 0)}
		if d := p.Decide(env, rs); d.Action != Switch || math.Abs(d.Numbers["shrink_pct"]-6) > 1e-9 {
			t.Fatalf("%+v, want Switch at a 6%% shrink", d)
		}
		if d := (Intelligent{MinShrink: 0.05}).Decide(env, rs); d.Action != Continue {
			t.Fatalf("MinShrink 5%%: %+v, want Continue", d)
		}
	})
	t.Run("fake-dirty heavy", func(t *testing.T) {
		if d := p.Decide(env, fakeHeavy()[:2]); d.Action != StopAndCopy {
			t.Fatalf("%+v, want StopAndCopy", d)
		}
	})
	t.Run("idle", func(t *testing.T) {
		if d := p.Decide(env, idle()[:2]); d.Action != StopAndCopy {
			t.Fatalf("%+v, want StopAndCopy", d)
		}
	})
	t.Run("gives up", func(t *testing.T) {
		// Shrinking 20% a round from 16384, never under 1220 pages in 5 rounds.
		rs := []Round{mkRound(0, testPages, 0)}
		for i, d := 1, 16000.0; i < 5; i, d = i+1, d*0.8 {
			rs = append(rs, mkRound(i, uint64(d), 0))
		}
		e := env
		e.MaxRounds = 5
		if d := p.Decide(e, rs[:4]); d.Action != Continue {
			t.Fatalf("after 4 rounds: %+v, want Continue", d)
		}
		if d := p.Decide(e, rs); d.Action != Switch || d.Converged {
			t.Fatalf("after MaxRounds: %+v, want Switch, not converged", d)
		}
	})
}

func TestWWS(t *testing.T) {
	p, env := mustNew(t, "wws"), testEnv()
	t.Run("converging", func(t *testing.T) {
		// A line through the shrinking WWS crosses the budget ahead: continue, then
		// stop and copy once it fits.
		rs := withRemaining([]Round{
			mkRound(0, testPages, 0), mkRound(1, 6000, 0), mkRound(2, 5000, 0), mkRound(3, 4000, 0),
			mkRound(4, 3000, 0), mkRound(5, 2000, 0), mkRound(6, 1000, 0),
		}, 0)
		d := p.Decide(env, rs[:3]) // WWS after rounds 1, 2: 5000, 4000
		if d.Action != Continue || d.Numbers["fit_round"] != 5 || d.Numbers["wws_slope_pages_round"] != -1000 {
			t.Fatalf("after round 2: %+v, want Continue, fits after round 5", d)
		}
		if d := p.Decide(env, rs[:6]); d.Action != StopAndCopy {
			t.Fatalf("after round 5: %+v, want StopAndCopy", d)
		}
	})
	t.Run("too slow", func(t *testing.T) {
		// -100 pages a round from 9000: fits (1220) only after round ~80.
		rs := withRemaining([]Round{
			mkRound(0, testPages, 0), mkRound(1, 9000, 0), mkRound(2, 8900, 0), mkRound(3, 8800, 0), mkRound(4, 8700, 0),
		}, 0)
		if d := p.Decide(env, rs[:3]); d.Action != Switch || !d.Converged || !strings.Contains(d.Reason, "too slowly") {
			t.Fatalf("%+v, want Switch: too slowly", d)
		}
	})
	t.Run("non-converging", func(t *testing.T) {
		as := decisions(p, env, nonConverging())
		if i := firstNot(as); i != 3 || as[i] != Switch {
			t.Fatalf("decisions %v: want Switch once two WWS points exist (round 3, unmeasured)", as)
		}
	})
	t.Run("fake-dirty heavy", func(t *testing.T) {
		if d := p.Decide(env, fakeHeavy()[:2]); d.Action != StopAndCopy {
			t.Fatalf("%+v, want StopAndCopy", d)
		}
	})
	t.Run("idle", func(t *testing.T) {
		if d := p.Decide(env, idle()[:2]); d.Action != StopAndCopy {
			t.Fatalf("%+v, want StopAndCopy", d)
		}
	})
}

func TestAdaptive(t *testing.T) {
	p, env := mustNew(t, "adaptive"), testEnv()
	t.Run("converging", func(t *testing.T) {
		as := decisions(p, env, converging())
		if i := firstNot(as); i != 3 || as[i] != StopAndCopy {
			t.Fatalf("decisions %v: want Continue, then StopAndCopy after round 3", as)
		}
		d := p.Decide(env, converging()[:2])
		if d.Numbers["plan_rounds"] < 1 || d.Numbers["plan_cost_ms"] >= d.Numbers["switch_now_cost_ms"] {
			t.Fatalf("after round 1: %+v, want a plan of rounds cheaper than switching", d)
		}
	})
	t.Run("non-converging", func(t *testing.T) {
		// Every page dirty: rounds cannot pay, switch as soon as the rate is known.
		as := decisions(p, env, nonConverging())
		if i := firstNot(as); i != 1 || as[i] != Switch {
			t.Fatalf("decisions %v: want Switch after round 1", as)
		}
	})
	t.Run("paced flat", func(t *testing.T) {
		// Rounds every 100 ms, 2000 pages each: another round costs 100 ms and saves nothing.
		rs := []Round{mkRound(0, testPages, 0)}
		for i := 1; i < 4; i++ {
			r := mkRound(i, 2000, 0)
			r.Interval = 100 * time.Millisecond
			rs = append(rs, r)
		}
		if d := p.Decide(env, rs); d.Action != Switch || !d.Converged {
			t.Fatalf("%+v, want Switch", d)
		}
	})
	t.Run("stall matters", func(t *testing.T) {
		// The same slowly shrinking history: a costly stall makes rounds pay, a free one
		// makes switching now the cheapest.
		rs := []Round{mkRound(0, testPages, 0), mkRound(1, 6000, 0), mkRound(2, 5000, 0)}
		e := env
		e.PostcopyStallPerPage = time.Millisecond
		if d := p.Decide(e, rs); d.Action != Continue {
			t.Fatalf("1 ms stall: %+v, want Continue", d)
		}
		e.PostcopyStallPerPage = time.Nanosecond
		if d := p.Decide(e, rs); d.Action != Switch {
			t.Fatalf("1 ns stall: %+v, want Switch", d)
		}
	})
	t.Run("fake-dirty heavy", func(t *testing.T) {
		if d := p.Decide(env, fakeHeavy()[:2]); d.Action != StopAndCopy {
			t.Fatalf("%+v, want StopAndCopy", d)
		}
	})
	t.Run("idle", func(t *testing.T) {
		if d := p.Decide(env, idle()[:2]); d.Action != StopAndCopy {
			t.Fatalf("%+v, want StopAndCopy", d)
		}
	})
}

// TestAdaptiveProbe: with the write rate probed before round 0, Adaptive
// weighs round 0 itself and switches before it when no round can pay.
func TestAdaptiveProbe(t *testing.T) {
	p, env := mustNew(t, "adaptive"), testEnv()
	e := env
	e.Bandwidth = testLink
	e.ProbeWindow = 100 * time.Millisecond
	// Every page written within the probe: round 0 would leave every page
	// dirty, so switch before it.
	e.ProbeDirty = testPages
	d := p.Decide(e, nil)
	if d.Action != Switch || d.Round != -1 || d.Numbers["probe_pages_dirty"] != testPages {
		t.Fatalf("every page written in the probe: %+v, want Switch before round 0", d)
	}
	// A slow writer: rounds pay.
	e.ProbeDirty = 50
	if d := p.Decide(e, nil); d.Action != Continue || d.Numbers["plan_rounds"] < 1 {
		t.Fatalf("50 pages in 100 ms: %+v, want Continue with a plan of rounds", d)
	}
	// The probe stands in for the unmeasured rate after round 0 too: no
	// measuring round when it says rounds cannot pay.
	e.ProbeDirty = testPages
	if d := p.Decide(e, nonConverging()[:1]); d.Action != Switch {
		t.Fatalf("after round 0 with a full probe: %+v, want Switch", d)
	}
	// Without the bandwidth or the region size the probe alone decides nothing.
	for _, f := range []func(*Env){func(e *Env) { e.Bandwidth = 0 }, func(e *Env) { e.TotalPages = 0 }} {
		e2 := e
		f(&e2)
		if d := p.Decide(e2, nil); d.Action != Continue {
			t.Fatalf("%+v with %+v, want Continue", d, e2)
		}
	}
	// A region that fits the budget starts with the full round.
	e.TotalPages, e.ProbeDirty = 100, 100
	if d := p.Decide(e, nil); d.Action != Continue {
		t.Fatalf("tiny region: %+v, want Continue", d)
	}
}

// TestEdgeCases: no rounds, zero durations, no bandwidth, Remaining unknown, empty region,
// zero-valued Env.
func TestEdgeCases(t *testing.T) {
	zeroDur := []Round{{Index: 0, Dirty: testPages, Sent: testPages, Bytes: testPages * testPageSize}, {Index: 1, Dirty: 500, Sent: 500, Bytes: 500 * testPageSize}}
	cases := []struct {
		name   string
		env    Env
		rounds []Round
		check  func(t *testing.T, name string, d Decision)
	}{
		{"nil rounds", testEnv(), nil, func(t *testing.T, name string, d Decision) {
			want := map[string]Action{"postcopy": Switch}
			if d.Action != want[name] || d.Round != -1 {
				t.Errorf("%s: %+v", name, d)
			}
		}},
		{"zero durations, no bandwidth", testEnv(), zeroDur, func(t *testing.T, name string, d Decision) {
			if _, ok := d.Numbers["bandwidth_bytes_s"]; ok {
				t.Errorf("%s: a bandwidth from zero durations: %v", name, d.Numbers)
			}
			if name == "precopy" || name == "wws" || name == "adaptive" {
				if d.Action != Continue || !strings.Contains(d.Reason, "bandwidth unknown") {
					t.Errorf("%s: %+v, want Continue: bandwidth unknown", name, d)
				}
			}
		}},
		{"zero durations, given bandwidth", Env{PageSize: testPageSize, TotalPages: testPages, DowntimeBudget: 5 * time.Millisecond, Bandwidth: testLink}, zeroDur, func(t *testing.T, name string, d Decision) {
			// 500 pages at 1 GB/s: 2.05 ms, fits.
			if name != "postcopy" && name != "traditional" && d.Action != StopAndCopy {
				t.Errorf("%s: %+v, want StopAndCopy", name, d)
			}
			if d.Numbers["bandwidth_bytes_s"] != testLink {
				t.Errorf("%s: bandwidth %v, want Env's", name, d.Numbers["bandwidth_bytes_s"])
			}
		}},
		{"zero durations, max rounds", Env{MaxRounds: 2}, zeroDur, func(t *testing.T, name string, d Decision) {
			if (name == "precopy" || name == "wws" || name == "adaptive") && d.Converged {
				t.Errorf("%s: %+v, want not converged", name, d)
			}
		}},
		{"empty region", Env{}, []Round{{Index: 0}}, func(t *testing.T, name string, d Decision) {
			want := StopAndCopy
			if name == "postcopy" {
				want = Switch
			}
			if d.Action != want {
				t.Errorf("%s: %+v, want %s", name, d, want)
			}
		}},
		{"all fake dirty", testEnv(), []Round{mkRound(0, testPages, 0), mkRound(1, 3000, 3000)}, func(t *testing.T, name string, d Decision) {
			if name != "postcopy" && name != "traditional" && d.Action != StopAndCopy {
				t.Errorf("%s: %+v, want StopAndCopy", name, d)
			}
		}},
		{"remaining without dirty pages", Env{DowntimeBudget: time.Microsecond}, []Round{
			{Index: 0, Bytes: 100, Duration: time.Microsecond}, {Index: 1, Remaining: 50, Bytes: 100, Duration: time.Microsecond},
		}, func(t *testing.T, name string, d Decision) {
			// No page written in round 1: the rate is 0, so one more round leaves nothing
			// and stopping then fits even 1 µs (TotalPages 0 once made this plan NaN).
			if name == "adaptive" && (d.Action != Continue || d.Numbers["plan_left_pages"] != 0) {
				t.Errorf("%s: %+v, want Continue: one round, then nothing left", name, d)
			}
		}},
		{"zero env", Env{}, converging()[:3], func(t *testing.T, name string, d Decision) {
			if d.Numbers["budget_ms"] != 300 || d.Numbers["max_rounds"] != 30 {
				t.Errorf("%s: defaults not applied: %v", name, d.Numbers)
			}
		}},
		{"bad bandwidth", Env{Bandwidth: math.NaN()}, converging()[:3], func(t *testing.T, name string, d Decision) {
			if b := d.Numbers["bandwidth_bytes_s"]; math.IsNaN(b) || b <= 0 {
				t.Errorf("%s: NaN bandwidth not replaced by the estimate: %v", name, b)
			}
		}},
	}
	for _, c := range cases {
		for _, name := range Names() {
			d := mustNew(t, name).Decide(c.env, c.rounds)
			checkDecision(t, c.name+"/"+name, d)
			c.check(t, name, d)
		}
	}
}

// numberToken matches a figure as show renders it, unit included.
var numberToken = regexp.MustCompile(`[-+]?\d+(?:\.\d+)?(?: ms| MB/s| pages/s| pages/round| pages|%)?`)

// checkDecision checks what every Decision must satisfy: a policy name, a reason, finite
// Numbers, and every figure in the reason rendered from a Numbers entry.
func checkDecision(t *testing.T, what string, d Decision) {
	t.Helper()
	if d.Policy == "" || strings.TrimSpace(d.Reason) == "" {
		t.Errorf("%s: empty policy or reason: %+v", what, d)
	}
	if strings.Contains(d.Reason, "%!") || strings.Contains(d.Reason, "NaN") || strings.Contains(d.Reason, "Inf") {
		t.Errorf("%s: bad format in reason %q", what, d.Reason)
	}
	shown := map[string]bool{}
	for k, v := range d.Numbers {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			t.Errorf("%s: Numbers[%s] = %v", what, k, v)
		}
		shown[show(k, v)] = true
	}
	for _, tok := range numberToken.FindAllString(d.Reason, -1) {
		if !shown[tok] {
			t.Errorf("%s: reason quotes %q, which no Numbers entry renders: %q %v", what, tok, d.Reason, d.Numbers)
		}
	}
	switch d.Action {
	case Continue, StopAndCopy, Switch:
	default:
		t.Errorf("%s: action %v", what, d.Action)
	}
}

// allHistories returns the hand-made histories and the testdata ones, with their Envs.
func allHistories(t *testing.T) map[string]history {
	t.Helper()
	hs := map[string]history{
		"converging":     {Env: testEnv(), Rounds: converging()},
		"converging-m":   {Env: testEnv(), Rounds: withRemaining(converging(), 0)},
		"non-converging": {Env: testEnv(), Rounds: nonConverging()},
		"fake-heavy":     {Env: testEnv(), Rounds: fakeHeavy()},
		"idle":           {Env: testEnv(), Rounds: idle()},
	}
	paths, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		hs["testdata/"+filepath.Base(p)] = readHistory(t, p)
	}
	return hs
}

// TestProperties checks, for every policy after every prefix of every history: the Decision
// invariants, determinism, that rounds are left untouched, and the fixed policies' answers.
func TestProperties(t *testing.T) {
	for hn, h := range allHistories(t) {
		for _, name := range Names() {
			p := mustNew(t, name)
			for n := 0; n <= len(h.Rounds); n++ {
				var rs []Round
				if n > 0 {
					rs = slices.Clone(h.Rounds[:n])
				}
				what := fmt.Sprintf("%s/%s/after %d rounds", hn, name, n)
				d := p.Decide(h.Env, rs)
				checkDecision(t, what, d)
				if d2 := p.Decide(h.Env, rs); !reflect.DeepEqual(d, d2) {
					t.Fatalf("%s: not deterministic: %+v then %+v", what, d, d2)
				}
				if n > 0 && !slices.Equal(rs, h.Rounds[:n]) {
					t.Fatalf("%s: Decide modified the rounds", what)
				}
				if d.Policy != name {
					t.Errorf("%s: Decision.Policy = %q", what, d.Policy)
				}
				if want := n - 1; d.Round != want {
					t.Errorf("%s: Decision.Round = %d, want %d", what, d.Round, want)
				}
				switch name {
				case "postcopy":
					if d.Action != Switch {
						t.Errorf("%s: postcopy said %s", what, d.Action)
					}
				case "traditional":
					if (n == 0 && d.Action != Continue) || (n == 1 && d.Action != Switch) {
						t.Errorf("%s: traditional said %s", what, d.Action)
					}
				}
				if !d.Converged && n < h.Env.withDefaults().MaxRounds && name != "adaptive" {
					t.Errorf("%s: gave up before MaxRounds: %+v", what, d)
				}
			}
		}
	}
}

// TestPrecopyGivesUpOnRecorded: on the recorded runaway history precopy continues up to
// MaxRounds, then reports it did not converge.
func TestPrecopyGivesUpOnRecorded(t *testing.T) {
	h := readHistory(t, filepath.Join("testdata", "runaway.json"))
	p := mustNew(t, "precopy")
	for n := 1; n <= len(h.Rounds); n++ {
		d := p.Decide(h.Env, h.Rounds[:n])
		want := Continue
		if n >= h.Env.MaxRounds {
			want = StopAndCopy
		}
		if d.Action != want || d.Converged != (n < h.Env.MaxRounds) {
			t.Fatalf("after %d rounds (MaxRounds %d): %+v", n, h.Env.MaxRounds, d)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	h := readHistory(t, filepath.Join("testdata", "silent50.json"))
	for _, name := range Names() {
		p := mustNew(t, name)
		want := p.Decide(h.Env, h.Rounds)
		t.Run(name, func(t *testing.T) {
			for range 4 {
				t.Run("", func(t *testing.T) {
					t.Parallel()
					for range 50 {
						if got := p.Decide(h.Env, h.Rounds); !reflect.DeepEqual(got, want) {
							t.Errorf("concurrent Decide differs: %+v", got)
							return
						}
					}
				})
			}
		})
	}
}

func BenchmarkDecide(b *testing.B) {
	rs := withRemaining(nonConverging(), 0)
	for _, name := range Names() {
		p := mustNew(b, name)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Decide(testEnv(), rs)
			}
		})
	}
}
