// Package faulthandler is the target side of a post-copy migration. It maps
// a region of anonymous memory, registers it with userfaultfd in MISSING
// mode, and turns every fault on a missing page into a fetch from a page
// source: a remote page server over the wire protocol (Dial, NewRemote) or a
// pageserver.Source in the same process (NewLocal). A background pull fetches
// every page nobody touched, and the migration is complete when every page is
// resident: the region is then unregistered and stays mapped, owned by the
// Handler, with the source's content byte for byte.
//
// # Invariants
//
//   - A page is installed only with UFFDIO_COPY or UFFDIO_ZEROPAGE, which
//     never overwrite a present page: a late or duplicate reply cannot clobber
//     what the workload already wrote (the kernel answers EEXIST, and that
//     page is skipped).
//   - Every page received over the network is checked against its xxh3-64
//     hash before it is installed. A mismatch fails the migration.
//   - One demand request per page: the per-page state moves
//     missing → requested → resident with compare-and-swap, so any number of
//     threads faulting on one page produce one request and all of them are
//     woken by the one install. A fault on a page already requested by the
//     background pull is upgraded to one demand request on the urgent
//     connection, so it never waits behind bulk data.
//   - Resume: a handler made by Dial whose connections drop during
//     post-copy redials (same address, same TLS) until
//     Options.ResumeDeadline, sends the server a bitmap of the pages it
//     holds (wire.Resident) and asks again for the pages threads wait on.
//     Installed pages are never requested again; a page in flight may
//     arrive twice and is installed once (EEXIST). A connection that has
//     replies outstanding and carries no frame for Options.StallTimeout
//     is lost too (ErrStalled), and resumed the same way.
//   - Fail closed: when the migration fails (source gone past the resume
//     deadline, bad hash, protocol error) the faulting threads stay
//     blocked, Wait returns the error and Failed is closed. The handler
//     never closes its userfaultfd or unregisters the region while pages
//     are missing: Close before completion keeps both, so blocked threads
//     (and later touches of missing pages) stay blocked until the process
//     ends (OnFailure, ExitOnFailure); Release then replaces the region
//     with an inaccessible reservation before it closes the userfaultfd,
//     so they get SIGSEGV. No thread ever reads a page that did not arrive.
//
// # Goroutines
//
// The fault loop waits in one epoll on the userfaultfd and on a duplicate of
// the urgent connection's descriptor. It reads fault events in batches, sends
// demand requests on the urgent connection, reads the replies itself
// (busy-polling for at most Options.AwaitSpin while one is outstanding), and
// verifies and installs them: no goroutine hand-off on the demand path. Each
// bulk connection has one receive loop that verifies and installs pages and
// keeps at most Options.PullWindow background requests in flight on its
// connection. A connection without a descriptor (net.Pipe), or under TLS
// (Options.TLS: its bytes are records to decrypt), gets a receive loop
// goroutine for its urgent replies instead; under TLS it reads the socket
// busy-polling for Options.AwaitSpin before it parks (internal/spinconn).
// A watchdog goroutine wakes every StallTimeout/8 (at most every second)
// and compares each connection's counts of requests, replies and frames
// with what it saw before; a resume goroutine runs while a lost link is
// redialled.
//
// A goroutine blocked in a userfaultfd fault keeps its P: the runtime sees it
// as running. If as many goroutines fault at once as there are Ps, the fault
// loop cannot run until the scheduler preempts one of them (10 ms or more).
// A Go program that touches a migrated region from N goroutines should run
// with GOMAXPROCS of at least N+2; ReserveProcs does that.
//
// # Locks
//
// None on the fault path: page state is atomic. Handler.mu guards the
// failure and completion bookkeeping only; rconn.wmu serialises writes to
// one connection; remote.linkMu guards the current and the pending link
// (taken alone); link.fdMu guards the fault loop's duplicate descriptor
// against a shutdown racing its close.
package faulthandler
