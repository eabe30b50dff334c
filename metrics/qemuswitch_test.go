package metrics_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pagewarp/pagewarp/hybrid"
	"github.com/pagewarp/pagewarp/metrics"
	"github.com/pagewarp/pagewarp/qemu/qmp"
	"github.com/pagewarp/pagewarp/qemu/switchctl"
)

var _ switchctl.Observer = (*metrics.QEMUSwitch)(nil)

func TestQEMUSwitchRecorder(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := metrics.NewQEMUSwitch(reg, prometheus.Labels{"migration": "vm1"})
	if err != nil {
		t.Fatal(err)
	}
	s.ObserveMigration(qmp.MigrationInfo{Status: "active", RAM: &qmp.RAMStats{Transferred: 1 << 20, Remaining: 1 << 22, Total: 1 << 23, Mbps: 8, DirtyPagesRate: 100, DirtySyncCount: 2}})
	s.ObserveRound(hybrid.Round{Index: 0, Dirty: 2048, Bytes: 1 << 20, Duration: 1500 * time.Millisecond, Remaining: 1024})
	s.ObserveDecision(hybrid.Decision{Action: hybrid.Continue, Policy: "adaptive", Round: 0, Reason: "another round pays", Converged: true})
	s.ObserveDecision(hybrid.Decision{Action: hybrid.Switch, Policy: "adaptive", Round: 1, Reason: "switch now costs least", Converged: true})
	s.ObserveMigration(qmp.MigrationInfo{Status: "postcopy-active", RAM: &qmp.RAMStats{PostcopyRequests: 7}})
	want := `
# HELP pagewarp_hybrid_decision_info The latest decision of the switch policy, with its reason: 1 for that one series.
# TYPE pagewarp_hybrid_decision_info gauge
pagewarp_hybrid_decision_info{action="switch",migration="vm1",policy="adaptive",reason="switch now costs least"} 1
# HELP pagewarp_hybrid_decisions_total Decisions of the switch policy, by policy and action (continue, stop-and-copy, switch).
# TYPE pagewarp_hybrid_decisions_total counter
pagewarp_hybrid_decisions_total{action="continue",migration="vm1",policy="adaptive"} 1
pagewarp_hybrid_decisions_total{action="switch",migration="vm1",policy="adaptive"} 1
# HELP pagewarp_qemuswitch_bandwidth_bytes_per_second The source's ram.mbps in the latest sample, in bytes/s.
# TYPE pagewarp_qemuswitch_bandwidth_bytes_per_second gauge
pagewarp_qemuswitch_bandwidth_bytes_per_second{migration="vm1"} 0
# HELP pagewarp_qemuswitch_last_round_duration_seconds Duration of the last round, to within the controller's sampling interval.
# TYPE pagewarp_qemuswitch_last_round_duration_seconds gauge
pagewarp_qemuswitch_last_round_duration_seconds{migration="vm1"} 1.5
# HELP pagewarp_qemuswitch_postcopy_requests The source's ram.postcopy-requests in the latest sample (every request message, injected ones too).
# TYPE pagewarp_qemuswitch_postcopy_requests gauge
pagewarp_qemuswitch_postcopy_requests{migration="vm1"} 7
# HELP pagewarp_qemuswitch_rounds_total Pre-copy rounds of the source QEMU seen by the controller (increments of ram.dirty-sync-count).
# TYPE pagewarp_qemuswitch_rounds_total counter
pagewarp_qemuswitch_rounds_total{migration="vm1"} 1
# HELP pagewarp_qemuswitch_status_info The source's migration status in the latest sample: 1 for that one series.
# TYPE pagewarp_qemuswitch_status_info gauge
pagewarp_qemuswitch_status_info{migration="vm1",status="postcopy-active"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"pagewarp_hybrid_decision_info", "pagewarp_hybrid_decisions_total", "pagewarp_qemuswitch_bandwidth_bytes_per_second",
		"pagewarp_qemuswitch_last_round_duration_seconds", "pagewarp_qemuswitch_postcopy_requests",
		"pagewarp_qemuswitch_rounds_total", "pagewarp_qemuswitch_status_info"); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	var nilRec *metrics.QEMUSwitch
	nilRec.ObserveMigration(qmp.MigrationInfo{})
	nilRec.ObserveRound(hybrid.Round{})
	nilRec.ObserveDecision(hybrid.Decision{})
}

// TestQEMUDocsListEveryMetric checks that docs/qemu.md has a row for every qemuproxy and
// qemuswitch metric, and none that is not defined.
func TestQEMUDocsListEveryMetric(t *testing.T) {
	doc, err := os.ReadFile("../docs/qemu.md")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	descs := make(chan *prometheus.Desc, 100)
	metrics.NewQEMUProxyCollector(nil, nil).Describe(descs)
	close(descs)
	fqName := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range descs {
		defined[fqName.FindStringSubmatch(d.String())[1]] = true
	}
	reg := prometheus.NewRegistry()
	s, err := metrics.NewQEMUSwitch(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.ObserveMigration(qmp.MigrationInfo{Status: "active", RAM: &qmp.RAMStats{}})
	s.ObserveDecision(hybrid.Decision{Policy: "adaptive"})
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "pagewarp_qemu") {
			defined[f.GetName()] = true
		}
	}
	if len(defined) != 24 {
		t.Fatalf("%d qemu metrics defined, want 24: %v", len(defined), defined)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(pagewarp_qemu[a-z_]+)` \\|").FindAllSubmatch(doc, -1) {
		documented[string(m[1])] = true
	}
	for name := range defined {
		if !documented[name] {
			t.Errorf("docs/qemu.md has no row for %s", name)
		}
	}
	for name := range documented {
		if !defined[name] {
			t.Errorf("docs/qemu.md lists %s, which is not defined", name)
		}
	}
}
