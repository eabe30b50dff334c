package predictor

import (
	"slices"
	"time"
)

// EvalResult is the outcome of replaying one trace against one predictor.
type EvalResult struct {
	Predictor string `json:"predictor"`
	// Faults is the number of distinct pages touched: the demand faults without prefetching.
	Faults uint64 `json:"faults"`
	// DemandFaults is the number of touches of pages that were not resident.
	DemandFaults uint64 `json:"demand_faults"`
	// Pushed is the number of predicted pages that were not resident and so were pushed.
	Pushed uint64 `json:"pushed"`
	// PushedUsed is the number of pushed pages touched later in the trace.
	PushedUsed uint64 `json:"pushed_used"`
	// Precision is PushedUsed / Pushed (0 when nothing was pushed).
	Precision float64 `json:"precision"`
	// Coverage is (Faults - DemandFaults) / Faults.
	Coverage float64 `json:"coverage"`
	// PredictNanosP99 is the 99th percentile of the time Observe plus Predict took per fault.
	PredictNanosP99 float64 `json:"predict_p99_ns"`
}

// Evaluate replays trace (the first-touch sequence of a run) against p with a push budget of k
// pages per demand fault. A touch of a page that is not resident is a demand fault: p observes
// it, predicts up to k pages, and those not yet resident become resident as pushed. A touch of a
// pushed page is not a fault; it is reported with p.Feedback(page, true), modelling a target that
// tells the source which pushed pages were used, so the predictor sees the whole touch sequence.
// Repeated touches of resident pages are skipped. Predictions outside the trace's pages are
// ignored (they cannot be used).
func Evaluate(p Predictor, trace []uint64, k int) EvalResult {
	return evaluate(p, trace, k, nil)
}

// evaluate is Evaluate with a hook called after every touch with its index and whether it was a
// demand fault.
func evaluate(p Predictor, trace []uint64, k int, hook func(i int, demand bool)) EvalResult {
	var maxPage uint64
	for _, q := range trace {
		maxPage = max(maxPage, q)
	}
	const (
		resident = 1 << iota
		pushed
		used
	)
	state := make([]uint8, maxPage+1)
	if len(trace) == 0 {
		state = nil
	}
	r := EvalResult{Predictor: p.Name()}
	lat := make([]float64, 0, 1024)
	dst := make([]uint64, 0, max(k, 0))
	for i, q := range trace {
		s := state[q]
		if s&resident != 0 {
			if s&pushed != 0 && s&used == 0 {
				state[q] |= used
				r.PushedUsed++
				p.Feedback(q, true)
			}
			if hook != nil {
				hook(i, false)
			}
			continue
		}
		r.Faults++
		r.DemandFaults++
		state[q] = resident
		t0 := time.Now()
		p.Observe(q)
		dst = p.Predict(dst[:0], k)
		lat = append(lat, float64(time.Since(t0).Nanoseconds()))
		if len(dst) > k {
			dst = dst[:k]
		}
		for _, x := range dst {
			if x <= maxPage && state[x] == 0 {
				state[x] = resident | pushed
				r.Pushed++
			}
		}
		if hook != nil {
			hook(i, true)
		}
	}
	r.Faults += r.PushedUsed
	if r.Pushed > 0 {
		r.Precision = float64(r.PushedUsed) / float64(r.Pushed)
	}
	if r.Faults > 0 {
		r.Coverage = float64(r.Faults-r.DemandFaults) / float64(r.Faults)
	}
	r.PredictNanosP99 = percentile(lat, 0.99)
	return r
}

// percentile returns the q-quantile of v (sorting v), 0 for none.
func percentile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[min(len(v)-1, int(q*float64(len(v))))]
}
