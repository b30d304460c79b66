package bitmap

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/bits"
)

// On-disk page geometry. Frozen: changing it changes the on-disk format
// (docs/format/bitmap.md).
const (
	PageSize     = 4096           // bytes per on-disk bitmap page
	BitsPerPage  = 1 << pageShift // 32768 bits per page
	pageShift    = 15             // log2(PageSize * 8)
	wordsPerPage = PageSize / 8   // 512 little-endian 64-bit words per page
	bytesPerWord = 8              // a word is a little-endian uint64
	wordShift    = 6              // log2(64 bits per word)
)

// Compile-time check that BitsPerPage is PageSize*8.
var _ [BitsPerPage - PageSize*8]struct{}
var _ [PageSize*8 - BitsPerPage]struct{}

// castagnoli is the CRC32C table used for pages and wire chunks. Frozen.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// NumPages returns how many PageSize pages the bitmap occupies on disk:
// ceil(NBits/BitsPerPage).
func (b *Bitmap) NumPages() uint64 {
	return (b.nbits + BitsPerPage - 1) / BitsPerPage
}

// PagesFor returns the pages holding the bits that the byte range
// [off, off+length) touches: the pages to write when the activity-log extent
// covering that range goes cold. The range is clamped to the device like
// Test; if nothing of it lies inside the device, first > last, so
// `for p := first; p <= last; p++` runs zero times.
func (b *Bitmap) PagesFor(off, length int64) (first, last uint64) {
	start, end, ok := b.clamp(off, length)
	if !ok {
		return 1, 0
	}
	fb, eb := b.touched(start, end)
	return fb >> pageShift, (eb - 1) >> pageShift
}

// DirtyPages returns, in increasing order, the pages whose bits changed since
// they were loaded or last marked clean.
func (b *Bitmap) DirtyPages() []uint64 {
	var out []uint64
	for i, ok := b.dirty.NextSet(0); ok; i, ok = b.dirty.NextSet(i + 1) {
		out = append(out, uint64(i))
	}
	return out
}

// PageDirty reports whether page i changed since it was last persisted.
func (b *Bitmap) PageDirty(i uint64) bool {
	return i < b.NumPages() && b.dirty.Test(uint(i))
}

// MarkPageClean records that page i, as returned by EncodePage, is durable.
// Pages past NumPages are ignored.
//
// If the owner releases its lock between EncodePage and the end of the
// write, bits may change in between; then call MarkPageClean right after
// EncodePage (under the lock) and MarkPageDirty if the write fails, so a
// change made during the write is never forgotten.
func (b *Bitmap) MarkPageClean(i uint64) {
	if i < b.NumPages() {
		b.dirty.Clear(uint(i))
	}
}

// MarkPageDirty forces page i to be written again (for example after a failed
// write). Pages past NumPages are ignored.
func (b *Bitmap) MarkPageDirty(i uint64) {
	if i < b.NumPages() {
		b.dirty.Set(uint(i))
	}
}

// EncodePage writes page i in its on-disk form into dst[:PageSize] (it
// allocates if cap(dst) < PageSize) and returns that slice: PageSize bytes of
// little-endian 64-bit words, bit j of the page being bit j%64 of word j/64;
// bits past NBits are zero. It does not change the page's dirty state (see
// MarkPageClean). For i >= NumPages it returns nil.
func (b *Bitmap) EncodePage(i uint64, dst []byte) []byte {
	if i >= b.NumPages() {
		return nil
	}
	if cap(dst) < PageSize {
		dst = make([]byte, PageSize)
	}
	dst = dst[:PageSize]
	// Bit j of the page is bit j%8 of byte j/8: the words are little-endian.
	switch p := b.bits.chunks[i]; {
	case p == nil:
		clear(dst)
	case p == full:
		n := b.bits.chunkLen(i)
		fillOnes(dst[:n/8])
		clear(dst[n/8:])
		if n%8 != 0 {
			dst[n/8] = 1<<(n%8) - 1
		}
	case p.w != nil:
		for j, w := range p.w {
			binary.LittleEndian.PutUint64(dst[j*bytesPerWord:], w)
		}
	default:
		clear(dst)
		for _, o := range p.pos {
			dst[o>>3] |= 1 << (o & 7)
		}
	}
	return dst
}

// fillOnes sets every byte of p to 0xff, doubling what is done with copy.
func fillOnes(p []byte) {
	if len(p) == 0 {
		return
	}
	p[0] = 0xff
	for n := 1; n < len(p); n *= 2 {
		copy(p[n:], p[:n])
	}
}

// PageChecksum returns the CRC32C (Castagnoli) of an encoded page. Where the
// checksums are stored is the metadata package's business.
func PageChecksum(page []byte) uint32 {
	return crc32.Checksum(page, castagnoli)
}

// LoadPage merges page i read from disk into the bitmap (OR: bits already set
// in memory, for example by activity-log recovery, stay set).
//
// checksumOK says whether the page passed its checksum. If it did not (a torn
// or corrupt write), data is ignored and every bit of the page is set: the
// whole region it covers will be resynced, which is always safe. Such a page
// becomes dirty so the next flush rewrites it with a valid checksum.
//
// A page that passed its checksum must be exactly PageSize bytes with every
// bit past NBits zero; otherwise LoadPage returns ErrCorrupt and changes
// nothing (the caller decides whether to refuse the volume or to reload with
// checksumOK false). After a successful load the page is clean if memory now
// equals data, dirty otherwise. i >= NumPages returns ErrRange.
func (b *Bitmap) LoadPage(i uint64, data []byte, checksumOK bool) error {
	np := b.NumPages()
	if i >= np {
		return fmt.Errorf("%w: page %d of %d", ErrRange, i, np)
	}
	first := i << pageShift
	if !checksumOK {
		b.setBits(first, min(first+BitsPerPage, b.nbits))
		b.dirty.Set(uint(i))
		return nil
	}
	if len(data) != PageSize {
		return fmt.Errorf("%w: page %d is %d bytes, want %d", ErrCorrupt, i, len(data), PageSize)
	}
	// Decode and validate everything before changing anything.
	var v words
	var n uint64 // bits set in data
	validBits := b.bits.chunkLen(i)
	for j := range v {
		w := binary.LittleEndian.Uint64(data[j*bytesPerWord:])
		var past uint64 // bits of w that lie past NBits
		switch lo := uint64(j) << wordShift; {
		case lo >= validBits:
			past = w
		case lo+64 > validBits:
			past = w &^ (1<<(validBits-lo) - 1)
		}
		if past != 0 {
			bit := first + uint64(j)<<wordShift + uint64(bits.TrailingZeros64(past))
			return fmt.Errorf("%w: page %d has bit %d set, past the last bit %d", ErrCorrupt, i, bit, b.nbits-1)
		}
		v[j] = w
		n += uint64(bits.OnesCount64(w))
	}
	b.count += b.bits.or(i, &v, n)
	// Memory now holds every bit of data; it equals data when it holds no
	// more bits than data.
	if b.bits.ones(i) == n {
		b.dirty.Clear(uint(i))
	} else {
		b.dirty.Set(uint(i))
	}
	return nil
}
