package bitmap

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// fuzzGeometries are the receivers the fuzz targets decode into, picked by a
// fuzzed selector: tiny, word-sized, a short tail, two pages, 1 MiB per bit.
var fuzzGeometries = []struct {
	size int64
	bpb  uint32
}{
	{1, 4096},
	{64 * 4096, 4096},
	{100*4096 - 7, 4096},
	{(BitsPerPage + 70) * 4096, 4096},
	{3<<20 + 5, 1 << 20},
}

// fuzzBitmap builds the receiver for a selector, with a deterministic
// pattern of bits already set so merges and failures are observable.
func fuzzBitmap(t testing.TB, sel uint8) *Bitmap {
	g := fuzzGeometries[int(sel)%len(fuzzGeometries)]
	b := mustNew(t, g.size, g.bpb)
	if sel&0x80 != 0 {
		r := rand.New(rand.NewPCG(uint64(sel), 7))
		for range 5 {
			s := r.Uint64N(b.nbits)
			b.setBits(s, min(b.nbits, s+1+r.Uint64N(70)))
		}
	}
	b.dirty.ClearAll()
	if sel&0x40 != 0 {
		b.dirty.Set(0)
	}
	return b
}

// refDecode is a second, deliberately naive reading of the wire format: it
// returns the set bits a chunk describes for a receiver of nbits bits at bpb
// bytes per bit, and whether the chunk is valid at all.
func refDecode(c []byte, nbits uint64, bpb uint32) (set []bool, next uint64, ok bool) {
	if len(c) < 36 || string(c[:4]) != "BMRL" || c[4] != 1 || c[5] > 1 || c[6] != 0 || c[7] != 0 {
		return nil, 0, false
	}
	if int(binary.LittleEndian.Uint32(c[12:])) != len(c)-36 {
		return nil, 0, false
	}
	tab := crc32.MakeTable(crc32.Castagnoli)
	if binary.LittleEndian.Uint32(c[32:]) != crc32.Checksum(append(append([]byte{}, c[:32]...), c[36:]...), tab) {
		return nil, 0, false
	}
	if binary.LittleEndian.Uint32(c[8:]) != bpb || binary.LittleEndian.Uint64(c[16:]) != nbits {
		return nil, 0, false
	}
	pos := binary.LittleEndian.Uint64(c[24:])
	if pos >= nbits {
		return nil, 0, false
	}
	start := pos
	set = make([]bool, nbits)
	p := c[36:]
	for i := 0; len(p) > 0; i++ {
		// Decode the uvarint by hand, rejecting non-minimal forms.
		var v uint64
		n := 0
		for {
			if n == len(p) || n == 10 {
				return nil, 0, false
			}
			x := p[n]
			if n == 9 && x > 1 {
				return nil, 0, false
			}
			v |= uint64(x&0x7f) << (7 * n)
			n++
			if x < 0x80 {
				if n > 1 && x == 0 {
					return nil, 0, false // non-minimal
				}
				break
			}
		}
		p = p[n:]
		if v == 0 && i > 0 {
			return nil, 0, false
		}
		if v > nbits || pos+v > nbits {
			return nil, 0, false
		}
		for j := pos; j < pos+v; j++ {
			set[j] = i%2 == 1
		}
		pos += v
	}
	if pos == start || (c[5] == 1) != (pos == nbits) {
		return nil, 0, false
	}
	return set, pos, true
}

// fixChunk repairs the parts of a chunk a mutating fuzzer rarely gets right,
// as selected by fix, so the fuzzer can reach the run decoder.
func fixChunk(c []byte, fix uint8, b *Bitmap) []byte {
	if len(c) < 36 || fix == 0 {
		return c
	}
	c = append([]byte{}, c...)
	if fix&1 != 0 {
		copy(c, "BMRL")
		c[4] = 1
	}
	if fix&2 != 0 {
		binary.LittleEndian.PutUint32(c[12:], uint32(len(c)-36))
	}
	if fix&4 != 0 {
		binary.LittleEndian.PutUint32(c[8:], b.bpb)
		binary.LittleEndian.PutUint64(c[16:], b.nbits)
		binary.LittleEndian.PutUint64(c[24:], binary.LittleEndian.Uint64(c[24:])%b.nbits)
	}
	if fix&8 != 0 {
		binary.LittleEndian.PutUint32(c[32:], chunkCRC(c))
	}
	return c
}

func FuzzMergeChunk(f *testing.F) {
	r := rand.New(rand.NewPCG(1, 2))
	for sel := range uint8(len(fuzzGeometries)) {
		for _, s := range []uint8{sel, sel | 0x80} {
			src := fuzzBitmap(f, s)
			randomFill(r, src)
			for bit, done, n := uint64(0), false, 0; !done; n++ {
				var c []byte
				c, bit, done = src.EncodeChunk(bit, 40+r.IntN(40))
				if n < 4 || done { // a few seeds per stream suffice
					f.Add(c, uint8(0), s)
					f.Add(c, uint8(15), s^0x80)
				}
			}
		}
	}
	f.Add([]byte("BMRL\x01"), uint8(15), uint8(2))
	f.Add(make([]byte, 40), uint8(15), uint8(1))
	f.Fuzz(func(t *testing.T, chunk []byte, fix, sel uint8) {
		b := fuzzBitmap(t, sel)
		chunk = fixChunk(chunk, fix, b)
		before := b.Clone()
		want, wantNext, ok := refDecode(chunk, b.nbits, b.bpb)
		next, err := b.MergeChunk(chunk)
		checkInvariants(t, b)
		if !ok {
			if err == nil {
				t.Fatalf("accepted a chunk the reference decoder rejects: % x", chunk)
			}
			if next != 0 || !b.Equal(before) || !b.dirty.Equal(before.dirty) {
				t.Fatalf("rejected chunk (%v) changed the bitmap", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("rejected a valid chunk: %v: % x", err, chunk)
		}
		if next != wantNext {
			t.Fatalf("next %d, reference %d", next, wantNext)
		}
		for i := range b.nbits {
			if w := before.TestBit(i) || want[i]; b.TestBit(i) != w {
				t.Fatalf("bit %d is %t, want %t", i, !w, w)
			}
			if p := i / BitsPerPage; !before.PageDirty(p) && before.TestBit(i) != b.TestBit(i) && !b.PageDirty(p) {
				t.Fatalf("page %d changed but is not dirty", p)
			}
		}
	})
}

func FuzzLoadPage(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for sel := range uint8(len(fuzzGeometries)) {
		src := fuzzBitmap(f, sel|0x80)
		randomFill(r, src)
		for p := range src.NumPages() {
			page := src.EncodePage(p, nil)
			f.Add(page, uint16(p), true, sel)
			f.Add(page, uint16(p), false, sel|0x80)
			f.Add(page[:100], uint16(p), true, sel|0x80)
		}
	}
	f.Add([]byte{}, uint16(0), true, uint8(0))
	f.Add([]byte{0xff}, uint16(0), true, uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, page uint16, checksumOK bool, sel uint8) {
		b := fuzzBitmap(t, sel)
		if sel&0x20 != 0 && len(data) < PageSize {
			// Pad short inputs to a full page so the fuzzer explores the
			// bit-validation paths, not only the length check.
			data = append(data, make([]byte, PageSize-len(data))...)
		}
		i := uint64(page) % (b.NumPages() + 1) // sometimes one past the end
		before := b.Clone()
		err := b.LoadPage(i, data, checksumOK)
		checkInvariants(t, b)
		first := i * BitsPerPage
		end := min(first+BitsPerPage, b.nbits)
		unchanged := func() {
			t.Helper()
			if !b.Equal(before) || !b.dirty.Equal(before.dirty) {
				t.Fatalf("failed load (%v) changed the bitmap", err)
			}
		}
		switch {
		case i >= b.NumPages():
			if err == nil {
				t.Fatalf("loaded page %d of %d", i, b.NumPages())
			}
			unchanged()
			return
		case !checksumOK:
			if err != nil {
				t.Fatalf("torn page: %v", err)
			}
			for j := range b.nbits {
				if want := before.TestBit(j) || (j >= first && j < end); b.TestBit(j) != want {
					t.Fatalf("torn page %d: bit %d is %t", i, j, !want)
				}
			}
			if !b.PageDirty(i) {
				t.Fatalf("torn page %d is not dirty", i)
			}
			return
		case len(data) != PageSize:
			if err == nil {
				t.Fatalf("loaded a %d-byte page", len(data))
			}
			unchanged()
			return
		}
		bad := false
		for j := end - first; j < BitsPerPage; j++ { // the page's bits past nbits
			if data[j/8]&(1<<(j%8)) != 0 {
				bad = true
			}
		}
		if bad {
			if err == nil {
				t.Fatalf("loaded a page with bits past nbits")
			}
			unchanged()
			return
		}
		if err != nil {
			t.Fatalf("rejected a valid page: %v", err)
		}
		for j := first; j < end; j++ {
			inData := data[(j-first)/8]&(1<<((j-first)%8)) != 0
			if want := before.TestBit(j) || inData; b.TestBit(j) != want {
				t.Fatalf("bit %d is %t, want %t", j, !want, want)
			}
		}
		bw, aw := before.bits.Words(), b.bits.Words()
		for w := range aw {
			if (uint64(w+1)*64 <= first || uint64(w)*64 >= end) && aw[w] != bw[w] {
				t.Fatalf("loading page %d changed word %d", i, w)
			}
		}
		enc := b.EncodePage(i, nil)
		same := string(enc) == string(data)
		if b.PageDirty(i) == same {
			t.Fatalf("page %d dirty %t, memory equals data %t", i, b.PageDirty(i), same)
		}
	})
}
