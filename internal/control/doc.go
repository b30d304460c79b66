// Package control is blkrepd's control API: JSON over HTTP on a unix
// socket (the node's control_socket), and the client the blkrep CLI uses.
//
// The socket is created mode 0600: only the daemon's user (root) may talk
// to it. Endpoints (errors are {"error": "..."} with a 4xx/5xx status;
// docs/control-api.md has the details):
//
//	GET  /v1/status                     -> Status (schema "blkrep.status/v1")
//	POST /v1/volumes/{volume}/{action}  -> Reply; body: optional flags of a Request
//	GET  /v1/events                     -> newline-delimited JSON Events, streamed
//
// The Status and Event types are the stable, documented schema: fields are
// only ever added, never renamed or removed, within a schema version.
//
// It must not: know how the daemon works inside (the daemon hands it a
// Handler: a Status function, Do for actions, Subscribe for events), or
// block on I/O paths: Bus, the event publisher the daemon uses, never
// blocks; a slow event reader misses events instead.
//
//	bus := control.NewBus(64)
//	srv, err := control.ListenHandler(path, daemonHandler, log) // daemonHandler.Subscribe = bus.Subscribe
//	go srv.Serve()
//	bus.Publish(control.Event{Volume: "r0", Peer: "beta", Kind: control.EventConnection, Old: "Connecting", New: "Connected"})
package control
