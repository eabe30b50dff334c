package metrics_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pagewarp/pagewarp/metrics"
	"github.com/pagewarp/pagewarp/qemu"
	"github.com/pagewarp/pagewarp/qemu/qmp"
	"github.com/pagewarp/pagewarp/qemu/returnpath"
)

// proxyBetweenFakes runs a qemu.Proxy between a fake source (src, dialled to the proxy) and a
// fake destination (dst, accepted from it).
func proxyBetweenFakes(t *testing.T, cfg qemu.ProxyConfig) (p *qemu.Proxy, src, dst net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg.Listen, cfg.Dest = "127.0.0.1:0", ln.Addr().String()
	p, err = qemu.NewProxy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	if src, err = net.Dial("tcp", p.Addr().String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	if dst, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	return p, src, dst
}

func rpFrames(t *testing.T, ms ...returnpath.Message) []byte {
	t.Helper()
	var b []byte
	for _, m := range ms {
		var err error
		if b, err = m.Append(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestQEMUProxyExposition passes a stream and a return path through a real proxy between fake
// peers and checks every metric of its collector.
func TestQEMUProxyExposition(t *testing.T) {
	blocks := []qmp.RAMBlock{{Name: "pc.ram", PageSize: 4096, Used: 64 * 4096, Total: 64 * 4096}}
	p, src, dst := proxyBetweenFakes(t, qemu.ProxyConfig{Blocks: blocks, Predictor: "nextn", Budget: 2})
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewQEMUProxyCollector(p, prometheus.Labels{"migration": "m1"}))

	stream := bytes.Repeat([]byte("QEVM"), 1000)
	go src.Write(stream)
	dst.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(dst, make([]byte, len(stream))); err != nil {
		t.Fatal(err)
	}
	// Page 1 (nextn injects 2 and 3), page 2 (injected, requested anyway), page 10 (11 and 12
	// injected), then a block the source did not list: injection stops.
	rp := rpFrames(t,
		returnpath.Message{Type: returnpath.ReqPagesID, Start: 1 * 4096, Len: 4096, Block: "pc.ram"},
		returnpath.Message{Type: returnpath.ReqPages, Start: 2 * 4096, Len: 4096},
		returnpath.Message{Type: returnpath.ReqPages, Start: 10 * 4096, Len: 4096},
		returnpath.Message{Type: returnpath.ReqPagesID, Start: 0, Len: 4096, Block: "vga.vram"},
		returnpath.Message{Type: returnpath.Shut},
	)
	dst.Write(rp)
	dst.(*net.TCPConn).CloseWrite()
	src.SetReadDeadline(time.Now().Add(10 * time.Second))
	fromProxy, err := io.ReadAll(src)
	if err != nil {
		t.Fatal(err)
	}
	// Both sides ended: the pair closes (the source's half-close ends the other direction).
	src.(*net.TCPConn).CloseWrite()
	for deadline := time.Now().Add(10 * time.Second); p.Stats().OpenConnections != 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	st := p.Stats()
	if st.Injected != 4 || st.InjectedThenRequested != 1 {
		t.Fatalf("the scenario did not go as planned: %+v", st)
	}
	want := strings.NewReader(`
# HELP pagewarp_qemuproxy_connections_open Connection pairs still forwarding.
# TYPE pagewarp_qemuproxy_connections_open gauge
pagewarp_qemuproxy_connections_open{migration="m1"} 0
# HELP pagewarp_qemuproxy_connections_total Connection pairs accepted from the source and dialled to the destination.
# TYPE pagewarp_qemuproxy_connections_total counter
pagewarp_qemuproxy_connections_total{migration="m1"} 1
# HELP pagewarp_qemuproxy_forwarded_bytes_total Bytes forwarded, by direction: to_destination (the migration stream) or to_source (the return path, injected requests included).
# TYPE pagewarp_qemuproxy_forwarded_bytes_total counter
pagewarp_qemuproxy_forwarded_bytes_total{direction="to_destination",migration="m1"} 4000
pagewarp_qemuproxy_forwarded_bytes_total{direction="to_source",migration="m1"} ` + strconv.Itoa(len(fromProxy)) + `
# HELP pagewarp_qemuproxy_injected_pages_total Predicted pages the proxy requested from the source (one injected REQ_PAGES_ID each).
# TYPE pagewarp_qemuproxy_injected_pages_total counter
pagewarp_qemuproxy_injected_pages_total{migration="m1"} 4
# HELP pagewarp_qemuproxy_injected_then_requested_pages_total Injected pages the destination requested afterwards anyway (they had not arrived before it faulted).
# TYPE pagewarp_qemuproxy_injected_then_requested_pages_total counter
pagewarp_qemuproxy_injected_then_requested_pages_total{migration="m1"} 1
# HELP pagewarp_qemuproxy_injection_disabled 1 once the proxy has stopped injecting (it still forwards), else 0.
# TYPE pagewarp_qemuproxy_injection_disabled gauge
pagewarp_qemuproxy_injection_disabled{migration="m1"} 1
# HELP pagewarp_qemuproxy_injection_disabled_info Why the proxy stopped injecting: 1 for the one reason, absent while it injects.
# TYPE pagewarp_qemuproxy_injection_disabled_info gauge
pagewarp_qemuproxy_injection_disabled_info{migration="m1",reason="request for block \"vga.vram\", not in the source's block list"} 1
# HELP pagewarp_qemuproxy_requested_pages_total Pages the destination's own requests asked for, in blocks of the source's block list.
# TYPE pagewarp_qemuproxy_requested_pages_total counter
pagewarp_qemuproxy_requested_pages_total{migration="m1"} 3
# HELP pagewarp_qemuproxy_requests_total Page requests of the destination's own (return-path REQ_PAGES and REQ_PAGES_ID messages), forwarded to the source.
# TYPE pagewarp_qemuproxy_requests_total counter
pagewarp_qemuproxy_requests_total{migration="m1"} 4
# HELP pagewarp_qemuproxy_skipped_pages_total Predicted pages not injected, by reason: invalid (outside the block) or requested (requested or injected before).
# TYPE pagewarp_qemuproxy_skipped_pages_total counter
pagewarp_qemuproxy_skipped_pages_total{migration="m1",reason="invalid"} 0
pagewarp_qemuproxy_skipped_pages_total{migration="m1",reason="requested"} 0
`)
	names := []string{
		"pagewarp_qemuproxy_connections_open", "pagewarp_qemuproxy_connections_total", "pagewarp_qemuproxy_forwarded_bytes_total",
		"pagewarp_qemuproxy_injected_pages_total", "pagewarp_qemuproxy_injected_then_requested_pages_total",
		"pagewarp_qemuproxy_injection_disabled", "pagewarp_qemuproxy_injection_disabled_info",
		"pagewarp_qemuproxy_requested_pages_total", "pagewarp_qemuproxy_requests_total", "pagewarp_qemuproxy_skipped_pages_total",
	}
	if err := testutil.GatherAndCompare(reg, want, names...); err != nil {
		t.Fatal(err)
	}
	// The histogram: one observation per request, cumulative buckets ending at the count.
	h := single(t, gather(t, reg), "pagewarp_qemuproxy_request_forward_seconds").GetHistogram()
	if h.GetSampleCount() != 4 || !(h.GetSampleSum() > 0) || len(h.GetBucket()) != qemu.ForwardBuckets {
		t.Fatalf("forward histogram: count %d, sum %v, %d buckets", h.GetSampleCount(), h.GetSampleSum(), len(h.GetBucket()))
	}
	var prev uint64
	for i, b := range h.GetBucket() {
		if b.GetCumulativeCount() < prev || b.GetUpperBound() != qemu.ForwardBucketBound(i).Seconds() {
			t.Fatalf("bucket %d: le %v count %d after %d", i, b.GetUpperBound(), b.GetCumulativeCount(), prev)
		}
		prev = b.GetCumulativeCount()
	}
	if got := h.GetBucket()[0].GetUpperBound(); got != 1e-6 {
		t.Fatalf("first bound %v, want 1 µs", got)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// While the proxy injects, the _info series is absent and the gauge 0.
func TestQEMUProxyInjecting(t *testing.T) {
	blocks := []qmp.RAMBlock{{Name: "pc.ram", PageSize: 4096, Used: 64 * 4096, Total: 64 * 4096}}
	p, _, _ := proxyBetweenFakes(t, qemu.ProxyConfig{Blocks: blocks})
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewQEMUProxyCollector(p, nil))
	if n, err := testutil.GatherAndCount(reg, "pagewarp_qemuproxy_injection_disabled_info"); err != nil || n != 0 {
		t.Fatalf("%d injection_disabled_info series while injecting (%v)", n, err)
	}
	if v := value(t, gather(t, reg), "pagewarp_qemuproxy_injection_disabled", nil); v != 0 {
		t.Fatalf("injection_disabled %v while injecting", v)
	}
}
