package protocol

import (
	"encoding/binary"
	"fmt"
)

// Limits on variable fields.
const (
	MaxNameBytes   = 63
	MaxReasonBytes = 4096
	NonceSize      = 32
	MACSize        = 32
	SumSize        = 32
	// MaxRunsPerMsg bounds the runs of one MsgBitmap.
	MaxRunsPerMsg = 1 << 16
)

// Hello opens the handshake in both directions. The acceptor's Hello
// carries MAC, proving it knows the secret; the dialer answers with Auth.
type Hello struct {
	MinVersion, MaxVersion uint16
	Cluster, Volume        string
	From, To               string // node names
	Nonce                  [NonceSize]byte
	MAC                    []byte // empty or MACSize bytes
}

// Append encodes h after b.
func (h *Hello) Append(b []byte) []byte {
	e := enc{b}
	e.u16(h.MinVersion)
	e.u16(h.MaxVersion)
	e.str(h.Cluster)
	e.str(h.Volume)
	e.str(h.From)
	e.str(h.To)
	e.b = append(e.b, h.Nonce[:]...)
	e.bytes(h.MAC)
	return e.b
}

// DecodeHello decodes a MsgHello payload.
func DecodeHello(p []byte) (Hello, error) {
	d := dec{b: p, what: "hello"}
	var h Hello
	h.MinVersion, h.MaxVersion = d.u16(), d.u16()
	h.Cluster, h.Volume = d.str(MaxNameBytes), d.str(MaxNameBytes)
	h.From, h.To = d.str(MaxNameBytes), d.str(MaxNameBytes)
	copy(h.Nonce[:], d.need(NonceSize))
	h.MAC = d.bytes(MACSize)
	if err := d.done(); err != nil {
		return Hello{}, err
	}
	switch {
	case h.MinVersion == 0 || h.MinVersion > h.MaxVersion:
		return Hello{}, malformed("hello: version range %d..%d", h.MinVersion, h.MaxVersion)
	case len(h.MAC) != 0 && len(h.MAC) != MACSize:
		return Hello{}, malformed("hello: MAC of %d bytes", len(h.MAC))
	case h.Volume == "" || h.From == "" || h.To == "":
		return Hello{}, malformed("hello: empty volume or node name")
	}
	return h, nil
}

// Auth is the dialer's proof.
type Auth struct{ MAC [MACSize]byte }

// Append encodes a after b.
func (a *Auth) Append(b []byte) []byte { return append(b, a.MAC[:]...) }

// DecodeAuth decodes a MsgAuth payload.
func DecodeAuth(p []byte) (Auth, error) {
	if len(p) != MACSize {
		return Auth{}, malformed("auth: %d bytes", len(p))
	}
	var a Auth
	copy(a.MAC[:], p)
	return a, nil
}

// Refuse says why the sender gives up the connection.
type Refuse struct{ Reason string }

// Append encodes r after b.
func (r *Refuse) Append(b []byte) []byte {
	s := r.Reason
	if len(s) > MaxReasonBytes {
		s = s[:MaxReasonBytes]
	}
	e := enc{b}
	e.str(s)
	return e.b
}

// DecodeRefuse decodes a MsgRefuse payload.
func DecodeRefuse(p []byte) (Refuse, error) {
	d := dec{b: p, what: "refuse"}
	r := Refuse{Reason: d.str(MaxReasonBytes)}
	return r, d.done()
}

// Role of a replica.
type Role uint8

// Roles.
const (
	RoleSecondary Role = 0
	RolePrimary   Role = 1
)

func (r Role) String() string {
	if r == RolePrimary {
		return "Primary"
	}
	return "Secondary"
}

// StateFlags describe a replica in MsgState.
type StateFlags uint32

// State flags. Frozen.
const (
	StateCrashedPrimary StateFlags = 1 << 0
	StateInconsistent   StateFlags = 1 << 1 // mid-resync target or never synced: not a usable copy
	StateDirty          StateFlags = 1 << 2 // the bitmap for the receiver has bits set
	StateDiscardMyData  StateFlags = 1 << 3 // the operator asked this side to be the split-brain victim
	StateWasPrimary     StateFlags = 1 << 4 // primary at the disconnect
	StateFullSource     StateFlags = 1 << 5 // the operator asked for a full resync from this side
	knownStateFlags                = StateCrashedPrimary | StateInconsistent | StateDirty | StateDiscardMyData | StateWasPrimary | StateFullSource
)

// State is what a replica tells its peer at the handshake (and again in
// MsgGens when it changes while connected).
type State struct {
	VolumeUUID  [16]byte
	SizeBytes   uint64
	BytesPerBit uint32
	Protocol    byte // 'A', 'B' or 'C'
	Role        Role
	Flags       StateFlags
	Current     uint64
	Bitmap      uint64 // the sender's bitmap id for the receiver
	History     []uint64
	DirtyBytes  uint64 // out of sync with the receiver, as the sender counts it
	// PrimarySince is the unix time (ns) the sender became Primary
	// (discard-younger-primary); zero when Secondary.
	PrimarySince uint64
	// Term is the sender's failover data term: the failover term of the
	// data it holds (its own term while Primary, that of the primary it
	// was last in sync with while Secondary); zero when failover is off
	// or the term is unknown (docs/failover.md).
	Term uint64
}

// Append encodes s after b.
func (s *State) Append(b []byte) []byte {
	e := enc{b}
	e.b = append(e.b, s.VolumeUUID[:]...)
	e.u64(s.SizeBytes)
	e.u32(s.BytesPerBit)
	e.u8(s.Protocol)
	e.u8(uint8(s.Role))
	e.u32(uint32(s.Flags))
	e.u64(s.Current)
	e.u64(s.Bitmap)
	h := s.History
	if len(h) > HistoryLen {
		h = h[:HistoryLen]
	}
	e.u8(uint8(len(h)))
	for _, id := range h {
		e.u64(id)
	}
	e.u64(s.DirtyBytes)
	e.u64(s.PrimarySince)
	e.u64(s.Term)
	return e.b
}

// Inconsistent reports whether the sender's data is not a usable image.
func (s State) Inconsistent() bool { return s.Flags&StateInconsistent != 0 }

// DecodeState decodes a MsgState or MsgGens payload.
func DecodeState(p []byte) (State, error) {
	d := dec{b: p, what: "state"}
	var s State
	copy(s.VolumeUUID[:], d.need(16))
	s.SizeBytes = d.u64()
	s.BytesPerBit = d.u32()
	s.Protocol = d.u8()
	s.Role = Role(d.u8())
	s.Flags = StateFlags(d.u32())
	s.Current, s.Bitmap = d.u64(), d.u64()
	n := int(d.u8())
	if n > HistoryLen && d.err == nil {
		d.err = malformed("state: %d history entries (at most %d)", n, HistoryLen)
	}
	for i := 0; i < n && d.err == nil; i++ {
		s.History = append(s.History, d.u64())
	}
	s.DirtyBytes, s.PrimarySince, s.Term = d.u64(), d.u64(), d.u64()
	if err := d.done(); err != nil {
		return State{}, err
	}
	switch {
	case s.Protocol != 'A' && s.Protocol != 'B' && s.Protocol != 'C':
		return State{}, malformed("state: protocol %q", s.Protocol)
	case s.Role > RolePrimary:
		return State{}, malformed("state: role %d", s.Role)
	case s.Flags&^knownStateFlags != 0:
		return State{}, malformed("state: unknown flags %#x", uint32(s.Flags&^knownStateFlags))
	case s.BytesPerBit == 0 || s.BytesPerBit&(s.BytesPerBit-1) != 0:
		return State{}, malformed("state: bytes per bit %d", s.BytesPerBit)
	case s.SizeBytes == 0 || s.SizeBytes > 1<<62:
		return State{}, malformed("state: size %d", s.SizeBytes)
	}
	return s, nil
}

// Run is a range of set bits: [Start, Start+Len).
type Run struct{ Start, Len uint64 }

// BitmapMsg is one piece of a run-length-encoded bitmap: runs in
// increasing order, each encoded as (gap since the previous run's end,
// length) uvarints. A bitmap of 1 TiB at 4 KiB per bit with few changes
// travels in a few bytes.
type BitmapMsg struct {
	Runs []Run
}

// Append encodes m after b. The first gap is counted from bit 0 (every
// message stands alone); runs must be non-empty, increasing and not
// touching, as DecodeBitmap requires.
func (m *BitmapMsg) Append(b []byte) []byte {
	e := enc{b}
	e.u32(uint32(len(m.Runs)))
	var end uint64
	for _, r := range m.Runs {
		e.b = binary.AppendUvarint(e.b, r.Start-end)
		e.b = binary.AppendUvarint(e.b, r.Len)
		end = r.Start + r.Len
	}
	return e.b
}

// DecodeBitmap decodes a MsgBitmap payload. Runs must be non-empty, in
// increasing order, not touching, and end at or before maxBits.
func DecodeBitmap(p []byte, maxBits uint64) (BitmapMsg, error) {
	d := dec{b: p, what: "bitmap"}
	n := d.u32()
	if d.err != nil {
		return BitmapMsg{}, d.err
	}
	if n > MaxRunsPerMsg {
		return BitmapMsg{}, malformed("bitmap: %d runs (at most %d)", n, MaxRunsPerMsg)
	}
	m := BitmapMsg{Runs: make([]Run, 0, min(n, uint32(len(p)/2)))}
	var end uint64
	for i := uint32(0); i < n; i++ {
		gap, k := binary.Uvarint(d.b)
		if k <= 0 {
			return BitmapMsg{}, malformed("bitmap: bad gap in run %d", i)
		}
		d.b = d.b[k:]
		l, k := binary.Uvarint(d.b)
		if k <= 0 {
			return BitmapMsg{}, malformed("bitmap: bad length in run %d", i)
		}
		d.b = d.b[k:]
		if l == 0 || (i > 0 && gap == 0) {
			return BitmapMsg{}, malformed("bitmap: run %d is empty or touches the previous one", i)
		}
		start := end + gap
		if start < end || start+l < start || start+l > maxBits {
			return BitmapMsg{}, malformed("bitmap: run %d [%d, +%d) is beyond %d bits", i, start, l, maxBits)
		}
		m.Runs = append(m.Runs, Run{start, l})
		end = start + l
	}
	if err := d.done(); err != nil {
		return BitmapMsg{}, err
	}
	return m, nil
}

// DataKind says what a MsgData does.
type DataKind uint8

// Data kinds.
const (
	KindWrite  DataKind = 0
	KindTrim   DataKind = 1
	KindZeroes DataKind = 2
)

// DataFlags modify a MsgData.
type DataFlags uint8

// Data flags.
const (
	DataFUA DataFlags = 1 << 0 // durable on the peer before its ack
)

// Data is a replicated write. For KindWrite the payload follows the
// fixed part; Trim and Zeroes carry only the range.
type Data struct {
	Seq    uint64
	Offset uint64
	Length uint32
	Kind   DataKind
	Flags  DataFlags
	Data   []byte // KindWrite: Length bytes (aliases the receive buffer when decoded)
}

// DataFixed is the size of a MsgData payload before the data.
const DataFixed = 8 + 8 + 4 + 1 + 1 + 2

// AppendFixed encodes the fixed part (the caller sends Data after it).
func (m *Data) AppendFixed(b []byte) []byte {
	e := enc{b}
	e.u64(m.Seq)
	e.u64(m.Offset)
	e.u32(m.Length)
	e.u8(uint8(m.Kind))
	e.u8(uint8(m.Flags))
	e.u16(0)
	return e.b
}

// PayloadLen is the payload size of m.
func (m *Data) PayloadLen() int {
	if m.Kind == KindWrite {
		return DataFixed + int(m.Length)
	}
	return DataFixed
}

// DecodeData decodes a MsgData payload for a volume of size bytes.
func DecodeData(p []byte, size uint64) (Data, error) {
	d := dec{b: p, what: "data"}
	var m Data
	m.Seq, m.Offset, m.Length = d.u64(), d.u64(), d.u32()
	m.Kind, m.Flags = DataKind(d.u8()), DataFlags(d.u8())
	pad := d.u16()
	if d.err != nil {
		return Data{}, d.err
	}
	switch {
	case pad != 0:
		return Data{}, malformed("data: reserved bytes set")
	case m.Kind > KindZeroes:
		return Data{}, malformed("data: kind %d", m.Kind)
	case m.Flags&^DataFUA != 0:
		return Data{}, malformed("data: flags %#x", m.Flags)
	case m.Length == 0 || m.Length > MaxData && m.Kind == KindWrite:
		return Data{}, malformed("data: length %d", m.Length)
	case m.Offset > size || uint64(m.Length) > size-m.Offset:
		return Data{}, malformed("data: [%d, +%d) is outside the %d-byte volume", m.Offset, m.Length, size)
	}
	if m.Kind == KindWrite {
		m.Data = d.need(int(m.Length))
	}
	if err := d.done(); err != nil {
		return Data{}, err
	}
	return m, nil
}

// U64 is a payload of one integer: acks carry a write sequence number,
// barriers and their acks an epoch, pings a token.
type U64 struct{ V uint64 }

// Append encodes u after b.
func (u U64) Append(b []byte) []byte { return binary.LittleEndian.AppendUint64(b, u.V) }

// DecodeU64 decodes an 8-byte payload.
func DecodeU64(p []byte, t MsgType) (U64, error) {
	if len(p) != 8 {
		return U64{}, malformed("%s: %d bytes", t, len(p))
	}
	return U64{binary.LittleEndian.Uint64(p)}, nil
}

// Range is a request or acknowledgement about [Offset, Offset+Length):
// MsgResyncReq, MsgResyncSame, MsgResyncAck, MsgVerifyReq; with Sum for
// MsgCsumReq and MsgVerifyRep.
type Range struct {
	Offset uint64
	Length uint32
	Sum    [SumSize]byte
}

// MaxRange bounds a resync or verify range.
const MaxRange = 1 << 20

// Append encodes r after b; withSum adds Sum.
func (r *Range) Append(b []byte, withSum bool) []byte {
	e := enc{b}
	e.u64(r.Offset)
	e.u32(r.Length)
	if withSum {
		e.b = append(e.b, r.Sum[:]...)
	}
	return e.b
}

// DecodeRange decodes a range message for a volume of size bytes.
func DecodeRange(p []byte, t MsgType, size uint64, withSum bool) (Range, error) {
	d := dec{b: p, what: t.String()}
	var r Range
	r.Offset, r.Length = d.u64(), d.u32()
	if withSum {
		copy(r.Sum[:], d.need(SumSize))
	}
	if err := d.done(); err != nil {
		return Range{}, err
	}
	if r.Length == 0 || r.Length > MaxRange || r.Offset > size || uint64(r.Length) > size-r.Offset {
		return Range{}, malformed("%s: [%d, +%d) is not a valid range of the %d-byte volume", t, r.Offset, r.Length, size)
	}
	return r, nil
}

// ResyncData answers a resync request. Hole: the range reads as zeroes
// and no data follows.
type ResyncData struct {
	Offset uint64
	Length uint32
	Hole   bool
	Data   []byte
}

// Append encodes m after b.
func (m *ResyncData) Append(b []byte) []byte {
	e := enc{b}
	e.u64(m.Offset)
	e.u32(m.Length)
	if m.Hole {
		e.u8(1)
		return e.b
	}
	e.u8(0)
	return append(e.b, m.Data...)
}

// DecodeResyncData decodes a MsgResyncData payload.
func DecodeResyncData(p []byte, size uint64) (ResyncData, error) {
	d := dec{b: p, what: "resync-data"}
	var m ResyncData
	m.Offset, m.Length = d.u64(), d.u32()
	hole := d.u8()
	if d.err != nil {
		return ResyncData{}, d.err
	}
	if hole > 1 || m.Length == 0 || m.Length > MaxRange || m.Offset > size || uint64(m.Length) > size-m.Offset {
		return ResyncData{}, malformed("resync-data: [%d, +%d) hole=%d", m.Offset, m.Length, hole)
	}
	m.Hole = hole == 1
	if !m.Hole {
		m.Data = d.need(int(m.Length))
	}
	if err := d.done(); err != nil {
		return ResyncData{}, err
	}
	return m, nil
}

// Describe renders a message for logs (tests and debugging).
func Describe(t MsgType, p []byte) string { return fmt.Sprintf("%s (%d bytes)", t, len(p)) }
