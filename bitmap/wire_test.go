package bitmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"testing"
)

// hdr describes a chunk header for building test chunks by hand.
type hdr struct {
	magic      string
	version    byte
	flags      byte
	reserved   uint16
	bpb        uint32
	payloadLen int // -1: the real length
	nbits      uint64
	start      uint64
	crc        int64 // -1: the right CRC
}

func goodHdr(b *Bitmap, start uint64, last bool) hdr {
	h := hdr{magic: "BMRL", version: 1, bpb: b.bpb, payloadLen: -1, nbits: b.nbits, start: start, crc: -1}
	if last {
		h.flags = 1
	}
	return h
}

// build assembles a chunk byte by byte, independently of EncodeChunk.
func (h hdr) build(payload ...byte) []byte {
	c := make([]byte, 36, 36+len(payload))
	copy(c, h.magic)
	c[4], c[5] = h.version, h.flags
	binary.LittleEndian.PutUint16(c[6:], h.reserved)
	binary.LittleEndian.PutUint32(c[8:], h.bpb)
	pl := uint32(len(payload))
	if h.payloadLen >= 0 {
		pl = uint32(h.payloadLen)
	}
	binary.LittleEndian.PutUint32(c[12:], pl)
	binary.LittleEndian.PutUint64(c[16:], h.nbits)
	binary.LittleEndian.PutUint64(c[24:], h.start)
	c = append(c, payload...)
	crc := uint32(h.crc)
	if h.crc < 0 {
		tab := crc32.MakeTable(crc32.Castagnoli)
		crc = crc32.Checksum(append(append([]byte{}, c[:32]...), payload...), tab)
	}
	binary.LittleEndian.PutUint32(c[32:], crc)
	return c
}

// The wire format is frozen: this is its golden encoding.
func TestEncodeChunkGolden(t *testing.T) {
	b := mustNew(t, 10*4096-1, 4096) // 10 bits
	for _, i := range []uint64{2, 3, 7} {
		b.SetBit(i)
	}
	chunk, next, done := b.EncodeChunk(0, 1000)
	want := goodHdr(b, 0, true).build(2, 2, 3, 1, 2) // clear 2, set 2, clear 3, set 1, clear 2
	if !bytes.Equal(chunk, want) || next != 10 || !done {
		t.Fatalf("chunk\n% x\nwant\n% x\nnext %d done %t", chunk, want, next, done)
	}
	// Starting with a set bit: the first clear run is zero; ending on a set
	// run: no trailing clear run.
	c := mustNew(t, 3*4096, 4096)
	c.SetBit(0)
	c.SetBit(2)
	chunk, _, _ = c.EncodeChunk(0, 0)
	if want := goodHdr(c, 0, true).build(0, 1, 1, 1); !bytes.Equal(chunk, want) {
		t.Fatalf("chunk\n% x\nwant\n% x", chunk, want)
	}
	// Starting mid-bitmap.
	chunk, next, done = b.EncodeChunk(3, 0)
	if want := goodHdr(b, 3, true).build(0, 1, 3, 1, 2); !bytes.Equal(chunk, want) || next != 10 || !done {
		t.Fatalf("chunk from 3\n% x\nwant\n% x", chunk, want)
	}
	if chunk, next, done := b.EncodeChunk(10, 0); chunk != nil || next != 10 || !done {
		t.Fatalf("EncodeChunk past the end = %x, %d, %t", chunk, next, done)
	}
}

func TestEncodeAllClearTiB(t *testing.T) {
	for _, bpb := range []uint32{4096, 1 << 20} {
		b := mustNew(t, 1<<40, bpb)
		chunk, next, done := b.EncodeChunk(0, 1<<20)
		if !done || next != b.NBits() || len(chunk) > 48 {
			t.Fatalf("all-clear 1 TiB at %d: %d bytes, next %d, done %t", bpb, len(chunk), next, done)
		}
		t.Logf("all-clear 1 TiB at %d bytes per bit: one chunk of %d bytes (%d of payload)", bpb, len(chunk), len(chunk)-36)
		r := mustNew(t, 1<<40, bpb)
		if _, err := r.MergeChunk(chunk); err != nil || r.Count() != 0 {
			t.Fatal(err)
		}
		// All set is just as small.
		b.setBits(0, b.nbits)
		chunk, _, done = b.EncodeChunk(0, 1<<20)
		if !done || len(chunk) > 48 {
			t.Fatalf("all-set 1 TiB: %d bytes", len(chunk))
		}
		if _, err := r.MergeChunk(chunk); err != nil || !r.Equal(b) {
			t.Fatal(err)
		}
	}
}

// transfer streams b into r in chunks of at most maxBytes, checking the
// framing of every chunk, and returns the number of chunks.
func transfer(t *testing.T, b, r *Bitmap, maxBytes int) int {
	t.Helper()
	limit := min(max(maxBytes, MinChunkBytes), MaxChunkBytes)
	n := 0
	for bit, done := uint64(0), false; !done; n++ {
		chunk, next, d := b.EncodeChunk(bit, maxBytes)
		if len(chunk) > limit {
			t.Fatalf("chunk of %d bytes, limit %d", len(chunk), limit)
		}
		if next <= bit || d != (next == b.nbits) {
			t.Fatalf("chunk from %d: next %d done %t", bit, next, d)
		}
		h, err := DecodeChunkHeader(chunk)
		if err != nil || h.StartBit != bit || h.Last != d || h.NBits != b.nbits || h.BytesPerBit != b.bpb {
			t.Fatalf("header %+v, %v", h, err)
		}
		got, err := r.MergeChunk(chunk)
		if err != nil || got != next {
			t.Fatalf("MergeChunk: %d, %v; encoder said next %d", got, err, next)
		}
		bit, done = next, d
		if n > int(b.nbits) {
			t.Fatalf("no progress")
		}
	}
	return n
}

func TestWireRoundTrip(t *testing.T) {
	seed := testSeed(t)
	r := rand.New(rand.NewPCG(seed, 2))
	for iter := 0; iter < 150; iter++ {
		size, bpb := randGeometry(r)
		b := mustNew(t, size, bpb)
		randomFill(r, b)
		maxBytes := []int{0, MinChunkBytes, MinChunkBytes + 1 + r.IntN(100), 200 + r.IntN(4000)}[r.IntN(4)]
		recv := mustNew(t, size, bpb)
		transfer(t, b, recv, maxBytes)
		if !recv.Equal(b) {
			t.Fatalf("seed %d iter %d: received bitmap differs (count %d vs %d)", seed, iter, recv.Count(), b.Count())
		}
		checkInvariants(t, recv)
		// Into a receiver that already has bits: the result is the OR.
		pre := mustNew(t, size, bpb)
		randomFill(r, pre)
		want := pre.Clone()
		if err := want.Merge(b); err != nil {
			t.Fatal(err)
		}
		transfer(t, b, pre, maxBytes)
		if !pre.Equal(want) {
			t.Fatalf("seed %d iter %d: merge into a non-empty bitmap is not the OR", seed, iter)
		}
	}
}

func TestWireWorstCaseAlternating(t *testing.T) {
	b := mustNew(t, 100_000*4096, 4096)
	for i := uint64(1); i < b.nbits; i += 2 {
		b.SetBit(i)
	}
	for _, maxBytes := range []int{-1 << 62, 0, 64, 100, 1000, 64 << 10, 1 << 62} {
		recv := mustNew(t, b.Size(), 4096)
		n := transfer(t, b, recv, maxBytes)
		if !recv.Equal(b) {
			t.Fatalf("maxBytes %d: differs", maxBytes)
		}
		// One byte per bit of payload: the chunk count is what that implies.
		perChunk := min(max(maxBytes, MinChunkBytes), MaxChunkBytes) - chunkHeaderSize
		if limit := int(b.nbits)/(perChunk-1) + 2; n > limit {
			t.Errorf("maxBytes %d: %d chunks, expected at most %d", maxBytes, n, limit)
		}
		t.Logf("alternating 100000 bits, maxBytes %d: %d chunks", maxBytes, n)
	}
}

func TestMergeChunkRejects(t *testing.T) {
	b := mustNew(t, 10*4096, 4096) // 10 bits
	b.SetBit(4)
	good := goodHdr(b, 0, true)
	with := func(f func(*hdr)) hdr { h := good; f(&h); return h }
	valid := good.build(1, 2, 7) // bits 1..2
	tests := []struct {
		name  string
		chunk []byte
		err   error
	}{
		{"empty", nil, ErrCorrupt},
		{"4 bytes", valid[:4], ErrCorrupt},
		{"truncated header", valid[:35], ErrCorrupt},
		{"truncated payload", valid[:len(valid)-1], ErrCorrupt},
		{"trailing byte", append(append([]byte{}, valid...), 0), ErrCorrupt},
		{"bad magic", with(func(h *hdr) { h.magic = "BMRM" }).build(1, 2, 7), ErrCorrupt},
		{"version 0", with(func(h *hdr) { h.version = 0 }).build(1, 2, 7), ErrVersion},
		{"version 2", with(func(h *hdr) { h.version = 2 }).build(1, 2, 7), ErrVersion},
		{"bad crc", with(func(h *hdr) { h.crc = 12345 }).build(1, 2, 7), ErrChecksum},
		{"bad crc is corrupt too", with(func(h *hdr) { h.crc = 12345 }).build(1, 2, 7), ErrCorrupt},
		{"payload length too big", with(func(h *hdr) { h.payloadLen = 4 }).build(1, 2, 7), ErrCorrupt},
		{"payload length huge", with(func(h *hdr) { h.payloadLen = 1 << 31 }).build(1, 2, 7), ErrCorrupt},
		{"unknown flag", with(func(h *hdr) { h.flags = 3 }).build(1, 2, 7), ErrCorrupt},
		{"reserved", with(func(h *hdr) { h.reserved = 1 }).build(1, 2, 7), ErrCorrupt},
		{"other nbits", with(func(h *hdr) { h.nbits = 11 }).build(1, 2, 8), ErrMismatch},
		{"other bpb", with(func(h *hdr) { h.bpb = 8192 }).build(1, 2, 7), ErrMismatch},
		{"start at the end", with(func(h *hdr) { h.start = 10 }).build(), ErrCorrupt},
		{"start far past the end", with(func(h *hdr) { h.start = 1 << 62 }).build(1), ErrCorrupt},
		{"no runs", with(func(h *hdr) { h.flags = 0 }).build(), ErrCorrupt},
		{"only an empty clear run", with(func(h *hdr) { h.flags = 0 }).build(0), ErrCorrupt},
		{"zero set run", good.build(1, 0, 9), ErrCorrupt},
		{"zero clear run later", good.build(1, 1, 0, 8), ErrCorrupt},
		{"run past the end", good.build(1, 10), ErrCorrupt},
		{"clear run past the end", good.build(11), ErrCorrupt},
		{"last flag but short", good.build(1, 2, 6), ErrCorrupt},
		{"reaches the end without the last flag", with(func(h *hdr) { h.flags = 0 }).build(1, 2, 7), ErrCorrupt},
		{"non-minimal uvarint", good.build(0x81, 0x00, 2, 7), ErrCorrupt},
		{"truncated uvarint", good.build(1, 2, 0x87), ErrCorrupt},
		{"overflowing uvarint", good.build(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), ErrCorrupt},
		{"2^64-1 run", good.build(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), ErrCorrupt},
		{"run wraps with start", with(func(h *hdr) { h.start = 9 }).build(0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), ErrCorrupt},
	}
	for _, tc := range tests {
		r := b.Clone()
		r.MarkPageClean(0)
		next, err := r.MergeChunk(tc.chunk)
		if !errors.Is(err, tc.err) || next != 0 {
			t.Errorf("%s: %d, %v; want %v", tc.name, next, err, tc.err)
		}
		if !r.Equal(b) || len(r.DirtyPages()) != 0 {
			t.Errorf("%s: rejected chunk changed the bitmap", tc.name)
		}
	}
	// And the valid variants of the same shapes are accepted.
	accepts := []struct {
		chunk []byte
		next  uint64
		bits  []uint64
	}{
		{valid, 10, []uint64{1, 2, 4}},
		{good.build(0, 10), 10, []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{good.build(10), 10, []uint64{4}},
		{with(func(h *hdr) { h.flags = 0 }).build(0, 3), 3, []uint64{0, 1, 2, 4}},
		{with(func(h *hdr) { h.flags = 0 }).build(3), 3, []uint64{4}},
		{with(func(h *hdr) { h.start = 9 }).build(0, 1), 10, []uint64{4, 9}},
		{with(func(h *hdr) { h.start = 5; h.flags = 0 }).build(2, 1), 8, []uint64{4, 7}},
	}
	for _, a := range accepts {
		r := b.Clone()
		next, err := r.MergeChunk(a.chunk)
		if err != nil || next != a.next || !slices.Equal(listBits(r), a.bits) {
			t.Errorf("chunk % x: %d, %v, bits %v; want %d %v", a.chunk[36:], next, err, listBits(r), a.next, a.bits)
		}
	}
}
