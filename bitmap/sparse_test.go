package bitmap

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// Len and Words give the tests a dense view of the bits, as the bitset
// that held them before sparse did: Words returns (NBits+63)/64 freshly
// built words, bits past NBits zero. Tests only: it allocates NBits/8 bytes.
func (s *sparse) Len() uint { return uint(s.nbits) }

func (s *sparse) Words() []uint64 {
	out := make([]uint64, (s.nbits+63)/64)
	var buf words
	for c := range uint64(len(s.chunks)) {
		copy(out[c*wordsPerPage:], s.wordsOf(c, &buf)[:])
	}
	return out
}

// checkSparse verifies the representation: every chunk in the form its
// count asks for, counts exact, nothing past NBits, the sentinel and the
// spare untouched.
func checkSparse(t *testing.T, b *Bitmap) {
	t.Helper()
	s := &b.bits
	if s.nbits != b.nbits || uint64(len(s.chunks)) != b.NumPages() {
		t.Fatalf("sparse of %d bits in %d chunks; bitmap %d bits, %d pages", s.nbits, len(s.chunks), b.nbits, b.NumPages())
	}
	if full.ones != 0 || full.pos != nil || full.w != nil {
		t.Fatalf("the full sentinel was written: %+v", *full)
	}
	if s.spareWords != nil && *s.spareWords != (words{}) {
		t.Fatalf("the spare words are not zero")
	}
	if p := s.spareChunk; p != nil && (p.ones != 0 || len(p.pos) != 0 || p.w != nil || slices.Contains(s.chunks, p)) {
		t.Fatalf("the spare chunk is in use: %+v", *p)
	}
	var total uint64
	for c, p := range s.chunks {
		n := s.chunkLen(uint64(c))
		total += s.ones(uint64(c))
		if p == nil || p == full {
			continue
		}
		if p.ones == 0 || uint64(p.ones) >= n {
			t.Fatalf("chunk %d: %d of %d bits set, not stored nil or full", c, p.ones, n)
		}
		if (p.w == nil) == (p.pos == nil) {
			t.Fatalf("chunk %d: words %t and array %t", c, p.w != nil, p.pos != nil)
		}
		if p.w == nil {
			if len(p.pos) != int(p.ones) || len(p.pos) > arrayMax {
				t.Fatalf("chunk %d: array of %d offsets, count %d, max %d", c, len(p.pos), p.ones, arrayMax)
			}
			for k, o := range p.pos {
				if uint64(o) >= n || k > 0 && o <= p.pos[k-1] {
					t.Fatalf("chunk %d: offsets not increasing below %d: %v", c, n, p.pos)
				}
			}
			continue
		}
		if p.ones <= arrayMin {
			t.Fatalf("chunk %d: words holding %d bits, at most %d should be an array", c, p.ones, arrayMin)
		}
		var ones uint64
		for j, x := range p.w {
			ones += uint64(bits.OnesCount64(x))
			if lo := uint64(j) << wordShift; lo+64 > n && x&^rangeMaskUpTo(lo, n) != 0 {
				t.Fatalf("chunk %d: word %d has bits past the chunk's %d: %#x", c, j, n, x)
			}
		}
		if ones != uint64(p.ones) {
			t.Fatalf("chunk %d: count %d, words hold %d", c, p.ones, ones)
		}
	}
	if total != b.count {
		t.Fatalf("chunks hold %d bits, count %d", total, b.count)
	}
}

// rangeMaskUpTo returns the bits of the word starting at bit lo that lie
// below n.
func rangeMaskUpTo(lo, n uint64) uint64 {
	if lo >= n {
		return 0
	}
	return rangeMask(0, min(64, n-lo))
}

// dense is the reference for TestSparseAgainstDense: plain words.
type dense []uint64

func (d dense) test(i uint64) bool { return d[i/64]&(1<<(i%64)) != 0 }

func (d dense) put(first, end uint64, v bool) (n uint64) {
	for i := first; i < end; {
		stop := min(end, (i/64+1)*64)
		m := rangeMask(i%64, stop-i)
		if v {
			n += uint64(bits.OnesCount64(m &^ d[i/64]))
			d[i/64] |= m
		} else {
			n += uint64(bits.OnesCount64(m & d[i/64]))
			d[i/64] &^= m
		}
		i = stop
	}
	return n
}

// TestSparseAgainstDense drives the chunk forms through every transition
// (clear, array, words, full and back, through set, clear, merge and page
// loads) with operations concentrated on a few chunks, and compares every
// answer with plain words.
func TestSparseAgainstDense(t *testing.T) {
	seed := testSeed(t)
	r := rand.New(rand.NewPCG(seed, 1))
	for seq := range 20 {
		nbits := uint64(1 + r.IntN(4)*BitsPerPage + r.IntN(3)*(r.IntN(2000)+1))
		size := int64(nbits) * 4096
		b := mustNew(t, size, 4096)
		ref := make(dense, (nbits+63)/64)
		fail := func(op int, format string, args ...any) {
			t.Helper()
			t.Fatalf("seed %d seq %d op %d (nbits %d): "+format, append([]any{seed, seq, op, nbits}, args...)...)
		}
		// randRange picks bits [first, end) mostly inside one focus chunk.
		focus := r.Uint64N(b.NumPages())
		randRange := func() (uint64, uint64) {
			if r.IntN(200) == 0 {
				focus = r.Uint64N(b.NumPages())
			}
			base := focus * BitsPerPage
			n := b.bits.chunkLen(focus)
			var first, length uint64
			switch r.IntN(10) {
			case 0: // the whole chunk
				return base, base + n
			case 1: // across chunks
				first, length = r.Uint64N(nbits), r.Uint64N(3*BitsPerPage)+1
			case 2, 3:
				first, length = base+r.Uint64N(n), r.Uint64N(3000)+1
			case 4:
				first, length = base+r.Uint64N(n), r.Uint64N(70)+1
			default:
				first, length = base+r.Uint64N(n), 1
			}
			return first, min(nbits, first+length)
		}
		for op := range 3000 {
			switch k := r.IntN(20); {
			case k < 8:
				first, end := randRange()
				if got, want := b.setBits(first, end), ref.put(first, end, true); got != want {
					fail(op, "setBits(%d, %d) = %d, want %d", first, end, got, want)
				}
			case k < 16:
				first, end := randRange()
				if got, want := b.clearBits(first, end), ref.put(first, end, false); got != want {
					fail(op, "clearBits(%d, %d) = %d, want %d", first, end, got, want)
				}
			case k == 16: // load a page of random density
				p := r.Uint64N(b.NumPages())
				n := b.bits.chunkLen(p)
				ands := []int{-1, 6, 5, 1, 0, 5}[r.IntN(6)] // words ANDed per word: density 0, 1/64, 1/32, 1/2, 1, 31/32
				var v words
				for j := range v {
					x := ^uint64(0)
					for range ands {
						x &= r.Uint64()
					}
					if ands < 0 {
						x = 0
					}
					if r.IntN(2) == 0 && ands == 5 {
						x = ^x
					}
					v[j] = x & rangeMaskUpTo(uint64(j)*64, n)
				}
				data := make([]byte, PageSize)
				for j, x := range v {
					binary.LittleEndian.PutUint64(data[j*8:], x)
				}
				ok := r.IntN(8) != 0
				if err := b.LoadPage(p, data, ok); err != nil {
					fail(op, "LoadPage(%d): %v", p, err)
				}
				if !ok {
					clear(v[:])
					setWords(&v, 0, n)
				}
				for j, x := range v {
					if g := p*wordsPerPage + uint64(j); g < uint64(len(ref)) {
						ref[g] |= x
					}
				}
			case k == 17: // merge a bitmap with a few ranges set
				o := mustNew(t, size, 4096)
				for range r.IntN(6) {
					first, end := randRange()
					o.setBits(first, end)
					ref.put(first, end, true)
				}
				if err := b.Merge(o); err != nil {
					fail(op, "Merge: %v", err)
				}
				checkSparse(t, o)
			case k == 18: // clone, change the clone, compare
				c := b.Clone()
				if !c.Equal(b) || !b.Equal(c) {
					fail(op, "clone not equal")
				}
				// Move one set bit of the clone to a clear place: same count,
				// other bits, in the same chunk or another one.
				x, okx := c.NextSet(r.Uint64N(nbits))
				y, oky := c.bits.nextClear(r.Uint64N(nbits), nbits)
				if r.IntN(2) == 0 && okx {
					y, oky = c.bits.nextClear(x&^(BitsPerPage-1), min(nbits, x|(BitsPerPage-1)+1))
				}
				if okx && oky {
					c.clearBits(x, x+1)
					c.setBits(y, y+1)
					if c.Equal(b) || b.Equal(c) {
						fail(op, "bit %d moved to %d, still equal", x, y)
					}
				}
				checkSparse(t, c)
			default: // queries
				from := r.Uint64N(nbits)
				i, ok := b.NextSet(from)
				j := from
				for j < nbits && !ref.test(j) {
					j++
				}
				if ok != (j < nbits) || ok && i != j {
					fail(op, "NextSet(%d) = %d %t, want %d", from, i, ok, j)
				}
				first, end := randRange()
				want := false
				for x := first; x < end; x++ {
					want = want || ref.test(x)
				}
				if got := b.Test(int64(first)*4096, int64(end-first)*4096); got != want {
					fail(op, "Test of bits [%d, %d) = %t, want %t", first, end, got, want)
				}
				var wantRuns [][2]uint64
				for x := from; x < nbits; x++ {
					if ref.test(x) {
						if n := len(wantRuns); n > 0 && wantRuns[n-1][0]+wantRuns[n-1][1] == x {
							wantRuns[n-1][1]++
						} else {
							wantRuns = append(wantRuns, [2]uint64{x, 1})
						}
					}
				}
				var gotRuns [][2]uint64
				b.Runs(from, func(s, n uint64) bool { gotRuns = append(gotRuns, [2]uint64{s, n}); return true })
				if !slices.Equal(gotRuns, wantRuns) {
					fail(op, "Runs(%d) = %v, want %v", from, gotRuns, wantRuns)
				}
				p := r.Uint64N(b.NumPages())
				enc := b.EncodePage(p, nil)
				for w := range uint64(wordsPerPage) {
					var x uint64
					if g := p*wordsPerPage + w; g < uint64(len(ref)) {
						x = ref[g]
					}
					if got := binary.LittleEndian.Uint64(enc[w*8:]); got != x {
						fail(op, "EncodePage(%d) word %d = %#x, want %#x", p, w, got, x)
					}
				}
			}
			checkSparse(t, b)
			if b.Count() != countOnes(ref) {
				fail(op, "count %d, want %d", b.Count(), countOnes(ref))
			}
		}
		if !slices.Equal(b.bits.Words(), []uint64(ref)) {
			t.Fatalf("seed %d seq %d: the bits differ from the reference", seed, seq)
		}
	}
}

func countOnes(d dense) (n uint64) {
	for _, x := range d {
		n += uint64(bits.OnesCount64(x))
	}
	return n
}

// TestSparseForms walks one chunk through its forms and checks that Equal
// compares bits, not forms.
func TestSparseForms(t *testing.T) {
	const nbits = 3 * BitsPerPage
	form := func(b *Bitmap, c uint64) string {
		switch p := b.bits.chunks[c]; {
		case p == nil:
			return "clear"
		case p == full:
			return "full"
		case p.w != nil:
			return "words"
		default:
			return "array"
		}
	}
	a := mustNew(t, nbits*4096, 4096)
	b := mustNew(t, nbits*4096, 4096)
	step := func(what, wantA, wantB string, equal bool) {
		t.Helper()
		checkSparse(t, a)
		checkSparse(t, b)
		if form(a, 1) != wantA || form(b, 1) != wantB || a.Equal(b) != equal || b.Equal(a) != equal {
			t.Fatalf("%s: forms %s and %s, equal %t; want %s, %s, %t", what, form(a, 1), form(b, 1), a.Equal(b), wantA, wantB, equal)
		}
	}
	base := uint64(BitsPerPage)
	for i := range uint64(300) {
		a.setBits(base+3*i, base+3*i+1)
	}
	b.setBits(base, base+3*arrayMax) // one run: words
	step("300 bits and a run", "array", "words", false)
	for i := range uint64(3 * arrayMax) {
		if i%3 != 0 || i >= 3*300 {
			b.clearBits(base+i, base+i+1)
		}
	}
	step("the same 300 bits", "array", "words", true)
	b.clearBits(base+3, base+4)
	b.setBits(base+4, base+5)
	step("one bit moved", "array", "words", false)
	b.clearBits(base+4, base+5)
	b.setBits(base+3, base+4)
	for i := uint64(300); i < arrayMax+1; i++ {
		a.setBits(base+3*i, base+3*i+1)
	}
	step("array grown past arrayMax", "words", "words", false)
	b.clearBits(base, base+BitsPerPage)
	a.clearBits(base, base+BitsPerPage)
	step("cleared", "clear", "clear", true)
	a.setBits(base, base+BitsPerPage)
	b.setBits(base, base+BitsPerPage-1)
	step("full and all but one", "full", "words", false)
	b.setBits(base+BitsPerPage-1, base+BitsPerPage)
	step("both full", "full", "full", true)
	if b.bits.spareWords == nil {
		t.Fatalf("words given up were not kept as the spare")
	}
	b.clearBits(base+5, base+6)
	step("one bit cleared from full", "full", "words", false)
	b.clearBits(base, base+BitsPerPage-arrayMin)
	step("cleared down to arrayMin", "full", "array", false)
}

// heapAfterGC returns the live heap after a collection.
func heapAfterGC() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// checkHeap fails if fn, which builds a bitmap, leaves the live heap more
// than limit bytes bigger.
func checkHeap(t *testing.T, limit int64, fn func() *Bitmap) {
	t.Helper()
	before := heapAfterGC()
	b := fn()
	grown := heapAfterGC() - before
	t.Logf("%d bits set: heap grew by %d KiB", b.Count(), grown>>10)
	if grown > limit {
		t.Errorf("heap grew by %d KiB, more than %d KiB", grown>>10, limit>>10)
	}
	runtime.KeepAlive(b)
}

// The bitmap of a 1 TiB volume at 4 KiB per bit (2^28 bits: 32 MiB if kept
// whole) costs what is set, not the device size: a few thousand scattered
// writes, a full sync or an Open of clean pages stay far below 4 MiB.
func TestMemory1TiB(t *testing.T) {
	const tib, limit = 1 << 40, 4 << 20
	t.Run("scattered", func(t *testing.T) {
		checkHeap(t, limit, func() *Bitmap {
			b := mustNew(t, tib, 4096)
			r := rand.New(rand.NewPCG(1, 2))
			for range 5000 {
				b.SetRange(r.Int64N(tib/4096)*4096, 4096)
			}
			// A few hot regions of many writes each.
			for range 20 {
				base := r.Int64N(tib/(1<<20)) << 20
				for range 200 {
					b.SetRange(base+r.Int64N(1<<30), 4096+r.Int64N(64<<10))
				}
			}
			return b
		})
	})
	t.Run("full sync", func(t *testing.T) {
		checkHeap(t, limit, func() *Bitmap {
			b := mustNew(t, tib, 4096)
			b.SetRange(0, tib)
			// Resync progress: the first 100 GiB copied, in 1 MiB pieces
			// whose acknowledgements arrive out of order.
			const done = 100 << 30
			for off := int64(0); off < done; off += 2 << 20 {
				b.ClearRange(off+1<<20, 1<<20)
				b.ClearRange(off, 1<<20)
			}
			// Writes during the resync land in copied regions.
			r := rand.New(rand.NewPCG(3, 4))
			for range 1000 {
				b.SetRange(r.Int64N(done/4096)*4096, 4096)
			}
			return b
		})
	})
	t.Run("open", func(t *testing.T) {
		checkHeap(t, limit, func() *Bitmap {
			b := mustNew(t, tib, 4096)
			page := make([]byte, PageSize)
			for i := range b.NumPages() {
				if err := b.LoadPage(i, page, i%1000 != 7); err != nil {
					t.Fatal(err)
				}
			}
			return b
		})
	})
}
