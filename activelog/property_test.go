package activelog

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

var (
	seedFlag  = flag.Uint64("seed", 0, "TestRandomOperations: run only this seed (printed on failure)")
	seedsFlag = flag.Int("seeds", 200, "TestRandomOperations: number of seeds")
)

// TestRandomOperations drives a Log with seeded random operations (Begin,
// Release, Hold, Unhold, Prepare, Commit, Abort, MarkClean) against a model
// of the ring on disk, and crashes at random points: the outstanding
// record is dropped, written whole, or torn, and sometimes an older record
// rots. After each crash, Recover on the ring bytes must give:
//
//   - every extent in need: written by a write that passed Begin since the
//     last clean marker, and not since evicted by a transaction whose
//     bitmap pages were persisted (Prepare: the caller flushes them before
//     writing the record; the extent takes no write from then on);
//   - exactly the hot set and clean flag the durable records say;
//   - or ErrLostRecords, only when an older record rotted.
//
// Replay one case with: go test ./activelog -run TestRandomOperations -seed N -v
func TestRandomOperations(t *testing.T) {
	seeds := []uint64{*seedFlag}
	if *seedFlag == 0 {
		base := rand.Uint64() >> 1
		n := *seedsFlag
		if testing.Short() {
			n = 30
		}
		t.Logf("seeds %d..%d (replay one with -seed N)", base, base+uint64(n)-1)
		seeds = seeds[:0]
		for i := range n {
			seeds = append(seeds, base+uint64(i))
		}
	}
	var total simCounts
	for _, seed := range seeds {
		s := newSim(t, seed)
		s.run(1500)
		if t.Failed() {
			return
		}
		total.add(s.counts)
	}
	t.Logf("%+v", total)
}

// simCounts show which paths the random runs took.
type simCounts struct {
	Ready, Waited, Transactions, Evictions, NoVictim, Aborts, Cleans int
	Crashes, Torn, NextTorn, AttemptWon, Rotted, Lost                int
}

func (c *simCounts) add(o simCounts) {
	c.Ready += o.Ready
	c.Waited += o.Waited
	c.Transactions += o.Transactions
	c.Evictions += o.Evictions
	c.NoVictim += o.NoVictim
	c.Aborts += o.Aborts
	c.Cleans += o.Cleans
	c.Crashes += o.Crashes
	c.Torn += o.Torn
	c.NextTorn += o.NextTorn
	c.AttemptWon += o.AttemptWon
	c.Rotted += o.Rotted
	c.Lost += o.Lost
}

type sim struct {
	t    *testing.T
	seed uint64
	rng  *rand.Rand
	cfg  Config
	l    *Log
	d    *disk
	span uint64 // extents are drawn from [0, span)

	active  []*Ticket // ready
	waiting []*Ticket
	holds   []uint64
	pending *Transaction

	need map[uint64]bool
	// The last committed record's state, and every record written (whole
	// or torn) at the next sequence since: the ring's newest valid record
	// is one of them. Two torn writes at one index can add up to a whole
	// earlier one, so any attempt may win.
	committedSeq   uint64
	committedHot   []uint64
	committedClean bool
	attempts       []*Transaction

	counts simCounts
	trace  []string // recent operations, printed on failure
}

func (s *sim) logf(format string, args ...any) {
	if len(s.trace) == 40 {
		s.trace = s.trace[1:]
	}
	s.trace = append(s.trace, fmt.Sprintf(format, args...))
}

func newSim(t *testing.T, seed uint64) *sim {
	rng := rand.New(rand.NewPCG(seed, seed^0x5bd1e995))
	var cfg Config
	if rng.IntN(5) == 0 {
		// Large: the table needs several records of context.
		cfg.Extents = 1000 + rng.IntN(2000)
		cfg.MaxUpdates = 16 + rng.IntN(MaxUpdatesLimit-15)
		k := WindowLen(cfg.Extents, cfg.MaxUpdates)
		cfg.RingRecords = (cfg.Extents+k-1)/k + 1 + rng.IntN(2)
	} else {
		cfg.Extents = 1 + rng.IntN(8)
		cfg.MaxUpdates = 1 + rng.IntN(4)
		cfg.RingRecords = 2 + rng.IntN(3)
	}
	s := &sim{t: t, seed: seed, rng: rng, cfg: cfg, need: map[uint64]bool{}}
	s.span = uint64(cfg.Extents + 1 + rng.IntN(2*cfg.Extents+1))
	s.format()
	return s
}

func (s *sim) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("seed %d (config %+v): %s\nlast operations:\n  %s", s.seed, s.cfg, fmt.Sprintf(format, args...), strings.Join(s.trace, "\n  "))
}

func (s *sim) format() {
	l, ring, err := Format(s.cfg)
	if err != nil {
		s.fatalf("Format: %v", err)
	}
	s.l, s.d = l, &disk{ring: ring}
	s.committedSeq, s.committedHot, s.committedClean, s.attempts = 1, nil, true, nil
}

func (s *sim) run(ops int) {
	large := s.cfg.Extents > 100
	for i := 0; i < ops; i++ {
		switch r := s.rng.IntN(100); {
		case r < 30:
			n := 1
			if large {
				n = 1 + s.rng.IntN(40)
			}
			for range n {
				s.begin()
			}
		case r < 48:
			s.release()
		case r < 52:
			s.cancel()
		case r < 58:
			s.hold()
		case r < 64:
			s.unhold()
		case r < 80:
			s.prepare()
		case r < 96:
			s.finish()
		case r < 97:
			s.drainAndClean()
		default:
			s.crash()
		}
		if !large || i%50 == 0 {
			if err := s.l.check(); err != nil {
				s.fatalf("op %d: %v", i, err)
			}
		}
	}
	s.crash()
}

func (s *sim) begin() {
	first := s.rng.Uint64N(s.span)
	off := int64(first)*ExtentSize + s.rng.Int64N(ExtentSize)
	length := s.rng.Int64N(int64(min(3, s.l.MaxSpan())) * ExtentSize)
	if s.rng.IntN(20) == 0 {
		length = 0
	}
	tk, err := s.l.Begin(off, length)
	if errors.Is(err, ErrSpan) {
		return
	} else if err != nil {
		s.fatalf("Begin(%d, %d): %v", off, length, err)
	}
	s.logf("begin %d+%d ready=%v", off, length, tk.Ready())
	if tk.Ready() {
		s.counts.Ready++
		s.started(tk)
	} else {
		s.counts.Waited++
		s.waiting = append(s.waiting, tk)
	}
}

// started records a write that passed Begin: from now on a crash may leave
// its extents different on the peer.
func (s *sim) started(tk *Ticket) {
	first, n := tk.Extents()
	for e := first; e < first+uint64(n); e++ {
		s.need[e] = true
	}
	s.active = append(s.active, tk)
}

func pick[T any](rng *rand.Rand, xs *[]T) (T, bool) {
	var zero T
	if len(*xs) == 0 {
		return zero, false
	}
	i := rng.IntN(len(*xs))
	x := (*xs)[i]
	*xs = slices.Delete(*xs, i, i+1)
	return x, true
}

func (s *sim) release() {
	if tk, ok := pick(s.rng, &s.active); ok {
		if err := s.l.Release(tk); err != nil {
			s.fatalf("Release: %v", err)
		}
	}
}

func (s *sim) cancel() {
	if tk, ok := pick(s.rng, &s.waiting); ok {
		if err := s.l.Release(tk); err != nil {
			s.fatalf("Release(waiting): %v", err)
		}
	}
}

func (s *sim) hold() {
	if len(s.active) == 0 {
		return
	}
	tk := s.active[s.rng.IntN(len(s.active))]
	first, n := tk.Extents()
	if n == 0 {
		return
	}
	e := first + s.rng.Uint64N(uint64(n))
	if err := s.l.Hold(e); err != nil {
		s.fatalf("Hold(%d) of a ready ticket's extent: %v", e, err)
	}
	s.holds = append(s.holds, e)
}

func (s *sim) unhold() {
	if e, ok := pick(s.rng, &s.holds); ok {
		if err := s.l.Unhold(e); err != nil {
			s.fatalf("Unhold(%d): %v", e, err)
		}
	}
}

func (s *sim) prepare() {
	if s.pending != nil {
		if _, err := s.l.Prepare(); !errors.Is(err, ErrPending) {
			s.fatalf("Prepare with one outstanding: %v", err)
		}
		return
	}
	want := s.l.NeedsTransaction()
	tx, err := s.l.Prepare()
	switch {
	case errors.Is(err, ErrNoVictim):
		s.counts.NoVictim++
		if s.l.NeedsTransaction() {
			s.fatalf("NeedsTransaction right after ErrNoVictim")
		}
		return
	case err != nil:
		s.fatalf("Prepare: %v", err)
	case tx == nil:
		if want {
			s.fatalf("NeedsTransaction but Prepare has nothing")
		}
		return
	}
	if !want {
		s.fatalf("Prepare built a transaction NeedsTransaction did not announce")
	}
	s.logf("prepare seq %d added %v evicted %v", tx.Seq, tx.Added, tx.Evicted)
	s.flushed(tx)
}

// flushed: the caller persists the bitmap pages of tx's victims before
// writing the record; they take no write until the record's fate is
// known, so the bitmap on disk covers them.
func (s *sim) flushed(tx *Transaction) {
	for _, e := range tx.Evicted {
		delete(s.need, e)
	}
	if tx.Clean {
		clear(s.need) // every dirty bitmap page is persisted first
	}
	s.pending = tx
}

// postHot is the hot set once tx is durable.
func (s *sim) postHot(tx *Transaction) []uint64 {
	hot := slices.DeleteFunc(slices.Clone(s.committedHot), func(e uint64) bool { return slices.Contains(tx.Evicted, e) })
	hot = append(hot, tx.Added...)
	slices.Sort(hot)
	return hot
}

// fate writes the outstanding record whole, not at all, or torn.
func (s *sim) fate() {
	tx := s.pending
	if tx == nil {
		return
	}
	s.pending = nil
	slot := s.d.ring[tx.Index]
	f := s.rng.IntN(3)
	s.logf("record %d (clean=%v) %s", tx.Seq, tx.Clean, []string{"lost", "landed whole", "torn"}[f])
	switch f {
	case 0: // never reached the disk
	case 1:
		copy(slot, tx.Record)
		s.attempts = append(s.attempts, tx)
	case 2:
		s.counts.Torn++
		tear(s.rng, slot, tx.Record)
		s.attempts = append(s.attempts, tx)
	}
}

// tear leaves dst a mix of its old content and src at 512-byte sectors,
// sometimes with garbage: sectors land in any order, a prefix lands, or
// the first sector lands and another is garbage (the remains a later torn
// write may complete).
func tear(rng *rand.Rand, dst, src []byte) {
	const sector = 512
	garbage := func(sec int) {
		for i := sec; i < sec+sector; i++ {
			dst[i] = byte(rng.Uint32())
		}
	}
	switch rng.IntN(3) {
	case 0:
		for sec := 0; sec < RecordSize; sec += sector {
			switch rng.IntN(8) {
			case 0, 1, 2, 3:
				copy(dst[sec:sec+sector], src[sec:sec+sector])
			case 4:
				garbage(sec)
			}
		}
	case 1:
		n := rng.IntN(RecordSize/sector) * sector
		copy(dst[:n], src[:n])
	case 2:
		copy(dst[:sector], src[:sector])
		garbage(sector * (1 + rng.IntN(RecordSize/sector-1)))
	}
}

func (s *sim) finish() {
	tx := s.pending
	if tx == nil {
		return
	}
	if s.rng.IntN(6) == 0 {
		s.logf("abort seq %d", tx.Seq)
		s.counts.Aborts++
		s.fate()
		if err := s.l.Abort(tx); err != nil {
			s.fatalf("Abort: %v", err)
		}
		return
	}
	s.pending = nil
	copy(s.d.ring[tx.Index], tx.Record)
	ready, err := s.l.Commit(tx)
	if err != nil {
		s.fatalf("Commit: %v", err)
	}
	s.logf("commit seq %d clean=%v", tx.Seq, tx.Clean)
	s.counts.Transactions++
	s.counts.Evictions += len(tx.Evicted)
	if tx.Clean {
		s.counts.Cleans++
	}
	s.committedSeq, s.committedHot, s.committedClean, s.attempts = tx.Seq, s.l.Hot(), tx.Clean, nil
	for _, tk := range ready {
		i := slices.Index(s.waiting, tk)
		if i < 0 {
			s.fatalf("Commit returned a ticket that was not waiting")
		}
		s.waiting = slices.Delete(s.waiting, i, i+1)
		s.started(tk)
	}
	for _, tk := range s.waiting {
		if tk.Ready() {
			s.fatalf("a ticket became ready without being returned by Commit")
		}
	}
}

func (s *sim) drainAndClean() {
	for len(s.active) > 0 {
		s.release()
	}
	for len(s.holds) > 0 {
		s.unhold()
	}
	for len(s.waiting) > 0 {
		s.cancel()
	}
	if s.pending != nil {
		s.finish()
		if s.pending != nil {
			return
		}
		for len(s.active) > 0 {
			s.release()
		}
	}
	tx, err := s.l.MarkClean()
	if err != nil {
		s.fatalf("MarkClean on an idle log: %v", err)
	}
	s.logf("markclean seq %d", tx.Seq)
	s.flushed(tx)
}

func (s *sim) crash() {
	s.counts.Crashes++
	s.logf("crash")
	s.fate()
	ring := s.d.clone()
	rot := s.rng.IntN(10) == 0
	if rot {
		// Bit rot in a valid record other than the newest.
		var valid []int
		for i, b := range ring {
			if r, err := DecodeRecord(b); err == nil && r.Seq != s.newestSeq(ring) {
				valid = append(valid, i)
			}
		}
		if len(valid) > 0 {
			i := valid[s.rng.IntN(len(valid))]
			ring[i][s.rng.IntN(RecordSize)] ^= byte(1 + s.rng.IntN(255))
			s.counts.Rotted++
		} else {
			rot = false
		}
	}
	l, info, err := Recover(ring, s.cfg)
	// Rot may cost the older records (ErrLostRecords), or hit a version
	// field, which reads as a newer format: refused, never guessed.
	if rot && (errors.Is(err, ErrLostRecords) || errors.Is(err, ErrVersion)) {
		s.counts.Lost++
		s.format() // the caller marks the whole device dirty, then formats
		s.reset()
		clear(s.need)
		return
	}
	if err != nil {
		s.fatalf("crash %d: Recover: %v", s.counts.Crashes, err)
	}
	for e := range s.need {
		if !slices.Contains(info.Hot, e) {
			s.fatalf("crash %d: extent %d was written since the last clean marker and is not in the recovered hot set %v", s.counts.Crashes, e, info.Hot)
		}
	}
	if info.Clean && len(s.need) > 0 {
		s.fatalf("crash %d: recovered clean with writes to protect", s.counts.Crashes)
	}
	switch info.NewestSeq {
	case s.committedSeq:
		if info.Clean != s.committedClean || !slices.Equal(info.Hot, s.committedHot) {
			s.fatalf("crash %d: recovered clean=%v hot %v, committed clean=%v hot %v", s.counts.Crashes, info.Clean, info.Hot, s.committedClean, s.committedHot)
		}
	case s.committedSeq + 1:
		s.counts.AttemptWon++ // an uncommitted record is the newest
		if !slices.ContainsFunc(s.attempts, func(tx *Transaction) bool {
			return tx.Clean == info.Clean && slices.Equal(s.postHot(tx), info.Hot)
		}) {
			var desc []string
			for _, tx := range s.attempts {
				desc = append(desc, fmt.Sprintf("seq %d clean=%v post %v", tx.Seq, tx.Clean, s.postHot(tx)))
			}
			s.fatalf("crash %d: recovered clean=%v hot %v, no attempted record says so (committed %v; attempts %v)", s.counts.Crashes, info.Clean, info.Hot, s.committedHot, desc)
		}
	default:
		s.fatalf("crash %d: recovered sequence %d, committed %d", s.counts.Crashes, info.NewestSeq, s.committedSeq)
	}
	if err := l.check(); err != nil {
		s.fatalf("crash %d: recovered log: %v", s.counts.Crashes, err)
	}
	if info.NextTorn {
		s.counts.NextTorn++
	}
	// Restart: unless clean, the caller marks every hot extent dirty in
	// memory. Those bits are as volatile as the ones the crash lost, so
	// need does not change: it shrinks only when a victim's pages or, for
	// a clean marker, all pages are persisted.
	s.l = l
	s.d = &disk{ring: ring}
	s.reset()
	// Remains of the attempts at the next index survive a crash that
	// recovered the same newest record.
	if info.NewestSeq != s.committedSeq {
		s.attempts = nil
	}
	s.committedSeq, s.committedHot, s.committedClean = info.NewestSeq, info.Hot, info.Clean
}

func (s *sim) reset() {
	s.active, s.waiting, s.holds, s.pending = nil, nil, nil, nil
}

func (s *sim) newestSeq(ring [][]byte) uint64 {
	var n uint64
	for _, b := range ring {
		if r, err := DecodeRecord(b); err == nil {
			n = max(n, r.Seq)
		}
	}
	return n
}
