package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/blkrep/blkrep/nbd"
)

// ErrFailed is returned by writes and flushes after the store lost
// durability (a failed fdatasync or write). It maps to EIO on the wire.
var ErrFailed = errors.New("store: backing store failed, refusing writes (a previous sync or write failed)")

// ErrSizeMismatch is returned by Open when the existing file's size differs
// from the volume size, or a block device is smaller.
var ErrSizeMismatch = errors.New("store: size mismatch")

// ErrInUse is returned by Open with Lock when another process holds the
// disk (another blkrepd, or blkrep create-md).
var ErrInUse = errors.New("store: disk in use")

// Options for Open.
type Options struct {
	// Create makes a missing file, sparse, of the requested size.
	Create bool
	// OnFail is called once, from the failing goroutine, when the store
	// becomes failed.
	OnFail func(err error)
	// AtLeast accepts a regular file larger than the size asked for and
	// uses it whole (internal metadata lives at its end).
	AtLeast bool
	// Lock takes an exclusive advisory lock (flock) on the disk, held
	// until Close; Open fails with ErrInUse if another process has it.
	Lock bool
}

// File is a backing store on a regular file or a block device.
type File struct {
	f       *os.File
	fd      int
	size    int64
	isBlock bool
	onFail  func(error)

	failed   atomic.Pointer[error]
	failOnce sync.Once

	// flush coalescing: a Flush needs an fdatasync that started after it.
	fmu      sync.Mutex
	fcond    *sync.Cond
	fRunning bool
	fStarted uint64
	fDone    uint64
	fWaiters int // flushes waiting on a running fdatasync (tests observe it)

	wmu sync.Mutex // serialises plain pwrites (see write)

	// fdatasync is unix.Fdatasync; tests replace it to inject failures.
	fdatasync func(fd int) error

	noNowait    atomic.Bool // preadv2(RWF_NOWAIT) unsupported
	noDsync     atomic.Bool // pwritev2(RWF_DSYNC) unsupported
	noPunch     atomic.Bool // FALLOC_FL_PUNCH_HOLE unsupported
	noZeroRange atomic.Bool // FALLOC_FL_ZERO_RANGE unsupported
	noSeekHoles atomic.Bool
	closeOnce   sync.Once
	closeErr    error
}

var _ nbd.Backend = (*File)(nil)
var _ nbd.FUAWriter = (*File)(nil)
var _ nbd.Trimmer = (*File)(nil)
var _ nbd.Zeroer = (*File)(nil)
var _ nbd.Cacher = (*File)(nil)
var _ nbd.Extenter = (*File)(nil)
var _ nbd.NoWaitReader = (*File)(nil)

// Open opens (or with Create, creates sparse) the store at path. A regular
// file must be exactly size bytes; a block device at least size bytes (only
// the first size bytes are used). With AtLeast, a larger file or device is
// used whole: Size returns its size.
func Open(path string, size int64, o Options) (*File, error) {
	if size <= 0 {
		return nil, fmt.Errorf("store: %s: size must be positive, got %d", path, size)
	}
	flags := os.O_RDWR
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && o.Create:
		flags |= os.O_CREATE | os.O_EXCL
	case err != nil:
		return nil, fmt.Errorf("store: %w", err)
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if o.Lock {
		if err := lock(f, path); err != nil {
			f.Close()
			return nil, err
		}
	}
	s := &File{f: f, fd: int(f.Fd()), size: size, onFail: o.OnFail, fdatasync: unix.Fdatasync}
	s.fcond = sync.NewCond(&s.fmu)
	if flags&os.O_CREATE != 0 {
		if err := f.Truncate(size); err != nil {
			f.Close()
			os.Remove(path)
			return nil, fmt.Errorf("store: creating %s: %w", path, err)
		}
		// Make the new file and its directory entry durable.
		if err := f.Sync(); err == nil {
			syncDir(path)
		}
		return s, nil
	}
	if st.Mode()&os.ModeDevice != 0 {
		s.isBlock = true
		devSize, err := deviceSize(s.fd)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("store: %s: reading device size: %w", path, err)
		}
		if int64(devSize) < size {
			f.Close()
			return nil, fmt.Errorf("%w: block device %s has %d bytes, volume needs %d", ErrSizeMismatch, path, devSize, size)
		}
		if o.AtLeast {
			s.size = int64(devSize)
		}
		return s, nil
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("store: %s is neither a regular file nor a block device", path)
	}
	switch {
	case o.AtLeast && st.Size() >= size:
		s.size = st.Size()
	case st.Size() != size:
		f.Close()
		want := "volume size is"
		if o.AtLeast {
			want = "it must have at least"
		}
		return nil, fmt.Errorf("%w: file %s has %d bytes, %s %d", ErrSizeMismatch, path, st.Size(), want, size)
	}
	return s, nil
}

// lock takes an exclusive advisory lock on the open file so that two
// daemons, or create-md and a daemon, never use one disk at once.
func lock(f *os.File, path string) error {
	err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return fmt.Errorf("%w: %s is locked by another process (a running blkrepd?)", ErrInUse, path)
	}
	if err != nil {
		return fmt.Errorf("store: locking %s: %w", path, err)
	}
	return nil
}

// InUse reports whether another process holds the lock Open takes with
// Options.Lock on path. It only looks: the probe lock is dropped at once.
func InUse(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return true, nil
	}
	return false, err
}

func syncDir(path string) {
	dir := path
	for i := len(dir) - 1; i >= 0; i-- {
		if dir[i] == '/' {
			dir = dir[:i]
			break
		}
	}
	if dir == path || dir == "" {
		dir = "."
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// Size is the usable size in bytes.
func (s *File) Size() int64 { return s.size }

// IsBlockDevice reports whether the store is a block device.
func (s *File) IsBlockDevice() bool { return s.isBlock }

// Failed returns the error that failed the store, or nil.
func (s *File) Failed() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *File) fail(err error) error {
	s.failOnce.Do(func() {
		e := err
		s.failed.Store(&e)
		if s.onFail != nil {
			s.onFail(err)
		}
	})
	return fmt.Errorf("%w: %v", ErrFailed, err)
}

func (s *File) check(off int64, n int) error {
	if off < 0 || off > s.size || int64(n) > s.size-off {
		return fmt.Errorf("store: range [%d, +%d) outside the volume (%d bytes)", off, n, s.size)
	}
	return nil
}

// ReadAt reads len(p) bytes at off. Reads keep working after a failure.
func (s *File) ReadAt(p []byte, off int64) (int, error) {
	if err := s.check(off, len(p)); err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		n, err := unix.Pread(s.fd, p[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, fmt.Errorf("store: read at %d: %w", off+int64(done), err)
		}
		if n == 0 {
			// A sparse file shorter than expected (truncated underneath
			// us) reads as zeroes past its end, like a hole.
			clear(p[done:])
			return len(p), nil
		}
		done += n
	}
	return done, nil
}

// ReadAtNoWait reads only if the data can be had without waiting for the
// disk (preadv2 RWF_NOWAIT); otherwise it returns an error or a short
// count and the caller retries with ReadAt.
func (s *File) ReadAtNoWait(p []byte, off int64) (int, error) {
	if s.noNowait.Load() {
		return 0, unix.EAGAIN
	}
	if err := s.check(off, len(p)); err != nil {
		return 0, err
	}
	n, err := unix.Preadv2(s.fd, [][]byte{p}, off, unix.RWF_NOWAIT)
	if err == unix.EOPNOTSUPP || err == unix.ENOSYS || err == unix.EINVAL {
		s.noNowait.Store(true)
	}
	return n, err
}

// WriteAt writes p at off.
func (s *File) WriteAt(p []byte, off int64) (int, error) {
	return s.write(p, off, false)
}

// WriteAtFUA writes p at off and makes it durable before returning.
func (s *File) WriteAtFUA(p []byte, off int64) (int, error) {
	if s.noDsync.Load() {
		n, err := s.write(p, off, false)
		if err != nil {
			return n, err
		}
		return n, s.Flush()
	}
	return s.write(p, off, true)
}

func (s *File) write(p []byte, off int64, dsync bool) (int, error) {
	if err := s.Failed(); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrFailed, err)
	}
	if err := s.check(off, len(p)); err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		var n int
		var err error
		if dsync {
			n, err = unix.Pwritev2(s.fd, [][]byte{p[done:]}, off+int64(done), unix.RWF_DSYNC)
			if err == unix.EOPNOTSUPP || err == unix.ENOSYS {
				s.noDsync.Store(true)
				m, err := s.write(p[done:], off+int64(done), false)
				if err != nil {
					return done + m, err
				}
				return len(p), s.Flush()
			}
		} else {
			// Buffered writes to one file serialise on its inode lock in
			// the kernel, where waiters spin; queueing here parks them.
			s.wmu.Lock()
			n, err = unix.Pwrite(s.fd, p[done:], off+int64(done))
			s.wmu.Unlock()
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			werr := fmt.Errorf("store: write at %d: %w", off+int64(done), err)
			if err == unix.EIO || dsync {
				// EIO on write, or a failed synchronous write: durability of
				// this store is no longer known.
				return done, s.fail(werr)
			}
			return done, werr
		}
		if n == 0 {
			return done, fmt.Errorf("store: write at %d: %w", off+int64(done), io.ErrShortWrite)
		}
		done += n
	}
	return done, nil
}

// Flush makes every write that returned before the call durable.
func (s *File) Flush() error {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	target := s.fStarted + 1 // a sync starting after now
	for s.fDone < target {
		if err := s.Failed(); err != nil {
			return fmt.Errorf("%w: %v", ErrFailed, err)
		}
		if s.fRunning {
			s.fWaiters++
			s.fcond.Wait()
			s.fWaiters--
			continue
		}
		s.fRunning = true
		s.fStarted++
		seq := s.fStarted
		s.fmu.Unlock()
		err := s.fdatasync(s.fd)
		for err == unix.EINTR {
			err = s.fdatasync(s.fd)
		}
		if err != nil {
			err = s.fail(fmt.Errorf("store: fdatasync: %w", err))
		}
		s.fmu.Lock()
		s.fRunning = false
		s.fDone = seq
		s.fcond.Broadcast()
		if err != nil {
			return err
		}
	}
	if err := s.Failed(); err != nil {
		return fmt.Errorf("%w: %v", ErrFailed, err)
	}
	return nil
}

// Trim discards a range: a hole in a file, BLKDISCARD on a device. Where
// neither is supported it does nothing, which TRIM allows.
func (s *File) Trim(off, n int64) error {
	if err := s.Failed(); err != nil {
		return fmt.Errorf("%w: %v", ErrFailed, err)
	}
	if off < 0 || n < 0 || off > s.size || n > s.size-off {
		return fmt.Errorf("store: trim range [%d, +%d) outside the volume", off, n)
	}
	if s.isBlock {
		r := [2]uint64{uint64(off), uint64(n)}
		if err := ioctlRange(s.fd, unix.BLKDISCARD, &r); err != nil &&
			err != unix.EOPNOTSUPP && err != unix.ENOTTY && err != unix.EINVAL {
			return fmt.Errorf("store: discard at %d: %w", off, err)
		}
		return nil
	}
	if s.noPunch.Load() {
		return nil
	}
	err := unix.Fallocate(s.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == unix.EOPNOTSUPP {
		s.noPunch.Store(true)
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: punch hole at %d: %w", off, err)
	}
	return nil
}

// WriteZeroes makes [off, off+n) read as zeroes. Without noHole a file
// gets a hole; with noHole the range stays allocated (ZERO_RANGE). With
// fast, only a metadata operation is allowed.
func (s *File) WriteZeroes(off, n int64, noHole, fast bool) error {
	if err := s.Failed(); err != nil {
		return fmt.Errorf("%w: %v", ErrFailed, err)
	}
	if off < 0 || n < 0 || off > s.size || n > s.size-off {
		return fmt.Errorf("store: zero range [%d, +%d) outside the volume", off, n)
	}
	if !s.isBlock && !noHole && !s.noPunch.Load() {
		err := unix.Fallocate(s.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			return nil
		}
		if err != unix.EOPNOTSUPP {
			return fmt.Errorf("store: punch hole at %d: %w", off, err)
		}
		s.noPunch.Store(true)
	}
	if !s.noZeroRange.Load() && !(s.isBlock && fast) {
		// On a block device ZERO_RANGE may fall back to writing zeroes
		// inside the kernel, which is not "fast".
		mode := uint32(unix.FALLOC_FL_ZERO_RANGE)
		if !s.isBlock {
			mode |= unix.FALLOC_FL_KEEP_SIZE
		}
		err := unix.Fallocate(s.fd, mode, off, n)
		if err == nil {
			return nil
		}
		if s.isBlock && err == unix.EINVAL {
			// A block device refuses ranges not aligned to its logical
			// block size (4Kn disks); write the zeroes instead.
			if fast {
				return nbd.ErrFastZeroUnsupported
			}
		} else if err != unix.EOPNOTSUPP {
			return fmt.Errorf("store: zero range at %d: %w", off, err)
		} else {
			s.noZeroRange.Store(true)
		}
	}
	if fast {
		return nbd.ErrFastZeroUnsupported
	}
	const chunk = 1 << 20
	zero := make([]byte, min(n, chunk))
	for n > 0 {
		m := min(n, chunk)
		if _, err := s.write(zero[:m], off, false); err != nil {
			return err
		}
		off += m
		n -= m
	}
	return nil
}

// Cache asks the kernel to read a range ahead.
func (s *File) Cache(off, n int64) error {
	if err := unix.Fadvise(s.fd, off, n, unix.FADV_WILLNEED); err != nil {
		return fmt.Errorf("store: readahead at %d: %w", off, err)
	}
	return nil
}

// Extents reports data and holes with SEEK_DATA/SEEK_HOLE. Holes read as
// zeroes. Block devices and filesystems without hole support report one
// data extent.
func (s *File) Extents(off, n int64, fn func(off, length int64, flags uint32) bool) error {
	end := off + n
	if s.isBlock || s.noSeekHoles.Load() {
		fn(off, n, 0)
		return nil
	}
	pos := off
	for pos < end {
		data, err := unix.Seek(s.fd, pos, unix.SEEK_DATA)
		if err == unix.ENXIO {
			data = end // no data after pos: the rest is a hole
		} else if err != nil {
			if err == unix.EINVAL || err == unix.EOPNOTSUPP {
				s.noSeekHoles.Store(true)
				fn(pos, end-pos, 0)
				return nil
			}
			return fmt.Errorf("store: seek data at %d: %w", pos, err)
		}
		if data > pos {
			h := min(data, end) - pos
			if !fn(pos, h, nbd.StateHole|nbd.StateZero) {
				return nil
			}
			pos += h
			if pos >= end {
				return nil
			}
		}
		hole, err := unix.Seek(s.fd, pos, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("store: seek hole at %d: %w", pos, err)
		}
		d := min(hole, end) - pos
		if d <= 0 {
			d = end - pos
		}
		if !fn(pos, d, 0) {
			return nil
		}
		pos += d
	}
	return nil
}

// Close flushes and closes the store. A flush error is returned.
func (s *File) Close() error {
	s.closeOnce.Do(func() {
		var ferr error
		if s.Failed() == nil {
			ferr = s.Flush()
		}
		cerr := s.f.Close()
		s.closeErr = errors.Join(ferr, cerr)
	})
	return s.closeErr
}
