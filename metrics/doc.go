// Package metrics exposes pagewarp's counters to Prometheus.
//
// Each component keeps its own lock-free counters and a Stats snapshot
// (faulthandler.Handler.Stats, pageserver.Server.Stats); the collectors here
// read that snapshot at scrape time and turn it into const metrics, so the
// components have no Prometheus dependency and pay nothing between scrapes.
// The pre-copy sender and the hybrid policy report per round instead: the
// Precopy recorder takes a precopy.RoundStats after each round and a
// hybrid.Decision after each decision.
//
// Conventions (docs/metrics.md lists every metric):
//   - namespace "pagewarp", one subsystem per component: faulthandler,
//     pageserver, precopy, hybrid;
//   - base units in names (_seconds, _bytes), _total only on counters;
//   - nothing is registered globally and there is no init: the caller
//     passes a registry (NewPrecopy) or registers what a constructor
//     returns (NewFaultHandlerCollector, NewPageServerCollector) on the
//     registry it serves;
//   - const labels given to a constructor (say {"region": "0"}) are added
//     to every metric it makes, so that several handlers or servers can
//     share one registry.
//
// Collectors take no locks of their own: a scrape reads the component's
// atomics one by one, so the values of one scrape may be mildly
// inconsistent with each other while the component runs (as its Stats are).
package metrics
