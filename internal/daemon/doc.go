// Package daemon wires one blkrepd node together: it reads the node's part
// of the cluster configuration, opens each local replica's backing store,
// serves it over NBD (unix sockets and TCP), attaches the configured
// /dev/nbdX through the kernel's netlink interface, answers the control
// API and, with a metrics address, serves Prometheus metrics from its own
// registry (metrics.go). It is the only place that owns goroutines, sockets, files and timers;
// the protocol packages it drives stay pure.
//
// Lifecycle: New validates and opens nothing; Start opens stores, binds
// sockets and attaches devices (undoing everything on failure); Shutdown
// detaches devices, drains NBD clients (in-flight requests finish and are
// answered), flushes and closes the stores and removes the sockets.
//
// Example:
//
//	d, err := daemon.New(cfg, "alpha", daemon.Options{Log: log})
//	if err != nil { ... }
//	if err := d.Start(); err != nil { ... }
//	<-ctx.Done()
//	d.Shutdown(context.Background())
package daemon
