package activelog

import "fmt"

// Extent geometry. Frozen: the ring stores extent numbers, so changing
// ExtentShift changes the meaning of every record on disk.
const (
	// ExtentShift is log2 of the extent size: extents are 4 MiB.
	ExtentShift = 22
	// ExtentSize is the size of one extent in bytes.
	ExtentSize = 1 << ExtentShift
	// MaxExtent is the largest extent number a record can hold (the next
	// value, EmptySlot, marks an empty slot). It bounds the device at
	// (MaxExtent+1) extents, just under 16 PiB.
	MaxExtent = uint64(EmptySlot) - 1
)

// ExtentOf returns the extent holding byte offBytes. offBytes must not be
// negative.
func ExtentOf(offBytes int64) uint64 { return uint64(offBytes) >> ExtentShift }

// ExtentRange returns the extents a write of length bytes at offBytes
// touches: n consecutive extents starting at first. A zero length touches no
// extent (n == 0, first is the extent of offBytes). A negative offset or
// length, a range that overflows int64, or one reaching past MaxExtent is
// ErrRange.
func ExtentRange(offBytes, length int64) (first uint64, n int64, err error) {
	if offBytes < 0 || length < 0 {
		return 0, 0, fmt.Errorf("%w: offset %d, length %d", ErrRange, offBytes, length)
	}
	first = ExtentOf(offBytes)
	if length == 0 {
		return first, 0, nil
	}
	end := offBytes + length // exclusive
	if end < offBytes {
		return 0, 0, fmt.Errorf("%w: offset %d + length %d overflows", ErrRange, offBytes, length)
	}
	last := ExtentOf(end - 1)
	if last > MaxExtent {
		return 0, 0, fmt.Errorf("%w: extent %d is past the last addressable extent %d", ErrRange, last, MaxExtent)
	}
	return first, int64(last-first) + 1, nil
}
