package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pagewarp/pagewarp/qemu"
)

// subsystemQEMUProxy is the subsystem of the QEMU return-path proxy's metrics.
const subsystemQEMUProxy = "qemuproxy"

type qemuProxyCollector struct {
	p *qemu.Proxy

	connections, open                       *prometheus.Desc
	requests, requestedPages                *prometheus.Desc
	injected, injectedThenRequested         *prometheus.Desc
	skipped, forwardedBytes                 *prometheus.Desc
	injectionDisabled, injectionDisabledWhy *prometheus.Desc
	forward                                 *prometheus.Desc
}

// NewQEMUProxyCollector returns a collector of p's counters (qemu.Proxy,
// between a source and a destination QEMU), read from p.Stats and
// p.ForwardLatency at each scrape; labels, which may be nil, are added to
// every metric. Register it on the registry that serves /metrics.
func NewQEMUProxyCollector(p *qemu.Proxy, labels prometheus.Labels) prometheus.Collector {
	d := func(name, help string, varLabels ...string) *prometheus.Desc {
		return newDesc(subsystemQEMUProxy, name, help, labels, varLabels...)
	}
	return &qemuProxyCollector{
		p:                     p,
		connections:           d("connections_total", "Connection pairs accepted from the source and dialled to the destination."),
		open:                  d("connections_open", "Connection pairs still forwarding."),
		requests:              d("requests_total", "Page requests of the destination's own (return-path REQ_PAGES and REQ_PAGES_ID messages), forwarded to the source."),
		requestedPages:        d("requested_pages_total", "Pages the destination's own requests asked for, in blocks of the source's block list."),
		injected:              d("injected_pages_total", "Predicted pages the proxy requested from the source (one injected REQ_PAGES_ID each)."),
		injectedThenRequested: d("injected_then_requested_pages_total", "Injected pages the destination requested afterwards anyway (they had not arrived before it faulted)."),
		skipped:               d("skipped_pages_total", "Predicted pages not injected, by reason: invalid (outside the block) or requested (requested or injected before).", "reason"),
		forwardedBytes:        d("forwarded_bytes_total", "Bytes forwarded, by direction: to_destination (the migration stream) or to_source (the return path, injected requests included).", "direction"),
		injectionDisabled:     d("injection_disabled", "1 once the proxy has stopped injecting (it still forwards), else 0."),
		injectionDisabledWhy:  d("injection_disabled_info", "Why the proxy stopped injecting: 1 for the one reason, absent while it injects.", "reason"),
		forward: d("request_forward_seconds", "Latency the proxy adds to a destination page request on the return path: from the kernel's receipt of it "+
			"(its socket's receive timestamp, so the proxy's wake-up is included) to the end of the write that forwarded it (buckets 1 µs … 131 ms)."),
	}
}

// Describe implements prometheus.Collector.
func (c *qemuProxyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.connections, c.open, c.requests, c.requestedPages, c.injected, c.injectedThenRequested,
		c.skipped, c.forwardedBytes, c.injectionDisabled, c.injectionDisabledWhy, c.forward,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *qemuProxyCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.p.Stats()
	const (
		gauge   = prometheus.GaugeValue
		counter = prometheus.CounterValue
	)
	for _, m := range []constMetric{
		{c.connections, counter, float64(st.Connections), nil},
		{c.open, gauge, float64(st.OpenConnections), nil},
		{c.requests, counter, float64(st.RealRequests), nil},
		{c.requestedPages, counter, float64(st.RealPages), nil},
		{c.injected, counter, float64(st.Injected), nil},
		{c.injectedThenRequested, counter, float64(st.InjectedThenRequested), nil},
		{c.skipped, counter, float64(st.SkippedInvalid), []string{"invalid"}},
		{c.skipped, counter, float64(st.SkippedRequested), []string{"requested"}},
		{c.forwardedBytes, counter, float64(st.BytesToDest), []string{"to_destination"}},
		{c.forwardedBytes, counter, float64(st.BytesToSource), []string{"to_source"}},
		{c.injectionDisabled, gauge, boolValue(st.InjectionDisabled), nil},
	} {
		m.emit(ch)
	}
	if st.InjectionDisabled {
		ch <- prometheus.MustNewConstMetric(c.injectionDisabledWhy, gauge, 1, st.DisabledReason)
	}
	l := c.p.ForwardLatency()
	buckets := make(map[float64]uint64, qemu.ForwardBuckets)
	var cum uint64
	for k := 0; k < qemu.ForwardBuckets; k++ {
		cum += l.Counts[k]
		buckets[qemu.ForwardBucketBound(k).Seconds()] = cum
	}
	ch <- prometheus.MustNewConstHistogram(c.forward, cum+l.Counts[qemu.ForwardBuckets], l.Sum.Seconds(), buckets)
}
