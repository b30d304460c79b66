// Package failover will hold the promotion decider (pure, driven by
// membership events, replication state and ticks) and its adapter to
// hashicorp/memberlist with a witness node for quorum.
//
// Built in the failover issue (#5); until then the package is empty and
// nothing imports it.
package failover
