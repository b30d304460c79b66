// Package repl replicates a volume to its peers: one authenticated TCP
// connection per volume and peer, the sync decision at the handshake,
// the replicated write path (protocols A, B and C with epochs), the
// Secondary's in-order apply, and the bitmap-driven resync.
//
// A Replica wraps a volume.Volume and is the volume's nbd.Backend. Each
// peer has a link. The node with the smaller name dials, the other
// accepts (Listener routes an accepted connection to its Replica by the
// volume named in the Hello), so a pair never races two connections.
//
// Ordering rules (docs/ARCHITECTURE.md, "Replication"):
//   - A write claims its activity-log extents, then its byte range in the
//     conflict set (overlapping writes and resync reads are serialised),
//     is queued for every connected peer, then written locally. Queue
//     order is wire order is the Secondary's apply order.
//   - Writes are grouped in epochs; FLUSH, FUA, max_epoch_writes, a
//     second of age and activity-log waiters close one with a barrier.
//     The bookkeeping (which write is in which epoch, what an ack
//     completes, what a lost link leaves to mark) is protocol.Epochs, a
//     pure state machine tested by scenario files; the session only does
//     the I/O it returns. The Secondary flushes at every barrier before
//     it acknowledges it and before it applies anything later, so its
//     image is crash-consistent at every instant.
//   - A write's extents stay held (cannot go cold) until its epoch is
//     acknowledged. When the link fails, every write of an unacknowledged
//     epoch is marked out of sync for that peer before its hold is
//     dropped: its outcome there is unknown.
//   - A write the peer did not get is marked in the peer's bitmap, and the
//     first one gives the data a new generation (lazy rotation) before it
//     is acknowledged.
package repl
