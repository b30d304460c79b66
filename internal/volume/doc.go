// Package volume puts one replica's data behind its persistent metadata
// (package meta's superblock, package activelog's activity log and package
// bitmap's per-peer bitmaps, laid out as docs/format/ draws them).
//
// Create writes fresh metadata (blkrep create-md), Inspect reads it
// without writing (blkrep dump-md), and Open starts a Volume for blkrepd:
// it refuses metadata that is damaged, from a newer format or for another
// volume, size or geometry, writing nothing; after an unclean shutdown it
// marks every hot extent out of sync for every peer slot and sets
// crashed-primary before serving.
//
// A Volume is an nbd.Backend. Each write claims its activity-log extents
// before it is submitted (a cold extent waits for one shared transaction,
// written by a single goroutine with the I/O outside the lock), sets the
// bits of the peers that will not receive it, and releases the extents when
// it completes (a failed write is marked for every slot first). Evicting
// an extent first makes the data written into it and the bitmap pages
// covering it durable. Close flushes the data, persists every dirty page
// and writes the clean marker.
package volume
