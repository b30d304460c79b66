package volume

import (
	"errors"
	"fmt"
	"os"

	"github.com/blkrep/blkrep/activelog"
	"github.com/blkrep/blkrep/internal/control"
	"github.com/blkrep/blkrep/meta"
)

// SchemaDump names the version of the Dump document. Frozen.
const SchemaDump = "blkrep.dump-md/v1"

// Dump is everything the metadata says, read offline by blkrep dump-md.
type Dump struct {
	Schema string `json:"schema"`
	Volume string `json:"volume"`
	Node   string `json:"node"`
	// Placement is "internal" or "external"; Path holds the metadata.
	Placement string `json:"placement"`
	Path      string `json:"path"`
	// InUse: a running blkrepd holds the disk; its latest in-memory state
	// (bitmap bits not yet written back) may be ahead of this dump.
	InUse bool `json:"in_use"`
	// Problems are the disagreements with the configuration that would
	// make blkrepd refuse the volume.
	Problems []string `json:"problems"`

	Superblock  SuperblockDump     `json:"superblock"`
	Layout      LayoutDump         `json:"layout"`
	Flags       []string           `json:"flags"`
	Current     string             `json:"current"`
	History     []string           `json:"history"`
	BytesPerBit uint32             `json:"bytes_per_bit"`
	Peers       []control.PeerSlot `json:"peers"`
	// BadBitmapPages failed their checksum (counted as all dirty).
	BadBitmapPages int    `json:"bad_bitmap_pages"`
	ActivityLog    ALDump `json:"activity_log"`
}

// SuperblockDump says which copy is in use and why the other is not.
type SuperblockDump struct {
	FormatVersion int       `json:"format_version"`
	CopyUsed      int       `json:"copy_used"`
	Seq           uint64    `json:"seq"`
	CopyErrors    [2]string `json:"copy_errors"`
	VolumeUUID    string    `json:"volume_uuid"`
	SizeBytes     int64     `json:"size_bytes"`
	DeviceBytes   int64     `json:"device_bytes"`
}

// LayoutDump is where each part of the metadata area lives.
type LayoutDump struct {
	AreaOffset   int64 `json:"area_offset"`
	AreaBytes    int64 `json:"area_bytes"`
	ALOffset     int64 `json:"al_offset"`
	ALRecords    int   `json:"al_records"`
	BitmapOffset int64 `json:"bitmap_offset"`
	BitmapPages  int64 `json:"bitmap_pages_per_slot"`
	PeerSlots    int   `json:"peer_slots"`
}

// ALDump is the recovered activity log.
type ALDump struct {
	Extents     int    `json:"extents"`
	ExtentBytes int64  `json:"extent_bytes"`
	NewestSeq   uint64 `json:"newest_seq"`
	// Clean: the newest record is a clean-shutdown marker.
	Clean   bool `json:"clean"`
	Valid   int  `json:"valid_records"`
	Blank   int  `json:"blank_records"`
	Corrupt int  `json:"corrupt_records"`
	// Hot are the hot extents; after a crash each is out of sync with
	// every peer.
	Hot []HotExtent `json:"hot"`
	// Error is why the log could not be recovered (blkrepd refuses).
	Error string `json:"error,omitempty"`
}

// HotExtent is one hot extent and the bytes it covers.
type HotExtent struct {
	Extent uint64 `json:"extent"`
	Offset int64  `json:"offset"`
	Bytes  int64  `json:"bytes"`
}

// Inspect reads the metadata without writing anything. It fails only when
// no superblock copy can be read; every other problem is in the Dump.
func Inspect(s *Spec) (*Dump, error) {
	d := s.metaDisk()
	sb, info, err := meta.Load(metaDev{d}, s.metaDeviceBytes(), s.External())
	if err != nil {
		if errors.Is(err, meta.ErrNoMetadata) {
			return nil, fmt.Errorf("%s has no blkrep metadata (create it with `blkrep create-md %s`)", s.MetaPath, s.Volume)
		}
		return nil, fmt.Errorf("%s: %w", s.MetaPath, err)
	}
	l, probs := checkSuper(s, sb)
	if p := newerCopy(info); p != "" {
		probs = append(probs, p)
	}
	out := &Dump{
		Schema: SchemaDump, Volume: s.Volume, Node: sb.Node, Placement: "internal", Path: s.MetaPath,
		Problems: nonNil(probs),
		Superblock: SuperblockDump{
			FormatVersion: meta.FormatVersion, CopyUsed: info.Used, Seq: sb.Seq,
			VolumeUUID: FormatUUID(sb.VolumeUUID), SizeBytes: sb.SizeBytes, DeviceBytes: sb.DeviceBytes,
		},
		Layout: LayoutDump{
			AreaOffset: l.AreaOffset, AreaBytes: l.AreaBytes, ALOffset: l.ALOffset, ALRecords: l.ALRecords,
			BitmapOffset: l.BitmapOffset, BitmapPages: l.BitmapPages, PeerSlots: len(sb.Peers),
		},
		Flags:       nonNil(sb.Flags.Names()),
		Current:     fmt.Sprintf("%016X", sb.Current),
		History:     []string{},
		BytesPerBit: sb.BytesPerBit,
		ActivityLog: ALDump{Extents: int(sb.ALExtents), ExtentBytes: activelog.ExtentSize, Hot: []HotExtent{}},
	}
	if sb.External {
		out.Placement = "external"
	}
	for i, e := range info.CopyErr {
		if e != nil {
			out.Superblock.CopyErrors[i] = e.Error()
		}
	}
	for _, h := range sb.History {
		if h != 0 {
			out.History = append(out.History, fmt.Sprintf("%016X", h))
		}
	}
	if l.AreaBytes == 0 { // layoutOf failed: nothing else is findable
		out.Peers = []control.PeerSlot{}
		return out, nil
	}
	ring, err := readRing(d, l)
	if err == nil {
		var ri activelog.RecoveryInfo
		_, ri, err = activelog.Recover(ring, alConfig(sb, 0))
		out.ActivityLog.NewestSeq, out.ActivityLog.Clean = ri.NewestSeq, ri.Clean
		out.ActivityLog.Valid, out.ActivityLog.Blank, out.ActivityLog.Corrupt = ri.Valid, ri.Blank, ri.Corrupt
		for _, e := range ri.Hot {
			off := int64(e) << activelog.ExtentShift
			out.ActivityLog.Hot = append(out.ActivityLog.Hot, HotExtent{Extent: e, Offset: off, Bytes: max(0, min(activelog.ExtentSize, sb.SizeBytes-off))})
		}
	}
	if err != nil {
		out.ActivityLog.Error = err.Error()
	}
	p := pager{d: d, lay: l}
	bms, bad, err := p.loadBitmaps(sb.SizeBytes, sb.BytesPerBit, len(sb.Peers))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.MetaPath, err)
	}
	out.BadBitmapPages = bad
	out.Peers = peerSlots(sb, func(i int) int64 { return bms[i].DirtyBytes() })
	return out, nil
}

// ReadOnlyFile is a Disk over a file opened for reading: what dump-md
// uses, so that it cannot write whatever happens.
type ReadOnlyFile struct{ *os.File }

// ErrReadOnly is returned by ReadOnlyFile's writes.
var ErrReadOnly = errors.New("volume: opened read-only")

func (ReadOnlyFile) WriteAt([]byte, int64) (int, error)    { return 0, ErrReadOnly }
func (ReadOnlyFile) WriteAtFUA([]byte, int64) (int, error) { return 0, ErrReadOnly }
func (ReadOnlyFile) Flush() error                          { return ErrReadOnly }
