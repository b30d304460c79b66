package nbd

import "sync"

// rangeTracker orders overlapping requests of one export. Every mutating
// request in flight is registered in arrival order; a later request whose
// range overlaps an earlier in-flight mutating request waits for it. So
// overlapping writes hit the backend in the order they arrived, and a read
// sees every write that arrived before it. The in-flight set is small (the
// kernel keeps at most 128 requests per socket), so a slice scan is cheaper
// than a tree.
type rangeTracker struct {
	mu   sync.Mutex
	list []*rangeEntry
}

type rangeEntry struct {
	off, end uint64
	done     chan struct{} // created on demand, under rangeTracker.mu
}

// add computes what a request on [off, end) must wait for and, if it
// mutates, registers it. The returned entry is nil for reads.
func (t *rangeTracker) add(off, end uint64, mutate bool, waits []chan struct{}) (*rangeEntry, []chan struct{}) {
	t.mu.Lock()
	for _, e := range t.list {
		if e.off < end && off < e.end {
			if e.done == nil {
				e.done = make(chan struct{})
			}
			waits = append(waits, e.done)
		}
	}
	var ent *rangeEntry
	if mutate {
		ent = &rangeEntry{off: off, end: end}
		t.list = append(t.list, ent)
	}
	t.mu.Unlock()
	return ent, waits
}

// remove unregisters a finished request and wakes its waiters.
func (t *rangeTracker) remove(ent *rangeEntry) {
	if ent == nil {
		return
	}
	t.mu.Lock()
	for i, e := range t.list {
		if e == ent {
			last := len(t.list) - 1
			t.list[i] = t.list[last]
			t.list[last] = nil
			t.list = t.list[:last]
			break
		}
	}
	if ent.done != nil {
		close(ent.done)
	}
	t.mu.Unlock()
}

// inFlight reports how many mutating requests are registered (tests).
func (t *rangeTracker) inFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.list)
}
