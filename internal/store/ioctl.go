package store

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlRange issues an ioctl taking a pointer to {offset, length} u64s
// (BLKDISCARD, BLKZEROOUT).
func ioctlRange(fd int, req uint, r *[2]uint64) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(r)))
	if e != 0 {
		return e
	}
	return nil
}

// deviceSize returns a block device's size in bytes (BLKGETSIZE64).
func deviceSize(fd int) (uint64, error) {
	var n uint64
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(unix.BLKGETSIZE64), uintptr(unsafe.Pointer(&n)))
	if e != 0 {
		return 0, e
	}
	return n, nil
}
