// Package pageserver is the source side of a post-copy migration: it serves a Source's pages to
// targets over the wire protocol (docs/protocol.md), answering demand requests (a target thread is
// blocked on the page) before background ones.
//
// # Sources
//
// A Source is memory as regions of pages: RegionSource serves an in-process region, FileSource an
// mmap'd memory file (a VM snapshot). Sources that are Slicers hand the server slices of their memory,
// so page data goes from the source to the socket (writev) without an intermediate copy.
//
// # Goroutines
//
// Serve runs one accept loop per listener. Each connection has exactly two goroutines:
//
//   - the receive loop (the goroutine of ServeConn) owns the wire.Reader: it does the handshake, then
//     decodes frames, validates requests (region, range) and queues them: demand requests on the
//     demand queue, background requests and digest requests on the background queue. Both queues
//     are bounded; when one is full the loop blocks, stops reading, and TCP flow control reaches the
//     target. Every enqueue also selects on shutdown and on the send loop's end.
//   - the send loop serves queued work with the wire.Writer: it always drains the demand queue first,
//     and re-checks it before each chunk of at most 64 pages of a background request (and of a
//     digest), so a demand reply waits behind at most one chunk. Every flush has a write deadline.
//
// The Writer and the send state belong to whoever holds conn.wmu: the send loop holds it around each
// job and its last frame. When a demand request arrives while the send loop is idle and no demand
// request is queued, the receive loop takes wmu (TryLock) and serves the request itself, so the reply
// leaves without a hand-off between goroutines (on a small VM each hand-off that wakes a thread on
// another vCPU costs tens of microseconds). An urgent connection's socket is read through a reader that
// busy-polls it for Options.UrgentSpin before parking in the netpoller.
//
// A protocol error found by the receive loop goes to the send loop (the ctrl channel), which sends the
// Error frame, half-closes, and lingers briefly so the peer can read it; only that connection closes.
//
// # Transport security
//
// With Options.TLS every connection is mutual TLS 1.3 (wire.ServerTLS): the TLS handshake runs in the
// connection's goroutine under HandshakeTimeout, before the receive loop reads a frame, so a client
// without a certificate the configured CAs verify is refused before it sees even the Welcome, and a
// silent client holds its connection no longer than the timeout. TLS reads the socket through the
// same spinning reader as plain connections.
//
// # Invariants
//
//   - Client input never panics the server and never sizes an allocation: frames are bounded by
//     wire.MaxFrameSize before they are read, and request ranges are checked with overflow-safe
//     arithmetic before any page is touched.
//   - Every request is answered by Pages frames covering [page, page+count) in order, without gaps,
//     the last one flagged FlagLast; data runs carry each page's xxh3-64; zero runs are sent as such
//     only when zero_pages was negotiated.
//   - Frames of one request are never interleaved out of order; frames of a demand request may come
//     between two chunks of a background request.
//
// # Locks
//
// Server.mu guards the listener and connection sets and the closed flag; conn.wmu guards a
// connection's Writer and send state and is taken before conn.mu; conn.mu (taken under Server.mu by
// Close) guards a connection's closing flag and write deadline; Server.digestMu guards the
// digest cache and is never held with another lock. Counters are atomics.
package pageserver
