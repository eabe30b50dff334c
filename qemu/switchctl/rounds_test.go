package switchctl

import (
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/hybrid"
	"github.com/pagewarp/pagewarp/qemu/qmp"
)

// Samples of a real pre-copy (QEMU 7.2.22 under TCG, the sequential test guest over 64 MiB of
// a 160 MiB VM, max-bandwidth 32 MiB/s, downtime-limit 300 ms), at ms since migrate.
var recorded = []struct {
	ms int
	mi qmp.MigrationInfo
}{
	{104, qmp.MigrationInfo{Status: "active", TotalTime: 102, SetupTime: 1, RAM: &qmp.RAMStats{DirtySyncCount: 1, Remaining: 180928512, Transferred: 3358995, Total: 185147392, Normal: 818, Duplicate: 212, PageSize: 4096}}},
	{1934, qmp.MigrationInfo{Status: "active", TotalTime: 1933, SetupTime: 1, RAM: &qmp.RAMStats{DirtySyncCount: 1, Remaining: 117268480, Transferred: 67143515, Total: 185147392, Normal: 16360, Duplicate: 212, Mbps: 265.9, PageSize: 4096}}},
	{2036, qmp.MigrationInfo{Status: "active", TotalTime: 2036, SetupTime: 1, RAM: &qmp.RAMStats{DirtySyncCount: 2, Remaining: 64729088, Transferred: 70502386, Total: 185147392, Normal: 17116, Duplicate: 28668, DirtyPagesRate: 8111, Mbps: 265.9, PageSize: 4096}}},
	{3760, qmp.MigrationInfo{Status: "active", TotalTime: 3760, SetupTime: 1, RAM: &qmp.RAMStats{DirtySyncCount: 2, Remaining: 7770112, Transferred: 127572746, Total: 185147392, Normal: 31022, Duplicate: 28668, DirtyPagesRate: 8111, Mbps: 268.6, PageSize: 4096}}},
	{3862, qmp.MigrationInfo{Status: "active", TotalTime: 3861, SetupTime: 1, RAM: &qmp.RAMStats{DirtySyncCount: 3, Remaining: 63762432, Transferred: 130929826, Total: 185147392, Normal: 31840, Duplicate: 28668, DirtyPagesRate: 8102, Mbps: 268.6, PageSize: 4096}}},
}

func TestTrackerRecorded(t *testing.T) {
	var tr tracker
	t0 := time.Unix(1000, 0)
	var rounds []hybrid.Round
	for _, s := range recorded {
		if r, ok := tr.observe(t0.Add(time.Duration(s.ms)*time.Millisecond), s.mi); ok {
			rounds = append(rounds, r)
		}
	}
	want := []hybrid.Round{
		// Round 0 from the end of setup (104 ms - (102 - 1) ms = 3 ms) to 2036 ms.
		{Index: 0, Dirty: 45202, Sent: 17116, Refs: 28668, Bytes: 70502386, Duration: 2033 * time.Millisecond, Remaining: 15803},
		{Index: 1, Dirty: 15803, Sent: 14724, Refs: 0, Bytes: 60427440, Duration: 1826 * time.Millisecond, Remaining: 15567},
	}
	if len(rounds) != len(want) {
		t.Fatalf("rounds %+v, want %+v", rounds, want)
	}
	for i := range want {
		if rounds[i] != want[i] {
			t.Errorf("round %d: %+v, want %+v", i, rounds[i], want[i])
		}
	}
	// Bandwidth: the mean of round 1's mbps samples (268.6 Mbit/s twice), in bytes/s.
	env := tr.env(recorded[4].mi.RAM, 300*time.Millisecond, 5, 0)
	if env.Bandwidth != 268.6e6/8 || env.TotalPages != 45202 || env.PageSize != 4096 || env.MaxRounds != 5 {
		t.Fatalf("env %+v", env)
	}
	// The policies read this history as QEMU's: a dirty rate near the link's, so pre-copy does
	// not converge; traditional and adaptive switch.
	for _, name := range []string{"traditional", "adaptive"} {
		p, _ := hybrid.New(name)
		if d := p.Decide(env, rounds); d.Action != hybrid.Switch {
			t.Errorf("%s: %+v, want a switch", name, d)
		}
	}
}

// A sample before any sync of a controller attached late starts the history at the next sync.
func TestTrackerLate(t *testing.T) {
	var tr tracker
	t0 := time.Unix(1000, 0)
	tr.observe(t0, recorded[3].mi)
	if !tr.late {
		t.Fatal("attached at sync 2: not marked late")
	}
	r, ok := tr.observe(t0.Add(102*time.Millisecond), recorded[4].mi)
	if !ok || r.Index != 0 || r.Dirty != 7770112/4096 || r.Duration != 102*time.Millisecond {
		t.Fatalf("%+v %v", r, ok)
	}
	// Samples that are not an active pre-copy are ignored.
	if _, ok := tr.observe(t0, qmp.MigrationInfo{Status: "postcopy-active", RAM: &qmp.RAMStats{DirtySyncCount: 9}}); ok {
		t.Fatal("a post-copy sample made a round")
	}
}
