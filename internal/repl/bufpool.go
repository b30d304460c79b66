package repl

import (
	"math/bits"
	"sync"
)

// Buffers for received messages queued to the applier and for protocol
// A's copies of written data: power-of-two size classes from 4 KiB to
// 64 MiB, so a busy link allocates nothing per write. Larger requests
// (never sent by this version) are allocated.
const (
	minBufShift = 12
	maxBufShift = 26
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// getBuf returns a buffer of length n.
func getBuf(n int) []byte {
	c := bufClass(n)
	if c >= len(bufPools) {
		return make([]byte, n)
	}
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<(c+minBufShift))
}

// putBuf recycles a buffer from getBuf; others are left to the GC.
func putBuf(b []byte) {
	c := cap(b)
	if c < 1<<minBufShift || c > 1<<maxBufShift || c&(c-1) != 0 {
		return
	}
	b = b[:c]
	bufPools[bufClass(c)].Put(&b)
}
