package kernel

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers branch on them with errors.Is; they are always
// wrapped with the operation and device they concern.
var (
	// ErrNoFamily means the generic netlink family "nbd" is not registered:
	// the nbd module is not loaded (see LoadModule).
	ErrNoFamily = errors.New(`nbd/kernel: generic netlink family "nbd" not found (nbd module not loaded?)`)

	// ErrModuleUnavailable means LoadModule found no way to get the nbd
	// driver into the running kernel. The wrapped causes say what was tried.
	ErrModuleUnavailable = errors.New("nbd module not available")

	// ErrInvalidDevice means a path is not of the form /dev/nbdN.
	ErrInvalidDevice = errors.New("nbd/kernel: not an nbd device path")

	// ErrInvalidOptions means Options were rejected before anything was
	// sent to the kernel.
	ErrInvalidOptions = errors.New("nbd/kernel: invalid options")

	// ErrNoDevice means /sys/block/nbdN does not exist.
	ErrNoDevice = errors.New("nbd/kernel: no such nbd device")

	// ErrDeviceBusy means the device is configured for another backend (or
	// held open without one). Returned wrapped in a *BusyError.
	ErrDeviceBusy = errors.New("nbd/kernel: device busy")

	// ErrLinkAlive means a RECONFIGURE was accepted but the kernel kept the
	// device's existing, still live socket and dropped ours: some other
	// process is still serving the device.
	ErrLinkAlive = errors.New("nbd/kernel: device still has a live connection; RECONFIGURE did not take the new socket")

	// ErrBadReply means the kernel's netlink reply could not be decoded.
	ErrBadReply = errors.New("nbd/kernel: malformed netlink reply")

	// ErrClosed means the Conn was used after Close.
	ErrClosed = errors.New("nbd/kernel: netlink connection closed")
)

// OpError reports a failed netlink command. Err is usually a syscall.Errno
// from the kernel (EBUSY, EINVAL, EPERM...), so errors.Is(err, unix.EBUSY)
// works through it.
type OpError struct {
	Op    string // "connect", "reconfigure", "disconnect", "status"
	Index int    // device index, -1 when the kernel was to pick one
	Err   error
}

func (e *OpError) Error() string {
	if e.Index < 0 {
		return fmt.Sprintf("nbd/kernel: %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("nbd/kernel: %s %s: %v", e.Op, DevicePath(e.Index), e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// BusyError is returned by Attach when the device is configured but not for
// the requested backend. It unwraps to ErrDeviceBusy.
type BusyError struct {
	Index   int
	Backend string // what /sys/block/nbdN/backend says; "" if none
	Want    string // the backend Attach was asked to serve
}

func (e *BusyError) Error() string {
	if e.Backend == "" {
		return fmt.Sprintf("nbd/kernel: %s is in use without a backend identifier (open by another process or attached by another tool), want backend %q",
			DevicePath(e.Index), e.Want)
	}
	return fmt.Sprintf("nbd/kernel: %s is attached to backend %q, want backend %q",
		DevicePath(e.Index), e.Backend, e.Want)
}

func (e *BusyError) Unwrap() error { return ErrDeviceBusy }
