package interop

// A minimal NBD client written from the protocol document
// (NetworkBlockDevice/nbd doc/proto.md), independent of package nbd so a
// wrong constant on the server side is caught rather than shared. It sends
// exactly what a test asks for, including what real clients never send.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// Protocol constants (proto.md). Frozen by the protocol.
const (
	nbdMagic         uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	ihaveOpt         uint64 = 0x49484156454F5054 // "IHAVEOPT"
	optReplyMagic    uint64 = 0x0003e889045565a9
	requestMagic     uint32 = 0x25609513
	simpleReplyMagic uint32 = 0x67446698
	structReplyMagic uint32 = 0x668e33ef

	flagFixedNewstyle   uint16 = 1 << 0
	flagNoZeroes        uint16 = 1 << 1
	clientFixedNewstyle uint32 = 1 << 0
	clientNoZeroes      uint32 = 1 << 1

	optExportName      uint32 = 1
	optAbort           uint32 = 2
	optList            uint32 = 3
	optStartTLS        uint32 = 5
	optInfo            uint32 = 6
	optGo              uint32 = 7
	optStructuredReply uint32 = 8
	optListMetaContext uint32 = 9
	optSetMetaContext  uint32 = 10

	repAck         uint32 = 1
	repServer      uint32 = 2
	repInfo        uint32 = 3
	repMetaContext uint32 = 4
	repErrBit      uint32 = 1 << 31
	repErrUnsup    uint32 = repErrBit + 1
	repErrPolicy   uint32 = repErrBit + 2
	repErrInvalid  uint32 = repErrBit + 3
	repErrUnknown  uint32 = repErrBit + 6
	repErrTooBig   uint32 = repErrBit + 9

	infoExport    uint16 = 0
	infoName      uint16 = 1
	infoDesc      uint16 = 2
	infoBlockSize uint16 = 3

	tflagHasFlags   uint16 = 1 << 0
	tflagReadOnly   uint16 = 1 << 1
	tflagSendFlush  uint16 = 1 << 2
	tflagSendFUA    uint16 = 1 << 3
	tflagSendTrim   uint16 = 1 << 5
	tflagSendZeroes uint16 = 1 << 6
	tflagSendDF     uint16 = 1 << 7
	tflagMultiConn  uint16 = 1 << 8
	tflagSendCache  uint16 = 1 << 10
	tflagFastZero   uint16 = 1 << 11

	cmdRead        uint16 = 0
	cmdWrite       uint16 = 1
	cmdDisc        uint16 = 2
	cmdFlush       uint16 = 3
	cmdTrim        uint16 = 4
	cmdCache       uint16 = 5
	cmdWriteZeroes uint16 = 6
	cmdBlockStatus uint16 = 7

	cmdFlagFUA      uint16 = 1 << 0
	cmdFlagNoHole   uint16 = 1 << 1
	cmdFlagDF       uint16 = 1 << 2
	cmdFlagReqOne   uint16 = 1 << 3
	cmdFlagFastZero uint16 = 1 << 4

	replyFlagDone         uint16 = 1 << 0
	replyTypeNone         uint16 = 0
	replyTypeOffsetData   uint16 = 1
	replyTypeOffsetHole   uint16 = 2
	replyTypeBlockStatus  uint16 = 5
	replyTypeError        uint16 = 1<<15 + 1
	replyTypeErrorOffset  uint16 = 1<<15 + 2
	stateHole             uint32 = 1 << 0
	stateZero             uint32 = 1 << 1
	maxPayload                   = 32 << 20
	metaContextAllocation        = "base:allocation"

	errnoEPERM     uint32 = 1
	errnoEIO       uint32 = 5
	errnoEINVAL    uint32 = 22
	errnoENOSPC    uint32 = 28
	errnoEOVERFLOW uint32 = 75
	errnoENOTSUP   uint32 = 95
)

// ioTimeout bounds every single read or write on a raw connection.
const ioTimeout = 15 * time.Second

// wire is a raw connection to the daemon.
type wire struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dialWire(t testing.TB, network, addr string) *wire {
	t.Helper()
	nc, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, addr, err)
	}
	w := &wire{t: t, nc: nc, br: bufio.NewReaderSize(nc, 1<<20)}
	t.Cleanup(func() { nc.Close() })
	return w
}

// dial connects to the daemon's unix socket.
func (d *daemon) dial(t testing.TB) *wire {
	return dialWire(t, "unix", d.sockPath)
}

func (w *wire) close() { w.nc.Close() }

// send writes b; the error is returned because some tests expect the
// server to have hung up.
func (w *wire) send(b []byte) error {
	w.nc.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := w.nc.Write(b)
	return err
}

// sendWithin is send with its own deadline.
func (w *wire) sendWithin(b []byte, d time.Duration) error {
	w.nc.SetWriteDeadline(time.Now().Add(d))
	_, err := w.nc.Write(b)
	return err
}

func (w *wire) mustSend(b []byte) {
	w.t.Helper()
	if err := w.send(b); err != nil {
		w.t.Fatalf("send %d bytes: %v", len(b), err)
	}
}

func (w *wire) read(n int) []byte {
	w.t.Helper()
	w.nc.SetReadDeadline(time.Now().Add(ioTimeout))
	b := make([]byte, n)
	if _, err := io.ReadFull(w.br, b); err != nil {
		w.t.Fatalf("reading %d bytes from the server: %v", n, err)
	}
	return b
}

// expectClosed asserts that the server hangs up within timeout without
// sending anything more.
func (w *wire) expectClosed(timeout time.Duration) {
	w.t.Helper()
	w.nc.SetReadDeadline(time.Now().Add(timeout))
	n, err := io.Copy(io.Discard, w.br)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		w.t.Fatalf("server kept the connection open for %v (received %d bytes meanwhile)", timeout, n)
	case err != nil && !errors.Is(err, syscall.ECONNRESET):
		w.t.Fatalf("waiting for the server to close: %v", err)
	case n != 0:
		w.t.Fatalf("server sent %d unexpected bytes before closing", n)
	}
}

// greeting reads the newstyle greeting and returns the handshake flags.
func (w *wire) greeting() uint16 {
	w.t.Helper()
	b := w.read(18)
	if m := binary.BigEndian.Uint64(b[0:]); m != nbdMagic {
		w.t.Fatalf("greeting magic %#x, want NBDMAGIC", m)
	}
	if m := binary.BigEndian.Uint64(b[8:]); m != ihaveOpt {
		w.t.Fatalf("greeting second magic %#x, want IHAVEOPT (newstyle)", m)
	}
	f := binary.BigEndian.Uint16(b[16:])
	if f&flagFixedNewstyle == 0 {
		w.t.Fatalf("handshake flags %#x lack FIXED_NEWSTYLE", f)
	}
	return f
}

// hello reads the greeting and sends client flags.
func (w *wire) hello(clientFlags uint32) {
	w.t.Helper()
	w.greeting()
	w.mustSend(binary.BigEndian.AppendUint32(nil, clientFlags))
}

func appendOption(b []byte, opt uint32, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, ihaveOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func (w *wire) sendOption(opt uint32, data []byte) {
	w.t.Helper()
	w.mustSend(appendOption(nil, opt, data))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (r optReply) isErr() bool { return r.typ&repErrBit != 0 }

func (r optReply) String() string {
	return fmt.Sprintf("opt %d reply %#x data %q", r.opt, r.typ, r.data)
}

func (w *wire) readOptReply() optReply {
	w.t.Helper()
	h := w.read(20)
	if m := binary.BigEndian.Uint64(h[0:]); m != optReplyMagic {
		w.t.Fatalf("option reply magic %#x, want %#x", m, optReplyMagic)
	}
	r := optReply{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:])}
	n := binary.BigEndian.Uint32(h[16:])
	if n > 1<<20 {
		w.t.Fatalf("option reply of %d bytes", n)
	}
	r.data = w.read(int(n))
	return r
}

// expectOptReply reads one reply and checks the option and type echoed.
func (w *wire) expectOptReply(opt, typ uint32) optReply {
	w.t.Helper()
	r := w.readOptReply()
	if r.opt != opt || r.typ != typ {
		w.t.Fatalf("got %v, want option %d reply type %#x", r, opt, typ)
	}
	return r
}

func infoGoData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

func metaContextData(name string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// exportInfo is what NBD_OPT_INFO/GO told us.
type exportInfo struct {
	size                 uint64
	flags                uint16
	name, description    string
	minBS, prefBS, maxBS uint32
}

// infoGo sends NBD_OPT_INFO or NBD_OPT_GO and reads replies up to the ACK;
// an error reply is returned as such.
func (w *wire) infoGo(opt uint32, name string, infos ...uint16) (exportInfo, *optReply) {
	w.t.Helper()
	w.sendOption(opt, infoGoData(name, infos...))
	var ei exportInfo
	gotExport := false
	for {
		r := w.readOptReply()
		if r.opt != opt {
			w.t.Fatalf("reply for option %d while waiting for %d: %v", r.opt, opt, r)
		}
		if r.isErr() {
			return ei, &r
		}
		switch r.typ {
		case repAck:
			if !gotExport {
				w.t.Fatalf("ACK to option %d without NBD_INFO_EXPORT", opt)
			}
			return ei, nil
		case repInfo:
			if len(r.data) < 2 {
				w.t.Fatalf("short NBD_REP_INFO: %v", r)
			}
			switch it := binary.BigEndian.Uint16(r.data); it {
			case infoExport:
				if len(r.data) != 12 {
					w.t.Fatalf("NBD_INFO_EXPORT of %d bytes", len(r.data))
				}
				ei.size = binary.BigEndian.Uint64(r.data[2:])
				ei.flags = binary.BigEndian.Uint16(r.data[10:])
				gotExport = true
			case infoName:
				ei.name = string(r.data[2:])
			case infoDesc:
				ei.description = string(r.data[2:])
			case infoBlockSize:
				if len(r.data) != 14 {
					w.t.Fatalf("NBD_INFO_BLOCK_SIZE of %d bytes", len(r.data))
				}
				ei.minBS = binary.BigEndian.Uint32(r.data[2:])
				ei.prefBS = binary.BigEndian.Uint32(r.data[6:])
				ei.maxBS = binary.BigEndian.Uint32(r.data[10:])
			}
		default:
			w.t.Fatalf("unexpected reply to option %d: %v", opt, r)
		}
	}
}

// ---------------------------------------------------------------------------
// Transmission phase

// session is a client in the transmission phase.
type session struct {
	*wire
	info       exportInfo
	structured bool
	metaID     uint32 // base:allocation context id, when negotiated
	hasMeta    bool
	cookie     uint64
	pending    map[uint64]request
}

// request is one request as sent.
type request struct {
	Flags, Type uint16
	Cookie      uint64
	Offset      uint64
	Length      uint32
}

type sessionOpts struct {
	tcp        bool // dial the TCP listener instead of the unix socket
	structured bool // NBD_OPT_STRUCTURED_REPLY
	metaAlloc  bool // NBD_OPT_SET_META_CONTEXT base:allocation (needs structured)
	blockSize  bool // request NBD_INFO_BLOCK_SIZE: the server then enforces alignment
}

// connect negotiates a session with NBD_OPT_GO on the daemon's volume.
func (d *daemon) connect(t testing.TB, o sessionOpts) *session {
	t.Helper()
	var w *wire
	if o.tcp {
		w = dialWire(t, "tcp", d.tcpAddr)
	} else {
		w = d.dial(t)
	}
	return w.negotiate(o)
}

func (w *wire) negotiate(o sessionOpts) *session {
	w.t.Helper()
	w.hello(clientFixedNewstyle | clientNoZeroes)
	return w.negotiateAfterHello(o)
}

// negotiateAfterHello continues a handshake whose greeting and client flags
// are done: options as asked, then NBD_OPT_GO.
func (w *wire) negotiateAfterHello(o sessionOpts) *session {
	w.t.Helper()
	s := &session{wire: w, pending: map[uint64]request{}}
	if o.structured {
		w.sendOption(optStructuredReply, nil)
		w.expectOptReply(optStructuredReply, repAck)
		s.structured = true
	}
	if o.metaAlloc {
		w.sendOption(optSetMetaContext, metaContextData(volumeName, metaContextAllocation))
		r := w.expectOptReply(optSetMetaContext, repMetaContext)
		if len(r.data) < 4 || string(r.data[4:]) != metaContextAllocation {
			w.t.Fatalf("meta context reply %v", r)
		}
		s.metaID = binary.BigEndian.Uint32(r.data)
		s.hasMeta = true
		w.expectOptReply(optSetMetaContext, repAck)
	}
	var infos []uint16
	if o.blockSize {
		infos = append(infos, infoBlockSize)
	}
	ei, er := w.infoGo(optGo, volumeName, infos...)
	if er != nil {
		w.t.Fatalf("NBD_OPT_GO refused: %v", er)
	}
	s.info = ei
	return s
}

func appendRequest(b []byte, r request) []byte {
	b = binary.BigEndian.AppendUint32(b, requestMagic)
	b = binary.BigEndian.AppendUint16(b, r.Flags)
	b = binary.BigEndian.AppendUint16(b, r.Type)
	b = binary.BigEndian.AppendUint64(b, r.Cookie)
	b = binary.BigEndian.AppendUint64(b, r.Offset)
	return binary.BigEndian.AppendUint32(b, r.Length)
}

// encode registers a request and returns its bytes (with the payload for
// writes) without sending them.
func (s *session) encode(b []byte, typ, flags uint16, off uint64, length uint32, payload []byte) []byte {
	s.cookie++
	r := request{Flags: flags, Type: typ, Cookie: s.cookie<<8 | 0x5a, Offset: off, Length: length}
	s.pending[r.Cookie] = r
	return append(appendRequest(b, r), payload...)
}

// submit sends a request (with payload for writes) without waiting and
// returns its cookie.
func (s *session) submit(typ, flags uint16, off uint64, length uint32, payload []byte) uint64 {
	s.t.Helper()
	s.mustSend(s.encode(nil, typ, flags, off, length, payload))
	return s.cookie<<8 | 0x5a
}

type extent struct {
	length uint32
	flags  uint32
}

// reply is a complete answer to one request.
type reply struct {
	cookie     uint64
	errno      uint32
	errMsg     string
	data       []byte // reads
	extents    []extent
	structured bool
}

// next reads the next complete reply (all chunks up to DONE for a
// structured reply; chunks of different requests are not interleaved by
// this test client's use, which is checked).
func (s *session) next() reply {
	s.t.Helper()
	magic := binary.BigEndian.Uint32(s.read(4))
	switch magic {
	case simpleReplyMagic:
		h := s.read(12)
		rp := reply{errno: binary.BigEndian.Uint32(h[0:]), cookie: binary.BigEndian.Uint64(h[4:])}
		req := s.take(rp.cookie)
		if req.Type == cmdRead {
			if s.structured {
				s.t.Fatalf("simple reply to NBD_CMD_READ after structured replies were negotiated")
			}
			if rp.errno == 0 {
				rp.data = s.read(int(req.Length))
			}
		}
		return rp
	case structReplyMagic:
	default:
		s.t.Fatalf("reply magic %#x", magic)
	}
	if !s.structured {
		s.t.Fatalf("structured reply without NBD_OPT_STRUCTURED_REPLY")
	}
	rp := reply{structured: true}
	var req request
	for first := true; ; first = false {
		if !first {
			if m := binary.BigEndian.Uint32(s.read(4)); m != structReplyMagic {
				s.t.Fatalf("reply magic %#x inside a structured reply", m)
			}
		}
		h := s.read(16)
		flags := binary.BigEndian.Uint16(h[0:])
		typ := binary.BigEndian.Uint16(h[2:])
		cookie := binary.BigEndian.Uint64(h[4:])
		n := binary.BigEndian.Uint32(h[12:])
		if n > maxPayload+1024 {
			s.t.Fatalf("structured chunk of %d bytes", n)
		}
		if first {
			rp.cookie = cookie
			var ok bool
			if req, ok = s.pending[cookie]; !ok {
				s.t.Fatalf("structured reply with unknown cookie %#x", cookie)
			}
			if req.Type == cmdRead && rp.data == nil {
				rp.data = make([]byte, req.Length)
			}
		} else if cookie != rp.cookie {
			s.t.Fatalf("chunks of cookies %#x and %#x interleaved", rp.cookie, cookie)
		}
		body := s.read(int(n))
		switch typ {
		case replyTypeNone:
			if n != 0 || flags&replyFlagDone == 0 {
				s.t.Fatalf("NBD_REPLY_TYPE_NONE with length %d flags %#x", n, flags)
			}
		case replyTypeOffsetData, replyTypeOffsetHole:
			if req.Type != cmdRead || n < 8 {
				s.t.Fatalf("data chunk type %d of %d bytes for command %d", typ, n, req.Type)
			}
			off := binary.BigEndian.Uint64(body)
			var l uint64
			if typ == replyTypeOffsetData {
				l = uint64(n - 8)
			} else {
				l = uint64(binary.BigEndian.Uint32(body[8:]))
			}
			if off < req.Offset || off+l > req.Offset+uint64(req.Length) || l == 0 {
				s.t.Fatalf("data chunk [%d,+%d) outside request [%d,+%d)", off, l, req.Offset, req.Length)
			}
			if typ == replyTypeOffsetData {
				copy(rp.data[off-req.Offset:], body[8:])
			}
		case replyTypeBlockStatus:
			if req.Type != cmdBlockStatus || n < 12 || (n-4)%8 != 0 {
				s.t.Fatalf("block status chunk of %d bytes for command %d", n, req.Type)
			}
			if id := binary.BigEndian.Uint32(body); id != s.metaID {
				s.t.Fatalf("block status for context %d, negotiated %d", id, s.metaID)
			}
			for p := body[4:]; len(p) > 0; p = p[8:] {
				rp.extents = append(rp.extents, extent{binary.BigEndian.Uint32(p), binary.BigEndian.Uint32(p[4:])})
			}
		case replyTypeError, replyTypeErrorOffset:
			if n < 6 {
				s.t.Fatalf("error chunk of %d bytes", n)
			}
			rp.errno = binary.BigEndian.Uint32(body)
			ml := int(binary.BigEndian.Uint16(body[4:]))
			if 6+ml > len(body) {
				s.t.Fatalf("error chunk message length %d in %d bytes", ml, n)
			}
			rp.errMsg = string(body[6 : 6+ml])
			if rp.errno == 0 {
				s.t.Fatalf("error chunk with errno 0")
			}
		default:
			s.t.Fatalf("unknown structured reply type %#x", typ)
		}
		if flags&replyFlagDone != 0 {
			break
		}
	}
	s.take(rp.cookie)
	if rp.errno != 0 {
		rp.data = nil
	}
	return rp
}

func (s *session) take(cookie uint64) request {
	s.t.Helper()
	r, ok := s.pending[cookie]
	if !ok {
		s.t.Fatalf("reply for unknown cookie %#x", cookie)
	}
	delete(s.pending, cookie)
	return r
}

// do sends one request and waits for its reply.
func (s *session) do(typ, flags uint16, off uint64, length uint32, payload []byte) reply {
	s.t.Helper()
	c := s.submit(typ, flags, off, length, payload)
	r := s.next()
	if r.cookie != c {
		s.t.Fatalf("reply cookie %#x, want %#x", r.cookie, c)
	}
	return r
}

func (s *session) pread(off uint64, n uint32, flags uint16) ([]byte, uint32) {
	s.t.Helper()
	r := s.do(cmdRead, flags, off, n, nil)
	return r.data, r.errno
}

func (s *session) pwrite(off uint64, p []byte, flags uint16) uint32 {
	s.t.Helper()
	return s.do(cmdWrite, flags, off, uint32(len(p)), p).errno
}

func (s *session) flush() uint32 {
	s.t.Helper()
	return s.do(cmdFlush, 0, 0, 0, nil).errno
}

// mustRead reads and fails the test on an error.
func (s *session) mustRead(off uint64, n uint32) []byte {
	s.t.Helper()
	b, e := s.pread(off, n, 0)
	if e != 0 {
		s.t.Fatalf("read [%d,+%d): errno %d", off, n, e)
	}
	return b
}

func (s *session) mustWrite(off uint64, p []byte) {
	s.t.Helper()
	if e := s.pwrite(off, p, 0); e != 0 {
		s.t.Fatalf("write [%d,+%d): errno %d", off, len(p), e)
	}
}

// disconnect sends NBD_CMD_DISC and expects the server to close.
func (s *session) disconnect() {
	s.t.Helper()
	if len(s.pending) != 0 {
		s.t.Fatalf("disconnect with %d replies outstanding", len(s.pending))
	}
	s.mustSend(appendRequest(nil, request{Type: cmdDisc, Cookie: 0xd15c}))
	s.expectClosed(5 * time.Second)
}

// expectErrno asserts a request's outcome.
func expectErrno(t testing.TB, what string, got, want uint32) {
	t.Helper()
	if got != want {
		t.Errorf("%s: errno %d (%s), want %d (%s)", what, got, errnoName(got), want, errnoName(want))
	}
}

func errnoName(e uint32) string {
	switch e {
	case 0:
		return "success"
	case errnoEPERM:
		return "EPERM"
	case errnoEIO:
		return "EIO"
	case errnoEINVAL:
		return "EINVAL"
	case errnoENOSPC:
		return "ENOSPC"
	case errnoEOVERFLOW:
		return "EOVERFLOW"
	case errnoENOTSUP:
		return "ENOTSUP"
	}
	return fmt.Sprintf("errno %d", e)
}
