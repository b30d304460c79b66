package bitmap

import (
	"errors"
	"math"
	"math/bits"
	"slices"
	"testing"
)

// checkInvariants verifies what every exported operation must preserve: the
// cached count matches the bits, nothing is set past NBits, the bit sets have
// their exact lengths.
func checkInvariants(t *testing.T, b *Bitmap) {
	t.Helper()
	if got := uint64(b.bits.Len()); got != b.nbits {
		t.Fatalf("bitset length %d, nbits %d", got, b.nbits)
	}
	if got := uint64(b.dirty.Len()); got != b.NumPages() {
		t.Fatalf("dirty length %d, pages %d", got, b.NumPages())
	}
	w := b.bits.Words()
	if uint64(len(w)) != (b.nbits+63)/64 {
		t.Fatalf("%d words for %d bits", len(w), b.nbits)
	}
	var n uint64
	for _, x := range w {
		n += uint64(bits.OnesCount64(x))
	}
	if n != b.count {
		t.Fatalf("cached count %d, real %d", b.count, n)
	}
	if r := b.nbits % 64; r != 0 && w[len(w)-1]>>r != 0 {
		t.Fatalf("bits set past nbits in the last word: %#x", w[len(w)-1])
	}
}

// setBits lists the set bits.
func listBits(b *Bitmap) []uint64 {
	var out []uint64
	for i, ok := b.NextSet(0); ok; i, ok = b.NextSet(i + 1) {
		out = append(out, i)
	}
	return out
}

func mustNew(t testing.TB, size int64, bpb uint32) *Bitmap {
	t.Helper()
	b, err := New(size, bpb)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNewGeometry(t *testing.T) {
	tests := []struct {
		size  int64
		bpb   uint32
		nbits uint64
		pages uint64
		err   error
	}{
		{4096, 4096, 1, 1, nil},
		{1, 4096, 1, 1, nil},
		{4097, 4096, 2, 1, nil},
		{8192, 4096, 2, 1, nil},
		{32768 * 4096, 4096, 32768, 1, nil},
		{32768*4096 + 1, 4096, 32769, 2, nil},
		{3<<20 + 1, 1 << 20, 4, 1, nil},
		{1 << 40, 4096, 1 << 28, 1 << 13, nil},
		{1 << 40, 1 << 20, 1 << 20, 32, nil},
		{4096, 8192, 1, 1, nil},
		{0, 4096, 0, 0, ErrGeometry},
		{-1, 4096, 0, 0, ErrGeometry},
		{math.MinInt64, 4096, 0, 0, ErrGeometry},
		{4096, 0, 0, 0, ErrGeometry},
		{4096, 2048, 0, 0, ErrGeometry},
		{4096, 4095, 0, 0, ErrGeometry},
		{4096, 4097, 0, 0, ErrGeometry},
		{4096, 3 << 12, 0, 0, ErrGeometry},
		{4096, 2 << 20, 0, 0, ErrGeometry},
		{4096, math.MaxUint32, 0, 0, ErrGeometry},
		{math.MaxInt64, 4096, 0, 0, ErrGeometry},    // 2^51 bits: too many
		{math.MaxInt64, 1 << 20, 0, 0, ErrGeometry}, // 2^43 bits: too many
		{MaxBits*4096 + 1, 4096, 0, 0, ErrGeometry}, // one bit over the cap
	}
	for _, tc := range tests {
		b, err := New(tc.size, tc.bpb)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("New(%d, %d) = %v, want %v", tc.size, tc.bpb, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("New(%d, %d): %v", tc.size, tc.bpb, err)
			continue
		}
		if b.NBits() != tc.nbits || b.NumPages() != tc.pages || b.Size() != tc.size || b.BytesPerBit() != tc.bpb {
			t.Errorf("New(%d, %d): nbits %d pages %d, want %d %d", tc.size, tc.bpb, b.NBits(), b.NumPages(), tc.nbits, tc.pages)
		}
		if b.Count() != 0 || b.DirtyBytes() != 0 || len(b.DirtyPages()) != 0 {
			t.Errorf("New(%d, %d) is not clean and clear", tc.size, tc.bpb)
		}
		checkInvariants(t, b)
	}
}

// A device of 10 full 4 KiB blocks plus a 100-byte tail: 11 bits.
const (
	tailSize = 10*4096 + 100
	tailBit  = 10
)

func TestSetRangeTable(t *testing.T) {
	tests := []struct {
		off, length int64
		want        []uint64
		err         bool
	}{
		{0, 0, nil, false},
		{tailSize, 0, nil, false},
		{12345, 0, nil, false},
		{0, 1, []uint64{0}, false},
		{4095, 1, []uint64{0}, false},
		{4095, 2, []uint64{0, 1}, false},
		{4096, 4096, []uint64{1}, false},
		{4096, 4097, []uint64{1, 2}, false},
		{4097, 4095, []uint64{1}, false},
		{40959, 1, []uint64{9}, false},
		{40959, 2, []uint64{9, 10}, false},
		{40960, 100, []uint64{10}, false},
		{tailSize - 1, 1, []uint64{10}, false},
		{0, tailSize, []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, false},
		{tailSize, 1, nil, true},
		{tailSize - 1, 2, nil, true},
		{tailSize + 1, 0, nil, true},
		{-1, 1, nil, true},
		{-1, 0, nil, true},
		{0, -1, nil, true},
		{1, math.MaxInt64, nil, true},
		{math.MaxInt64, math.MaxInt64, nil, true},
		{math.MaxInt64, 0, nil, true},
		{math.MinInt64, math.MaxInt64, nil, true},
		{math.MinInt64, 0, nil, true},
		{0, math.MinInt64, nil, true},
	}
	for _, tc := range tests {
		b := mustNew(t, tailSize, 4096)
		n, err := b.SetRange(tc.off, tc.length)
		if tc.err {
			if !errors.Is(err, ErrRange) || n != 0 || b.Count() != 0 || len(b.DirtyPages()) != 0 {
				t.Errorf("SetRange(%d, %d) = %d, %v; want ErrRange and no change", tc.off, tc.length, n, err)
			}
			continue
		}
		if err != nil || n != uint64(len(tc.want)) || !slices.Equal(listBits(b), tc.want) {
			t.Errorf("SetRange(%d, %d) = %d, %v, bits %v; want %v", tc.off, tc.length, n, err, listBits(b), tc.want)
		}
		// Setting again sets nothing new and dirties nothing.
		b.MarkPageClean(0)
		if n, err := b.SetRange(tc.off, tc.length); n != 0 || err != nil || len(b.DirtyPages()) != 0 {
			t.Errorf("SetRange(%d, %d) twice = %d, %v, dirty %v", tc.off, tc.length, n, err, b.DirtyPages())
		}
		checkInvariants(t, b)
	}
}

func TestClearRangeTable(t *testing.T) {
	all := []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	without := func(drop ...uint64) []uint64 {
		return slices.DeleteFunc(slices.Clone(all), func(i uint64) bool { return slices.Contains(drop, i) })
	}
	tests := []struct {
		off, length int64
		cleared     []uint64
		err         bool
	}{
		{0, 0, nil, false},
		{tailSize, 0, nil, false},
		{0, 1, nil, false},
		{0, 4095, nil, false},
		{0, 4096, []uint64{0}, false},
		{1, 4096, nil, false},
		{1, 8191, []uint64{1}, false},
		{4095, 4098, []uint64{1}, false},
		{4095, 8193, []uint64{1, 2}, false},
		{4096, 4096, []uint64{1}, false},
		{40960, 99, nil, false}, // tail not wholly covered
		{40960, 100, []uint64{tailBit}, false},
		{40961, 99, nil, false},
		{40959, 101, []uint64{tailBit}, false},
		{36864, 4196, []uint64{9, tailBit}, false},
		{36865, 4195, []uint64{tailBit}, false},
		{36864, 4195, []uint64{9}, false},
		{0, tailSize, all, false},
		{0, tailSize - 1, without(tailBit), false},
		{1, tailSize - 1, without(0), false},
		{tailSize, 1, nil, true},
		{-1, 4097, nil, true},
		{0, -4096, nil, true},
		{4096, math.MaxInt64, nil, true},
		{math.MaxInt64, 1, nil, true},
		{math.MinInt64, math.MaxInt64, nil, true},
	}
	for _, tc := range tests {
		b := mustNew(t, tailSize, 4096)
		if _, err := b.SetRange(0, tailSize); err != nil {
			t.Fatal(err)
		}
		b.MarkPageClean(0)
		n, err := b.ClearRange(tc.off, tc.length)
		if tc.err {
			if !errors.Is(err, ErrRange) || n != 0 || b.Count() != 11 || len(b.DirtyPages()) != 0 {
				t.Errorf("ClearRange(%d, %d) = %d, %v; want ErrRange and no change", tc.off, tc.length, n, err)
			}
			continue
		}
		want := without(tc.cleared...)
		if err != nil || n != uint64(len(tc.cleared)) || !slices.Equal(listBits(b), want) {
			t.Errorf("ClearRange(%d, %d) = %d, %v, bits %v; want %v left", tc.off, tc.length, n, err, listBits(b), want)
		}
		if dirty := len(b.DirtyPages()) == 1; dirty != (n > 0) {
			t.Errorf("ClearRange(%d, %d) cleared %d, dirty pages %v", tc.off, tc.length, n, b.DirtyPages())
		}
		checkInvariants(t, b)
	}
}

// A device whose size is a multiple of the granularity has no short tail:
// the last bit needs its whole 4 KiB.
func TestClearRangeExactEnd(t *testing.T) {
	b := mustNew(t, 8*4096, 4096)
	b.SetRange(0, 8*4096)
	if n, _ := b.ClearRange(7*4096+1, 4095); n != 0 {
		t.Errorf("partly covered last bit cleared")
	}
	if n, _ := b.ClearRange(7*4096, 4096); n != 1 || b.TestBit(7) {
		t.Errorf("wholly covered last bit not cleared: %d", n)
	}
}

func TestRangesOneMiB(t *testing.T) {
	const mib = 1 << 20
	const size = 3*mib + 1 // 4 bits, the last covering 1 byte
	b := mustNew(t, size, mib)
	if n, err := b.SetRange(mib-1, 2); n != 2 || err != nil {
		t.Fatalf("SetRange across a 1 MiB boundary = %d, %v", n, err)
	}
	if n, _ := b.SetRange(3*mib, 1); n != 1 || !b.TestBit(3) {
		t.Fatalf("tail bit: %d", n)
	}
	if got := b.DirtyBytes(); got != 2*mib+1 {
		t.Errorf("DirtyBytes = %d, want %d", got, 2*mib+1)
	}
	if n, _ := b.ClearRange(0, mib-1); n != 0 {
		t.Errorf("cleared a partly covered 1 MiB bit")
	}
	if n, _ := b.ClearRange(4096, mib); n != 0 {
		t.Errorf("cleared a partly covered 1 MiB bit")
	}
	if n, _ := b.ClearRange(0, mib); n != 1 || b.TestBit(0) {
		t.Errorf("ClearRange(0, 1 MiB) = %d", n)
	}
	if n, _ := b.ClearRange(3*mib, 1); n != 1 || b.TestBit(3) {
		t.Errorf("1-byte tail not cleared: %d", n)
	}
	if got := listBits(b); !slices.Equal(got, []uint64{1}) {
		t.Errorf("bits %v, want [1]", got)
	}
	checkInvariants(t, b)
}

func TestTestRangeClamps(t *testing.T) {
	b := mustNew(t, tailSize, 4096)
	b.SetBit(0)
	b.SetBit(tailBit)
	tests := []struct {
		off, length int64
		want        bool
	}{
		{0, 0, false},
		{0, 1, true},
		{4096, 4096, false},
		{4095, 2, true},
		{4096, 36864, false},
		{4096, 36865, true},
		{tailSize - 1, 1, true},
		{tailSize, 1, false},
		{tailSize, math.MaxInt64, false},
		{tailSize - 1, math.MaxInt64, true},
		{math.MaxInt64, math.MaxInt64, false},
		{-100, 101, true},
		{-100, 100, false},
		{-1, -1, false},
		{0, math.MinInt64, false},
		{math.MinInt64, math.MaxInt64, false},
		{math.MinInt64, 0, false},
		{4096, -1, false},
	}
	for _, tc := range tests {
		if got := b.Test(tc.off, tc.length); got != tc.want {
			t.Errorf("Test(%d, %d) = %t, want %t", tc.off, tc.length, got, tc.want)
		}
	}
}

func TestBitsAndDirtyBytes(t *testing.T) {
	b := mustNew(t, tailSize, 4096)
	for _, i := range []uint64{tailBit + 1, math.MaxUint64} {
		if err := b.SetBit(i); !errors.Is(err, ErrRange) {
			t.Errorf("SetBit(%d) = %v", i, err)
		}
		if err := b.ClearBit(i); !errors.Is(err, ErrRange) {
			t.Errorf("ClearBit(%d) = %v", i, err)
		}
		if b.TestBit(i) {
			t.Errorf("TestBit(%d)", i)
		}
		if _, ok := b.NextSet(i); ok {
			t.Errorf("NextSet(%d)", i)
		}
	}
	b.SetBit(tailBit)
	if got := b.DirtyBytes(); got != 100 {
		t.Errorf("tail bit alone: DirtyBytes %d, want 100", got)
	}
	b.SetBit(3)
	if got := b.DirtyBytes(); got != 4196 || b.Count() != 2 {
		t.Errorf("DirtyBytes %d count %d", got, b.Count())
	}
	b.ClearBit(tailBit)
	if got := b.DirtyBytes(); got != 4096 {
		t.Errorf("DirtyBytes %d", got)
	}
	b.SetRange(0, tailSize)
	if got := b.DirtyBytes(); got != tailSize {
		t.Errorf("all set: DirtyBytes %d, want %d", got, tailSize)
	}
}

func TestRunsAndNextSet(t *testing.T) {
	b := mustNew(t, 200*4096, 4096)
	for _, r := range [][2]uint64{{0, 3}, {10, 1}, {63, 2}, {128, 64}, {199, 1}} {
		b.setBits(r[0], r[0]+r[1])
	}
	collect := func(from uint64, limit int) [][2]uint64 {
		var out [][2]uint64
		b.Runs(from, func(s, n uint64) bool {
			out = append(out, [2]uint64{s, n})
			return len(out) < limit
		})
		return out
	}
	if got, want := collect(0, 99), [][2]uint64{{0, 3}, {10, 1}, {63, 2}, {128, 64}, {199, 1}}; !slices.Equal(got, want) {
		t.Errorf("Runs(0) = %v, want %v", got, want)
	}
	if got, want := collect(1, 2), [][2]uint64{{1, 2}, {10, 1}}; !slices.Equal(got, want) {
		t.Errorf("Runs(1) stopped after 2 = %v, want %v", got, want)
	}
	if got, want := collect(150, 99), [][2]uint64{{150, 42}, {199, 1}}; !slices.Equal(got, want) {
		t.Errorf("Runs(150) = %v, want %v", got, want)
	}
	if got := collect(200, 99); got != nil {
		t.Errorf("Runs(200) = %v", got)
	}
	if got := collect(math.MaxUint64, 99); got != nil {
		t.Errorf("Runs(max) = %v", got)
	}
	if i, ok := b.NextSet(11); i != 63 || !ok {
		t.Errorf("NextSet(11) = %d %t", i, ok)
	}
	if _, ok := b.NextSet(200); ok {
		t.Errorf("NextSet(200) found a bit")
	}
}

func TestBitRegion(t *testing.T) {
	b := mustNew(t, tailSize, 4096)
	tests := []struct {
		start, n    uint64
		off, length int64
	}{
		{0, 1, 0, 4096},
		{0, 0, 0, 0},
		{2, 3, 8192, 3 * 4096},
		{9, 2, 9 * 4096, 4196},
		{10, 1, 40960, 100},
		{10, math.MaxUint64, 40960, 100},
		{0, math.MaxUint64, 0, tailSize},
		{11, 1, tailSize, 0},
		{math.MaxUint64, math.MaxUint64, tailSize, 0},
	}
	for _, tc := range tests {
		off, length := b.BitRegion(tc.start, tc.n)
		if off != tc.off || length != tc.length {
			t.Errorf("BitRegion(%d, %d) = %d, %d; want %d, %d", tc.start, tc.n, off, length, tc.off, tc.length)
		}
	}
}

func TestMergeCloneEqual(t *testing.T) {
	a := mustNew(t, 3*BitsPerPage*4096, 4096)
	c := mustNew(t, 3*BitsPerPage*4096, 4096)
	a.SetBit(5)
	c.SetBit(5)
	c.SetBit(2*BitsPerPage + 7)
	a.MarkPageClean(0)
	if err := a.Merge(c); err != nil {
		t.Fatal(err)
	}
	if !a.Equal(c) || a.Count() != 2 {
		t.Errorf("after merge: %v vs %v", listBits(a), listBits(c))
	}
	if got := a.DirtyPages(); !slices.Equal(got, []uint64{2}) {
		t.Errorf("merge dirtied %v, want only page 2 (page 0 gained nothing)", got)
	}
	checkInvariants(t, a)

	d := a.Clone()
	d.SetBit(9)
	if a.TestBit(9) || a.Equal(d) || !slices.Equal(d.DirtyPages(), []uint64{0, 2}) || !slices.Equal(a.DirtyPages(), []uint64{2}) {
		t.Errorf("Clone shares state with the original")
	}
	if a.Equal(nil) || !(*Bitmap)(nil).Equal(nil) {
		t.Errorf("Equal with nil")
	}
	for _, other := range []*Bitmap{
		nil,
		mustNew(t, 3*BitsPerPage*4096-1, 4096),
		mustNew(t, 3*BitsPerPage*4096, 8192),
	} {
		before := a.Clone()
		if err := a.Merge(other); !errors.Is(err, ErrMismatch) {
			t.Errorf("Merge mismatched geometry: %v", err)
		}
		if !a.Equal(before) {
			t.Errorf("failed Merge changed the bitmap")
		}
	}
	// Same number of bits, different size (tail length): still a mismatch.
	e := mustNew(t, 10*4096+1, 4096)
	f := mustNew(t, 10*4096+2, 4096)
	if err := e.Merge(f); !errors.Is(err, ErrMismatch) || e.Equal(f) {
		t.Errorf("Merge with another tail length: %v", err)
	}
}
