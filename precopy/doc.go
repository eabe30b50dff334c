// Package precopy is the pre-copy phase of a migration: rounds of the pages
// a live workload wrote, sent to the target while the workload keeps
// running, so that post-copy later has little left to fetch.
//
// # Pieces
//
//   - Tracker (track.go): which pages were written since the last round.
//     userfaultfd write-protect in async mode read with PAGEMAP_SCAN by
//     default; synchronous write-protect, which also gives the order of the
//     first writes of a round; a full rehash where the kernel offers neither.
//   - Sender (sender.go), the source side, a pageserver.PrecopyServer: it
//     takes the target's pre-copy streams from the page server's listener and
//     runs rounds over them. Each round is a pipeline: scan (the tracker's
//     dirty set cut into batches), hash (content sum, wire check and zero test,
//     in parallel workers), classify and encode (in page order), send (one
//     writer per stream, page data written from the region with writev, not
//     copied).
//   - Receiver (receiver.go), the target side: it installs what the streams
//     carry into faulthandler Handlers before they start: missing pages with
//     UFFDIO_COPY, present ones in place.
//
// # What travels
//
// Round 0 looks at every page, each later round at the pages written since
// the previous round began. For each page, in this order:
//
//   - fake dirty: written, but its content sum equals what the target holds
//     (the hash filter, seed 000): nothing is sent;
//   - zero: a zero marker;
//   - duplicate or known: the content index (content sum → a page the target
//     holds: one of any region of this migration, seed 001, or of the base
//     snapshot the target advertised, seed 003) names a page with the same
//     content; a 32-byte reference is sent instead of 4 KiB;
//   - otherwise the data.
//
// # Invariants
//
//   - The Sender's model of the target is exact: held[p] is the content sum of
//     what the target holds at p, or unknown. The target acknowledges every
//     round and lists what it rejected; a rejected page becomes missing on the
//     target and unknown on the sender, and goes again in the next round.
//   - Every page is verified on the target: data against its xxh3-64, a
//     reference by hashing its source page. A page the workload wrote while it
//     was being sent fails the check (it is torn) and is rejected; the write
//     made it dirty, so the next round, or the switch, covers it.
//   - A reference names a page that holds the content at the end of the round:
//     not dirty in the round, or already classified in it. References whose
//     source arrives later on another stream are resolved at the end of the
//     round, when every stream's RoundEnd has arrived.
//   - Pages installed by pre-copy are resident in the Handler: post-copy never
//     fetches them again unless the switch drops them (Sender.Pending lists
//     the pages written since the last round; Handler.Drop makes them missing).
//
// # Concurrency
//
// Sender.Round runs the pipeline's goroutines and returns when they have
// stopped; the content index and the held sums are touched only by the
// classify stage. ServePrecopy runs one read loop per stream. The Receiver
// runs one receive loop per stream; its round bookkeeping is under
// Receiver.mu, and writes on stream 0 (RoundAck, Error) under ackMu.
package precopy
