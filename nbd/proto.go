package nbd

import (
	"encoding/binary"
	"errors"
)

// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md).
// They are frozen by the protocol: never change a value.
const (
	magicNBD         uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	magicIHaveOpt    uint64 = 0x49484156454F5054 // "IHAVEOPT"
	magicOptReply    uint64 = 0x0003e889045565a9
	magicRequest     uint32 = 0x25609513
	magicSimpleReply uint32 = 0x67446698
	magicStructReply uint32 = 0x668e33ef
)

// Handshake flags (server) and client flags. Frozen.
const (
	flagFixedNewstyle uint16 = 1 << 0
	flagNoZeroes      uint16 = 1 << 1

	clientFixedNewstyle uint32 = 1 << 0
	clientNoZeroes      uint32 = 1 << 1
)

// Option numbers. Frozen.
const (
	optExportName      uint32 = 1
	optAbort           uint32 = 2
	optList            uint32 = 3
	optStartTLS        uint32 = 5
	optInfo            uint32 = 6
	optGo              uint32 = 7
	optStructuredReply uint32 = 8
	optListMetaContext uint32 = 9
	optSetMetaContext  uint32 = 10
)

// Option reply types. Frozen.
const (
	repAck         uint32 = 1
	repServer      uint32 = 2
	repInfo        uint32 = 3
	repMetaContext uint32 = 4

	repErrUnsup   uint32 = 1<<31 + 1
	repErrPolicy  uint32 = 1<<31 + 2
	repErrInvalid uint32 = 1<<31 + 3
	repErrUnknown uint32 = 1<<31 + 6
	repErrTooBig  uint32 = 1<<31 + 9
)

// Info types for NBD_OPT_INFO / NBD_OPT_GO. Frozen.
const (
	infoExport      uint16 = 0
	infoName        uint16 = 1
	infoDescription uint16 = 2
	infoBlockSize   uint16 = 3
)

// Transmission flags. Frozen.
const (
	FlagHasFlags        uint16 = 1 << 0
	FlagReadOnly        uint16 = 1 << 1
	FlagSendFlush       uint16 = 1 << 2
	FlagSendFUA         uint16 = 1 << 3
	FlagRotational      uint16 = 1 << 4
	FlagSendTrim        uint16 = 1 << 5
	FlagSendWriteZeroes uint16 = 1 << 6
	FlagSendDF          uint16 = 1 << 7
	FlagCanMultiConn    uint16 = 1 << 8
	FlagSendCache       uint16 = 1 << 10
	FlagSendFastZero    uint16 = 1 << 11
)

// Commands. Frozen.
const (
	CmdRead        uint16 = 0
	CmdWrite       uint16 = 1
	CmdDisc        uint16 = 2
	CmdFlush       uint16 = 3
	CmdTrim        uint16 = 4
	CmdCache       uint16 = 5
	CmdWriteZeroes uint16 = 6
	CmdBlockStatus uint16 = 7
)

// Command flags. Frozen.
const (
	CmdFlagFUA      uint16 = 1 << 0
	CmdFlagNoHole   uint16 = 1 << 1
	CmdFlagDF       uint16 = 1 << 2
	CmdFlagReqOne   uint16 = 1 << 3
	CmdFlagFastZero uint16 = 1 << 4
)

// Structured reply chunk types and flags. Frozen.
const (
	replyFlagDone        uint16 = 1 << 0
	replyTypeNone        uint16 = 0
	replyTypeOffsetData  uint16 = 1
	replyTypeBlockStatus uint16 = 5
	replyTypeError       uint16 = 1<<15 + 1
)

// Errno values allowed on the wire. Frozen.
const (
	EPERM     uint32 = 1
	EIO       uint32 = 5
	ENOMEM    uint32 = 12
	EINVAL    uint32 = 22
	ENOSPC    uint32 = 28
	EOVERFLOW uint32 = 75
	ENOTSUP   uint32 = 95
	ESHUTDOWN uint32 = 108
)

// base:allocation flags. Frozen.
const (
	StateHole uint32 = 1 << 0
	StateZero uint32 = 1 << 1
)

// metaContextAllocation is the only metadata context we serve, with the
// id we hand out for it.
const (
	metaContextAllocation   = "base:allocation"
	metaContextAllocationID = 1
)

// Limits.
const (
	// MaxPayload is the largest READ or WRITE we accept (the kernel sends up
	// to 32 MiB) and the maximum block size we advertise.
	MaxPayload = 32 << 20
	// MinBlockSize is the advertised minimum block size; requests that are
	// not aligned to it get EINVAL, but only from clients that asked for
	// the block size constraints (the spec lets others send byte ranges).
	MinBlockSize = 512
	// maxOptionLen bounds the data of a single handshake option.
	maxOptionLen = 64 << 10
	// maxStringLen is the protocol's limit on names and messages.
	maxStringLen = 4096
	requestLen   = 28
	simpleLen    = 16
	structLen    = 20
)

// Request is one transmission-phase request header.
type Request struct {
	Flags  uint16
	Type   uint16
	Cookie uint64
	Offset uint64
	Length uint32
}

// errBadMagic is returned by decodeRequest when the header does not start
// with the request magic: the stream is out of sync and must be closed.
var errBadMagic = errors.New("nbd: bad request magic")

// decodeRequest parses a 28-byte request header.
func decodeRequest(b []byte, r *Request) error {
	if len(b) < requestLen {
		return errors.New("nbd: short request header")
	}
	if binary.BigEndian.Uint32(b[0:4]) != magicRequest {
		return errBadMagic
	}
	r.Flags = binary.BigEndian.Uint16(b[4:6])
	r.Type = binary.BigEndian.Uint16(b[6:8])
	r.Cookie = binary.BigEndian.Uint64(b[8:16])
	r.Offset = binary.BigEndian.Uint64(b[16:24])
	r.Length = binary.BigEndian.Uint32(b[24:28])
	return nil
}

// encodeRequest is the inverse of decodeRequest (used by tests and the
// in-process client).
func encodeRequest(b []byte, r *Request) []byte {
	b = binary.BigEndian.AppendUint32(b, magicRequest)
	b = binary.BigEndian.AppendUint16(b, r.Flags)
	b = binary.BigEndian.AppendUint16(b, r.Type)
	b = binary.BigEndian.AppendUint64(b, r.Cookie)
	b = binary.BigEndian.AppendUint64(b, r.Offset)
	return binary.BigEndian.AppendUint32(b, r.Length)
}

func putSimpleReply(b []byte, errno uint32, cookie uint64) {
	binary.BigEndian.PutUint32(b[0:4], magicSimpleReply)
	binary.BigEndian.PutUint32(b[4:8], errno)
	binary.BigEndian.PutUint64(b[8:16], cookie)
}

func putStructHeader(b []byte, flags, typ uint16, cookie uint64, length uint32) {
	binary.BigEndian.PutUint32(b[0:4], magicStructReply)
	binary.BigEndian.PutUint16(b[4:6], flags)
	binary.BigEndian.PutUint16(b[6:8], typ)
	binary.BigEndian.PutUint64(b[8:16], cookie)
	binary.BigEndian.PutUint32(b[16:20], length)
}

// CommandName names a command for logs.
func CommandName(t uint16) string {
	switch t {
	case CmdRead:
		return "read"
	case CmdWrite:
		return "write"
	case CmdDisc:
		return "disc"
	case CmdFlush:
		return "flush"
	case CmdTrim:
		return "trim"
	case CmdCache:
		return "cache"
	case CmdWriteZeroes:
		return "write_zeroes"
	case CmdBlockStatus:
		return "block_status"
	}
	return "unknown"
}
