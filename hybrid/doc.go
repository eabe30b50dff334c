// Package hybrid decides, after each pre-copy round, what a migration does next: run another
// round, stop the workload and copy what is left (stop-and-copy), or stop it only long enough to
// send the invalidations and let post-copy fetch the rest (switch). docs/hybrid.md gives every
// policy's model with its formula.
//
// It is pure decision logic: no I/O, no clock, no goroutines. A Policy's inputs are the Env and
// the Rounds measured so far; its output is a Decision that carries its reason as one sentence
// and the figures that sentence cites. The pre-copy source, the benchmark runner and the QEMU
// switch controller all ask the same policies, and tests replay recorded round histories
// against golden files (testdata/).
//
// # Policies
//
//   - precopy: classic pre-copy, stop-and-copy once the predicted downtime fits the budget.
//   - postcopy: switch before any round.
//   - traditional: one full round, then switch (libvirt's postcopy-after-precopy).
//   - intelligent: switch once a round no longer shrinks what the target lacks (seed 000).
//   - wws: a linear regression over the writable-working-set history says whether and when
//     the downtime fits (seed 003).
//   - adaptive: the plan of least predicted time plus post-copy stall within the budget.
//
// # Invariants
//
//   - Decide depends only on its arguments: the same Env and rounds give the same Decision, and
//     it neither keeps nor modifies the rounds slice.
//   - Every Decision has a non-empty Reason, and every figure the Reason quotes is in Numbers
//     under a key whose suffix names its unit (_ms, _bytes_s, _pages_s, _pages, _pct).
//     Numbers holds finite values only.
//   - Decision.Converged is false only when a policy gave up: it reached Env.MaxRounds without
//     meeting its own criterion (or, for adaptive, no plan meets the budget).
//   - A round with no dirty page and no pages remaining means nothing is left: every policy but
//     postcopy stops and copies (postcopy always switches; with nothing missing the two are
//     the same).
//
// # Concurrency
//
// Policies are values with no mutable state: one Policy may be used from many goroutines.
package hybrid
