package volume

// Crash-point tests. The invariant (issue text): for every crash point and
// many seeds, after recovery every block that may differ from what a peer
// holds is dirty in the bitmap or inside a hot extent (which recovery
// marks dirty for every slot). The seed is printed on failure and replays
// the case.
//
// A schedule is (seed, point, occurrence): the seed generates the workload
// and every crash outcome, and the power is cut at the occurrence-th time
// the volume reaches the named crash point (TestCrashPoints), before the
// occurrence-th disk operation (TestCrashDiskOps), or the occurrence-th
// disk write or flush fails (TestMetadataWriteFailures). The seed also
// picks the setup:
//
//   - odd seeds configure peers that never connect (beta, or one in each
//     of the 4 slots when seed/2 is odd): every write the volume put to
//     the disk must be dirty in each of their slots, and so must every
//     block that holds anything (they hold zeroes);
//   - even seeds configure no peer, which models a connected, in-sync
//     peer: a completed write reached it, so every write in flight at the
//     crash or failed, and every block whose content differs from the last
//     completed write, must be dirty in every slot after recovery;
//   - seed/4 odd puts the metadata on a disk of its own.
//
// Every schedule also checks that Open succeeds after the crash, that a
// crash in the middle of recovery changes nothing (it cuts the power once
// more after recovery made its bits durable, for half of the seeds), that
// data acknowledged as durable (a FUA write, or a write before a flush)
// survives and no block holds anything it was never given, that a clean
// shutdown loses nothing and is reported clean, and that a crash while
// serving writes sets crashed-primary.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blkrep/blkrep/bitmap"
	"github.com/blkrep/blkrep/internal/crashdisk"
	"github.com/blkrep/blkrep/meta"
)

var (
	replaySeed  = flag.Uint64("volume.seed", 0, "crash tests: run only the schedule with this seed (see the replay line of a failure)")
	replayPoint = flag.String("volume.point", "", "crash tests: with -volume.seed, where the power is cut (a crash point name, disk-op, fail-write or fail-sync)")
	replayOcc   = flag.Int("volume.occurrence", 0, "crash tests: with -volume.seed, at which occurrence of the point")
)

// Crash schedules cut at these points of the disk wrapper, besides the
// named crash points.
const (
	pointDiskOp    = "disk-op"    // before the Nth disk write or flush
	pointFailWrite = "fail-write" // the Nth disk write fails
	pointFailSync  = "fail-sync"  // the Nth flush fails
)

// crashSize is the exported size of the crash tests' volume: 64 extents
// for an activity log of 4, so that extents go cold all the time, and two
// bitmap pages per slot (one covers 128 MiB), so that evicting an extent
// must pick the right page. The crashdisk only stores what is written.
const crashSize = 256 << 20

const sectorSize = crashdisk.SectorSize

// scheduleTimeout bounds one schedule: a hang (a writer stuck on a ticket,
// Abandon or Close waiting forever) panics with every goroutine's stack.
const scheduleTimeout = 60 * time.Second

type schedule struct {
	seed  uint64
	point string
	occ   int
}

func (sc schedule) String() string {
	return fmt.Sprintf("point %s occurrence %d seed %d", sc.point, sc.occ, sc.seed)
}

func (sc schedule) replay(test string) string {
	return fmt.Sprintf("go test ./internal/volume -run '^%s$' -volume.seed=%d -volume.point=%s -volume.occurrence=%d",
		test, sc.seed, sc.point, sc.occ)
}

// opCounter numbers the mutating operations of the crash tests' disks
// (data and external metadata together) and injects faults before them.
type opCounter struct {
	mu                  sync.Mutex
	nops, nwrite, nsync int
	// before is called (with mu held) before each write ('w') or flush
	// ('s') with the disk and the operation's 1-based numbers.
	before func(d *crashdisk.Disk, kind byte, nop, nwrite, nsync int)
	// onData is called (without mu) for each write into the data area
	// (p is nil for zeroes), and what it returns with the write's result.
	onData func(p []byte, off, n int64) func(error)
}

func (c *opCounter) counts() (nops, nwrite, nsync int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nops, c.nwrite, c.nsync
}

// setBefore installs fn and numbers the operations from 1 again.
func (c *opCounter) setBefore(fn func(d *crashdisk.Disk, kind byte, nop, nwrite, nsync int)) {
	c.mu.Lock()
	c.before = fn
	c.nops, c.nwrite, c.nsync = 0, 0, 0
	c.mu.Unlock()
}

// tdisk is a disk of the crash tests: a crashdisk with TRIM and
// WRITE_ZEROES (written as zeroes), whose mutating operations an
// opCounter sees; writes below dataEnd are data.
type tdisk struct {
	d       *crashdisk.Disk
	dataEnd int64
	ctr     *opCounter
}

func (w *tdisk) pre(kind byte) {
	c := w.ctr
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nops++
	if kind == 's' {
		c.nsync++
	} else {
		c.nwrite++
	}
	if c.before != nil {
		c.before(w.d, kind, c.nops, c.nwrite, c.nsync)
	}
}

func (w *tdisk) data(p []byte, off, n int64) func(error) {
	w.ctr.mu.Lock()
	fn := w.ctr.onData
	w.ctr.mu.Unlock()
	if fn != nil && off < w.dataEnd {
		return fn(p, off, n)
	}
	return func(error) {}
}

func (w *tdisk) ReadAt(p []byte, off int64) (int, error) { return w.d.ReadAt(p, off) }

func (w *tdisk) WriteAt(p []byte, off int64) (int, error) {
	w.pre('w')
	done := w.data(p, off, int64(len(p)))
	n, err := w.d.WriteAt(p, off)
	done(err)
	return n, err
}

func (w *tdisk) WriteAtFUA(p []byte, off int64) (int, error) {
	w.pre('w')
	done := w.data(p, off, int64(len(p)))
	n, err := w.d.WriteAtFUA(p, off)
	done(err)
	return n, err
}

func (w *tdisk) Flush() error {
	w.pre('s')
	return w.d.Flush()
}

func (w *tdisk) zero(off, n int64) error {
	w.pre('w')
	done := w.data(nil, off, n)
	_, err := w.d.WriteAt(zeroes[:n], off)
	done(err)
	return err
}

// zeroes is what tdisk writes for TRIM and WRITE_ZEROES (never written to).
var zeroes = make([]byte, 8<<20)

func (w *tdisk) Trim(off, n int64) error                           { return w.zero(off, n) }
func (w *tdisk) WriteZeroes(off, n int64, noHole, fast bool) error { return w.zero(off, n) }

// testDisks are a crash-test volume's disks.
type testDisks struct {
	data *crashdisk.Disk
	md   *crashdisk.Disk // external metadata; nil for internal
	ctr  *opCounter
}

func (d testDisks) all() []*crashdisk.Disk {
	if d.md == nil {
		return []*crashdisk.Disk{d.data}
	}
	return []*crashdisk.Disk{d.data, d.md}
}

// newCrashSpec is a crash-test volume on fresh crashdisks: internal
// metadata, or external on a disk of its own. It has 4 peer slots: with
// two bitmap pages each (for crashSize), persisting every page (recovery,
// Close) or those of two evicted extents takes the bulk path (one flush
// for 8 pages).
func newCrashSpec(t testing.TB, size int64, peers []string, external bool) (Spec, testDisks) {
	t.Helper()
	s := Spec{Cluster: "c", Volume: "r0", Node: "alpha", SizeBytes: size, Peers: peers,
		PeerSlots: 4, BytesPerBit: 4096, ALExtents: 4, MaxUpdates: 2, MetaPath: "crash-disk"}
	ds := testDisks{ctr: &opCounter{}}
	dev := size
	if external {
		l, err := meta.ComputeLayout(meta.Geometry{DeviceBytes: size, External: true, PeerSlots: s.PeerSlots,
			BytesPerBit: s.BytesPerBit, ALRecords: s.Geometry().ALRecords})
		if err != nil {
			t.Fatal(err)
		}
		ds.md = crashdisk.New(int(l.AreaBytes))
		s.Meta, s.MetaPath = &tdisk{d: ds.md, ctr: ds.ctr}, "crash-meta"
	} else {
		var err error
		if dev, err = meta.DeviceBytesFor(size, s.Geometry()); err != nil {
			t.Fatal(err)
		}
	}
	ds.data = crashdisk.New(int(dev))
	s.Data, s.DataBytes = &tdisk{d: ds.data, dataEnd: size, ctr: ds.ctr}, dev
	return s, ds
}

// crashSpecFor is newCrashSpec with internal metadata.
func crashSpecFor(t testing.TB, size int64, peers []string) (Spec, *crashdisk.Disk, *opCounter) {
	s, ds := newCrashSpec(t, size, peers, false)
	return s, ds.data, ds.ctr
}

// Sector contents: every sector a write puts down is (write id, sector
// number) then the id repeated, so that what a sector holds after a crash
// names the write it came from; zeroes are id 0.

func fillSectors(b []byte, id uint64, off int64) {
	var tail [sectorSize - 16]byte
	for i := 0; i < len(tail); i += 8 {
		binary.LittleEndian.PutUint64(tail[i:], id)
	}
	for i := 0; i < len(b); i += sectorSize {
		binary.LittleEndian.PutUint64(b[i:], id)
		binary.LittleEndian.PutUint64(b[i+8:], uint64(off+int64(i))/sectorSize)
		copy(b[i+16:i+sectorSize], tail[:])
	}
}

// decodeSector returns the id of the write a sector came from, or false
// for anything no write put there.
func decodeSector(b []byte, sector int64) (uint64, bool) {
	id := binary.LittleEndian.Uint64(b)
	if id == 0 {
		return 0, bytes.Count(b, []byte{0}) == len(b)
	}
	return id, binary.LittleEndian.Uint64(b[8:]) == uint64(sector) &&
		bytes.Equal(b[16:24], b[:8]) && bytes.Equal(b[24:], b[16:len(b)-8]) // every word from 16 on is the id
}

type opKind uint8

const (
	kWrite opKind = iota
	kFUA
	kTry
	kFlush
	kTrim
	kZero
)

var opNames = [...]string{"write", "fua-write", "try-write", "flush", "trim", "write-zeroes"}

type op struct {
	kind   opKind
	off, n int64
	id     uint64 // unique, non-zero
	client int

	// outcome, under harness.mu
	started, returned, completed, cutInFlight bool
	err                                       error
	flushMark                                 int // flush: completions before it started
	issues                                    int // disk writes issued (TRIM and WRITE_ZEROES: one per chunk)
}

func (o *op) String() string {
	if o.kind == kFlush {
		return fmt.Sprintf("op %d (flush)", o.id)
	}
	return fmt.Sprintf("op %d (%s [%d, +%d))", o.id, opNames[o.kind], o.off, o.n)
}

// val is what the op puts in each sector.
func (o *op) val() uint64 {
	if o.kind == kTrim || o.kind == kZero {
		return 0
	}
	return o.id
}

// genOps makes n operations. stripe, when not nil, confines every data
// operation to one stripe it returns (concurrent clients own disjoint
// stripes); zero operations are then left out.
func genOps(rng *rand.Rand, n int, size int64, firstID uint64, client int, stripe func(*rand.Rand) (int64, int64)) []*op {
	const ext = 4 << 20
	var recent []int64
	ops := make([]*op, 0, n)
	for i := range n {
		o := &op{id: firstID + uint64(i), client: client}
		k := rng.IntN(100)
		switch {
		case k < 50:
			o.kind = kWrite
		case k < 62:
			o.kind = kFUA
		case k < 72:
			o.kind = kTry
		case k < 82:
			o.kind = kFlush
		case k < 91:
			o.kind = kTrim
		default:
			o.kind = kZero
		}
		if stripe != nil && (o.kind == kTrim || o.kind == kZero) {
			o.kind = kWrite
		}
		if o.kind == kFlush {
			ops = append(ops, o)
			continue
		}
		if stripe != nil {
			lo, hi := stripe(rng)
			o.n = int64(1+rng.IntN(1<<rng.IntN(10))) * sectorSize
			o.n = min(o.n, hi-lo)
			o.off = lo + rng.Int64N((hi-lo-o.n)/sectorSize+1)*sectorSize
			ops = append(ops, o)
			continue
		}
		// Half the time an extent written lately, else any.
		var e int64
		if len(recent) > 0 && rng.IntN(2) == 0 {
			e = recent[rng.IntN(len(recent))]
		} else {
			e = rng.Int64N(size / ext)
		}
		recent = append(recent, e)
		if len(recent) > 3 {
			recent = recent[1:]
		}
		zero := o.kind == kTrim || o.kind == kZero
		big := zero && rng.IntN(6) == 0 || !zero && rng.IntN(30) == 0
		switch {
		case big:
			// Three extents, more than one ticket may claim: split.
			o.n = int64(8<<10+1+rng.IntN(1<<10)) * sectorSize // 4 MiB + up to 512 KiB
		case zero:
			o.n = int64(1+rng.IntN(1<<9)) * sectorSize // up to 256 KiB
		default:
			o.n = int64(1+rng.IntN(1<<rng.IntN(10))) * sectorSize // 512 B .. 256 KiB
		}
		o.off = e*ext + rng.Int64N(ext/sectorSize)*sectorSize
		switch {
		case big:
			o.off = max(0, (e+1)*ext-int64(1+rng.IntN(1<<10))*sectorSize)
		case rng.IntN(5) == 0: // straddle an extent boundary
			o.off = max(0, (e+1)*ext-o.n/2/sectorSize*sectorSize-sectorSize)
		}
		o.n = min(o.n, size-o.off)
		ops = append(ops, o)
	}
	return ops
}

type version struct {
	val uint64 // what the sector holds: a write's id, 0 for zeroes
	op  uint64 // the op that wrote it, 0 for the baseline
}

// secState is what one 512-byte sector may hold.
type secState struct {
	vers []version // the baseline, then every write begun, in order
	min  int       // vers[min] is durable: only vers[min:] may survive a crash
	peer uint64    // the last completed write: what a connected peer holds
}

// issue is one write the volume put to the data disk (it may then have
// failed): its blocks may differ from every peer.
type issue struct {
	op     uint64
	off, n int64
	prefix bool
	failed bool // the disk write returned an error
}

// harness runs one schedule.
type harness struct {
	sc         schedule
	peer       bool // mode "disconnected peers": Spec.Peers = ["beta", ...]
	concurrent bool
	external   bool // metadata on a disk of its own
	spec       Spec
	disks      testDisks
	rng        *rand.Rand

	mu           sync.Mutex
	main         bool // the main run (not the prefix)
	cut          bool
	injected     bool
	passed       map[string]int
	ops          map[uint64]*op
	issued       []issue
	secs         map[int64]*secState // by sector, for those the workload writes
	tracked      []int64             // the sectors with a secState, in order
	completedLog []*op
	durableUpTo  int
	cur          *op // sequential: the op in progress

	dryOps, dryWrites, drySyncs int    // disk operations of the main run
	evictions                   uint64 // extents the main run made cold

	crashedPrimarySeen bool // an Open reported a crashed primary
	cleanClosed        bool // the main run closed cleanly
	problems           []string
}

func (h *harness) failf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.problems) < 12 {
		h.problems = append(h.problems, fmt.Sprintf(format, args...))
	} else if len(h.problems) == 12 {
		h.problems = append(h.problems, "...")
	}
}

// cutLocked cuts the power (h.mu held).
func (h *harness) cutLocked() {
	if h.cut {
		return
	}
	h.cut = true
	h.powerCut(h.sc.seed ^ 0xc0ffee)
}

// powerCut, restart and crash act on every disk of the volume.
func (h *harness) powerCut(seed uint64) {
	for i, d := range h.disks.all() {
		d.PowerCut(seed + uint64(i))
	}
}

func (h *harness) restart() {
	for _, d := range h.disks.all() {
		d.Restart()
	}
}

func (h *harness) crash(seed uint64) {
	for i, d := range h.disks.all() {
		d.Crash(seed + uint64(i))
	}
}

// crashPoint is Options.CrashPoint of the main run.
func (h *harness) crashPoint(p string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.main {
		return
	}
	h.passed[p]++
	if p == h.sc.point && h.passed[p] == h.sc.occ {
		h.cutLocked()
	}
}

// beforeDiskOp injects the disk-level faults of the main run.
func (h *harness) beforeDiskOp(d *crashdisk.Disk, kind byte, nop, nwrite, nsync int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.sc.point == pointDiskOp && nop == h.sc.occ:
		h.cutLocked()
	case h.sc.point == pointFailWrite && kind == 'w' && nwrite == h.sc.occ:
		h.injected = true
		d.FailWrite(1)
	case h.sc.point == pointFailSync && kind == 's' && nsync == h.sc.occ:
		h.injected = true
		d.FailNextSync()
	}
}

// onData records a write the volume issued to the data area.
func (h *harness) onData(p []byte, off, n int64) func(error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var id uint64
	if p != nil {
		id = binary.LittleEndian.Uint64(p)
	} else if h.cur != nil {
		id = h.cur.id
	}
	if id == 0 || h.ops[id] == nil {
		h.problems = append(h.problems, fmt.Sprintf("data write [%d, +%d) the workload did not issue", off, n))
		return func(error) {}
	}
	i := len(h.issued)
	h.issued = append(h.issued, issue{op: id, off: off, n: n, prefix: !h.main})
	h.ops[id].issues++
	return func(err error) {
		h.mu.Lock()
		h.issued[i].failed = err != nil
		h.mu.Unlock()
	}
}

func (h *harness) track(ops []*op) {
	for _, o := range ops {
		h.ops[o.id] = o
		if o.kind == kFlush {
			continue
		}
		for s := o.off / sectorSize; s < (o.off+o.n)/sectorSize; s++ {
			if h.secs[s] == nil {
				h.secs[s] = &secState{}
				h.tracked = append(h.tracked, s)
			}
		}
	}
	slices.Sort(h.tracked)
}

// readTracked calls fn with the content of every tracked sector, in order.
func (h *harness) readTracked(fn func(s int64, b []byte)) error {
	buf := make([]byte, 1<<20)
	for i := 0; i < len(h.tracked); {
		j := i + 1 // [i, j): consecutive sectors, at most len(buf)
		for j < len(h.tracked) && h.tracked[j] == h.tracked[j-1]+1 && (j-i)*sectorSize < len(buf) {
			j++
		}
		b := buf[:(j-i)*sectorSize]
		if _, err := h.disks.data.ReadAt(b, h.tracked[i]*sectorSize); err != nil {
			return err
		}
		for k := i; k < j; k++ {
			fn(h.tracked[k], b[(k-i)*sectorSize:(k-i+1)*sectorSize])
		}
		i = j
	}
	return nil
}

// baseline records what every tracked sector holds before the main run.
func (h *harness) baseline() error {
	var bad error
	err := h.readTracked(func(s int64, b []byte) {
		v, ok := decodeSector(b, s)
		if !ok && bad == nil {
			bad = fmt.Errorf("sector %d holds garbage before the main run", s)
		}
		st := h.secs[s]
		st.vers, st.min, st.peer = []version{{val: v}}, 0, v
	})
	if err != nil {
		return err
	}
	return bad
}

func (h *harness) start(o *op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o.started = true
	if !h.concurrent {
		h.cur = o
	}
	if o.kind == kFlush {
		o.flushMark = len(h.completedLog)
		return
	}
	if !h.main {
		return
	}
	for s := o.off / sectorSize; s < (o.off+o.n)/sectorSize; s++ {
		st := h.secs[s]
		st.vers = append(st.vers, version{val: o.val(), op: o.id})
	}
}

// makeDurable: every sector of o holds o's version at least.
func (h *harness) makeDurable(o *op) {
	for s := o.off / sectorSize; s < (o.off+o.n)/sectorSize; s++ {
		st := h.secs[s]
		for i := len(st.vers) - 1; i >= st.min; i-- {
			if st.vers[i].op == o.id {
				st.min = i
				break
			}
		}
	}
}

func (h *harness) finish(o *op, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cur = nil
	o.returned, o.err = true, err
	if !h.main {
		return
	}
	// Sequentially, an op the power was cut under did not complete,
	// whatever it returned. Concurrently the order of the return and the
	// cut is unknown: a success counts as completed (its extents were hot
	// at the cut, so the content checks still hold).
	if h.cut && !h.concurrent {
		o.cutInFlight = true
		return
	}
	if err != nil {
		return
	}
	o.completed = true
	switch o.kind {
	case kFlush:
		if o.flushMark > h.durableUpTo {
			for _, c := range h.completedLog[h.durableUpTo:o.flushMark] {
				h.makeDurable(c)
			}
			h.durableUpTo = o.flushMark
		}
		return
	case kFUA:
		h.makeDurable(o)
	}
	h.completedLog = append(h.completedLog, o)
	for s := o.off / sectorSize; s < (o.off+o.n)/sectorSize; s++ {
		h.secs[s].peer = o.val()
	}
}

func (h *harness) isCut() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cut
}

func (h *harness) content(o *op) []byte {
	b := make([]byte, o.n)
	fillSectors(b, o.id, o.off)
	return b
}

// do runs one operation on v.
func (h *harness) do(v *Volume, o *op) error {
	h.start(o)
	var err error
	switch o.kind {
	case kWrite:
		_, err = v.WriteAt(h.content(o), o.off)
	case kFUA:
		_, err = v.WriteAtFUA(h.content(o), o.off)
	case kTry:
		var ok bool
		buf := h.content(o)
		if _, ok, err = v.TryWriteAt(buf, o.off); !ok {
			_, err = v.WriteAt(buf, o.off)
		}
	case kFlush:
		err = v.Flush()
	case kTrim:
		err = v.Trim(o.off, o.n)
	case kZero:
		err = v.WriteZeroes(o.off, o.n, false, false)
	}
	h.finish(o, err)
	return err
}

// runSequential issues ops one after the other and stops at the cut; after
// an injected failure it goes on, and once the metadata failed every write
// must fail.
func (h *harness) runSequential(v *Volume, ops []*op) {
	for _, o := range ops {
		failed := v.Status().Error != ""
		err := h.do(v, o)
		if h.isCut() {
			return
		}
		if err != nil && !h.injected {
			h.failf("%v failed with no fault injected: %v", o, err)
			return
		}
		if failed && o.kind != kFlush && err == nil {
			h.failf("%v succeeded after the metadata failed", o)
		}
	}
}

// runConcurrent runs every client's ops in its own goroutine.
func (h *harness) runConcurrent(v *Volume, clients [][]*op) {
	var wg sync.WaitGroup
	for _, ops := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, o := range ops {
				err := h.do(v, o)
				if err != nil || h.isCut() {
					if err != nil && !h.isCut() {
						h.failf("%v failed with no fault injected: %v", o, err)
					}
					return
				}
			}
		}()
	}
	wg.Wait()
}

// allSet reports whether every bit covering [off, off+n) is set.
func allSet(bm *bitmap.Bitmap, off, n int64) bool {
	bpb := int64(bm.BytesPerBit())
	for b := off / bpb; b <= (off+n-1)/bpb; b++ {
		if !bm.TestBit(uint64(b)) {
			return false
		}
	}
	return true
}

// bitmaps returns a copy of v's bitmaps and the slots of peers (-1 for a
// peer without one).
func bitmaps(v *Volume, peers []string) ([]*bitmap.Bitmap, []int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	bms := make([]*bitmap.Bitmap, len(v.bms))
	for i, bm := range v.bms {
		bms[i] = bm.Clone()
	}
	var slots []int
	for _, name := range peers {
		slots = append(slots, slices.IndexFunc(v.sb.Peers, func(p meta.PeerSlot) bool { return p.Node == name }))
	}
	return bms, slots
}

// dirtyIn reports whether [off, off+n) is dirty in every slot.
func dirtyIn(bms []*bitmap.Bitmap, slots []int, off, n int64) bool {
	for _, s := range slots {
		if !allSet(bms[s], off, n) {
			return false
		}
	}
	return true
}

// verify checks the invariant on a freshly recovered volume (no write
// since Open).
func (h *harness) verify(v *Volume, stage string) {
	bms, peerSlots := bitmaps(v, h.spec.Peers)
	h.mu.Lock()
	defer h.mu.Unlock()
	var probs []string
	add := func(format string, args ...any) {
		if len(probs) < 8 {
			probs = append(probs, fmt.Sprintf(format, args...))
		}
	}
	if slices.Contains(peerSlots, -1) {
		add("peers %v have slots %v", h.spec.Peers, peerSlots)
		return
	}
	every := make([]int, len(bms))
	for i := range every {
		every[i] = i
	}
	dirtyAll := func(off, n int64) bool { return dirtyIn(bms, every, off, n) }
	for _, is := range h.issued {
		o := h.ops[is.op]
		switch {
		case h.peer && !dirtyIn(bms, peerSlots, is.off, is.n):
			add("%s: %v wrote [%d, +%d) (completed %v, error %v) and it is not dirty for every disconnected peer",
				stage, o, is.off, is.n, o.completed, o.err)
		// Without a peer slot, a write is dirty in every slot when it
		// was in flight at the crash or failed. Of a chunked operation
		// only the failed chunks: the others completed, and the content
		// checks below cover them.
		case !h.peer && !h.cleanClosed && !is.prefix && (is.failed || !o.completed && o.issues == 1) && !dirtyAll(is.off, is.n):
			add("%s: %v wrote [%d, +%d) (write failed %v), did not complete (cut in flight %v, error %v) and is not dirty in every slot (hot extents %v)",
				stage, o, is.off, is.n, is.failed, o.cutInFlight, o.err, v.recovered.HotExtents)
		}
	}
	err := h.readTracked(func(s int64, b []byte) {
		st := h.secs[s]
		off := s * sectorSize
		got, ok := decodeSector(b, s)
		if !ok {
			add("%s: sector %d (offset %d) holds bytes no write put there", stage, s, off)
			return
		}
		if !slices.ContainsFunc(st.vers[st.min:], func(v version) bool { return v.val == got }) {
			add("%s: sector %d (offset %d) holds write %d; durable was %v, allowed %v", stage, s, off, got, st.vers[st.min], st.vers[st.min:])
		}
		if h.cleanClosed && got != st.peer {
			add("%s: sector %d (offset %d) holds write %d after a clean shutdown, the last completed write there is %d", stage, s, off, got, st.peer)
		}
		switch {
		case h.peer && got != 0 && !dirtyIn(bms, peerSlots, off, sectorSize):
			add("%s: sector %d (offset %d) holds write %d, the disconnected peers have zeroes, and it is not dirty for every one", stage, s, off, got)
		case !h.peer && !h.cleanClosed && got != st.peer && !dirtyAll(off, sectorSize):
			add("%s: sector %d (offset %d) holds write %d, the peer has write %d (the last completed), and it is not dirty in every slot (hot extents %v)",
				stage, s, off, got, st.peer, v.recovered.HotExtents)
		}
	})
	if err != nil {
		add("reading the data: %v", err)
	}
	h.problems = append(h.problems, probs...)
}

// checkCrashStatus: a volume recovered after a crash that happened while
// it served writes says so.
func (h *harness) checkStatus(v *Volume, stage string, crashedWithWrites bool) {
	st := v.Status()
	if v.recovered.CrashedPrimary {
		h.mu.Lock()
		h.crashedPrimarySeen = true
		h.mu.Unlock()
	}
	if crashedWithWrites && (st.LastShutdown != "crash" || !contains(st.Flags, "crashed-primary") || !v.recovered.CrashedPrimary) {
		h.failf("%s: after a crash while serving writes: last shutdown %q, flags %v, recovery %+v", stage, st.LastShutdown, st.Flags, v.recovered)
	}
	if st.Error != "" {
		h.failf("%s: a freshly opened volume reports an error: %s", stage, st.Error)
	}
}

// withTimeout runs fn and panics, with every goroutine's stack, if it
// does not return in time.
func withTimeout(what string, fn func()) {
	timer := time.AfterFunc(scheduleTimeout, func() {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		panic(fmt.Sprintf("%s: still running after %v (hung)\n%s", what, scheduleTimeout, buf[:n]))
	})
	defer timer.Stop()
	fn()
}

func (h *harness) issuedMain() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, is := range h.issued {
		if !is.prefix {
			return true
		}
	}
	return false
}

// runSchedule runs one schedule and returns what went wrong.
func runSchedule(t testing.TB, sc schedule, concurrent bool) (h *harness, err error) {
	h = &harness{sc: sc, concurrent: concurrent, passed: map[string]int{}, ops: map[uint64]*op{}, secs: map[int64]*secState{},
		rng: rand.New(rand.NewPCG(sc.seed, 0x7e57)), peer: sc.seed%2 == 1}
	var peers []string
	if h.peer {
		// One peer, or one in every slot: bits in every slot, so that
		// evicting two extents persists 8 pages (the bulk path).
		peers = []string{"beta"}
		if sc.seed/2%2 == 1 {
			peers = []string{"beta", "gamma", "delta", "epsilon"}
		}
	}
	h.external = sc.seed/4%2 == 1
	h.spec, h.disks = newCrashSpec(t, crashSize, peers, h.external)
	h.disks.ctr.onData = h.onData
	withTimeout(sc.String(), func() { err = h.run() })
	if err == nil && len(h.problems) > 0 {
		err = errors.New(strings.Join(h.problems, "\n\t"))
	}
	return h, err
}

func (h *harness) run() error {
	rng, spec := h.rng, h.spec
	if _, err := Create(&spec, false); err != nil {
		return err
	}
	// The workload: an optional prefix that ends in a crash (so the main
	// run starts with a recovery), then the main run.
	var prefix []*op
	if h.sc.point != PointBeforeGen && rng.IntN(3) > 0 {
		// Plain writes, so that the prefix crashes while serving writes.
		n := 2 + rng.IntN(4)
		for _, o := range genOps(rng, 3*n, crashSize, 1, 0, nil) {
			if (o.kind == kWrite || o.kind == kFUA || o.kind == kTry) && len(prefix) < n {
				o.kind = kWrite
				prefix = append(prefix, o)
			}
		}
	}
	var mainOps []*op
	var clients [][]*op
	if h.concurrent {
		const stripe = 256 << 10
		for c := range 4 {
			own := func(r *rand.Rand) (int64, int64) {
				i := r.Int64N(crashSize/stripe/4)*4 + int64(c)
				return i * stripe, (i + 1) * stripe
			}
			ops := genOps(rng, 10+rng.IntN(20), crashSize, uint64(1000*(c+1)), c, own)
			clients = append(clients, ops)
			mainOps = append(mainOps, ops...)
		}
	} else {
		mainOps = genOps(rng, 15+rng.IntN(40), crashSize, 1000, 0, nil)
	}
	h.track(prefix)
	h.track(mainOps)

	if len(prefix) > 0 {
		v, err := Open(spec, Options{})
		if err != nil {
			return fmt.Errorf("prefix open: %v", err)
		}
		for _, o := range prefix {
			if err := h.do(v, o); err != nil {
				return fmt.Errorf("prefix %v: %v", o, err)
			}
		}
		v.Abandon()
		h.crash(rng.Uint64())
	}
	if err := h.baseline(); err != nil {
		return err
	}

	// The main run.
	h.mu.Lock()
	h.main = true
	h.mu.Unlock()
	h.disks.ctr.setBefore(h.beforeDiskOp)
	v, err := Open(spec, Options{CrashPoint: h.crashPoint})
	var closeErr error
	if err != nil {
		h.mu.Lock()
		expected := h.cut || h.injected
		h.mu.Unlock()
		if !expected {
			return fmt.Errorf("open: %v", err)
		}
	} else {
		h.checkStatus(v, "main open", len(prefix) > 0)
		if h.concurrent {
			h.runConcurrent(v, clients)
		} else {
			h.runSequential(v, mainOps)
		}
		h.evictions = v.Status().ActivityLog.Evictions
		h.mu.Lock()
		killed := h.injected && !h.cut && rng.IntN(2) == 0
		h.mu.Unlock()
		if killed {
			// The process dies after the fault, without shutting down.
			closeErr = errors.New("abandoned")
		} else {
			closeErr = v.Close()
		}
		v.Abandon()
		h.mu.Lock()
		h.cleanClosed = closeErr == nil && !h.cut
		if closeErr == nil && h.cut {
			h.problems = append(h.problems, "Close succeeded after the power was cut")
		}
		if closeErr != nil && !h.cut && !h.injected {
			h.problems = append(h.problems, fmt.Sprintf("close: %v", closeErr))
		}
		h.mu.Unlock()
	}
	h.dryOps, h.dryWrites, h.drySyncs = h.disks.ctr.counts()
	h.disks.ctr.setBefore(nil)
	h.mu.Lock()
	h.main = false
	cut, injected := h.cut, h.injected
	markerDurable := h.passed[PointCloseSuper] > 0
	h.mu.Unlock()
	crashedWithWrites := h.issuedMain() && !markerDurable

	// Power comes back. A clean shutdown, or a process that stopped after
	// a failed disk, may also lose whatever was not synced.
	if cut {
		h.restart()
	} else if h.cleanClosed || !injected || rng.IntN(2) == 0 {
		h.crash(rng.Uint64())
	}

	// (c) Recovery itself crashes once, after making its bits durable.
	if rng.IntN(2) == 0 {
		cutOpen := false
		v, err := Open(spec, Options{CrashPoint: func(p string) {
			if p == PointOpenPersisted {
				cutOpen = true
				h.powerCut(h.sc.seed ^ 0xbeef)
			}
		}})
		if err == nil {
			v.Abandon()
			return fmt.Errorf("open succeeded with the power cut during it")
		}
		if !cutOpen {
			return fmt.Errorf("recovery open failed before its crash point: %v", err)
		}
		h.restart()
	}

	v, err = Open(spec, Options{})
	if err != nil {
		return fmt.Errorf("open after the crash (a crash must never make the metadata unopenable): %v", err)
	}
	h.checkStatus(v, "recovery", crashedWithWrites)
	if h.cleanClosed {
		if st := v.Status(); st.LastShutdown != "clean" {
			h.failf("reopen after a clean shutdown: last shutdown %q", st.LastShutdown)
		}
	}
	h.verify(v, "after recovery")

	// (e) A clean shutdown now, then a power cycle: clean, and only the
	// disconnected peer's bits stay.
	if err := v.Close(); err != nil {
		return fmt.Errorf("clean close after recovery: %v", err)
	}
	h.crash(rng.Uint64())
	v, err = Open(spec, Options{})
	if err != nil {
		return fmt.Errorf("open after a clean close: %v", err)
	}
	st := v.Status()
	if st.LastShutdown != "clean" || v.recovered.CrashedPrimary {
		h.failf("after a clean close: last shutdown %q, recovery %+v", st.LastShutdown, v.recovered)
	}
	h.mu.Lock()
	wantCP := h.peer && h.crashedPrimarySeen
	h.mu.Unlock()
	if got := contains(st.Flags, "crashed-primary"); got != wantCP {
		h.failf("after a clean close: crashed-primary is %v, want %v (flags %v)", got, wantCP, st.Flags)
	}
	if h.peer {
		bms, peerSlots := bitmaps(v, h.spec.Peers)
		h.mu.Lock()
		for _, is := range h.issued {
			if !dirtyIn(bms, peerSlots, is.off, is.n) {
				h.problems = append(h.problems, fmt.Sprintf("after a clean close: %v wrote [%d, +%d) and it is no longer dirty for the disconnected peer",
					h.ops[is.op], is.off, is.n))
				break
			}
		}
		h.mu.Unlock()
	}
	if err := v.Close(); err != nil {
		return fmt.Errorf("second clean close: %v", err)
	}
	return nil
}

// runSchedules runs every schedule (or only the one the -volume.* flags
// name) and reports failures with their replay command.
func runSchedules(t *testing.T, scheds []schedule, concurrent bool, points ...string) {
	if *replaySeed != 0 {
		if !slices.Contains(points, *replayPoint) {
			t.Skipf("-volume.point=%s is not one of this test's points %v", *replayPoint, points)
		}
		scheds = []schedule{{seed: *replaySeed, point: *replayPoint, occ: *replayOcc}}
	}
	start := time.Now()
	ran, cut, failures, chunked, external, evictions := 0, 0, 0, 0, 0, uint64(0)
	for _, sc := range scheds {
		h, err := runSchedule(t, sc, concurrent)
		ran++
		if h.cut || h.injected {
			cut++
		}
		for _, o := range h.ops {
			if o.issues > 1 {
				chunked++
			}
		}
		if h.external {
			external++
		}
		evictions += h.evictions
		if err != nil {
			note := ""
			if concurrent {
				note = " (concurrent clients: the replay may not take the same interleaving)"
			}
			t.Errorf("%s (peer %v): %v\nreplay%s: %s", sc, h.peer, err, note, sc.replay(t.Name()))
			if failures++; failures >= 3 {
				t.Fatalf("stopping after %d failing schedules", failures)
			}
		} else if *replaySeed != 0 {
			t.Logf("%s: passed (cut %v, injected %v, points passed %v)", sc, h.cut, h.injected, h.passed)
		}
	}
	t.Logf("%d schedules run (%d with external metadata), %d of them cut the power or failed a write; %d extents evicted, %d operations split; in %v",
		ran, external, cut, evictions, chunked, time.Since(start).Round(time.Millisecond))
	if *replaySeed == 0 && (cut < ran/2 || evictions < uint64(ran) || !concurrent && !testing.Short() && chunked == 0) {
		t.Errorf("the workload is too short to test anything: of %d schedules %d reached their fault, %d evictions, %d split operations",
			ran, cut, evictions, chunked)
	}
}

// seeds returns n seeds from first, or the short list in -short mode.
// The setup a seed picks is in its low three bits (see the top of this
// file): 8 consecutive seeds try each once.
func seeds(first uint64, n int, short ...uint64) []uint64 {
	if testing.Short() {
		return short
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = first + uint64(i)
	}
	return out
}

var writePathPoints = []string{PointBeforePages, PointBeforeRecord, PointAfterRecord, PointBeforeData, PointAfterData}
var oncePoints = []string{PointBeforeGen, PointOpenPersisted, PointCloseBitmap, PointCloseRecord, PointCloseSuper}

func TestCrashPoints(t *testing.T) {
	occs := []int{1, 2, 3, 5, 8, 13}
	if testing.Short() {
		occs = []int{1, 3, 8}
	}
	var scheds []schedule
	for _, seed := range seeds(1, 8, 1, 6, 7) {
		for _, p := range writePathPoints {
			for _, k := range occs {
				scheds = append(scheds, schedule{seed: seed, point: p, occ: k})
			}
		}
		for _, p := range oncePoints {
			scheds = append(scheds, schedule{seed: seed, point: p, occ: 1})
		}
	}
	runSchedules(t, scheds, false, append(slices.Clone(writePathPoints), oncePoints...)...)
}

// diskOpSchedules: per seed, a dry run counts the main run's disk
// operations of the kind, then the fault goes before n of them spread
// over the whole run (Open's recovery and Close included).
func diskOpSchedules(t *testing.T, point string, seeds []uint64, per int) []schedule {
	if *replaySeed != 0 {
		return nil // runSchedules runs the one named by the flags
	}
	var scheds []schedule
	for _, seed := range seeds {
		h, err := runSchedule(t, schedule{seed: seed, point: point}, false)
		if err != nil {
			t.Fatalf("dry run of seed %d: %v\nreplay: %s", seed, err, schedule{seed: seed, point: point}.replay(t.Name()))
		}
		total := h.mainOps(point)
		r := rand.New(rand.NewPCG(seed, 1))
		for i := range per {
			lo, hi := i*total/per, (i+1)*total/per
			if hi <= lo {
				continue
			}
			scheds = append(scheds, schedule{seed: seed, point: point, occ: 1 + lo + r.IntN(hi-lo)})
		}
	}
	return scheds
}

// mainOps is how many disk operations of the point's kind the main run
// (dry, no fault) made. The harness records them at the end of the run.
func (h *harness) mainOps(point string) int {
	switch point {
	case pointFailWrite:
		return h.dryWrites
	case pointFailSync:
		return h.drySyncs
	}
	return h.dryOps
}

func TestCrashDiskOps(t *testing.T) {
	per := 20
	if testing.Short() {
		per = 8
	}
	runSchedules(t, diskOpSchedules(t, pointDiskOp, seeds(96, 6, 99, 100), per), false, pointDiskOp)
}

func TestMetadataWriteFailures(t *testing.T) {
	per := 14
	if testing.Short() {
		per = 6
	}
	scheds := diskOpSchedules(t, pointFailWrite, seeds(200, 5, 203, 204), per)
	scheds = append(scheds, diskOpSchedules(t, pointFailSync, seeds(205, 5, 205, 206), per/2)...)
	runSchedules(t, scheds, false, pointFailWrite, pointFailSync)
}

func TestCrashPointsConcurrent(t *testing.T) {
	occs := []int{1, 4, 9}
	if testing.Short() {
		occs = []int{3}
	}
	var scheds []schedule
	for _, seed := range seeds(500, 6, 503) {
		for _, p := range writePathPoints {
			for _, k := range occs {
				scheds = append(scheds, schedule{seed: seed, point: p, occ: k})
			}
		}
		for _, p := range oncePoints[1:] {
			scheds = append(scheds, schedule{seed: seed, point: p, occ: 1})
		}
	}
	runSchedules(t, scheds, true, append(slices.Clone(writePathPoints), oncePoints...)...)
}

// TestWriteAfterShutdownFails: a write that arrives after Close or Abandon
// (a client racing the shutdown) fails instead of waiting forever for a
// log writer that is gone, and writes nothing.
func TestWriteAfterShutdownFails(t *testing.T) {
	for _, abandon := range []bool{false, true} {
		for _, fresh := range []bool{false, true} { // fresh: no write yet, no data generation
			s, d, _ := crashSpecFor(t, 32<<20, []string{"beta"})
			mustCreate(t, s)
			v, err := Open(s, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !fresh {
				if _, err := v.WriteAt(make([]byte, 4096), 0); err != nil {
					t.Fatal(err)
				}
			}
			if abandon {
				v.Abandon()
			} else if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			before := d.Bytes()
			for i, off := range []int64{0, 20 << 20} { // a hot extent, a cold one
				done := make(chan error, 1)
				go func() {
					_, err := v.WriteAt(make([]byte, 4096), off)
					done <- err
				}()
				select {
				case err := <-done:
					if err == nil {
						t.Errorf("abandon %v fresh %v: write %d after shutdown succeeded", abandon, fresh, i)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("abandon %v fresh %v: write %d after shutdown hangs", abandon, fresh, i)
				}
			}
			if _, ok, err := v.TryWriteAt(make([]byte, 4096), 0); ok && err == nil {
				t.Errorf("abandon %v fresh %v: TryWriteAt after shutdown succeeded", abandon, fresh)
			}
			if !bytes.Equal(before, d.Bytes()) {
				t.Errorf("abandon %v fresh %v: a write after shutdown changed the disk", abandon, fresh)
			}
		}
	}
}

// TestWriteOutsideVolumeRefused: a write past the exported size would land
// in the internal metadata; it fails and changes nothing.
func TestWriteOutsideVolumeRefused(t *testing.T) {
	const size = 32 << 20
	s, d, _ := crashSpecFor(t, size, nil)
	mustCreate(t, s)
	v, err := Open(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	before := d.Bytes()
	if _, err := v.WriteAt(make([]byte, 8192), size-4096); err == nil {
		t.Error("write across the end accepted")
	}
	if _, err := v.WriteAtFUA([]byte{1}, size); err == nil {
		t.Error("write past the end accepted")
	}
	if err := v.WriteZeroes(size-4096, 1<<20, false, false); err == nil {
		t.Error("zeroes past the end accepted")
	}
	if _, err := v.WriteAt([]byte{1}, -1); err == nil {
		t.Error("write at a negative offset accepted")
	}
	if !bytes.Equal(before, d.Bytes()) {
		t.Error("a refused write changed the disk")
	}
}

// TestCrashScheduleReplays: a sequential schedule is a function of its
// seed, so that the replay command of a failure runs the same case.
func TestCrashScheduleReplays(t *testing.T) {
	fingerprint := func(sc schedule) string {
		h, err := runSchedule(t, sc, false)
		if err != nil {
			t.Fatalf("%s: %v", sc, err)
		}
		sum := uint64(0)
		h.readTracked(func(s int64, b []byte) {
			id, _ := decodeSector(b, s)
			sum = sum*31 + id
		})
		return fmt.Sprintf("cut %v injected %v ops %d/%d/%d points %v issued %d image %x",
			h.cut, h.injected, h.dryOps, h.dryWrites, h.drySyncs, h.passed, len(h.issued), sum)
	}
	for _, sc := range []schedule{
		{seed: 3, point: PointAfterRecord, occ: 2},
		{seed: 6, point: PointBeforeData, occ: 5},
		{seed: 105, point: pointDiskOp, occ: 40},
		{seed: 7, point: pointFailWrite, occ: 12},
	} {
		if a, b := fingerprint(sc), fingerprint(sc); a != b {
			t.Errorf("%s ran differently twice:\n%s\n%s", sc, a, b)
		}
	}
}

// TestPersistIsDurable: once pager.persist returns, a crash cannot lose
// the pages it wrote: each loads with its bits, or (page and checksum
// torn apart) fully set. Both paths: a few pages written FUA one by one,
// or bulkPages and more written plainly then flushed.
func TestPersistIsDurable(t *testing.T) {
	peers := []string{"beta", "gamma", "delta", "epsilon"}
	for _, external := range []bool{false, true} {
		for _, npages := range []int{3, bulkPages} {
			for seed := range uint64(20) {
				s, ds := newCrashSpec(t, crashSize, peers, external)
				mustCreate(t, s)
				v, err := Open(s, Options{})
				if err != nil {
					t.Fatal(err)
				}
				r := rand.New(rand.NewPCG(seed, 9))
				v.ioMu.Lock()
				v.mu.Lock()
				want := make([]*bitmap.Bitmap, len(v.bms))
				for i := range npages { // slots x pages: 4 x 2
					slot, page := i%4, int64(i/4)
					off := page<<27 + r.Int64N(1<<27/4096)*4096 // a page covers 128 MiB
					v.bms[slot].SetRange(off, 4096*int64(1+r.IntN(100)))
				}
				for i, bm := range v.bms {
					want[i] = bm.Clone()
				}
				ws := takeAll(v.bms, nil)
				v.mu.Unlock()
				if len(ws) != npages {
					t.Fatalf("%d dirty pages, want %d", len(ws), npages)
				}
				err = v.pager.persist(ws)
				v.ioMu.Unlock()
				if err != nil {
					t.Fatal(err)
				}
				for i, d := range ds.all() {
					d.PowerCut(seed*2 + uint64(i))
					d.Restart()
				}
				p := pager{d: v.md, lay: v.lay}
				got, _, err := p.loadBitmaps(crashSize, 4096, len(want))
				if err != nil {
					t.Fatal(err)
				}
				for i := range want {
					for b, ok := want[i].NextSet(0); ok; b, ok = want[i].NextSet(b + 1) {
						if !got[i].TestBit(b) {
							t.Fatalf("external %v, %d pages, seed %d: slot %d bit %d persisted, then lost in a crash", external, npages, seed, i, b)
						}
					}
				}
				v.Abandon()
			}
		}
	}
}

// TestWriteSpanningManyExtents: a write may touch more extents than one
// activity-log ticket can claim (MaxSpan: 2 here, where an NBD write may
// be 32 MiB): it is split, not failed.
func TestWriteSpanningManyExtents(t *testing.T) {
	const size = 32 << 20
	s, d, _ := crashSpecFor(t, size, []string{"beta"})
	mustCreate(t, s)
	v, err := Open(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 9<<20) // from 3 MiB: extents 0 to 2
	fillSectors(p, 77, 3<<20)
	if n, err := v.WriteAt(p, 3<<20); err != nil || n != len(p) {
		t.Fatalf("WriteAt: %d, %v", n, err)
	}
	fillSectors(p, 78, 13<<20)
	if n, err := v.WriteAtFUA(p, 13<<20); err != nil || n != len(p) {
		t.Fatalf("WriteAtFUA: %d, %v", n, err)
	}
	fillSectors(p[:5<<20], 79, 23<<20)
	if n, ok, err := v.TryWriteAt(p[:5<<20], 23<<20); err != nil || ok && n != 5<<20 {
		t.Fatalf("TryWriteAt: %d %v %v", n, ok, err)
	} else if !ok {
		if _, err := v.WriteAt(p[:5<<20], 23<<20); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, sectorSize)
	for _, w := range []struct {
		id       uint64
		off, end int64
	}{{77, 3 << 20, 12 << 20}, {78, 13 << 20, 22 << 20}, {79, 23 << 20, 28 << 20}} {
		for off := w.off; off < w.end; off += sectorSize {
			d.ReadAt(got, off)
			if id, ok := decodeSector(got, off/sectorSize); !ok || id != w.id {
				t.Fatalf("sector at %d holds %d (%v), want write %d", off, id, ok, w.id)
			}
		}
	}
	bms, slots := bitmaps(v, s.Peers)
	for _, r := range [][2]int64{{3 << 20, 9 << 20}, {13 << 20, 9 << 20}, {23 << 20, 5 << 20}} {
		if !dirtyIn(bms, slots, r[0], r[1]) {
			t.Errorf("[%d, +%d) not dirty for beta", r[0], r[1])
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSectorContents: the crash tests tell which write a sector came
// from, and notice bytes no write put there.
func TestSectorContents(t *testing.T) {
	b := make([]byte, 3*sectorSize)
	fillSectors(b, 42, 1024)
	for i := range 3 {
		if id, ok := decodeSector(b[i*sectorSize:(i+1)*sectorSize], int64(2+i)); !ok || id != 42 {
			t.Fatalf("sector %d: %d %v", i, id, ok)
		}
	}
	if _, ok := decodeSector(b[:sectorSize], 3); ok {
		t.Error("a sector at the wrong place accepted")
	}
	for _, at := range []int{0, 9, 20, 300, sectorSize - 1} {
		c := bytes.Clone(b[:sectorSize])
		c[at] ^= 1
		if id, ok := decodeSector(c, 2); ok {
			t.Errorf("byte %d flipped: accepted as write %d", at, id)
		}
	}
	if id, ok := decodeSector(make([]byte, sectorSize), 7); !ok || id != 0 {
		t.Error("zeroes not recognised")
	}
}
