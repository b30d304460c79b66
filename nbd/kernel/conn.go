package kernel

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// requestTimeout bounds every netlink round trip. The nbd commands return
// quickly; DISCONNECT waits for the kernel's receive worker to stop, which
// a hung server end can delay.
const requestTimeout = 60 * time.Second

// Conn is a netlink handle for the generic netlink family "nbd". Its methods
// are safe for concurrent use; every command needs CAP_SYS_ADMIN.
type Conn struct {
	family uint16
	group  uint32 // multicast group id of nbd_mc_group, 0 if absent
	log    *slog.Logger

	sysBlock string              // "/sys/block"; tests point it elsewhere
	sleep    func(time.Duration) // time.Sleep; tests record instead
	exec     func(req *nl.NetlinkRequest) ([][]byte, error)

	mu     sync.Mutex
	closed bool
	sock   *nl.SocketHandle // nil in tests
}

// Open resolves the family and opens a netlink socket. It returns an error
// wrapping ErrNoFamily when the nbd module is not loaded.
func Open() (*Conn, error) { return OpenWithLogger(nil) }

// OpenWithLogger is Open with a logger for attach/detach events (nil
// discards).
func OpenWithLogger(log *slog.Logger) (*Conn, error) {
	fam, err := lookupFamily()
	if err != nil {
		return nil, err
	}
	// nl.Subscribe with no groups is a plain bound, non-blocking
	// NETLINK_GENERIC socket driven by the Go poller.
	s, err := nl.Subscribe(unix.NETLINK_GENERIC)
	if err != nil {
		return nil, fmt.Errorf("nbd/kernel: open netlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(requestTimeout.Nanoseconds())
	_ = s.SetSendTimeout(&tv)
	_ = s.SetReceiveTimeout(&tv)
	_ = s.SetExtAck(true) // best effort: kernel error strings in errors
	c := newConn(fam, log)
	c.sock = &nl.SocketHandle{Socket: s}
	c.exec = c.execSocket
	return c, nil
}

func newConn(fam *netlink.GenlFamily, log *slog.Logger) *Conn {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Conn{family: fam.ID, log: log, sysBlock: "/sys/block", sleep: time.Sleep}
	for _, g := range fam.Groups {
		if g.Name == mcastGroupName {
			c.group = g.ID
		}
	}
	return c
}

// lookupFamily asks the generic netlink controller for "nbd". On kernels
// whose nbd module carries the genl family alias (6.12) this loads it.
func lookupFamily() (*netlink.GenlFamily, error) {
	fam, err := netlink.GenlFamilyGet(familyName)
	if errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("%w: %w", ErrNoFamily, err)
	}
	if err != nil {
		return nil, fmt.Errorf("nbd/kernel: look up generic netlink family %q: %w", familyName, err)
	}
	if fam.Version < familyVersion {
		return nil, fmt.Errorf("nbd/kernel: family %q version %d, need %d", familyName, fam.Version, familyVersion)
	}
	return fam, nil
}

func (c *Conn) execSocket(req *nl.NetlinkRequest) ([][]byte, error) {
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_GENERIC: c.sock}
	return req.Execute(unix.NETLINK_GENERIC, c.family)
}

// do sends one command with NLM_F_ACK and returns the reply bodies (genl
// header + attributes). The ACK matters: DISCONNECT and RECONFIGURE send no
// reply message, so without it the call would wait for the socket timeout.
func (c *Conn) do(cmd uint8, attrs []byte) ([][]byte, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	req := nl.NewNetlinkRequest(int(c.family), unix.NLM_F_ACK)
	req.AddData(&nl.Genlmsg{Command: cmd, Version: familyVersion})
	req.AddRawData(attrs)
	return c.exec(req)
}

// Connect configures a device with one socket and starts it. The kernel
// looks sock up in this process's fd table and keeps its own reference: the
// caller may close sock afterwards. It returns the device index (the kernel's
// choice when o.Index is -1). The kernel starts reading from the device
// (partition table) before Connect returns, so the other end of sock must
// already be served. Errors from the kernel come as *OpError wrapping the
// errno (EBUSY: the device is configured or open).
func (c *Conn) Connect(o Options, sock *os.File) (int, error) {
	if err := o.validate(false); err != nil {
		return -1, err
	}
	if sock == nil {
		return -1, invalid("nil socket")
	}
	fd := int(sock.Fd())
	msgs, err := c.do(cmdConnect, encodeConnect(o, fd))
	runtime.KeepAlive(sock)
	if err != nil {
		return -1, &OpError{Op: "connect", Index: o.Index, Err: err}
	}
	index := o.Index
	if len(msgs) > 0 {
		got, err := decodeIndexMsg(msgs[0], cmdConnect)
		if err != nil {
			return -1, &OpError{Op: "connect", Index: o.Index, Err: err}
		}
		index = got
	}
	if index < 0 {
		// The kernel acknowledged but its reply (which carries the index)
		// got lost: it allocates that reply separately.
		return -1, &OpError{Op: "connect", Index: -1, Err: fmt.Errorf("%w: no reply with the device index", ErrBadReply)}
	}
	c.log.Info("nbd connected", "device", DevicePath(index), "backend", o.Backend,
		"size_bytes", o.SizeBytes, "block_size", o.blockSize(), "server_flags", o.ServerFlags,
		"timeout", o.Timeout, "dead_conn_timeout", o.DeadConnTimeout)
	return index, nil
}

// Reconfigure hands a configured device a new socket in place of a dead one
// (same backend identifier), and updates timeouts, client flags and, when
// o.SizeBytes is set, the size. If no socket of the device is dead, the
// kernel drops the new socket and still reports success; Attach detects that
// case (ErrLinkAlive).
func (c *Conn) Reconfigure(o Options, sock *os.File) error {
	if err := o.validate(true); err != nil {
		return err
	}
	if sock == nil {
		return invalid("nil socket")
	}
	fd := int(sock.Fd())
	_, err := c.do(cmdReconfigure, encodeReconfigure(o, fd))
	runtime.KeepAlive(sock)
	if err != nil {
		return &OpError{Op: "reconfigure", Index: o.Index, Err: err}
	}
	c.log.Info("nbd reconfigured", "device", DevicePath(o.Index), "backend", o.Backend,
		"timeout", o.Timeout, "dead_conn_timeout", o.DeadConnTimeout)
	return nil
}

// Disconnect sends NBD_CMD_DISC on the device's sockets, shuts them down and
// fails queued I/O; the device (unless created with DestroyOnDisconnect)
// stays, unconfigured.
func (c *Conn) Disconnect(index int) error {
	if index < 0 || index > MaxIndex {
		return invalid("device index %d out of range 0..%d", index, MaxIndex)
	}
	if _, err := c.do(cmdDisconnect, encodeIndex(index)); err != nil {
		return &OpError{Op: "disconnect", Index: index, Err: err}
	}
	c.log.Info("nbd disconnected", "device", DevicePath(index))
	return nil
}

// Status reports whether /dev/nbdN exists and whether it is configured.
// "connected" is the kernel's view: a configuration exists (set up by
// CONNECT, or by an open of the device). It stays true while the socket is
// dead and the kernel waits for a RECONFIGURE.
func (c *Conn) Status(index int) (exists, connected bool, err error) {
	if index < 0 || index > MaxIndex {
		return false, false, invalid("device index %d out of range 0..%d", index, MaxIndex)
	}
	msgs, err := c.do(cmdStatus, encodeIndex(index))
	if err != nil {
		return false, false, &OpError{Op: "status", Index: index, Err: err}
	}
	if len(msgs) == 0 {
		return false, false, &OpError{Op: "status", Index: index, Err: fmt.Errorf("%w: no STATUS reply", ErrBadReply)}
	}
	exists, connected, err = decodeStatus(msgs[0], index)
	if err != nil {
		return false, false, &OpError{Op: "status", Index: index, Err: err}
	}
	return exists, connected, nil
}

// Close releases the netlink socket. Devices stay as they are.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.sock != nil {
		c.sock.Close()
	}
	return nil
}
