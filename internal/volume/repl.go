package volume

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/blkrep/blkrep/activelog"
	"github.com/blkrep/blkrep/meta"
	"github.com/blkrep/blkrep/protocol"
)

// This file is what replication (internal/repl) uses: the write gate
// without its local write, the peers' bitmaps, activity-log holds and the
// generation identifiers. Standalone volumes use none of it.

// Chunks runs fn for pieces of [off, off+n) that each fit one
// activity-log ticket, with the extents hot and claimed while fn runs. fn
// does the local write and ships it; marking the bitmaps of peers that
// did not get it (Mark) is fn's job. A failed fn marks the range for every
// peer (its outcome anywhere is unknown).
func (v *Volume) Chunks(off, n int64, fn func(off, n int64) error) error {
	return v.chunks(off, n, fn)
}

// SlotOf returns the bitmap slot of peer node, -1 if it has none.
func (v *Volume) SlotOf(node string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.IndexFunc(v.sb.Peers, func(p meta.PeerSlot) bool { return p.Node == node })
}

// Mark records that [off, off+n) may differ on the peer of slot.
func (v *Volume) Mark(slot int, off, n int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.bms[slot].SetRange(off, n)
}

// MarkRuns sets the peer's bits from runs of bit indexes (its bitmap for
// us, received at the handshake) in slot: afterwards the slot holds the
// union.
func (v *Volume) MarkRuns(slot int, runs []protocol.Run) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	bm := v.bms[slot]
	for _, r := range runs {
		if r.Start+r.Len > bm.NBits() {
			return fmt.Errorf("bitmap run [%d, +%d) beyond %d bits", r.Start, r.Len, bm.NBits())
		}
		off, n := bm.BitRegion(r.Start, r.Len)
		bm.SetRange(off, n)
	}
	return nil
}

// Clear records that [off, off+n) is identical on the peer of slot (whole
// bits only).
func (v *Volume) Clear(slot int, off, n int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.bms[slot].ClearRange(off, n)
}

// SetAll marks the whole volume out of sync with the peer of slot (full sync).
func (v *Volume) SetAll(slot int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.bms[slot].SetRange(0, v.bms[slot].Size())
}

// Runs returns the set runs of slot's bitmap from bit from on, at most
// max runs, and the bit to continue from (NBits when done).
func (v *Volume) Runs(slot int, from uint64, max int) ([]protocol.Run, uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	bm := v.bms[slot]
	var out []protocol.Run
	next := bm.NBits()
	bm.Runs(from, func(s, n uint64) bool {
		if len(out) == max {
			next = s
			return false
		}
		out = append(out, protocol.Run{Start: s, Len: n})
		return true
	})
	return out, next
}

// NextDirty returns the byte range of the first run of set bits in slot
// at or after byte off, at most maxLen long; ok is false when none is left.
func (v *Volume) NextDirty(slot int, off, maxLen int64) (start, n int64, ok bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	bm := v.bms[slot]
	from := uint64(off / int64(bm.BytesPerBit()))
	i, found := bm.NextSet(from)
	if !found {
		return 0, 0, false
	}
	e := i
	for e < bm.NBits() && bm.TestBit(e) && int64(e-i+1)*int64(bm.BytesPerBit()) <= maxLen {
		e++
	}
	if e == i {
		e = i + 1
	}
	s, l := bm.BitRegion(i, e-i)
	return s, l, true
}

// DirtyBytes is how much may differ from the peer of slot.
func (v *Volume) DirtyBytes(slot int) int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.bms[slot].DirtyBytes()
}

// BytesPerBit is the bitmap granularity.
func (v *Volume) BytesPerBit() uint32 { return v.lay.BytesPerBit }

// NBits is the number of bits of each peer bitmap.
func (v *Volume) NBits() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.bms[0].NBits()
}

// PersistBitmaps makes every dirty bitmap page durable (a resync target
// records its progress this way).
func (v *Volume) PersistBitmaps() error {
	v.ioMu.Lock()
	defer v.ioMu.Unlock()
	v.mu.Lock()
	ws := takeAll(v.bms, nil)
	v.mu.Unlock()
	if err := v.pager.persist(ws); err != nil {
		v.mu.Lock()
		redirty(v.bms, ws)
		v.mu.Unlock()
		return v.setFailed(err)
	}
	v.pageWrites.Add(uint64(len(ws)))
	return nil
}

// HoldRange keeps the extents of [off, off+n) hot until UnholdRange:
// the peer has not yet acknowledged the epoch holding a write there.
// Call it from inside a Chunks callback (the extents are hot).
func (v *Volume) HoldRange(off, n int64) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	first, last := extentsOf(off, n)
	for e := first; e <= last; e++ {
		if err := v.al.Hold(e); err != nil {
			for x := first; x < e; x++ {
				v.al.Unhold(x)
			}
			return err
		}
	}
	return nil
}

// UnholdRange drops a HoldRange.
func (v *Volume) UnholdRange(off, n int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	first, last := extentsOf(off, n)
	for e := first; e <= last; e++ {
		v.al.Unhold(e)
	}
	if v.al.NeedsTransaction() {
		v.wakeWriter()
	}
}

func extentsOf(off, n int64) (first, last uint64) {
	if n <= 0 {
		n = 1
	}
	return uint64(off) >> activelog.ExtentShift, uint64(off+n-1) >> activelog.ExtentShift
}

// Waiters reports whether a write waits for the activity log (replication
// then closes its epoch so held extents can go cold).
func (v *Volume) Waiters() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.al.Stats().Waiting > 0
}

// Gens returns the generations as the handshake with the peer of slot
// sees them. Primary is the live role.
func (v *Volume) Gens(slot int) protocol.Gens {
	v.mu.Lock()
	defer v.mu.Unlock()
	sb := v.sb
	g := v.gensOf(sb, slot)
	g.CrashedPrimary = sb.Flags&meta.FlagCrashedPrimary != 0
	g.Primary = v.primary
	g.Dirty = v.bms[slot].Count() > 0
	g.Inconsistent = sb.Flags&meta.FlagConsistent == 0 && sb.Current != 0
	g.Node = sb.Node
	if sb.Flags&meta.FlagJustCreated != 0 {
		g.Current = 0
	}
	return g
}

// Flags returns the superblock flags.
func (v *Volume) Flags() meta.Flags {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.sb.Flags
}

// Primary reports the live role.
func (v *Volume) Primary() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.primary
}

// PrimarySince is when the volume became Primary (zero when Secondary).
func (v *Volume) PrimarySince() time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.primarySince
}

// UpToDate reports whether the data is a complete, consistent copy that
// was up to date when last known: the condition to become Primary
// without --force.
func (v *Volume) UpToDate() bool {
	f := v.Flags()
	return f&meta.FlagJustCreated != 0 || (f&meta.FlagConsistent != 0 && f&meta.FlagWasUpToDate != 0)
}

// SetPrimary changes the role and records it in the superblock. A forced
// promotion of data that is not UpToDate makes it consistent (the
// operator says it is the good copy) and gives it a new generation.
func (v *Volume) SetPrimary(primary, force bool) error {
	v.ioMu.Lock()
	defer v.ioMu.Unlock()
	sb := cloneSuper(v.sb)
	if primary {
		sb.Flags |= meta.FlagPrimary
		if force && (sb.Flags&meta.FlagConsistent == 0 || sb.Flags&meta.FlagWasUpToDate == 0) {
			id, err := newID()
			if err != nil {
				return err
			}
			// The operator declares this copy the good one: a new
			// generation, the old one kept in the history.
			sb.History = historyArray(pushFront(sb.History[:], sb.Current))
			sb.Current = id
			sb.Flags = (sb.Flags | meta.FlagConsistent | meta.FlagWasUpToDate) &^ meta.FlagJustCreated
		}
	} else {
		sb.Flags &^= meta.FlagPrimary
	}
	if err := v.writeSuper(&sb); err != nil {
		return v.setFailed(err)
	}
	v.mu.Lock()
	v.primary = primary
	if primary {
		v.primarySince = time.Now()
	} else {
		v.primarySince = time.Time{}
	}
	v.mu.Unlock()
	return nil
}

// gensOf builds the generations of a superblock as seen by slot's peer.
func (v *Volume) gensOf(sb *meta.Superblock, slot int) protocol.Gens {
	g := protocol.Gens{Current: sb.Current, Bitmap: sb.Peers[slot].BitmapID}
	for _, h := range sb.History {
		if h != 0 {
			g.History = append(g.History, h)
		}
	}
	return g
}

func newID() (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, err
		}
		if id := binary.LittleEndian.Uint64(b[:]) &^ 1; id != 0 {
			return id, nil
		}
	}
}

func pushFront(h []uint64, id uint64) []uint64 {
	if id == 0 || (len(h) > 0 && h[0] == id) {
		return h
	}
	return append([]uint64{id}, h...)
}

func historyArray(h []uint64) [meta.HistoryLen]uint64 {
	var out [meta.HistoryLen]uint64
	copy(out[:], h)
	return out
}

// EnsureRotated gives the data a new generation before a write that the
// peers of slots will not get is acknowledged, if one of them is still
// in sync with the current one (its bitmap id is zero): the lazy rotation
// of REFERENCE.md section 3. Each such slot's bitmap then tracks against
// the old current. It writes the superblock only when needed.
func (v *Volume) EnsureRotated(slots []int) error {
	if !v.needsRotation(slots) {
		return nil
	}
	v.ioMu.Lock()
	defer v.ioMu.Unlock()
	if !v.needsRotation(slots) {
		return nil
	}
	sb := cloneSuper(v.sb)
	id, err := newID()
	if err != nil {
		return err
	}
	took := false
	for _, s := range slots {
		if sb.Peers[s].BitmapID == 0 {
			sb.Peers[s].BitmapID = sb.Current
			took = true
		}
	}
	h := sb.History[:]
	if !took {
		h = pushFront(h, sb.Current)
	}
	sb.History = historyArray(h)
	old := sb.Current
	sb.Current = id
	if err := v.writeSuper(&sb); err != nil {
		return v.setFailed(err)
	}
	v.log.Info("new data generation: writing without a peer", "current", fmt.Sprintf("%016X", id), "previous", fmt.Sprintf("%016X", old))
	return nil
}

func (v *Volume) needsRotation(slots []int) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.sb.Current == 0 || v.sb.Flags&meta.FlagJustCreated != 0 {
		return false
	}
	for _, s := range slots {
		if v.sb.Peers[s].BitmapID == 0 {
			return true
		}
	}
	return false
}

// AdoptFirstGeneration gives a just-created replica the first generation
// both replicas of a just-created pair agreed on at their handshake, so a
// write made later without the peer rotates from it and is resynced by
// bitmap, not by a full sync. It does nothing when the replica has a
// generation already (its first write made one first: the Primary then
// sends it and the peer adopts that one).
func (v *Volume) AdoptFirstGeneration(current uint64) error {
	v.ioMu.Lock() // as newGeneration: a first write cannot make its own meanwhile
	defer v.ioMu.Unlock()
	if !v.justCreated.Load() || current == 0 {
		return nil
	}
	if v.isClosed() {
		return fmt.Errorf("volume %s: %w", v.spec.Volume, ErrClosed)
	}
	sb := cloneSuper(v.sb)
	sb.Current = current
	sb.Flags = (sb.Flags &^ meta.FlagJustCreated) | meta.FlagConsistent | meta.FlagWasUpToDate
	if err := v.writeSuper(&sb); err != nil {
		return v.setFailed(err)
	}
	v.justCreated.Store(false)
	v.log.Info("first data generation, agreed with the peer", "current", fmt.Sprintf("%016X", current))
	return nil
}

// AdoptCurrent makes a Secondary take the Primary's first generation
// (both were just created and in sync; the Primary's first write made it).
func (v *Volume) AdoptCurrent(current uint64) error {
	err := v.updateSuper(func(sb *meta.Superblock) {
		sb.Current = current
		sb.Flags = (sb.Flags &^ meta.FlagJustCreated) | meta.FlagConsistent | meta.FlagWasUpToDate
	})
	if err == nil {
		v.justCreated.Store(false) // promoted later, it must not make another first generation
	}
	return err
}

// StartSyncTarget records that a resync into this replica begins: the
// data is inconsistent until FinishSyncTarget. The replica takes the
// source's current right away, once the bitmap for the source (every bit
// for a full sync, the union of both bitmaps otherwise) is durable: an
// interrupted resync then resumes from the bitmap (equal generations, this
// side Inconsistent). A bitmap resync once kept its own current: when the
// failover terms had made it the target although the generations made it
// the source, the next handshake after a crash picked it, Inconsistent, as
// the source again, and refused (internal/torture, long mode, seed
// 643753404775606: the pair stayed StandAlone).
func (v *Volume) StartSyncTarget(slot int, full bool, sourceCurrent uint64) error {
	if full {
		v.SetAll(slot)
	}
	if err := v.PersistBitmaps(); err != nil {
		return err
	}
	return v.updateSuper(func(sb *meta.Superblock) {
		sb.Flags &^= meta.FlagConsistent | meta.FlagJustCreated
		if sourceCurrent != 0 && sb.Current != sourceCurrent {
			sb.History = historyArray(pushFront(sb.History[:], sb.Current))
			sb.Current = sourceCurrent
		}
		sb.Peers[slot].BitmapID = 0
	})
}

// FinishSyncTarget records a completed resync: the data is the source's
// generation, consistent and up to date, and in sync with the source.
func (v *Volume) FinishSyncTarget(slot int, sourceCurrent uint64) error {
	if err := v.PersistBitmaps(); err != nil {
		return err
	}
	v.justCreated.Store(false)
	return v.updateSuper(func(sb *meta.Superblock) {
		_, t := protocol.FinishSync(protocol.Gens{Current: sourceCurrent}, v.gensOf(sb, slot))
		sb.Current = t.Current
		sb.History = historyArray(t.History)
		sb.Peers[slot].BitmapID = 0
		sb.Flags = (sb.Flags | meta.FlagConsistent | meta.FlagWasUpToDate) &^ (meta.FlagJustCreated | meta.FlagCrashedPrimary)
	})
}

// FinishSyncSource records that the peer of slot now holds this replica's
// generation: the bitmap id goes to the history.
func (v *Volume) FinishSyncSource(slot int) error {
	if err := v.PersistBitmaps(); err != nil {
		return err
	}
	return v.updateSuper(func(sb *meta.Superblock) {
		s, _ := protocol.FinishSync(v.gensOf(sb, slot), protocol.Gens{})
		sb.History = historyArray(s.History)
		sb.Peers[slot].BitmapID = 0
		sb.Flags &^= meta.FlagCrashedPrimary
	})
}

// InSync records that the peer of slot and this replica hold the same
// generation with nothing to resync (the no-sync handshake outcome):
// crashed-primary no longer matters for it.
func (v *Volume) InSync(slot int) error {
	return v.updateSuper(func(sb *meta.Superblock) {
		sb.Peers[slot].BitmapID = 0
		if v.bmsCount(slot) == 0 {
			sb.Flags &^= meta.FlagCrashedPrimary
		}
	})
}

func (v *Volume) bmsCount(slot int) uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.bms[slot].Count()
}

// Invalidate makes this replica the target of a full resync from its
// peers: the data is marked inconsistent and every bit is set.
func (v *Volume) Invalidate() error {
	v.mu.Lock()
	for _, bm := range v.bms {
		bm.SetRange(0, bm.Size())
	}
	v.mu.Unlock()
	if err := v.PersistBitmaps(); err != nil {
		return err
	}
	return v.updateSuper(func(sb *meta.Superblock) {
		sb.Flags &^= meta.FlagConsistent | meta.FlagWasUpToDate
	})
}

// updateSuper applies fn to a copy of the superblock and writes it.
func (v *Volume) updateSuper(fn func(sb *meta.Superblock)) error {
	v.ioMu.Lock()
	defer v.ioMu.Unlock()
	if v.isClosed() {
		return fmt.Errorf("volume %s: %w", v.spec.Volume, ErrClosed)
	}
	sb := cloneSuper(v.sb)
	fn(&sb)
	if err := v.writeSuper(&sb); err != nil {
		return v.setFailed(err)
	}
	return nil
}

func (v *Volume) isClosed() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.closed
}

// Data is the data disk (a Secondary applies its peer's writes to it
// directly: the Primary's activity log and bitmap cover them).
func (v *Volume) Data() Disk { return v.spec.Data }

// Current is the data generation.
func (v *Volume) Current() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.sb.Current
}

// Failed is the sticky metadata error, nil while healthy.
func (v *Volume) Failed() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.failed
}
