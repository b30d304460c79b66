package activelog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// sampleRecord is a valid record with a few updates and a wrapping window.
func sampleRecord() *Record {
	r := &Record{Type: RecordTransaction, Seq: 42, Capacity: 1237, Ring: 8, Start: 1000,
		Updates: []Update{{Slot: 3, Extent: 77}, {Slot: 1236, Extent: 5}, {Slot: 0, Extent: EmptySlot}}}
	r.Window = make([]uint32, WindowLen(1237, len(r.Updates)))
	for i := range r.Window {
		r.Window[i] = uint32(i * 3)
	}
	return r
}

func TestWindowLen(t *testing.T) {
	for _, tc := range []struct{ capacity, updates, want int }{
		{1237, 0, 1014}, {1237, 64, 886}, {1237, 256, 502}, {10, 64, 10}, {1, 0, 1},
	} {
		if got := WindowLen(tc.capacity, tc.updates); got != tc.want {
			t.Errorf("WindowLen(%d, %d) = %d, want %d", tc.capacity, tc.updates, got, tc.want)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	recs := []*Record{sampleRecord(),
		{Type: RecordClean, Seq: 1, Capacity: 3, Ring: 2, Start: 2, Window: []uint32{EmptySlot, EmptySlot, EmptySlot}},
	}
	for _, r := range recs {
		b, err := r.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != RecordSize || !bytes.Equal(b[:4], []byte("BRAL")) {
			t.Fatalf("bad encoding: %d bytes, magic %q", len(b), b[:4])
		}
		got, err := DecodeRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		b2, err := got.Encode()
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("re-encoding differs (err %v)", err)
		}
	}
}

// reCRC recomputes the checksum after a field was patched.
func reCRC(b []byte) { binary.LittleEndian.PutUint32(b[offCRC:], recordCRC(b)) }

func TestDecodeRecordErrors(t *testing.T) {
	good, err := sampleRecord().Encode()
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	tests := []struct {
		name  string
		patch func(b []byte) []byte
		err   error
	}{
		{"valid", func(b []byte) []byte { return b }, nil},
		{"blank", func(b []byte) []byte { return make([]byte, RecordSize) }, ErrBlank},
		{"short", func(b []byte) []byte { return b[:RecordSize-1] }, ErrCorrupt},
		{"long", func(b []byte) []byte { return append(b, 0) }, ErrCorrupt},
		{"empty", func(b []byte) []byte { return nil }, ErrCorrupt},
		{"bad magic", func(b []byte) []byte { b[0] = 'X'; return b }, ErrCorrupt},
		{"zero magic, data after", func(b []byte) []byte { copy(b, []byte{0, 0, 0, 0}); return b }, ErrCorrupt},
		{"future version", func(b []byte) []byte { le.PutUint16(b[offVersion:], 2); return b }, ErrVersion},
		{"future version, CRC fixed", func(b []byte) []byte { le.PutUint16(b[offVersion:], 9); reCRC(b); return b }, ErrVersion},
		{"version 0", func(b []byte) []byte { le.PutUint16(b[offVersion:], 0); reCRC(b); return b }, ErrCorrupt},
		{"bit flip in window", func(b []byte) []byte { b[2000] ^= 1; return b }, ErrCorrupt},
		{"bit flip in CRC", func(b []byte) []byte { b[offCRC] ^= 1; return b }, ErrCorrupt},
		{"torn: second half zero", func(b []byte) []byte { clear(b[2048:]); return b }, ErrCorrupt},
		{"unknown type", func(b []byte) []byte { le.PutUint16(b[offType:], 3); reCRC(b); return b }, ErrCorrupt},
		{"sequence 0", func(b []byte) []byte { le.PutUint64(b[offSeq:], 0); reCRC(b); return b }, ErrCorrupt},
		{"sequence too large", func(b []byte) []byte { le.PutUint64(b[offSeq:], 1<<63); reCRC(b); return b }, ErrCorrupt},
		{"capacity 0", func(b []byte) []byte { le.PutUint32(b[offCapacity:], 0); reCRC(b); return b }, ErrCorrupt},
		{"capacity huge", func(b []byte) []byte { le.PutUint32(b[offCapacity:], 1<<31); reCRC(b); return b }, ErrCorrupt},
		{"ring 1", func(b []byte) []byte { le.PutUint32(b[offRing:], 1); reCRC(b); return b }, ErrCorrupt},
		{"updates count huge", func(b []byte) []byte { le.PutUint16(b[offUpdates:], 0xFFFF); reCRC(b); return b }, ErrCorrupt},
		{"window count huge", func(b []byte) []byte { le.PutUint16(b[offWindowLen:], 0xFFFF); reCRC(b); return b }, ErrCorrupt},
		{"window shorter than it fits", func(b []byte) []byte {
			n := le.Uint16(b[offWindowLen:]) - 1
			le.PutUint16(b[offWindowLen:], n)
			clear(b[headerSize+3*updateSize+int(n)*windowSize:])
			reCRC(b)
			return b
		}, ErrCorrupt},
		{"start outside table", func(b []byte) []byte { le.PutUint32(b[offStart:], 1237); reCRC(b); return b }, ErrCorrupt},
		{"update slot outside table", func(b []byte) []byte { le.PutUint32(b[headerSize:], 5000); reCRC(b); return b }, ErrCorrupt},
		{"slot updated twice", func(b []byte) []byte { le.PutUint32(b[headerSize+updateSize:], 3); reCRC(b); return b }, ErrCorrupt},
		{"reserved set", func(b []byte) []byte { b[offReserved] = 1; reCRC(b); return b }, ErrCorrupt},
		{"garbage after a short window", func([]byte) []byte {
			r := &Record{Type: RecordTransaction, Seq: 9, Capacity: 4, Ring: 8, Window: []uint32{1, 2, 3, EmptySlot}}
			b, _ := r.Encode()
			b[RecordSize-1] = 1
			reCRC(b)
			return b
		}, ErrCorrupt},
		{"clean with updates", func(b []byte) []byte { le.PutUint16(b[offType:], uint16(RecordClean)); reCRC(b); return b }, ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.patch(bytes.Clone(good))
			_, err := DecodeRecord(b)
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
		})
	}
}

func TestEncodeRejectsInvalid(t *testing.T) {
	r := sampleRecord()
	r.Window = r.Window[:10]
	if _, err := r.Encode(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short window: err %v", err)
	}
}
