package crashdisk

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
)

// SectorSize is the unit a torn write is cut at.
const SectorSize = 512

// ErrInjected is returned by operations failed on purpose.
var ErrInjected = errors.New("crashdisk: injected failure")

// Disk is a crashable in-memory disk. Safe for concurrent use.
//
// Only the volatile image is kept, in chunks allocated when first written
// (a chunk never written reads as zeroes): the durable image is the
// volatile one with the pending writes undone (each remembers the bytes it
// replaced). Creating, syncing and crashing a disk cost what was written,
// not the size of the disk.
type Disk struct {
	mu       sync.Mutex
	size     int64
	chunks   [][]byte // the volatile image; nil: zeroes
	pending  []write  // since the last Sync, oldest first
	failSync bool
	writes   int
	failAt   int // fail the write with this 1-based number; 0: never
	dead     bool
}

// ErrPowerCut is returned by every write and sync after PowerCut until
// Restart.
var ErrPowerCut = errors.New("crashdisk: power is off")

type write struct {
	off  int64
	data []byte
	old  []byte // what the write replaced in the volatile image
	fua  bool   // durable on return: survives every crash whole
}

const chunkSize = 16 << 10

var zeroChunk [chunkSize]byte

// New returns a zeroed disk of size bytes.
func New(size int) *Disk {
	return &Disk{size: int64(size), chunks: make([][]byte, (size+chunkSize-1)/chunkSize)}
}

// read copies the volatile image at off into p (checked range).
func (d *Disk) read(p []byte, off int64) {
	for len(p) > 0 {
		c, o := d.chunks[off/chunkSize], off%chunkSize
		n := min(len(p), int(chunkSize-o))
		if c == nil {
			clear(p[:n])
		} else {
			copy(p[:n], c[o:])
		}
		p, off = p[n:], off+int64(n)
	}
}

// write copies p into the volatile image at off (checked range).
func (d *Disk) write(p []byte, off int64) {
	for len(p) > 0 {
		i, o := off/chunkSize, off%chunkSize
		n := min(len(p), int(chunkSize-o))
		if d.chunks[i] == nil && !bytes.Equal(p[:n], zeroChunk[:n]) {
			d.chunks[i] = make([]byte, chunkSize)
		}
		if c := d.chunks[i]; c != nil {
			copy(c[o:], p[:n])
		}
		p, off = p[n:], off+int64(n)
	}
}

// apply writes p at off into the volatile image and remembers it as
// pending. Call with d.mu held, after the checks.
func (d *Disk) apply(p []byte, off int64, fua bool) {
	old := make([]byte, len(p))
	d.read(old, off)
	d.write(p, off)
	d.pending = append(d.pending, write{off, append([]byte(nil), p...), old, fua})
}

func (d *Disk) check(off int64, n int) error {
	if off < 0 || off > d.size || int64(n) > d.size-off {
		return fmt.Errorf("crashdisk: [%d, +%d) outside the %d-byte disk", off, n, d.size)
	}
	return nil
}

// ReadAt reads the volatile image.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(off, len(p)); err != nil {
		return 0, err
	}
	d.read(p, off)
	return len(p), nil
}

// WriteAt writes to the volatile image and remembers the write until Sync.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) { return d.writeAt(p, off, false) }

// WriteAtFUA writes p and makes that write (only) durable before it
// returns, like a write with the FUA flag or RWF_DSYNC: a crash keeps it
// whole, and earlier unsynced writes it overlaps cannot land over it.
func (d *Disk) WriteAtFUA(p []byte, off int64) (int, error) { return d.writeAt(p, off, true) }

func (d *Disk) writeAt(p []byte, off int64, fua bool) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(off, len(p)); err != nil {
		return 0, err
	}
	if d.dead {
		return 0, ErrPowerCut
	}
	d.writes++
	if d.failAt != 0 && d.writes == d.failAt {
		return 0, ErrInjected
	}
	d.apply(p, off, fua)
	return len(p), nil
}

// Flush is Sync, under the name the store backends use.
func (d *Disk) Flush() error { return d.Sync() }

// Sync makes every write so far durable.
func (d *Disk) Sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dead {
		return ErrPowerCut
	}
	if d.failSync {
		d.failSync = false
		return ErrInjected
	}
	d.pending = nil // the volatile image is the durable one now
	return nil
}

// FailNextSync makes the next Sync fail without making anything durable.
func (d *Disk) FailNextSync() {
	d.mu.Lock()
	d.failSync = true
	d.mu.Unlock()
}

// FailWrite makes the nth write from now fail (n >= 1).
func (d *Disk) FailWrite(n int) {
	d.mu.Lock()
	d.failAt = d.writes + n
	d.mu.Unlock()
}

// Pending reports how many writes are not yet durable.
func (d *Disk) Pending() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pending)
}

// Crash cuts the power: the disk restarts from the durable image plus, for
// each unsynced write in order, all of it, none of it, or a torn prefix of
// whole sectors, as the seed decides.
func (d *Disk) Crash(seed uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.crash(seed)
}

// PowerCut is Crash for a disk still in use: the image becomes what
// survives the cut, and every later write or sync fails with ErrPowerCut
// (changing nothing) until Restart, so a program still running after the
// cut cannot add to the image. Reads keep working.
func (d *Disk) PowerCut(seed uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.crash(seed)
	d.dead = true
}

// Halt is what a killed process leaves: every later write or sync fails
// with ErrPowerCut until Restart, and nothing written is lost (the
// volatile image stays, as a page cache outlives a SIGKILLed process).
func (d *Disk) Halt() {
	d.mu.Lock()
	d.dead = true
	d.mu.Unlock()
}

// Restart powers the disk on again after PowerCut or Halt.
func (d *Disk) Restart() {
	d.mu.Lock()
	d.dead = false
	d.mu.Unlock()
}

func (d *Disk) crash(seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	// Back to the durable image: undo the pending writes, newest first.
	for i := len(d.pending) - 1; i >= 0; i-- {
		d.write(d.pending[i].old, d.pending[i].off)
	}
	for _, w := range d.pending {
		if w.fua {
			d.write(w.data, w.off)
			continue
		}
		switch r.IntN(3) {
		case 0: // lost
		case 1:
			d.write(w.data, w.off)
		default:
			sectors := (len(w.data) + SectorSize - 1) / SectorSize
			n := min(r.IntN(sectors+1)*SectorSize, len(w.data))
			d.write(w.data[:n], w.off)
		}
	}
	d.pending = nil
	d.failSync = false
	d.failAt = 0
}

// Bytes returns a copy of the volatile image.
func (d *Disk) Bytes() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := make([]byte, d.size)
	d.read(b, 0)
	return b
}
