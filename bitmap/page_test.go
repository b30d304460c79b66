package bitmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// randomFill sets random runs, dense or sparse.
func randomFill(r *rand.Rand, b *Bitmap) {
	switch r.IntN(5) {
	case 0: // empty
	case 1:
		b.setBits(0, b.nbits)
	case 2: // alternating
		for i := uint64(r.IntN(2)); i < b.nbits; i += 2 {
			b.setBits(i, i+1)
		}
	default:
		for range r.IntN(50) {
			s := r.Uint64N(b.nbits)
			b.setBits(s, min(b.nbits, s+1+r.Uint64N(200)))
		}
	}
}

func TestPageCRC32C(t *testing.T) {
	// The standard CRC-32C check value pins the polynomial.
	if got := PageChecksum([]byte("123456789")); got != 0xe3069283 {
		t.Fatalf("PageChecksum(123456789) = %#x, want CRC-32C 0xe3069283", got)
	}
}

func TestEncodePageLayout(t *testing.T) {
	// 2 pages; the second holds 70 bits: one full word plus 6 bits.
	b := mustNew(t, (BitsPerPage+70)*4096-5, 4096)
	for _, i := range []uint64{0, 1, 63, 64, 32767, BitsPerPage, BitsPerPage + 64, BitsPerPage + 69} {
		b.SetBit(i)
	}
	p0 := b.EncodePage(0, nil)
	if len(p0) != PageSize {
		t.Fatalf("page is %d bytes", len(p0))
	}
	if w := binary.LittleEndian.Uint64(p0[0:]); w != 1|2|1<<63 {
		t.Errorf("word 0 = %#x", w)
	}
	if p0[8] != 1 || p0[PageSize-1] != 0x80 {
		t.Errorf("bit 64 -> byte 8 = %#x, bit 32767 -> last byte = %#x", p0[8], p0[PageSize-1])
	}
	buf := make([]byte, 10, 2*PageSize)
	p1 := b.EncodePage(1, buf)
	if len(p1) != PageSize || &p1[0] != &buf[0] {
		t.Errorf("EncodePage did not reuse a large enough buffer")
	}
	want := make([]byte, PageSize)
	want[0] = 1
	want[8] = 1
	want[8] |= 1 << 5 // bit 69 = word 1 bit 5
	if !bytes.Equal(p1, want) {
		t.Errorf("page 1 = % x..., want % x...", p1[:16], want[:16])
	}
	// Stale bytes in a reused buffer are overwritten with zeros.
	stale := bytes.Repeat([]byte{0xff}, PageSize)
	if got := b.EncodePage(1, stale); !bytes.Equal(got, want) {
		t.Errorf("stale buffer bytes survived")
	}
	if b.EncodePage(2, nil) != nil || b.EncodePage(math.MaxUint64, nil) != nil {
		t.Errorf("EncodePage past NumPages returned a page")
	}
}

func TestPageRoundTrip(t *testing.T) {
	seed := testSeed(t)
	r := rand.New(rand.NewPCG(seed, 1))
	for iter := 0; iter < 40; iter++ {
		size, bpb := randGeometry(r)
		b := mustNew(t, size, bpb)
		randomFill(r, b)
		// Write every page as the metadata package would.
		type disk struct {
			data []byte
			crc  uint32
		}
		var pages []disk
		for p := range b.NumPages() {
			data := b.EncodePage(p, nil)
			pages = append(pages, disk{data, PageChecksum(data)})
			b.MarkPageClean(p)
		}
		if len(b.DirtyPages()) != 0 {
			t.Fatalf("seed %d: dirty after writing all pages: %v", seed, b.DirtyPages())
		}
		// Reload into a fresh bitmap.
		c := mustNew(t, size, bpb)
		for p, d := range pages {
			if err := c.LoadPage(uint64(p), d.data, PageChecksum(d.data) == d.crc); err != nil {
				t.Fatalf("seed %d: LoadPage(%d): %v", seed, p, err)
			}
		}
		if !c.Equal(b) || len(c.DirtyPages()) != 0 {
			t.Fatalf("seed %d iter %d: reload differs (count %d vs %d) or dirty %v", seed, iter, c.Count(), b.Count(), c.DirtyPages())
		}
		checkInvariants(t, c)

		// Tear one page: the reload sets that page entirely, keeps the rest.
		torn := r.IntN(len(pages))
		pages[torn].data[r.IntN(PageSize)] ^= 1 << r.IntN(8)
		d := mustNew(t, size, bpb)
		for p, dp := range pages {
			if err := d.LoadPage(uint64(p), dp.data, PageChecksum(dp.data) == dp.crc); err != nil {
				t.Fatalf("seed %d: LoadPage(%d): %v", seed, p, err)
			}
		}
		lo, hi := uint64(torn)*BitsPerPage, min(uint64(torn+1)*BitsPerPage, b.nbits)
		for i := range b.nbits {
			want := b.TestBit(i) || (i >= lo && i < hi)
			if d.TestBit(i) != want {
				t.Fatalf("seed %d: after torn page %d bit %d is %t", seed, torn, i, !want)
			}
		}
		if got := d.DirtyPages(); !slices.Equal(got, []uint64{uint64(torn)}) {
			t.Fatalf("seed %d: torn page %d, dirty %v", seed, torn, got)
		}
		// The conservative page encodes with zeros past nbits.
		enc := d.EncodePage(uint64(torn), nil)
		e := mustNew(t, size, bpb)
		if err := e.LoadPage(uint64(torn), enc, true); err != nil {
			t.Fatalf("seed %d: re-load of the conservative page: %v", seed, err)
		}
		checkInvariants(t, d)
	}
}

func TestLoadPageMergesAndTracksDirty(t *testing.T) {
	b := mustNew(t, 2*BitsPerPage*4096, 4096)
	src := mustNew(t, 2*BitsPerPage*4096, 4096)
	src.SetBit(7)
	page := src.EncodePage(0, nil)

	// Memory already holds bit 9 (say, from activity-log recovery): the load
	// ORs, and the page stays dirty because memory differs from disk.
	b.SetBit(9)
	if err := b.LoadPage(0, page, true); err != nil {
		t.Fatal(err)
	}
	if !b.TestBit(7) || !b.TestBit(9) || !slices.Equal(b.DirtyPages(), []uint64{0}) {
		t.Errorf("bits %v dirty %v", listBits(b), b.DirtyPages())
	}
	// Memory equal to the loaded page: clean.
	c := mustNew(t, 2*BitsPerPage*4096, 4096)
	c.SetBit(7)
	if err := c.LoadPage(0, page, true); err != nil || len(c.DirtyPages()) != 0 {
		t.Errorf("exact load: %v, dirty %v", err, c.DirtyPages())
	}
}

func TestLoadPageErrors(t *testing.T) {
	// 1 page of 100 bits: word 1 holds bits 64..99, bits 100.. must be zero.
	b := mustNew(t, 100*4096-1, 4096)
	b.SetBit(3)
	b.MarkPageClean(0)
	before := b.Clone()
	page := func(bit int) []byte {
		p := make([]byte, PageSize)
		if bit >= 0 {
			p[bit/8] |= 1 << (bit % 8)
		}
		return p
	}
	tests := []struct {
		name string
		i    uint64
		data []byte
		ok   bool
		err  error
	}{
		{"short", 0, page(-1)[:PageSize-1], true, ErrCorrupt},
		{"long", 0, append(page(-1), 0), true, ErrCorrupt},
		{"nil", 0, nil, true, ErrCorrupt},
		{"bit 100 in the last word", 0, page(100), true, ErrCorrupt},
		{"bit 127", 0, page(127), true, ErrCorrupt},
		{"bit 128 in a word past the end", 0, page(128), true, ErrCorrupt},
		{"last bit of the page", 0, page(BitsPerPage - 1), true, ErrCorrupt},
		{"page past the end", 1, page(-1), true, ErrRange},
		{"torn page past the end", 1, nil, false, ErrRange},
		{"huge index", math.MaxUint64, page(-1), true, ErrRange},
	}
	for _, tc := range tests {
		err := b.LoadPage(tc.i, tc.data, tc.ok)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
		if !b.Equal(before) || len(b.DirtyPages()) != 0 {
			t.Errorf("%s: failed load changed the bitmap", tc.name)
		}
	}
	// Bit 99, the last valid one, loads.
	if err := b.LoadPage(0, page(99), true); err != nil || !b.TestBit(99) {
		t.Errorf("bit 99: %v", err)
	}
	// A torn page ignores whatever data came with it.
	if err := b.LoadPage(0, []byte{1, 2, 3}, false); err != nil || b.Count() != 100 {
		t.Errorf("torn page: %v, count %d", err, b.Count())
	}
	checkInvariants(t, b)
}

func TestPagesForAndDirtyPages(t *testing.T) {
	const pageBytes = BitsPerPage * 4096 // 128 MiB of device per page at 4 KiB per bit
	size := int64(2*pageBytes + 3*4096 + 10)
	b := mustNew(t, size, 4096)
	if b.NumPages() != 3 {
		t.Fatalf("NumPages = %d", b.NumPages())
	}
	tests := []struct {
		off, length int64
		first, last uint64
	}{
		{0, 1, 0, 0},
		{0, pageBytes, 0, 0},
		{0, pageBytes + 1, 0, 1},
		{pageBytes - 1, 2, 0, 1},
		{pageBytes, 4 << 20, 1, 1},
		{0, size, 0, 2},
		{size - 1, 1, 2, 2},
		{size - 1, math.MaxInt64, 2, 2},
		{-1, 2, 0, 0},
		{math.MinInt64, math.MaxInt64, 1, 0},
		{size, 1, 1, 0},
		{0, 0, 1, 0},
		{5, -5, 1, 0},
		{math.MaxInt64, math.MaxInt64, 1, 0},
	}
	for _, tc := range tests {
		f, l := b.PagesFor(tc.off, tc.length)
		if f != tc.first || l != tc.last {
			t.Errorf("PagesFor(%d, %d) = %d, %d; want %d, %d", tc.off, tc.length, f, l, tc.first, tc.last)
		}
	}

	b.SetRange(pageBytes-4096, 8192) // last bit of page 0, first of page 1
	if got := b.DirtyPages(); !slices.Equal(got, []uint64{0, 1}) {
		t.Errorf("dirty %v", got)
	}
	b.MarkPageClean(0)
	b.MarkPageClean(1)
	b.MarkPageClean(99) // ignored
	b.SetRange(pageBytes-4096, 8192)
	if len(b.DirtyPages()) != 0 {
		t.Errorf("re-setting set bits dirtied %v", b.DirtyPages())
	}
	b.ClearRange(pageBytes, 4096)
	if got := b.DirtyPages(); !slices.Equal(got, []uint64{1}) || b.PageDirty(0) || !b.PageDirty(1) || b.PageDirty(3) {
		t.Errorf("clear dirtied %v", got)
	}
	b.ClearRange(2*pageBytes, 4096) // was clear already
	if got := b.DirtyPages(); !slices.Equal(got, []uint64{1}) {
		t.Errorf("clearing clear bits dirtied %v", got)
	}
	b.MarkPageDirty(2)
	b.MarkPageDirty(3) // ignored
	if got := b.DirtyPages(); !slices.Equal(got, []uint64{1, 2}) {
		t.Errorf("MarkPageDirty: %v", got)
	}
}

// Memory cost as documented: NBits/8 bytes.
func TestMemoryCost(t *testing.T) {
	b := mustNew(t, 1<<40, 4096)
	if got := len(b.bits.Words()) * 8; got != 32<<20 {
		t.Errorf("1 TiB at 4 KiB per bit: %d bytes, want 32 MiB", got)
	}
	if b.NumPages()*PageSize != 32<<20 {
		t.Errorf("1 TiB at 4 KiB per bit: %d pages", b.NumPages())
	}
	c := mustNew(t, 1<<40, 1<<20)
	if got := len(c.bits.Words()) * 8; got != 128<<10 {
		t.Errorf("1 TiB at 1 MiB per bit: %d bytes, want 128 KiB", got)
	}
}
