package metrics

import (
	"math"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pagewarp/pagewarp/faulthandler"
)

// Kinds of pages a fault handler installs (label kind of
// pagewarp_faulthandler_pages_installed_total). The kinds are disjoint:
// zero counts the zero pages of demand and background replies, while pushed
// and precopy include their zero pages; duplicate counts the pre-copy pages
// copied from a reference's source (a page whose content the target already
// held), which carried no page data. Bytes received
// (pagewarp_faulthandler_received_bytes_total) have the kinds that carry
// data: demand, background, pushed, precopy.
const (
	kindDemand     = "demand"
	kindBackground = "background"
	kindZero       = "zero"
	kindPushed     = "pushed"
	kindPrecopy    = "precopy"
	kindDuplicate  = "duplicate"
)

// serviceBucketMinExp and serviceBucketMaxExp bound the exponents k of the
// upper bounds 2^k ns of the demand service-time histogram:
// 1.02 µs, 2.05 µs, 4.10 µs … 268 ms, 537 ms, 1.07 s
// (2^10 … 2^30 ns, 21 bounds and +Inf). A loopback fault is served in
// a few µs, one over a LAN in tens to hundreds of µs, and one behind a busy
// link or a slow source in ms; a factor of two per bucket keeps the series
// few. Each bound is an edge of the handler's own buckets (2^(i/4) ns, 19%
// apart), so the conversion loses resolution but moves no count across a
// bound (except that a time of exactly 2^k ns counts above 2^k ns: 1 ns).
const (
	serviceBucketMinExp = 10
	serviceBucketMaxExp = 30
)

type faultHandlerCollector struct {
	h *faulthandler.Handler

	regionPages, residentPages, pageSize, complete, elapsed         *prometheus.Desc
	faultEvents, faultBatches, faultsCoalesced                      *prometheus.Desc
	demandRequests, pullRequests                                    *prometheus.Desc
	pagesInstalled, receivedBytes                                   *prometheus.Desc
	pushNotices, pushedReceived                                     *prometheus.Desc
	probesStaged, probesReported                                    *prometheus.Desc
	precopyInPlace, precopyDropped                                  *prometheus.Desc
	service                                                         *prometheus.Desc
	connectionsOpen, failed                                         *prometheus.Desc
	linkLosses, stalls, corruptions, resumes, reRequested, downTime *prometheus.Desc
}

// NewFaultHandlerCollector returns a collector of h's counters (the target
// side of a migration), read from h.Stats at each scrape; labels, which may
// be nil, are added to every metric. Register it on the registry that
// serves /metrics. The counters stay readable, with their final values,
// after the migration and after h's Close and Release.
func NewFaultHandlerCollector(h *faulthandler.Handler, labels prometheus.Labels) prometheus.Collector {
	d := func(name, help string, varLabels ...string) *prometheus.Desc {
		return newDesc(subsystemFaultHandler, name, help, labels, varLabels...)
	}
	return &faultHandlerCollector{
		h:               h,
		regionPages:     d("region_pages", "Pages in the migrated region."),
		residentPages:   d("resident_pages", "Pages of the region installed so far."),
		pageSize:        d("page_size_bytes", "Page size of the region."),
		complete:        d("complete", "1 once every page of the region is resident, else 0."),
		elapsed:         d("elapsed_seconds", "Time from the handler's start to its last page (or to now while pages are missing)."),
		faultEvents:     d("fault_events_total", "Page-fault events read from the userfaultfd."),
		faultBatches:    d("fault_batches_total", "Reads of the userfaultfd that returned fault events."),
		faultsCoalesced: d("faults_coalesced_total", "Faults on a page already requested or resident (no request sent)."),
		demandRequests:  d("demand_requests_total", "Demand requests sent to the source, at most one per page."),
		pullRequests:    d("pull_requests_total", "Background (pull) requests sent to the source."),
		pagesInstalled:  d("pages_installed_total", "Pages installed in the region, by how they arrived.", "kind"),
		receivedBytes:   d("received_bytes_total", "Page data received from the source, by how it travelled: demand, background, pushed, precopy (frame headers and hashes excluded).", "kind"),
		pushNotices:     d("push_notices_total", "Push notices received: demand replies the source followed with predicted pages."),
		pushedReceived:  d("pushed_received_pages_total", "Pages received in pushed frames, duplicates included."),
		probesStaged:    d("probes_staged_total", "Pushed pages held back as probes to learn whether the workload uses them."),
		probesReported:  d("probes_reported_total", "Probes reported to the source, by result: used (touched) or unused (expired untouched).", "result"),
		precopyInPlace:  d("precopy_in_place_pages_total", "Pre-copy pages written over a page already present."),
		precopyDropped:  d("precopy_dropped_pages_total", "Pages made missing again because pre-copy invalidated them."),
		service:         d("demand_service_seconds", "Demand service time: from sending a demand request to installing its page (buckets 1.02 µs … 1.07 s)."),
		connectionsOpen: d("connections_open", "Connections to the source the handler holds open (urgent and bulk); 0 once it has closed them."),
		failed:          d("failed", "1 once the migration has failed (or the handler was closed before it finished), else 0."),
		linkLosses:      d("link_losses_total", "Times the connections to the source were lost during post-copy: dropped, or stalled."),
		stalls:          d("stalls_total", "Losses declared because a connection carried nothing for the stall timeout while replies were outstanding."),
		corruptions:     d("corruptions_total", "Losses declared because a connection delivered damaged data (a frame failing to decode or its checksum, a page failing its hash); resumed at most 8 times per migration."),
		resumes:         d("resumes_total", "Times the handler reconnected to the source and resumed the migration after a loss."),
		reRequested:     d("rerequested_pages_total", "Pages asked for again on a resumed connection: demand requests and pushes in flight when the connection was lost."),
		downTime:        d("down_seconds_total", "Time from each loss to its resume, added when the resume completes."),
	}
}

// Describe implements prometheus.Collector.
func (c *faultHandlerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.regionPages, c.residentPages, c.pageSize, c.complete, c.elapsed,
		c.faultEvents, c.faultBatches, c.faultsCoalesced, c.demandRequests, c.pullRequests,
		c.pagesInstalled, c.receivedBytes, c.pushNotices, c.pushedReceived,
		c.probesStaged, c.probesReported, c.precopyInPlace, c.precopyDropped, c.service,
		c.connectionsOpen, c.failed,
		c.linkLosses, c.stalls, c.corruptions, c.resumes, c.reRequested, c.downTime,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *faultHandlerCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.h.Stats()
	const (
		gauge   = prometheus.GaugeValue
		counter = prometheus.CounterValue
	)
	for _, m := range []constMetric{
		{c.regionPages, gauge, float64(st.Pages), nil},
		{c.residentPages, gauge, float64(st.Resident), nil},
		{c.pageSize, gauge, float64(st.PageSize), nil},
		{c.complete, gauge, boolValue(st.Complete), nil},
		{c.elapsed, gauge, st.Elapsed.Seconds(), nil},
		{c.faultEvents, counter, float64(st.FaultEvents), nil},
		{c.faultBatches, counter, float64(st.FaultBatches), nil},
		{c.faultsCoalesced, counter, float64(st.FaultsCoalesced), nil},
		{c.demandRequests, counter, float64(st.DemandRequests), nil},
		{c.pullRequests, counter, float64(st.PullRequests), nil},
		{c.pagesInstalled, counter, float64(st.DemandPages), []string{kindDemand}},
		{c.pagesInstalled, counter, float64(st.BackgroundPages), []string{kindBackground}},
		{c.pagesInstalled, counter, float64(st.ZeroPages), []string{kindZero}},
		{c.pagesInstalled, counter, float64(st.PushedPages), []string{kindPushed}},
		{c.pagesInstalled, counter, float64(st.PrecopyPages), []string{kindPrecopy}},
		{c.pagesInstalled, counter, float64(st.DuplicatePages), []string{kindDuplicate}},
		{c.receivedBytes, counter, float64(st.DemandBytes), []string{kindDemand}},
		{c.receivedBytes, counter, float64(st.BackgroundBytes), []string{kindBackground}},
		{c.receivedBytes, counter, float64(st.PushedBytes), []string{kindPushed}},
		{c.receivedBytes, counter, float64(st.PrecopyBytes), []string{kindPrecopy}},
		{c.pushNotices, counter, float64(st.PushNotices), nil},
		{c.pushedReceived, counter, float64(st.PushedReceived), nil},
		{c.probesStaged, counter, float64(st.ProbesStaged), nil},
		{c.probesReported, counter, float64(st.ProbesUsed), []string{"used"}},
		{c.probesReported, counter, float64(st.ProbesUnused), []string{"unused"}},
		{c.precopyInPlace, counter, float64(st.PrecopyInPlace), nil},
		{c.precopyDropped, counter, float64(st.PrecopyDropped), nil},
		{c.connectionsOpen, gauge, float64(st.ConnectionsOpen), nil},
		{c.failed, gauge, boolValue(st.Failed), nil},
		{c.linkLosses, counter, float64(st.LinkLosses), nil},
		{c.stalls, counter, float64(st.Stalls), nil},
		{c.corruptions, counter, float64(st.Corruptions), nil},
		{c.resumes, counter, float64(st.Resumes), nil},
		{c.reRequested, counter, float64(st.ReRequested), nil},
		{c.downTime, counter, st.DownTime.Seconds(), nil},
	} {
		m.emit(ch)
	}
	counts, sum := c.h.ServiceHistogram()
	count, buckets := serviceBuckets(counts)
	ch <- prometheus.MustNewConstHistogram(c.service, count, sum.Seconds(), buckets)
}

// serviceBuckets converts the handler's service-time histogram (counts[i]
// of times in [2^(i/4), 2^((i+1)/4)) ns) to Prometheus's cumulative buckets
// with bounds 2^k ns, k from serviceBucketMinExp to serviceBucketMaxExp,
// keyed in seconds, and returns the total count with them. The bucket of
// bound 2^k ns counts the handler's buckets below index 4k: every time
// shorter than 2^k ns.
func serviceBuckets(counts []uint64) (count uint64, buckets map[float64]uint64) {
	buckets = make(map[float64]uint64, serviceBucketMaxExp-serviceBucketMinExp+1)
	k := serviceBucketMinExp
	for i, n := range counts {
		for k <= serviceBucketMaxExp && i >= 4*k {
			buckets[math.Exp2(float64(k))/1e9] = count
			k++
		}
		count += n
	}
	for ; k <= serviceBucketMaxExp; k++ {
		buckets[math.Exp2(float64(k))/1e9] = count
	}
	return count, buckets
}
