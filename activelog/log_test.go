package activelog

import (
	"errors"
	"slices"
	"testing"
)

func TestBeginColdWaitsForCommit(t *testing.T) {
	l, d := format(t, Config{Extents: 4})
	if !l.Clean() {
		t.Fatal("a formatted log is clean")
	}
	tk := beginExt(t, l, 7, 1)
	if tk.Ready() {
		t.Fatal("cold extent: ready at once")
	}
	if !l.NeedsTransaction() {
		t.Fatal("NeedsTransaction = false with a waiting ticket")
	}
	tx, ready := step(t, l, d)
	if !slices.Equal(tx.Added, []uint64{7}) || len(tx.Evicted) != 0 || tx.Seq != 2 || tx.Index != 2 || tx.Clean {
		t.Fatalf("tx %+v", tx)
	}
	if len(ready) != 1 || ready[0] != tk || !tk.Ready() {
		t.Fatalf("ready %v", ready)
	}
	if !l.IsHot(7) || l.Len() != 1 || l.Clean() {
		t.Fatalf("hot %v clean %v", l.Hot(), l.Clean())
	}
	// A write inside a hot extent is ready at once, no transaction.
	tk2, err := l.Begin(7*ExtentSize+4096, 4096)
	if err != nil || !tk2.Ready() {
		t.Fatalf("hot extent: ready %v err %v", tk2.Ready(), err)
	}
	if l.NeedsTransaction() {
		t.Fatal("NeedsTransaction with nothing waiting")
	}
	if tx, err := l.Prepare(); tx != nil || err != nil {
		t.Fatalf("Prepare with nothing waiting = %v, %v", tx, err)
	}
	for _, tk := range []*Ticket{tk, tk2} {
		if err := l.Release(tk); err != nil {
			t.Fatal(err)
		}
	}
	mustCheck(t, l)
	s := l.Stats()
	if s.Transactions != 1 || s.Updates != 1 || s.Hot != 1 || s.InFlight != 0 || s.Seq != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestZeroLengthIsReady(t *testing.T) {
	l, _ := format(t, Config{Extents: 4})
	tk, err := l.Begin(12345, 0)
	if err != nil || !tk.Ready() {
		t.Fatalf("zero length: ready %v err %v", tk.Ready(), err)
	}
	if err := l.Release(tk); err != nil {
		t.Fatal(err)
	}
}

func TestSharedWantedExtents(t *testing.T) {
	l, d := format(t, Config{Extents: 8})
	a := beginExt(t, l, 3, 2) // 3, 4
	b := beginExt(t, l, 4, 2) // 4, 5
	c := beginExt(t, l, 4, 1) // 4
	tx, ready := step(t, l, d)
	if !slices.Equal(tx.Added, []uint64{3, 4, 5}) {
		t.Fatalf("added %v: shared extent 4 must be added once", tx.Added)
	}
	if !slices.Equal(ready, []*Ticket{a, b, c}) {
		t.Fatalf("ready %v", ready)
	}
	if got := l.hot[4].inflight; got != 3 {
		t.Fatalf("extent 4 in flight %d, want 3", got)
	}
}

// fill makes extents first..first+n-1 hot and idle.
func fill(t *testing.T, l *Log, d *disk, first uint64, n int) {
	t.Helper()
	var tks []*Ticket
	for e := first; e < first+uint64(n); e++ {
		tks = append(tks, beginExt(t, l, e, 1))
	}
	for l.NeedsTransaction() {
		step(t, l, d)
	}
	for _, tk := range tks {
		if !tk.Ready() {
			t.Fatal("fill: ticket not ready")
		}
		if err := l.Release(tk); err != nil {
			t.Fatal(err)
		}
	}
}

func touch(t *testing.T, l *Log, e uint64) {
	t.Helper()
	tk := beginExt(t, l, e, 1)
	if !tk.Ready() {
		t.Fatalf("touch %d: not hot", e)
	}
	if err := l.Release(tk); err != nil {
		t.Fatal(err)
	}
}

func TestLRUVictim(t *testing.T) {
	l, d := format(t, Config{Extents: 3})
	fill(t, l, d, 0, 3)
	touch(t, l, 0)
	touch(t, l, 2)
	// LRU order now (oldest first): 1, 0, 2.
	for _, want := range []uint64{1, 0, 2} {
		tk := beginExt(t, l, 100+want, 1)
		tx, ready := step(t, l, d)
		if !slices.Equal(tx.Evicted, []uint64{want}) || len(ready) != 1 {
			t.Fatalf("evicted %v, want [%d]", tx.Evicted, want)
		}
		if err := l.Release(tk); err != nil {
			t.Fatal(err)
		}
	}
	if s := l.Stats(); s.Evictions != 3 {
		t.Fatalf("evictions %d", s.Evictions)
	}
}

func TestInFlightAndHeldNeverEvicted(t *testing.T) {
	l, d := format(t, Config{Extents: 3})
	fill(t, l, d, 0, 3) // LRU oldest first: 0, 1, 2
	busy := beginExt(t, l, 0, 1)
	touch(t, l, 2)
	if err := l.Hold(1); err != nil {
		t.Fatal(err)
	}
	// Oldest is 1 (held), then 0 (in flight): 2 goes.
	tk := beginExt(t, l, 9, 1)
	tx, _ := step(t, l, d)
	if !slices.Equal(tx.Evicted, []uint64{2}) {
		t.Fatalf("evicted %v, want [2]", tx.Evicted)
	}
	// Now 0 in flight, 1 held, 9 in flight: nothing can go.
	w := beginExt(t, l, 10, 1)
	if tx, err := l.Prepare(); !errors.Is(err, ErrNoVictim) || tx != nil {
		t.Fatalf("Prepare = %v, %v; want ErrNoVictim", tx, err)
	}
	if l.NeedsTransaction() {
		t.Fatal("NeedsTransaction after ErrNoVictim with nothing released")
	}
	if err := l.Release(tk); err != nil { // 9 becomes evictable
		t.Fatal(err)
	}
	if !l.NeedsTransaction() {
		t.Fatal("NeedsTransaction false after a Release made a victim")
	}
	tx, ready := step(t, l, d)
	if !slices.Equal(tx.Evicted, []uint64{9}) || !slices.Equal(ready, []*Ticket{w}) {
		t.Fatalf("evicted %v ready %v", tx.Evicted, ready)
	}
	// Unhold makes 1 evictable.
	w2 := beginExt(t, l, 11, 1)
	if _, err := l.Prepare(); !errors.Is(err, ErrNoVictim) {
		t.Fatalf("err %v", err)
	}
	if err := l.Unhold(1); err != nil {
		t.Fatal(err)
	}
	if !l.NeedsTransaction() {
		t.Fatal("NeedsTransaction false after Unhold")
	}
	tx, ready = step(t, l, d)
	if !slices.Equal(tx.Evicted, []uint64{1}) || !slices.Equal(ready, []*Ticket{w2}) {
		t.Fatalf("evicted %v ready %v", tx.Evicted, ready)
	}
	if !busy.Ready() || !l.IsHot(0) {
		t.Fatal("in-flight extent 0 lost")
	}
	if s := l.Stats(); s.Starved != 2 {
		t.Fatalf("starved %d", s.Starved)
	}
}

func TestTicketKeepsItsHotExtents(t *testing.T) {
	// A ticket spanning a hot and a cold extent: the hot one is not the
	// victim even though it is the least recently used.
	l, d := format(t, Config{Extents: 2})
	fill(t, l, d, 0, 1)
	fill(t, l, d, 5, 1) // LRU oldest: 0, 5
	tk := beginExt(t, l, 0, 2)
	tx, ready := step(t, l, d)
	if !slices.Equal(tx.Evicted, []uint64{5}) || !slices.Equal(ready, []*Ticket{tk}) {
		t.Fatalf("evicted %v ready %v", tx.Evicted, ready)
	}
}

func TestVictimTakesNoWritesWhilePending(t *testing.T) {
	l, d := format(t, Config{Extents: 1})
	fill(t, l, d, 0, 1)
	a := beginExt(t, l, 1, 1)
	tx, err := l.Prepare()
	if err != nil || !slices.Equal(tx.Evicted, []uint64{0}) {
		t.Fatalf("Prepare = %+v, %v", tx, err)
	}
	b := beginExt(t, l, 0, 1)
	if b.Ready() {
		t.Fatal("write started in an extent being evicted")
	}
	if err := l.Hold(0); !errors.Is(err, ErrNotHot) {
		t.Fatalf("Hold on a leaving extent: %v", err)
	}
	if _, err := l.Prepare(); !errors.Is(err, ErrPending) {
		t.Fatalf("second Prepare: %v", err)
	}
	if l.NeedsTransaction() {
		t.Fatal("NeedsTransaction while one is outstanding")
	}
	d.write(tx)
	ready, err := l.Commit(tx)
	if err != nil || !slices.Equal(ready, []*Ticket{a}) {
		t.Fatalf("ready %v err %v", ready, err)
	}
	if _, err := l.Commit(tx); !errors.Is(err, ErrNotPending) {
		t.Fatalf("double commit: %v", err)
	}
	if err := l.Release(a); err != nil {
		t.Fatal(err)
	}
	_, ready = step(t, l, d)
	if !slices.Equal(ready, []*Ticket{b}) {
		t.Fatalf("ready %v", ready)
	}
}

func TestAbortClosesUntilRetry(t *testing.T) {
	l, d := format(t, Config{Extents: 2})
	fill(t, l, d, 0, 2)
	a := beginExt(t, l, 7, 1)
	tx, err := l.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	victim := tx.Evicted[0]
	d.write(tx) // the write "failed" but landed: maybe applied
	if err := l.Abort(tx); err != nil {
		t.Fatal(err)
	}
	if err := l.Abort(tx); !errors.Is(err, ErrNotPending) {
		t.Fatalf("double abort: %v", err)
	}
	other := 1 - victim
	b := beginExt(t, l, other, 1)
	c := beginExt(t, l, victim, 1)
	if b.Ready() || c.Ready() {
		t.Fatal("a write started while an aborted record may be on disk")
	}
	retry, ready := step(t, l, d)
	if retry.Seq != tx.Seq || retry.Index != tx.Index {
		t.Fatalf("retry at sequence %d, aborted %d", retry.Seq, tx.Seq)
	}
	// The retry serves a (evicting the victim again) and b; c waits
	// because its extent was evicted.
	if !slices.Equal(ready, []*Ticket{a, b}) || c.Ready() {
		t.Fatalf("ready %v, c ready %v", ready, c.Ready())
	}
	if s := l.Stats(); s.Aborts != 1 {
		t.Fatalf("aborts %d", s.Aborts)
	}
}

func TestMarkClean(t *testing.T) {
	l, d := format(t, Config{Extents: 4})
	fill(t, l, d, 0, 2)
	tk := beginExt(t, l, 0, 1)
	if _, err := l.MarkClean(); !errors.Is(err, ErrBusy) {
		t.Fatalf("MarkClean with a write in flight: %v", err)
	}
	if err := l.Hold(0); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(tk); err != nil {
		t.Fatal(err)
	}
	if _, err := l.MarkClean(); !errors.Is(err, ErrBusy) {
		t.Fatalf("MarkClean with a hold: %v", err)
	}
	if err := l.Unhold(0); err != nil {
		t.Fatal(err)
	}
	tx, err := l.MarkClean()
	if err != nil || !tx.Clean || len(tx.Added)+len(tx.Evicted) != 0 {
		t.Fatalf("MarkClean = %+v, %v", tx, err)
	}
	// From now on no write starts, even in a hot extent.
	w := beginExt(t, l, 0, 1)
	if w.Ready() {
		t.Fatal("write started during MarkClean")
	}
	d.write(tx)
	if ready, err := l.Commit(tx); err != nil || len(ready) != 0 {
		t.Fatalf("commit clean: %v %v", ready, err)
	}
	if !l.Clean() || w.Ready() {
		t.Fatal("after the clean marker: not clean, or the write started")
	}
	_, info, err := Recover(d.clone(), l.Config())
	if err != nil || !info.Clean || !slices.Equal(info.Hot, []uint64{0, 1}) {
		t.Fatalf("recover %+v %v", info, err)
	}
	// The next transaction reopens the log without changing a slot.
	tx2, ready := step(t, l, d)
	if len(tx2.Added) != 0 || !slices.Equal(ready, []*Ticket{w}) || l.Clean() {
		t.Fatalf("reopen: added %v ready %v clean %v", tx2.Added, ready, l.Clean())
	}
}

func TestBatchingAndFIFO(t *testing.T) {
	l, d := format(t, Config{Extents: 8, MaxUpdates: 3})
	a := beginExt(t, l, 10, 2)
	b := beginExt(t, l, 20, 2) // does not fit with a: next transaction
	c := beginExt(t, l, 11, 1) // would fit, but FIFO: after b
	tx, ready := step(t, l, d)
	if !slices.Equal(tx.Added, []uint64{10, 11}) || !slices.Equal(ready, []*Ticket{a, c}) {
		t.Fatalf("added %v ready %v", tx.Added, ready)
	}
	tx, ready = step(t, l, d)
	if !slices.Equal(tx.Added, []uint64{20, 21}) || !slices.Equal(ready, []*Ticket{b}) {
		t.Fatalf("added %v ready %v", tx.Added, ready)
	}
}

func TestTicketNeedingAnEarlierVictim(t *testing.T) {
	l, d := format(t, Config{Extents: 2})
	fill(t, l, d, 1, 2) // LRU oldest: 1, 2
	a := beginExt(t, l, 5, 1)
	b := beginExt(t, l, 0, 2) // 0 cold, 1 hot but a's victim
	tx, ready := step(t, l, d)
	if !slices.Equal(tx.Evicted, []uint64{1}) || !slices.Equal(tx.Added, []uint64{5}) || !slices.Equal(ready, []*Ticket{a}) {
		t.Fatalf("evicted %v added %v ready %v", tx.Evicted, tx.Added, ready)
	}
	if err := l.Release(a); err != nil {
		t.Fatal(err)
	}
	tx, ready = step(t, l, d)
	if !slices.Equal(tx.Evicted, []uint64{2, 5}) || !slices.Equal(tx.Added, []uint64{0, 1}) || !slices.Equal(ready, []*Ticket{b}) {
		t.Fatalf("evicted %v added %v ready %v", tx.Evicted, tx.Added, ready)
	}
}

func TestSpanAndMisuse(t *testing.T) {
	l, _ := format(t, Config{Extents: 4})
	if l.MaxSpan() != 4 {
		t.Fatalf("MaxSpan %d", l.MaxSpan())
	}
	if _, err := l.Begin(0, 5*ExtentSize); !errors.Is(err, ErrSpan) {
		t.Fatalf("5 extents: %v", err)
	}
	if _, err := l.Begin(-1, 1); !errors.Is(err, ErrRange) {
		t.Fatalf("negative offset: %v", err)
	}
	tk := beginExt(t, l, 0, 1)
	if err := l.Release(tk); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(tk); !errors.Is(err, ErrTicket) {
		t.Fatalf("double release: %v", err)
	}
	if tx, err := l.Prepare(); tx != nil || err != nil {
		t.Fatalf("cancelled ticket still wanted: %v %v", tx, err)
	}
	other, _ := format(t, Config{Extents: 4})
	tk2 := beginExt(t, other, 0, 1)
	if err := l.Release(tk2); !errors.Is(err, ErrTicket) {
		t.Fatalf("foreign ticket: %v", err)
	}
	if err := l.Unhold(3); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("unhold: %v", err)
	}
	if err := l.Hold(3); !errors.Is(err, ErrNotHot) {
		t.Fatalf("hold cold: %v", err)
	}
	if _, err := l.Commit(nil); !errors.Is(err, ErrNotPending) {
		t.Fatalf("commit nil: %v", err)
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{Extents: 1, RingRecords: 2}, true},
		{Config{Extents: -1}, false},
		{Config{Extents: MaxExtents + 1, RingRecords: MaxRingRecords}, false},
		{Config{MaxUpdates: MaxUpdatesLimit + 1}, false},
		{Config{MaxUpdates: -1}, false},
		{Config{RingRecords: 1}, false},
		{Config{RingRecords: MaxRingRecords + 1}, false},
		{Config{Extents: 1237, RingRecords: 2}, false}, // one record of 886 cannot cover 1237
		{Config{Extents: 1237, RingRecords: 3}, true},
		{Config{Extents: 1772, RingRecords: 3}, true},
		{Config{Extents: 1773, RingRecords: 3}, false},
		{Config{Extents: MaxExtents, RingRecords: MaxRingRecords}, true},
	} {
		_, _, err := Format(tc.cfg)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrConfig)) {
			t.Errorf("Format(%+v): %v", tc.cfg, err)
		}
	}
	l, _ := format(t, Config{})
	if c := l.Config(); c != (Config{Extents: 1237, MaxUpdates: 64, RingRecords: 8}) {
		t.Fatalf("defaults %+v", c)
	}
}

// BenchmarkBeginReleaseHot is the cost the activity log adds to a write
// inside the hot set: Begin and Release under the caller's mutex.
func BenchmarkBeginReleaseHot(b *testing.B) {
	l, d := format(b, Config{})
	var tks []*Ticket
	for e := uint64(0); e < 64; e++ {
		tk, _ := l.Begin(int64(e)*ExtentSize, 4096)
		tks = append(tks, tk)
	}
	step(b, l, d)
	for _, tk := range tks {
		l.Release(tk)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tk, _ := l.Begin(int64(i%64)*ExtentSize+int64(i%1000)*4096, 4096)
		if !tk.Ready() {
			b.Fatal("not ready")
		}
		l.Release(tk)
	}
}

// BenchmarkColdWrite is a write to a cold extent in a full log: Begin,
// one transaction evicting the LRU extent (encoding the 4 KiB record),
// Commit, Release.
func BenchmarkColdWrite(b *testing.B) {
	l, d := format(b, Config{})
	next := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		tk, _ := l.Begin(int64(next)*ExtentSize, 4096)
		next++
		if !tk.Ready() {
			tx, err := l.Prepare()
			if err != nil {
				b.Fatal(err)
			}
			d.write(tx)
			l.Commit(tx)
		}
		l.Release(tk)
	}
}

func TestRingRecordsFor(t *testing.T) {
	for _, n := range []int{1, 64, DefaultExtents, 4000, MaxExtents} {
		r := RingRecordsFor(n)
		for _, u := range []int{1, DefaultMaxUpdates, MaxUpdatesLimit} {
			if _, err := (Config{Extents: n, MaxUpdates: u, RingRecords: r}).normalize(); err != nil {
				t.Errorf("extents %d updates %d ring %d: %v", n, u, r, err)
			}
		}
		if r > MaxRingRecords {
			t.Errorf("extents %d: ring %d too large", n, r)
		}
	}
	if RingRecordsFor(DefaultExtents) != DefaultRingRecords {
		t.Error("default geometry changed")
	}
}
