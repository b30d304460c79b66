// Package activelog is the activity log: the set of hot 4 MiB extents
// (ExtentShift = 22) in which writes may be in flight or unacknowledged by a
// peer, kept in a table of N slots (default 1237, about 4.8 GiB) with an LRU
// among them, and persisted as a ring of 4 KiB checksummed transaction
// records. After a crash of the primary the recovered hot set is what gets
// resynced, so resync costs at most the activity log, not the device.
//
// # What it does
//
//   - Begin claims the extents of a write and returns a Ticket. If every
//     extent is hot the ticket is ready and the write may be submitted;
//     otherwise the ticket waits for a transaction making its extents hot.
//     Waiting tickets share transactions: one record serves every writer
//     that wants the same extents, and batches up to MaxUpdates of them.
//   - Prepare builds that transaction: the next sequence number, the slot
//     updates, the extents that go cold (victims in LRU order among extents
//     with no write in flight and no Hold), and the encoded record.
//   - Commit, once the record is durable, makes the extents hot and returns
//     the tickets that became ready. Abort gives it up.
//   - Release ends a ticket; Hold/Unhold pin an extent while the peer has
//     not acknowledged the epochs covering it. Pinned extents never go cold.
//   - MarkClean builds the clean-shutdown marker. Format initialises a ring;
//     Recover rebuilds the log from the ring's records, skipping torn and
//     corrupt ones, and says whether the newest record is a clean marker.
//
// # The ordering rule
//
// A Transaction is written in this order, like etcd/raft's Ready (persist
// before send):
//
//  1. persist the bitmap pages covering tx.Evicted, for every peer (for a
//     clean marker: every dirty page) — once the record is durable those
//     extents are cold, and only the bitmap remembers their differences;
//  2. write tx.Record at ring index tx.Index and make it durable;
//  3. Commit(tx) — and only then submit the writes it made ready.
//
// If the record write fails, Abort(tx): the record may be on disk anyway, so
// the log accepts no new write until a record at that sequence is committed.
//
// After Recover, unless RecoveryInfo.Clean, the caller marks every hot
// extent dirty in every peer's bitmap (and sets crashed-primary) before
// serving writes. That is not this package's job.
//
// # What it must not do
//
// It is pure: no goroutines, no files, no network, no clock, no logging
// (internal/lint enforces its imports). It never does I/O: it produces and
// consumes byte slices, and the caller reads and writes them. It reports
// everything through return values and sentinel errors. A Log is not safe
// for concurrent use: the daemon guards it with one mutex, and never holds
// that mutex across I/O.
//
// # Driving it from a daemon
//
// A sketch, with mu guarding al and cond = sync.NewCond(&mu):
//
//	// write path, per NBD write
//	mu.Lock()
//	tk, err := al.Begin(off, length) // ErrSpan: split the request
//	if !tk.Ready() {
//		kick <- struct{}{} // wake the log writer (non-blocking send)
//		for !tk.Ready() {
//			cond.Wait() // or give up: al.Release(tk)
//		}
//	}
//	mu.Unlock()
//	... write locally and to the peer ...
//	mu.Lock()
//	al.Hold(extent) for each extent whose epoch the peer has not acked yet
//	al.Release(tk)
//	wake := al.NeedsTransaction()
//	mu.Unlock()
//	if wake { kick <- struct{}{} }
//
//	// log writer goroutine: one transaction at a time
//	for range kick {
//		for {
//			mu.Lock()
//			tx, err := al.Prepare() // nil, nil: nothing waits; ErrNoVictim: wait for a kick
//			mu.Unlock()
//			if tx == nil { break }
//			err = flushBitmapPages(tx.Evicted) // first,
//			if err == nil { err = writeAndSync(ringOffset+tx.Offset(), tx.Record) } // then
//			mu.Lock()
//			if err != nil { al.Abort(tx) } else { al.Commit(tx) }
//			cond.Broadcast()
//			mu.Unlock()
//			if err != nil { ... fail the volume's disk: do not spin on a dead disk ... }
//		}
//	}
//
// The on-disk format, the recovery algorithm and the sizing rules are in
// docs/format/activity-log.md. In brief, one record:
//
//	0      4       6     8      16     20        24    28   30   32     36    40
//	| BRAL | ver 1 | type | seq  | crc  | capacity | ring | u  | k  | start | 0  | u x (slot, extent) | k x extent | zeros |
package activelog
