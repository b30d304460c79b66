// Package control is blkrepd's control API: JSON over HTTP on a unix
// socket (the node's control_socket), and the client the blkrep CLI uses.
//
// The socket is created mode 0600: only the daemon's user (root) may talk
// to it. Endpoints (all responses are JSON; errors are
// {"error": "..."} with a 4xx/5xx status):
//
//	GET /v1/status   -> Status (schema "blkrep.status/v1", docs/control-api.md)
//
// The Status types are the stable, documented schema: fields are only
// ever added, never renamed or removed, within a schema version.
//
// It must not: know how the daemon works inside (the daemon hands it a
// function that produces a Status), or block on I/O paths.
package control
