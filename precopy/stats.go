package precopy

import "time"

// RoundStats describes one pre-copy round, as the Sender saw it.
type RoundStats struct {
	Round   uint32 `json:"round"`
	Streams int    `json:"streams"`
	Hash    string `json:"hash"`
	// Dirty counts the pages looked at: every page in round 0, the pages
	// written since the previous round after it (plus Carried).
	Dirty uint64 `json:"pages_dirty"`
	// Carried counts pages the target rejected in the previous round and
	// that were added to this one.
	Carried uint64 `json:"pages_carried"`
	// FakeDirty counts dirty pages skipped because their content equals
	// what the target holds (the hash filter).
	FakeDirty uint64 `json:"pages_fake_dirty"`
	// Zero counts pages sent as zero markers.
	Zero uint64 `json:"pages_zero"`
	// Dup counts pages sent as references to a page of this migration (the
	// same or another region) that the target holds.
	Dup uint64 `json:"pages_dup"`
	// Known counts pages sent as references to the target's base snapshot.
	Known uint64 `json:"pages_known"`
	// Sent counts pages sent with their data.
	Sent uint64 `json:"pages_sent"`
	// Rejected counts pages the target did not install (a torn read of a
	// page written while it was sent, or a reference whose source did not
	// match); they go again in the next round.
	Rejected uint64 `json:"pages_rejected"`
	// Bytes counts every byte written on the streams, frames included.
	Bytes uint64 `json:"bytes_sent"`
	// Duration runs from the scan to the target's acknowledgement.
	Duration time.Duration `json:"duration_ns"`
	// TrackTime is the time spent collecting dirty pages (arming, in
	// round 0); HashTime is the CPU time spent hashing and zero-testing,
	// summed over the hash workers (each on its own thread, read from
	// CLOCK_THREAD_CPUTIME_ID, so time other goroutines ran is not counted).
	TrackTime time.Duration `json:"track_ns"`
	HashTime  time.Duration `json:"hash_ns"`
}

// Gbps returns the round's throughput in GB/s of page bytes sent (data
// pages only) per second of round time.
func (r RoundStats) Gbps(pageSize int) float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Sent) * float64(pageSize) / r.Duration.Seconds() / 1e9
}

// WireGbps returns bytes on the wire per second of round time, in GB/s.
func (r RoundStats) WireGbps() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Bytes) / r.Duration.Seconds() / 1e9
}

// OverheadShare returns tracking plus hashing time as a share of the
// round's duration: the CPU the pre-copy machinery itself costs, beside
// moving the bytes.
func (r RoundStats) OverheadShare() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.TrackTime+r.HashTime) / float64(r.Duration)
}
