// Package metrics exports a node's status as Prometheus metrics: the
// figures of `blkrep status` (roles and states, out-of-sync and
// unacknowledged bytes, resync and verify progress, activity-log and bitmap
// writes, NBD I/O counters, automatic failover's term, quorum and write
// gate, the gossip members' states) and NBD request latency histograms.
// docs/metrics.md lists every metric.
//
// The status figures are not kept twice: on each scrape the collector takes
// a fresh control.Status from the function it was given (the same snapshot
// GET /v1/status returns) and turns it into constant metrics. Only latency
// is measured here, through the hook nbd.Export.Observe.
//
// It must not: register with the global registry (the caller injects one;
// a nil one gives a nil *Metrics whose methods do nothing), serve HTTP (the
// daemon does), or slow the I/O path: a volume's Observer resolves its
// histograms once, so a request costs one array index and one Observe.
//
//	reg := prometheus.NewRegistry()
//	m, err := metrics.New(reg, "alpha", daemon.Status)
//	exp.Observe = m.Observer("r0") // before nbd.Server.AddExport(exp)
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
package metrics
