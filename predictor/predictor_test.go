package predictor

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

const budget = 8 // pages pushed per demand fault, the same for every predictor

func newWarmed(t testing.TB, name string, w workload) Predictor {
	t.Helper()
	p, err := New(name, Config{Pages: regionPages})
	if err != nil {
		t.Fatal(err)
	}
	if wm, ok := p.(Warmer); ok {
		switch {
		case name == "oracle":
			wm.Warm(w.trace)
		case w.warm != nil:
			wm.Warm(w.warm)
		}
	}
	return p
}

// results evaluates every predictor on every workload: results[workload][predictor].
func results(t *testing.T) map[string]map[string]EvalResult {
	t.Helper()
	out := map[string]map[string]EvalResult{}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| workload | predictor | demand faults | pushed | precision | coverage |\n|---|---|---:|---:|---:|---:|\n")
	for _, w := range workloads() {
		out[w.name] = map[string]EvalResult{}
		for _, name := range names {
			r := Evaluate(newWarmed(t, name, w), w.trace, budget)
			out[w.name][name] = r
			fmt.Fprintf(&b, "| %s | %s | %d | %d | %.3f | %.3f |\n", w.name, name, r.DemandFaults, r.Pushed, r.Precision, r.Coverage)
		}
	}
	t.Log(b.String())
	return out
}

func TestEvaluateTargets(t *testing.T) {
	res := results(t)
	demand := func(w, p string) float64 { return float64(res[w][p].DemandFaults) }

	// Target: geometric mean of ppm/none over the regular workloads <= 0.1. Not reachable with
	// this Evaluate: each demand fault makes at most 1+k pages resident, so demand faults are at
	// least faults/(k+1) = 1/9 = 0.111 of none (oracle included). Asserted: within 4% of that floor.
	logSum := 0.0
	regular := []string{"sequential", "strided", "interleaved", "structured"}
	for _, w := range regular {
		logSum += math.Log(demand(w, "ppm") / demand(w, "none"))
	}
	gm := math.Exp(logSum / float64(len(regular)))
	t.Logf("ppm/none geometric mean over %v: %.4f (floor 1/(k+1) = %.4f)", regular, gm, 1.0/(budget+1))
	if gm > 1.04/(budget+1) {
		t.Errorf("ppm/none geometric mean %.4f > %.4f", gm, 1.04/(budget+1))
	}
	for _, w := range []string{"strided", "interleaved", "structured"} {
		if d, n := demand(w, "ppm"), demand(w, "nextn"); d > 0.5*n {
			t.Errorf("%s: ppm demand faults %.0f > 0.5 x nextn %.0f", w, d, n)
		}
	}
	for _, w := range []string{"pointerchase", "zipf"} {
		if d, n := demand(w, "ppm"), demand(w, "none"); d > 0.3*n {
			t.Errorf("%s (warmed): ppm demand faults %.0f > 0.3 x none %.0f", w, d, n)
		}
	}
	// Unpredictable workloads: random, and zipf warmed from a different seed (different hot
	// pages, so the recording says nothing). ppm must learn that and stay almost silent.
	for _, w := range []string{"random", "zipf-otherseed"} {
		if pushed, n := float64(res[w]["ppm"].Pushed), demand(w, "none"); pushed > 0.1*n {
			t.Errorf("%s: ppm pushed %.0f > 0.1 x none demand faults %.0f", w, pushed, n)
		}
	}
	for w, r := range res {
		if w == "random" || w == "zipf-otherseed" {
			continue
		}
		if r["ppm"].Precision < 0.7 {
			t.Errorf("%s: ppm precision %.3f < 0.7", w, r["ppm"].Precision)
		}
	}
}

// TestPredictionsValid checks every predictor on every workload: no touched page, no duplicate
// within a call, nothing out of range, at most k pages.
func TestPredictionsValid(t *testing.T) {
	for _, w := range workloads() {
		for _, name := range names {
			p := newWarmed(t, name, w)
			touched := map[uint64]bool{}
			var dst []uint64
			r := rng(42)
			for i, q := range w.trace {
				if r.IntN(3) == 0 {
					p.Feedback(q, true) // as if pushed and used
				} else {
					p.Observe(q)
				}
				touched[q] = true
				k := 1 + r.IntN(16)
				dst = p.Predict(dst[:0], k)
				if len(dst) > k {
					t.Fatalf("%s/%s: %d predictions for k=%d", w.name, name, len(dst), k)
				}
				seen := map[uint64]bool{}
				for _, x := range dst {
					switch {
					case x >= regionPages:
						t.Fatalf("%s/%s at %d: page %d out of range", w.name, name, i, x)
					case touched[x]:
						t.Fatalf("%s/%s at %d: page %d already touched", w.name, name, i, x)
					case seen[x]:
						t.Fatalf("%s/%s at %d: page %d twice in %v", w.name, name, i, x, dst)
					}
					seen[x] = true
				}
				if i == len(w.trace)/2 {
					p.Reset()
				}
			}
		}
	}
}

// TestPhaseRecovery: after sequential and random phases, ppm must be back to near-perfect
// prefetching within a bounded number of faults of the strided phase.
func TestPhaseRecovery(t *testing.T) {
	tr := phases(10)
	p := newWarmed(t, "ppm", workload{trace: tr})
	var faults []int // demand faults in the strided phase, by index
	evaluate(p, tr, budget, func(i int, demand bool) {
		if demand && i >= phaseStrideStart {
			faults = append(faults, i)
		}
	})
	// Recovered once every gap between demand faults is k+1 touches (k pushed pages used).
	recovered := -1
	for j := len(faults) - 1; j > 0; j-- {
		if faults[j]-faults[j-1] != budget+1 {
			recovered = j
			break
		}
	}
	n := len(tr) - phaseStrideStart
	t.Logf("strided phase: %d touches, %d demand faults, recovered after %d faults", n, len(faults), recovered+1)
	// Measured: 27 faults (the random phase's pending predictions still expire as misses
	// for up to Window touches, holding measured precision down).
	if recovered+1 > 32 {
		t.Errorf("recovered after %d demand faults of the strided phase, want <= 32", recovered+1)
	}
	if max := n/(budget+1) + 32; len(faults) > max {
		t.Errorf("%d demand faults in the strided phase, want <= %d", len(faults), max)
	}
}

// TestPhaseRecoverySameContext: the same delta contexts change successor mid-stream (record
// layout {0,3,7} becomes {0,3,9}); count aging must let the new successor win.
func TestPhaseRecoverySameContext(t *testing.T) {
	var tr []uint64
	rec := uint64(0)
	for ; rec < 30000; rec += 16 {
		tr = append(tr, rec, rec+3, rec+7)
	}
	switchAt := len(tr)
	for ; rec+16 <= regionPages; rec += 16 {
		tr = append(tr, rec, rec+3, rec+9)
	}
	p := newWarmed(t, "ppm", workload{trace: tr})
	after := 0
	var last int
	evaluate(p, tr, budget, func(i int, demand bool) {
		if demand && i >= switchAt {
			after++
			last = i
		}
	})
	ideal := (len(tr) - switchAt) / (budget + 1)
	t.Logf("after the layout change: %d demand faults (ideal %d), last at %d of %d", after, ideal, last, len(tr))
	if after > ideal+32 {
		t.Errorf("%d demand faults after the layout change, want <= %d", after, ideal+32)
	}
}

// TestBoundedMemory: a million random observations leave at most MaxContexts contexts per model.
func TestBoundedMemory(t *testing.T) {
	const pages = 1 << 20
	cfg := Config{Pages: pages, MaxContexts: 1 << 12, AbsOrder: 3}
	p, err := New("ppm", cfg)
	if err != nil {
		t.Fatal(err)
	}
	pp := p.(*ppm)
	r := rng(1)
	var dst []uint64
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	for i := 0; i < n; i++ {
		p.Observe(r.Uint64N(pages))
		if i%16 == 0 {
			dst = p.Predict(dst[:0], budget)
		}
	}
	d, a := pp.contexts()
	t.Logf("contexts after %d observations: delta %d, abs %d (cap %d)", n, d, a, cfg.MaxContexts)
	if d > cfg.MaxContexts || a > cfg.MaxContexts || len(pp.tables[0].e) > cfg.MaxContexts {
		t.Errorf("contexts delta %d abs %d exceed cap %d", d, a, cfg.MaxContexts)
	}
	if d < cfg.MaxContexts/2 || a < cfg.MaxContexts/2 {
		t.Errorf("contexts delta %d abs %d: table barely used, eviction suspicious", d, a)
	}
	if len(pp.ring) != 4096 || len(pp.heads) != DefaultStreams {
		t.Errorf("ring %d heads %d grew", len(pp.ring), len(pp.heads))
	}
}

func TestNew(t *testing.T) {
	_, err := New("lru", Config{Pages: 1})
	if !errors.Is(err, ErrUnknownPredictor) {
		t.Fatalf("New(lru) = %v, want ErrUnknownPredictor", err)
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not list %q", err, n)
		}
	}
	for _, c := range []Config{{}, {Pages: MaxPages + 1}, {Pages: 8, Order: 9}, {Pages: 8, MinConfidence: 2}, {Pages: 8, MaxDelta: -1}} {
		if _, err := New("ppm", c); !errors.Is(err, ErrConfig) {
			t.Errorf("New(ppm, %+v) = %v, want ErrConfig", c, err)
		}
	}
	for _, n := range names {
		p, err := New(n, Config{Pages: 8})
		if err != nil || p.Name() != n {
			t.Errorf("New(%s) = %v, %v", n, p, err)
		}
	}
}

func TestBaselines(t *testing.T) {
	mk := func(name string) Predictor {
		p, err := New(name, Config{Pages: 100})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	eq := func(name string, got []uint64, want ...uint64) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("%s: got %v, want %v", name, got, want)
		}
	}
	p := mk("nextn")
	p.Observe(95)
	eq("nextn", p.Predict(nil, 8), 96, 97, 98, 99)

	p = mk("stride")
	for _, q := range []uint64{10, 13, 16, 19} {
		p.Observe(q)
	}
	eq("stride", p.Predict(nil, 3), 22, 25, 28)
	p.Observe(50)
	eq("stride broken", p.Predict(nil, 3))

	p = mk("pivot")
	for _, q := range []uint64{10, 12, 14, 16} {
		p.Observe(q)
	}
	eq("pivot forward", p.Predict(nil, 6), 17, 18, 15, 19, 20, 21)
	p = mk("pivot")
	p.Observe(50)
	eq("pivot alone", p.Predict(nil, 4), 51, 49, 52, 48)

	p = mk("workingset")
	p.Observe(3)
	eq("workingset unwarmed", p.Predict(nil, 4))
	p.(Warmer).Warm([]uint64{7, 3, 9, 1, 5})
	p.Observe(3)
	p.Observe(1)
	eq("workingset", p.Predict(nil, 4), 5)

	p = mk("oracle")
	p.(Warmer).Warm([]uint64{7, 3, 9, 1, 5})
	p.Observe(7)
	p.Feedback(9, true)
	eq("oracle", p.Predict(nil, 2), 1, 5)
}

// TestPPMWarmPredictsSuccessor: a warmed ppm names the recorded successors of an irregular order.
func TestPPMWarmPredictsSuccessor(t *testing.T) {
	order := []uint64{500, 17, 9000, 4, 777, 31337, 2, 64000}
	p, _ := New("ppm", Config{Pages: regionPages})
	p.(Warmer).Warm(order)
	p.Observe(17)
	if got := p.Predict(nil, 3); fmt.Sprint(got) != fmt.Sprint([]uint64{9000, 4, 777}) {
		t.Errorf("warmed ppm after 17 predicts %v, want [9000 4 777]", got)
	}
}

// Lost makes a pushed page eligible for prediction again, for every predictor that remembers
// touches (what the models learned from the assumed touch stays); nextn, whose prediction
// depends on the last fault only, names it again at once.
func TestLost(t *testing.T) {
	for _, name := range []string{"nextn", "ppm", "stride", "workingset"} {
		p, err := New(name, Config{Pages: 1024})
		if err != nil {
			t.Fatal(err)
		}
		f, ok := p.(Forgetter)
		if !ok {
			t.Fatalf("%s: not a Forgetter", name)
		}
		free := p.(interface{ free(uint64) bool }).free
		for pg := uint64(100); pg < 120; pg++ {
			p.Observe(pg)
		}
		const lost = 500
		p.Pushed(lost)
		if free(lost) || slices.Contains(p.Predict(nil, 16), lost) {
			t.Fatalf("%s: pushed page %d still eligible", name, lost)
		}
		f.Lost(lost)
		if !free(lost) {
			t.Fatalf("%s: page %d not eligible after Lost", name, lost)
		}
		for _, pg := range p.Predict(nil, 16) {
			if pg >= 1024 || (pg >= 100 && pg < 120) {
				t.Fatalf("%s: invalid prediction %d after Lost", name, pg)
			}
		}
	}
	n, _ := New("nextn", Config{Pages: 1024})
	n.Pushed(11)
	n.Observe(10)
	if got := n.Predict(nil, 2); !slices.Equal(got, []uint64{12}) {
		t.Fatalf("nextn predicts %v with 11 pushed, want [12]", got)
	}
	n.(Forgetter).Lost(11)
	if got := n.Predict(nil, 2); !slices.Equal(got, []uint64{11, 12}) {
		t.Fatalf("nextn predicts %v after Lost(11), want [11 12]", got)
	}
}
