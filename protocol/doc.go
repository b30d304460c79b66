// Package protocol holds the pure parts of replication: the wire format
// and its strict decoders (wire.go, messages.go; docs/format/wire.md), the
// HMAC challenge-response (auth.go), the split-brain policies
// (splitbrain.go) and the sync decision over generation identifiers. The
// connection and epoch machinery that uses them is internal/repl.
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
