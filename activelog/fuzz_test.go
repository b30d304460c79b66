package activelog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

// fixCRC gives b the checksum it should have, if it looks like a record:
// the fuzzer then reaches the field checks behind the CRC.
func fixCRC(b []byte) {
	if len(b) == RecordSize && bytes.Equal(b[:4], recordMagic[:]) {
		binary.LittleEndian.PutUint32(b[offCRC:], recordCRC(b))
	}
}

// padRecord zero-pads data to RecordSize: records end in zeros, so the
// fuzzer works on short inputs (fast to mutate and minimize). Longer
// inputs are kept as they are and must fail.
func padRecord(data []byte) []byte {
	b := make([]byte, max(RecordSize, len(data)))
	copy(b, data)
	return b
}

func trimZeros(b []byte) []byte {
	n := len(b)
	for n > 0 && b[n-1] == 0 {
		n--
	}
	return b[:n]
}

// Seeds are short: records of a small table are mostly zeros, padRecord
// restores them, and the fuzzer minimizes a 4 KiB input slowly.
func FuzzDecodeRecord(f *testing.F) {
	small := &Record{Type: RecordTransaction, Seq: 7, Capacity: 5, Ring: 8, Start: 2,
		Updates: []Update{{Slot: 1, Extent: 70}, {Slot: 4, Extent: EmptySlot}}, Window: []uint32{3, 4, 1, 70, 9}}
	good, err := small.Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(trimZeros(good), false)
	f.Add(good[:30], true)
	f.Add([]byte{}, false)
	_, ring, _ := Format(Config{Extents: 5, RingRecords: 2})
	f.Add(trimZeros(ring[1]), false)
	f.Add(trimZeros(ring[1]), true)
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		b := padRecord(data)
		if fix {
			fixCRC(b)
		}
		r, err := DecodeRecord(b)
		if err != nil {
			if r != nil {
				t.Fatal("record and error")
			}
			if !errors.Is(err, ErrBlank) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		// A record that decodes is canonical: encoding it gives the input.
		enc, err := r.Encode()
		if err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatal("re-encoding differs from the input")
		}
	})
}

// fuzzRing builds a ring of records from fuzz input: a sequence of
// (length u16, bytes) chunks, one per record, each zero padded to
// RecordSize; records without a chunk are blank.
func fuzzRing(data []byte, records int, fix bool) [][]byte {
	ring := make([][]byte, records)
	for i := range ring {
		ring[i] = make([]byte, RecordSize)
		if len(data) >= 2 {
			n := min(int(binary.LittleEndian.Uint16(data)), RecordSize, len(data)-2)
			copy(ring[i], data[2:2+n])
			data = data[2+n:]
		}
		if fix {
			fixCRC(ring[i])
		}
	}
	return ring
}

// ringBytes is the inverse of fuzzRing.
func ringBytes(ring [][]byte) []byte {
	var out []byte
	for _, r := range ring {
		r = trimZeros(r)
		out = binary.LittleEndian.AppendUint16(out, uint16(len(r)))
		out = append(out, r...)
	}
	return out
}

func FuzzRecover(f *testing.F) {
	// Seeds: real rings of small geometries, after some churn. (Large
	// tables, whose records are full, are left to the unit and property
	// tests: the fuzzer minimizes 4 KiB records slowly.)
	for _, c := range []struct {
		extents uint16
		ring    uint8
	}{{4, 3}, {16, 2}, {40, 5}} {
		cfg := Config{Extents: int(c.extents), RingRecords: int(c.ring)}
		l, ring, err := Format(cfg)
		if err != nil {
			f.Fatal(err)
		}
		d := &disk{ring: ring}
		f.Add(ringBytes(d.ring), c.extents, c.ring, false)
		for i := 0; i < 5; i++ {
			for j := 0; j < min(int(c.extents)/2, 40); j++ {
				l.Begin(int64(i*97+j*13)%int64(3*c.extents)*ExtentSize, 1)
			}
			for l.NeedsTransaction() {
				tx, err := l.Prepare()
				if err != nil {
					break
				}
				d.write(tx)
				l.Commit(tx)
			}
		}
		f.Add(ringBytes(d.ring), c.extents, c.ring, false)
		f.Add(ringBytes(d.ring), c.extents, c.ring, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, extents uint16, records uint8, fix bool) {
		cfg := Config{Extents: 1 + int(extents)%3000, RingRecords: MinRingRecords + int(records)%7}
		if _, err := cfg.normalize(); err != nil {
			cfg.RingRecords = 8
		}
		ring := fuzzRing(data, cfg.RingRecords, fix)
		before := make([][]byte, len(ring))
		for i := range ring {
			before[i] = slices.Clone(ring[i])
		}
		l, info, err := Recover(ring, cfg)
		for i := range ring {
			if !bytes.Equal(ring[i], before[i]) {
				t.Fatal("Recover modified its input")
			}
		}
		if err != nil {
			if l != nil {
				t.Fatal("log and error")
			}
			for _, e := range []error{ErrGeometry, ErrVersion, ErrNoValidRecord, ErrLostRecords, ErrCorrupt} {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("unexpected error class: %v", err)
		}
		if err := l.check(); err != nil {
			t.Fatalf("recovered log: %v", err)
		}
		if info.Valid+info.Blank+info.Corrupt != cfg.RingRecords || info.Valid == 0 {
			t.Fatalf("counts %+v", info)
		}
		if !slices.IsSorted(info.Hot) || len(info.Hot) > cfg.Extents || !slices.Equal(info.Hot, l.Hot()) {
			t.Fatalf("hot set %v", info.Hot)
		}
		// The recovered log keeps working, and the ring it writes
		// recovers to the same state.
		d := &disk{ring: ring}
		tk, err := l.Begin(int64(MaxExtent)*ExtentSize, 1)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := l.Prepare()
		if errors.Is(err, ErrNoVictim) || tx == nil {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		d.write(tx)
		if _, err := l.Commit(tx); err != nil || !tk.Ready() {
			t.Fatalf("commit %v ready %v", err, tk.Ready())
		}
		_, info2, err := Recover(d.ring, cfg)
		if err != nil {
			t.Fatalf("re-recover: %v", err)
		}
		if !slices.Equal(info2.Hot, l.Hot()) || info2.NewestSeq != tx.Seq {
			t.Fatalf("re-recovered %v (newest %d), have %v (seq %d)", info2.Hot, info2.NewestSeq, l.Hot(), tx.Seq)
		}
	})
}
