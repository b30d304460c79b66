// Command blkrep is the operator's CLI, a thin client of blkrepd's control
// API (internal/control) on the node's control socket.
//
//	blkrep --config FILE --node NAME status [--json]
//
// --node may be left out when the configuration has a single node;
// --socket talks to a control socket directly, without a configuration.
package main
