package meta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Superblock format. Frozen: a change of layout bumps FormatVersion.
const (
	// Magic opens every superblock copy.
	Magic = "BLKREPMD"
	// FormatVersion is the version this code writes and the newest it reads.
	FormatVersion = 1
	// HistoryLen is how many older generation identifiers are kept.
	HistoryLen = 16
	// MaxNameLen bounds node names stored in the superblock.
	MaxNameLen = 63

	offMagic     = 0
	offVersion   = 8
	offCRC       = 12
	offSeq       = 16
	offFlags     = 24
	offUUID      = 32
	offSize      = 48
	offDevice    = 56
	offBPB       = 64
	offSlots     = 68
	offALRecords = 72
	offALExtents = 76
	offExternal  = 80
	offNode      = 88  // u8 length + 63 bytes
	offCurrent   = 152 // u64
	offHistory   = 160 // HistoryLen x u64
	offPeers     = offHistory + 8*HistoryLen
	peerLen      = 96 // u8 length + 63 bytes name, u64 bitmap id, u32 flags, pad
)

// Flags are the replica's persistent state bits.
type Flags uint64

// Frozen bit values.
const (
	// FlagConsistent: the data is a consistent image (not mid-resync target).
	FlagConsistent Flags = 1 << 0
	// FlagWasUpToDate: the data was UpToDate when last known.
	FlagWasUpToDate Flags = 1 << 1
	// FlagPrimary: the replica is (or was, at a crash) Primary.
	FlagPrimary Flags = 1 << 2
	// FlagCrashedPrimary: it was Primary and did not shut down cleanly.
	FlagCrashedPrimary Flags = 1 << 3
	// FlagALClean: the activity log was closed cleanly (no writes in flight).
	FlagALClean Flags = 1 << 4
	// FlagJustCreated: metadata created and no data generation yet.
	FlagJustCreated Flags = 1 << 5
)

var flagNames = []struct {
	f    Flags
	name string
}{
	{FlagConsistent, "consistent"}, {FlagWasUpToDate, "was-up-to-date"}, {FlagPrimary, "primary"},
	{FlagCrashedPrimary, "crashed-primary"}, {FlagALClean, "al-clean"}, {FlagJustCreated, "just-created"},
}

// Names lists the set flags by name.
func (f Flags) Names() []string {
	var out []string
	for _, n := range flagNames {
		if f&n.f != 0 {
			out = append(out, n.name)
		}
	}
	if rest := f &^ knownFlags; rest != 0 {
		out = append(out, fmt.Sprintf("unknown(%#x)", uint64(rest)))
	}
	return out
}

const knownFlags = FlagConsistent | FlagWasUpToDate | FlagPrimary | FlagCrashedPrimary | FlagALClean | FlagJustCreated

// PeerFlags are per peer slot.
type PeerFlags uint32

// Frozen bit values.
const (
	// PeerOutdated: the peer is known to hold older data (it was told so,
	// or fenced) and must not be promoted.
	PeerOutdated PeerFlags = 1 << 0
)

// PeerSlot is what this replica remembers about one peer.
type PeerSlot struct {
	// Node is the peer's node name; empty for an unused slot.
	Node string
	// BitmapID is the generation the slot's bitmap tracks changes
	// against; zero while connected and in sync.
	BitmapID uint64
	Flags    PeerFlags
}

// Superblock is the decoded state of one replica's metadata.
type Superblock struct {
	// Seq orders the two copies: the valid one with the higher Seq wins.
	Seq         uint64
	Flags       Flags
	VolumeUUID  [16]byte
	SizeBytes   int64 // exported size
	DeviceBytes int64 // size the layout was computed for
	BytesPerBit uint32
	ALRecords   uint32
	ALExtents   uint32
	External    bool
	Node        string
	Current     uint64
	History     [HistoryLen]uint64
	Peers       []PeerSlot // len is the number of peer slots, fixed at creation
}

// Sentinel errors of Load and Decode.
var (
	// ErrNoMetadata: neither copy carries our magic (a fresh or foreign disk).
	ErrNoMetadata = errors.New("meta: no blkrep metadata found")
	// ErrCorrupt: a copy failed its checksum or a field is out of range.
	ErrCorrupt = errors.New("meta: corrupt superblock")
	// ErrFutureVersion: written by a newer blkrep; refuse rather than guess.
	ErrFutureVersion = errors.New("meta: superblock from a newer format version")
	// ErrGeometryMismatch: the superblock describes another device size or
	// geometry than the configuration.
	ErrGeometryMismatch = errors.New("meta: metadata does not match the configured volume")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crcChecksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Encode returns the superblock as one SuperblockSize block.
func (sb *Superblock) Encode() ([]byte, error) {
	if len(sb.Peers) < MinPeerSlots || len(sb.Peers) > MaxPeerSlots {
		return nil, fmt.Errorf("meta: %d peer slots (allowed %d..%d)", len(sb.Peers), MinPeerSlots, MaxPeerSlots)
	}
	if len(sb.Node) > MaxNameLen {
		return nil, fmt.Errorf("meta: node name %q longer than %d bytes", sb.Node, MaxNameLen)
	}
	b := make([]byte, SuperblockSize)
	le := binary.LittleEndian
	copy(b[offMagic:], Magic)
	le.PutUint32(b[offVersion:], FormatVersion)
	le.PutUint64(b[offSeq:], sb.Seq)
	le.PutUint64(b[offFlags:], uint64(sb.Flags))
	copy(b[offUUID:], sb.VolumeUUID[:])
	le.PutUint64(b[offSize:], uint64(sb.SizeBytes))
	le.PutUint64(b[offDevice:], uint64(sb.DeviceBytes))
	le.PutUint32(b[offBPB:], sb.BytesPerBit)
	le.PutUint32(b[offSlots:], uint32(len(sb.Peers)))
	le.PutUint32(b[offALRecords:], sb.ALRecords)
	le.PutUint32(b[offALExtents:], sb.ALExtents)
	if sb.External {
		b[offExternal] = 1
	}
	putName(b[offNode:], sb.Node)
	le.PutUint64(b[offCurrent:], sb.Current)
	for i, h := range sb.History {
		le.PutUint64(b[offHistory+8*i:], h)
	}
	for i, p := range sb.Peers {
		if len(p.Node) > MaxNameLen {
			return nil, fmt.Errorf("meta: peer slot %d: node name %q longer than %d bytes", i, p.Node, MaxNameLen)
		}
		o := offPeers + i*peerLen
		putName(b[o:], p.Node)
		le.PutUint64(b[o+64:], p.BitmapID)
		le.PutUint32(b[o+72:], uint32(p.Flags))
	}
	le.PutUint32(b[offCRC:], crcChecksum(b))
	return b, nil
}

func putName(b []byte, s string) {
	b[0] = byte(len(s))
	copy(b[1:1+MaxNameLen], s)
}

func getName(b []byte) (string, bool) {
	n := int(b[0])
	if n > MaxNameLen {
		return "", false
	}
	name := b[1 : 1+n]
	if bytes.IndexByte(name, 0) >= 0 || !bytes.Equal(b[1+n:1+MaxNameLen], make([]byte, MaxNameLen-n)) {
		return "", false
	}
	return string(name), true
}

// Decode parses and validates one superblock copy.
func Decode(b []byte) (*Superblock, error) {
	if len(b) != SuperblockSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrCorrupt, len(b), SuperblockSize)
	}
	le := binary.LittleEndian
	if string(b[offMagic:offMagic+8]) != Magic {
		return nil, ErrNoMetadata
	}
	v := le.Uint32(b[offVersion:])
	if v > FormatVersion {
		return nil, fmt.Errorf("%w: version %d, this blkrep reads up to %d", ErrFutureVersion, v, FormatVersion)
	}
	if v == 0 {
		return nil, fmt.Errorf("%w: version 0", ErrCorrupt)
	}
	want := le.Uint32(b[offCRC:])
	c := bytes.Clone(b)
	le.PutUint32(c[offCRC:], 0)
	if got := crcChecksum(c); got != want {
		return nil, fmt.Errorf("%w: checksum %#08x, stored %#08x (torn or damaged write)", ErrCorrupt, got, want)
	}
	sb := &Superblock{
		Seq:         le.Uint64(b[offSeq:]),
		Flags:       Flags(le.Uint64(b[offFlags:])),
		SizeBytes:   int64(le.Uint64(b[offSize:])),
		DeviceBytes: int64(le.Uint64(b[offDevice:])),
		BytesPerBit: le.Uint32(b[offBPB:]),
		ALRecords:   le.Uint32(b[offALRecords:]),
		ALExtents:   le.Uint32(b[offALExtents:]),
		External:    b[offExternal] == 1,
		Current:     le.Uint64(b[offCurrent:]),
	}
	copy(sb.VolumeUUID[:], b[offUUID:])
	bad := func(format string, a ...any) (*Superblock, error) {
		return nil, fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
	}
	if b[offExternal] > 1 {
		return bad("external flag %d", b[offExternal])
	}
	var ok bool
	if sb.Node, ok = getName(b[offNode:]); !ok {
		return bad("node name field")
	}
	for i := range sb.History {
		sb.History[i] = le.Uint64(b[offHistory+8*i:])
	}
	slots := le.Uint32(b[offSlots:])
	if slots < MinPeerSlots || slots > MaxPeerSlots {
		return bad("%d peer slots", slots)
	}
	if sb.BytesPerBit < MinBytesPerBit || sb.BytesPerBit > MaxBytesPerBit || sb.BytesPerBit&(sb.BytesPerBit-1) != 0 {
		return bad("%d bytes per bit", sb.BytesPerBit)
	}
	if sb.SizeBytes <= 0 || sb.DeviceBytes < sb.SizeBytes || sb.SizeBytes%BlockSize != 0 || sb.DeviceBytes%BlockSize != 0 {
		return bad("sizes: exported %d, device %d", sb.SizeBytes, sb.DeviceBytes)
	}
	if sb.ALRecords < 2 || sb.ALRecords > MaxALRecords || sb.ALExtents == 0 {
		return bad("activity log geometry: %d records, %d extents", sb.ALRecords, sb.ALExtents)
	}
	sb.Peers = make([]PeerSlot, slots)
	for i := range sb.Peers {
		o := offPeers + i*peerLen
		name, ok := getName(b[o:])
		if !ok {
			return bad("peer slot %d name field", i)
		}
		sb.Peers[i] = PeerSlot{Node: name, BitmapID: le.Uint64(b[o+64:]), Flags: PeerFlags(le.Uint32(b[o+72:]))}
	}
	return sb, nil
}

// Device is where the metadata lives.
type Device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// LoadInfo says what Load found in each copy.
type LoadInfo struct {
	// Used is the copy (0 or 1) the superblock came from.
	Used int
	// CopyErr is why a copy was not usable (nil when valid).
	CopyErr [2]error
}

// Load reads both copies at the offsets for a device of deviceBytes and
// returns the newest valid one.
func Load(dev Device, deviceBytes int64, external bool) (*Superblock, LoadInfo, error) {
	var info LoadInfo
	var sbs [2]*Superblock
	offs := SuperblockOffsets(deviceBytes, external)
	if offs[0] < 0 {
		return nil, info, fmt.Errorf("%w: device of %d bytes cannot hold metadata", ErrNoMetadata, deviceBytes)
	}
	for i, off := range offs {
		b := make([]byte, SuperblockSize)
		if _, err := dev.ReadAt(b, off); err != nil {
			info.CopyErr[i] = fmt.Errorf("meta: reading superblock copy %d at %d: %w", i, off, err)
			continue
		}
		sbs[i], info.CopyErr[i] = Decode(b)
	}
	switch {
	case sbs[0] != nil && sbs[1] != nil:
		info.Used = 0
		if sbs[1].Seq > sbs[0].Seq {
			info.Used = 1
		}
	case sbs[0] != nil:
		info.Used = 0
	case sbs[1] != nil:
		info.Used = 1
	default:
		for _, e := range info.CopyErr {
			if errors.Is(e, ErrFutureVersion) {
				return nil, info, e
			}
		}
		if errors.Is(info.CopyErr[0], ErrNoMetadata) && errors.Is(info.CopyErr[1], ErrNoMetadata) {
			return nil, info, ErrNoMetadata
		}
		return nil, info, fmt.Errorf("%w: both copies unusable: copy 0: %v; copy 1: %v", ErrCorrupt, info.CopyErr[0], info.CopyErr[1])
	}
	sb := sbs[info.Used]
	if sb.DeviceBytes != deviceBytes || sb.External != external {
		return nil, info, fmt.Errorf("%w: metadata was created for %d bytes (external=%v), the device has %d (external=%v)",
			ErrGeometryMismatch, sb.DeviceBytes, sb.External, deviceBytes, external)
	}
	return sb, info, nil
}

// Write persists sb into the copy Load did not use (or copy 1 when prev
// is nil), with Seq one above the previous, and syncs. Only after Sync
// returns is the new state the one Load finds; a crash before leaves the
// previous copy valid. It sets sb.Seq and returns the copy written.
func Write(dev Device, sb *Superblock, prev *LoadInfo, prevSeq uint64) (int, error) {
	target := 1
	if prev != nil {
		target = 1 - prev.Used
	}
	sb.Seq = prevSeq + 1
	b, err := sb.Encode()
	if err != nil {
		return 0, err
	}
	off := SuperblockOffsets(sb.DeviceBytes, sb.External)[target]
	if _, err := dev.WriteAt(b, off); err != nil {
		return 0, fmt.Errorf("meta: writing superblock copy %d: %w", target, err)
	}
	if err := dev.Sync(); err != nil {
		return 0, fmt.Errorf("meta: syncing superblock copy %d: %w", target, err)
	}
	if prev != nil {
		prev.Used = target
		prev.CopyErr[target] = nil
	}
	return target, nil
}

// Initialize writes a new superblock into both copies (Seq 1 then 2,
// syncing after each), so a torn later update always leaves one valid.
func Initialize(dev Device, sb *Superblock) (LoadInfo, error) {
	info := LoadInfo{Used: 1}
	for i := range 2 {
		sb.Seq = uint64(i + 1)
		b, err := sb.Encode()
		if err != nil {
			return info, err
		}
		if _, err := dev.WriteAt(b, SuperblockOffsets(sb.DeviceBytes, sb.External)[i]); err != nil {
			return info, fmt.Errorf("meta: writing superblock copy %d: %w", i, err)
		}
		if err := dev.Sync(); err != nil {
			return info, fmt.Errorf("meta: syncing superblock copy %d: %w", i, err)
		}
	}
	return info, nil
}
