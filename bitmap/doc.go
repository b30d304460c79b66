// Package bitmap is the per-peer dirty-region bitmap: one bit per
// BytesPerBit bytes of the device (4 KiB by default, any power of two up to
// 1 MiB) meaning "this region may differ from that peer". Resync after an
// outage copies exactly the regions whose bits are set.
//
// # What it does
//
//   - Range arithmetic on byte ranges: SetRange marks every bit a write
//     touches; ClearRange clears only bits whose whole region a completed
//     resync or acknowledged write covered (a partly covered region may still
//     differ); the last bit covers the shorter tail of a device whose size is
//     not a multiple of BytesPerBit. Test, Count, DirtyBytes, NextSet and Runs
//     answer queries; Merge ORs a second bitmap of the same geometry in.
//   - Lazy on-disk pages: the bits are cut into PageSize (4096-byte) pages and
//     the bitmap remembers which pages changed since they were persisted.
//     The owner writes a page (EncodePage, then MarkPageClean) when the
//     activity-log extent covering it goes cold (PagesFor), on demote and on
//     clean shutdown, so marking a write costs no synchronous I/O. LoadPage
//     reads a page back; a page that failed its checksum loads as all set.
//   - A compact wire encoding for resync: EncodeChunk cuts the bitmap into
//     chunks of bounded size holding run lengths; MergeChunk validates a chunk
//     against the receiver's geometry and ORs it in.
//
// # What it must not do
//
// It is pure: no goroutines, no files, no network, no clock, no logging. It
// does no I/O at all: the metadata package decides where pages live, keeps
// their checksums and does the reads, writes and syncs; the protocol package
// frames and sends the chunks. Errors are returned, wrapping the sentinels
// below. A Bitmap is not safe for concurrent use. Invalid input never panics:
// mutating calls with a byte range outside the device return ErrRange and
// change nothing; queries (Test, PagesFor) clamp the range to the device;
// decoders reject malformed input with ErrCorrupt, ErrChecksum, ErrVersion
// or ErrMismatch, leave the bitmap unchanged and never allocate according to
// what the input says.
//
// # Memory
//
// What is set, not the device size. The bits are held per on-disk page
// (32768 bits): a clear page costs one pointer, an all-set page one pointer
// to a shared sentinel, a page with few bits set (up to 1024) a 48-byte
// header and 2 bytes per bit, a page with more its 4 KiB. A clean or full
// 1 TiB bitmap at 4 KiB per bit takes about 65 KiB (8 bytes per page plus
// the page-dirty set), a few thousand scattered dirty bits add tens of bytes
// each; the worst case, every page holding many bits without being full,
// is a little over NBits/8 bytes, what a plain bitset takes (32 MiB per TiB
// at 4 KiB per bit). Runs, NextSet, Test and EncodeChunk pass a clear or
// full page with one pointer test: walking a clean 1 TiB bitmap is 8192 of
// them.
//
// # Formats
//
// A page on disk is 4096 bytes: 512 little-endian uint64 words, bit i of the
// page is bit i%64 of word i/64, page p holds bits [p*32768, (p+1)*32768),
// bits past NBits are zero; PageChecksum is CRC32C. A wire chunk is a 36-byte
// header (magic "BMRL", version 1, a last-chunk flag, bytes per bit, payload
// length, nbits, start bit, CRC32C) followed by uvarint run lengths,
// alternately clear and set, starting with a clear run. Both are drawn and
// specified in docs/format/bitmap.md; they are frozen.
//
// # Example
//
//	bm, err := bitmap.New(sizeBytes, bitmap.DefaultBytesPerBit)
//	if err != nil {
//		return err
//	}
//	// A write to the primary while the peer is away:
//	if _, err := bm.SetRange(off, length); err != nil {
//		return err
//	}
//	// Resync: copy every dirty region, then clear what was copied.
//	bm.Runs(0, func(startBit, n uint64) bool {
//		off, length := bm.BitRegion(startBit, n)
//		copyToPeer(off, length)
//		return true
//	})
//	// The activity-log extent [extOff, extOff+extLen) goes cold: persist
//	// the pages holding its bits before dropping it from the log.
//	first, last := bm.PagesFor(extOff, extLen)
//	for p := first; p <= last; p++ {
//		if bm.PageDirty(p) {
//			buf = bm.EncodePage(p, buf)
//			writePage(p, buf, bitmap.PageChecksum(buf))
//			bm.MarkPageClean(p)
//		}
//	}
package bitmap
