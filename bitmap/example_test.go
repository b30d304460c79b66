package bitmap_test

import (
	"fmt"

	"github.com/blkrep/blkrep/bitmap"
)

func Example() {
	// 1 GiB + 100 bytes at 4 KiB per bit: the last bit covers 100 bytes.
	bm, err := bitmap.New(1<<30+100, bitmap.DefaultBytesPerBit)
	if err != nil {
		panic(err)
	}
	// Writes while the peer is away.
	bm.SetRange(0, 10)               // touches bit 0
	bm.SetRange(8190, 4)             // touches bits 1 and 2
	bm.SetRange(1<<30, 100)          // the tail bit
	_, err = bm.SetRange(1<<30, 101) // one byte past the end
	fmt.Println("past the end:", err)
	fmt.Println("dirty:", bm.Count(), "bits,", bm.DirtyBytes(), "bytes")

	// Resync copies each run, then clears what it copied.
	bm.Runs(0, func(startBit, n uint64) bool {
		off, length := bm.BitRegion(startBit, n)
		fmt.Printf("copy [%d, %d)\n", off, off+length)
		return true
	})
	// A partly covered block stays dirty.
	n, _ := bm.ClearRange(0, 4000)
	fmt.Println("cleared by a partial range:", n)
	n, _ = bm.ClearRange(0, 3*4096)
	fmt.Println("cleared by whole blocks:", n, "pages to persist:", bm.DirtyPages())
	// Output:
	// past the end: bitmap: out of range: set offset 1073741824 length 101 on a device of 1073741924 bytes
	// dirty: 4 bits, 12388 bytes
	// copy [0, 12288)
	// copy [1073741824, 1073741924)
	// cleared by a partial range: 0
	// cleared by whole blocks: 3 pages to persist: [0 8]
}

func ExampleBitmap_EncodeChunk() {
	src, _ := bitmap.New(1<<40, bitmap.DefaultBytesPerBit) // 1 TiB
	src.SetRange(5<<30, 1<<20)
	dst, _ := bitmap.New(1<<40, bitmap.DefaultBytesPerBit)

	chunks, bytes := 0, 0
	for bit, done := uint64(0), false; !done; {
		var chunk []byte
		chunk, bit, done = src.EncodeChunk(bit, 64<<10)
		if _, err := dst.MergeChunk(chunk); err != nil {
			panic(err)
		}
		chunks++
		bytes += len(chunk)
	}
	fmt.Println(chunks, "chunk,", bytes, "bytes, equal:", dst.Equal(src), "dirty:", dst.DirtyBytes())
	// Output:
	// 1 chunk, 45 bytes, equal: true dirty: 1048576
}
