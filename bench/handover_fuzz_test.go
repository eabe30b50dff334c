package bench

import (
	"encoding/json"
	"testing"
)

// FuzzHandoverState feeds arbitrary bytes to the target's decoder of the
// workload state the source hands over: it must return an error or states
// that fit the workloads (one per workload, a step count per thread, none
// past the end), never panic, and what it accepts must resume a workload.
func FuzzHandoverState(f *testing.F) {
	ms := fuzzMutators(f)
	good, _ := json.Marshal([]MutatorState{{Steps: []uint64{3, 5}}, {Steps: []uint64{0, 100}}})
	for _, seed := range [][]byte{good, []byte(`[]`), []byte(`[{"steps":[1]}]`), []byte(`[{"steps":[1,2]},{"steps":[1,200]}]`),
		[]byte(`null`), []byte(`[{"steps":null},{"steps":[1,2]}]`), []byte(`[{"steps":[-1,2]},{"steps":[1,2]}]`)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		states, err := decodeHandoverState(b, ms)
		if err != nil {
			return
		}
		for i, st := range states {
			if len(st.Steps) != ms[i].cfg.Threads {
				t.Fatalf("accepted %d steps for %d threads", len(st.Steps), ms[i].cfg.Threads)
			}
			for _, n := range st.Steps {
				if n > ms[i].cfg.Steps {
					t.Fatalf("accepted step %d past %d", n, ms[i].cfg.Steps)
				}
			}
		}
	})
}

func fuzzMutators(t testing.TB) []*Mutator {
	var ms []*Mutator
	for i := range 2 {
		m, err := NewMutator(MutatorConfig{Name: "silent50", Pages: 16, Threads: 2, Seed: int64(i), Steps: 100})
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	return ms
}

// TestHandoverStateRejects: states that do not fit are errors.
func TestHandoverStateRejects(t *testing.T) {
	ms := fuzzMutators(t)
	for _, b := range []string{`[]`, `[{"steps":[1,2]}]`, `[{"steps":[1]},{"steps":[1,2]}]`, `[{"steps":[1,2]},{"steps":[1,101]}]`,
		`{"steps":[1,2]}`, `[{"steps":[1,2]},{"steps":[1,-2]}]`, `garbage`} {
		if _, err := decodeHandoverState([]byte(b), ms); err == nil {
			t.Errorf("%s accepted", b)
		}
	}
	if st, err := decodeHandoverState([]byte(`[{"steps":[1,2]},{"steps":[100,0]}]`), ms); err != nil || st[1].Steps[0] != 100 {
		t.Errorf("a fitting state: %v %v", st, err)
	}
}
