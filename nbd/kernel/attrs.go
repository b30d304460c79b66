package kernel

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink/nl"
)

// Generic netlink family "nbd" (include/uapi/linux/nbd-netlink.h).
// Wire constants: frozen by the kernel ABI, never renumber.
const (
	familyName     = "nbd"
	familyVersion  = 1
	mcastGroupName = "nbd_mc_group"
)

// Commands. Frozen.
const (
	cmdConnect     uint8 = 1
	cmdDisconnect  uint8 = 2
	cmdReconfigure uint8 = 3
	cmdLinkDead    uint8 = 4 // kernel to user, multicast
	cmdStatus      uint8 = 5
)

// Top-level attributes. Frozen.
const (
	attrIndex             = 1  // u32
	attrSizeBytes         = 2  // u64
	attrBlockSizeBytes    = 3  // u64
	attrTimeout           = 4  // u64 seconds
	attrServerFlags       = 5  // u64
	attrClientFlags       = 6  // u64
	attrSockets           = 7  // nested: sockItem{sockFD}
	attrDeadConnTimeout   = 8  // u64 seconds
	attrDeviceList        = 9  // nested: deviceItem{deviceIndex, deviceConnected}
	attrBackendIdentifier = 10 // string
)

// Nested attributes. Frozen.
const (
	sockItem        = 1 // inside attrSockets
	sockFD          = 1 // u32, inside sockItem
	deviceItem      = 1 // inside attrDeviceList
	deviceIndex     = 1 // u32, inside deviceItem
	deviceConnected = 2 // u8, inside deviceItem
)

// CLIENT_FLAGS bits. Frozen.
const (
	clientFlagDestroyOnDisconnect = 1
	clientFlagDisconnectOnClose   = 2 // not used: blkrepd owns the lifetime
)

// NBD transmission flags the option checks look at (NBD protocol). Frozen.
const (
	flagSendFlush = 1 << 2
	flagSendFUA   = 1 << 3
)

// Limits.
const (
	// DefaultBlockSize is used when Options.BlockSize is 0.
	DefaultBlockSize = 4096

	// MaxIndex is the largest device index accepted: 20 minor bits with
	// max_part=0. With the default max_part=16 the kernel's limit is lower
	// (32767) and it rejects larger indexes with EINVAL.
	MaxIndex = 1<<20 - 1

	// MaxBackendLen bounds Options.Backend (the kernel has no limit; sysfs
	// shows it in one page).
	MaxBackendLen = 255
)

// Options for CONNECT / RECONFIGURE.
type Options struct {
	Index               int           // device index N of /dev/nbdN; -1 lets the kernel pick (CONNECT only)
	SizeBytes           uint64        // device size; required for CONNECT, 0 on RECONFIGURE keeps the size
	BlockSize           uint64        // power of two 512..4096; 0 means 4096
	Timeout             time.Duration // per-request timeout; 0 = none. Rounded up to whole seconds.
	DeadConnTimeout     time.Duration // reconnect window; 0 = a dead socket fails I/O at once. Rounded up to whole seconds.
	ServerFlags         uint64        // NBD transmission flags (HAS_FLAGS|SEND_FLUSH|...); ignored by the kernel on RECONFIGURE
	Backend             string        // BACKEND_IDENTIFIER, e.g. "blkrep:r0"
	DestroyOnDisconnect bool          // CLIENT_FLAGS bit: remove /dev/nbdN after DISCONNECT
}

// DevicePath returns "/dev/nbdN".
func DevicePath(index int) string { return "/dev/nbd" + strconv.Itoa(index) }

func (o Options) blockSize() uint64 {
	if o.BlockSize == 0 {
		return DefaultBlockSize
	}
	return o.BlockSize
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidOptions, fmt.Sprintf(format, a...))
}

// validate checks o for CONNECT (reconfigure=false) or RECONFIGURE.
func (o Options) validate(reconfigure bool) error {
	switch {
	case reconfigure && o.Index < 0:
		return invalid("RECONFIGURE needs a device index, got %d", o.Index)
	case o.Index < -1 || o.Index > MaxIndex:
		return invalid("device index %d out of range -1..%d", o.Index, MaxIndex)
	}
	bs := o.blockSize()
	if bs < 512 || bs > 4096 || bs&(bs-1) != 0 {
		return invalid("block size %d is not a power of two in 512..4096", o.BlockSize)
	}
	if !reconfigure && o.SizeBytes == 0 {
		return invalid("size is 0")
	}
	if o.SizeBytes%bs != 0 {
		return invalid("size %d is not a multiple of the block size %d", o.SizeBytes, bs)
	}
	if o.SizeBytes > math.MaxInt64 {
		return invalid("size %d overflows the kernel's loff_t", o.SizeBytes)
	}
	if o.Timeout < 0 || o.DeadConnTimeout < 0 {
		return invalid("negative timeout")
	}
	if o.ServerFlags&flagSendFUA != 0 && o.ServerFlags&flagSendFlush == 0 {
		// The kernel then makes the queue write-through and sends neither
		// FLUSH nor FUA, not even for fsync: never what a server means.
		return invalid("server flags %#x have SEND_FUA without SEND_FLUSH", o.ServerFlags)
	}
	if len(o.Backend) > MaxBackendLen {
		return invalid("backend identifier is %d bytes, max %d", len(o.Backend), MaxBackendLen)
	}
	// sysfs prints the identifier followed by a newline; a NUL would cut
	// it short in the kernel. Either would break the comparison in Attach.
	if strings.ContainsAny(o.Backend, "\x00\n") {
		return invalid("backend identifier %q contains NUL or newline", o.Backend)
	}
	return nil
}

// seconds rounds d up to whole seconds so that a small non-zero timeout does
// not silently become 0 ("none").
func seconds(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64((d + time.Second - 1) / time.Second)
}

func clientFlags(o Options) uint64 {
	if o.DestroyOnDisconnect {
		return clientFlagDestroyOnDisconnect
	}
	return 0
}

// socketsAttr builds SOCKETS{SOCK_ITEM{SOCK_FD(fd)}}.
func socketsAttr(fd int) *nl.RtAttr {
	socks := nl.NewRtAttr(attrSockets, nil)
	item := socks.AddRtAttr(sockItem, nil)
	item.AddRtAttr(sockFD, nl.Uint32Attr(uint32(fd)))
	return socks
}

func serialize(attrs []*nl.RtAttr) []byte {
	var b []byte
	for _, a := range attrs {
		b = append(b, a.Serialize()...) // Serialize pads to 4 bytes
	}
	return b
}

// encodeConnect returns the attribute payload (after the genl header) of a
// CONNECT for a validated o, handing the kernel socket fd.
func encodeConnect(o Options, fd int) []byte {
	var a []*nl.RtAttr
	if o.Index >= 0 {
		a = append(a, nl.NewRtAttr(attrIndex, nl.Uint32Attr(uint32(o.Index))))
	}
	a = append(a,
		nl.NewRtAttr(attrSizeBytes, nl.Uint64Attr(o.SizeBytes)),
		nl.NewRtAttr(attrBlockSizeBytes, nl.Uint64Attr(o.blockSize())),
		nl.NewRtAttr(attrTimeout, nl.Uint64Attr(seconds(o.Timeout))),
		nl.NewRtAttr(attrServerFlags, nl.Uint64Attr(o.ServerFlags)),
		nl.NewRtAttr(attrClientFlags, nl.Uint64Attr(clientFlags(o))),
		socketsAttr(fd),
		nl.NewRtAttr(attrDeadConnTimeout, nl.Uint64Attr(seconds(o.DeadConnTimeout))),
	)
	if o.Backend != "" {
		a = append(a, nl.NewRtAttr(attrBackendIdentifier, nl.ZeroTerminated(o.Backend)))
	}
	return serialize(a)
}

// encodeReconfigure returns the attribute payload of a RECONFIGURE for a
// validated o. Size and block size are sent only when o.SizeBytes is set
// (the kernel resizes only if they differ). SERVER_FLAGS is not sent: the
// kernel ignores it on RECONFIGURE.
func encodeReconfigure(o Options, fd int) []byte {
	a := []*nl.RtAttr{nl.NewRtAttr(attrIndex, nl.Uint32Attr(uint32(o.Index)))}
	if o.SizeBytes != 0 {
		a = append(a,
			nl.NewRtAttr(attrSizeBytes, nl.Uint64Attr(o.SizeBytes)),
			nl.NewRtAttr(attrBlockSizeBytes, nl.Uint64Attr(o.blockSize())),
		)
	}
	a = append(a,
		nl.NewRtAttr(attrTimeout, nl.Uint64Attr(seconds(o.Timeout))),
		nl.NewRtAttr(attrClientFlags, nl.Uint64Attr(clientFlags(o))),
		socketsAttr(fd),
		nl.NewRtAttr(attrDeadConnTimeout, nl.Uint64Attr(seconds(o.DeadConnTimeout))),
	)
	if o.Backend != "" {
		a = append(a, nl.NewRtAttr(attrBackendIdentifier, nl.ZeroTerminated(o.Backend)))
	}
	return serialize(a)
}

// encodeIndex returns the payload of DISCONNECT and STATUS: INDEX only.
func encodeIndex(index int) []byte {
	return nl.NewRtAttr(attrIndex, nl.Uint32Attr(uint32(index))).Serialize()
}

// genlHeaderLen is the size of struct genlmsghdr; the nbd family has no
// family header after it.
const genlHeaderLen = nl.SizeofGenlmsg

// attr is one decoded netlink attribute.
type attr struct {
	typ  uint16 // without the NLA_F_NESTED / NLA_F_NET_BYTEORDER bits
	data []byte
}

// parseAttrs splits b into attributes, checking every length against b.
func parseAttrs(b []byte) ([]attr, error) {
	var out []attr
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadReply, len(b))
		}
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		if l < 4 || l > len(b) {
			return nil, fmt.Errorf("%w: attribute length %d with %d bytes left", ErrBadReply, l, len(b))
		}
		out = append(out, attr{typ: binary.NativeEndian.Uint16(b[2:4]) & 0x3fff, data: b[4:l]})
		next := (l + 3) &^ 3
		if next > len(b) {
			next = len(b)
		}
		b = b[next:]
	}
	return out, nil
}

func attrU32(a attr) (uint32, error) {
	if len(a.data) < 4 {
		return 0, fmt.Errorf("%w: u32 attribute %d has %d bytes", ErrBadReply, a.typ, len(a.data))
	}
	return binary.NativeEndian.Uint32(a.data), nil
}

// genlPayload checks a generic netlink message body (genl header + attrs)
// and returns its command and attributes.
func genlPayload(msg []byte) (cmd uint8, attrs []attr, err error) {
	if len(msg) < genlHeaderLen {
		return 0, nil, fmt.Errorf("%w: %d bytes, shorter than the genl header", ErrBadReply, len(msg))
	}
	attrs, err = parseAttrs(msg[genlHeaderLen:])
	return msg[0], attrs, err
}

// decodeIndexMsg returns the INDEX attribute of a CONNECT reply or LINK_DEAD
// notification, checking the command.
func decodeIndexMsg(msg []byte, want uint8) (int, error) {
	cmd, attrs, err := genlPayload(msg)
	if err != nil {
		return -1, err
	}
	if cmd != want {
		return -1, fmt.Errorf("%w: command %d, want %d", ErrBadReply, cmd, want)
	}
	for _, a := range attrs {
		if a.typ == attrIndex {
			v, err := attrU32(a)
			if err != nil {
				return -1, err
			}
			if v > MaxIndex {
				return -1, fmt.Errorf("%w: index %d out of range", ErrBadReply, v)
			}
			return int(v), nil
		}
	}
	return -1, fmt.Errorf("%w: no INDEX attribute", ErrBadReply)
}

// decodeStatus finds device index in a STATUS reply. A device that does not
// exist is simply absent from DEVICE_LIST.
func decodeStatus(msg []byte, index int) (exists, connected bool, err error) {
	cmd, attrs, err := genlPayload(msg)
	if err != nil {
		return false, false, err
	}
	if cmd != cmdStatus {
		return false, false, fmt.Errorf("%w: command %d, want STATUS", ErrBadReply, cmd)
	}
	for _, a := range attrs {
		if a.typ != attrDeviceList {
			continue
		}
		items, err := parseAttrs(a.data)
		if err != nil {
			return false, false, err
		}
		for _, it := range items {
			if it.typ != deviceItem {
				continue
			}
			fields, err := parseAttrs(it.data)
			if err != nil {
				return false, false, err
			}
			idx, conn := -1, false
			for _, f := range fields {
				switch f.typ {
				case deviceIndex:
					v, err := attrU32(f)
					if err != nil {
						return false, false, err
					}
					idx = int(v)
				case deviceConnected:
					if len(f.data) < 1 {
						return false, false, fmt.Errorf("%w: empty DEVICE_CONNECTED", ErrBadReply)
					}
					conn = f.data[0] != 0
				}
			}
			if idx == index {
				return true, conn, nil
			}
		}
	}
	return false, false, nil
}
