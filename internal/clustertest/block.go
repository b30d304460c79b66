package clustertest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"
)

// BlockSize is the unit of the load writer: every write is one tagged
// block at a block-aligned offset.
const BlockSize = 4096

// A tagged block says what wrote it, so that a block read back can be
// matched to the write that put it there:
//
//	0     8  magic "BLKRTAG1"
//	8    16  sequence number of the write (unique in a writer's run, from 1)
//	16   24  byte offset of the block in the volume
//	24   32  when the write was issued (Unix nanoseconds)
//	32   48  the node the write was sent to (NUL padded)
//	48 4092  filler derived from the sequence number and the offset
//	4092     CRC-32C of bytes 0..4092
var tagMagic = [8]byte{'B', 'L', 'K', 'R', 'T', 'A', 'G', '1'}

const (
	tagNodeLen = 16
	tagCRCOff  = BlockSize - 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Tag identifies one write of the load writer.
type Tag struct {
	Seq    uint64
	Offset int64
	Issued time.Time
	Node   string
}

// Encode fills b (BlockSize bytes) with the block of t.
func (t Tag) Encode(b []byte) {
	_ = b[BlockSize-1]
	copy(b[0:8], tagMagic[:])
	binary.BigEndian.PutUint64(b[8:16], t.Seq)
	binary.BigEndian.PutUint64(b[16:24], uint64(t.Offset))
	binary.BigEndian.PutUint64(b[24:32], uint64(t.Issued.UnixNano()))
	clear(b[32:48])
	copy(b[32:32+tagNodeLen], t.Node)
	// xorshift64*, seeded from the sequence number and the offset.
	x := t.Seq*0x9e3779b97f4a7c15 ^ uint64(t.Offset) ^ 0x626c6b726570
	if x == 0 {
		x = 1
	}
	for i := 48; i+8 <= tagCRCOff; i += 8 {
		x ^= x >> 12
		x ^= x << 25
		x ^= x >> 27
		binary.LittleEndian.PutUint64(b[i:], x*0x2545f4914f6cdd1d)
	}
	// 48..4092 is 4044 bytes: 505 words and 4 bytes left.
	binary.LittleEndian.PutUint32(b[tagCRCOff-4:], uint32(x))
	binary.BigEndian.PutUint32(b[tagCRCOff:], crc32.Checksum(b[:tagCRCOff], castagnoli))
}

// Block returns the encoded block of t.
func (t Tag) Block() []byte {
	b := make([]byte, BlockSize)
	t.Encode(b)
	return b
}

// DecodeTag reads the tag of a block. zero reports an all-zero block
// (never written); any other block that is not exactly what Encode makes
// for its tag is an error.
func DecodeTag(b []byte) (t Tag, zero bool, err error) {
	if len(b) != BlockSize {
		return t, false, fmt.Errorf("block of %d bytes", len(b))
	}
	if !bytes.Equal(b[0:8], tagMagic[:]) {
		for _, c := range b {
			if c != 0 {
				return t, false, fmt.Errorf("not a tagged block (starts % x)", b[:16])
			}
		}
		return t, true, nil
	}
	if got, want := binary.BigEndian.Uint32(b[tagCRCOff:]), crc32.Checksum(b[:tagCRCOff], castagnoli); got != want {
		return t, false, fmt.Errorf("tagged block with a bad checksum (%08x, computed %08x)", got, want)
	}
	t.Seq = binary.BigEndian.Uint64(b[8:16])
	t.Offset = int64(binary.BigEndian.Uint64(b[16:24]))
	t.Issued = time.Unix(0, int64(binary.BigEndian.Uint64(b[24:32])))
	t.Node = string(bytes.TrimRight(b[32:32+tagNodeLen], "\x00"))
	if !bytes.Equal(b, t.Block()) {
		return t, false, fmt.Errorf("tagged block seq %d whose filler does not match its tag", t.Seq)
	}
	return t, false, nil
}

func (t Tag) String() string {
	return fmt.Sprintf("seq %d at %d sent to %s at %s", t.Seq, t.Offset, t.Node, t.Issued.Format("15:04:05.000"))
}
