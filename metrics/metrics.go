package metrics

import "github.com/prometheus/client_golang/prometheus"

// namespace is the first part of every metric name.
const namespace = "pagewarp"

// Subsystems, one per component.
const (
	subsystemFaultHandler = "faulthandler"
	subsystemPageServer   = "pageserver"
	subsystemPrecopy      = "precopy"
	subsystemHybrid       = "hybrid"
)

// newDesc returns the descriptor of pagewarp_<subsystem>_<name> with the
// constant labels and the variable label names given.
func newDesc(subsystem, name, help string, constLabels prometheus.Labels, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, name), help, labels, constLabels)
}

// constMetric is one value of a collector: a descriptor, how to read it,
// and its label values.
type constMetric struct {
	desc   *prometheus.Desc
	typ    prometheus.ValueType
	value  float64
	labels []string
}

// emit sends m on ch.
func (m constMetric) emit(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value, m.labels...)
}

// boolValue is 1 for true, 0 for false.
func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
