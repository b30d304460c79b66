package repl

import "sync"

// conflicts serialises overlapping byte ranges: application writes among
// themselves (so both nodes apply them in one order) and against resync
// reads (so resync data never overtakes newer application data on the
// wire). The set holds at most the writes in flight: a linear scan is
// cheaper than a tree at these sizes.
type conflicts struct {
	mu     sync.Mutex
	cond   *sync.Cond
	active []span
}

type span struct{ off, end int64 }

func newConflicts() *conflicts {
	c := &conflicts{}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *conflicts) overlaps(s span) bool {
	for _, a := range c.active {
		if a.off < s.end && s.off < a.end {
			return true
		}
	}
	return false
}

// lock waits until [off, off+n) overlaps no held range, then holds it.
func (c *conflicts) lock(off, n int64) span {
	s := span{off, off + max(n, 1)}
	c.mu.Lock()
	for c.overlaps(s) {
		c.cond.Wait()
	}
	c.active = append(c.active, s)
	c.mu.Unlock()
	return s
}

func (c *conflicts) unlock(s span) {
	c.mu.Lock()
	for i, a := range c.active {
		if a == s {
			c.active[i] = c.active[len(c.active)-1]
			c.active = c.active[:len(c.active)-1]
			break
		}
	}
	c.cond.Broadcast()
	c.mu.Unlock()
}
