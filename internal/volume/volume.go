package volume

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blkrep/blkrep/activelog"
	"github.com/blkrep/blkrep/bitmap"
	"github.com/blkrep/blkrep/meta"
	"github.com/blkrep/blkrep/nbd"
)

// Options tune Open.
type Options struct {
	Log *slog.Logger
	// Secondary opens the replica as Secondary: it serves no writes
	// through the gate, and replication (not the gate) decides which
	// peers' bitmaps a write marks. Without it the replica is Primary and
	// every write marks every configured peer's bitmap (standalone).
	Secondary bool
	// Replicated: a replication layer marks the peers' bitmaps (see
	// Chunks and Mark) even while Primary.
	Replicated bool
	// CrashPoint, when set, is called at the named points of the write
	// path and of metadata updates (see the Point constants). Tests use it
	// to cut the power there; it must not call back into the Volume.
	CrashPoint func(point string)
}

// Crash points, in the order a write into a cold extent meets them.
const (
	PointBeforePages   = "before-bitmap-pages"   // transaction prepared, nothing written
	PointBeforeRecord  = "before-al-record"      // evicted extents' pages durable
	PointAfterRecord   = "after-al-record"       // record durable, not yet committed
	PointBeforeData    = "before-data-write"     // extents hot, bits set, data not written
	PointAfterData     = "after-data-write"      // data written (not synced), ticket held
	PointBeforeGen     = "before-generation"     // first write: new generation not yet durable
	PointCloseBitmap   = "close-before-pages"    // clean shutdown, nothing written yet
	PointCloseRecord   = "close-before-marker"   // pages durable, clean marker not written
	PointCloseSuper    = "close-before-super"    // clean marker durable, superblock not updated
	PointOpenPersisted = "open-after-crash-bits" // recovery's bits durable, superblock not updated
)

// Volume is one replica's data behind its metadata: every write claims
// its activity-log extents before it is submitted, marks the bitmaps of
// the peers it cannot reach, and releases the extents when done. It
// implements nbd.Backend and the optional nbd interfaces.
type Volume struct {
	spec Spec
	md   Disk
	lay  meta.Layout
	log  *slog.Logger
	cp   func(string)

	mu     sync.Mutex
	cond   *sync.Cond // broadcast when tickets become ready or the volume fails
	al     *activelog.Log
	bms    []*bitmap.Bitmap
	track  []int // slots whose bitmap gets the bits of every write
	failed error // metadata could not be written: every write fails
	closed bool

	ioMu  sync.Mutex // one metadata writer at a time (pages, records, superblock)
	pager pager
	sb    *meta.Superblock
	info  meta.LoadInfo

	justCreated atomic.Bool // the first write must generate a data generation

	primary      bool // live role (under mu)
	primarySince time.Time

	kick chan struct{}
	stop chan struct{}
	done chan struct{}

	recovered                         Recovery
	pageWrites, alWrites, superWrites atomic.Uint64
}

// Recovery is what Open found about the previous run.
type Recovery struct {
	// Clean: the previous run shut down cleanly.
	Clean bool
	// CrashedPrimary: it crashed while serving writes; HotExtents were
	// marked dirty for every peer.
	CrashedPrimary bool
	HotExtents     []uint64
	// BadPages is the number of bitmap pages that failed their checksum
	// (their whole region is marked dirty).
	BadPages int
	// SuperblockCopyErr says why a superblock copy was not used.
	SuperblockCopyErr [2]string
}

var (
	_ nbd.Backend      = (*Volume)(nil)
	_ nbd.FUAWriter    = (*Volume)(nil)
	_ nbd.TryWriter    = (*Volume)(nil)
	_ nbd.NoWaitReader = (*Volume)(nil)
	_ nbd.Trimmer      = (*Volume)(nil)
	_ nbd.Zeroer       = (*Volume)(nil)
	_ nbd.Cacher       = (*Volume)(nil)
	_ nbd.Extenter     = (*Volume)(nil)
)

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// loadChecked loads the superblock and checks it against the spec. It
// writes nothing.
func loadChecked(s *Spec) (*meta.Superblock, meta.LoadInfo, meta.Layout, error) {
	d := s.metaDisk()
	sb, info, err := meta.Load(metaDev{d}, s.metaDeviceBytes(), s.External())
	where := s.MetaPath
	switch {
	case errors.Is(err, meta.ErrNoMetadata):
		return nil, info, meta.Layout{}, refuse("%s has no blkrep metadata; create it with `blkrep create-md %s`", where, s.Volume)
	case errors.Is(err, meta.ErrFutureVersion):
		return nil, info, meta.Layout{}, refuse("the metadata on %s was written by a newer blkrep (%v); run that version", where, err)
	case errors.Is(err, meta.ErrGeometryMismatch):
		return nil, info, meta.Layout{}, refuse("%v (was %s resized or meta_disk changed?)", err, where)
	case err != nil:
		return nil, info, meta.Layout{}, refuse("the metadata on %s is unreadable: %v; if it cannot be restored, "+
			"`blkrep create-md --force %s` recreates it (the peers' bitmaps are lost: a full resync follows)", where, err, s.Volume)
	}
	if p := newerCopy(info); p != "" {
		return nil, info, meta.Layout{}, refuse("the metadata on %s: %s; run that version", where, p)
	}
	l, probs := checkSuper(s, sb)
	if len(probs) > 0 {
		return nil, info, l, refuse("%s: %s; fix the configuration, or recreate the metadata with `blkrep create-md --force %s` (a full resync follows)",
			where, joinProblems(probs), s.Volume)
	}
	return sb, info, l, nil
}

// newerCopy describes a superblock copy of a newer format, "" if none. A
// newer blkrep wrote it, so the valid copy is older: using it would
// overwrite the newer one at the next update.
func newerCopy(info meta.LoadInfo) string {
	for i, e := range info.CopyErr {
		if errors.Is(e, meta.ErrFutureVersion) {
			return fmt.Sprintf("superblock copy %d was written by a newer blkrep (%v)", i, e)
		}
	}
	return ""
}

// checkSuper compares a loaded superblock with the spec and returns the
// layout it describes and every disagreement.
func checkSuper(s *Spec, sb *meta.Superblock) (meta.Layout, []string) {
	var probs []string
	if sb.SizeBytes != s.SizeBytes {
		probs = append(probs, fmt.Sprintf("the metadata is for a volume of %d bytes, the configuration says size = %d", sb.SizeBytes, s.SizeBytes))
	}
	if u := UUID(s.Cluster, s.Volume); sb.VolumeUUID != u {
		probs = append(probs, fmt.Sprintf("the metadata belongs to another volume (uuid %s; volume %q of cluster %q is %s)",
			FormatUUID(sb.VolumeUUID), s.Volume, s.Cluster, FormatUUID(u)))
	}
	if sb.Node != s.Node {
		probs = append(probs, fmt.Sprintf("the metadata belongs to node %q, not %q", sb.Node, s.Node))
	}
	if s.BytesPerBit != 0 && sb.BytesPerBit != s.BytesPerBit {
		probs = append(probs, fmt.Sprintf("the metadata has bytes_per_bit = %d, the configuration %d", sb.BytesPerBit, s.BytesPerBit))
	}
	if int(sb.ALExtents) != s.alExtents() {
		probs = append(probs, fmt.Sprintf("the metadata has al_extents = %d, the configuration %d", sb.ALExtents, s.alExtents()))
	}
	if s.PeerSlots != 0 && len(sb.Peers) != s.PeerSlots {
		probs = append(probs, fmt.Sprintf("the metadata has peer_slots = %d, the configuration %d", len(sb.Peers), s.PeerSlots))
	}
	l, err := layoutOf(sb)
	if err != nil {
		probs = append(probs, err.Error())
	} else if l.ExportedBytes < sb.SizeBytes {
		probs = append(probs, fmt.Sprintf("the metadata area overlaps the volume (%d bytes exportable, %d recorded)", l.ExportedBytes, sb.SizeBytes))
	}
	return l, probs
}

func joinProblems(p []string) string {
	out := p[0]
	for _, s := range p[1:] {
		out += "; " + s
	}
	return out
}

// Open loads and checks the metadata, recovers the activity log and
// starts the volume. After an unclean shutdown every hot extent is marked
// dirty in every peer slot's bitmap (and crashed-primary set when the
// replica was serving writes) before anything else happens. Bad metadata
// is refused with ErrRefused and nothing is written.
func Open(s Spec, o Options) (*Volume, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.CrashPoint == nil {
		o.CrashPoint = func(string) {}
	}
	sb, info, l, err := loadChecked(&s)
	if err != nil {
		return nil, err
	}
	v := &Volume{spec: s, md: s.metaDisk(), lay: l, log: o.Log, cp: o.CrashPoint, sb: sb, info: info,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	v.cond = sync.NewCond(&v.mu)
	v.pager = pager{d: v.md, lay: l}
	for i, e := range info.CopyErr {
		if e != nil {
			v.recovered.SuperblockCopyErr[i] = e.Error()
			v.log.Warn("superblock copy unusable: using the other one; the next superblock update rewrites it",
				"meta", s.MetaPath, "copy", i, "err", e)
		}
	}

	ring, err := readRing(v.md, l)
	if err != nil {
		return nil, refuse("%s: %v", s.MetaPath, err)
	}
	al, rinfo, err := activelog.Recover(ring, alConfig(sb, s.MaxUpdates))
	if err != nil {
		return nil, refuse("%s: the activity log cannot be recovered: %v; `blkrep create-md --force %s` recreates the metadata (a full resync follows)",
			s.MetaPath, err, s.Volume)
	}
	bms, bad, err := v.pager.loadBitmaps(sb.SizeBytes, sb.BytesPerBit, len(sb.Peers))
	if err != nil {
		return nil, refuse("%s: %v", s.MetaPath, err)
	}
	v.al, v.bms = al, bms
	v.recovered.Clean, v.recovered.BadPages = rinfo.Clean, bad
	v.recovered.HotExtents = rinfo.Hot

	// Peers to slots: a configured peer keeps its slot; a new one takes
	// the first unused slot.
	newSB := cloneSuper(sb)
	for _, p := range s.Peers {
		slot := slices.IndexFunc(newSB.Peers, func(ps meta.PeerSlot) bool { return ps.Node == p })
		if slot < 0 {
			slot = slices.IndexFunc(newSB.Peers, func(ps meta.PeerSlot) bool { return ps.Node == "" })
			if slot < 0 {
				return nil, refuse("%s: no free peer slot for node %q: all %d slots are taken (%s); recreate the metadata with more peer_slots",
					s.MetaPath, p, len(newSB.Peers), slotNames(newSB.Peers))
			}
			newSB.Peers[slot] = meta.PeerSlot{Node: p}
		}
		// Standalone: every write is a difference from this peer.
		// Replicated: the replication layer marks per write.
		if !o.Secondary && !o.Replicated {
			v.track = append(v.track, slot)
		}
	}

	if !rinfo.Clean {
		for _, e := range rinfo.Hot {
			off := int64(e) << activelog.ExtentShift
			if off >= sb.SizeBytes {
				continue
			}
			n := min(int64(activelog.ExtentSize), sb.SizeBytes-off)
			for _, bm := range bms {
				if _, err := bm.SetRange(off, n); err != nil {
					return nil, err
				}
			}
		}
		v.recovered.CrashedPrimary = sb.Flags&meta.FlagPrimary != 0
		v.log.Warn("previous run did not shut down cleanly: the activity log's hot extents are marked out of sync for every peer",
			"hot_extents", len(rinfo.Hot), "crashed_primary", v.recovered.CrashedPrimary)
	}
	if bad > 0 {
		v.log.Warn("bitmap pages failed their checksum: their regions are marked out of sync", "pages", bad)
	}
	// Make recovery's bits durable before anything may clear the record
	// of them (the next clean marker).
	if err := v.pager.persist(takeAll(v.bms, nil)); err != nil {
		return nil, fmt.Errorf("volume %s: %w", s.Volume, err)
	}
	v.cp(PointOpenPersisted)
	if v.recovered.CrashedPrimary {
		newSB.Flags |= meta.FlagCrashedPrimary
	}
	newSB.Flags &^= meta.FlagALClean
	if o.Secondary {
		newSB.Flags &^= meta.FlagPrimary
	} else {
		newSB.Flags |= meta.FlagPrimary
		v.primary, v.primarySince = true, time.Now()
	}
	if err := v.writeSuper(&newSB); err != nil {
		return nil, fmt.Errorf("volume %s: %w", s.Volume, err)
	}
	v.justCreated.Store(newSB.Flags&meta.FlagJustCreated != 0)
	go v.logWriter()
	return v, nil
}

// Recovery says what Open found about the previous run.
func (v *Volume) Recovery() Recovery {
	r := v.recovered // immutable after Open
	r.HotExtents = slices.Clone(r.HotExtents)
	return r
}

func slotNames(ps []meta.PeerSlot) string {
	var out string
	for i, p := range ps {
		if i > 0 {
			out += ", "
		}
		out += p.Node
	}
	return out
}

// cloneSuper returns a copy of sb that shares nothing with it, to edit
// and write while readers still use the original.
func cloneSuper(sb *meta.Superblock) meta.Superblock {
	c := *sb
	c.Peers = slices.Clone(sb.Peers)
	return c
}

// writeSuper persists sb as the new superblock. Call with ioMu held or
// before the volume is shared.
func (v *Volume) writeSuper(sb *meta.Superblock) error {
	if _, err := meta.Write(metaDev{v.md}, sb, &v.info, v.sb.Seq); err != nil {
		return err
	}
	v.superWrites.Add(1)
	v.mu.Lock()
	v.sb = sb
	v.mu.Unlock()
	return nil
}

// newGeneration gives a just-created volume its first data generation
// before its first write lands (DRBD does the same on the first write
// after creation or after losing the peer).
func (v *Volume) newGeneration() error {
	v.ioMu.Lock()
	defer v.ioMu.Unlock()
	if !v.justCreated.Load() {
		return nil
	}
	v.mu.Lock()
	closed := v.closed
	v.mu.Unlock()
	if closed {
		return fmt.Errorf("volume %s: %w", v.spec.Volume, ErrClosed)
	}
	v.cp(PointBeforeGen)
	sb := cloneSuper(v.sb)
	var b [8]byte
	for sb.Current == 0 {
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		sb.Current = binary.LittleEndian.Uint64(b[:]) &^ 1 // low bit is reserved for flags in DRBD; keep it clear
	}
	sb.Flags = (sb.Flags &^ meta.FlagJustCreated) | meta.FlagConsistent | meta.FlagWasUpToDate
	if err := v.writeSuper(&sb); err != nil {
		return err
	}
	v.justCreated.Store(false)
	v.log.Info("new data generation", "current", fmt.Sprintf("%016X", sb.Current))
	return nil
}

// begin claims the extents of [off, off+n) and marks the bitmaps of the
// peers that will not get the write. It waits for an activity-log
// transaction when an extent is cold.
func (v *Volume) begin(off, n int64) (*activelog.Ticket, error) {
	if v.justCreated.Load() {
		if err := v.newGeneration(); errors.Is(err, ErrClosed) {
			return nil, err
		} else if err != nil {
			return nil, v.setFailed(fmt.Errorf("writing the new data generation: %w", err))
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.usableLocked(); err != nil {
		return nil, err
	}
	t, err := v.al.Begin(off, n)
	if err != nil {
		return nil, err
	}
	for !t.Ready() {
		if v.al.NeedsTransaction() {
			v.wakeWriter()
		}
		v.cond.Wait()
		if err := v.usableLocked(); err != nil {
			if !t.Ready() {
				v.al.Release(t)
				return nil, err
			}
			break
		}
	}
	v.markLocked(off, n)
	return t, nil
}

// tryBegin is begin without waiting: nil when the write would wait.
func (v *Volume) tryBegin(off, n int64) (*activelog.Ticket, error) {
	if err := v.checkRange(off, n); err != nil {
		return nil, err
	}
	if v.justCreated.Load() {
		return nil, nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.usableLocked(); err != nil {
		return nil, err
	}
	t, err := v.al.TryBegin(off, n)
	if errors.Is(err, activelog.ErrSpan) {
		return nil, nil // WriteAt splits it
	}
	if t == nil || err != nil {
		return nil, err
	}
	v.markLocked(off, n)
	return t, nil
}

// ErrClosed is returned by writes after Close or Abandon.
var ErrClosed = errors.New("volume: closed")

// checkRange refuses a write outside the volume: with internal metadata it
// would land in the metadata area.
func (v *Volume) checkRange(off, n int64) error {
	if off < 0 || n < 0 || off > v.spec.SizeBytes-n {
		return fmt.Errorf("volume %s: [%d, +%d) is outside the %d-byte volume", v.spec.Volume, off, n, v.spec.SizeBytes)
	}
	return nil
}

// usableLocked says why a write may not start: the metadata failed or the
// volume is shut down (its log writer is gone: a write would wait forever).
func (v *Volume) usableLocked() error {
	switch {
	case v.failed != nil:
		return v.failed
	case v.closed:
		return fmt.Errorf("volume %s: %w", v.spec.Volume, ErrClosed)
	}
	return nil
}

func (v *Volume) markLocked(off, n int64) {
	if n == 0 {
		return
	}
	for _, s := range v.track {
		v.bms[s].SetRange(off, n)
	}
}

func (v *Volume) end(t *activelog.Ticket) {
	v.mu.Lock()
	v.al.Release(t)
	if v.al.NeedsTransaction() {
		v.wakeWriter()
	}
	v.mu.Unlock()
}

func (v *Volume) wakeWriter() {
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

func (v *Volume) setFailed(err error) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.failLocked(err)
}

func (v *Volume) failLocked(err error) error {
	if v.failed == nil {
		v.failed = fmt.Errorf("volume %s: metadata failed, writes refused: %w", v.spec.Volume, err)
		v.log.Error("METADATA WRITE FAILED: writes are refused (EIO) because they can no longer be tracked; check the disk and restart blkrepd",
			"meta", v.spec.MetaPath, "err", err)
		v.cond.Broadcast()
	}
	return v.failed
}

// logWriter writes activity-log transactions for waiting writers, one at
// a time, with the metadata I/O outside the lock.
func (v *Volume) logWriter() {
	defer close(v.done)
	for {
		select {
		case <-v.kick:
		case <-v.stop:
			return
		}
		for v.step() {
		}
	}
}

// step writes one transaction; false when there was nothing to do.
func (v *Volume) step() bool {
	v.ioMu.Lock()
	defer v.ioMu.Unlock()
	v.mu.Lock()
	if v.failed != nil || v.closed {
		v.mu.Unlock()
		return false
	}
	tx, err := v.al.Prepare()
	if tx == nil {
		v.mu.Unlock()
		if err != nil && !errors.Is(err, activelog.ErrNoVictim) && !errors.Is(err, activelog.ErrPending) {
			v.setFailed(err)
		}
		return false
	}
	var ws []pageWrite
	for _, e := range tx.Evicted {
		ws = takeRange(v.bms, int64(e)<<activelog.ExtentShift, activelog.ExtentSize, ws)
	}
	v.mu.Unlock()

	err = v.writeTransaction(tx, ws)

	v.mu.Lock()
	defer v.mu.Unlock()
	if err == nil {
		_, err = v.al.Commit(tx)
	} else {
		v.al.Abort(tx)
		redirty(v.bms, ws)
	}
	if err != nil {
		v.failLocked(err)
		return false
	}
	v.cond.Broadcast()
	return true
}

// writeTransaction makes the pages, then the record, durable: a record
// must never be on disk before the bitmap pages of the extents it evicts.
func (v *Volume) writeTransaction(tx *activelog.Transaction, ws []pageWrite) error {
	v.cp(PointBeforePages)
	if len(tx.Evicted) > 0 {
		// The writes into the extents going cold completed, but may sit
		// in a volatile cache: once the record is durable a crash no
		// longer resyncs those extents, so their data must be durable
		// first (a connected peer holds it).
		if err := v.spec.Data.Flush(); err != nil {
			return fmt.Errorf("flushing the data of the extents going cold: %w", err)
		}
	}
	if err := v.pager.persist(ws); err != nil {
		return err
	}
	v.pageWrites.Add(uint64(len(ws)))
	v.cp(PointBeforeRecord)
	if _, err := v.md.WriteAtFUA(tx.Record, v.lay.ALOffset+tx.Offset()); err != nil {
		return fmt.Errorf("writing activity-log record %d: %w", tx.Seq, err)
	}
	v.alWrites.Add(1)
	v.cp(PointAfterRecord)
	return nil
}

// Close shuts down cleanly: it persists every dirty bitmap page, writes
// the activity log's clean marker and records al-clean in the superblock,
// so the next start resyncs nothing for the hot extents. Writes must have
// stopped (the NBD server drained). On error the metadata stays as after
// a crash, which is safe: the next start marks the hot extents dirty.
func (v *Volume) Close() error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed = true
	failed := v.failed
	v.cond.Broadcast() // writers waiting for a ticket give up
	v.mu.Unlock()
	close(v.stop)
	<-v.done
	if failed != nil {
		return failed
	}
	v.ioMu.Lock()
	defer v.ioMu.Unlock()
	v.cp(PointCloseBitmap)
	v.mu.Lock()
	// An unused slot's bits only come from crash recovery; no peer will
	// ever resync against them (a peer given the slot later starts with a
	// full sync), so a clean shutdown forgets them.
	for i, p := range v.sb.Peers {
		if p.Node == "" && v.bms[i].Count() > 0 {
			v.bms[i].ClearRange(0, v.bms[i].Size())
		}
	}
	ws := takeAll(v.bms, nil)
	tx, err := v.al.MarkClean()
	v.mu.Unlock()
	if err != nil {
		v.mu.Lock()
		redirty(v.bms, ws)
		v.mu.Unlock()
		return fmt.Errorf("volume %s: activity log not clean at shutdown: %w", v.spec.Volume, err)
	}
	if err := v.pager.persist(ws); err != nil {
		return fmt.Errorf("volume %s: %w", v.spec.Volume, err)
	}
	v.pageWrites.Add(uint64(len(ws)))
	v.cp(PointCloseRecord)
	// The clean marker says no hot extent needs a resync: every completed
	// write must be durable before it is.
	if err := v.spec.Data.Flush(); err != nil {
		return fmt.Errorf("volume %s: flushing the data before the clean marker: %w", v.spec.Volume, err)
	}
	if _, err := v.md.WriteAtFUA(tx.Record, v.lay.ALOffset+tx.Offset()); err != nil {
		return fmt.Errorf("volume %s: writing the clean marker: %w", v.spec.Volume, err)
	}
	v.alWrites.Add(1)
	v.mu.Lock()
	_, err = v.al.Commit(tx)
	v.mu.Unlock()
	if err != nil {
		return err
	}
	v.cp(PointCloseSuper)
	sb := cloneSuper(v.sb)
	sb.Flags = (sb.Flags | meta.FlagALClean) &^ meta.FlagPrimary
	if len(v.spec.Peers) == 0 {
		// Nobody to resync with: the crash is fully dealt with.
		sb.Flags &^= meta.FlagCrashedPrimary
	}
	if err := v.writeSuper(&sb); err != nil {
		return fmt.Errorf("volume %s: %w", v.spec.Volume, err)
	}
	return nil
}

// Abandon stops the volume without the clean-shutdown steps, as a crash
// would (tests).
func (v *Volume) Abandon() {
	v.mu.Lock()
	if !v.closed {
		v.closed = true
		close(v.stop)
		v.cond.Broadcast() // writers waiting for a ticket give up
	}
	v.mu.Unlock()
	<-v.done
}
