package faulthandler

import (
	"math"
	"sync/atomic"
	"time"
)

// pageKind says how a page arrived.
type pageKind int

const (
	kindDemand pageKind = iota
	kindBackground
	kindZero
	kindPushed
	kindPrecopy
	kindDuplicate // pre-copy pages copied from a reference's source (PrecopyRef)
	numKinds
)

// histogram is a lock-free log-linear latency histogram: buckets of
// 2^(k/4) ns, about 19% wide, from 1 ns to ~70 s.
type histogram struct {
	buckets [160]atomic.Uint64
	count   atomic.Uint64
	sum     atomic.Int64
}

func bucketOf(d time.Duration) int {
	if d < 1 {
		d = 1
	}
	b := int(4 * math.Log2(float64(d)))
	if b >= 160 {
		b = 159
	}
	return b
}

func (h *histogram) observe(d time.Duration) {
	h.buckets[bucketOf(d)].Add(1)
	h.count.Add(1)
	h.sum.Add(int64(d))
}

// quantile returns an upper bound of the q-quantile (the upper edge of its
// bucket), 0 when empty.
func (h *histogram) quantile(q float64) time.Duration {
	n := h.count.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen >= rank {
			return time.Duration(math.Exp2(float64(i+1) / 4))
		}
	}
	return time.Duration(math.Exp2(160.0 / 4))
}

type counters struct {
	faultEvents     atomic.Uint64
	faultBatches    atomic.Uint64
	faultsCoalesced atomic.Uint64
	demandRequests  atomic.Uint64
	pullRequests    atomic.Uint64
	bytesReceived   [numKinds]atomic.Uint64 // page data received, by how it travelled (demand, background, pushed, precopy)
	connsOpen       atomic.Int64            // connections to the source held open
	pushNotices     atomic.Uint64
	pushedReceived  atomic.Uint64
	probesStaged    atomic.Uint64
	probesUsed      atomic.Uint64
	probesUnused    atomic.Uint64
	precopyInPlace  atomic.Uint64
	precopyDropped  atomic.Uint64
	pages           [numKinds]atomic.Uint64
	serviceTime     histogram
	linkLosses      atomic.Uint64
	corruptions     atomic.Uint64
	resumes         atomic.Uint64
	reRequested     atomic.Uint64
	downNanos       atomic.Uint64
	stalls          atomic.Uint64
}

// Stats is a snapshot of a Handler's counters.
type Stats struct {
	Pages           uint64        // pages in the region
	Resident        uint64        // pages installed
	FaultEvents     uint64        // fault events read from the userfaultfd
	FaultBatches    uint64        // reads that returned events
	FaultsCoalesced uint64        // faults on a page already requested or resident
	DemandRequests  uint64        // demand requests sent (one per page at most)
	PullRequests    uint64        // background requests sent
	DemandPages     uint64        // pages installed from demand replies
	BackgroundPages uint64        // pages installed from background replies
	ZeroPages       uint64        // pages installed as zero pages (demand and background)
	PushNotices     uint64        // Push notices received (demand replies followed by a push)
	PushedReceived  uint64        // pages received in pushed frames (duplicates included)
	PushedPages     uint64        // pages installed from pushes (zero pages included)
	PrecopyPages    uint64        // pages installed by pre-copy while missing (zero pages included; references given to PrecopyRef count as DuplicatePages instead)
	PrecopyInPlace  uint64        // pre-copy pages written over a page already present
	PrecopyDropped  uint64        // pages made missing again (Drop)
	ProbesStaged    uint64        // pushed pages held back as probes
	ProbesUsed      uint64        // probes the workload touched (each a local fault, reported used)
	ProbesUnused    uint64        // probes that expired untouched (reported unused)
	BytesReceived   uint64        // page bytes received from the source in post-copy (DemandBytes + BackgroundBytes + PushedBytes)
	DemandBytes     uint64        // page bytes received in demand replies
	BackgroundBytes uint64        // page bytes received in background (pull) replies
	PushedBytes     uint64        // page bytes received in pushed frames (duplicates included)
	PrecopyBytes    uint64        // page bytes handed to PrecopyData (pages written in place included; PrecopyRef's are not counted)
	DuplicatePages  uint64        // pages pre-copy installed from a reference's source while missing (PrecopyRef)
	ConnectionsOpen int           // connections to the source held open (urgent and bulk; 0 before Dial's handshake ends and after Close)
	ServiceP50      time.Duration // demand request to install, median
	ServiceP99      time.Duration // demand request to install, 99th percentile
	// DemandServiceTotal sums the service time of every demand request: the
	// time threads stalled on faults that went to the source.
	DemandServiceTotal time.Duration
	Elapsed            time.Duration // Start to the last page (or to now)
	PageSize           int
	Complete           bool
	Failed             bool // the migration failed, or the handler was closed before it finished (Wait returns why)
	// LinkLosses counts the times the connections to the server were lost
	// during post-copy; Resumes the times they were opened again and the
	// migration resumed; ReRequested the demand requests asked again on a
	// resumed connection (pages in flight when the connection dropped);
	// DownTime the total time from a loss to its resume; Stalls the losses
	// declared because a connection carried nothing for
	// Options.StallTimeout while replies were outstanding (counted in
	// LinkLosses too when the handler resumes); Corruptions the losses
	// declared because a connection delivered damaged data (a frame that did
	// not decode or failed its checksum, a page that failed its hash),
	// resumed like the others at most 8 times per migration.
	LinkLosses  uint64
	Corruptions uint64
	Resumes     uint64
	ReRequested uint64
	DownTime    time.Duration
	Stalls      uint64
}

// Stats returns the handler's counters.
func (h *Handler) Stats() Stats {
	s := Stats{
		Pages:              h.npages,
		Resident:           h.resident.Load(),
		FaultEvents:        h.stats.faultEvents.Load(),
		FaultBatches:       h.stats.faultBatches.Load(),
		FaultsCoalesced:    h.stats.faultsCoalesced.Load(),
		DemandRequests:     h.stats.demandRequests.Load(),
		PullRequests:       h.stats.pullRequests.Load(),
		DemandPages:        h.stats.pages[kindDemand].Load(),
		BackgroundPages:    h.stats.pages[kindBackground].Load(),
		ZeroPages:          h.stats.pages[kindZero].Load(),
		PushNotices:        h.stats.pushNotices.Load(),
		PushedReceived:     h.stats.pushedReceived.Load(),
		PushedPages:        h.stats.pages[kindPushed].Load(),
		PrecopyPages:       h.stats.pages[kindPrecopy].Load(),
		PrecopyInPlace:     h.stats.precopyInPlace.Load(),
		PrecopyDropped:     h.stats.precopyDropped.Load(),
		ProbesStaged:       h.stats.probesStaged.Load(),
		ProbesUsed:         h.stats.probesUsed.Load(),
		ProbesUnused:       h.stats.probesUnused.Load(),
		DemandBytes:        h.stats.bytesReceived[kindDemand].Load(),
		BackgroundBytes:    h.stats.bytesReceived[kindBackground].Load(),
		PushedBytes:        h.stats.bytesReceived[kindPushed].Load(),
		PrecopyBytes:       h.stats.bytesReceived[kindPrecopy].Load(),
		DuplicatePages:     h.stats.pages[kindDuplicate].Load(),
		ConnectionsOpen:    int(h.stats.connsOpen.Load()),
		ServiceP50:         h.stats.serviceTime.quantile(0.50),
		ServiceP99:         h.stats.serviceTime.quantile(0.99),
		DemandServiceTotal: time.Duration(h.stats.serviceTime.sum.Load()),
		PageSize:           h.pageSize,
		Complete:           isClosed(h.complete),
		Failed:             isClosed(h.failed),
		LinkLosses:         h.stats.linkLosses.Load(),
		Corruptions:        h.stats.corruptions.Load(),
		Resumes:            h.stats.resumes.Load(),
		ReRequested:        h.stats.reRequested.Load(),
		DownTime:           time.Duration(h.stats.downNanos.Load()),
		Stalls:             h.stats.stalls.Load(),
	}
	s.BytesReceived = s.DemandBytes + s.BackgroundBytes + s.PushedBytes
	if end := h.ended.Load(); end != 0 {
		s.Elapsed = time.Unix(0, end).Sub(h.started)
	} else if !h.started.IsZero() {
		s.Elapsed = time.Since(h.started)
	}
	return s
}

// ServiceHistogram returns the demand service-time histogram (request sent
// to page installed) behind Stats.ServiceP50 and ServiceP99, for exporters:
// counts[i] is the number of demand requests whose service time d had
// 2^(i/4) ns <= d < 2^((i+1)/4) ns (bucket 0 also holds shorter times, the
// last bucket, from about 15 minutes, anything longer); sum is their total
// service time. The buckets are read one by one while faults are served, so
// sum may be a little ahead of or behind the counts.
func (h *Handler) ServiceHistogram() (counts []uint64, sum time.Duration) {
	st := &h.stats.serviceTime
	counts = make([]uint64, len(st.buckets))
	for i := range st.buckets {
		counts[i] = st.buckets[i].Load()
	}
	return counts, time.Duration(st.sum.Load())
}
