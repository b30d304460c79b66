package volume

import (
	"errors"
	"fmt"

	"github.com/blkrep/blkrep/activelog"
	"github.com/blkrep/blkrep/nbd"
)

// ErrUnsupported is returned for an operation the data disk cannot do.
var ErrUnsupported = errors.New("volume: operation not supported by the disk")

// Size is the exported size.
func (v *Volume) Size() int64 { return v.spec.SizeBytes }

// ReadAt reads from the data disk.
func (v *Volume) ReadAt(p []byte, off int64) (int, error) { return v.spec.Data.ReadAt(p, off) }

// ReadAtNoWait reads only what the page cache holds (see nbd.NoWaitReader).
func (v *Volume) ReadAtNoWait(p []byte, off int64) (int, error) {
	if nw, ok := v.spec.Data.(nbd.NoWaitReader); ok {
		return nw.ReadAtNoWait(p, off)
	}
	return 0, ErrUnsupported
}

// WriteAt claims the activity-log extents (waiting for a transaction if
// one is cold), marks unreachable peers' bitmaps, then writes.
func (v *Volume) WriteAt(p []byte, off int64) (int, error) {
	return v.write(p, off, v.spec.Data.WriteAt)
}

// write writes p at off with wr. A write touching more extents than one
// ticket may claim (an NBD write may be 32 MiB; with a small al_extents
// even two extents can be too many) is split at extent boundaries.
func (v *Volume) write(p []byte, off int64, wr func([]byte, int64) (int, error)) (int, error) {
	done := 0
	err := v.chunks(off, int64(len(p)), func(o, m int64) error {
		v.cp(PointBeforeData)
		n, err := wr(p[o-off:o-off+m], o)
		v.cp(PointAfterData)
		done += n
		return err
	})
	return done, err
}

// TryWriteAt is WriteAt when every extent is hot, and reports ok = false
// without doing anything when the write would wait for the activity log
// (nbd then hands it to a worker instead of stalling the connection).
func (v *Volume) TryWriteAt(p []byte, off int64) (int, bool, error) {
	t, err := v.tryBegin(off, int64(len(p)))
	if err != nil {
		return 0, true, err
	}
	if t == nil {
		return 0, false, nil
	}
	n, err := v.spec.Data.WriteAt(p, off)
	v.endWrite(t, off, int64(len(p)), err)
	return n, true, err
}

// WriteAtFUA is WriteAt made durable before it returns.
func (v *Volume) WriteAtFUA(p []byte, off int64) (int, error) {
	return v.write(p, off, v.spec.Data.WriteAtFUA)
}

// endWrite ends a write. A failed write may have landed in part, or (once
// peers connect) reached a peer and not this disk: its blocks are marked
// out of sync for every slot before the ticket is released, so the bits
// are persisted before its extents can go cold. A Settled error marks
// nothing: its write's whereabouts are recorded already.
func (v *Volume) endWrite(t *activelog.Ticket, off, n int64, err error) {
	var settled settledError
	if err != nil && n > 0 && !errors.As(err, &settled) {
		v.mu.Lock()
		for _, bm := range v.bms {
			bm.SetRange(off, n)
		}
		v.mu.Unlock()
	}
	v.end(t)
}

// settledError is the error of a write whose data is where the
// replication layer recorded it: on this disk, on each peer that
// acknowledged it, and marked out of sync for each peer that did not. The
// error is about its acknowledgement only (a failover gate refused it).
type settledError struct{ error }

func (e settledError) Unwrap() error { return e.error }

// Settled wraps the error of a write whose outcome is fully recorded (see
// settledError), so that the volume does not mark its blocks out of sync
// for every peer as it does for a failed write. Marking them would be
// wrong on a link that stays connected: no resync would ever clear the
// bits (found by internal/torture, seed 1684: a primary demoted while
// writes waited in its failover gate, after a resync had cleared them).
func Settled(err error) error {
	if err == nil {
		return nil
	}
	return settledError{err}
}

// Flush makes every completed write durable.
func (v *Volume) Flush() error { return v.spec.Data.Flush() }

// chunks calls fn for pieces of [off, off+n) that each fit one
// activity-log ticket (TRIM and WRITE_ZEROES may cover gigabytes), each
// between begin and endWrite.
func (v *Volume) chunks(off, n int64, fn func(off, n int64) error) error {
	if err := v.checkRange(off, n); err != nil {
		return err
	}
	span := int64(v.al.MaxSpan()) // immutable after Open
	for n > 0 {
		end := (off>>activelog.ExtentShift + span) << activelog.ExtentShift
		m := min(n, end-off)
		t, err := v.begin(off, m)
		if err != nil {
			return err
		}
		err = fn(off, m)
		v.endWrite(t, off, m, err)
		if err != nil {
			return err
		}
		off, n = off+m, n-m
	}
	return nil
}

// Trim discards a range (it reads back as zeroes or as before).
func (v *Volume) Trim(off, n int64) error {
	tr, ok := v.spec.Data.(nbd.Trimmer)
	if !ok {
		return fmt.Errorf("%w: trim", ErrUnsupported)
	}
	return v.chunks(off, n, tr.Trim)
}

// WriteZeroes zeroes a range.
func (v *Volume) WriteZeroes(off, n int64, noHole, fast bool) error {
	z, ok := v.spec.Data.(nbd.Zeroer)
	if !ok {
		return fmt.Errorf("%w: write zeroes", ErrUnsupported)
	}
	return v.chunks(off, n, func(off, n int64) error { return z.WriteZeroes(off, n, noHole, fast) })
}

// Cache prefetches a range.
func (v *Volume) Cache(off, n int64) error {
	if c, ok := v.spec.Data.(nbd.Cacher); ok {
		return c.Cache(off, n)
	}
	return nil
}

// Extents reports allocation (base:allocation).
func (v *Volume) Extents(off, n int64, fn func(off, length int64, flags uint32) bool) error {
	if e, ok := v.spec.Data.(nbd.Extenter); ok {
		return e.Extents(off, n, fn)
	}
	fn(off, n, 0)
	return nil
}
