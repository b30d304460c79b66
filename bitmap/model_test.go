package bitmap

import (
	"flag"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

var seedFlag = flag.Uint64("bitmap.seed", 0, "replay the property tests with this seed (0: random)")

// testSeed returns the seed for a property test and logs it, so a failure
// can be replayed with -bitmap.seed.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay: go test ./bitmap -run '%s$' -bitmap.seed %d)", seed, t.Name(), seed)
	return seed
}

// model is the obviously correct reference: one bool per bit, every byte
// range resolved by looking at every bit's region.
type model struct {
	size  int64
	bpb   int64
	bits  []bool
	dirty []bool // per page: some bit changed since marked clean
}

func newModel(size int64, bpb uint32) *model {
	n := int((size + int64(bpb) - 1) / int64(bpb))
	return &model{size: size, bpb: int64(bpb), bits: make([]bool, n), dirty: make([]bool, (n+BitsPerPage-1)/BitsPerPage)}
}

// region returns bit i's byte range [lo, hi).
func (m *model) region(i int) (lo, hi int64) {
	lo = int64(i) * m.bpb
	return lo, min(lo+m.bpb, m.size)
}

func (m *model) valid(off, length int64) bool {
	// Big-number arithmetic is not needed: the model's inputs are bounded
	// except for the extreme values, which are handled here explicitly.
	if off < 0 || length < 0 || off > m.size {
		return false
	}
	return length <= m.size-off
}

func (m *model) put(i int, v bool) bool {
	if m.bits[i] == v {
		return false
	}
	m.bits[i] = v
	m.dirty[i/BitsPerPage] = true
	return true
}

func (m *model) setRange(off, length int64) (uint64, bool) {
	if !m.valid(off, length) {
		return 0, false
	}
	var n uint64
	for i := range m.bits {
		lo, hi := m.region(i)
		if length > 0 && lo < off+length && off < hi && m.put(i, true) {
			n++
		}
	}
	return n, true
}

func (m *model) clearRange(off, length int64) (uint64, bool) {
	if !m.valid(off, length) {
		return 0, false
	}
	var n uint64
	for i := range m.bits {
		lo, hi := m.region(i)
		if length > 0 && off <= lo && hi <= off+length && m.put(i, false) {
			n++
		}
	}
	return n, true
}

// touchedBits returns the bits whose regions intersect [off, off+length),
// with the range clamped to the device (the query semantics).
func (m *model) touchedBits(off, length int64) []int {
	var out []int
	if length <= 0 {
		return nil
	}
	end := off + length
	if off > 0 && length > math.MaxInt64-off {
		end = math.MaxInt64
	}
	for i := range m.bits {
		lo, hi := m.region(i)
		if lo < end && off < hi {
			out = append(out, i)
		}
	}
	return out
}

func (m *model) test(off, length int64) bool {
	for _, i := range m.touchedBits(off, length) {
		if m.bits[i] {
			return true
		}
	}
	return false
}

func (m *model) count() (n uint64) {
	for _, v := range m.bits {
		if v {
			n++
		}
	}
	return n
}

func (m *model) dirtyBytes() (n int64) {
	for i, v := range m.bits {
		if v {
			lo, hi := m.region(i)
			n += hi - lo
		}
	}
	return n
}

func (m *model) runs(from uint64) [][2]uint64 {
	var out [][2]uint64
	for i := from; i < uint64(len(m.bits)); i++ {
		if !m.bits[i] {
			continue
		}
		j := i
		for j < uint64(len(m.bits)) && m.bits[j] {
			j++
		}
		out = append(out, [2]uint64{i, j - i})
		i = j
	}
	return out
}

func (m *model) dirtyPages() []uint64 {
	var out []uint64
	for p, d := range m.dirty {
		if d {
			out = append(out, uint64(p))
		}
	}
	return out
}

// randGeometry picks a device: mostly small (many ops are cheap), sometimes
// spanning several pages. The size is rarely a multiple of bytes per bit.
func randGeometry(r *rand.Rand) (int64, uint32) {
	bpb := []uint32{4096, 4096, 8192, 1 << 20}[r.IntN(4)]
	var nbits int64
	switch r.IntN(4) {
	case 0:
		nbits = 1 + r.Int64N(3)
	case 1, 2:
		nbits = 1 + r.Int64N(300)
	default:
		nbits = BitsPerPage*int64(1+r.IntN(3)) + r.Int64N(200) - 100
	}
	size := (nbits-1)*int64(bpb) + 1 + r.Int64N(int64(bpb))
	if r.IntN(3) == 0 {
		size = nbits * int64(bpb)
	}
	return size, bpb
}

// randOff picks offsets that exercise the boundaries: region edges +-1,
// the device end, negatives and extreme values.
func randOff(r *rand.Rand, size, bpb int64) int64 {
	nb := (size + bpb - 1) / bpb
	switch r.IntN(10) {
	case 0:
		return []int64{0, -1, size, size - 1, size + 1, math.MaxInt64, math.MinInt64, -bpb}[r.IntN(8)]
	case 1, 2, 3, 4:
		return r.Int64N(nb+1)*bpb + r.Int64N(3) - 1
	default:
		return r.Int64N(size + 1)
	}
}

func randLen(r *rand.Rand, bpb int64) int64 {
	switch r.IntN(10) {
	case 0:
		return []int64{0, -1, math.MaxInt64, math.MinInt64, 1}[r.IntN(5)]
	case 1, 2, 3, 4:
		return r.Int64N(8)*bpb + r.Int64N(3) - 1
	case 5:
		return r.Int64N(BitsPerPage*3) * bpb
	default:
		return r.Int64N(4 * bpb)
	}
}

func TestPropertyAgainstModel(t *testing.T) {
	seed := testSeed(t)
	r := rand.New(rand.NewPCG(seed, 0))
	for seq := 0; seq < 200; seq++ {
		size, bpb := randGeometry(r)
		b := mustNew(t, size, bpb)
		m := newModel(size, bpb)
		ops := 400
		if b.NBits() > 1000 {
			ops = 60
		}
		for op := 0; op < ops; op++ {
			off, length := randOff(r, size, int64(bpb)), randLen(r, int64(bpb))
			if r.IntN(6) == 0 && off >= 0 && off <= size {
				length = size - off // ranges that end exactly at the device end
			}
			fail := func(format string, args ...any) {
				t.Helper()
				t.Fatalf("seed %d seq %d op %d (size %d bpb %d): "+format,
					append([]any{seed, seq, op, size, bpb}, args...)...)
			}
			switch k := r.IntN(12); k {
			case 0, 1, 2:
				n, err := b.SetRange(off, length)
				wn, ok := m.setRange(off, length)
				if (err == nil) != ok || n != wn {
					fail("SetRange(%d, %d) = %d, %v; model %d, valid %t", off, length, n, err, wn, ok)
				}
			case 3, 4:
				n, err := b.ClearRange(off, length)
				wn, ok := m.clearRange(off, length)
				if (err == nil) != ok || n != wn {
					fail("ClearRange(%d, %d) = %d, %v; model %d, valid %t", off, length, n, err, wn, ok)
				}
			case 5:
				if got, want := b.Test(off, length), m.test(off, length); got != want {
					fail("Test(%d, %d) = %t, model %t", off, length, got, want)
				}
			case 6:
				i := r.Uint64N(b.NBits() + 2)
				if r.IntN(2) == 0 {
					err := b.SetBit(i)
					if (err == nil) != (i < b.NBits()) {
						fail("SetBit(%d): %v", i, err)
					}
					if err == nil {
						m.put(int(i), true)
					}
				} else {
					err := b.ClearBit(i)
					if (err == nil) != (i < b.NBits()) {
						fail("ClearBit(%d): %v", i, err)
					}
					if err == nil {
						m.put(int(i), false)
					}
				}
			case 7:
				first, last := b.PagesFor(off, length)
				var want []uint64
				for _, i := range m.touchedBits(off, length) {
					if p := uint64(i) / BitsPerPage; !slices.Contains(want, p) {
						want = append(want, p)
					}
				}
				var got []uint64
				for p := first; p <= last; p++ {
					got = append(got, p)
				}
				if !slices.Equal(got, want) {
					fail("PagesFor(%d, %d) = %d..%d, model %v", off, length, first, last, want)
				}
			case 8:
				from := r.Uint64N(b.NBits() + 2)
				var got [][2]uint64
				b.Runs(from, func(s, n uint64) bool { got = append(got, [2]uint64{s, n}); return true })
				if want := m.runs(from); !slices.Equal(got, want) {
					fail("Runs(%d) = %v, model %v", from, got, want)
				}
				i, ok := b.NextSet(from)
				if want := m.runs(from); ok != (len(want) > 0) || ok && i != want[0][0] {
					fail("NextSet(%d) = %d %t, model runs %v", from, i, ok, want)
				}
			case 9:
				if p := r.Uint64N(b.NumPages() + 1); r.IntN(2) == 0 {
					b.MarkPageClean(p)
					if p < uint64(len(m.dirty)) {
						m.dirty[p] = false
					}
				} else {
					b.MarkPageDirty(p)
					if p < uint64(len(m.dirty)) {
						m.dirty[p] = true
					}
				}
			case 10:
				// Merge a random sparse bitmap of the same geometry.
				o := mustNew(t, size, bpb)
				for range r.IntN(5) {
					o.SetRange(randOff(r, size, int64(bpb)), randLen(r, int64(bpb)))
				}
				for i := range m.bits {
					if o.TestBit(uint64(i)) {
						m.put(i, true)
					}
				}
				if err := b.Merge(o); err != nil {
					fail("Merge: %v", err)
				}
			case 11:
				// Torn page on load: the whole page becomes set and dirty.
				p := r.Uint64N(b.NumPages())
				if err := b.LoadPage(p, nil, false); err != nil {
					fail("LoadPage torn: %v", err)
				}
				for i := p * BitsPerPage; i < min((p+1)*BitsPerPage, b.NBits()); i++ {
					m.put(int(i), true)
				}
				m.dirty[p] = true
			}
			if b.Count() != m.count() || b.DirtyBytes() != m.dirtyBytes() {
				fail("count %d dirty bytes %d; model %d %d", b.Count(), b.DirtyBytes(), m.count(), m.dirtyBytes())
			}
			if got, want := b.DirtyPages(), m.dirtyPages(); !slices.Equal(got, want) {
				fail("dirty pages %v, model %v", got, want)
			}
			checkInvariants(t, b)
		}
		for i, v := range m.bits {
			if b.TestBit(uint64(i)) != v {
				t.Fatalf("seed %d seq %d: bit %d is %t, model %t", seed, seq, i, !v, v)
			}
		}
	}
}
