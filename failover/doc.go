// Package failover decides when a secondary promotes itself, with terms,
// votes and leases over a memberlist gossip layer (docs/failover.md).
//
// Built so far: the voter's rules (Voter: at most one node elected per
// term, no vote while the primary's lease runs, outdated or stale
// candidates refused); the whole decision of one node for one volume
// (Decider: when to start an election, promotion, lease renewal, writes
// held on quorum loss, outdating peers, demotion on a newer term); the
// gossiped node state (NodeMeta). The daemon wiring, the witness mode,
// handlers and the write-path gate come next (issue 5); nothing outside
// this package uses it yet.
package failover
