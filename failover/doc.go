// Package failover decides when a secondary promotes itself, with terms,
// votes and leases over a memberlist gossip layer (docs/failover.md).
//
// Built so far: the voter's rules (Voter: at most one node elected per
// term, no vote while the primary's lease runs, outdated or stale
// candidates refused), the gossiped node state (NodeMeta). The candidate
// and primary sides, the daemon wiring and the witness mode come next
// (issue 5); nothing outside this package uses it yet.
package failover
