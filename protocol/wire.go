package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The replication wire format (docs/format/wire.md). Every message is a
// 16-byte header followed by a payload:
//
//	magic   u32  "BLKR" (0x524b4c42 little endian)
//	type    u16  MsgType
//	flags   u16  zero (reserved)
//	length  u32  payload bytes, at most MaxPayload
//	crc     u32  zero (reserved; TCP checksums and the handshake's HMAC
//	             cover what this version needs)
//
// Integers are little endian. Every decoder checks the exact payload
// length and every field's range, and returns ErrMalformed otherwise: a
// peer that sends garbage is disconnected, never obeyed.

// Magic opens every message.
const Magic uint32 = 0x524b4c42

// HeaderSize is the size of a message header.
const HeaderSize = 16

// MaxData is the most data one write or resync message carries (the NBD
// maximum write, 32 MiB).
const MaxData = 32 << 20

// MaxPayload bounds every payload: MaxData plus the largest fixed part.
const MaxPayload = MaxData + 4096

// Wire versions this build speaks. The handshake picks the highest
// version both sides support.
const (
	MinVersion uint16 = 1
	MaxVersion uint16 = 1
)

// MsgType names a message.
type MsgType uint16

// Message types. Frozen: values never change meaning.
const (
	MsgHello      MsgType = 1  // handshake: identity, versions, nonce (+ MAC from the acceptor)
	MsgAuth       MsgType = 2  // handshake: the dialer's MAC
	MsgRefuse     MsgType = 3  // handshake or later: a reason, then the sender closes
	MsgState      MsgType = 4  // generations, role, disk state, size
	MsgBitmap     MsgType = 5  // a run-length-encoded piece of the sender's bitmap for the peer
	MsgBitmapDone MsgType = 6  // the sender's bitmap is complete
	MsgData       MsgType = 10 // a replicated write, trim or write-zeroes
	MsgRecvAck    MsgType = 11 // protocol B: write received
	MsgWriteAck   MsgType = 12 // protocol C: write applied
	MsgNegAck     MsgType = 13 // the peer could not apply the write
	MsgBarrier    MsgType = 14 // closes an epoch
	MsgBarrierAck MsgType = 15 // every write of the epoch is durable on the peer
	MsgPing       MsgType = 16
	MsgPingAck    MsgType = 17
	MsgGens       MsgType = 18 // the sender's generations changed while connected
	MsgResyncReq  MsgType = 20 // target asks for a range
	MsgCsumReq    MsgType = 21 // target asks for a range unless it hashes to Sum
	MsgResyncData MsgType = 22 // source answers with data (or a hole)
	MsgResyncSame MsgType = 23 // source answers: identical, nothing to send
	MsgResyncAck  MsgType = 24 // target: range written, source may clear its bits
	MsgResyncDone MsgType = 25 // target: resync complete, generations adopted
	MsgVerifyReq  MsgType = 26 // verify source asks for the peer's digest of a range
	MsgVerifyRep  MsgType = 27 // the digest
	MsgVerifyDone MsgType = 28
)

var msgNames = map[MsgType]string{
	MsgHello: "hello", MsgAuth: "auth", MsgRefuse: "refuse", MsgState: "state", MsgBitmap: "bitmap",
	MsgBitmapDone: "bitmap-done", MsgData: "data", MsgRecvAck: "recv-ack", MsgWriteAck: "write-ack",
	MsgNegAck: "neg-ack", MsgBarrier: "barrier", MsgBarrierAck: "barrier-ack", MsgPing: "ping",
	MsgPingAck: "ping-ack", MsgGens: "gens", MsgResyncReq: "resync-req", MsgCsumReq: "csum-req",
	MsgResyncData: "resync-data", MsgResyncSame: "resync-same", MsgResyncAck: "resync-ack",
	MsgResyncDone: "resync-done", MsgVerifyReq: "verify-req", MsgVerifyRep: "verify-rep", MsgVerifyDone: "verify-done",
}

func (t MsgType) String() string {
	if n, ok := msgNames[t]; ok {
		return n
	}
	return fmt.Sprintf("msg(%d)", uint16(t))
}

// ErrMalformed: a message that does not follow the format.
var ErrMalformed = errors.New("protocol: malformed message")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Header is a decoded message header.
type Header struct {
	Type   MsgType
	Length uint32
}

// PutHeader encodes a header into b[:HeaderSize].
func PutHeader(b []byte, t MsgType, length int) {
	binary.LittleEndian.PutUint32(b[0:], Magic)
	binary.LittleEndian.PutUint16(b[4:], uint16(t))
	binary.LittleEndian.PutUint16(b[6:], 0)
	binary.LittleEndian.PutUint32(b[8:], uint32(length))
	binary.LittleEndian.PutUint32(b[12:], 0)
}

// DecodeHeader checks and decodes a header.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, malformed("header of %d bytes", len(b))
	}
	if m := binary.LittleEndian.Uint32(b[0:]); m != Magic {
		return Header{}, malformed("bad magic %#08x (not a blkrep peer?)", m)
	}
	h := Header{Type: MsgType(binary.LittleEndian.Uint16(b[4:])), Length: binary.LittleEndian.Uint32(b[8:])}
	if f := binary.LittleEndian.Uint16(b[6:]); f != 0 {
		return Header{}, malformed("%s: reserved flags %#x set", h.Type, f)
	}
	if c := binary.LittleEndian.Uint32(b[12:]); c != 0 {
		return Header{}, malformed("%s: reserved crc field %#x set", h.Type, c)
	}
	if h.Length > MaxPayload {
		return Header{}, malformed("%s: payload of %d bytes exceeds %d", h.Type, h.Length, MaxPayload)
	}
	if _, ok := msgNames[h.Type]; !ok {
		return Header{}, malformed("unknown message type %d", uint16(h.Type))
	}
	return h, nil
}

// ReadMessage reads one message into buf (grown as needed) and returns its
// type and payload (aliasing buf).
func ReadMessage(r io.Reader, buf []byte) (MsgType, []byte, []byte, error) {
	if cap(buf) < HeaderSize {
		buf = make([]byte, 64<<10)
	}
	buf = buf[:HeaderSize]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, buf, err
	}
	h, err := DecodeHeader(buf)
	if err != nil {
		return 0, nil, buf, err
	}
	if cap(buf) < int(h.Length) {
		buf = make([]byte, h.Length)
	}
	p := buf[:h.Length]
	if _, err := io.ReadFull(r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, buf, err
	}
	return h.Type, p, buf, nil
}

// enc appends little-endian fields.
type enc struct{ b []byte }

func (e *enc) u8(v uint8)   { e.b = append(e.b, v) }
func (e *enc) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *enc) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *enc) bytes(v []byte) {
	e.u32(uint32(len(v)))
	e.b = append(e.b, v...)
}
func (e *enc) str(s string) { e.bytes([]byte(s)) }

// dec reads little-endian fields; the first short read sets err and every
// later read returns zero.
type dec struct {
	b    []byte
	err  error
	what string
}

func (d *dec) need(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b) < n {
		d.err = malformed("%s: truncated", d.what)
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *dec) u8() uint8 {
	if b := d.need(1); b != nil {
		return b[0]
	}
	return 0
}
func (d *dec) u16() uint16 {
	if b := d.need(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}
func (d *dec) u32() uint32 {
	if b := d.need(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}
func (d *dec) u64() uint64 {
	if b := d.need(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// bytes reads a length-prefixed byte string of at most max bytes.
func (d *dec) bytes(max int) []byte {
	n := d.u32()
	if d.err == nil && int64(n) > int64(max) {
		d.err = malformed("%s: field of %d bytes exceeds %d", d.what, n, max)
		return nil
	}
	return d.need(int(n))
}

func (d *dec) str(max int) string { return string(d.bytes(max)) }

// done checks that the whole payload was consumed.
func (d *dec) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = malformed("%s: %d trailing bytes", d.what, len(d.b))
	}
	return d.err
}
