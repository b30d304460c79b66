// Package protocol holds the pure parts of replication: the wire format
// and its strict decoders (wire.go, messages.go; docs/format/wire.md), the
// HMAC challenge-response (auth.go), the split-brain policies
// (splitbrain.go), the sync decision over generation identifiers, and
// the Primary's epoch and ack bookkeeping (epochs.go). The connections,
// queues and goroutines that use them are internal/repl.
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
// Epochs (epochs.go) is one link's write-order bookkeeping on the Primary:
// it numbers writes and epochs, says when an epoch closes (FUA,
// MaxWrites, Flush, or a Tick for age or activity-log waiters) and so when
// to send a barrier, and turns barrier acks, write acks and a lost
// connection into work for the caller: spans whose activity-log holds to
// drop, spans to mark out of sync, writes and flush waiters to complete or
// fail. Its tests are scenarios in testdata/epochs/*.txt (a line per
// command and its expected output; -protocol.rewrite regenerates them), a
// seeded model test and FuzzEpochs, which check that every write is
// released exactly once, never before its epoch's ack.
//
//	e := protocol.NewEpochs(protocol.EpochConfig{Protocol: 'C', MaxWrites: 2048})
//	s := e.Write(off, n, fua, now) // send MsgData{Seq: s.Seq}; if s.Barrier != 0, MsgBarrier
//	err := e.WriteAck(seq, now)    // on MsgWriteAck; nil: complete write seq
//	a, err := e.BarrierAck(num, now)
//	// unhold a.Release, complete the flush waiters in a.Wake
//	a = e.Lost() // mark and unhold a.Mark, fail a.Fail and a.FailWaiters
//
// It is pure in the style of etcd's raft: events in, work out, time only as
// ticks. Built in the replication issue (#4).
package protocol
