package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/qemu/launch"
)

// TestBenchQEMU runs a small `bench qemu`: one pattern, plain and proxy-ppm, a 32 MiB guest
// region, and a short reliability run (two proxied migrations, the second with
// postcopy-preempt). The JSON carries issue 7's keys, every migration completed with the
// destination's memory verified, and the report folder holds the table, runs, JSON and both
// charts.
func TestBenchQEMU(t *testing.T) {
	if _, err := launch.Binary(); err != nil {
		t.Skipf("qemu-system-x86_64 not installed (%v): run `make deps-qemu` (as root)", err)
	}
	if testing.Short() {
		t.Skip("starts four QEMU processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	out := filepath.Join(t.TempDir(), "report")
	if err := run(ctx, &stdout, &stderr, []string{"bench", "qemu", "--json", "--patterns", "sequential",
		"--modes", "plain,proxy-ppm", "--memory", "64MiB", "--region", "32MiB", "--precopy", "300ms",
		"--settle", "100ms", "--run-timeout", "90s", "--reliability", "2", "--out", out}); err != nil {
		t.Fatalf("bench qemu: %v\n%s", err, stderr.String())
	}
	var rep struct {
		Results     []map[string]any `json:"results"`
		Setup       map[string]any   `json:"setup"`
		Reliability struct {
			Migrations, Completed, Paused, Failed int
			Verified                              int `json:"memory_verified"`
			Runs                                  []struct {
				Mode    string
				Preempt bool
			}
		} `json:"reliability"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if len(rep.Results) != 2 {
		t.Fatalf("%d results, want 1 pattern x 2 modes", len(rep.Results))
	}
	for i, r := range rep.Results {
		for _, k := range []string{"pattern", "mode", "demand_requests", "injected", "blocktime_ms", "postcopy_seconds",
			"status", "memory_verified", "source_requests", "total_seconds", "runs"} {
			if _, ok := r[k]; !ok {
				t.Errorf("result %d lacks %q: %v", i, k, r)
			}
		}
		if r["pattern"] != "sequential" || r["mode"] != []string{"plain", "proxy-ppm"}[i] {
			t.Errorf("result %d is %v/%v, want sequential/%s", i, r["pattern"], r["mode"], []string{"plain", "proxy-ppm"}[i])
		}
		if r["status"] != "completed" || r["memory_verified"] != true {
			t.Errorf("%v: status %v, memory verified %v\n%s", r["mode"], r["status"], r["memory_verified"], stderr.String())
		}
		if r["mode"] == "plain" && r["injected"].(float64) != 0 {
			t.Errorf("plain injected %v", r["injected"])
		}
		if r["postcopy_seconds"].(float64) <= 0 {
			t.Errorf("%v: post-copy lasted %v s", r["mode"], r["postcopy_seconds"])
		}
	}
	if rel := rep.Reliability; rel.Migrations != 2 || rel.Completed != 2 || rel.Verified != 2 || len(rel.Runs) != 2 ||
		rel.Runs[0].Mode != "proxy-ppm" || rel.Runs[0].Preempt || !rel.Runs[1].Preempt {
		t.Errorf("reliability %+v, want 2 ppm migrations completed and verified, the second with preempt\n%s", rel, stderr.String())
	}
	if rep.Setup["region_pages"] != float64(8192) || rep.Setup["mem_mib"] != float64(64) {
		t.Errorf("setup %v", rep.Setup)
	}
	checkReportDir(t, out, "qemu", &stderr, "qemu.json", "qemu.csv", "qemu-runs.csv", "table.txt",
		"qemu-demand.png", "qemu-demand.svg", "qemu-blocktime.png", "qemu-blocktime.svg", "README.md")
}
