// Package store is the local backing store of a volume: a regular file or
// a block device accessed with pread/pwrite, made durable with fdatasync.
//
// It implements the nbd.Backend interface and its optional extensions
// (FUA writes with RWF_DSYNC, TRIM with hole punching or BLKDISCARD, write
// zeroes with fallocate, CACHE with readahead, allocation extents with
// SEEK_DATA/SEEK_HOLE).
//
// Durability rules it guarantees:
//
//   - Flush returns only after an fdatasync that *started* after Flush was
//     called has completed, so every write that returned before the call is
//     on stable storage. Concurrent flushes share one fdatasync.
//   - A failed fdatasync (or a failed RWF_DSYNC write, or EIO from a write)
//     is sticky: the store is marked failed, OnFail is called once, and
//     every later write and flush fails with ErrFailed. A later successful
//     fsync proves nothing, because the kernel may have dropped the dirty
//     pages that failed to reach the disk.
//
// It must not: cache data itself, reorder anything (callers order
// overlapping writes), or log (failures go to the OnFail callback).
//
// Example:
//
//	f, err := store.Open("/srv/r0.img", 256<<20, store.Options{Create: true})
//	if err != nil { ... }
//	defer f.Close()
//	f.WriteAt(buf, 0)
//	f.Flush()
package store
