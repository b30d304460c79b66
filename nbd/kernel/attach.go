package kernel

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ParseDevice returns N for "/dev/nbdN". It accepts only the kernel's own
// names: no partitions ("/dev/nbd0p1"), no leading zeros, no other paths.
func ParseDevice(path string) (int, error) {
	bad := func(why string) (int, error) {
		return -1, fmt.Errorf("%w: %q: %s (want /dev/nbdN)", ErrInvalidDevice, path, why)
	}
	const prefix = "/dev/nbd"
	if !strings.HasPrefix(path, prefix) {
		return bad("not under /dev/nbd")
	}
	num := path[len(prefix):]
	if num == "" {
		return bad("missing device number")
	}
	for _, r := range num {
		if r < '0' || r > '9' {
			if r == 'p' {
				return bad("a partition, not a whole device")
			}
			return bad("device number is not decimal")
		}
	}
	if len(num) > 1 && num[0] == '0' {
		return bad("leading zero in device number")
	}
	n, err := strconv.Atoi(num)
	if err != nil || n > MaxIndex {
		return bad(fmt.Sprintf("device number above %d", MaxIndex))
	}
	return n, nil
}

// Backend returns the backend identifier of /dev/nbdN from
// /sys/block/nbdN/backend: "" when the device is not configured through
// netlink with an identifier. It wraps ErrNoDevice when the device does not
// exist.
func Backend(index int) (string, error) { return backendAt("/sys/block", index) }

func backendAt(sysBlock string, index int) (string, error) {
	dir := filepath.Join(sysBlock, "nbd"+strconv.Itoa(index))
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%w: %s", ErrNoDevice, DevicePath(index))
		}
		return "", fmt.Errorf("nbd/kernel: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "backend"))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil // the kernel creates the file at CONNECT, removes it at teardown
	}
	if err != nil {
		return "", fmt.Errorf("nbd/kernel: read backend of %s: %w", DevicePath(index), err)
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

type attachAction int

const (
	actionConnect attachAction = iota
	actionReconfigure
)

func (a attachAction) String() string {
	if a == actionReconfigure {
		return "reconfigure"
	}
	return "connect"
}

// decideAttach is Attach's choice, given what STATUS and sysfs say.
//
//   - No device, or a device with no configuration: CONNECT at that index.
//     (RECONFIGURE needs a configuration: the kernel answers EINVAL "not
//     configured, cannot reconfigure".)
//   - Configured for our backend: RECONFIGURE. This is the daemon-restart
//     case: the old socket died with the old process, the kernel keeps the
//     configuration (and the mounted filesystem) waiting for a new socket.
//   - Configured for anything else, or configured without an identifier
//     (another tool, or just held open): a *BusyError.
func decideAttach(index int, exists, connected bool, backend, want string) (attachAction, error) {
	if !exists || !connected {
		return actionConnect, nil
	}
	if backend != "" && backend == want {
		return actionReconfigure, nil
	}
	return actionConnect, &BusyError{Index: index, Backend: backend, Want: want}
}

// Retries of CONNECT at a fixed index that fails with EBUSY although the
// device was seen unconfigured: something (udev's blkid, a monitoring
// agent) has the device open for a moment, which gives it a configuration.
const (
	busyRetries = 10
	busyBackoff = 100 * time.Millisecond
)

// Attach makes /dev/nbdN serve through serve. It creates
// socketpair(AF_UNIX, SOCK_STREAM), starts serve(conn) on one end in a
// goroutine BEFORE issuing CONNECT (the kernel reads the partition table
// immediately), hands the other end to the kernel, and closes the kernel end
// locally afterwards.
//
// If o.Index names a device that is configured with backend identifier
// o.Backend (a daemon restart while the device stays mounted), Attach uses
// RECONFIGURE instead; it then checks that the kernel really took the new
// socket, which it does only in place of a dead one, and fails with
// ErrLinkAlive otherwise. A device configured for another backend fails with
// a *BusyError naming the device and the backend found.
//
// serve owns conn from the moment it is called and must return once conn is
// closed. On error Attach closes conn and waits for serve to return. On
// success serve runs until the kernel drops the socket (DISCONNECT, request
// timeout) or serve closes conn; the kernel then marks the link dead.
func Attach(c *Conn, o Options, serve func(net.Conn)) (index int, err error) {
	if serve == nil {
		return -1, invalid("nil serve function")
	}
	if err := o.validate(false); err != nil {
		return -1, err
	}
	action := actionConnect
	if o.Index >= 0 {
		exists, connected, err := c.Status(o.Index)
		if err != nil {
			return -1, err
		}
		backend := ""
		if exists && connected {
			if backend, err = backendAt(c.sysBlock, o.Index); err != nil {
				return -1, err
			}
		}
		if action, err = decideAttach(o.Index, exists, connected, backend, o.Backend); err != nil {
			return -1, err
		}
		c.log.Debug("nbd attach", "device", DevicePath(o.Index), "exists", exists,
			"connected", connected, "backend", backend, "action", action.String())
	}

	kernelEnd, srv, probe, err := socketPair()
	if err != nil {
		return -1, err
	}
	defer probe.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(srv)
	}()
	fail := func(err error) (int, error) {
		srv.Close()
		<-done
		return -1, err
	}

	switch action {
	case actionReconfigure:
		index = o.Index
		err = c.Reconfigure(o, kernelEnd)
	default:
		for try := 0; ; try++ {
			index, err = c.Connect(o, kernelEnd)
			if err == nil || o.Index < 0 || !errors.Is(err, unix.EBUSY) || try == busyRetries {
				break
			}
			c.log.Warn("nbd device busy, retrying connect", "device", DevicePath(o.Index), "try", try+1)
			c.sleep(busyBackoff)
		}
	}
	// The kernel holds its own reference to the socket now (or never will).
	if cerr := kernelEnd.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("nbd/kernel: close kernel end: %w", cerr)
	}
	if err != nil {
		return fail(err)
	}
	if action == actionReconfigure {
		// A RECONFIGURE with no dead socket to replace succeeds without
		// taking ours; our close above then was the last reference and the
		// peer end is hung up.
		hup, perr := peerClosed(probe)
		if perr != nil {
			return fail(fmt.Errorf("nbd/kernel: check socket after reconfigure of %s: %w", DevicePath(index), perr))
		}
		if hup {
			return fail(fmt.Errorf("%s: %w", DevicePath(index), ErrLinkAlive))
		}
	}
	c.log.Info("nbd attached", "device", DevicePath(index), "backend", o.Backend, "action", action.String())
	return index, nil
}

// socketPair returns the kernel's end as a blocking *os.File, the server's
// end as a net.Conn, and probe, a second descriptor of the server's end that
// stays open whatever serve does with its conn (see peerClosed).
func socketPair() (kernelEnd *os.File, srv net.Conn, probe *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("nbd/kernel: socketpair: %w", err)
	}
	kernelEnd = os.NewFile(uintptr(fds[0]), "nbd-kernel")
	probe = os.NewFile(uintptr(fds[1]), "nbd-server")
	srv, err = net.FileConn(probe) // dups the fd
	if err != nil {
		kernelEnd.Close()
		probe.Close()
		return nil, nil, nil, fmt.Errorf("nbd/kernel: socketpair: %w", err)
	}
	return kernelEnd, srv, probe, nil
}

// peerClosed reports whether the other end of the socket behind f is gone
// (POLLHUP): unix stream sockets set it when the peer is released. It goes
// through SyscallConn, which leaves the descriptor's O_NONBLOCK (shared with
// the server's conn) alone.
func peerClosed(f *os.File) (bool, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	var hup bool
	var perr error
	err = rc.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		for {
			_, perr = unix.Poll(pfd, 0)
			if perr != unix.EINTR {
				break
			}
		}
		hup = pfd[0].Revents&(unix.POLLHUP|unix.POLLRDHUP) != 0
	})
	if err != nil {
		return false, err
	}
	return hup, perr
}
