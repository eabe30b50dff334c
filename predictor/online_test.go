package predictor

import (
	"math/rand/v2"
	"testing"
)

// onlineRun drives p as the page server does: a demand fault is observed and
// followed by up to k pushes, each reported with Pushed; the target reports
// the use of one pushed page in every probeEvery, as used when the touch
// sequence reaches it, as unused when it is not touched within expiry
// demand faults. It returns the demand faults and pushes in each half of
// seq, for phase-change checks.
func onlineRun(p Predictor, seq []uint64, k, probeEvery, expiry int) (faults, pushes [2]int) {
	type probe struct {
		page uint64
		at   int
	}
	resident := map[uint64]bool{}
	probes := map[uint64]int{} // page -> demand fault count when pushed
	var order []probe
	nfaults := 0
	dst := make([]uint64, 0, k)
	for i, q := range seq {
		half := 0
		if i >= len(seq)/2 {
			half = 1
		}
		if resident[q] {
			if _, ok := probes[q]; ok {
				delete(probes, q)
				p.Feedback(q, true)
			}
			continue
		}
		resident[q] = true
		nfaults++
		faults[half]++
		p.Observe(q)
		for _, x := range p.Predict(dst[:0], k) {
			if resident[x] {
				continue
			}
			resident[x] = true
			p.Pushed(x)
			pushes[half]++
			if x%uint64(probeEvery) == 0 {
				probes[x] = nfaults
				order = append(order, probe{x, nfaults})
			}
		}
		for len(order) > 0 && nfaults-order[0].at >= expiry {
			if _, ok := probes[order[0].page]; ok {
				delete(probes, order[0].page)
				p.Feedback(order[0].page, false)
			}
			order = order[1:]
		}
	}
	return faults, pushes
}

// TestPushedOnline checks ppm under the page server's protocol: pushed pages
// are assumed touches and only a sample is reported. On a sequential stream
// it keeps pushing (demand faults near the floor 1/(k+1)); when the stream
// turns random it stops pushing once the probes come back unused.
func TestPushedOnline(t *testing.T) {
	const n = 1 << 15
	const k = 16
	seq := make([]uint64, 0, n)
	for i := range uint64(n / 2) {
		seq = append(seq, i)
	}
	r := rand.New(rand.NewPCG(3, 4))
	rest := make([]uint64, 0, n/2)
	for i := uint64(n / 2); i < n; i++ {
		rest = append(rest, i)
	}
	r.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	seq = append(seq, rest...)

	p, err := New("ppm", Config{Pages: n, Window: 64 * (k + 1)})
	if err != nil {
		t.Fatal(err)
	}
	faults, pushes := onlineRun(p, seq, k, 8, 32)
	t.Logf("sequential half: %d faults, %d pushes; random half: %d faults, %d pushes", faults[0], pushes[0], faults[1], pushes[1])
	if max := n / 2 / (k + 1) * 11 / 10; faults[0] > max {
		t.Errorf("sequential half: %d demand faults, want at most %d (near 1/(k+1) of %d)", faults[0], max, n/2)
	}
	// Random: pushes must fall to a small share of the faults once the
	// probes report misses (the first few dozen faults may still push).
	if pushes[1] > faults[1]/10 {
		t.Errorf("random half: %d pushes for %d demand faults, want at most a tenth", pushes[1], faults[1])
	}
}

// TestResidentNeverPredicted checks that pages the target got another way
// are never pushed, for every predictor.
func TestResidentNeverPredicted(t *testing.T) {
	const n = 4096
	for _, name := range Names() {
		p, err := New(name, Config{Pages: n})
		if err != nil {
			t.Fatal(err)
		}
		seq := make([]uint64, n)
		for i := range seq {
			seq[i] = uint64(i)
		}
		if w, ok := p.(Warmer); ok {
			w.Warm(seq)
		}
		for q := uint64(0); q < n; q += 2 {
			p.Resident(q + 1) // every odd page arrived by the pull
		}
		var dst []uint64
		for q := uint64(0); q < 512; q += 2 {
			p.Observe(q)
			dst = p.Predict(dst[:0], 8)
			for _, x := range dst {
				if x%2 == 1 {
					t.Fatalf("%s predicted page %d, which was reported resident", name, x)
				}
			}
		}
	}
}
