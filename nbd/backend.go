package nbd

import (
	"errors"
	"io"
	"syscall"
)

// Backend is what an export serves. ReadAt and WriteAt may be called
// concurrently; the server never issues overlapping writes concurrently
// (overlapping requests are ordered by arrival), so WriteAt only has to
// allow parallel writes to disjoint ranges.
//
// Flush must make every write that had returned before Flush was called
// durable (on stable storage and, for a replicated backend, wherever its
// protocol requires). A Flush failure must be sticky: once durability is
// lost, later writes and flushes fail too.
type Backend interface {
	io.ReaderAt
	io.WriterAt
	Flush() error
}

// FUAWriter is implemented by backends that can make a single write
// durable more cheaply than WriteAt followed by Flush.
type FUAWriter interface {
	WriteAtFUA(p []byte, off int64) (int, error)
}

// TryWriter is implemented by backends whose WriteAt may have to wait for
// something other than the page cache (an activity-log transaction before
// the first write into a cold region). TryWriteAt does the write only if
// it can start at once, and reports ok = false, having done nothing,
// otherwise: the server then gives the write to a worker instead of
// stalling the connection's reader on it.
type TryWriter interface {
	TryWriteAt(p []byte, off int64) (n int, ok bool, err error)
}

// NoWaitReader is implemented by backends that can try a read without
// blocking (preadv2 with RWF_NOWAIT: served only from the page cache). A
// short read or any error means "do it the blocking way".
type NoWaitReader interface {
	ReadAtNoWait(p []byte, off int64) (int, error)
}

// Trimmer discards a range; the range then reads as zeroes or as its old
// content, either is valid.
type Trimmer interface {
	Trim(off, length int64) error
}

// Zeroer writes zeroes to a range. With noHole the range must stay
// allocated; with fast the backend must fail with ErrFastZeroUnsupported
// instead of falling back to a slow write of zero buffers.
type Zeroer interface {
	WriteZeroes(off, length int64, noHole, fast bool) error
}

// Cacher prefetches a range into a cache.
type Cacher interface {
	Cache(off, length int64) error
}

// Extenter reports allocation for base:allocation: fn is called with
// consecutive extents covering a prefix of [off, off+length), with the
// StateHole/StateZero bits. Returning false from fn stops the walk.
type Extenter interface {
	Extents(off, length int64, fn func(off, length int64, flags uint32) bool) error
}

// ErrFastZeroUnsupported is returned by Zeroer.WriteZeroes when fast is set
// and the backend cannot zero the range quickly. It becomes ENOTSUP.
var ErrFastZeroUnsupported = errors.New("nbd: fast zero not supported")

// ErrReadOnly is returned by a backend refusing writes. It becomes EPERM.
var ErrReadOnly = errors.New("nbd: export is read-only")

// Errno maps a backend error to the NBD error number sent on the wire.
// Only the protocol's numbers are ever sent; anything unknown is EIO.
func Errno(err error) uint32 {
	if err == nil {
		return 0
	}
	if errors.Is(err, ErrFastZeroUnsupported) {
		return ENOTSUP
	}
	if errors.Is(err, ErrReadOnly) {
		return EPERM
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		switch en {
		case syscall.EPERM, syscall.EROFS:
			return EPERM
		case syscall.ENOMEM:
			return ENOMEM
		case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
			return ENOSPC
		case syscall.ESHUTDOWN:
			return ESHUTDOWN
		}
	}
	return EIO
}
