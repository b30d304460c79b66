package config

import (
	"github.com/blkrep/blkrep/activelog"
	"github.com/blkrep/blkrep/meta"
)

// MetaInternal reports whether the replica keeps its metadata at the end of its
// disk (meta_disk = "internal", the default).
func (r *Replica) MetaInternal() bool { return r.MetaDisk == MetaDiskInternal }

// MetaNone reports whether the replica has no metadata (meta_disk = "none"): no
// bitmap, no activity log, no crash tracking; the disk is exported as it is.
func (r *Replica) MetaNone() bool { return r.MetaDisk == MetaDiskNone }

// MetaExternal reports whether the replica keeps its metadata in a file or block
// device of its own, at the path MetaDisk.
func (r *Replica) MetaExternal() bool { return !r.MetaInternal() && !r.MetaNone() }

// MetaGeometry returns the metadata geometry of v's replica r on a backing device
// of deviceBytes: for internal metadata the size of the disk (rounded down to a
// multiple of meta.BlockSize), for external metadata the volume size, SizeBytes.
// It is meaningless for a replica without metadata. Zero fields of a Volume that
// Parse did not build take their defaults.
func (v *Volume) MetaGeometry(r *Replica, deviceBytes int64) meta.Geometry {
	bpb, extents, slots := v.BytesPerBit, v.ALExtents, v.PeerSlots
	if bpb == 0 {
		bpb = DefaultBytesPerBit
	}
	if extents == 0 {
		extents = DefaultALExtents
	}
	if slots == 0 {
		slots = DefaultPeerSlots
	}
	return meta.Geometry{
		DeviceBytes: deviceBytes,
		External:    r.MetaExternal(),
		PeerSlots:   slots,
		BytesPerBit: bpb,
		ALRecords:   activelog.RingRecordsFor(extents),
	}
}

// DiskBytes returns the smallest size the replica's disk can have: the volume
// size plus the metadata area (meta.DeviceBytesFor) for internal metadata, the
// volume size for external or no metadata. A disk created because of
// create = true is created at exactly this size. It fails only for a Volume that
// Parse did not build: Parse rejects a size that makes it fail.
func (lr LocalReplica) DiskBytes() (int64, error) {
	v, r := lr.Volume, lr.Replica
	if !r.MetaInternal() {
		return v.SizeBytes, nil
	}
	return meta.DeviceBytesFor(v.SizeBytes, v.MetaGeometry(r, 0))
}

// MetaFileBytes returns, for external metadata, the smallest size of the metadata
// file (its metadata area, for a device of the volume size); an external metadata
// file created because of create = true is created at exactly this size. It is 0
// for internal or no metadata, and for a Volume that Parse did not build and
// whose geometry is invalid.
func (lr LocalReplica) MetaFileBytes() int64 {
	v, r := lr.Volume, lr.Replica
	if !r.MetaExternal() {
		return 0
	}
	l, err := meta.ComputeLayout(v.MetaGeometry(r, v.SizeBytes))
	if err != nil {
		return 0
	}
	return l.AreaBytes
}

// maxInternalSize returns the largest volume size, a multiple of SizeAlignBytes,
// that a disk of diskBytes can hold with v's internal metadata; 0 if none.
func maxInternalSize(v *Volume, r *Replica, diskBytes int64) int64 {
	dev := diskBytes / meta.BlockSize * meta.BlockSize
	if dev <= 0 {
		return 0
	}
	l, err := meta.ComputeLayout(v.MetaGeometry(r, dev))
	if err != nil {
		return 0
	}
	return l.ExportedBytes / SizeAlignBytes * SizeAlignBytes
}
