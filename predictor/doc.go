// Package predictor decides which pages to push after a post-copy demand fault: the Predictor
// interface, the PPM predictor (seed 004), the baselines it is measured against (none, next-N,
// stride, pivot/bubbling, a recorded working set, an oracle), an offline Evaluate that replays a
// recorded first-touch trace, and the PWTRACE1 trace file format. docs/prefetch.md gives the
// design and the measured table.
//
// It is pure decision logic: no network, no userfaultfd, no goroutines; the only I/O is
// ReadTrace and WriteTrace on an io.Reader / io.Writer the caller owns.
//
// # Invariants
//
//   - Predict never returns a page that was touched (observed, or reported used by Feedback), a
//     page >= Config.Pages, or the same page twice in one call, and returns at most k pages.
//   - Memory is bounded by the Config, never by the length of the fault stream: a bitmap of
//     Pages bits per predictor (ppm keeps three: touched, and pending predictions of each of its
//     two models), MaxContexts contexts per ppm model in a fixed-size table (LRU eviction within
//     a 4-way set), Streams stream heads, and a ring of at most 4096 pending predictions.
//     workingset and oracle keep the warmed sequence and a map of it.
//   - Predict and Observe allocate nothing in steady state (BenchmarkPPM).
//   - Warm never marks pages touched and leaves no sequence position behind.
//   - ReadTrace never allocates from an unchecked count and accepts only canonical encodings:
//     whatever it accepts re-encodes to the same bytes (FuzzReadTrace).
//   - No predictor looks at anything but the pages it is given: no workload names, seeds or
//     sizes.
//
// # Concurrency
//
// A Predictor is not safe for concurrent use. The page server and the QEMU proxy own one
// Predictor per migrated region and call it from one goroutine. Evaluate, ReadTrace and
// WriteTrace are safe to call concurrently on different values.
package predictor
