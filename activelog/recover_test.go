package activelog

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

func TestFormatRecover(t *testing.T) {
	_, d := format(t, Config{})
	l, info, err := Recover(d.clone(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Clean || info.NewestSeq != 1 || len(info.Hot) != 0 || info.Valid != 1 || info.Blank != 7 || info.Corrupt != 0 || info.Gap != 0 {
		t.Fatalf("info %+v", info)
	}
	mustCheck(t, l)
	if tk := beginExt(t, l, 0, 1); tk.Ready() {
		t.Fatal("a clean ring must write a record before the first write")
	}
}

// churn drives n transactions over a working set larger than the table,
// releasing every write at once, and checks after each that the ring
// recovers to exactly the in-memory hot set.
func churn(t *testing.T, l *Log, d *disk, n int, span uint64, next *uint64) {
	t.Helper()
	for i := 0; i < n; i++ {
		var tks []*Ticket
		for j := 0; j < min(l.cfg.MaxUpdates, l.cfg.Extents/2); j++ {
			*next = *next*6364136223846793005 + 1442695040888963407
			tks = append(tks, beginExt(t, l, (*next>>33)%span, 1))
		}
		for l.NeedsTransaction() {
			step(t, l, d)
		}
		for _, tk := range tks {
			if !tk.Ready() {
				t.Fatal("ticket not ready after the log drained")
			}
			if err := l.Release(tk); err != nil {
				t.Fatal(err)
			}
		}
		r, info, err := Recover(d.clone(), l.Config())
		if err != nil {
			t.Fatalf("after sequence %d: %v", l.Seq(), err)
		}
		if !slices.Equal(info.Hot, l.Hot()) || info.NewestSeq != l.Seq() || info.Clean {
			t.Fatalf("after sequence %d: recovered %d hot (newest %d), have %d", l.Seq(), len(info.Hot), info.NewestSeq, l.Len())
		}
		if !slices.Equal(r.table, l.table) || r.start != l.start {
			t.Fatal("recovered table or window position differs")
		}
		mustCheck(t, r)
	}
}

func TestRecoverRollingWindow(t *testing.T) {
	// 2000 slots need 2 or 3 records of context: the table is rebuilt
	// from windows, not from one record.
	cfg := Config{Extents: 2000, MaxUpdates: 200, RingRecords: 6}
	l, d := format(t, cfg)
	next := uint64(1)
	churn(t, l, d, 60, 2600, &next)
	if s := l.Stats(); s.Evictions == 0 || l.Len() != 2000 {
		t.Fatalf("no churn: %+v", s)
	}
}

func TestRecoverTornNewest(t *testing.T) {
	cfg := Config{Extents: 1500, RingRecords: 4}
	l, d := format(t, cfg)
	next := uint64(1)
	churn(t, l, d, 40, 3000, &next)
	before := l.Hot()
	seq := l.Seq()
	tk := beginExt(t, l, 1_000_000, 1)
	tx, err := l.Prepare()
	if err != nil || len(tx.Evicted) != 1 {
		t.Fatalf("Prepare %v (evicted %v)", err, tx.Evicted)
	}
	for _, tear := range []struct {
		name string
		do   func(b []byte)
	}{
		{"first sector only", func(b []byte) { copy(b[:512], tx.Record[:512]) }},
		{"all but the last sector", func(b []byte) { copy(b[:RecordSize-512], tx.Record) }},
		{"garbage", func(b []byte) {
			for i := range b {
				b[i] = byte(i*131 + 7)
			}
		}},
		{"zeroed", func(b []byte) { clear(b) }},
	} {
		t.Run(tear.name, func(t *testing.T) {
			ring := d.clone()
			tear.do(ring[tx.Index])
			_, info, err := Recover(ring, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if info.NewestSeq != seq || !slices.Equal(info.Hot, before) || info.Clean {
				t.Fatalf("newest %d (want %d), hot differs %v", info.NewestSeq, seq, !slices.Equal(info.Hot, before))
			}
			if info.Corrupt+info.Blank != 1 || info.Gap != seq-3 {
				t.Fatalf("info %+v", info)
			}
		})
	}
	// The record whole but not committed (crash before the sync
	// returned): it wins, with the victim cold and the new extent hot.
	ring := d.clone()
	copy(ring[tx.Index], tx.Record)
	_, info, err := Recover(ring, cfg)
	if err != nil || info.NewestSeq != seq+1 || !slices.Contains(info.Hot, 1_000_000) || slices.Contains(info.Hot, tx.Evicted[0]) {
		t.Fatalf("landed: %v newest %d", err, info.NewestSeq)
	}
	_ = tk
}

func TestRecoverLostRecord(t *testing.T) {
	// Small table: every record covers it, a lost middle record is
	// harmless.
	small := Config{Extents: 16, RingRecords: 4}
	l, d := format(t, small)
	next := uint64(1)
	churn(t, l, d, 10, 40, &next)
	ring := d.clone()
	mid := int((l.Seq() - 1) % 4)
	ring[mid][100] ^= 0xFF
	_, info, err := Recover(ring, small)
	if err != nil || !slices.Equal(info.Hot, l.Hot()) || info.Gap != l.Seq()-1 {
		t.Fatalf("small: %v gap %d", err, info.Gap)
	}
	// Large table: the newest record alone cannot rebuild it.
	large := Config{Extents: 1500, RingRecords: 4}
	l, d = format(t, large)
	churn(t, l, d, 40, 2000, &next)
	ring = d.clone()
	mid = int((l.Seq() - 1) % 4)
	ring[mid][100] ^= 0xFF
	if _, _, err := Recover(ring, large); !errors.Is(err, ErrLostRecords) {
		t.Fatalf("large: %v, want ErrLostRecords", err)
	}
}

func TestRecoverNeverWrapped(t *testing.T) {
	// Records 1..3 of 8: nothing is missing, slots nobody mentioned are
	// empty even though no window covered them.
	cfg := Config{Extents: 3000, MaxUpdates: 4, RingRecords: 8}
	l, d := format(t, cfg)
	tk := beginExt(t, l, 2999, 1)
	step(t, l, d)
	_ = tk
	tk = beginExt(t, l, 5, 1)
	step(t, l, d)
	_, info, err := Recover(d.clone(), cfg)
	if err != nil || !slices.Equal(info.Hot, []uint64{5, 2999}) || info.Gap != 0 || info.Blank != 5 {
		t.Fatalf("%v %+v", err, info)
	}
}

func TestRecoverErrors(t *testing.T) {
	cfg := Config{Extents: 16, RingRecords: 4}
	l, d := format(t, cfg)
	fill(t, l, d, 0, 3)
	if _, _, err := Recover(d.clone(), Config{Extents: 17, RingRecords: 4}); !errors.Is(err, ErrGeometry) {
		t.Fatalf("capacity mismatch: %v", err)
	}
	if _, _, err := Recover(d.clone()[:3], cfg); !errors.Is(err, ErrConfig) {
		t.Fatalf("short ring: %v", err)
	}
	if _, _, err := Recover(make([][]byte, 4), cfg); !errors.Is(err, ErrNoValidRecord) {
		t.Fatalf("blank ring: %v", err)
	}
	ring := d.clone()
	binary.LittleEndian.PutUint16(ring[l.Seq()%4][offVersion:], FormatVersion+1)
	if _, _, err := Recover(ring, cfg); !errors.Is(err, ErrVersion) {
		t.Fatalf("future version: %v", err)
	}
	// A valid record at the wrong index is skipped.
	ring = d.clone()
	newest := int(l.Seq() % 4)
	other := (newest + 1) % 4
	copy(ring[other], ring[newest])
	_, info, err := Recover(ring, cfg)
	if err != nil || info.Corrupt != 1 {
		t.Fatalf("misplaced: %v %+v", err, info)
	}
	// A valid record putting one extent in two slots.
	ring = d.clone()
	r, err := DecodeRecord(ring[newest])
	if err != nil {
		t.Fatal(err)
	}
	r.Window[14], r.Window[15] = 9, 9
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	copy(ring[newest], b)
	if _, _, err := Recover(ring, cfg); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("duplicate extent: %v", err)
	}
}

func TestRecoverThenContinue(t *testing.T) {
	cfg := Config{Extents: 4, RingRecords: 3}
	l, d := format(t, cfg)
	fill(t, l, d, 0, 4)
	touch(t, l, 0) // LRU: 1 is the oldest
	r, info, err := Recover(d.clone(), cfg)
	if err != nil || info.Clean {
		t.Fatal(err, info)
	}
	// Unclean: open at once for hot extents.
	if tk := beginExt(t, r, 2, 1); !tk.Ready() {
		t.Fatal("recovered hot extent not writable")
	}
	tk := beginExt(t, r, 50, 1)
	tx, ready := step(t, r, d)
	if tx.Seq != l.Seq()+1 || len(ready) != 1 || ready[0] != tk {
		t.Fatalf("seq %d ready %v", tx.Seq, ready)
	}
	// Recovery orders the LRU by the sequence of each slot's last update:
	// 0..3 were added in order by one transaction each.
	if !slices.Equal(tx.Evicted, []uint64{0}) {
		t.Fatalf("evicted %v", tx.Evicted)
	}
	_, info, err = Recover(d.clone(), cfg)
	if err != nil || !slices.Equal(info.Hot, []uint64{1, 2, 3, 50}) {
		t.Fatalf("%v %v", err, info.Hot)
	}
}

// TestTornRemainsStayHarmless: the remains of a torn record and a later
// torn write of another record with the same sequence can add up to the
// first record, whole. Recover therefore keeps the log closed when the
// next index holds garbage, so no write starts in an extent that record
// would evict.
func TestTornRemainsStayHarmless(t *testing.T) {
	cfg := Config{Extents: 4, RingRecords: 3}
	l, d := format(t, cfg)
	fill(t, l, d, 0, 4)
	beginExt(t, l, 9, 1)
	x, err := l.Prepare()
	if err != nil || len(x.Evicted) != 1 {
		t.Fatalf("Prepare: %v", err)
	}
	victim := x.Evicted[0]
	// Crash while writing x: its first sector lands, another is garbage.
	slot := d.ring[x.Index]
	copy(slot[:512], x.Record[:512])
	for i := 1024; i < 1536; i++ {
		slot[i] = 0xA5
	}
	r, info, err := Recover(d.clone(), cfg)
	if err != nil || !info.NextTorn || !slices.Contains(info.Hot, victim) {
		t.Fatalf("%v %+v", err, info)
	}
	if tk := beginExt(t, r, victim, 1); tk.Ready() {
		t.Fatal("a write started in the victim of a record that may come back")
	}
	// The restart's first record y (same sequence) tears the other way:
	// only the garbage sector is rewritten, and x is whole again.
	y, err := r.Prepare()
	if err != nil || y.Seq != x.Seq {
		t.Fatalf("Prepare: %v (sequence %d, want %d)", err, y.Seq, x.Seq)
	}
	slot = d.ring[y.Index]
	copy(slot[1024:1536], y.Record[1024:1536])
	_, info, err = Recover(d.clone(), cfg)
	if err != nil || info.NewestSeq != x.Seq || slices.Contains(info.Hot, victim) {
		t.Fatalf("x did not come back: %v %+v", err, info)
	}
	// x says the victim is cold; that is safe only because no write
	// started in it since x was prepared (its bitmap pages were persisted
	// then).
}
