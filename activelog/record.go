package activelog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
)

// On-disk record format. Frozen: docs/format/activity-log.md draws it, and
// changing any of these changes the format (bump FormatVersion).
const (
	// RecordSize is the size of one ring record.
	RecordSize = 4096
	// FormatVersion is the record format this package writes and reads.
	FormatVersion = 1
	// EmptySlot is the extent number of a slot that holds no extent.
	EmptySlot uint32 = 0xFFFF_FFFF

	// MaxExtents is the largest hot-set capacity (slots in the table).
	MaxExtents = 1 << 16
	// MaxUpdatesLimit is the most slot updates one record may carry.
	MaxUpdatesLimit = 256
	// MinRingRecords and MaxRingRecords bound the ring: two records at
	// least, so that tearing the newest leaves one (meta.MaxALRecords
	// matches the maximum).
	MinRingRecords = 2
	MaxRingRecords = 1024

	// MaxSeq is the largest sequence number (at a million transactions
	// a second, 290,000 years).
	MaxSeq = 1<<63 - 1

	headerSize = 40
	updateSize = 8
	windowSize = 4

	offMagic     = 0
	offVersion   = 4
	offType      = 6
	offSeq       = 8
	offCRC       = 16
	offCapacity  = 20
	offRing      = 24
	offUpdates   = 28
	offWindowLen = 30
	offStart     = 32
	offReserved  = 36
)

// recordMagic is "BRAL" (blkrep activity log) in byte order.
var recordMagic = [4]byte{'B', 'R', 'A', 'L'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// RecordType says what a record means.
type RecordType uint16

// Record types. Frozen.
const (
	// RecordTransaction changes slots (possibly none) and says the log is
	// open: writes may be in flight in every hot extent.
	RecordTransaction RecordType = 1
	// RecordClean is written at clean shutdown: no write is in flight
	// and every bitmap page is on disk, so after a restart the hot set
	// need not be resynced. It carries no updates.
	RecordClean RecordType = 2
)

func (t RecordType) String() string {
	switch t {
	case RecordTransaction:
		return "transaction"
	case RecordClean:
		return "clean"
	}
	return fmt.Sprintf("RecordType(%d)", uint16(t))
}

// Update puts Extent into Slot (EmptySlot empties it).
type Update struct {
	Slot   uint32
	Extent uint32
}

// Record is one decoded ring record.
type Record struct {
	Type RecordType
	// Seq is the record's sequence number, starting at 1 and growing by
	// one per durable record. It lives at ring index Seq % Ring.
	Seq uint64
	// Capacity is the number of slots in the table (the hot-set size),
	// Ring the number of records in the ring; both must match the
	// configuration that reads them.
	Capacity uint32
	Ring     uint32
	// Updates are the slot changes this record makes.
	Updates []Update
	// Start and Window are the rolling context: Window[i] is the extent
	// of slot (Start+i) % Capacity after this record's updates.
	// len(Window) is WindowLen(Capacity, len(Updates)).
	Start  uint32
	Window []uint32
}

// WindowLen is how many slots of context a record with the given number of
// updates carries: as many as fit in RecordSize after the header and the
// updates, and never more than the table.
func WindowLen(capacity, updates int) int {
	k := (RecordSize - headerSize - updateSize*updates) / windowSize
	return min(k, capacity)
}

// Encode returns the RecordSize bytes of r, CRC included. It fails with
// ErrCorrupt if r breaks a rule that DecodeRecord checks.
func (r *Record) Encode() ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	b := make([]byte, RecordSize)
	le := binary.LittleEndian
	copy(b[offMagic:], recordMagic[:])
	le.PutUint16(b[offVersion:], FormatVersion)
	le.PutUint16(b[offType:], uint16(r.Type))
	le.PutUint64(b[offSeq:], r.Seq)
	le.PutUint32(b[offCapacity:], r.Capacity)
	le.PutUint32(b[offRing:], r.Ring)
	le.PutUint16(b[offUpdates:], uint16(len(r.Updates)))
	le.PutUint16(b[offWindowLen:], uint16(len(r.Window)))
	le.PutUint32(b[offStart:], r.Start)
	p := headerSize
	for _, u := range r.Updates {
		le.PutUint32(b[p:], u.Slot)
		le.PutUint32(b[p+4:], u.Extent)
		p += updateSize
	}
	for _, e := range r.Window {
		le.PutUint32(b[p:], e)
		p += windowSize
	}
	le.PutUint32(b[offCRC:], recordCRC(b))
	return b, nil
}

// recordCRC is the CRC32C of the record with its CRC field taken as zero.
func recordCRC(b []byte) uint32 {
	var zero [4]byte
	crc := crc32.Update(0, castagnoli, b[:offCRC])
	crc = crc32.Update(crc, castagnoli, zero[:])
	return crc32.Update(crc, castagnoli, b[offCRC+4:])
}

// corrupt wraps ErrCorrupt with a reason.
func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// validate checks the rules shared by Encode and DecodeRecord.
func (r *Record) validate() error {
	switch {
	case r.Type != RecordTransaction && r.Type != RecordClean:
		return corrupt("unknown record type %d", uint16(r.Type))
	case r.Seq == 0 || r.Seq > MaxSeq:
		return corrupt("sequence %d (allowed 1..%d)", r.Seq, uint64(MaxSeq))
	case r.Capacity == 0 || r.Capacity > MaxExtents:
		return corrupt("capacity %d (allowed 1..%d)", r.Capacity, MaxExtents)
	case r.Ring < MinRingRecords || r.Ring > MaxRingRecords:
		return corrupt("ring of %d records (allowed %d..%d)", r.Ring, MinRingRecords, MaxRingRecords)
	case len(r.Updates) > MaxUpdatesLimit:
		return corrupt("%d updates (at most %d)", len(r.Updates), MaxUpdatesLimit)
	case r.Type == RecordClean && len(r.Updates) != 0:
		return corrupt("clean record with %d updates", len(r.Updates))
	case r.Start >= r.Capacity:
		return corrupt("window start %d outside %d slots", r.Start, r.Capacity)
	case len(r.Window) != WindowLen(int(r.Capacity), len(r.Updates)):
		return corrupt("window of %d slots, want %d", len(r.Window), WindowLen(int(r.Capacity), len(r.Updates)))
	}
	// Slots are unique within a record (the writer never updates a slot
	// twice in one transaction); the check is O(u log u), u <= 256.
	slots := make([]uint32, len(r.Updates))
	for i, u := range r.Updates {
		if u.Slot >= r.Capacity {
			return corrupt("update %d: slot %d outside %d slots", i, u.Slot, r.Capacity)
		}
		slots[i] = u.Slot
	}
	slices.Sort(slots)
	for i := 1; i < len(slots); i++ {
		if slots[i] == slots[i-1] {
			return corrupt("slot %d updated twice", slots[i])
		}
	}
	return nil
}

// DecodeRecord parses one ring record. It returns ErrBlank for a record
// that was never written (all zero bytes), ErrVersion for a record of a
// newer format (refuse the ring: do not guess), and ErrCorrupt (wrapped
// with the reason) for anything else that is not a valid record: a torn
// write, a wrong magic, a bad checksum, a field out of range. It never
// allocates more than a few KiB whatever the input.
func DecodeRecord(b []byte) (*Record, error) {
	if len(b) != RecordSize {
		return nil, corrupt("record of %d bytes, want %d", len(b), RecordSize)
	}
	le := binary.LittleEndian
	if !bytes.Equal(b[offMagic:offMagic+4], recordMagic[:]) {
		if isZero(b) {
			return nil, ErrBlank
		}
		return nil, corrupt("bad magic %x", b[offMagic:offMagic+4])
	}
	// The version is checked before the checksum: a newer format may
	// checksum differently, and mistaking it for a torn record would
	// silently replay an older state.
	switch v := le.Uint16(b[offVersion:]); {
	case v > FormatVersion:
		return nil, fmt.Errorf("%w: record format version %d, this build reads %d", ErrVersion, v, FormatVersion)
	case v != FormatVersion:
		return nil, corrupt("format version %d", v)
	}
	if want, got := le.Uint32(b[offCRC:]), recordCRC(b); want != got {
		return nil, corrupt("checksum %08x, computed %08x", want, got)
	}
	if le.Uint32(b[offReserved:]) != 0 {
		return nil, corrupt("reserved field set")
	}
	nu := int(le.Uint16(b[offUpdates:]))
	nw := int(le.Uint16(b[offWindowLen:]))
	// Bound both counts by the record before allocating.
	if nu > MaxUpdatesLimit || headerSize+updateSize*nu+windowSize*nw > RecordSize {
		return nil, corrupt("%d updates and %d window slots do not fit in a record", nu, nw)
	}
	r := &Record{
		Type:     RecordType(le.Uint16(b[offType:])),
		Seq:      le.Uint64(b[offSeq:]),
		Capacity: le.Uint32(b[offCapacity:]),
		Ring:     le.Uint32(b[offRing:]),
		Start:    le.Uint32(b[offStart:]),
		Updates:  make([]Update, nu),
		Window:   make([]uint32, nw),
	}
	p := headerSize
	for i := range r.Updates {
		r.Updates[i] = Update{Slot: le.Uint32(b[p:]), Extent: le.Uint32(b[p+4:])}
		p += updateSize
	}
	for i := range r.Window {
		r.Window[i] = le.Uint32(b[p:])
		p += windowSize
	}
	if !isZero(b[p:]) {
		return nil, corrupt("bytes after the window are not zero")
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	return r, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
