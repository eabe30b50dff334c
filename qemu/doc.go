// Package qemu integrates pagewarp's prediction with QEMU's own post-copy migration: Proxy sits
// between a source QEMU (migrating to the proxy) and a destination QEMU (-incoming on the
// address the proxy dials), forwards the migration stream byte for byte, parses the
// destination's return-path page requests (package returnpath), feeds them to a predictor and,
// once post-copy runs, asks the source for the predicted pages too.
//
// Subpackages: returnpath (the return-path wire format), qmp (the QMP client), guest (the test
// guest), launch (starting real QEMU pairs and migrating between them, for benchmarks and
// tests), qemutest (launch with test skips and cleanups). ../shared/QEMU.md lists the protocol
// facts the proxy relies on, verified against QEMU 7.2.
//
// # Invariants (the proxy must never be why a migration pauses or fails)
//
//   - Source → destination bytes are forwarded unchanged, on every connection.
//   - Connections are dialled to the destination in the order the source opened them, each dial
//     finished before the next connection is accepted (7.2's postcopy-preempt takes the first
//     connection as the main one).
//   - On the main connection's return path every destination page request is forwarded as
//     REQ_PAGES_ID naming the destination's own block, so an injected request naming a block can
//     never redirect a later plain REQ_PAGES. Other messages are forwarded as read, a
//     RECV_BITMAP's tail streamed behind its frame.
//   - Only REQ_PAGES_ID is injected, only for the block of the real request that triggered it,
//     only pages aligned to that block's page size and inside its used length (from the source's
//     x-query-ramblock), only after the destination's first real request (the destination
//     requests pages only once post-copy runs), never for a page requested or injected before.
//     After anything unexpected (a request for an unknown block or out of range, a plain
//     REQ_PAGES with no block named yet) the proxy keeps forwarding and injects no more; with
//     no block list at all it never injects.
//   - The end of either direction (EOF or error) ends the pair at once: a clean EOF is passed on
//     as a half-close (so a SHUT already forwarded is delivered before the FIN), and both sockets
//     are closed when both directions have ended or after CloseGrace; an error closes both at once.
//     A malformed return path is an error: the source would reject the same bytes.
//
// # Concurrency
//
// Serve runs an accept loop and two goroutines per connection pair. The predictors and the
// request bookkeeping belong to the main connection's return-path goroutine; Stats and
// ForwardLatency (the latency the proxy adds to each request) read atomic counters and may be
// called at any time.
package qemu
