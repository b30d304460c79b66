package bitmap_test

import (
	"math/rand/v2"
	"testing"

	"github.com/blkrep/blkrep/bitmap"
)

// The benchmarks use only the exported API, so they run unchanged against
// any representation of the bits (compare with benchstat).

const benchSize = 1 << 40 // 1 TiB at 4 KiB per bit: 2^28 bits, 8192 pages

func benchNew(b *testing.B) *bitmap.Bitmap {
	b.Helper()
	bm, err := bitmap.New(benchSize, bitmap.DefaultBytesPerBit)
	if err != nil {
		b.Fatal(err)
	}
	return bm
}

// benchOffsets returns n 4 KiB-aligned offsets scattered over the device.
func benchOffsets(n int) []int64 {
	r := rand.New(rand.NewPCG(1, 2))
	offs := make([]int64, n)
	for i := range offs {
		offs[i] = r.Int64N(benchSize/bitmap.DefaultBytesPerBit) * bitmap.DefaultBytesPerBit
	}
	return offs
}

// benchSparse is a 1 TiB bitmap with 3000 scattered 4 KiB writes marked:
// a peer that missed a few thousand random writes.
func benchSparse(b *testing.B) *bitmap.Bitmap {
	bm := benchNew(b)
	for _, off := range benchOffsets(3000) {
		if _, err := bm.SetRange(off, 4096); err != nil {
			b.Fatal(err)
		}
	}
	return bm
}

// BenchmarkSetRange marks 4 KiB writes at scattered offsets (the write path
// while a peer is away); the offsets repeat, so most bits are set already
// after the first round.
func BenchmarkSetRange(b *testing.B) {
	bm := benchNew(b)
	offs := benchOffsets(4096)
	i := 0
	for b.Loop() {
		bm.SetRange(offs[i%len(offs)], 4096)
		i++
	}
}

// BenchmarkSetClearRange marks a 4 KiB write and clears it again (a write
// marked in flight, then acknowledged) in an otherwise sparse bitmap.
func BenchmarkSetClearRange(b *testing.B) {
	bm := benchSparse(b)
	offs := benchOffsets(4096)
	i := 0
	for b.Loop() {
		off := offs[i%len(offs)] + 4096 // next to a dirty bit, mostly clean
		bm.SetRange(off, 4096)
		bm.ClearRange(off, 4096)
		i++
	}
}

// BenchmarkTest asks whether a 4 KiB range is dirty (a read or write
// checking for a pending resync) at scattered offsets.
func BenchmarkTest(b *testing.B) {
	bm := benchSparse(b)
	offs := benchOffsets(4096)
	i := 0
	for b.Loop() {
		bm.Test(offs[(i*7)%len(offs)]+8192, 4096)
		i++
	}
}

// BenchmarkTestClean is Test at the start of a clean 1 TiB bitmap: nothing
// is set after the range either.
func BenchmarkTestClean(b *testing.B) {
	bm := benchNew(b)
	for b.Loop() {
		bm.Test(0, 4096)
	}
}

// BenchmarkTestBit tests single bits at scattered positions.
func BenchmarkTestBit(b *testing.B) {
	bm := benchSparse(b)
	offs := benchOffsets(4096)
	i := 0
	for b.Loop() {
		bm.TestBit(uint64(offs[i%len(offs)] / 4096))
		i++
	}
}

func benchRuns(b *testing.B, bm *bitmap.Bitmap, wantRuns int) {
	b.Helper()
	for b.Loop() {
		n := 0
		bm.Runs(0, func(_, _ uint64) bool { n++; return true })
		if n != wantRuns {
			b.Fatalf("%d runs, want %d", n, wantRuns)
		}
	}
}

// BenchmarkRuns walks every dirty run of a 1 TiB bitmap: what a resync or
// a bitmap exchange does.
func BenchmarkRuns(b *testing.B) {
	b.Run("clean", func(b *testing.B) { benchRuns(b, benchNew(b), 0) })
	b.Run("sparse", func(b *testing.B) {
		bm := benchSparse(b)
		n := 0
		bm.Runs(0, func(_, _ uint64) bool { n++; return true })
		benchRuns(b, bm, n)
	})
	b.Run("full", func(b *testing.B) {
		bm := benchNew(b)
		bm.SetRange(0, benchSize)
		benchRuns(b, bm, 1)
	})
}

// BenchmarkEncodeChunk encodes a sparse 1 TiB bitmap for the wire.
func BenchmarkEncodeChunk(b *testing.B) {
	bm := benchSparse(b)
	for b.Loop() {
		for bit, done := uint64(0), false; !done; {
			_, bit, done = bm.EncodeChunk(bit, 64<<10)
		}
	}
}

// BenchmarkEncodePage encodes one page into a reused buffer (flushing a
// page when its activity-log extent goes cold).
func BenchmarkEncodePage(b *testing.B) {
	bench := func(b *testing.B, bm *bitmap.Bitmap) {
		buf := make([]byte, bitmap.PageSize)
		i := uint64(0)
		for b.Loop() {
			buf = bm.EncodePage(i%bm.NumPages(), buf)
			i += 13
		}
	}
	b.Run("clean", func(b *testing.B) { bench(b, benchNew(b)) })
	b.Run("sparse", func(b *testing.B) { bench(b, benchSparse(b)) })
	b.Run("full", func(b *testing.B) {
		bm := benchNew(b)
		bm.SetRange(0, benchSize)
		bench(b, bm)
	})
	b.Run("mixed", func(b *testing.B) { // 2048 bits in each of the first 64 pages
		bm := benchNew(b)
		for i := range uint64(64 * 2048) {
			bm.SetBit(i/2048*bitmap.BitsPerPage + i%2048*2)
		}
		buf := make([]byte, bitmap.PageSize)
		i := uint64(0)
		for b.Loop() {
			buf = bm.EncodePage(i%64, buf)
			i += 13
		}
	})
}

// BenchmarkLoadPageClean loads all-zero pages, as Open does for a clean
// volume, one page per iteration.
func BenchmarkLoadPageClean(b *testing.B) {
	bm := benchNew(b)
	page := make([]byte, bitmap.PageSize)
	i := uint64(0)
	for b.Loop() {
		if err := bm.LoadPage(i%bm.NumPages(), page, true); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkNew allocates a clean 1 TiB bitmap.
func BenchmarkNew(b *testing.B) {
	for b.Loop() {
		benchNew(b)
	}
}

// BenchmarkSetAll starts a full sync of 1 TiB and clears it again.
func BenchmarkSetAll(b *testing.B) {
	bm := benchNew(b)
	for b.Loop() {
		bm.SetRange(0, benchSize)
		bm.ClearRange(0, benchSize)
	}
}
