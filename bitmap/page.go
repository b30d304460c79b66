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

// pageWords returns the words of page i that exist in memory; the last page
// may have fewer than wordsPerPage. i must be < NumPages.
func (b *Bitmap) pageWords(i uint64) []uint64 {
	w := b.bits.Words()
	lo := i * wordsPerPage
	hi := min(lo+wordsPerPage, uint64(len(w)))
	return w[lo:hi]
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
	words := b.pageWords(i)
	for j, w := range words {
		binary.LittleEndian.PutUint64(dst[j*bytesPerWord:], w)
	}
	clear(dst[len(words)*bytesPerWord:])
	return dst
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
	words := b.pageWords(i)
	// Validate everything before changing anything.
	validBits := b.nbits - first // bits of this page inside the device, if < BitsPerPage
	for j := range wordsPerPage {
		w := binary.LittleEndian.Uint64(data[j*bytesPerWord:])
		var past uint64 // bits of w that lie past NBits
		switch {
		case j >= len(words):
			past = w
		case uint64(j+1)<<wordShift > validBits:
			past = w &^ (1<<(validBits&63) - 1)
		}
		if past != 0 {
			bit := first + uint64(j)<<wordShift + uint64(bits.TrailingZeros64(past))
			return fmt.Errorf("%w: page %d has bit %d set, past the last bit %d", ErrCorrupt, i, bit, b.nbits-1)
		}
	}
	same := true
	for j := range words {
		w := binary.LittleEndian.Uint64(data[j*bytesPerWord:])
		if add := w &^ words[j]; add != 0 {
			words[j] |= add
			b.count += uint64(bits.OnesCount64(add))
		}
		if words[j] != w {
			same = false
		}
	}
	if same {
		b.dirty.Clear(uint(i))
	} else {
		b.dirty.Set(uint(i))
	}
	return nil
}
