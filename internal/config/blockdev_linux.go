package config

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// blockDeviceSize returns the size in bytes of the block device at path
// (BLKGETSIZE64). It opens the device read-only.
func blockDeviceSize(path string) (int64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var size uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); errno != 0 {
		return 0, errno
	}
	return int64(size), nil
}
