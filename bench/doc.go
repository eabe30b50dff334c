// Package bench holds pagewarp's workloads and benchmark scenarios: the
// deterministic content of demo regions, workloads that touch a migrated
// region from several threads (TouchRandom, and the suite of access
// patterns behind NewWorkload: sequential, strided, interleaved,
// structured, pointer-chase, zipf, random, phases), and the scenario
// runners behind `pagewarp bench` (today: faults, the fault-latency and
// pull-throughput benchmark of the post-copy core).
//
// Everything is deterministic from a seed: a region's content is a pure
// function of (seed, page), so a target can check any page it received
// without the source, and two runs with one seed touch pages in one order.
// Scenario runners measure side by side in one run and report figures; they
// assert nothing about them (targets are judged from the output).
package bench
