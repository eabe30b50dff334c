package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pagewarp/pagewarp/hybrid"
	"github.com/pagewarp/pagewarp/internal/syncbuf"
	"github.com/pagewarp/pagewarp/qemu/guest"
	"github.com/pagewarp/pagewarp/qemu/qemutest"
	"github.com/pagewarp/pagewarp/qemu/switchctl"
)

func TestQemuUsageErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.qmp")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"qemu", "proxy"}, "--to DEST_ADDR is required"},
		{[]string{"qemu", "proxy", "--to", "127.0.0.1:1", "--listen", "0.0.0.0:0"}, "not a loopback address"},
		{[]string{"qemu", "proxy", "--to", "127.0.0.1:1", "--predictor", "oracle"}, "unknown predictor"},
		{[]string{"qemu", "proxy", "--to", "127.0.0.1:1", "--budget", "0"}, "--budget 0"},
		{[]string{"qemu", "proxy", "--to", "127.0.0.1:1", "--qmp", missing}, "--qmp " + missing},
		{[]string{"qemu", "proxy", "--to", "127.0.0.1:1", "--metrics-addr", "0.0.0.0:9090"}, "not a loopback address"},
		{[]string{"qemu", "proxy", "--bogus"}, "unknown flag"},
		{[]string{"qemu", "switch"}, "--qmp SRC_QMP_SOCKET is required"},
		{[]string{"qemu", "switch", "--qmp", missing, "--policy", "magic"}, "unknown hybrid policy"},
		{[]string{"qemu", "switch", "--qmp", missing}, "no such file"},
		{[]string{"qemu", "switch", "--qmp", missing, "--max-bandwidth", "fast"}, "--max-bandwidth"},
		{[]string{"qemu", "switch", "--qmp", missing, "--budget", "-1s"}, "out of range"},
	} {
		err := run(context.Background(), io.Discard, io.Discard, c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("pagewarp %s: error %v, want one containing %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}

// startQemuProxy runs `qemu proxy` in-process and returns its address, its stdout and the
// channel its error arrives on.
func startQemuProxy(t *testing.T, ctx context.Context, args ...string) (string, *syncbuf.Buffer, <-chan error) {
	t.Helper()
	out := &syncbuf.Buffer{}
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, out, io.Discard, append([]string{"qemu", "proxy", "--listen", "127.0.0.1:0"}, args...))
	}()
	re := regexp.MustCompile(`listening on (\S+),`)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1], out, errc
		}
		select {
		case err := <-errc:
			t.Fatalf("qemu proxy ended before listening: %v\n%s", err, out.String())
		default:
		}
	}
	t.Fatalf("qemu proxy printed no address:\n%s", out.String())
	return "", nil, nil
}

// A dead destination: the proxy fails on the source's first connection, with the address.
func TestQemuProxyDeadDestination(t *testing.T) {
	dead := freeAddr(t)
	addr, out, errc := startQemuProxy(t, context.Background(), "--to", dead)
	if !strings.Contains(out.String(), "forwarding only") {
		t.Errorf("no --qmp, and no word that the proxy only forwards:\n%s", out.String())
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "dial destination "+dead) || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("error %v, want the dial of %s refused", err, dead)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the proxy did not end after its destination refused")
	}
}

// startPairCtl is qemutest.StartPair with a second QMP socket per VM (ctl.qmp), for the
// command under test: QEMU serves one client per -qmp socket and the test holds the first.
func startPairCtl(t *testing.T, ctx context.Context, p guest.Pattern, c guest.Config) (src, dst *qemutest.VM, srcCtl, dstCtl string) {
	t.Helper()
	qemutest.Require(t)
	boot, err := guest.Build(p, c)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	srcCtl, dstCtl = filepath.Join(dir, "src-ctl.qmp"), filepath.Join(dir, "dst-ctl.qmp")
	ctl := func(path string) []string { return []string{"-qmp", "unix:" + path + ",server=on,wait=off"} }
	src = qemutest.StartT(t, ctx, qemutest.Options{Name: "src", Dir: dir, Boot: boot, Args: ctl(srcCtl)})
	dst = qemutest.StartT(t, ctx, qemutest.Options{Name: "dst", Dir: dir, Boot: boot, Incoming: "defer", Args: ctl(dstCtl)})
	if err := src.WaitSerial(ctx, "A"); err != nil {
		t.Fatal(err)
	}
	for {
		n, err := src.Passes(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return src, dst, srcCtl, dstCtl
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var qemuGuest = guest.Config{Pages: 16384}

// TestQemuSwitch drives real migrations with `qemu switch --migrate`, one per policy, and
// checks the decision, the outcome, both sides' figures and the destination's memory. The
// sequential guest rewrites its 64 MiB about as fast as 32 MiB/s of pre-copy sends it, so
// pre-copy does not converge: postcopy switches before round 0, traditional after it,
// adaptive when its plans say (within 3 rounds), and precopy gives up after 2 rounds and
// stops and copies.
func TestQemuSwitch(t *testing.T) {
	qemutest.Require(t)
	for _, c := range []struct {
		policy    string
		maxRounds int
		action    hybrid.Action
		outcome   string
	}{
		{"postcopy", 0, hybrid.Switch, switchctl.OutcomePostcopy},
		{"traditional", 0, hybrid.Switch, switchctl.OutcomePostcopy},
		{"adaptive", 3, hybrid.Switch, switchctl.OutcomePostcopy},
		{"precopy", 2, hybrid.StopAndCopy, switchctl.OutcomePrecopy},
	} {
		t.Run(c.policy, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			src, dst, srcCtl, dstCtl := startPairCtl(t, ctx, guest.Sequential, qemuGuest)
			before, err := src.Passes(ctx, guest.Sequential)
			if err != nil {
				t.Fatal(err)
			}
			port, err := qemutest.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			uri := fmt.Sprintf("tcp:127.0.0.1:%d", port)
			if err := dst.QMP.MigrateIncoming(ctx, uri); err != nil {
				t.Fatal(err)
			}
			args := []string{"qemu", "switch", "--qmp", srcCtl, "--dest-qmp", dstCtl, "--policy", c.policy,
				"--migrate", uri, "--max-bandwidth", "32MiB", "--json"}
			if c.maxRounds > 0 {
				args = append(args, "--max-rounds", strconv.Itoa(c.maxRounds))
			}
			var stdout, stderr syncbuf.Buffer
			if err := run(ctx, &stdout, &stderr, args); err != nil {
				t.Fatalf("%v\nstderr: %s\nsrc: %s\ndst: %s", err, stderr.String(), src.Stderr(), dst.Stderr())
			}
			t.Logf("progress:\n%s", stderr.String())
			var res switchctl.Result
			if err := json.Unmarshal([]byte(stdout.String()), &res); err != nil {
				t.Fatalf("--json output: %v\n%s", err, stdout.String())
			}
			if len(res.Decisions) == 0 {
				t.Fatal("no decision")
			}
			last := res.Decisions[len(res.Decisions)-1]
			t.Logf("%s: %d rounds, decision after round %d: %s (%s); outcome %s (%s); source %s total %d ms downtime %d ms requests %d",
				c.policy, len(res.Rounds), last.Round, last.Action, last.Reason, res.Outcome, res.Note, res.Source.Status,
				res.Source.TotalTime, res.Source.Downtime, res.Source.RAM.PostcopyRequests)
			if last.Action != c.action || last.Reason == "" || last.Policy != c.policy {
				t.Fatalf("last decision %+v, want %s", last.Decision, c.action)
			}
			if !strings.Contains(stderr.String(), last.Reason) {
				t.Fatalf("the decision's reason was not printed:\n%s", stderr.String())
			}
			if res.Outcome != c.outcome || res.Source.Status != "completed" || res.Dest == nil || res.Dest.Status != "completed" {
				t.Fatalf("outcome %q (%s), source %q, destination %+v", res.Outcome, res.Note, res.Source.Status, res.Dest)
			}
			switch c.policy {
			case "postcopy":
				if last.Round != -1 || len(res.Rounds) != 0 {
					t.Fatalf("postcopy decided after round %d with %d rounds", last.Round, len(res.Rounds))
				}
			case "traditional":
				if last.Round != 0 || res.Rounds[0].Dirty < 16384 || res.Rounds[0].Remaining < 8192 {
					t.Fatalf("traditional decided after round %d; round 0 %+v", last.Round, res.Rounds[0])
				}
			case "precopy":
				if len(res.Rounds) != 2 || last.Converged || last.Acted == "" {
					t.Fatalf("precopy: %d rounds, last %+v", len(res.Rounds), last)
				}
			}
			if c.outcome == switchctl.OutcomePostcopy {
				if res.Dest.PostcopyBlocktime == nil || res.Source.RAM.PostcopyRequests == 0 {
					t.Fatalf("post-copy without blocktime or requests: %+v %+v", res.Dest, res.Source.RAM)
				}
			}
			time.Sleep(300 * time.Millisecond)
			after, err := dst.Verify(ctx, guest.Sequential, qemuGuest)
			if err != nil {
				t.Fatal(err)
			}
			if after <= before {
				t.Fatalf("guest made no progress: %d passes before migration, %d after", before, after)
			}
		})
	}
}

// TestQemuProxyCLI runs a real post-copy migration through `qemu proxy --qmp` with ppm on the
// sequential guest, scrapes its metrics while it runs, and checks the summary, the metrics and
// the destination's memory.
func TestQemuProxyCLI(t *testing.T) {
	qemutest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	src, dst, srcCtl, _ := startPairCtl(t, ctx, guest.Sequential, qemuGuest)
	port, err := qemutest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	destAddr := fmt.Sprintf("127.0.0.1:%d", port)
	metricsAddr := freeAddr(t)
	addr, out, errc := startQemuProxy(t, ctx, "--to", destAddr, "--qmp", srcCtl, "--predictor", "ppm", "--metrics-addr", metricsAddr)

	// Scrape every 20 ms while the proxy runs; keep the largest values seen.
	var (
		mu   sync.Mutex
		best = map[string]float64{}
		n    int
	)
	scrapeDone := make(chan struct{})
	stopScrape := make(chan struct{})
	go func() {
		defer close(scrapeDone)
		client := &http.Client{Timeout: 2 * time.Second}
		for {
			select {
			case <-stopScrape:
				return
			case <-time.After(20 * time.Millisecond):
			}
			resp, err := client.Get("http://" + metricsAddr + "/metrics")
			if err != nil {
				continue
			}
			parser := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := parser.TextToMetricFamilies(resp.Body)
			resp.Body.Close()
			if err != nil {
				continue
			}
			mu.Lock()
			n++
			for name, f := range fams {
				if !strings.HasPrefix(name, "pagewarp_qemuproxy_") {
					continue
				}
				for _, m := range f.GetMetric() {
					v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
					key := name
					for _, l := range m.GetLabel() {
						key += "," + l.GetName() + "=" + l.GetValue()
					}
					best[key] = max(best[key], v)
				}
			}
			mu.Unlock()
		}
	}()

	before, err := src.Passes(ctx, guest.Sequential)
	if err != nil {
		t.Fatal(err)
	}
	res, err := qemutest.Migrate(ctx, src, dst, qemutest.Migration{
		ListenURI: "tcp:" + destAddr, ConnectURI: "tcp:" + addr, PostcopyBandwidth: 32 << 20,
	})
	if err != nil {
		t.Fatalf("%v\nproxy: %s\nsrc: %s\ndst: %s", err, out.String(), src.Stderr(), dst.Stderr())
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("qemu proxy: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("qemu proxy did not exit after the migration:\n%s", out.String())
	}
	close(stopScrape)
	<-scrapeDone
	t.Logf("proxy output:\n%s", out.String())

	m := regexp.MustCompile(`(\d+) destination requests \((\d+) pages\), (\d+) pages injected`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no summary:\n%s", out.String())
	}
	requests, _ := strconv.Atoi(m[1])
	injected, _ := strconv.Atoi(m[3])
	if requests == 0 || injected == 0 {
		t.Fatalf("%d requests, %d injected: want both > 0 with ppm on the sequential guest", requests, injected)
	}
	if !strings.Contains(out.String(), `source RAM block "pc.ram"`) || strings.Contains(out.String(), "injection disabled") {
		t.Fatalf("block list or injection state wrong:\n%s", out.String())
	}
	if uint64(requests+injected) > res.Source.RAM.PostcopyRequests {
		t.Fatalf("source counted %d requests, the proxy sent %d real + %d injected", res.Source.RAM.PostcopyRequests, requests, injected)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d scrapes; largest values: %v", n, best)
	for _, key := range []string{
		"pagewarp_qemuproxy_requests_total", "pagewarp_qemuproxy_injected_pages_total",
		"pagewarp_qemuproxy_request_forward_seconds", "pagewarp_qemuproxy_connections_open",
		"pagewarp_qemuproxy_forwarded_bytes_total,direction=to_destination",
	} {
		if best[key] <= 0 {
			t.Errorf("no scrape during the run saw %s > 0", key)
		}
	}
	if _, ok := best["pagewarp_qemuproxy_injection_disabled"]; !ok {
		t.Error("injection_disabled never scraped")
	}
	time.Sleep(300 * time.Millisecond)
	after, err := dst.Verify(ctx, guest.Sequential, qemuGuest)
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Fatalf("guest made no progress: %d passes before migration, %d after", before, after)
	}
}
