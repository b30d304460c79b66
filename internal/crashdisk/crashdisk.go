package crashdisk

import (
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
type Disk struct {
	mu       sync.Mutex
	durable  []byte
	volatile []byte
	pending  []write
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
	fua  bool // durable on return: survives every crash whole
}

// New returns a zeroed disk of size bytes.
func New(size int) *Disk {
	return &Disk{durable: make([]byte, size), volatile: make([]byte, size)}
}

func (d *Disk) check(off int64, n int) error {
	if off < 0 || off > int64(len(d.volatile)) || int64(n) > int64(len(d.volatile))-off {
		return fmt.Errorf("crashdisk: [%d, +%d) outside the %d-byte disk", off, n, len(d.volatile))
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
	return copy(p, d.volatile[off:]), nil
}

// WriteAt writes to the volatile image and remembers the write until Sync.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
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
	copy(d.volatile[off:], p)
	d.pending = append(d.pending, write{off, append([]byte(nil), p...), false})
	return len(p), nil
}

// WriteAtFUA writes p and makes that write (only) durable before it
// returns, like a write with the FUA flag or RWF_DSYNC: a crash keeps it
// whole, and earlier unsynced writes it overlaps cannot land over it.
func (d *Disk) WriteAtFUA(p []byte, off int64) (int, error) {
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
	copy(d.volatile[off:], p)
	d.pending = append(d.pending, write{off, append([]byte(nil), p...), true})
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
	copy(d.durable, d.volatile)
	d.pending = nil
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

// Restart powers the disk on again after PowerCut.
func (d *Disk) Restart() {
	d.mu.Lock()
	d.dead = false
	d.mu.Unlock()
}

func (d *Disk) crash(seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	img := append([]byte(nil), d.durable...)
	for _, w := range d.pending {
		if w.fua {
			copy(img[w.off:], w.data)
			continue
		}
		switch r.IntN(3) {
		case 0: // lost
		case 1:
			copy(img[w.off:], w.data)
		default:
			sectors := (len(w.data) + SectorSize - 1) / SectorSize
			n := min(r.IntN(sectors+1)*SectorSize, len(w.data))
			copy(img[w.off:], w.data[:n])
		}
	}
	d.durable = img
	d.volatile = append([]byte(nil), img...)
	d.pending = nil
	d.failSync = false
	d.failAt = 0
}

// Bytes returns a copy of the volatile image.
func (d *Disk) Bytes() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.volatile...)
}
