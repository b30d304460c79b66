package protocol

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
)

// testSize is the volume size the range checks run against (1 GiB).
const testSize = 1 << 30

// Sample messages: the round-trip tables and the fuzz seeds use them.

func testNonce(b byte) (n [NonceSize]byte) {
	for i := range n {
		n[i] = b + byte(i)
	}
	return n
}

func testHellos() []Hello {
	mac := bytes.Repeat([]byte{0xa5}, MACSize)
	return []Hello{
		{MinVersion: 1, MaxVersion: 1, Cluster: "prod", Volume: "vol0", From: "alpha", To: "beta", Nonce: testNonce(1)},
		{MinVersion: 1, MaxVersion: 3, Cluster: "prod", Volume: "vol0", From: "beta", To: "alpha", Nonce: testNonce(9), MAC: mac},
		{MinVersion: 2, MaxVersion: 2, Volume: strings.Repeat("v", MaxNameBytes), From: strings.Repeat("f", MaxNameBytes),
			To: "t", Nonce: testNonce(200)},
	}
}

func testStates() []State {
	hist := make([]uint64, HistoryLen)
	for i := range hist {
		hist[i] = 0x1000 + uint64(i)
	}
	return []State{
		{VolumeUUID: [16]byte{1, 2, 3}, SizeBytes: testSize, BytesPerBit: 4096, Protocol: 'C', Current: 7},
		{VolumeUUID: [16]byte{15: 9}, SizeBytes: 1 << 62, BytesPerBit: 1 << 20, Protocol: 'A', Role: RolePrimary,
			Flags: StateCrashedPrimary | StateWasPrimary | StateDirty, Current: 0xdeadbeef, Bitmap: 7, History: []uint64{5, 3},
			DirtyBytes: 12345, PrimarySince: 1_700_000_000_000_000_000, Term: 4},
		{SizeBytes: 1, BytesPerBit: 1, Protocol: 'B', Flags: knownStateFlags, Current: 1, Bitmap: 2, History: hist,
			DirtyBytes: ^uint64(0), PrimarySince: ^uint64(0), Term: ^uint64(0)},
	}
}

// testBitmaps pairs a message with the maxBits it is decoded against.
func testBitmaps() []struct {
	m       BitmapMsg
	maxBits uint64
} {
	return []struct {
		m       BitmapMsg
		maxBits uint64
	}{
		{BitmapMsg{}, 0},
		{BitmapMsg{Runs: []Run{{0, 1}}}, 1},
		{BitmapMsg{Runs: []Run{{3, 2}, {6, 1}, {100, 28}}}, 128},
		{BitmapMsg{Runs: []Run{{0, 1}, {1 << 40, 5}, {1<<50 + 1, 1 << 33}, {1<<62 - 1, 1}}}, 1 << 62},
	}
}

func testData() []Data {
	w := make([]byte, 4096)
	for i := range w {
		w[i] = byte(i * 7)
	}
	return []Data{
		{Seq: 1, Offset: 0, Length: 4096, Kind: KindWrite, Data: w},
		{Seq: 2, Offset: testSize - 512, Length: 512, Kind: KindWrite, Flags: DataFUA, Data: w[:512]},
		{Seq: 3, Offset: 8192, Length: 1 << 20, Kind: KindTrim},
		{Seq: 4, Offset: 0, Length: testSize, Kind: KindZeroes, Flags: DataFUA},
		{Seq: ^uint64(0), Offset: 1, Length: 1, Kind: KindWrite, Data: []byte{0xff}},
	}
}

func testRanges() []Range {
	var sum [SumSize]byte
	for i := range sum {
		sum[i] = byte(255 - i)
	}
	return []Range{
		{Offset: 0, Length: 4096},
		{Offset: testSize - MaxRange, Length: MaxRange, Sum: sum},
		{Offset: 12345, Length: 1, Sum: sum},
	}
}

func testResyncData() []ResyncData {
	return []ResyncData{
		{Offset: 0, Length: 4096, Hole: true},
		{Offset: testSize - MaxRange, Length: MaxRange, Hole: true},
		{Offset: 4096, Length: 3, Data: []byte{1, 2, 3}},
	}
}

// appendData encodes a whole MsgData payload as a sender does: the fixed
// part, then the data for a write.
func appendData(b []byte, m *Data) []byte {
	b = m.AppendFixed(b)
	if m.Kind == KindWrite {
		b = append(b, m.Data...)
	}
	return b
}

func helloEqual(a, b Hello) bool {
	return a.MinVersion == b.MinVersion && a.MaxVersion == b.MaxVersion && a.Cluster == b.Cluster &&
		a.Volume == b.Volume && a.From == b.From && a.To == b.To && a.Nonce == b.Nonce && bytes.Equal(a.MAC, b.MAC)
}

func stateEqual(a, b State) bool {
	if !slices.Equal(a.History, b.History) {
		return false
	}
	a.History, b.History = nil, nil
	return a.VolumeUUID == b.VolumeUUID && a.SizeBytes == b.SizeBytes && a.BytesPerBit == b.BytesPerBit &&
		a.Protocol == b.Protocol && a.Role == b.Role && a.Flags == b.Flags && a.Current == b.Current &&
		a.Bitmap == b.Bitmap && a.DirtyBytes == b.DirtyBytes && a.PrimarySince == b.PrimarySince && a.Term == b.Term
}

func dataEqual(a, b Data) bool {
	return a.Seq == b.Seq && a.Offset == b.Offset && a.Length == b.Length && a.Kind == b.Kind &&
		a.Flags == b.Flags && bytes.Equal(a.Data, b.Data)
}

func resyncDataEqual(a, b ResyncData) bool {
	return a.Offset == b.Offset && a.Length == b.Length && a.Hole == b.Hole && bytes.Equal(a.Data, b.Data)
}

func wantMalformed(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: decoded, want ErrMalformed", what)
	} else if !errors.Is(err, ErrMalformed) {
		t.Errorf("%s: error %v does not wrap ErrMalformed", what, err)
	}
}

func TestHeader(t *testing.T) {
	for typ := range msgNames {
		for _, n := range []int{0, 1, DataFixed + 4096, MaxPayload} {
			b := make([]byte, HeaderSize)
			PutHeader(b, typ, n)
			if string(b[:4]) != "BLKR" {
				t.Fatalf("magic bytes %q, want BLKR", b[:4])
			}
			h, err := DecodeHeader(b)
			if err != nil || h.Type != typ || h.Length != uint32(n) {
				t.Errorf("%s/%d: got %+v, %v", typ, n, h, err)
			}
		}
	}
	// The layout, byte for byte.
	b := make([]byte, HeaderSize)
	PutHeader(b, MsgData, 0x01020304)
	if want := "424c4b52" + "0a00" + "0000" + "04030201" + "00000000"; hex.EncodeToString(b) != want {
		t.Errorf("header %x, want %s", b, want)
	}

	good := func() []byte { b := make([]byte, HeaderSize); PutHeader(b, MsgPing, 8); return b }
	for _, tc := range []struct {
		name string
		mut  func(b []byte) []byte
	}{
		{"empty", func(b []byte) []byte { return nil }},
		{"short", func(b []byte) []byte { return b[:HeaderSize-1] }},
		{"bad magic", func(b []byte) []byte { b[0] ^= 1; return b }},
		{"NBD magic", func(b []byte) []byte { copy(b, "NBDM"); return b }},
		{"reserved flags", func(b []byte) []byte { b[6] = 1; return b }},
		{"reserved flags high", func(b []byte) []byte { b[7] = 0x80; return b }},
		{"reserved crc", func(b []byte) []byte { b[15] = 1; return b }},
		{"too long", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], MaxPayload+1); return b }},
		{"type 0", func(b []byte) []byte { binary.LittleEndian.PutUint16(b[4:], 0); return b }},
		{"type 7", func(b []byte) []byte { binary.LittleEndian.PutUint16(b[4:], 7); return b }},
		{"type 29", func(b []byte) []byte { binary.LittleEndian.PutUint16(b[4:], 29); return b }},
		{"type 0xffff", func(b []byte) []byte { binary.LittleEndian.PutUint16(b[4:], 0xffff); return b }},
	} {
		_, err := DecodeHeader(tc.mut(good()))
		wantMalformed(t, tc.name, err)
	}
	// A longer buffer is fine: only the first HeaderSize bytes count.
	if _, err := DecodeHeader(append(good(), 1, 2, 3)); err != nil {
		t.Errorf("header followed by payload: %v", err)
	}
}

func TestMsgTypeString(t *testing.T) {
	if s := MsgBarrierAck.String(); s != "barrier-ack" {
		t.Errorf("MsgBarrierAck = %q", s)
	}
	if s := MsgType(99).String(); s != "msg(99)" {
		t.Errorf("MsgType(99) = %q", s)
	}
	if s := Describe(MsgPing, make([]byte, 8)); s != "ping (8 bytes)" {
		t.Errorf("Describe = %q", s)
	}
}

func TestHelloRoundTrip(t *testing.T) {
	for i, h := range testHellos() {
		p := h.Append([]byte("prefix"))
		if string(p[:6]) != "prefix" {
			t.Fatalf("%d: Append overwrote its prefix", i)
		}
		got, err := DecodeHello(p[6:])
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !helloEqual(got, h) {
			t.Errorf("%d: got %+v, want %+v", i, got, h)
		}
		if len(h.MAC) == MACSize && !bytes.Equal(got.MAC, h.MAC) {
			t.Errorf("%d: MAC %x, want %x", i, got.MAC, h.MAC)
		}
	}
}

func TestHelloRejects(t *testing.T) {
	base := testHellos()[1]
	for _, tc := range []struct {
		name string
		mut  func(h *Hello)
	}{
		{"version 0", func(h *Hello) { h.MinVersion, h.MaxVersion = 0, 1 }},
		{"version range inverted", func(h *Hello) { h.MinVersion, h.MaxVersion = 3, 2 }},
		{"MAC of 1 byte", func(h *Hello) { h.MAC = []byte{1} }},
		{"MAC of 31 bytes", func(h *Hello) { h.MAC = make([]byte, MACSize-1) }},
		{"MAC of 33 bytes", func(h *Hello) { h.MAC = make([]byte, MACSize+1) }},
		{"MAC of 64 bytes", func(h *Hello) { h.MAC = make([]byte, 64) }},
		{"empty volume", func(h *Hello) { h.Volume = "" }},
		{"empty from", func(h *Hello) { h.From = "" }},
		{"empty to", func(h *Hello) { h.To = "" }},
		{"long cluster", func(h *Hello) { h.Cluster = strings.Repeat("c", MaxNameBytes+1) }},
		{"long volume", func(h *Hello) { h.Volume = strings.Repeat("v", MaxNameBytes+1) }},
		{"long from", func(h *Hello) { h.From = strings.Repeat("f", MaxNameBytes+1) }},
		{"long to", func(h *Hello) { h.To = strings.Repeat("t", 1000) }},
	} {
		h := base
		tc.mut(&h)
		_, err := DecodeHello(h.Append(nil))
		wantMalformed(t, tc.name, err)
	}
	// A string length prefix that claims 4 GiB.
	p := base.Append(nil)
	binary.LittleEndian.PutUint32(p[4:], 0xffffffff)
	_, err := DecodeHello(p)
	wantMalformed(t, "huge cluster length", err)
}

func TestAuthRoundTrip(t *testing.T) {
	a := Auth{MAC: [MACSize]byte{1, 2, 3, 31: 4}}
	p := a.Append(nil)
	if len(p) != MACSize {
		t.Fatalf("auth payload of %d bytes", len(p))
	}
	got, err := DecodeAuth(p)
	if err != nil || got != a {
		t.Errorf("got %v, %v", got, err)
	}
	for _, n := range []int{0, MACSize - 1, MACSize + 1} {
		_, err := DecodeAuth(make([]byte, n))
		wantMalformed(t, fmt.Sprintf("auth of %d bytes", n), err)
	}
}

func TestRefuse(t *testing.T) {
	for _, reason := range []string{"", "authentication failed", strings.Repeat("x", MaxReasonBytes)} {
		r := Refuse{Reason: reason}
		got, err := DecodeRefuse(r.Append(nil))
		if err != nil || got.Reason != reason {
			t.Errorf("%q: got %q, %v", reason, got.Reason, err)
		}
	}
	long := strings.Repeat("0123456789", MaxReasonBytes/10+50)
	got, err := DecodeRefuse((&Refuse{Reason: long}).Append(nil))
	if err != nil || got.Reason != long[:MaxReasonBytes] {
		t.Errorf("long reason: got %d bytes, %v; want it cut to %d", len(got.Reason), err, MaxReasonBytes)
	}
	// A peer that does not cut its reason is refused.
	e := enc{}
	e.str(long)
	_, err = DecodeRefuse(e.b)
	wantMalformed(t, "reason over the limit", err)
}

func TestStateRoundTrip(t *testing.T) {
	for i, s := range testStates() {
		got, err := DecodeState(s.Append(nil))
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !stateEqual(got, s) {
			t.Errorf("%d: got %+v, want %+v", i, got, s)
		}
		if got.Inconsistent() != (s.Flags&StateInconsistent != 0) {
			t.Errorf("%d: Inconsistent() = %v", i, got.Inconsistent())
		}
	}
	// Append keeps the newest HistoryLen entries.
	s := testStates()[0]
	for i := range HistoryLen + 4 {
		s.History = append(s.History, uint64(100+i))
	}
	got, err := DecodeState(s.Append(nil))
	if err != nil || !slices.Equal(got.History, s.History[:HistoryLen]) {
		t.Errorf("long history: got %v, %v", got.History, err)
	}
}

// stateHistoryAt is the offset of the history count in a MsgState.
const stateHistoryAt = 16 + 8 + 4 + 1 + 1 + 4 + 8 + 8

func TestStateRejects(t *testing.T) {
	base := testStates()[1]
	for _, tc := range []struct {
		name string
		mut  func(s *State)
	}{
		{"protocol D", func(s *State) { s.Protocol = 'D' }},
		{"protocol c", func(s *State) { s.Protocol = 'c' }},
		{"protocol 0", func(s *State) { s.Protocol = 0 }},
		{"role 2", func(s *State) { s.Role = 2 }},
		{"unknown flag", func(s *State) { s.Flags |= 1 << 6 }},
		{"unknown high flag", func(s *State) { s.Flags = 1 << 31 }},
		{"bytes per bit 0", func(s *State) { s.BytesPerBit = 0 }},
		{"bytes per bit 4095", func(s *State) { s.BytesPerBit = 4095 }},
		{"bytes per bit 3<<12", func(s *State) { s.BytesPerBit = 3 << 12 }},
		{"size 0", func(s *State) { s.SizeBytes = 0 }},
		{"size 2^62+1", func(s *State) { s.SizeBytes = 1<<62 + 1 }},
		{"size 2^64-1", func(s *State) { s.SizeBytes = ^uint64(0) }},
	} {
		s := base
		tc.mut(&s)
		_, err := DecodeState(s.Append(nil))
		wantMalformed(t, tc.name, err)
	}
	// Too many history entries: a sender that does not cut its history.
	s := base
	s.History = nil
	p := s.Append(nil)
	if p[stateHistoryAt] != 0 {
		t.Fatalf("history count not at offset %d", stateHistoryAt)
	}
	long := slices.Clone(p[:stateHistoryAt])
	long = append(long, HistoryLen+1)
	for i := range HistoryLen + 1 {
		long = binary.LittleEndian.AppendUint64(long, uint64(i+1))
	}
	long = append(long, p[stateHistoryAt+1:]...)
	_, err := DecodeState(long)
	wantMalformed(t, "17 history entries", err)
	long[stateHistoryAt] = 255
	_, err = DecodeState(long)
	wantMalformed(t, "255 history entries", err)
	// The count says more entries than follow.
	p[stateHistoryAt] = 1
	_, err = DecodeState(p)
	wantMalformed(t, "history count beyond the payload", err)
}

// rawBitmap encodes a MsgBitmap with the given run count and (gap,
// length) pairs, bypassing Append.
func rawBitmap(count uint32, pairs ...uint64) []byte {
	b := binary.LittleEndian.AppendUint32(nil, count)
	for _, v := range pairs {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

func TestBitmapRoundTrip(t *testing.T) {
	for i, tc := range testBitmaps() {
		p := tc.m.Append(nil)
		got, err := DecodeBitmap(p, tc.maxBits)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !slices.Equal(got.Runs, tc.m.Runs) {
			t.Errorf("%d: got %v, want %v", i, got.Runs, tc.m.Runs)
		}
	}
	// Gaps, not positions: a few runs far apart stay small.
	m := BitmapMsg{Runs: []Run{{1 << 40, 1}, {1<<41 + 7, 3}}}
	if p := m.Append(nil); len(p) > 4+2*(6+1) {
		t.Errorf("two runs took %d bytes", len(p))
	}
	// The encoding of {3,2},{6,1}: count 2, gap 3 len 2, gap 1 len 1.
	if p := (&BitmapMsg{Runs: []Run{{3, 2}, {6, 1}}}).Append(nil); !bytes.Equal(p, []byte{2, 0, 0, 0, 3, 2, 1, 1}) {
		t.Errorf("encoding %x", p)
	}
}

func TestBitmapRejects(t *testing.T) {
	const maxBits = 1000
	for _, tc := range []struct {
		name string
		p    []byte
	}{
		{"no count", nil},
		{"short count", []byte{1, 0, 0}},
		{"count beyond the runs", rawBitmap(2, 0, 5)},
		{"count with no runs", rawBitmap(1)},
		{"too many runs", rawBitmap(MaxRunsPerMsg+1, 0, 1)},
		{"count 2^32-1", rawBitmap(0xffffffff, 0, 1)},
		{"missing length", rawBitmap(1, 0)},
		{"truncated varint", append(rawBitmap(1, 0), 0x80)},
		{"varint overflow", append(rawBitmap(1), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1)},
		{"empty run", rawBitmap(1, 0, 0)},
		{"empty later run", rawBitmap(2, 0, 3, 1, 0)},
		{"touching runs", rawBitmap(2, 0, 3, 0, 2)},
		{"out of order", (&BitmapMsg{Runs: []Run{{10, 2}, {5, 1}}}).Append(nil)},
		{"overlapping", (&BitmapMsg{Runs: []Run{{10, 5}, {12, 1}}}).Append(nil)},
		{"gap wraps around", rawBitmap(2, 10, 5, ^uint64(0)-10, 1)},
		{"length wraps around", rawBitmap(1, 10, ^uint64(0)-5)},
		{"beyond maxBits", rawBitmap(1, 999, 2)},
		{"start at maxBits", rawBitmap(1, maxBits, 1)},
		{"later run beyond maxBits", rawBitmap(2, 0, 1, 990, 10)},
		{"trailing bytes", append(rawBitmap(1, 0, 1), 0)},
		{"trailing bytes after no runs", rawBitmap(0, 0)},
	} {
		_, err := DecodeBitmap(tc.p, maxBits)
		wantMalformed(t, tc.name, err)
	}
	// The limits themselves are fine.
	if _, err := DecodeBitmap(rawBitmap(2, 0, 1, 1, maxBits-2), maxBits); err != nil {
		t.Errorf("runs up to maxBits: %v", err)
	}
	if _, err := DecodeBitmap(rawBitmap(0), 0); err != nil {
		t.Errorf("no runs: %v", err)
	}
}

func TestDataRoundTrip(t *testing.T) {
	for i, m := range testData() {
		p := appendData(nil, &m)
		if len(p) != m.PayloadLen() {
			t.Errorf("%d: PayloadLen %d, payload %d bytes", i, m.PayloadLen(), len(p))
		}
		got, err := DecodeData(p, testSize)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !dataEqual(got, m) {
			t.Errorf("%d: got %+v, want %+v", i, got, m)
		}
		if m.Kind != KindWrite && got.Data != nil {
			t.Errorf("%d: %d data bytes for kind %d", i, len(got.Data), m.Kind)
		}
	}
	// Trim and write-zeroes may exceed MaxData: they carry no data.
	big := Data{Offset: 0, Length: MaxData + 1, Kind: KindTrim}
	if _, err := DecodeData(big.AppendFixed(nil), testSize); err != nil {
		t.Errorf("trim over MaxData: %v", err)
	}
	// A write of MaxData (the NBD maximum) is accepted.
	full := Data{Length: MaxData, Data: make([]byte, MaxData)}
	if p := appendData(nil, &full); len(p) > MaxPayload {
		t.Errorf("largest write is %d bytes, over MaxPayload", len(p))
	} else if _, err := DecodeData(p, testSize); err != nil {
		t.Errorf("write of MaxData: %v", err)
	}
}

func TestDataRejects(t *testing.T) {
	w := testData()[0]
	for _, tc := range []struct {
		name string
		m    Data
		size uint64
		mut  func(p []byte) []byte
	}{
		{name: "length 0", m: Data{Kind: KindTrim}},
		{name: "write length 0", m: Data{Kind: KindWrite}},
		{name: "write over MaxData", m: Data{Length: MaxData + 1, Data: make([]byte, MaxData+1)}, size: 1 << 40},
		{name: "offset beyond size", m: Data{Offset: testSize + 1, Length: 1, Kind: KindTrim}},
		{name: "offset at size", m: Data{Offset: testSize, Length: 1, Kind: KindZeroes}},
		{name: "end beyond size", m: Data{Offset: testSize - 4095, Length: 4096, Kind: KindWrite, Data: make([]byte, 4096)}},
		{name: "end wraps around", m: Data{Offset: ^uint64(0) - 10, Length: 4096, Kind: KindTrim}, size: ^uint64(0)},
		{name: "trim beyond size", m: Data{Length: testSize + 1, Kind: KindTrim}},
		{name: "empty volume", m: w, size: 1},
		{name: "kind 3", m: Data{Length: 1, Kind: 3}},
		{name: "kind 255", m: Data{Length: 1, Kind: 255}},
		{name: "flag 2", m: Data{Length: 1, Kind: KindTrim, Flags: 2}},
		{name: "flag 0x80", m: Data{Length: 1, Kind: KindTrim, Flags: DataFUA | 0x80}},
		{name: "reserved bytes", m: w, mut: func(p []byte) []byte { p[DataFixed-1] = 1; return p }},
		{name: "reserved byte low", m: w, mut: func(p []byte) []byte { p[DataFixed-2] = 1; return p }},
		{name: "data short", m: w, mut: func(p []byte) []byte { return p[:len(p)-1] }},
		{name: "data long", m: w, mut: func(p []byte) []byte { return append(p, 0) }},
		{name: "trim with data", m: Data{Length: 4, Kind: KindTrim}, mut: func(p []byte) []byte { return append(p, 1, 2, 3, 4) }},
		{name: "fixed part short", m: w, mut: func(p []byte) []byte { return p[:DataFixed-1] }},
	} {
		size := tc.size
		if size == 0 {
			size = testSize
		}
		p := tc.m.AppendFixed(nil)
		if tc.m.Kind == KindWrite {
			p = append(p, tc.m.Data...)
		}
		if tc.mut != nil {
			p = tc.mut(p)
		}
		_, err := DecodeData(p, size)
		wantMalformed(t, tc.name, err)
	}
}

func TestU64(t *testing.T) {
	for _, typ := range []MsgType{MsgRecvAck, MsgWriteAck, MsgNegAck, MsgBarrier, MsgBarrierAck, MsgPing, MsgPingAck, MsgResyncDone} {
		for _, v := range []uint64{0, 1, 0x0102030405060708, ^uint64(0)} {
			p := U64{v}.Append(nil)
			got, err := DecodeU64(p, typ)
			if err != nil || got.V != v {
				t.Errorf("%s %d: got %d, %v", typ, v, got.V, err)
			}
		}
		for _, n := range []int{0, 7, 9, 16} {
			_, err := DecodeU64(make([]byte, n), typ)
			wantMalformed(t, typ.String(), err)
		}
	}
	if p := (U64{0x0102030405060708}).Append(nil); !bytes.Equal(p, []byte{8, 7, 6, 5, 4, 3, 2, 1}) {
		t.Errorf("U64 is not little endian: %x", p)
	}
}

func TestRangeRoundTrip(t *testing.T) {
	for i, r := range testRanges() {
		for _, withSum := range []bool{false, true} {
			typ := MsgResyncReq
			if withSum {
				typ = MsgCsumReq
			}
			p := r.Append(nil, withSum)
			if want := 12 + map[bool]int{true: SumSize}[withSum]; len(p) != want {
				t.Errorf("%d: %d bytes, want %d", i, len(p), want)
			}
			got, err := DecodeRange(p, typ, testSize, withSum)
			if err != nil {
				t.Fatalf("%d/%v: %v", i, withSum, err)
			}
			want := r
			if !withSum {
				want.Sum = [SumSize]byte{}
			}
			if got != want {
				t.Errorf("%d/%v: got %+v, want %+v", i, withSum, got, want)
			}
		}
	}
}

func TestRangeRejects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		r       Range
		withSum bool
		mut     func(p []byte) []byte
	}{
		{name: "length 0", r: Range{Offset: 0}},
		{name: "over MaxRange", r: Range{Length: MaxRange + 1}},
		{name: "offset beyond size", r: Range{Offset: testSize + 1, Length: 1}},
		{name: "offset at size", r: Range{Offset: testSize, Length: 1}, withSum: true},
		{name: "end beyond size", r: Range{Offset: testSize - 1, Length: 2}},
		{name: "end wraps around", r: Range{Offset: ^uint64(0), Length: 2}},
		{name: "sum missing", r: Range{Length: 1}, withSum: true, mut: func(p []byte) []byte { return p[:12] }},
		{name: "sum short", r: Range{Length: 1}, withSum: true, mut: func(p []byte) []byte { return p[:len(p)-1] }},
		{name: "sum unexpected", r: Range{Length: 1}, mut: func(p []byte) []byte { return append(p, make([]byte, SumSize)...) }},
		{name: "trailing byte", r: Range{Length: 1}, mut: func(p []byte) []byte { return append(p, 0) }},
		{name: "short", r: Range{Length: 1}, mut: func(p []byte) []byte { return p[:11] }},
	} {
		p := tc.r.Append(nil, tc.withSum)
		if tc.mut != nil {
			p = tc.mut(p)
		}
		_, err := DecodeRange(p, MsgCsumReq, testSize, tc.withSum)
		wantMalformed(t, tc.name, err)
	}
}

func TestResyncDataRoundTrip(t *testing.T) {
	for i, m := range testResyncData() {
		p := m.Append(nil)
		got, err := DecodeResyncData(p, testSize)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !resyncDataEqual(got, m) {
			t.Errorf("%d: got %+v, want %+v", i, got, m)
		}
		if m.Hole && (len(p) != 13 || got.Data != nil) {
			t.Errorf("%d: hole of %d bytes with %d data bytes", i, len(p), len(got.Data))
		}
	}
	// A hole ignores Data: nothing follows the flag.
	m := ResyncData{Offset: 0, Length: 4, Hole: true, Data: []byte{1, 2, 3, 4}}
	if p := m.Append(nil); len(p) != 13 {
		t.Errorf("hole with data: %d bytes", len(p))
	}
}

func TestResyncDataRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    ResyncData
		mut  func(p []byte) []byte
	}{
		{name: "length 0", m: ResyncData{Hole: true}},
		{name: "over MaxRange", m: ResyncData{Length: MaxRange + 1, Hole: true}},
		{name: "beyond size", m: ResyncData{Offset: testSize - 1, Length: 2, Hole: true}},
		{name: "offset beyond size", m: ResyncData{Offset: testSize + 1, Length: 1, Hole: true}},
		{name: "end wraps around", m: ResyncData{Offset: ^uint64(0), Length: 2, Hole: true}},
		{name: "hole flag 2", m: ResyncData{Length: 1, Hole: true}, mut: func(p []byte) []byte { p[12] = 2; return p }},
		{name: "hole with data", m: ResyncData{Length: 1, Hole: true}, mut: func(p []byte) []byte { return append(p, 0) }},
		{name: "data short", m: ResyncData{Length: 3, Data: []byte{1, 2}}},
		{name: "data long", m: ResyncData{Length: 1, Data: []byte{1, 2}}},
		{name: "no flag", m: ResyncData{Length: 1, Hole: true}, mut: func(p []byte) []byte { return p[:12] }},
	} {
		p := tc.m.Append(nil)
		if tc.mut != nil {
			p = tc.mut(p)
		}
		_, err := DecodeResyncData(p, testSize)
		wantMalformed(t, tc.name, err)
	}
}

// validPayloads is one decoder per message kind with valid payloads for
// it: truncating or extending any of them must fail.
func validPayloads() []struct {
	name   string
	p      []byte
	decode func([]byte) error
} {
	type entry = struct {
		name   string
		p      []byte
		decode func([]byte) error
	}
	var out []entry
	add := func(name string, p []byte, decode func([]byte) error) { out = append(out, entry{name, p, decode}) }
	for _, h := range testHellos() {
		add("hello", h.Append(nil), func(p []byte) error { _, err := DecodeHello(p); return err })
	}
	add("auth", (&Auth{}).Append(nil), func(p []byte) error { _, err := DecodeAuth(p); return err })
	for _, r := range []string{"", "why"} {
		add("refuse", (&Refuse{Reason: r}).Append(nil), func(p []byte) error { _, err := DecodeRefuse(p); return err })
	}
	for _, s := range testStates() {
		add("state", s.Append(nil), func(p []byte) error { _, err := DecodeState(p); return err })
	}
	for _, b := range testBitmaps() {
		add("bitmap", b.m.Append(nil), func(p []byte) error { _, err := DecodeBitmap(p, b.maxBits); return err })
	}
	for _, m := range testData() {
		add("data", appendData(nil, &m), func(p []byte) error { _, err := DecodeData(p, testSize); return err })
	}
	add("u64", U64{5}.Append(nil), func(p []byte) error { _, err := DecodeU64(p, MsgBarrier); return err })
	for _, r := range testRanges() {
		add("range", r.Append(nil, false), func(p []byte) error { _, err := DecodeRange(p, MsgResyncAck, testSize, false); return err })
		add("range+sum", r.Append(nil, true), func(p []byte) error { _, err := DecodeRange(p, MsgCsumReq, testSize, true); return err })
	}
	for _, m := range testResyncData() {
		add("resync-data", m.Append(nil), func(p []byte) error { _, err := DecodeResyncData(p, testSize); return err })
	}
	return out
}

func TestTruncatedAndTrailing(t *testing.T) {
	for _, v := range validPayloads() {
		if err := v.decode(v.p); err != nil {
			t.Fatalf("%s: valid payload rejected: %v", v.name, err)
		}
		for n := range len(v.p) {
			wantMalformed(t, v.name+" truncated", v.decode(v.p[:n]))
		}
		wantMalformed(t, v.name+" with a trailing byte", v.decode(append(slices.Clone(v.p), 0)))
	}
}

func TestReadMessage(t *testing.T) {
	type msg struct {
		t MsgType
		p []byte
	}
	big := testData()[0]
	big.Length, big.Data = 100<<10, bytes.Repeat([]byte{0x5a}, 100<<10) // over the initial 64 KiB buffer
	st := testStates()[1]
	msgs := []msg{
		{MsgHello, testHellos()[0].Append(nil)},
		{MsgAuth, (&Auth{MAC: [MACSize]byte{7}}).Append(nil)},
		{MsgState, st.Append(nil)},
		{MsgBitmap, testBitmaps()[2].m.Append(nil)},
		{MsgBitmapDone, nil},
		{MsgData, appendData(nil, &big)},
		{MsgData, appendData(nil, &testData()[2])},
		{MsgBarrier, U64{1}.Append(nil)},
		{MsgCsumReq, testRanges()[1].Append(nil, true)},
		{MsgResyncData, testResyncData()[2].Append(nil)},
		{MsgRefuse, (&Refuse{Reason: "bye"}).Append(nil)},
	}
	var stream []byte
	for _, m := range msgs {
		h := make([]byte, HeaderSize)
		PutHeader(h, m.t, len(m.p))
		stream = append(append(stream, h...), m.p...)
	}
	for _, initial := range [][]byte{nil, make([]byte, 3), make([]byte, 0, 1<<20)} {
		r := bytes.NewReader(stream)
		buf := initial
		for i, m := range msgs {
			typ, p, nb, err := ReadMessage(r, buf)
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if typ != m.t || !bytes.Equal(p, m.p) {
				t.Fatalf("message %d: got %s of %d bytes, want %s of %d", i, typ, len(p), m.t, len(m.p))
			}
			buf = nb
		}
		if cap(initial) >= 1<<20 && &buf[:1][0] != &initial[:1][0] {
			t.Error("a large enough buffer was not reused")
		}
		if _, _, _, err := ReadMessage(r, buf); err != io.EOF {
			t.Errorf("at the end: %v, want io.EOF", err)
		}
	}
	// A stream cut inside a header or a payload.
	for _, n := range []int{1, HeaderSize - 1, HeaderSize + 1, HeaderSize + len(msgs[0].p) - 1} {
		_, _, _, err := ReadMessage(bytes.NewReader(stream[:n]), nil)
		if err != io.ErrUnexpectedEOF {
			t.Errorf("cut at %d: %v, want io.ErrUnexpectedEOF", n, err)
		}
	}
	// A bad header is malformed, and no payload is read.
	bad := slices.Clone(stream)
	bad[0] = 'X'
	r := bytes.NewReader(bad)
	_, _, _, err := ReadMessage(r, nil)
	wantMalformed(t, "bad magic in a stream", err)
	if r.Len() != len(bad)-HeaderSize {
		t.Errorf("read %d bytes after a bad header", len(bad)-r.Len())
	}
	// A header announcing more than MaxPayload is refused before allocating.
	huge := make([]byte, HeaderSize)
	PutHeader(huge, MsgData, MaxPayload)
	binary.LittleEndian.PutUint32(huge[8:], 0xffffffff)
	_, _, _, err = ReadMessage(bytes.NewReader(huge), nil)
	wantMalformed(t, "4 GiB payload", err)
}

func TestVersion(t *testing.T) {
	for _, tc := range []struct {
		aMin, aMax, bMin, bMax uint16
		want                   uint16
		ok                     bool
	}{
		{1, 1, 1, 1, 1, true},
		{1, 3, 2, 5, 3, true},
		{2, 5, 1, 3, 3, true},
		{1, 9, 4, 4, 4, true},
		{1, 2, 2, 2, 2, true},
		{1, 2, 3, 4, 0, false},
		{3, 4, 1, 2, 0, false},
		{MinVersion, MaxVersion, MaxVersion + 1, MaxVersion + 5, 0, false},
	} {
		v, ok := Version(tc.aMin, tc.aMax, tc.bMin, tc.bMax)
		if v != tc.want || ok != tc.ok {
			t.Errorf("Version(%d..%d, %d..%d) = %d, %v; want %d, %v", tc.aMin, tc.aMax, tc.bMin, tc.bMax, v, ok, tc.want, tc.ok)
		}
		if v2, ok2 := Version(tc.bMin, tc.bMax, tc.aMin, tc.aMax); v2 != v || ok2 != ok {
			t.Errorf("Version is not symmetric for %+v", tc)
		}
	}
}

// refMAC is the construction docs/format/wire.md describes, written out
// independently of AuthMAC.
func refMAC(secret []byte, role string, peerNonce, ownNonce [NonceSize]byte, cluster, volume, dialer, acceptor string, version uint16) []byte {
	var msg []byte
	for _, f := range [][]byte{[]byte("blkrep-auth-v1"), []byte(role), peerNonce[:], ownNonce[:],
		[]byte(cluster), []byte(volume), []byte(dialer), []byte(acceptor), {byte(version), byte(version >> 8)}} {
		msg = binary.LittleEndian.AppendUint32(msg, uint32(len(f)))
		msg = append(msg, f...)
	}
	m := hmac.New(sha256.New, secret)
	m.Write(msg)
	return m.Sum(nil)
}

func TestAuthMAC(t *testing.T) {
	type args struct {
		secret                            string
		role                              string
		peer, own                         [NonceSize]byte
		cluster, volume, dialer, acceptor string
		version                           uint16
	}
	mac := func(a args) [MACSize]byte {
		return AuthMAC([]byte(a.secret), a.role, a.peer, a.own, a.cluster, a.volume, a.dialer, a.acceptor, a.version)
	}
	base := args{"s3cret", "acceptor", testNonce(1), testNonce(100), "prod", "vol0", "alpha", "beta", 1}
	want := mac(base)
	if ref := refMAC([]byte(base.secret), base.role, base.peer, base.own, base.cluster, base.volume, base.dialer, base.acceptor, base.version); !bytes.Equal(want[:], ref) {
		t.Fatalf("AuthMAC %x differs from the documented construction %x", want, ref)
	}
	// Frozen: a change here breaks every mixed-version cluster.
	const golden = "a1bb8af21c517675c628484ac24469efa420e5aa8da6c651384f563d000f6461"
	if got := hex.EncodeToString(want[:]); got != golden {
		t.Errorf("AuthMAC of the base arguments = %s, want %s", got, golden)
	}

	seen := map[[MACSize]byte]string{want: "base"}
	for _, tc := range []struct {
		name string
		mut  func(a *args)
	}{
		{"role", func(a *args) { a.role = "dialer" }},
		{"nonces swapped", func(a *args) { a.peer, a.own = a.own, a.peer }},
		{"peer nonce", func(a *args) { a.peer[31] ^= 1 }},
		{"own nonce", func(a *args) { a.own[0] ^= 0x80 }},
		{"cluster", func(a *args) { a.cluster = "test" }},
		{"empty cluster", func(a *args) { a.cluster = "" }},
		{"volume", func(a *args) { a.volume = "vol1" }},
		{"dialer", func(a *args) { a.dialer = "gamma" }},
		{"acceptor", func(a *args) { a.acceptor = "gamma" }},
		{"nodes swapped", func(a *args) { a.dialer, a.acceptor = a.acceptor, a.dialer }},
		{"field boundary", func(a *args) { a.cluster, a.volume = "prodv", "ol0" }},
		{"version", func(a *args) { a.version = 2 }},
		{"secret", func(a *args) { a.secret = "s3creT" }},
		{"empty secret", func(a *args) { a.secret = "" }},
	} {
		a := base
		tc.mut(&a)
		got := mac(a)
		if prev, dup := seen[got]; dup {
			t.Errorf("changing %s gives the same MAC as %s", tc.name, prev)
		}
		seen[got] = tc.name
	}

	if !CheckMAC(want[:], want) {
		t.Error("CheckMAC rejects the exact MAC")
	}
	flipped := want
	flipped[17] ^= 4
	for name, got := range map[string][]byte{
		"nil": nil, "empty": {}, "one bit off": flipped[:], "short": want[:MACSize-1],
		"long": append(want[:], 0), "zero": make([]byte, MACSize),
	} {
		if CheckMAC(got, want) {
			t.Errorf("CheckMAC accepts %s", name)
		}
	}
}
