// Command blkrep is the operator's CLI, a thin client of blkrepd's control
// API (internal/control, docs/control-api.md) on the node's control socket.
//
//	blkrep --config FILE --node NAME status [--json]
//	blkrep primary r0 [--force]          # also secondary, connect, disconnect, invalidate
//	blkrep resync r0 [--full | --discard-my-data] [--wait]
//	blkrep verify r0 --wait
//	blkrep events [--json]
//
// --node may be left out when the configuration has a single node;
// --socket talks to a control socket directly, without a configuration.
// Exit status: 0 done, 1 refused or failed, 2 usage error (unknown
// command, flag or volume), 130 interrupted while waiting (--wait).
package main
