package meta

import (
	"errors"
	"fmt"
)

// On-disk geometry constants. Frozen: changing one changes the format.
const (
	// BlockSize is the unit every region of the metadata area is aligned to.
	BlockSize = 4096
	// SuperblockSize is the size of one superblock copy.
	SuperblockSize = 4096
	// ALRecordSize is the size of one activity-log ring record.
	ALRecordSize = 4096
	// BitmapPageSize is the size of one bitmap page (32768 bits).
	BitmapPageSize = 4096
	// BitmapPageBits is the number of bits in one page.
	BitmapPageBits = BitmapPageSize * 8
	// PageCRCSize is the size of one entry of a slot's page checksum table.
	PageCRCSize = 4

	MinPeerSlots = 3
	MaxPeerSlots = 32

	MinBytesPerBit     = 4 << 10
	MaxBytesPerBit     = 1 << 20
	DefaultBytesPerBit = 4 << 10

	DefaultALRecords = 8
	MaxALRecords     = 1024
)

// Geometry is what a metadata area is computed from.
type Geometry struct {
	// DeviceBytes is the size of the backing device (internal metadata) or
	// of the volume (external metadata).
	DeviceBytes int64
	// External puts the metadata in its own file: the whole device is
	// exported and the area starts at offset 0 of that file.
	External    bool
	PeerSlots   int
	BytesPerBit uint32
	ALRecords   int
}

// Layout is where each part of the metadata area lives. All offsets are
// absolute in the device (internal) or the metadata file (external), and
// multiples of BlockSize.
//
//	internal: | exported data ... | AL ring | page CRCs x slots | bitmaps x slots | sb0 | sb1 |
//	external: | sb0 | sb1 | AL ring | page CRCs x slots | bitmaps x slots |
type Layout struct {
	Geometry
	// ExportedBytes is what clients see: DeviceBytes minus the area for
	// internal metadata, DeviceBytes for external metadata.
	ExportedBytes int64
	// AreaOffset and AreaBytes delimit the whole metadata area.
	AreaOffset, AreaBytes int64
	// Superblock holds the offsets of the two superblock copies.
	Superblock [2]int64
	// ALOffset is the first activity-log record; ALRecords follow.
	ALOffset int64
	// PageCRCOffset is slot 0's page checksum table; each slot's table
	// takes PageCRCBytes.
	PageCRCOffset, PageCRCBytes int64
	// BitmapOffset is slot 0's first bitmap page; each slot takes
	// BitmapBytes.
	BitmapOffset, BitmapBytes int64
	// BitmapPages is the number of pages per slot.
	BitmapPages int64
}

// ErrGeometry reports an impossible geometry (too small a device, a bad
// granularity, too many slots).
var ErrGeometry = errors.New("meta: invalid geometry")

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// ComputeLayout places the metadata area. For internal metadata the
// bitmaps are sized for the whole device (a slight over-allocation that
// avoids a circular dependency between the exported size and the bitmap
// size), and the area takes the last AreaBytes of the device.
func ComputeLayout(g Geometry) (Layout, error) {
	if g.PeerSlots == 0 {
		g.PeerSlots = MinPeerSlots
	}
	if g.BytesPerBit == 0 {
		g.BytesPerBit = DefaultBytesPerBit
	}
	if g.ALRecords == 0 {
		g.ALRecords = DefaultALRecords
	}
	switch {
	case g.DeviceBytes <= 0 || g.DeviceBytes%BlockSize != 0:
		return Layout{}, fmt.Errorf("%w: device size %d is not a positive multiple of %d", ErrGeometry, g.DeviceBytes, BlockSize)
	case g.PeerSlots < MinPeerSlots || g.PeerSlots > MaxPeerSlots:
		return Layout{}, fmt.Errorf("%w: %d peer slots (allowed %d..%d)", ErrGeometry, g.PeerSlots, MinPeerSlots, MaxPeerSlots)
	case g.BytesPerBit < MinBytesPerBit || g.BytesPerBit > MaxBytesPerBit || g.BytesPerBit&(g.BytesPerBit-1) != 0:
		return Layout{}, fmt.Errorf("%w: %d bytes per bit (a power of two from %d to %d)", ErrGeometry, g.BytesPerBit, MinBytesPerBit, MaxBytesPerBit)
	case g.ALRecords < 2 || g.ALRecords > MaxALRecords:
		return Layout{}, fmt.Errorf("%w: %d activity-log records (allowed 2..%d)", ErrGeometry, g.ALRecords, MaxALRecords)
	}
	bits := (g.DeviceBytes + int64(g.BytesPerBit) - 1) / int64(g.BytesPerBit)
	pages := (bits + BitmapPageBits - 1) / BitmapPageBits
	l := Layout{Geometry: g, BitmapPages: pages}
	l.BitmapBytes = pages * BitmapPageSize
	l.PageCRCBytes = roundUp(pages*PageCRCSize, BlockSize)
	area := 2*int64(SuperblockSize) + int64(g.ALRecords)*ALRecordSize +
		int64(g.PeerSlots)*(l.PageCRCBytes+l.BitmapBytes)
	l.AreaBytes = area
	if g.External {
		l.ExportedBytes = g.DeviceBytes
		l.AreaOffset = 0
	} else {
		if area >= g.DeviceBytes {
			return Layout{}, fmt.Errorf("%w: internal metadata needs %d bytes, the device has only %d", ErrGeometry, area, g.DeviceBytes)
		}
		l.ExportedBytes = g.DeviceBytes - area
		l.AreaOffset = l.ExportedBytes
	}
	// The superblocks sit where Load can find them knowing only the
	// device size: the first 8 KiB of an external file, the last 8 KiB of
	// a device with internal metadata.
	l.Superblock = SuperblockOffsets(g.DeviceBytes, g.External)
	off := l.AreaOffset
	if g.External {
		off += 2 * SuperblockSize
	}
	l.ALOffset = off
	off += int64(g.ALRecords) * ALRecordSize
	l.PageCRCOffset = off
	off += int64(g.PeerSlots) * l.PageCRCBytes
	l.BitmapOffset = off
	return l, nil
}

// SuperblockOffsets returns where the two superblock copies live.
func SuperblockOffsets(deviceBytes int64, external bool) [2]int64 {
	if external {
		return [2]int64{0, SuperblockSize}
	}
	return [2]int64{deviceBytes - 2*SuperblockSize, deviceBytes - SuperblockSize}
}

// ALRecordOffset is where ring record i lives.
func (l Layout) ALRecordOffset(i int) int64 { return l.ALOffset + int64(i)*ALRecordSize }

// BitmapPageOffset is where page p of slot s lives.
func (l Layout) BitmapPageOffset(slot int, page int64) int64 {
	return l.BitmapOffset + int64(slot)*l.BitmapBytes + page*BitmapPageSize
}

// PageCRCOffsetOf is where the checksum of page p of slot s lives.
func (l Layout) PageCRCOffsetOf(slot int, page int64) int64 {
	return l.PageCRCOffset + int64(slot)*l.PageCRCBytes + page*PageCRCSize
}

// DeviceBytesFor returns the smallest backing-device size whose layout
// exports at least exported bytes: exported itself for external metadata,
// exported plus the metadata area for internal metadata. g.DeviceBytes is
// ignored. create = true files are created at this size, and a disk
// smaller than it cannot hold the volume.
func DeviceBytesFor(exported int64, g Geometry) (int64, error) {
	if exported <= 0 || exported%BlockSize != 0 {
		return 0, fmt.Errorf("%w: volume size %d is not a positive multiple of %d", ErrGeometry, exported, BlockSize)
	}
	g.DeviceBytes = exported
	if g.External {
		if _, err := ComputeLayout(g); err != nil {
			return 0, err
		}
		return exported, nil
	}
	// The area grows with the device (bitmap pages), so iterate: each
	// step only adds the pages the previous area's bytes need.
	dev := exported
	for range 64 {
		l, err := computeArea(g, dev)
		if err != nil {
			return 0, err
		}
		if next := exported + l; next == dev {
			return dev, nil
		} else {
			dev = next
		}
	}
	return 0, fmt.Errorf("%w: no device size fits a volume of %d bytes", ErrGeometry, exported)
}

// computeArea returns the internal metadata area for a device of dev bytes.
func computeArea(g Geometry, dev int64) (int64, error) {
	g.DeviceBytes = dev
	g.External = true // the area's size does not depend on where it is
	l, err := ComputeLayout(g)
	if err != nil {
		return 0, err
	}
	return l.AreaBytes, nil
}
