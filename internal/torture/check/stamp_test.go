package check

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"
)

func TestFillDecode(t *testing.T) {
	p := make([]byte, 4*SectorSize)
	Fill(p, 7, 8192)
	for i := range 4 {
		off := int64(8192 + i*SectorSize)
		id, zero, err := Decode(p[i*SectorSize:(i+1)*SectorSize], off)
		if err != nil || zero || id != 7 {
			t.Fatalf("sector %d: id %d zero %v err %v", i, id, zero, err)
		}
	}
	if !bytes.Equal(p[0:8], []byte("BLKRTSEC")) {
		t.Fatalf("magic % x", p[0:8])
	}
	// Filler differs with the id and with the offset.
	q := make([]byte, SectorSize)
	Fill(q, 8, 8192)
	if bytes.Equal(p[fillerOff:crcOff], q[fillerOff:crcOff]) {
		t.Fatal("filler does not depend on the id")
	}
	if bytes.Equal(p[fillerOff:crcOff], p[SectorSize+fillerOff:SectorSize+crcOff]) {
		t.Fatal("filler does not depend on the offset")
	}
	// Deterministic.
	r := make([]byte, 4*SectorSize)
	Fill(r, 7, 8192)
	if !bytes.Equal(p, r) {
		t.Fatal("Fill is not deterministic")
	}
}

func TestDecodeZero(t *testing.T) {
	id, zero, err := Decode(make([]byte, SectorSize), 512)
	if err != nil || !zero || id != 0 {
		t.Fatalf("id %d zero %v err %v", id, zero, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	good := make([]byte, SectorSize)
	Fill(good, 3, 1024)
	for _, tc := range []struct {
		name   string
		mangle func(s []byte) []byte
		off    int64
		want   string
		wantID uint64
	}{
		{"short", func(s []byte) []byte { return s[:100] }, 1024, "100 bytes", 0},
		{"magic", func(s []byte) []byte { s[0] ^= 1; return s }, 1024, "bad magic", 0},
		{"garbage", func(s []byte) []byte { clear(s); s[300] = 1; return s }, 1024, "bad magic", 0},
		{"crc", func(s []byte) []byte { s[200] ^= 0x80; return s }, 1024, "bad CRC", 0},
		{"crc field", func(s []byte) []byte { s[SectorSize-1] ^= 1; return s }, 1024, "bad CRC", 0},
		{"id", func(s []byte) []byte { s[8] ^= 1; return s }, 1024, "bad CRC", 0},
		{"wrong offset", func(s []byte) []byte { return s }, 2048, "wrong offset", 3},
	} {
		s := tc.mangle(bytes.Clone(good))
		id, zero, err := Decode(s, tc.off)
		if err == nil || zero || !strings.Contains(err.Error(), tc.want) || id != tc.wantID {
			t.Errorf("%s: id %d zero %v err %v, want %q", tc.name, id, zero, err, tc.want)
		}
	}
}

// Every single bit flip is detected.
func TestDecodeEveryBitFlip(t *testing.T) {
	good := make([]byte, SectorSize)
	Fill(good, 12345, 1<<30)
	for bit := range SectorSize * 8 {
		s := bytes.Clone(good)
		s[bit/8] ^= 1 << (bit % 8)
		if _, _, err := Decode(s, 1<<30); err == nil {
			t.Fatalf("bit %d flipped: no error", bit)
		}
	}
}

// A stamp with a valid CRC but the filler of another write is caught.
func TestDecodeBadFiller(t *testing.T) {
	s := make([]byte, SectorSize)
	Fill(s, 5, 0)
	other := make([]byte, SectorSize)
	Fill(other, 6, 0)
	copy(s[fillerOff:crcOff], other[fillerOff:crcOff])
	// Recompute the CRC so that only the filler is wrong.
	binary.LittleEndian.PutUint32(s[crcOff:], crc32.Checksum(s[:crcOff], crc32.MakeTable(crc32.Castagnoli)))
	if id, _, err := Decode(s, 0); err == nil || !strings.Contains(err.Error(), "filler") || id != 5 {
		t.Fatalf("id %d err %v", id, err)
	}
}

func TestFillPanicsOnPartialSectors(t *testing.T) {
	for _, tc := range []struct {
		n   int
		off int64
	}{{100, 0}, {512, 3}, {512, -512}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Fill(%d bytes at %d) did not panic", tc.n, tc.off)
				}
			}()
			Fill(make([]byte, tc.n), 1, tc.off)
		}()
	}
}

func BenchmarkDecode(b *testing.B) {
	s := make([]byte, SectorSize)
	Fill(s, 99, 4096)
	b.SetBytes(SectorSize)
	for b.Loop() {
		if _, _, err := Decode(s, 4096); err != nil {
			b.Fatal(err)
		}
	}
}
