// Package switchctl is the QMP switch controller: it watches a source QEMU's pre-copy through
// query-migrate, turns QEMU's figures into hybrid.Round values, asks a hybrid policy after each
// round and carries out its answer (migrate-start-postcopy for a switch; a raised downtime-limit
// for a stop-and-copy), then reports both sides' figures.
//
// # Rounds from QEMU's figures
//
// QEMU has no rounds in its interface; it has ram.dirty-sync-count, incremented at every sync of
// the dirty bitmap. The first sync happens at setup (every page is then dirty: the bulk pass);
// QEMU 7.2 syncs again only when what remains to send drops below bandwidth × downtime-limit.
// One round here is the time between two increments seen by the controller:
//
//	Index      0 for the round running since setup (the bulk pass), then 1, 2, ...
//	Dirty      round 0: ram.total / page size; later: ram.remaining / page size at the sync
//	           that began the round (the dirty set QEMU had to send)
//	Sent       Δ ram.normal (pages sent with their data), Refs Δ ram.duplicate (zero pages)
//	Bytes      Δ ram.transferred
//	Duration   between the samples that saw the two increments (round 0: from the end of setup,
//	           total-time − setup-time before the first sample)
//	Remaining  ram.remaining / page size at the sync that ended the round
//	FakeDirty  0 (QEMU has no content filter), Interval 0 (QEMU's rounds run back to back)
//
// and Env.Bandwidth is the mean of ram.mbps (Mbit/s, QEMU's own rate over its last 100 ms)
// over the samples of the latest round, in bytes/s.
//
// Limits: every figure is read at the controller's sampling instants (Poll, default 50 ms), so
// a round's duration is off by up to one interval and Dirty and Remaining miss up to one
// interval's worth of pages sent after the sync; two syncs within one interval merge into one
// round. ram.remaining counts dirty pages of every RAM block, not only the guest's main RAM. A
// controller attached after round 0 starts its history at the first sync it sees, as round 0.
//
// # Acting on a decision
//
//   - switch: migrate-start-postcopy. On QEMU 7.2 this sets a flag: the migration thread
//     switches at its next iteration only if what remains is at least bandwidth × downtime-limit;
//     otherwise pre-copy simply completes, and the result says so (Outcome "precopy").
//   - stop-and-copy: QEMU has no command for it, so the controller raises the source's
//     downtime-limit to QEMU's maximum (2000 s): at its next iteration everything remaining is
//     below bandwidth × downtime-limit and QEMU stops the guest and sends it. The downtime is
//     whatever sending the remainder takes. The previous limit is restored after completion.
//   - continue: nothing; QEMU keeps iterating (and may complete on its own when what remains
//     falls below bandwidth × downtime-limit).
//
// After a switch or a stop-and-copy the policy is not asked again.
package switchctl
