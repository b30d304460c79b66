package bitmap

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/bits"
)

// Wire chunk format, version 1. Frozen: a change needs a new version
// (docs/format/bitmap.md). All integers are little-endian.
//
//	off size field
//	  0    4 magic "BMRL"
//	  4    1 version (1)
//	  5    1 flags: bit 0 = last chunk of the bitmap; other bits zero
//	  6    2 reserved, zero
//	  8    4 bytes per bit
//	 12    4 payload length in bytes
//	 16    8 nbits of the whole bitmap
//	 24    8 start bit of this chunk
//	 32    4 CRC32C over bytes [0, 32) followed by the payload
//	 36    - payload: run lengths as uvarints, alternately clear, set,
//	         clear, ... starting with a clear run at the start bit
const (
	chunkMagic      = "BMRL"
	chunkVersion    = 1
	chunkFlagLast   = 1 << 0
	chunkHeaderSize = 36
	chunkCRCOffset  = 32

	// MinChunkBytes is the smallest maxBytes EncodeChunk honours: a header
	// plus room for one clear and one set run of any length, which
	// guarantees every chunk makes progress. Smaller values are raised to it.
	MinChunkBytes = chunkHeaderSize + 2*binary.MaxVarintLen64
	// MaxChunkBytes caps maxBytes so the payload length always fits its
	// 32-bit field. Larger values are lowered to it.
	MaxChunkBytes = 1 << 30
)

// ChunkHeader is the decoded header of a wire chunk.
type ChunkHeader struct {
	BytesPerBit uint32
	NBits       uint64 // bits in the sender's whole bitmap
	StartBit    uint64 // first bit this chunk describes
	Last        bool   // the chunk's runs reach NBits: the bitmap is complete
}

func uvarintLen(v uint64) int {
	return (bits.Len64(v|1) + 6) / 7
}

// EncodeChunk encodes the bits from fromBit on into one wire chunk of at most
// maxBytes bytes (maxBytes is raised to MinChunkBytes or lowered to
// MaxChunkBytes if outside those bounds).
// It returns the chunk, the bit the next chunk starts at, and whether this
// chunk ends the bitmap (then nextBit == NBits). Each chunk covers at least
// one bit, so a loop
//
//	for bit, done := uint64(0), false; !done; {
//		var c []byte
//		c, bit, done = b.EncodeChunk(bit, 64<<10)
//		send(c)
//	}
//
// terminates after at most NBits chunks, and far fewer in practice: a run of
// any length costs at most a few bytes, so an all-clear bitmap of any size is
// one chunk of about 40 bytes, and the worst case (alternating bits) costs one
// byte per bit: about maxBytes-36 bits per chunk, never more than maxBytes
// bytes.
// If fromBit >= NBits there is nothing to send: it returns nil, NBits, true.
func (b *Bitmap) EncodeChunk(fromBit uint64, maxBytes int) (chunk []byte, nextBit uint64, done bool) {
	if fromBit >= b.nbits {
		return nil, b.nbits, true
	}
	maxBytes = min(max(maxBytes, MinChunkBytes), MaxChunkBytes)
	buf := make([]byte, chunkHeaderSize, min(maxBytes, chunkHeaderSize+512))
	pos := fromBit
	for pos < b.nbits {
		room := maxBytes - len(buf)
		s, ok := b.bits.nextSet(pos, b.nbits)
		if !ok { // everything left is clear: one final clear run
			if c := b.nbits - pos; uvarintLen(c) <= room {
				buf = binary.AppendUvarint(buf, c)
				pos = b.nbits
			}
			break
		}
		e, ok := b.bits.nextClear(s, b.nbits)
		if !ok {
			e = b.nbits
		}
		clearRun, setRun := s-pos, e-s
		if uvarintLen(clearRun)+uvarintLen(setRun) <= room {
			buf = binary.AppendUvarint(buf, clearRun)
			buf = binary.AppendUvarint(buf, setRun)
			pos = e
			continue
		}
		// The pair does not fit: end the chunk on the clear run if it fits;
		// the next chunk starts with a zero-length clear run.
		if clearRun > 0 && uvarintLen(clearRun) <= room {
			buf = binary.AppendUvarint(buf, clearRun)
			pos = s
		}
		break
	}
	done = pos == b.nbits
	copy(buf[0:4], chunkMagic)
	buf[4] = chunkVersion
	buf[5] = 0
	if done {
		buf[5] = chunkFlagLast
	}
	buf[6], buf[7] = 0, 0
	binary.LittleEndian.PutUint32(buf[8:], b.bpb)
	binary.LittleEndian.PutUint32(buf[12:], uint32(len(buf)-chunkHeaderSize))
	binary.LittleEndian.PutUint64(buf[16:], b.nbits)
	binary.LittleEndian.PutUint64(buf[24:], fromBit)
	binary.LittleEndian.PutUint32(buf[chunkCRCOffset:], chunkCRC(buf))
	return buf, pos, done
}

// chunkCRC computes the CRC32C of a chunk whose header is complete: the
// header up to the CRC field, then the payload.
func chunkCRC(chunk []byte) uint32 {
	crc := crc32.Update(0, castagnoli, chunk[:chunkCRCOffset])
	return crc32.Update(crc, castagnoli, chunk[chunkHeaderSize:])
}

// DecodeChunkHeader checks a chunk's framing (magic, version, length, CRC,
// flags) and returns its header without looking at the runs. A protocol layer
// uses it to check that chunks arrive in order (each StartBit equal to the
// previous chunk's nextBit) before merging them.
func DecodeChunkHeader(chunk []byte) (ChunkHeader, error) {
	var h ChunkHeader
	if len(chunk) < 5 {
		return h, fmt.Errorf("%w: chunk of %d bytes is too short", ErrCorrupt, len(chunk))
	}
	if string(chunk[0:4]) != chunkMagic {
		return h, fmt.Errorf("%w: bad chunk magic %q", ErrCorrupt, chunk[0:4])
	}
	if chunk[4] != chunkVersion {
		return h, fmt.Errorf("%w: chunk version %d, this build knows %d", ErrVersion, chunk[4], chunkVersion)
	}
	if len(chunk) < chunkHeaderSize {
		return h, fmt.Errorf("%w: chunk of %d bytes is shorter than its %d-byte header", ErrCorrupt, len(chunk), chunkHeaderSize)
	}
	if pl := binary.LittleEndian.Uint32(chunk[12:]); uint64(pl) != uint64(len(chunk)-chunkHeaderSize) {
		return h, fmt.Errorf("%w: chunk says %d payload bytes, has %d", ErrCorrupt, pl, len(chunk)-chunkHeaderSize)
	}
	if want, got := binary.LittleEndian.Uint32(chunk[chunkCRCOffset:]), chunkCRC(chunk); want != got {
		return h, fmt.Errorf("%w: %w: chunk CRC32C %#08x, computed %#08x", ErrCorrupt, ErrChecksum, want, got)
	}
	if chunk[5]&^chunkFlagLast != 0 || chunk[6] != 0 || chunk[7] != 0 {
		return h, fmt.Errorf("%w: unknown chunk flags %#02x or reserved bytes %#02x %#02x", ErrCorrupt, chunk[5], chunk[6], chunk[7])
	}
	h.BytesPerBit = binary.LittleEndian.Uint32(chunk[8:])
	h.NBits = binary.LittleEndian.Uint64(chunk[16:])
	h.StartBit = binary.LittleEndian.Uint64(chunk[24:])
	h.Last = chunk[5]&chunkFlagLast != 0
	return h, nil
}

// MergeChunk decodes a chunk made by EncodeChunk (on any node) and ORs its
// set runs into b; pages that gain bits become dirty. It returns the bit the
// next chunk starts at; the bitmap is complete when that equals NBits (the
// chunk was marked last).
//
// The chunk is validated completely before anything changes: framing and CRC
// (see DecodeChunkHeader), bytes per bit and nbits equal to b's (ErrMismatch),
// a start bit inside the bitmap, runs that are minimal uvarints, non-zero
// except for the first clear run, never past NBits, covering at least one bit
// and consuming the payload exactly, and a last flag set exactly when the runs
// reach NBits (ErrCorrupt). On any error b is unchanged. Decoding allocates
// nothing, whatever the chunk says.
func (b *Bitmap) MergeChunk(chunk []byte) (nextBit uint64, err error) {
	h, err := DecodeChunkHeader(chunk)
	if err != nil {
		return 0, err
	}
	if h.BytesPerBit != b.bpb || h.NBits != b.nbits {
		return 0, fmt.Errorf("%w: chunk is for %d bits at %d bytes per bit, bitmap has %d bits at %d bytes per bit",
			ErrMismatch, h.NBits, h.BytesPerBit, b.nbits, b.bpb)
	}
	if h.StartBit >= b.nbits {
		return 0, fmt.Errorf("%w: chunk starts at bit %d of %d", ErrCorrupt, h.StartBit, b.nbits)
	}
	payload := chunk[chunkHeaderSize:]
	next, err := b.walkRuns(payload, h.StartBit, false)
	if err != nil {
		return 0, err
	}
	if h.Last != (next == b.nbits) {
		return 0, fmt.Errorf("%w: chunk ends at bit %d of %d but its last flag is %t", ErrCorrupt, next, b.nbits, h.Last)
	}
	b.walkRuns(payload, h.StartBit, true)
	return next, nil
}

// walkRuns validates the run payload starting at bit pos and returns the bit
// after the last run. With apply it also sets the set runs; it is only called
// with apply after a validating pass succeeded.
func (b *Bitmap) walkRuns(p []byte, pos uint64, apply bool) (uint64, error) {
	start := pos
	for i := 0; len(p) > 0; i++ {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, fmt.Errorf("%w: run %d is a truncated or overflowing uvarint", ErrCorrupt, i)
		}
		if n != uvarintLen(v) {
			return 0, fmt.Errorf("%w: run %d is a non-minimal uvarint", ErrCorrupt, i)
		}
		p = p[n:]
		if v == 0 && i > 0 {
			return 0, fmt.Errorf("%w: run %d has length zero", ErrCorrupt, i)
		}
		if v > b.nbits-pos {
			return 0, fmt.Errorf("%w: run %d of %d bits at bit %d passes the end (%d bits)", ErrCorrupt, i, v, pos, b.nbits)
		}
		if apply && i%2 == 1 {
			b.setBits(pos, pos+v)
		}
		pos += v
	}
	if pos == start {
		return 0, fmt.Errorf("%w: chunk at bit %d covers no bits", ErrCorrupt, start)
	}
	return pos, nil
}
