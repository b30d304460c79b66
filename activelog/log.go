package activelog

import (
	"container/list"
	"fmt"
	"slices"
)

// Defaults.
const (
	// DefaultExtents is the default hot-set capacity: 1237 extents of
	// 4 MiB, about 4.8 GiB.
	DefaultExtents = 1237
	// DefaultMaxUpdates is the default number of slot updates per
	// transaction.
	DefaultMaxUpdates = 64
	// DefaultRingRecords is the default ring size: 8 records, 32 KiB.
	DefaultRingRecords = 8
)

// Config is the geometry and policy of a Log. Zero fields take the
// defaults. Extents and RingRecords are geometry (recorded in every record
// and in the superblock); MaxUpdates is policy and may change between runs.
type Config struct {
	// Extents is the hot-set capacity N: the number of slots.
	Extents int
	// MaxUpdates is the most slot updates one transaction carries
	// (1..MaxUpdatesLimit). It also bounds how many extents one write may
	// touch (see Log.MaxSpan).
	MaxUpdates int
	// RingRecords is the number of records in the on-disk ring.
	RingRecords int
}

func (c Config) normalize() (Config, error) {
	if c.Extents == 0 {
		c.Extents = DefaultExtents
	}
	if c.MaxUpdates == 0 {
		c.MaxUpdates = DefaultMaxUpdates
	}
	if c.RingRecords == 0 {
		c.RingRecords = DefaultRingRecords
	}
	switch {
	case c.Extents < 1 || c.Extents > MaxExtents:
		return c, fmt.Errorf("%w: %d extents (allowed 1..%d)", ErrConfig, c.Extents, MaxExtents)
	case c.MaxUpdates < 1 || c.MaxUpdates > MaxUpdatesLimit:
		return c, fmt.Errorf("%w: %d updates per transaction (allowed 1..%d)", ErrConfig, c.MaxUpdates, MaxUpdatesLimit)
	case c.RingRecords < MinRingRecords || c.RingRecords > MaxRingRecords:
		return c, fmt.Errorf("%w: ring of %d records (allowed %d..%d)", ErrConfig, c.RingRecords, MinRingRecords, MaxRingRecords)
	}
	// With the newest record torn, the other RingRecords-1 records must
	// still cover every slot with their windows.
	if k := WindowLen(c.Extents, c.MaxUpdates); (c.RingRecords-1)*k < c.Extents {
		return c, fmt.Errorf("%w: %d records of %d context slots cannot cover %d extents after a torn write; use at least %d records",
			ErrConfig, c.RingRecords, k, c.Extents, (c.Extents+k-1)/k+1)
	}
	return c, nil
}

// Log is the activity log: the set of hot extents, the LRU among them, the
// writers waiting for cold extents, and the sequence of transactions that
// persist it. It does no I/O and starts no goroutine; it is not safe for
// concurrent use (the daemon guards it with one mutex).
type Log struct {
	cfg Config

	table []uint32 // slot -> extent, EmptySlot when empty: the durable state
	hot   map[uint64]*hotExtent
	lru   list.List // of *hotExtent; front is the most recently used
	free  []int     // empty slots; the last one is used first

	waiting list.List // of *Ticket, oldest first

	// pending is the outstanding transaction. Its victims are marked
	// leaving: no write may start in them, since the record evicting them
	// may be on disk.
	pending *Transaction

	seq   uint64 // sequence of the newest durable record
	start int    // window start of the next record
	// open is true when the newest durable record is an open transaction
	// (not a clean marker) and no transaction was aborted since: only
	// then may a write start without a record being written first.
	open bool
	// cleanDurable: the newest durable record is a clean marker.
	cleanDurable bool
	// blocked: the last Prepare found no victim, and no extent became
	// evictable since.
	blocked bool

	inflight, held int // totals over all extents
	stats          Stats
}

type hotExtent struct {
	extent   uint64
	slot     int
	inflight int // writes in flight (ready tickets)
	held     int // holds (writes the peer has not acknowledged)
	leaving  bool
	elem     *list.Element
}

func (h *hotExtent) evictable() bool { return h.inflight == 0 && h.held == 0 }

// Stats are counters for status and metrics.
type Stats struct {
	Capacity int // slots
	Hot      int // hot extents
	InFlight int // references held by ready tickets, summed over extents
	Held     int // holds, summed over extents
	Waiting  int // tickets waiting for a transaction
	Seq      uint64

	Transactions uint64 // records committed (clean markers included)
	Updates      uint64 // slot updates committed
	Evictions    uint64 // extents made cold
	Starved      uint64 // Prepare calls that returned ErrNoVictim
	Aborts       uint64 // transactions aborted
}

// Ticket is one write's claim on the extents it touches. It is ready when
// every extent is hot; from then on they cannot be evicted until Release.
type Ticket struct {
	log   *Log
	first uint64
	n     int
	state ticketState
	elem  *list.Element // in log.waiting while waiting
}

type ticketState uint8

const (
	ticketWaiting ticketState = iota
	ticketReady
	ticketDone
)

// Ready reports whether the write may be submitted. A waiting ticket
// becomes ready only inside Commit, which returns it.
func (t *Ticket) Ready() bool { return t.state == ticketReady }

// Extents returns the extents the ticket covers: n extents from first.
func (t *Ticket) Extents() (first uint64, n int) { return t.first, t.n }

// Transaction is one record to write. The caller must, in this order:
//
//  1. Persist (write and sync) the on-disk bitmap pages covering every
//     extent in Evicted, for every peer. Once the record is durable those
//     extents are cold, and after a crash only the bitmap says which of
//     their blocks differ from a peer. For a Clean transaction, persist
//     every dirty bitmap page.
//  2. Write Record at ring index Index (byte Offset() into the ring) and
//     make it durable (sync / FUA).
//  3. Call Commit, which returns the tickets that became ready. If the
//     write failed or its outcome is unknown, call Abort instead.
//
// The same order as etcd/raft's Ready (persist before send): a record must
// never be durable before the bitmap pages it relies on.
type Transaction struct {
	Seq    uint64
	Index  int    // ring index: Seq % RingRecords
	Record []byte // RecordSize bytes
	// Added are the extents that become hot; Evicted those that become
	// cold (persist their bitmap pages first).
	Added   []uint64
	Evicted []uint64
	// Clean is set for the clean-shutdown marker written by MarkClean.
	Clean bool

	updates   []Update
	victims   []*hotExtent
	freeUsed  int
	nextStart int
}

// Offset is the byte offset of the record from the start of the ring.
func (tx *Transaction) Offset() int64 { return int64(tx.Index) * RecordSize }

func newLog(cfg Config) *Log {
	l := &Log{cfg: cfg, table: make([]uint32, cfg.Extents), hot: make(map[uint64]*hotExtent)}
	for i := range l.table {
		l.table[i] = EmptySlot
	}
	l.stats.Capacity = cfg.Extents
	return l
}

// Config returns the normalized configuration.
func (l *Log) Config() Config { return l.cfg }

// MaxSpan is the most extents one write may touch (Begin fails with
// ErrSpan beyond): all of a write's cold extents must fit in one
// transaction, and all of its extents in the table. A write of at most
// (MaxSpan-1) x ExtentSize bytes fits however it is aligned.
func (l *Log) MaxSpan() int { return min(l.cfg.Extents, l.cfg.MaxUpdates) }

// Begin claims the extents of a write of length bytes at offBytes. If
// every extent is hot (and the log is open), the ticket is ready: take the
// write. Otherwise the ticket waits: its missing extents are wanted, shared
// with every other waiting ticket, and a later Commit makes it ready (and
// returns it). Either way the caller must eventually Release it: after the
// write completes, or to give up waiting.
//
// A zero length touches no extent and is ready at once.
func (l *Log) Begin(offBytes, length int64) (*Ticket, error) {
	t, err := l.newTicket(offBytes, length)
	if err != nil || t.Ready() {
		return t, err
	}
	if !l.acquire(t) {
		t.elem = l.waiting.PushBack(t)
	}
	return t, nil
}

// newTicket checks the range and returns its ticket, ready at once when it
// touches no extent.
func (l *Log) newTicket(offBytes, length int64) (*Ticket, error) {
	first, n, err := ExtentRange(offBytes, length)
	if err != nil {
		return nil, err
	}
	if n > int64(l.MaxSpan()) {
		return nil, fmt.Errorf("%w: %d extents, at most %d", ErrSpan, n, l.MaxSpan())
	}
	t := &Ticket{log: l, first: first, n: int(n)}
	if t.n == 0 {
		t.state = ticketReady
	}
	return t, nil
}

// TryBegin is Begin for a caller that must not wait: it returns a ready
// ticket when every extent is hot (and the log open), and (nil, nil)
// without queueing anything otherwise.
func (l *Log) TryBegin(offBytes, length int64) (*Ticket, error) {
	t, err := l.newTicket(offBytes, length)
	if err != nil || t.Ready() {
		return t, err
	}
	if !l.acquire(t) {
		return nil, nil
	}
	return t, nil
}

// acquire makes t ready if the log is open and all its extents are hot
// and not leaving.
func (l *Log) acquire(t *Ticket) bool {
	if !l.open {
		return false
	}
	for e := t.first; e < t.first+uint64(t.n); e++ {
		if h := l.hot[e]; h == nil || h.leaving {
			return false
		}
	}
	for e := t.first; e < t.first+uint64(t.n); e++ {
		h := l.hot[e]
		h.inflight++
		l.lru.MoveToFront(h.elem)
	}
	l.inflight += t.n
	t.state = ticketReady
	return true
}

// Release ends a ticket: for a ready ticket the write completed (the
// extents may go cold again unless held); for a waiting one the writer
// gives up.
func (l *Log) Release(t *Ticket) error {
	if t == nil || t.log != l {
		return ErrTicket
	}
	switch t.state {
	case ticketWaiting:
		l.waiting.Remove(t.elem)
		t.elem = nil
		l.blocked = false // the head of the queue may have changed
	case ticketReady:
		for e := t.first; e < t.first+uint64(t.n); e++ {
			h := l.hot[e]
			h.inflight--
			if h.evictable() {
				l.blocked = false
			}
		}
		l.inflight -= t.n
	default:
		return ErrTicket
	}
	t.state = ticketDone
	return nil
}

// Hold pins a hot extent until the matching Unhold: the peer has not yet
// acknowledged the epochs holding writes to it, so it must stay in the
// activity log. Holds count; take them while the write's ticket is still
// ready (before Release), so the extent cannot go cold in between.
func (l *Log) Hold(extent uint64) error {
	h := l.hot[extent]
	if h == nil || h.leaving {
		return fmt.Errorf("%w: extent %d", ErrNotHot, extent)
	}
	h.held++
	l.held++
	return nil
}

// Unhold drops one Hold.
func (l *Log) Unhold(extent uint64) error {
	h := l.hot[extent]
	if h == nil || h.held == 0 {
		return fmt.Errorf("%w: extent %d", ErrNotHeld, extent)
	}
	h.held--
	l.held--
	if h.evictable() {
		l.blocked = false
	}
	return nil
}

// NeedsTransaction reports whether Prepare would return a transaction:
// tickets wait, none is outstanding, and the last ErrNoVictim (if any) may
// be resolved by a Release or Unhold since. Cheap: call it after Begin,
// Release and Unhold to decide whether to wake the goroutine that writes
// the log.
func (l *Log) NeedsTransaction() bool {
	return l.pending == nil && l.waiting.Len() > 0 && (!l.open || !l.blocked)
}

// Prepare builds the next transaction for the waiting tickets, oldest
// first: it makes their cold extents hot, batching tickets (wanted extents
// shared between tickets are added once) until the next one would exceed
// MaxUpdates or find no victim. Empty slots are used first, then victims
// in LRU order among extents with no write in flight, no hold, and not
// needed by a ticket of this transaction.
//
// It returns (nil, nil) when no ticket waits, ErrPending while a
// transaction is outstanding, and ErrNoVictim when the oldest ticket
// cannot be served until a Release or Unhold. See Transaction for what the
// caller does next. While the transaction is outstanding its victims take
// no new writes.
func (l *Log) Prepare() (*Transaction, error) {
	if l.pending != nil {
		return nil, ErrPending
	}
	if l.waiting.Len() == 0 {
		return nil, nil
	}
	b := builder{l: l, protected: map[*hotExtent]bool{}, victimSet: map[uint64]bool{}, addSet: map[uint64]bool{}, cursor: l.lru.Back()}
	scheduled := 0
	for e := l.waiting.Front(); e != nil; e = e.Next() {
		if !b.schedule(e.Value.(*Ticket)) {
			break
		}
		scheduled++
	}
	// A log that is not open needs a record before any write, even one
	// that changes nothing: tickets in hot extents are then served.
	if scheduled == 0 && l.open {
		l.blocked = true
		l.stats.Starved++
		return nil, ErrNoVictim
	}
	tx := &Transaction{Added: b.adds, updates: b.updates, victims: b.victims, freeUsed: b.freeUsed}
	for _, h := range b.victims {
		tx.Evicted = append(tx.Evicted, h.extent)
	}
	if err := l.seal(tx, RecordTransaction); err != nil {
		return nil, err
	}
	return tx, nil
}

// builder collects one transaction in Prepare.
type builder struct {
	l         *Log
	protected map[*hotExtent]bool // hot extents needed by scheduled tickets
	victimSet map[uint64]bool
	addSet    map[uint64]bool
	adds      []uint64
	updates   []Update
	victims   []*hotExtent
	freeUsed  int
	cursor    *list.Element // next LRU candidate, moving toward the front
}

// schedule adds t's cold extents to the transaction, or returns false
// (leaving the transaction as it was) if they do not fit.
func (b *builder) schedule(t *Ticket) bool {
	l := b.l
	last := t.first + uint64(t.n)
	var need []uint64
	for e := t.first; e < last; e++ {
		if b.victimSet[e] {
			return false // an earlier ticket's victim: next transaction
		}
		if l.hot[e] == nil && !b.addSet[e] {
			need = append(need, e)
		}
	}
	if len(b.updates)+len(need) > l.cfg.MaxUpdates {
		return false
	}
	var newlyProtected []*hotExtent
	for e := t.first; e < last; e++ {
		if h := l.hot[e]; h != nil && !b.protected[h] {
			b.protected[h] = true
			newlyProtected = append(newlyProtected, h)
		}
	}
	savedFree, savedCursor, savedVictims := b.freeUsed, b.cursor, len(b.victims)
	slots := make([]int, 0, len(need))
	for range need {
		if b.freeUsed < len(l.free) {
			b.freeUsed++
			slots = append(slots, l.free[len(l.free)-b.freeUsed])
			continue
		}
		h := b.nextVictim()
		if h == nil {
			b.freeUsed, b.cursor = savedFree, savedCursor
			for _, v := range b.victims[savedVictims:] {
				delete(b.victimSet, v.extent)
			}
			b.victims = b.victims[:savedVictims]
			for _, p := range newlyProtected {
				delete(b.protected, p)
			}
			return false
		}
		b.victims = append(b.victims, h)
		b.victimSet[h.extent] = true
		slots = append(slots, h.slot)
	}
	for i, e := range need {
		b.adds = append(b.adds, e)
		b.addSet[e] = true
		b.updates = append(b.updates, Update{Slot: uint32(slots[i]), Extent: uint32(e)})
	}
	return true
}

// nextVictim returns the least recently used extent that may go cold.
func (b *builder) nextVictim() *hotExtent {
	for ; b.cursor != nil; b.cursor = b.cursor.Prev() {
		h := b.cursor.Value.(*hotExtent)
		if h.evictable() && !b.protected[h] {
			b.cursor = b.cursor.Prev()
			return h
		}
	}
	return nil
}

// seal encodes tx as the next record and makes it the outstanding one.
func (l *Log) seal(tx *Transaction, typ RecordType) error {
	if l.seq >= MaxSeq {
		return fmt.Errorf("%w: sequence numbers exhausted, format a new ring", ErrConfig)
	}
	n := l.cfg.Extents
	post := make(map[uint32]uint32, len(tx.updates))
	for _, u := range tx.updates {
		post[u.Slot] = u.Extent
	}
	k := WindowLen(n, len(tx.updates))
	window := make([]uint32, k)
	for i := range window {
		s := uint32((l.start + i) % n)
		if e, ok := post[s]; ok {
			window[i] = e
		} else {
			window[i] = l.table[s]
		}
	}
	tx.Seq = l.seq + 1
	tx.Index = int(tx.Seq % uint64(l.cfg.RingRecords))
	tx.Clean = typ == RecordClean
	tx.nextStart = (l.start + k) % n
	rec := Record{Type: typ, Seq: tx.Seq, Capacity: uint32(n), Ring: uint32(l.cfg.RingRecords),
		Updates: tx.updates, Start: uint32(l.start), Window: window}
	buf, err := rec.Encode()
	if err != nil {
		return fmt.Errorf("activelog: internal error encoding record %d: %w", tx.Seq, err)
	}
	tx.Record = buf
	for _, h := range tx.victims {
		h.leaving = true
	}
	l.pending = tx
	return nil
}

// Commit records that tx is durable: its extents are hot, its victims
// cold, and the tickets it serves (and any other waiting ticket whose
// extents are all hot now) are ready. It returns those tickets, oldest
// first, so the caller can wake their writers.
func (l *Log) Commit(tx *Transaction) ([]*Ticket, error) {
	if tx == nil || tx != l.pending {
		return nil, ErrNotPending
	}
	for _, h := range tx.victims {
		l.lru.Remove(h.elem)
		delete(l.hot, h.extent)
		l.stats.Evictions++
	}
	l.free = l.free[:len(l.free)-tx.freeUsed]
	for _, u := range tx.updates {
		h := &hotExtent{extent: uint64(u.Extent), slot: int(u.Slot)}
		h.elem = l.lru.PushFront(h)
		l.hot[h.extent] = h
		l.table[u.Slot] = u.Extent
	}
	l.seq, l.start, l.open, l.cleanDurable = tx.Seq, tx.nextStart, !tx.Clean, tx.Clean
	l.pending, l.blocked = nil, false
	l.stats.Transactions++
	l.stats.Updates += uint64(len(tx.updates))
	return l.wake(), nil
}

// wake makes ready every waiting ticket whose extents are all hot.
func (l *Log) wake() []*Ticket {
	var ready []*Ticket
	for e := l.waiting.Front(); e != nil; {
		next := e.Next()
		t := e.Value.(*Ticket)
		if l.acquire(t) {
			l.waiting.Remove(e)
			t.elem = nil
			ready = append(ready, t)
		}
		e = next
	}
	return ready
}

// Abort gives up tx: its write failed or its outcome is unknown. The hot
// set is unchanged and its tickets still wait. Because the record may have
// reached the disk anyway, whole or in part (a failed write is "maybe
// applied"), the log closes until a transaction at the same sequence is
// committed, which overwrites it: no write starts, even in hot extents.
// Prepare then builds that transaction for the waiting tickets; after an
// aborted MarkClean, call MarkClean again. Writes already in flight go on.
func (l *Log) Abort(tx *Transaction) error {
	if tx == nil || tx != l.pending {
		return ErrNotPending
	}
	for _, h := range tx.victims {
		h.leaving = false
	}
	l.pending, l.open, l.blocked, l.cleanDurable = nil, false, false, false
	l.stats.Aborts++
	return nil
}

// MarkClean builds the clean-shutdown marker: the record saying no write
// is in flight and the bitmap is entirely on disk, so the hot set need not
// be resynced after a restart. It fails with ErrBusy unless no write is in
// flight, no extent is held and no ticket waits: drain writes first, and
// for writes the peer will never acknowledge, set their bits in the bitmap
// and Unhold. Persist every dirty bitmap page before writing the record.
// From this call on no write starts until a new transaction is committed
// (Begin waits; Prepare writes it).
func (l *Log) MarkClean() (*Transaction, error) {
	if l.pending != nil {
		return nil, ErrPending
	}
	if l.inflight > 0 || l.held > 0 || l.waiting.Len() > 0 {
		return nil, fmt.Errorf("%w: %d in flight, %d held, %d waiting", ErrBusy, l.inflight, l.held, l.waiting.Len())
	}
	tx := &Transaction{}
	if err := l.seal(tx, RecordClean); err != nil {
		return nil, err
	}
	l.open = false
	return tx, nil
}

// IsHot reports whether extent is in the table (the durable hot set).
func (l *Log) IsHot(extent uint64) bool { return l.hot[extent] != nil }

// Hot returns the hot extents, sorted.
func (l *Log) Hot() []uint64 {
	out := make([]uint64, 0, len(l.hot))
	for e := range l.hot {
		out = append(out, e)
	}
	slices.Sort(out)
	return out
}

// Len returns the number of hot extents.
func (l *Log) Len() int { return len(l.hot) }

// Seq returns the sequence number of the newest durable record.
func (l *Log) Seq() uint64 { return l.seq }

// Clean reports whether the newest durable record is known to be a clean
// marker (false after an Abort: the outcome is unknown).
func (l *Log) Clean() bool { return l.cleanDurable }

// Stats returns the counters.
func (l *Log) Stats() Stats {
	s := l.stats
	s.Hot = len(l.hot)
	s.InFlight = l.inflight
	s.Held = l.held
	s.Waiting = l.waiting.Len()
	s.Seq = l.seq
	return s
}

// RingRecordsFor returns the ring size to create for a hot set of extents
// slots: DefaultRingRecords, or more when the set is so large that the
// records left after a torn newest one could not cover it with their
// windows, whatever MaxUpdates a later run uses.
func RingRecordsFor(extents int) int {
	k := WindowLen(extents, MaxUpdatesLimit)
	return max(DefaultRingRecords, (extents+k-1)/k+1)
}
