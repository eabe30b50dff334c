package hybrid

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata: the histories from testdata/bench and the synthetic models, and every .golden file")

// history is a testdata/*.json file: a recorded (or modelled) round history and the Env the
// policies are asked with.
type history struct {
	Source string  `json:"source"`
	Env    Env     `json:"env"`
	Rounds []Round `json:"rounds"`
}

// benchSource is the command that recorded testdata/bench/precopy-64MiB.json.
const benchSource = "go run ./cmd/pagewarp bench precopy --json --size 64MiB --workloads silent50,phases,runaway,dup8 --streams 2 --filters on --rounds 10"

// recordedEnv is the Env the recorded histories are replayed with: a tight budget for 64 MiB
// on this loopback link (~0.6–0.8 GB/s), so that the policies disagree, and MaxRounds below
// the 11 recorded rounds, so that giving up shows.
func recordedEnv(pages uint64, pageSize int) Env {
	return Env{
		PageSize: pageSize, TotalPages: pages, DowntimeBudget: 3 * time.Millisecond, MaxRounds: 10,
		PostcopyStallPerPage: 100 * time.Microsecond,
	}
}

// benchReport is the part of `pagewarp bench precopy --json` (bench.PrecopyReport) the
// import reads; decoded here rather than imported, so that this package depends on neither
// bench nor precopy.
type benchReport struct {
	Results []struct {
		Workload   string `json:"workload"`
		Pending    uint64 `json:"pending_pages"`
		RoundStats []struct {
			Round     int           `json:"round"`
			Dirty     uint64        `json:"pages_dirty"`
			FakeDirty uint64        `json:"pages_fake_dirty"`
			Zero      uint64        `json:"pages_zero"`
			Dup       uint64        `json:"pages_dup"`
			Known     uint64        `json:"pages_known"`
			Sent      uint64        `json:"pages_sent"`
			Bytes     uint64        `json:"bytes_sent"`
			Duration  time.Duration `json:"duration_ns"`
		} `json:"round_stats"`
	} `json:"results"`
	Setup struct {
		Pages    uint64 `json:"pages"`
		PageSize int    `json:"page_size"`
		Interval string `json:"interval"`
		Track    string `json:"track"`
		Link     string `json:"link"`
	} `json:"setup"`
}

// importBench converts the recorded benchmark into one history per workload:
//   - Refs = zero + duplicate + known pages;
//   - Interval(i) = max(the benchmark's interval, Duration(i-1)): rounds start every
//     interval, or at once after a round that took longer;
//   - Remaining(i) = Dirty(i+1) - FakeDirty(i+1), what round i+1 had to send; the last
//     round's is left 0 (unknown): the benchmark's pending count at the switch covers a
//     shorter window and no filter, so it would not compare with the others.
func importBench(t *testing.T, path string) map[string]history {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep benchReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	interval, err := time.ParseDuration(rep.Setup.Interval)
	if err != nil {
		t.Fatalf("%s: interval: %v", path, err)
	}
	out := map[string]history{}
	for _, res := range rep.Results {
		h := history{
			Source: fmt.Sprintf("recorded: %s (testdata/bench/%s, workload %s; %d pages of %d bytes, tracking %s, %s, rounds every %s); Remaining = next round's dirty minus fake dirty, last round unknown",
				benchSource, filepath.Base(path), res.Workload, rep.Setup.Pages, rep.Setup.PageSize, rep.Setup.Track, rep.Setup.Link, interval),
			Env: recordedEnv(rep.Setup.Pages, rep.Setup.PageSize),
		}
		st := res.RoundStats
		for i, s := range st {
			r := Round{
				Index: s.Round, Dirty: s.Dirty, FakeDirty: s.FakeDirty, Sent: s.Sent,
				Refs: s.Zero + s.Dup + s.Known, Bytes: s.Bytes, Duration: s.Duration,
			}
			if i > 0 {
				r.Interval = max(interval, st[i-1].Duration)
			}
			if i+1 < len(st) {
				r.Remaining = st[i+1].Dirty - st[i+1].FakeDirty
			}
			h.Rounds = append(h.Rounds, r)
		}
		out[res.Workload] = h
	}
	return out
}

// syntheticConverging models a workload that converges, rounds back to back on a 1 GB/s
// link: 16384 pages of 4 KiB, writes at 150000 pages/s spread over a hot set of 8192 pages
// (so a window w dirties H·(1-exp(-r·w/H)) distinct pages), 20% of them fake dirty; a round
// takes its bytes over the link plus 0.5 ms. Remaining is left unknown in every round, so
// the policies use their fallbacks.
func syntheticConverging() history {
	const (
		pages    = 16384
		pageSize = 4096
		link     = 1e9
		rate     = 150000.0
		hot      = 8192.0
		fake     = 0.20
		frame    = 24 // bytes of framing per page, about what the recorded rounds show
	)
	h := history{
		Source: "synthetic (syntheticConverging in golden_test.go): back-to-back rounds on a 1 GB/s link, 150000 writes/s over a hot set of 8192 of 16384 pages, 20% fake dirty, Remaining unknown",
		Env: Env{
			PageSize: pageSize, TotalPages: pages, DowntimeBudget: 3 * time.Millisecond, MaxRounds: 10,
			PostcopyStallPerPage: 100 * time.Microsecond,
		},
	}
	var prev time.Duration
	for i := 0; i < 12; i++ {
		r := Round{Index: i}
		if i == 0 {
			r.Dirty, r.Sent = pages, pages
		} else {
			r.Dirty = uint64(math.Round(hot * (1 - math.Exp(-rate*prev.Seconds()/hot))))
			r.FakeDirty = uint64(math.Round(fake * float64(r.Dirty)))
			r.Sent = r.Dirty - r.FakeDirty
		}
		r.Bytes = r.Sent * (pageSize + frame)
		r.Duration = time.Duration(float64(r.Bytes)/link*1e9) + 500*time.Microsecond
		prev = r.Duration
		h.Rounds = append(h.Rounds, r)
	}
	return h
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readHistory(t *testing.T, path string) history {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var h history
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for i, r := range h.Rounds {
		if r.Index != i {
			t.Fatalf("%s: round %d has index %d", path, i, r.Index)
		}
	}
	return h
}

// replay asks every policy after every prefix of h (nil included) and renders the decisions,
// one a line.
func replay(name string, h history) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# history %s: %d rounds\n# %s\n", name, len(h.Rounds), h.Source)
	for _, pn := range Names() {
		p, _ := New(pn)
		fmt.Fprintf(&b, "\n# policy %s\n", pn)
		for n := 0; n <= len(h.Rounds); n++ {
			var prefix []Round
			if n > 0 {
				prefix = h.Rounds[:n]
			}
			d := p.Decide(h.Env, prefix)
			fmt.Fprintf(&b, "after %2d: %-13s round=%-2d converged=%-5v %s\n", n, d.Action, d.Round, d.Converged, d.Reason)
		}
	}
	return b.Bytes()
}

// TestGolden replays every testdata/*.json history against its .golden file. With -update it
// first rewrites the histories (from testdata/bench and the synthetic models), then the
// golden files.
func TestGolden(t *testing.T) {
	if *update {
		for name, h := range importBench(t, filepath.Join("testdata", "bench", "precopy-64MiB.json")) {
			writeJSON(t, filepath.Join("testdata", name+".json"), h)
		}
		writeJSON(t, filepath.Join("testdata", "converging.json"), syntheticConverging())
	}
	paths, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 5 {
		t.Fatalf("want at least 5 histories in testdata, found %d", len(paths))
	}
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".json")
		t.Run(name, func(t *testing.T) {
			got := replay(name, readHistory(t, path))
			golden := strings.TrimSuffix(path, ".json") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./hybrid -update)", err)
			}
			if !bytes.Equal(got, want) {
				gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
				for i := range max(len(gl), len(wl)) {
					var g, w string
					if i < len(gl) {
						g = gl[i]
					}
					if i < len(wl) {
						w = wl[i]
					}
					if g != w {
						t.Fatalf("%s line %d:\n got: %s\nwant: %s\n(run go test ./hybrid -update if the change is meant)", golden, i+1, g, w)
					}
				}
			}
		})
	}
}

// TestRecordedHistories checks that the committed histories are what the import makes of
// the committed benchmark output, so that neither drifts from the other.
func TestRecordedHistories(t *testing.T) {
	for name, want := range importBench(t, filepath.Join("testdata", "bench", "precopy-64MiB.json")) {
		got := readHistory(t, filepath.Join("testdata", name+".json"))
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(want)
		if !bytes.Equal(gb, wb) {
			t.Errorf("testdata/%s.json differs from the import of testdata/bench (run go test ./hybrid -update)", name)
		}
	}
	gb, _ := json.Marshal(readHistory(t, filepath.Join("testdata", "converging.json")))
	wb, _ := json.Marshal(syntheticConverging())
	if !bytes.Equal(gb, wb) {
		t.Errorf("testdata/converging.json differs from syntheticConverging (run go test ./hybrid -update)")
	}
}
