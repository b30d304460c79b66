// Command blkrepd is the blkrep daemon: it serves a node's volumes over NBD
// and attaches their /dev/nbdX devices.
//
//	blkrepd --config /etc/blkrep/cluster.toml --node alpha [--log-format text|json] [--log-level info]
//
// main only parses flags, builds the logger (logrus through its slog
// handler), and runs internal/daemon until SIGTERM or SIGINT, then shuts
// down cleanly: in-flight requests finish, devices are detached, sockets
// removed.
package main
