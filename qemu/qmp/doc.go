// Package qmp is a client for the QEMU Machine Protocol over a unix socket: the greeting and
// capabilities negotiation, commands matched to their replies by id, asynchronous events, QMP
// errors as *Error, deadlines from the context; and typed helpers for the migration commands the
// QEMU integration uses (capabilities, parameters, migrate, migrate-start-postcopy,
// query-migrate, the RAM block list, pmemsave, stop/cont).
//
// # Invariants
//
//   - A message from QEMU is one line of JSON (QEMU never pretty-prints on a -qmp socket unless
//     asked). A line longer than MaxLine is an error that closes the client; nothing is
//     allocated beyond it. decode never panics on any input (FuzzDecode).
//   - Replies are matched by the id the client put in the command ("pw-N"); a reply with an
//     unknown or missing id is counted and dropped (QEMU sends none), events are queued.
//   - When the connection ends, every pending and later Execute returns an error wrapping
//     ErrClosed and the cause.
//
// # Concurrency
//
// A Client is safe for concurrent use: one goroutine reads the socket; Execute serialises
// writes. Lock order: Client.wmu before Client.mu.
package qmp
