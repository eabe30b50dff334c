package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/internal/ptytest"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
)

// The test binary doubles as the CLI when PAGEWARP_CLI=1, so that commands
// which re-execute themselves (demo and bench start `pagewarp serve` in
// another process) work under test.
func TestMain(m *testing.M) {
	if os.Getenv("PAGEWARP_CLI") == "1" {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := run(ctx, os.Stdout, os.Stderr, os.Args[1:]); err != nil {
			os.Stderr.WriteString("pagewarp: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startServe runs `serve` in-process on loopback and returns its address.
func startServe(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		run(ctx, pw, io.Discard, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...))
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if m := regexp.MustCompile(`listening on (\S+)`).FindStringSubmatch(sc.Text()); m != nil {
			go io.Copy(io.Discard, pr)
			return m[1]
		}
	}
	t.Fatal("serve printed no address")
	return ""
}

// TestTraceRecordEval records a complete first-touch trace (no pull) and
// evaluates predictors on it.
func TestTraceRecordEval(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := startServe(t, ctx, "--demo", "4MiB")
	file := filepath.Join(t.TempDir(), "run.pwt")
	if err := run(ctx, io.Discard, io.Discard, []string{"trace", "record", "--connect", addr, "--out-trace", file, "--no-pull", "--touch-threads", "2"}); err != nil {
		t.Fatal(err)
	}
	// A workload from the suite: a strided walk is learnable without warming.
	strided := filepath.Join(t.TempDir(), "strided.pwt")
	if err := run(ctx, io.Discard, io.Discard, []string{"trace", "record", "--connect", addr, "--out-trace", strided, "--no-pull", "--touch-threads", "1", "--workload", "strided"}); err != nil {
		t.Fatal(err)
	}
	var sout bytes.Buffer
	if err := run(ctx, &sout, io.Discard, []string{"trace", "eval", "--json", "--predictors", "none,ppm", strided}); err != nil {
		t.Fatal(err)
	}
	var sres struct {
		Results []struct {
			DemandFaults uint64 `json:"demand_faults"`
		}
	}
	if err := json.Unmarshal(sout.Bytes(), &sres); err != nil || len(sres.Results) != 2 {
		t.Fatalf("eval of the strided trace: %v\n%s", err, sout.String())
	}
	if none, ppm := sres.Results[0].DemandFaults, sres.Results[1].DemandFaults; ppm*3 > none {
		t.Errorf("strided walk: ppm %d demand faults, none %d; want at most a third", ppm, none)
	}
	tr, err := readTrace(file)
	if err != nil {
		t.Fatal(err)
	}
	pages := uint64(4<<20) / uint64(os.Getpagesize())
	seen := make(map[uint64]bool)
	for _, p := range tr.Seq {
		if p >= pages || seen[p] {
			t.Fatalf("trace has page %d twice or out of range (%d pages)", p, pages)
		}
		seen[p] = true
	}
	if tr.Pages != pages || uint64(len(tr.Seq)) != pages {
		t.Fatalf("trace of %d faults over %d pages, want every one of %d pages once (no pull)", len(tr.Seq), tr.Pages, pages)
	}
	var out bytes.Buffer
	if err := run(ctx, &out, io.Discard, []string{"trace", "eval", "--json", "--predictors", "none,nextn,ppm", "--warm", file, file}); err != nil {
		t.Fatal(err)
	}
	var res struct {
		K       int
		Results []struct {
			Predictor    string
			Faults       uint64
			DemandFaults uint64 `json:"demand_faults"`
			Warmed       bool
		}
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("eval JSON: %v\n%s", err, out.String())
	}
	if len(res.Results) != 3 || res.K != 8 {
		t.Fatalf("eval gave %+v", res)
	}
	none, ppm := res.Results[0], res.Results[2]
	if none.DemandFaults != pages || none.Faults != pages {
		t.Errorf("none: %+v, want %d demand faults", none, pages)
	}
	// Warmed with the very run it replays, ppm knows the order.
	if !ppm.Warmed || ppm.DemandFaults > pages/5 {
		t.Errorf("ppm warmed with the same run: %+v, want at most %d demand faults", ppm, pages/5)
	}
	if err := run(ctx, io.Discard, io.Discard, []string{"trace", "eval", "--predictors", "bogus", file}); err == nil || !strings.Contains(err.Error(), "ppm") {
		t.Errorf("unknown predictor: %v, want an error listing the valid names", err)
	}
}

// TestServeReceive runs serve and receive --verify --out as a user would
// and compares the written file with the demo content byte for byte.
func TestServeReceive(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, pw, io.Discard, []string{"serve", "--demo", "8MiB", "--demo-seed", "3", "--demo-zero", "0.3", "--listen", "127.0.0.1:0"})
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var addr string
	for sc.Scan() {
		if m := regexp.MustCompile(`listening on (\S+)`).FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
			break
		}
	}
	if addr == "" {
		t.Fatalf("serve printed no address: %v", <-served)
	}
	go io.Copy(io.Discard, pr)

	out := filepath.Join(t.TempDir(), "copy.img")
	var stdout bytes.Buffer
	if err := run(ctx, &stdout, io.Discard, []string{"receive", "--connect", addr, "--verify", "--out", out}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"received 8MiB", "verified", "written to", "closed with bye"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("receive output lacks %q:\n%s", want, stdout.String())
		}
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	ps := os.Getpagesize()
	want := make([]byte, 8<<20)
	bench.Content{Seed: 3, ZeroFraction: 0.3}.Fill(want, ps)
	if !bytes.Equal(got, want) {
		t.Fatalf("written region differs from the source (page %d)", bench.Content{Seed: 3, ZeroFraction: 0.3}.Check(got, ps))
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop on cancel")
	}
}

func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve"}, "exactly one of --file"},
		{[]string{"serve", "--demo", "1MiB", "--file", "x"}, "exactly one of --file"},
		{[]string{"serve", "--demo", "12345"}, "multiple of the page size"},
		{[]string{"serve", "--demo", "lots"}, "--demo"},
		{[]string{"serve", "--demo", "1MiB", "--demo-zero", "2"}, "fraction"},
		{[]string{"serve", "--demo", "1MiB", "--listen", "0.0.0.0:0"}, "not a loopback address"},
		{[]string{"serve", "--file", "/nonexistent/mem.img"}, "no such file"},
		{[]string{"serve", "--bogus"}, "unknown flag"},
		{[]string{"receive"}, "--connect HOST:PORT is required"},
		{[]string{"receive", "--connect", "127.0.0.1:1"}, "connection refused"},
		{[]string{"receive", "--connect", "x:1", "--no-pull"}, "--no-pull needs --touch-threads"},
		{[]string{"receive", "--connect", "x:1", "--pull-chunk", "5000"}, "--pull-chunk"},
		{[]string{"bench", "faults", "--pull-size", "big"}, "--pull-size"},
		{[]string{"serve", "--demo", "1MiB", "--predictor", "magic"}, "unknown predictor"},
		{[]string{"serve", "--demo", "1MiB", "--push-budget", "0"}, "--push-budget"},
		{[]string{"serve", "--demo", "1MiB", "--warm", "/nonexistent/t.pwt"}, "no such file"},
		{[]string{"bench", "prefetch", "--workloads", "bogus"}, "unknown workload"},
		{[]string{"bench", "prefetch", "--predictors", "magic"}, "unknown predictor"},
		{[]string{"receive", "--connect", "127.0.0.1:1", "--touch-threads", "2", "--workload", "bogus"}, "pointer-chase"},
		{[]string{"bench", "precopy", "--workloads", "bogus"}, "unknown mutator"},
		{[]string{"bench", "precopy", "--track", "magic"}, "unknown tracking mode"},
		{[]string{"bench", "precopy", "--hash", "md5"}, "unknown content hash"},
		{[]string{"bench", "precopy", "--filters", "maybe"}, "--filters"},
		{[]string{"bench", "precopy", "--streams", "17"}, "17 streams"},
		{[]string{"migrate", "--policy", "magic"}, "unknown hybrid policy"},
		{[]string{"migrate", "--link", "wormhole:1gbit"}, "--link"},
		{[]string{"migrate", "--workload", "bogus"}, "unknown mutator"},
		{[]string{"migrate", "--streams", "0"}, "out of range"},
		{[]string{"bench", "hybrid", "--policies", "magic"}, "unknown hybrid policy"},
		{[]string{"bench", "all", "--skip", "everything"}, "--skip everything: want some of faults, prefetch"},
		{[]string{"bench", "all", "--no-report"}, "--no-report leaves nothing to do"},
		{[]string{"chaos", "--scenarios", "meteor"}, `scenario "meteor"`},
		{[]string{"chaos", "--link", "veth:1gbit"}, "needs loopback or shaped"},
		{[]string{"migrate", "--probe", "soon"}, `--probe "soon"`},
	} {
		err := run(context.Background(), io.Discard, io.Discard, c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("pagewarp %s: error %v, want one containing %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}

// TestDemo runs a small demo end to end: a server in another process, a
// verified migration with touching threads, and the comparison table.
func TestDemo(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	t.Setenv("PAGEWARP_CLI", "1") // the re-executed test binary acts as the CLI
	var stdout bytes.Buffer
	out := t.TempDir()
	if err := run(context.Background(), &stdout, io.Discard, []string{"demo", "--size", "16MiB", "--samples", "500", "--out", out}); err != nil {
		t.Fatalf("demo: %v\n%s", err, stdout.String())
	}
	for _, want := range []string{"listening on", "verified", "userfaultfd-go mapper.Handle", "loopback TCP", "background pull over loopback",
		"prefetch:", "pointer-chase ppm", "precopy:", "silent50  streams=2", "hybrid: link loopback", "adaptive", "report written to " + out} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, stdout.String())
		}
	}
	for _, f := range []string{"README.md", "demo.json", "table.txt", "faults-cdf.png", "precopy-rounds.svg", "hybrid-rounds.png",
		"timeline-silent50-adaptive.svg"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("demo report folder lacks %s (%v)", f, err)
		}
	}
}

// TestBenchPrefetch runs a small prefetch benchmark: the JSON carries the
// keys the issue asks for, every run's workload result matches the source,
// and ppm cuts demand faults on a sequential workload.
func TestBenchPrefetch(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	t.Setenv("PAGEWARP_CLI", "1")
	var stdout, stderr bytes.Buffer
	plot := filepath.Join(t.TempDir(), "p.svg")
	out := filepath.Join(t.TempDir(), "report")
	if err := run(context.Background(), &stdout, &stderr, []string{"bench", "prefetch", "--json", "--size", "8MiB",
		"--workloads", "sequential,random", "--predictors", "none,nextn,ppm", "--plot", plot, "--out", out}); err != nil {
		t.Fatalf("bench prefetch: %v\n%s", err, stdout.String())
	}
	var rep struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if len(rep.Results) != 6 {
		t.Fatalf("%d results, want 2 workloads x 3 predictors", len(rep.Results))
	}
	faults := map[string]float64{}
	for _, r := range rep.Results {
		for _, k := range []string{"workload", "predictor", "demand_faults", "pushed", "pushed_used", "precision", "postcopy_seconds"} {
			if _, ok := r[k]; !ok {
				t.Errorf("result %v lacks %q", r, k)
			}
		}
		if r["result_ok"] != true {
			t.Errorf("%v: the workload's checksum differs from the source's", r)
		}
		faults[r["workload"].(string)+"/"+r["predictor"].(string)] = r["demand_faults"].(float64)
	}
	if none, ppm := faults["sequential/none"], faults["sequential/ppm"]; ppm > none/4 {
		t.Errorf("sequential: ppm %v demand faults, none %v: want at most a quarter", ppm, none)
	}
	if b, err := os.ReadFile(plot); err != nil || !bytes.Contains(b, []byte("<svg")) {
		t.Errorf("plot %s: %v", plot, err)
	}
	checkReportDir(t, out, "prefetch", &stderr, "prefetch.json", "prefetch.csv", "table.txt", "prefetch.png", "prefetch.svg",
		"prefetch-demand.png", "prefetch-demand.svg", "README.md")
	// Every measured run recorded its demand faults over time, ending at
	// its demand fault count.
	var full bench.PrefetchReport
	if err := json.Unmarshal(stdout.Bytes(), &full); err != nil {
		t.Fatal(err)
	}
	for _, r := range full.Results {
		c := r.DemandOverTime
		if c == nil || len(c.Seconds) != bench.DemandBins+1 || len(c.Count) != len(c.Seconds) {
			t.Errorf("%s/%s: demand_over_time %+v, want %d points", r.Workload, r.Predictor, c, bench.DemandBins+1)
			continue
		}
		if last := c.Count[len(c.Count)-1]; last != r.DemandFaults || c.Count[0] > c.Count[len(c.Count)/2] {
			t.Errorf("%s/%s: demand_over_time ends at %d (demand faults %d) or is not cumulative: %v",
				r.Workload, r.Predictor, last, r.DemandFaults, c.Count)
		}
	}
}

// checkReportDir checks a bench report folder: exactly the files named,
// the README listing them, and the "report written to" line (in msgs).
func checkReportDir(t *testing.T, dir, suite string, msgs *bytes.Buffer, files ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("report folder: %v", err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	slices.Sort(got)
	want := slices.Clone(files)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s report folder holds %q, want %q", suite, got, want)
	}
	idx, _ := os.ReadFile(filepath.Join(dir, "README.md"))
	for _, f := range files {
		if !bytes.Contains(idx, []byte(f)) {
			t.Errorf("README.md does not list %s", f)
		}
	}
	if line := fmt.Sprintf("report written to %s (%d files)", dir, len(files)); !strings.Contains(msgs.String(), line) {
		t.Errorf("no %q in %q", line, msgs.String())
	}
}

// TestBenchPrecopy runs a small pre-copy benchmark: the JSON carries the
// keys the issue asks for, every run ends byte-exact after the switch, the
// filter skips silent stores and only then, and a region of 8 copies sends
// about an eighth of its bytes in round 0.
func TestBenchPrecopy(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	var stdout, stderr bytes.Buffer
	out := filepath.Join(t.TempDir(), "report")
	if err := run(context.Background(), &stdout, &stderr, []string{"bench", "precopy", "--json", "--size", "8MiB",
		"--workloads", "silent50,dup8", "--streams", "1,2", "--rounds", "2", "--interval", "50ms", "--out", out}); err != nil {
		t.Fatalf("bench precopy: %v\n%s", err, stdout.String())
	}
	checkReportDir(t, out, "precopy", &stderr, "precopy.json", "precopy.csv", "table.txt", "precopy-rounds.png", "precopy-rounds.svg", "README.md")
	var rep struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if len(rep.Results) != 8 {
		t.Fatalf("%d results, want 2 workloads x 2 filters x 2 stream counts", len(rep.Results))
	}
	for _, r := range rep.Results {
		for _, k := range []string{"workload", "filter", "streams", "rounds", "pages_dirty", "pages_fake_dirty", "pages_zero",
			"pages_dup", "bytes_sent", "gbps", "memcpy_gbps"} {
			if _, ok := r[k]; !ok {
				t.Errorf("result %v lacks %q", r, k)
			}
		}
		if r["result_ok"] != true {
			t.Errorf("%s filter=%v streams=%v: the target's copy differs from the source after the switch", r["workload"], r["filter"], r["streams"])
		}
		fake := r["pages_fake_dirty"].(float64)
		switch {
		case r["workload"] == "silent50" && r["filter"] == true && fake == 0:
			t.Errorf("silent50 with the filter: no fake-dirty page skipped")
		case r["filter"] == false && fake != 0:
			t.Errorf("%s without the filter skipped %v pages", r["workload"], fake)
		}
		if r["workload"] == "dup8" {
			if share := r["round0_bytes"].(float64) / (8 << 20); share > 0.2 {
				t.Errorf("dup8 round 0 sent %.2f of the region, want about 1/8", share)
			}
		}
	}
}

// TestBenchReportFrom re-renders saved results into report folders
// (nothing runs, so no userfaultfd is needed): the table on stdout or one
// JSON object with the folder's path on stderr, --plot as PNG, the default
// folder name, --no-report, and --out ”.
func TestBenchReportFrom(t *testing.T) {
	dir := t.TempDir()
	faults := filepath.Join(dir, "faults.json")
	res := map[string]any{"inprocess_p50_us": 5.9, "loopback_p50_us": 42.4, "samples": 3, "pull_gbps": 1.5,
		"cdf": []map[string]any{{"mode": "loopback", "label": "loopback", "p": []float64{0, 0.5, 1}, "us": []float64{20, 40, 300}}}}
	b, _ := json.Marshal(res)
	if err := os.WriteFile(faults, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	out := filepath.Join(dir, "faults")
	if err := run(context.Background(), &stdout, &stderr, []string{"bench", "faults", "--from", faults, "--out", out}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"pagewarp, page server over loopback TCP", "42.4", "background pull over loopback"} {
		if !strings.Contains(stdout.String(), s) {
			t.Errorf("faults table lacks %q:\n%s", s, stdout.String())
		}
	}
	checkReportDir(t, out, "faults", &stdout, "faults.json", "faults.csv", "table.txt", "faults-cdf.png", "faults-cdf.svg", "README.md")
	if txt, _ := os.ReadFile(filepath.Join(out, "table.txt")); !strings.Contains(stdout.String(), string(txt)) {
		t.Errorf("table.txt is not what the terminal showed:\n%s", txt)
	}

	// --json: one JSON object on stdout, the folder's path on stderr.
	stdout.Reset()
	stderr.Reset()
	out = filepath.Join(dir, "precopy")
	if err := run(context.Background(), &stdout, &stderr, []string{"bench", "precopy", "--from", "../../docs/data/precopy.json", "--json", "--out", out}); err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil || rep["results"] == nil {
		t.Fatalf("stdout is not one JSON report (%v): %.200s", err, stdout.String())
	}
	checkReportDir(t, out, "precopy", &stderr, "precopy.json", "precopy.csv", "table.txt", "precopy-rounds.png", "precopy-rounds.svg", "README.md")

	// --plot as PNG; a report saved before demand_over_time has no such chart.
	stdout.Reset()
	out = filepath.Join(dir, "prefetch")
	plot := filepath.Join(dir, "p.png")
	if err := run(context.Background(), &stdout, io.Discard, []string{"bench", "prefetch", "--from", "../../docs/data/prefetch.json", "--plot", plot, "--out", out}); err != nil {
		t.Fatal(err)
	}
	if pb, err := os.ReadFile(plot); err != nil || !bytes.HasPrefix(pb, []byte("\x89PNG")) {
		t.Errorf("--plot %s: not a PNG (%v)", plot, err)
	}
	checkReportDir(t, out, "prefetch", &stdout, "prefetch.json", "prefetch.csv", "table.txt", "prefetch.png", "prefetch.svg", "README.md")

	// The default folder, under the current directory.
	t.Chdir(dir)
	stdout.Reset()
	if err := run(context.Background(), &stdout, io.Discard, []string{"bench", "faults", "--from", faults}); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`report written to (bench-results/faults-\d{8}T\d{6}Z) \(6 files\)`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("no default folder in %q", stdout.String())
	}
	if _, err := os.Stat(filepath.Join(dir, m[1], "faults-cdf.svg")); err != nil {
		t.Error(err)
	}
	// --no-report writes nothing and says nothing about it.
	os.RemoveAll(filepath.Join(dir, "bench-results"))
	stdout.Reset()
	if err := run(context.Background(), &stdout, io.Discard, []string{"bench", "faults", "--from", faults, "--no-report"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bench-results")); !os.IsNotExist(err) || strings.Contains(stdout.String(), "report written") {
		t.Errorf("--no-report wrote a folder (%v) or said so: %q", err, stdout.String())
	}
	if err := run(context.Background(), io.Discard, io.Discard, []string{"bench", "faults", "--from", faults, "--out", ""}); err == nil || !strings.Contains(err.Error(), "--no-report") {
		t.Errorf("--out '': %v, want an error pointing at --no-report", err)
	}
}

// TestMigrate live-migrates a running workload between two processes with
// several policies: every run ends with the workload's result equal to a
// run without migration, the switch is measured, and post-copy only
// fetches what pre-copy left.
func TestMigrate(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	t.Setenv("PAGEWARP_CLI", "1")
	for _, policy := range []string{"postcopy", "traditional", "intelligent", "precopy"} {
		t.Run(policy, func(t *testing.T) {
			var stdout bytes.Buffer
			if err := run(context.Background(), &stdout, io.Discard, []string{"migrate", "--json", "--workload", "silent50",
				"--size", "16MiB", "--duration", "1500ms", "--policy", policy, "--downtime-budget", "50ms"}); err != nil {
				t.Fatalf("migrate: %v\n%s", err, stdout.String())
			}
			var r bench.MigrateResult
			if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
				t.Fatalf("%v: %s", err, stdout.String())
			}
			if !r.ResultOK {
				t.Errorf("the workload's checksum on the target differs from a run without migration")
			}
			if r.DowntimeMs <= 0 || r.DowntimeMs > 2000 {
				t.Errorf("downtime %.2f ms: want a measured, positive figure", r.DowntimeMs)
			}
			switch policy {
			case "postcopy":
				if r.PrecopyRounds != 0 || r.Action != "switch" {
					t.Errorf("postcopy: %d rounds, action %s", r.PrecopyRounds, r.Action)
				}
			case "traditional":
				if r.PrecopyRounds != 1 || r.Action != "switch" {
					t.Errorf("traditional: %d rounds, action %s", r.PrecopyRounds, r.Action)
				}
			}
			if len(r.Decisions) == 0 || r.Decisions[len(r.Decisions)-1].Reason == "" {
				t.Errorf("decisions %+v: want the last one with its reason", r.Decisions)
			}
			// (After a stop-and-copy the last page is in before the workload
			// resumes, and post-copy has nothing to sample but its end.)
			if tl := r.Timeline; tl == nil || len(tl.Rounds) != r.PrecopyRounds || len(tl.Samples) < 1 ||
				tl.Switch < 0 || tl.Resume < tl.Switch || tl.Complete < tl.Switch {
				t.Errorf("timeline %+v: want %d rounds, samples, and the switch before the resume and completion", tl, r.PrecopyRounds)
			} else if last := tl.Samples[len(tl.Samples)-1]; last.Demand != r.DemandFaults {
				t.Errorf("timeline's last sample has %d demand faults, the result %d", last.Demand, r.DemandFaults)
			}
			t.Logf("%s: %d rounds, %s, downtime %.2f ms, post-copy %.3f s, %d demand faults, %d bytes",
				policy, r.PrecopyRounds, r.Action, r.DowntimeMs, r.PostcopySeconds, r.DemandFaults, r.BytesSent)
		})
	}
}

// TestMigrateMetrics scrapes migrate's --metrics-addr while it runs: the
// source's page server, pre-copy and switch metrics and the target's fault
// handler metrics all reach the one endpoint, labelled by role, although
// the two run in other processes.
func TestMigrateMetrics(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	t.Setenv("PAGEWARP_CLI", "1")
	addr := freeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, io.Discard, io.Discard, []string{"migrate", "--workload", "silent50", "--size", "16MiB",
			"--duration", "3s", "--policy", "traditional", "--link", "shaped:200mbit", "--metrics-addr", addr})
	}()
	want := []string{
		`pagewarp_pageserver_pages_sent_total{kind="data",role="source"}`,
		`pagewarp_precopy_rounds_total{role="source"}`,
		`pagewarp_hybrid_decisions_total{action="switch",policy="traditional",role="source"}`,
		`pagewarp_faulthandler_resident_pages{region="0",role="target"}`,
	}
	seen := map[string]bool{}
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("migrate: %v", err)
			}
			running = false
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			continue // not listening yet, or gone
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, w := range want {
			if strings.Contains(string(body), w) {
				seen[w] = true
			}
		}
	}
	for _, w := range want {
		if !seen[w] {
			t.Errorf("no scrape during the migration showed %s", w)
		}
	}
}

// TestMigrateGang moves 4 workloads sharing half their content with one
// content index and with one index each: both end right, and the shared
// index sends fewer bytes.
func TestMigrateGang(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	t.Setenv("PAGEWARP_CLI", "1")
	bytesSent := map[bool]uint64{}
	for _, separate := range []bool{false, true} {
		var stdout bytes.Buffer
		args := []string{"migrate", "--json", "--workload", "phases", "--gang", "4", "--shared", "0.5", "--size", "8MiB",
			"--duration", "1s", "--policy", "traditional"}
		if separate {
			args = append(args, "--separate-index")
		}
		if err := run(context.Background(), &stdout, io.Discard, args); err != nil {
			t.Fatalf("migrate gang (separate %v): %v\n%s", separate, err, stdout.String())
		}
		var r bench.MigrateResult
		if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if !r.ResultOK || r.Gang != 4 {
			t.Errorf("gang (separate %v): ok %v, gang %d", separate, r.ResultOK, r.Gang)
		}
		bytesSent[separate] = r.PrecopyBytes
	}
	if ratio := float64(bytesSent[false]) / float64(bytesSent[true]); ratio > 0.75 {
		t.Errorf("gang pre-copy bytes %d shared vs %d separate: ratio %.2f, want well below 1", bytesSent[false], bytesSent[true], ratio)
	}
}

// TestBenchHybrid runs a small hybrid benchmark: the JSON carries the keys
// the issue asks for and every migration's result is right.
func TestBenchHybrid(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	t.Setenv("PAGEWARP_CLI", "1")
	var stdout bytes.Buffer
	out := t.TempDir()
	if err := run(context.Background(), &stdout, io.Discard, []string{"bench", "hybrid", "--json", "--size", "8MiB", "--duration", "1s",
		"--workloads", "silent50", "--policies", "postcopy,adaptive", "--link", "shaped:1gbit", "--out", out}); err != nil {
		t.Fatalf("bench hybrid: %v\n%s", err, stdout.String())
	}
	var rep struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if len(rep.Results) != 2 {
		t.Fatalf("%d results, want 2", len(rep.Results))
	}
	for _, r := range rep.Results {
		for _, k := range []string{"workload", "policy", "link", "converged", "total_seconds", "downtime_ms", "postcopy_seconds",
			"bytes_sent", "demand_faults", "result_ok"} {
			if _, ok := r[k]; !ok {
				t.Errorf("result lacks %q", k)
			}
		}
		if r["result_ok"] != true {
			t.Errorf("%s/%s: result differs from the run without migration", r["workload"], r["policy"])
		}
		if !strings.Contains(r["link"].(string), "shaper") {
			t.Errorf("link %q: want the in-process shaper named", r["link"])
		}
	}
	for _, f := range []string{"hybrid.json", "hybrid.csv", "table.txt", "hybrid-rounds.png", "hybrid-times.svg", "timeline-silent50-adaptive.png", "README.md"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("report folder lacks %s (%v)", f, err)
		}
	}
}

// TestReceiveProgress: receive draws its progress line (pages, bytes, rate,
// ETA) when stdout is a terminal and clears it before the summary; with
// stdout a pipe or a file nothing of it appears.
func TestReceiveProgress(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := startServe(t, ctx, "--demo", "16MiB")
	master, slave := ptytest.Open(t)
	if err := run(ctx, slave, io.Discard, []string{"receive", "--connect", addr, "--verify"}); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	out := ptytest.ReadAll(t, master)
	if !strings.Contains(out, "\rreceive ") || !strings.Contains(out, "/4096 pages (") || !strings.Contains(out, "ETA") {
		t.Errorf("no progress line on the terminal: %q", out)
	}
	if !strings.Contains(out, "verified") {
		t.Errorf("no summary after the progress line: %q", out)
	}
	var buf bytes.Buffer
	if err := run(ctx, &buf, io.Discard, []string{"receive", "--connect", addr}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "ETA") || strings.Contains(buf.String(), "\r") {
		t.Errorf("progress drawn on a non-terminal: %q", buf.String())
	}
}

// TestChaos runs one trial of each fault scenario over small live
// migrations: each must end correct or as a clean failure, never with a
// wrong result or a hang.
func TestChaos(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	t.Setenv("PAGEWARP_CLI", "1")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), &stdout, &stderr, []string{"chaos", "--json", "--trials", "6", "--fault-seed", "3",
		"--size", "8MiB", "--duration", "2s", "--window", "1500ms", "--trial-timeout", "60s"})
	var rep bench.ChaosReport
	if jerr := json.Unmarshal(stdout.Bytes(), &rep); jerr != nil {
		t.Fatalf("chaos: %v, %v\n%s\n%s", err, jerr, stdout.String(), stderr.String())
	}
	seen := map[string]bool{}
	for _, tr := range rep.Trials {
		seen[tr.Scenario] = true
		t.Logf("trial %d %s %s (%s): %s %s", tr.N, tr.Scenario, tr.Fault, tr.Policy, tr.Outcome, tr.Detail)
		if !tr.Passed {
			t.Errorf("trial %d (%s, %s): %s %s", tr.N, tr.Scenario, tr.Fault, tr.Outcome, tr.Detail)
		}
	}
	if len(seen) != len(bench.ChaosScenarios) {
		t.Errorf("scenarios tried %v, want all of %v", seen, bench.ChaosScenarios)
	}
	if err != nil || rep.Failed != 0 || !strings.Contains(stderr.String(), "chaos: 6 passed, 0 failed") {
		t.Errorf("chaos: %v, %d failed; stderr %q", err, rep.Failed, stderr.String())
	}
}
