package check

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// SectorSize is the unit a stamp covers and a torn write is cut at.
const SectorSize = 512

// A stamped sector says which write put it where:
//
//	0     8  magic "BLKRTSEC"
//	8    16  id of the write (little endian)
//	16   24  byte offset of the sector on the device (little endian)
//	24  508  filler: a splitmix64 stream seeded from the id and the offset
//	508 512  CRC-32C (Castagnoli) of bytes 0..508 (little endian)
var magic = [8]byte{'B', 'L', 'K', 'R', 'T', 'S', 'E', 'C'}

const (
	fillerOff = 24
	crcOff    = SectorSize - 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var zeroSector [SectorSize]byte

// Fill stamps p, the data of write id at device offset off: every sector
// of p gets the stamp of (id, its own offset). len(p) and off must be
// multiples of SectorSize.
func Fill(p []byte, id uint64, off int64) {
	if len(p)%SectorSize != 0 || off%SectorSize != 0 || off < 0 {
		panic(fmt.Sprintf("check.Fill: %d bytes at %d: not whole sectors", len(p), off))
	}
	for i := 0; i < len(p); i += SectorSize {
		stamp(p[i:i+SectorSize], id, off+int64(i))
	}
}

// stamp writes the stamp of (id, off) into s (one sector).
func stamp(s []byte, id uint64, off int64) {
	_ = s[SectorSize-1]
	copy(s[0:8], magic[:])
	binary.LittleEndian.PutUint64(s[8:16], id)
	binary.LittleEndian.PutUint64(s[16:24], uint64(off))
	filler(s[fillerOff:crcOff], id, off)
	binary.LittleEndian.PutUint32(s[crcOff:], crc32.Checksum(s[:crcOff], castagnoli))
}

// filler writes the splitmix64 stream of (id, off) into b (484 bytes: 60
// words and 4 bytes of a 61st).
func filler(b []byte, id uint64, off int64) {
	x := id*0x9e3779b97f4a7c15 ^ uint64(off)*0xd1b54a32d192ed03
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x += 0x9e3779b97f4a7c15
		binary.LittleEndian.PutUint64(b[i:], mix(x))
	}
	if i < len(b) {
		x += 0x9e3779b97f4a7c15
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], mix(x))
		copy(b[i:], w[:])
	}
}

func mix(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// badKind says why a sector is not a valid stamp.
type badKind uint8

const (
	stampOK   badKind = iota
	badSize           // not SectorSize bytes
	badMagic          // not zero and no magic
	badCRC            // magic, but the checksum does not match
	badPlace          // a valid stamp made for another offset
	badFiller         // checksum right, filler wrong
)

// decode is Decode without formatting an error: at is the offset the
// stamp was made for (badPlace).
func decode(s []byte, off int64) (id uint64, zero bool, bad badKind, at int64) {
	if len(s) != SectorSize {
		return 0, false, badSize, 0
	}
	if !bytes.Equal(s[0:8], magic[:]) {
		if bytes.Equal(s, zeroSector[:]) {
			return 0, true, stampOK, 0
		}
		return 0, false, badMagic, 0
	}
	if binary.LittleEndian.Uint32(s[crcOff:]) != crc32.Checksum(s[:crcOff], castagnoli) {
		return 0, false, badCRC, 0
	}
	id = binary.LittleEndian.Uint64(s[8:16])
	if at = int64(binary.LittleEndian.Uint64(s[16:24])); at != off {
		return id, false, badPlace, at
	}
	var f [crcOff - fillerOff]byte
	filler(f[:], id, off)
	if !bytes.Equal(s[fillerOff:crcOff], f[:]) {
		return id, false, badFiller, 0
	}
	return id, false, stampOK, 0
}

// Decode reads the stamp of sector, read at device offset off. zero
// reports an all-zero sector (id 0, no error). Anything else that is not
// exactly what Fill makes for a write at off is an error naming what is
// wrong: a bad magic, a bad checksum, filler that does not match, or a
// stamp made for another offset (a sector written at the wrong place).
// With the last two, id is the write the stamp names, for messages.
func Decode(sector []byte, off int64) (id uint64, zero bool, err error) {
	id, zero, bad, at := decode(sector, off)
	if bad == stampOK {
		return id, zero, nil
	}
	return id, false, badError(sector, off, id, bad, at)
}

func badError(s []byte, off int64, id uint64, bad badKind, at int64) error {
	switch bad {
	case badSize:
		return fmt.Errorf("sector of %d bytes, not %d", len(s), SectorSize)
	case badMagic:
		return fmt.Errorf("not a stamp: bad magic (starts % x)", s[:16])
	case badCRC:
		return fmt.Errorf("stamp with a bad CRC (stored %08x, computed %08x)",
			binary.LittleEndian.Uint32(s[crcOff:]), crc32.Checksum(s[:crcOff], castagnoli))
	case badPlace:
		return fmt.Errorf("stamp of write #%d for offset %d found at offset %d (wrong offset)", id, at, off)
	default:
		return fmt.Errorf("stamp of write #%d whose filler does not match (bad filler)", id)
	}
}

// describe says what a sector at off holds, for messages: "write #5",
// "zero", or why it is not a stamp.
func describe(sector []byte, off int64) string {
	id, zero, err := Decode(sector, off)
	switch {
	case err != nil:
		return err.Error()
	case zero:
		return "zero"
	default:
		return fmt.Sprintf("write #%d", id)
	}
}
