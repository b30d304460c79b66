package activelog

import (
	"errors"
	"fmt"
	"slices"
)

// Format returns an empty Log and the ring image to write for it: one
// slice of RecordSize bytes per ring index. Index 1 holds a clean marker
// with sequence 1 and an empty table; every other index is zero (blank).
// Write all of them (so no record of an earlier ring survives) and sync
// before using the Log. The Log starts closed, like any log whose newest
// record is a clean marker: the first write waits for one transaction.
func Format(cfg Config) (*Log, [][]byte, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, nil, err
	}
	l := newLog(cfg)
	for s := cfg.Extents - 1; s >= 0; s-- {
		l.free = append(l.free, s)
	}
	tx, err := l.MarkClean()
	if err != nil {
		return nil, nil, err
	}
	ring := make([][]byte, cfg.RingRecords)
	for i := range ring {
		ring[i] = make([]byte, RecordSize)
	}
	copy(ring[tx.Index], tx.Record)
	if _, err := l.Commit(tx); err != nil {
		return nil, nil, err
	}
	l.stats.Transactions = 0 // formatting is not activity
	return l, ring, nil
}

// RecoveryInfo describes what Recover found.
type RecoveryInfo struct {
	// NewestSeq is the sequence of the newest valid record; the next
	// transaction gets NewestSeq+1.
	NewestSeq uint64
	// Clean: the newest valid record is a clean marker, so no write was
	// in flight and the hot set need not be resynced. When false, the
	// caller marks every extent of Hot dirty in every peer's bitmap (and
	// sets crashed-primary in the superblock) before serving writes.
	Clean bool
	// Hot is the recovered hot set, sorted.
	Hot []uint64
	// Valid, Blank and Corrupt count the ring's records. Corrupt records
	// (a torn newest write, bit rot) are skipped.
	Valid, Blank, Corrupt int
	// NextTorn: the index the next record goes to holds garbage (a torn
	// write). The recovered log is then closed: the first write waits for
	// one transaction (see Recover).
	NextTorn bool
	// Gap is the newest sequence number at or below NewestSeq with no
	// valid record (0 if none): records before it were not used. Normally
	// NewestSeq-RingRecords (overwritten) or that plus one (the record
	// at the oldest index was torn while being rewritten).
	Gap uint64
}

// Recover rebuilds the Log from the ring's records, records[i] being ring
// index i (len(records) must equal cfg.RingRecords). It decodes every
// record, skips blank and corrupt ones (counted in RecoveryInfo), takes
// the valid ones in sequence order and replays them onto an empty table:
// each record's window, then its updates, oldest first, so the newest
// mention of a slot wins. Records older than the newest missing sequence
// are not used; the records after it must cover every slot
// (ErrLostRecords otherwise), unless no sequence from 1 on is missing.
//
// A torn newest record is harmless: the writes that needed it never
// started (Commit is called only after the record is durable), and the
// previous records still describe a superset of what was in use. Its
// victims are not yet cold: they are still in the recovered hot set.
//
// It fails with ErrVersion if any record is of a newer format, ErrGeometry
// if a valid record was written for another capacity or ring size,
// ErrNoValidRecord, ErrLostRecords, or ErrCorrupt if the valid records
// contradict each other (an extent in two slots).
//
// The recovered Log is open (writes in hot extents start at once) unless
// the newest record is a clean marker or the next record's index holds a
// torn write (RecoveryInfo.NextTorn); then the first write waits for one
// transaction. After an unclean recovery the
// caller must mark every hot extent dirty in every peer's bitmap: that is
// what bounds the resync after a primary crash to the activity log.
func Recover(records [][]byte, cfg Config) (*Log, RecoveryInfo, error) {
	var info RecoveryInfo
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, info, err
	}
	if len(records) != cfg.RingRecords {
		return nil, info, fmt.Errorf("%w: %d records given, the ring has %d", ErrConfig, len(records), cfg.RingRecords)
	}
	bySeq := make(map[uint64]*Record, len(records))
	var newest *Record
	garbage := make([]bool, len(records)) // index holds neither a valid record nor zeros
	for i, b := range records {
		r, err := DecodeRecord(b)
		switch {
		case errors.Is(err, ErrBlank):
			info.Blank++
			continue
		case errors.Is(err, ErrVersion):
			return nil, info, fmt.Errorf("ring index %d: %w", i, err)
		case err != nil:
			info.Corrupt++
			garbage[i] = true
			continue
		}
		if int(r.Capacity) != cfg.Extents || int(r.Ring) != cfg.RingRecords {
			return nil, info, fmt.Errorf("%w: ring index %d (sequence %d) is for %d extents and %d records, configured %d and %d",
				ErrGeometry, i, r.Seq, r.Capacity, r.Ring, cfg.Extents, cfg.RingRecords)
		}
		if r.Seq%uint64(cfg.RingRecords) != uint64(i) {
			info.Corrupt++ // valid but misplaced: not written by this ring's rules
			garbage[i] = true
			continue
		}
		info.Valid++
		bySeq[r.Seq] = r
		if newest == nil || r.Seq > newest.Seq {
			newest = r
		}
	}
	if newest == nil {
		return nil, info, fmt.Errorf("%w: %d blank, %d corrupt", ErrNoValidRecord, info.Blank, info.Corrupt)
	}
	info.NewestSeq = newest.Seq
	info.Clean = newest.Type == RecordClean

	// The newest missing sequence: at most RingRecords steps down.
	gap := newest.Seq
	for gap > 0 && bySeq[gap] != nil {
		gap--
	}
	info.Gap = gap
	n := cfg.Extents
	if gap > 0 {
		covered := make([]bool, n)
		count := 0
		mark := func(s int) {
			if !covered[s] {
				covered[s] = true
				count++
			}
		}
		for seq := gap + 1; seq <= newest.Seq; seq++ {
			r := bySeq[seq]
			for i := range r.Window {
				mark((int(r.Start) + i) % n)
			}
			for _, u := range r.Updates {
				mark(int(u.Slot))
			}
		}
		if count < n {
			return nil, info, fmt.Errorf("%w: record %d is missing and the %d newer records cover %d of %d slots",
				ErrLostRecords, gap, newest.Seq-gap, count, n)
		}
	}

	l := newLog(cfg)
	lastUpdate := make([]uint64, n) // sequence of each slot's newest update: the LRU order
	for seq := gap + 1; seq <= newest.Seq; seq++ {
		r := bySeq[seq]
		for i, e := range r.Window {
			l.table[(int(r.Start)+i)%n] = e
		}
		for _, u := range r.Updates {
			l.table[u.Slot] = u.Extent
			lastUpdate[u.Slot] = seq
		}
	}
	order := make([]int, 0, n)
	for s, e := range l.table {
		if e == EmptySlot {
			continue
		}
		if prev := l.hot[uint64(e)]; prev != nil {
			return nil, info, corrupt("extent %d in slots %d and %d", e, prev.slot, s)
		}
		l.hot[uint64(e)] = &hotExtent{extent: uint64(e), slot: s}
		order = append(order, s)
	}
	// Least recently updated first, so the newest end up at the front.
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case lastUpdate[a] < lastUpdate[b]:
			return -1
		case lastUpdate[a] > lastUpdate[b]:
			return 1
		}
		return 0
	})
	for _, s := range order {
		h := l.hot[uint64(l.table[s])]
		h.elem = l.lru.PushFront(h)
	}
	for s := n - 1; s >= 0; s-- {
		if l.table[s] == EmptySlot {
			l.free = append(l.free, s)
		}
	}
	l.seq = newest.Seq
	l.start = (int(newest.Start) + len(newest.Window)) % n
	// The next record goes to index (NewestSeq+1) % RingRecords. If that
	// index holds garbage, it may be the remains of a record with sequence
	// NewestSeq+1 that was never committed; a torn write of a different
	// record there could complete it and bring it back as the newest. That
	// is harmless only if no write starts before a record at that sequence
	// is durable, so the log stays closed. A valid older record or zeros
	// there cannot combine into such a record: its first sector (sequence
	// and checksum) would have to come from the new write.
	info.NextTorn = garbage[(newest.Seq+1)%uint64(cfg.RingRecords)]
	l.open = !info.Clean && !info.NextTorn
	l.cleanDurable = info.Clean
	info.Hot = l.Hot()
	return l, info, nil
}
