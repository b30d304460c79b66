package activelog

import (
	"fmt"
	"slices"
	"testing"
)

// disk is the ring as the caller would store it.
type disk struct{ ring [][]byte }

func (d *disk) write(tx *Transaction) { copy(d.ring[tx.Index], tx.Record) }

func (d *disk) clone() [][]byte {
	out := make([][]byte, len(d.ring))
	for i, r := range d.ring {
		out[i] = slices.Clone(r)
	}
	return out
}

func format(t testing.TB, cfg Config) (*Log, *disk) {
	t.Helper()
	l, ring, err := Format(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l, &disk{ring: ring}
}

// step runs one transaction to completion: Prepare, write, Commit.
func step(t testing.TB, l *Log, d *disk) (*Transaction, []*Ticket) {
	t.Helper()
	tx, err := l.Prepare()
	if err != nil || tx == nil {
		t.Fatalf("Prepare = %v, %v", tx, err)
	}
	d.write(tx)
	ready, err := l.Commit(tx)
	if err != nil {
		t.Fatal(err)
	}
	mustCheck(t, l)
	return tx, ready
}

// beginExt begins a write covering extents [first, first+n).
func beginExt(t testing.TB, l *Log, first uint64, n int) *Ticket {
	t.Helper()
	tk, err := l.Begin(int64(first)*ExtentSize, int64(n)*ExtentSize)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func mustCheck(t testing.TB, l *Log) {
	t.Helper()
	if err := l.check(); err != nil {
		t.Fatal(err)
	}
}

// check verifies the Log's internal invariants.
func (l *Log) check() error {
	n := l.cfg.Extents
	if len(l.table) != n {
		return fmt.Errorf("table of %d slots, capacity %d", len(l.table), n)
	}
	if len(l.hot)+len(l.free) != n {
		return fmt.Errorf("%d hot + %d free != %d slots", len(l.hot), len(l.free), n)
	}
	seenFree := map[int]bool{}
	for _, s := range l.free {
		if s < 0 || s >= n || seenFree[s] || l.table[s] != EmptySlot {
			return fmt.Errorf("free slot %d invalid (table %x)", s, l.table[s])
		}
		seenFree[s] = true
	}
	inflight, held := 0, 0
	for e, h := range l.hot {
		if h.extent != e || l.table[h.slot] != uint32(e) {
			return fmt.Errorf("extent %d: slot %d holds %d", e, h.slot, l.table[h.slot])
		}
		if h.inflight < 0 || h.held < 0 {
			return fmt.Errorf("extent %d: negative counts %d %d", e, h.inflight, h.held)
		}
		if h.leaving && !h.evictable() {
			return fmt.Errorf("extent %d leaving with %d in flight, %d held", e, h.inflight, h.held)
		}
		inflight += h.inflight
		held += h.held
	}
	if inflight != l.inflight || held != l.held {
		return fmt.Errorf("totals %d/%d, counted %d/%d", l.inflight, l.held, inflight, held)
	}
	if l.lru.Len() != len(l.hot) {
		return fmt.Errorf("lru has %d, hot %d", l.lru.Len(), len(l.hot))
	}
	for e := l.lru.Front(); e != nil; e = e.Next() {
		h := e.Value.(*hotExtent)
		if l.hot[h.extent] != h || h.elem != e {
			return fmt.Errorf("lru entry %d not in the hot map", h.extent)
		}
	}
	for s, e := range l.table {
		if e != EmptySlot && (l.hot[uint64(e)] == nil || l.hot[uint64(e)].slot != s) {
			return fmt.Errorf("slot %d: extent %d not hot there", s, e)
		}
	}
	for e := l.waiting.Front(); e != nil; e = e.Next() {
		if tk := e.Value.(*Ticket); tk.state != ticketWaiting || tk.elem != e {
			return fmt.Errorf("waiting ticket in state %d", tk.state)
		}
	}
	for _, h := range l.hot {
		if h.leaving && (l.pending == nil || !slices.Contains(l.pending.victims, h)) {
			return fmt.Errorf("extent %d leaving but no victim of the outstanding transaction", h.extent)
		}
	}
	if l.pending != nil {
		for _, h := range l.pending.victims {
			if l.hot[h.extent] != h || !h.leaving {
				return fmt.Errorf("victim %d not hot or not leaving", h.extent)
			}
		}
	}
	return nil
}
