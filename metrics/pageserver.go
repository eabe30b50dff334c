package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pagewarp/pagewarp/pageserver"
	"github.com/pagewarp/pagewarp/wire"
)

type pageServerCollector struct {
	s *pageserver.Server

	accepted, active                  *prometheus.Desc
	requests, digestRequests          *prometheus.Desc
	pagesSent, sentBytes, errors      *prometheus.Desc
	pushes, pushedPages, pushReported *prometheus.Desc
	predictCalls, predictSeconds      *prometheus.Desc
	resumed, residentFrames, sessions *prometheus.Desc
	tlsRefused                        *prometheus.Desc
}

// NewPageServerCollector returns a collector of s's counters (the source
// side of a migration), read from s.Stats at each scrape; labels, which may
// be nil, are added to every metric. Register it on the registry that
// serves /metrics.
func NewPageServerCollector(s *pageserver.Server, labels prometheus.Labels) prometheus.Collector {
	d := func(name, help string, varLabels ...string) *prometheus.Desc {
		return newDesc(subsystemPageServer, name, help, labels, varLabels...)
	}
	return &pageServerCollector{
		s:              s,
		accepted:       d("connections_accepted_total", "Connections accepted (every channel: urgent, bulk, pre-copy)."),
		active:         d("connections_active", "Connections being served."),
		requests:       d("requests_total", "Page requests received, by priority: demand (a fault waits) or background (the pull).", "priority"),
		digestRequests: d("digest_requests_total", "Region digest requests received (verification)."),
		pagesSent:      d("pages_sent_total", "Pages sent, by kind: data (with their content, pushed pages included) or zero (as zero runs).", "kind"),
		sentBytes:      d("sent_bytes_total", "Bytes written to connections, frame headers included."),
		errors:         d("errors_total", "Error messages sent to clients, by protocol error code (each closes its connection).", "code"),
		pushes:         d("pushes_total", "Push notices sent: demand replies followed by predicted pages."),
		pushedPages:    d("pushed_pages_total", "Pages announced by push notices."),
		pushReported:   d("pushed_pages_reported_total", "Pushed pages the targets reported, by result: used (touched) or unused (a sample: one probe per few pushed pages).", "result"),
		predictCalls:   d("predictor_calls_total", "Predictor consultations, one per demand request with pushing on."),
		predictSeconds: d("predictor_seconds_total", "Time spent in the predictor, locks included."),
		resumed:        d("resumed_connections_total", "Connections opened again by a target resuming its post-copy after a loss (Hello with resume)."),
		residentFrames: d("resident_frames_total", "Resident frames received: resuming targets' bitmaps of the pages they hold."),
		sessions:       d("sessions", "Push sessions held (a server with a predictor keeps one per migration), those lingering after their connections dropped without Bye included."),
		tlsRefused:     d("tls_refused_total", "Connections closed because their TLS handshake failed or timed out."),
	}
}

// Describe implements prometheus.Collector.
func (c *pageServerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.accepted, c.active, c.requests, c.digestRequests, c.pagesSent, c.sentBytes, c.errors,
		c.pushes, c.pushedPages, c.pushReported, c.predictCalls, c.predictSeconds,
		c.resumed, c.residentFrames, c.sessions, c.tlsRefused,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *pageServerCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	const (
		gauge   = prometheus.GaugeValue
		counter = prometheus.CounterValue
	)
	for _, m := range []constMetric{
		{c.accepted, counter, float64(st.ConnectionsAccepted), nil},
		{c.active, gauge, float64(st.ConnectionsActive), nil},
		{c.requests, counter, float64(st.Requests[wire.PriorityDemand]), []string{"demand"}},
		{c.requests, counter, float64(st.Requests[wire.PriorityBackground]), []string{"background"}},
		{c.digestRequests, counter, float64(st.DigestRequests), nil},
		{c.pagesSent, counter, float64(st.PagesSent), []string{"data"}},
		{c.pagesSent, counter, float64(st.ZeroPagesSent), []string{"zero"}},
		{c.sentBytes, counter, float64(st.BytesSent), nil},
		{c.pushes, counter, float64(st.Pushes), nil},
		{c.pushedPages, counter, float64(st.PagesPushed), nil},
		{c.pushReported, counter, float64(st.PushReportedUsed), []string{"used"}},
		{c.pushReported, counter, float64(st.PushReportedUnused), []string{"unused"}},
		{c.predictCalls, counter, float64(st.PredictCalls), nil},
		{c.predictSeconds, counter, st.PredictTime.Seconds(), nil},
		{c.resumed, counter, float64(st.Resumes), nil},
		{c.residentFrames, counter, float64(st.ResidentFrames), nil},
		{c.sessions, gauge, float64(c.s.Sessions()), nil},
		{c.tlsRefused, counter, float64(st.TLSRefused), nil},
	} {
		m.emit(ch)
	}
	// Every code the protocol defines, zero included, so that rate() and
	// absent() work from the first scrape.
	for code := wire.ErrorCode(1); code < wire.NumCodes; code++ {
		ch <- prometheus.MustNewConstMetric(c.errors, counter, float64(st.Errors[code]), code.String())
	}
}
