// Package protocol will hold the replication state machine (roles, disk
// and connection states, epochs and barriers, the sync-decision rules over
// generation identifiers) and its wire messages.
//
// It is pure in the style of etcd's raft: events in, work out, time only as
// ticks. Built in the replication issue (#4); until then the package is
// empty and nothing imports it.
package protocol
