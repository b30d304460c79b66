package volume

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/blkrep/blkrep/activelog"
	"github.com/blkrep/blkrep/bitmap"
	"github.com/blkrep/blkrep/meta"
)

// Created says what Create did.
type Created struct {
	Layout meta.Layout
	// Replaced is set when valid metadata was overwritten (--force).
	Replaced bool
	// DataOverwritten is set when internal metadata was written over
	// bytes that were not all zero (--force).
	DataOverwritten bool
}

// ErrExists: Create found metadata, or data where internal metadata
// would go, and force was not given.
var ErrExists = errors.New("volume: refusing to overwrite")

// Create writes fresh metadata for the replica: both superblock copies,
// an empty activity-log ring and all-clear bitmaps with their checksums.
// The new metadata is just-created (no data generation yet): the first
// write generates one.
//
// Without force it refuses (ErrExists) when either superblock copy holds
// blkrep metadata, valid or not, and, for internal metadata, when the area
// it would take at the end of the disk holds a non-zero byte: that is data
// (a filesystem reaching the end of the disk) it would destroy.
func Create(s *Spec, force bool) (*Created, error) {
	g := s.Geometry()
	l, err := meta.ComputeLayout(g)
	if err != nil {
		return nil, err
	}
	if l.ExportedBytes < s.SizeBytes {
		return nil, fmt.Errorf("%w: %s holds %d bytes; with %d bytes of internal metadata it can export %d, less than the volume size %d",
			meta.ErrGeometry, s.MetaPath, s.DataBytes, l.AreaBytes, l.ExportedBytes, s.SizeBytes)
	}
	d := s.metaDisk()
	out := &Created{Layout: l}
	old, _, lerr := meta.Load(metaDev{d}, g.DeviceBytes, g.External)
	switch {
	case lerr == nil:
		if !force {
			return nil, fmt.Errorf("%w: %s already holds blkrep metadata (volume %s, node %q, generation %016X); "+
				"use --force to replace it, which forgets the bitmaps and generation identifiers (a full resync follows)",
				ErrExists, s.MetaPath, FormatUUID(old.VolumeUUID), old.Node, old.Current)
		}
		out.Replaced = true
	case errors.Is(lerr, meta.ErrNoMetadata):
	default:
		if !force {
			return nil, fmt.Errorf("%w: %s holds damaged or foreign blkrep metadata (%v); use --force to replace it", ErrExists, s.MetaPath, lerr)
		}
		out.Replaced = true
	}
	if !s.External() && !out.Replaced {
		nz, at, err := firstNonZero(d, l.AreaOffset, l.AreaBytes)
		if err != nil {
			return nil, err
		}
		if nz {
			if !force {
				return nil, fmt.Errorf("%w: internal metadata takes the last %d bytes of %s (from offset %d), and offset %d holds data; "+
					"shrink what is on the disk to end before offset %d, use external metadata (meta_disk = \"/path\"), or use --force to overwrite",
					ErrExists, l.AreaBytes, s.MetaPath, l.AreaOffset, at, l.AreaOffset)
			}
			out.DataOverwritten = true
		}
	}

	// Activity log: a clean ring.
	_, ring, err := activelog.Format(activelog.Config{Extents: s.alExtents(), RingRecords: l.ALRecords, MaxUpdates: s.MaxUpdates})
	if err != nil {
		return nil, err
	}
	for i, rec := range ring {
		if _, err := d.WriteAt(rec, l.ALRecordOffset(i)); err != nil {
			return nil, fmt.Errorf("writing activity-log record %d: %w", i, err)
		}
	}
	// Bitmaps: all clear, every page with its checksum.
	bm, err := bitmap.New(s.SizeBytes, g.BytesPerBit)
	if err != nil {
		return nil, err
	}
	zero := make([]byte, meta.BitmapPageSize)
	crc := bitmap.PageChecksum(zero)
	tab := make([]byte, l.PageCRCBytes)
	for i := range bm.NumPages() {
		binary.LittleEndian.PutUint32(tab[i*meta.PageCRCSize:], crc)
	}
	chunk := make([]byte, min(l.BitmapBytes, 1<<20))
	for slot := range g.PeerSlots {
		for off := int64(0); off < l.BitmapBytes; off += int64(len(chunk)) {
			n := min(int64(len(chunk)), l.BitmapBytes-off)
			if _, err := d.WriteAt(chunk[:n], l.BitmapPageOffset(slot, 0)+off); err != nil {
				return nil, fmt.Errorf("writing the bitmap of peer slot %d: %w", slot, err)
			}
		}
		if _, err := d.WriteAt(tab, l.PageCRCOffsetOf(slot, 0)); err != nil {
			return nil, fmt.Errorf("writing the page checksums of peer slot %d: %w", slot, err)
		}
	}
	if err := d.Flush(); err != nil {
		return nil, fmt.Errorf("syncing the new metadata: %w", err)
	}
	// The superblock last: until it is durable the disk has no metadata.
	sb := &meta.Superblock{
		Flags:       meta.FlagJustCreated | meta.FlagALClean,
		VolumeUUID:  UUID(s.Cluster, s.Volume),
		SizeBytes:   s.SizeBytes,
		DeviceBytes: g.DeviceBytes,
		BytesPerBit: g.BytesPerBit,
		ALRecords:   uint32(l.ALRecords),
		ALExtents:   uint32(s.alExtents()),
		External:    g.External,
		Node:        s.Node,
		Peers:       make([]meta.PeerSlot, g.PeerSlots),
	}
	for i, p := range s.Peers {
		if i < len(sb.Peers) {
			sb.Peers[i].Node = p
		}
	}
	if _, err := meta.Initialize(metaDev{d}, sb); err != nil {
		return nil, err
	}
	return out, nil
}

// firstNonZero scans [off, off+n) for a non-zero byte.
func firstNonZero(d Disk, off, n int64) (bool, int64, error) {
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for pos := off; pos < off+n; {
		m := min(int64(len(buf)), off+n-pos)
		if _, err := d.ReadAt(buf[:m], pos); err != nil {
			return false, 0, fmt.Errorf("reading %d bytes at %d: %w", m, pos, err)
		}
		if !bytes.Equal(buf[:m], zero[:m]) {
			for j, c := range buf[:m] {
				if c != 0 {
					return true, pos + int64(j), nil
				}
			}
		}
		pos += m
	}
	return false, 0, nil
}
