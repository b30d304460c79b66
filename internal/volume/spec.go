package volume

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/blkrep/blkrep/activelog"
	"github.com/blkrep/blkrep/meta"
)

// Disk is what data and metadata live on: a store.File in the daemon, a
// crashdisk.Disk in tests. WriteAtFUA returns once that write is durable;
// Flush makes every earlier write durable.
type Disk interface {
	io.ReaderAt
	io.WriterAt
	WriteAtFUA(p []byte, off int64) (int, error)
	Flush() error
}

// Spec is one local replica as the configuration describes it.
type Spec struct {
	Cluster, Volume, Node string
	// SizeBytes is the exported size (the config's size).
	SizeBytes int64
	// Data holds the volume's blocks; DataBytes is its whole size (for
	// internal metadata the area sits in its last bytes).
	Data      Disk
	DataBytes int64
	// Meta is the external metadata file, nil for internal metadata.
	Meta Disk
	// MetaPath names where the metadata is, for messages.
	MetaPath string
	// Peers are the other nodes holding a replica, in config order.
	Peers       []string
	PeerSlots   int
	BytesPerBit uint32
	ALExtents   int
	// MaxUpdates bounds slot updates per activity-log transaction
	// (activelog.DefaultMaxUpdates when 0).
	MaxUpdates int
}

// ErrRefused wraps every reason Open refuses a volume's metadata: the
// message names the problem and the fix; nothing was written.
var ErrRefused = errors.New("volume refused")

// External reports whether the metadata lives in its own file.
func (s *Spec) External() bool { return s.Meta != nil }

// metaDisk is where the metadata area lives.
func (s *Spec) metaDisk() Disk {
	if s.Meta != nil {
		return s.Meta
	}
	return s.Data
}

// metaDeviceBytes is the size the metadata layout is computed from: the
// whole data disk for internal metadata, the volume for external.
func (s *Spec) metaDeviceBytes() int64 {
	if s.Meta != nil {
		return s.SizeBytes
	}
	// A block device need not be a multiple of 4 KiB: the metadata ends
	// at the last whole block.
	return s.DataBytes / meta.BlockSize * meta.BlockSize
}

// Geometry is the layout input for creating metadata from this spec.
func (s *Spec) Geometry() meta.Geometry {
	return meta.Geometry{
		DeviceBytes: s.metaDeviceBytes(),
		External:    s.External(),
		PeerSlots:   s.PeerSlots,
		BytesPerBit: s.BytesPerBit,
		ALRecords:   activelog.RingRecordsFor(s.alExtents()),
	}
}

func (s *Spec) alExtents() int {
	if s.ALExtents == 0 {
		return activelog.DefaultExtents
	}
	return s.ALExtents
}

// UUID is the volume's identity, the same on every node: derived from the
// cluster and volume names, so that a disk moved to another volume's
// configuration is recognised and refused.
func UUID(cluster, volume string) [16]byte {
	h := sha256.Sum256([]byte("blkrep volume\x00" + cluster + "\x00" + volume))
	var u [16]byte
	copy(u[:], h[:16])
	u[6] = u[6]&0x0f | 0x80 // RFC 9562 version 8 (custom)
	u[8] = u[8]&0x3f | 0x80 // variant
	return u
}

// FormatUUID prints u in the usual 8-4-4-4-12 form.
func FormatUUID(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// alConfig is the activity log's configuration for a superblock.
func alConfig(sb *meta.Superblock, maxUpdates int) activelog.Config {
	return activelog.Config{Extents: int(sb.ALExtents), RingRecords: int(sb.ALRecords), MaxUpdates: maxUpdates}
}

// layoutOf recomputes the layout a superblock was created with.
func layoutOf(sb *meta.Superblock) (meta.Layout, error) {
	return meta.ComputeLayout(meta.Geometry{
		DeviceBytes: sb.DeviceBytes, External: sb.External, PeerSlots: len(sb.Peers),
		BytesPerBit: sb.BytesPerBit, ALRecords: int(sb.ALRecords),
	})
}

// readRing reads every activity-log record.
func readRing(d Disk, l meta.Layout) ([][]byte, error) {
	buf := make([]byte, int64(l.ALRecords)*meta.ALRecordSize)
	if _, err := d.ReadAt(buf, l.ALOffset); err != nil {
		return nil, fmt.Errorf("reading the activity log at %d: %w", l.ALOffset, err)
	}
	recs := make([][]byte, l.ALRecords)
	for i := range recs {
		recs[i] = buf[i*meta.ALRecordSize : (i+1)*meta.ALRecordSize]
	}
	return recs, nil
}

// metaDev adapts a Disk to meta.Device (Sync is Flush).
type metaDev struct{ Disk }

func (m metaDev) Sync() error { return m.Flush() }
