package bitmap

import (
	"errors"
	"fmt"
	"math"
	"math/bits"

	"github.com/bits-and-blooms/bitset"
)

// Geometry limits. DefaultBytesPerBit is what create-md uses unless told
// otherwise; the allowed range matches DRBD 9.3 (4 KiB .. 1 MiB per bit).
const (
	DefaultBytesPerBit = 4096
	MinBytesPerBit     = 4096
	MaxBytesPerBit     = 1 << 20

	// MaxBits caps the number of bits (2^40 bits, 4 PiB of device at
	// 4 KiB per bit: 256 MiB of chunk table even when clear, 128 GiB if
	// every page held mixed bits) so that New refuses absurd geometries
	// with an error instead of failing inside the allocator.
	MaxBits = 1 << 40
)

// Sentinel errors. Every error returned by this package wraps one of them;
// branch with errors.Is, never on the message.
var (
	// ErrGeometry: New was given a size or granularity it cannot represent.
	ErrGeometry = errors.New("bitmap: invalid geometry")
	// ErrMismatch: two bitmaps (or a bitmap and a wire chunk) do not describe
	// the same device with the same granularity, so they cannot be merged.
	ErrMismatch = errors.New("bitmap: geometry mismatch")
	// ErrRange: a byte range, bit index or page index lies outside the device.
	// Nothing was changed.
	ErrRange = errors.New("bitmap: out of range")
	// ErrCorrupt: a page or wire chunk is malformed. Nothing was changed.
	ErrCorrupt = errors.New("bitmap: corrupt data")
	// ErrChecksum: a wire chunk failed its CRC32C. Errors carrying it also
	// match ErrCorrupt.
	ErrChecksum = errors.New("bitmap: checksum mismatch")
	// ErrVersion: a wire chunk has a format version this code does not know
	// (the peer is newer). Nothing was changed.
	ErrVersion = errors.New("bitmap: unsupported format version")
)

// Bitmap is the dirty-region bitmap for one peer: bit i set means the bytes
// [i*BytesPerBit, min((i+1)*BytesPerBit, Size)) may differ from that peer.
// The last bit covers a shorter tail region when Size is not a multiple of
// BytesPerBit.
//
// Besides the bits it tracks which on-disk pages (PageSize bytes each) have
// changed since they were last persisted; see EncodePage.
//
// Memory follows what is set, not the device size: see "Memory" in the
// package documentation.
//
// A Bitmap is not safe for concurrent use; the owner serialises access.
// The zero value is not usable: call New.
type Bitmap struct {
	bits      sparse         // the bits, one chunk per on-disk page (sparse.go)
	dirty     *bitset.BitSet // one bit per page: changed since last persisted
	sizeBytes int64
	bpb       uint32
	shift     uint // log2(bpb)
	nbits     uint64
	count     uint64 // number of set bits, kept in step with bits
}

// New returns an all-clear bitmap for a device of sizeBytes bytes at one bit
// per bytesPerBit bytes (a power of two in [MinBytesPerBit, MaxBytesPerBit]).
// The bitmap has ceil(sizeBytes/bytesPerBit) bits. Every page starts clean:
// the in-memory state matches an all-zero on-disk bitmap.
func New(sizeBytes int64, bytesPerBit uint32) (*Bitmap, error) {
	if bytesPerBit < MinBytesPerBit || bytesPerBit > MaxBytesPerBit || bytesPerBit&(bytesPerBit-1) != 0 {
		return nil, fmt.Errorf("%w: %d bytes per bit is not a power of two in [%d, %d]",
			ErrGeometry, bytesPerBit, MinBytesPerBit, MaxBytesPerBit)
	}
	if sizeBytes <= 0 {
		return nil, fmt.Errorf("%w: device size %d must be positive", ErrGeometry, sizeBytes)
	}
	shift := uint(bits.TrailingZeros32(bytesPerBit))
	nbits := uint64(sizeBytes) >> shift
	if uint64(sizeBytes)&(uint64(bytesPerBit)-1) != 0 {
		nbits++
	}
	if nbits > MaxBits || nbits > uint64(math.MaxInt) {
		return nil, fmt.Errorf("%w: device size %d at %d bytes per bit needs %d bits, more than the %d allowed (use a coarser granularity)",
			ErrGeometry, sizeBytes, bytesPerBit, nbits, uint64(MaxBits))
	}
	npages := (nbits + BitsPerPage - 1) / BitsPerPage
	b := &Bitmap{
		bits:      newSparse(nbits),
		dirty:     bitset.New(uint(npages)),
		sizeBytes: sizeBytes,
		bpb:       bytesPerBit,
		shift:     shift,
		nbits:     nbits,
	}
	if uint64(len(b.bits.chunks)) != npages || uint64(b.dirty.Len()) != npages {
		return nil, fmt.Errorf("%w: cannot allocate %d bits", ErrGeometry, nbits)
	}
	return b, nil
}

// Size returns the device size in bytes the bitmap describes.
func (b *Bitmap) Size() int64 { return b.sizeBytes }

// BytesPerBit returns the granularity: bytes of device per bit.
func (b *Bitmap) BytesPerBit() uint32 { return b.bpb }

// NBits returns the number of bits, ceil(Size/BytesPerBit).
func (b *Bitmap) NBits() uint64 { return b.nbits }

// Count returns the number of set bits.
func (b *Bitmap) Count() uint64 { return b.count }

// DirtyBytes returns the number of device bytes covered by set bits: what a
// resync from this bitmap would transfer. The tail bit counts its real
// (possibly shorter) size, so DirtyBytes never exceeds Size.
func (b *Bitmap) DirtyBytes() int64 {
	n := int64(b.count) << b.shift
	if b.bits.test(b.nbits - 1) {
		n -= int64(b.nbits)<<b.shift - b.sizeBytes
	}
	return n
}

// checkRange validates a byte range for the mutating operations: it must
// satisfy 0 <= off, 0 <= length and off+length <= Size (checked without
// overflow).
func (b *Bitmap) checkRange(op string, off, length int64) error {
	if off < 0 || length < 0 || off > b.sizeBytes || length > b.sizeBytes-off {
		return fmt.Errorf("%w: %s offset %d length %d on a device of %d bytes",
			ErrRange, op, off, length, b.sizeBytes)
	}
	return nil
}

// clamp intersects [off, off+length) with [0, Size) for the queries, which
// accept any int64 input. ok is false when the intersection is empty.
func (b *Bitmap) clamp(off, length int64) (start, end int64, ok bool) {
	if length <= 0 || off >= b.sizeBytes {
		return 0, 0, false
	}
	if off > math.MaxInt64-length {
		end = math.MaxInt64
	} else {
		end = off + length
	}
	start = max(off, 0)
	end = min(end, b.sizeBytes)
	return start, end, start < end
}

// touched returns the bits [first, end) that a non-empty byte range
// [start, endB) within the device touches.
func (b *Bitmap) touched(start, endB int64) (first, end uint64) {
	return uint64(start) >> b.shift, uint64(endB-1)>>b.shift + 1
}

// SetRange marks every bit whose region overlaps [off, off+length) and
// returns how many of them were newly set. An empty range (length 0) is
// valid and sets nothing. A range that is negative or reaches past Size
// returns ErrRange and changes nothing: a caller that tries to mark bytes
// outside the device has a bug worth hearing about.
func (b *Bitmap) SetRange(off, length int64) (uint64, error) {
	if err := b.checkRange("set", off, length); err != nil {
		return 0, err
	}
	if length == 0 {
		return 0, nil
	}
	first, end := b.touched(off, off+length)
	return b.setBits(first, end), nil
}

// ClearRange clears every bit whose whole region lies inside
// [off, off+length) and returns how many were cleared. A bit whose region is
// only partly covered stays as it is: the uncovered part may still differ.
// The last bit's region ends at Size, so a range reaching Size clears it even
// when Size is not a multiple of BytesPerBit. Empty ranges and ranges too
// small to cover any whole region clear nothing. Invalid ranges return
// ErrRange and change nothing.
func (b *Bitmap) ClearRange(off, length int64) (uint64, error) {
	if err := b.checkRange("clear", off, length); err != nil {
		return 0, err
	}
	if length == 0 {
		return 0, nil
	}
	end := off + length
	mask := int64(b.bpb) - 1
	first := uint64(off) >> b.shift
	if off&mask != 0 {
		first++ // round up: the first bit is only partly covered
	}
	last := uint64(end) >> b.shift // round down
	if end == b.sizeBytes {
		last = b.nbits // the tail bit ends at Size
	}
	if first >= last {
		return 0, nil
	}
	return b.clearBits(first, last), nil
}

// Test reports whether any bit touching [off, off+length) is set. It accepts
// any int64 input: the range is clamped to the device, and an empty range or
// one entirely outside the device reports false (there is nothing there that
// could differ).
func (b *Bitmap) Test(off, length int64) bool {
	start, end, ok := b.clamp(off, length)
	if !ok {
		return false
	}
	first, last := b.touched(start, end)
	_, found := b.bits.nextSet(first, last)
	return found
}

// SetBit sets bit i. It returns ErrRange if i >= NBits.
func (b *Bitmap) SetBit(i uint64) error {
	if i >= b.nbits {
		return fmt.Errorf("%w: bit %d of %d", ErrRange, i, b.nbits)
	}
	b.setBits(i, i+1)
	return nil
}

// ClearBit clears bit i. It returns ErrRange if i >= NBits.
func (b *Bitmap) ClearBit(i uint64) error {
	if i >= b.nbits {
		return fmt.Errorf("%w: bit %d of %d", ErrRange, i, b.nbits)
	}
	b.clearBits(i, i+1)
	return nil
}

// TestBit reports whether bit i is set; bits past NBits are never set.
func (b *Bitmap) TestBit(i uint64) bool {
	return i < b.nbits && b.bits.test(i)
}

// NextSet returns the first set bit at or after fromBit, and false if there
// is none.
func (b *Bitmap) NextSet(fromBit uint64) (uint64, bool) {
	if fromBit >= b.nbits {
		return 0, false
	}
	return b.bits.nextSet(fromBit, b.nbits)
}

// Runs calls fn for each maximal run of set bits at or after fromBit, in
// increasing order, until fn returns false. A run containing fromBit is
// reported from fromBit on. fn must not modify b.
func (b *Bitmap) Runs(fromBit uint64, fn func(startBit, nbits uint64) bool) {
	for fromBit < b.nbits {
		s, ok := b.bits.nextSet(fromBit, b.nbits)
		if !ok {
			return
		}
		e, ok := b.bits.nextClear(s, b.nbits)
		if !ok {
			e = b.nbits
		}
		if !fn(s, e-s) {
			return
		}
		fromBit = e
	}
}

// BitRegion returns the byte range covered by n bits starting at startBit,
// clipped to the device: the range a resync of that run must copy. Bits past
// the end contribute nothing (length 0).
func (b *Bitmap) BitRegion(startBit, n uint64) (off, length int64) {
	if startBit >= b.nbits {
		return b.sizeBytes, 0
	}
	n = min(n, b.nbits-startBit)
	off = int64(startBit << b.shift)
	end := min(int64((startBit+n)<<b.shift), b.sizeBytes)
	return off, end - off
}

// Merge ORs other into b: afterwards every bit set in other is set in b.
// Both must have the same Size and BytesPerBit (ErrMismatch otherwise, and
// b is unchanged). Pages that gain bits become dirty.
func (b *Bitmap) Merge(other *Bitmap) error {
	if other == nil {
		return fmt.Errorf("%w: merge with a nil bitmap", ErrMismatch)
	}
	if other.sizeBytes != b.sizeBytes || other.bpb != b.bpb {
		return fmt.Errorf("%w: merge %d bytes at %d bytes per bit into %d bytes at %d bytes per bit",
			ErrMismatch, other.sizeBytes, other.bpb, b.sizeBytes, b.bpb)
	}
	var buf words
	for c, q := range other.bits.chunks {
		var added uint64
		switch {
		case q == nil:
			continue
		case q == full:
			added = b.bits.set(uint64(c), 0, b.bits.chunkLen(uint64(c)))
		default:
			added = b.bits.or(uint64(c), other.bits.wordsOf(uint64(c), &buf), uint64(q.ones))
		}
		if added > 0 {
			b.count += added
			b.dirty.Set(uint(c))
		}
	}
	return nil
}

// Clone returns an independent copy of b, including which pages are dirty.
func (b *Bitmap) Clone() *Bitmap {
	c := *b
	c.bits = b.bits.clone()
	c.dirty = b.dirty.Clone()
	return &c
}

// Equal reports whether b and other have the same geometry and the same bits
// set. Which pages are dirty does not matter.
func (b *Bitmap) Equal(other *Bitmap) bool {
	if b == nil || other == nil {
		return b == other
	}
	return b.sizeBytes == other.sizeBytes && b.bpb == other.bpb &&
		b.count == other.count && b.bits.equal(&other.bits)
}

// setBits sets bits [first, end) (end <= nbits), page by page so that only
// pages that actually change become dirty, and returns how many were newly
// set.
func (b *Bitmap) setBits(first, end uint64) uint64 {
	var n uint64
	for first < end {
		c := first >> pageShift
		base := c << pageShift
		stop := min(end, base+BitsPerPage)
		if added := b.bits.set(c, first-base, stop-base); added > 0 {
			b.dirty.Set(uint(c))
			n += added
		}
		first = stop
	}
	b.count += n
	return n
}

// clearBits clears bits [first, end) (end <= nbits) page by page and returns
// how many were set before.
func (b *Bitmap) clearBits(first, end uint64) uint64 {
	var n uint64
	for first < end {
		c := first >> pageShift
		base := c << pageShift
		stop := min(end, base+BitsPerPage)
		if removed := b.bits.clear(c, first-base, stop-base); removed > 0 {
			b.dirty.Set(uint(c))
			n += removed
		}
		first = stop
	}
	b.count -= n
	return n
}
