package nbd

import (
	"math/bits"
	"sync"
)

// Payload buffers come from power-of-two size classes from 4 KiB to
// MaxPayload so a busy connection allocates nothing on the data path.
const (
	minClassShift = 12
	maxClassShift = 25 // MaxPayload = 32 MiB
)

var pools [maxClassShift - minClassShift + 1]sync.Pool

func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// getBuf returns a buffer of length n (n <= MaxPayload).
func getBuf(n int) []byte {
	c := classOf(n)
	if p, ok := pools[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	b := make([]byte, 1<<(c+minClassShift))
	return b[:n]
}

// putBuf returns a buffer obtained from getBuf.
func putBuf(b []byte) {
	if b == nil {
		return
	}
	c := cap(b)
	if c < 1<<minClassShift || c > 1<<maxClassShift || c&(c-1) != 0 {
		return
	}
	b = b[:c]
	pools[classOf(c)].Put(&b)
}

// GetBuf is getBuf for other packages (the replication link's queues):
// a buffer of length n from the size-class pools, allocated when n is
// beyond the largest class. Give it back with PutBuf once nothing refers
// to it.
func GetBuf(n int) []byte {
	if n > 1<<maxClassShift {
		return make([]byte, n)
	}
	return getBuf(n)
}

// PutBuf recycles a buffer from GetBuf; any other buffer is left to the
// garbage collector.
func PutBuf(b []byte) { putBuf(b) }
