// Package protocol will hold the replication state machine (roles, disk
// and connection states, epochs and barriers) and its wire messages; it
// holds today the sync decision over generation identifiers.
//
// Decide (syncdecide.go) compares two replicas' generations at the
// handshake in the fixed rule order of REFERENCE.md section 3 and names the
// rule that fired; NewCurrent and FinishSync are the generation transitions
// the daemon applies (lazy rotation on the first write without the peer,
// and the end of a resync). The tests check Decide exhaustively for
// symmetry over a small universe of identifiers and drive two model
// replicas through seeded random histories against the truth (who holds
// writes the other lacks).
//
// It is pure in the style of etcd's raft: events in, work out, time only as
// ticks. Built in the replication issue (#4).
package protocol
