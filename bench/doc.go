// Package bench holds pagewarp's workloads and benchmark scenarios:
//
//   - the deterministic content of demo regions;
//   - read workloads that touch a migrated region from several threads
//     (TouchRandom, and the suite of access patterns behind NewWorkload:
//     sequential, strided, interleaved, structured, pointer-chase, zipf,
//     random, phases);
//   - write workloads (Mutator: silent25/50/75, phases, zerodup, dup8,
//     runaway) that dirty a region while pre-copy runs, pause at a step
//     boundary and resume on another copy of the region with the same final
//     result;
//   - links between a source and a target (SetupLink: loopback, a veth pair
//     between two network namespaces shaped with tc, or an in-process
//     shaper);
//   - the scenario runners behind `pagewarp bench` (faults, prefetch,
//     precopy, hybrid) and `pagewarp migrate` (Migrate, RunMigrateSource,
//     RunMigrateTarget: a live migration between two processes).
//
// Everything is deterministic from a seed: a region's content is a pure
// function of (seed, page), and a mutator's memory after S steps a pure
// function of (seed, S), so a target can check what it received without
// the source. Scenario runners measure side by side in one run and report
// figures; they assert nothing about them (targets are judged from the
// output).
package bench
