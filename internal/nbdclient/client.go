// Package nbdclient is a small NBD client for tests and tools: the fixed
// newstyle handshake with NBD_OPT_GO (falling back to NBD_OPT_EXPORT_NAME
// when a server does not know GO), simple replies, and READ, WRITE (with
// optional FUA), FLUSH and DISC, over a unix or TCP socket.
//
// A Client is safe for concurrent use: every request gets its own cookie
// and a single reader goroutine matches replies to requests, so several
// goroutines (or one using Start) keep several requests in flight on one
// connection. Written from the protocol document
// (NetworkBlockDevice/nbd doc/proto.md); structured replies, block status
// and TLS are not supported.
//
//	c, err := nbdclient.Dial(ctx, "unix", "/run/blkrep/r0.sock", nbdclient.Options{})
//	if err != nil { ... }          // *OptionError when the server refused the export
//	defer c.Close()
//	err = c.WriteAt(block, 4096, nbdclient.FUA)
package nbdclient

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Wire constants (doc/proto.md). Frozen by the protocol.
const (
	magicNBD         uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	magicIHaveOpt    uint64 = 0x49484156454F5054 // "IHAVEOPT"
	magicOptReply    uint64 = 0x0003e889045565a9
	magicRequest     uint32 = 0x25609513
	magicSimpleReply uint32 = 0x67446698

	flagFixedNewstyle   uint16 = 1 << 0
	flagNoZeroes        uint16 = 1 << 1
	clientFixedNewstyle uint32 = 1 << 0
	clientNoZeroes      uint32 = 1 << 1

	optExportName uint32 = 1
	optAbort      uint32 = 2
	optGo         uint32 = 7

	repAck  uint32 = 1
	repInfo uint32 = 3

	infoExport    uint16 = 0
	infoBlockSize uint16 = 3

	cmdRead  uint16 = 0
	cmdWrite uint16 = 1
	cmdDisc  uint16 = 2
	cmdFlush uint16 = 3

	cmdFlagFUA uint16 = 1 << 0

	maxString = 4096
	// maxOptReply bounds the data of one option reply we accept.
	maxOptReply = 64 << 10
)

// Transmission flags the server advertises (Client.Flags).
const (
	FlagHasFlags     uint16 = 1 << 0
	FlagReadOnly     uint16 = 1 << 1
	FlagSendFlush    uint16 = 1 << 2
	FlagSendFUA      uint16 = 1 << 3
	FlagCanMultiConn uint16 = 1 << 8
)

// WriteFlags modify a write.
type WriteFlags uint16

// FUA asks the server to make the write durable before replying.
const FUA WriteFlags = WriteFlags(cmdFlagFUA)

// Option reply error types (NBD_REP_ERR_*).
const (
	RepErrUnsup         uint32 = 1<<31 + 1
	RepErrPolicy        uint32 = 1<<31 + 2
	RepErrInvalid       uint32 = 1<<31 + 3
	RepErrPlatform      uint32 = 1<<31 + 4
	RepErrTLSReqd       uint32 = 1<<31 + 5
	RepErrUnknown       uint32 = 1<<31 + 6
	RepErrShutdown      uint32 = 1<<31 + 7
	RepErrBlockSizeReqd uint32 = 1<<31 + 8
	RepErrTooBig        uint32 = 1<<31 + 9
)

var repErrNames = map[uint32]string{
	RepErrUnsup: "NBD_REP_ERR_UNSUP", RepErrPolicy: "NBD_REP_ERR_POLICY", RepErrInvalid: "NBD_REP_ERR_INVALID",
	RepErrPlatform: "NBD_REP_ERR_PLATFORM", RepErrTLSReqd: "NBD_REP_ERR_TLS_REQD", RepErrUnknown: "NBD_REP_ERR_UNKNOWN",
	RepErrShutdown: "NBD_REP_ERR_SHUTDOWN", RepErrBlockSizeReqd: "NBD_REP_ERR_BLOCK_SIZE_REQD", RepErrTooBig: "NBD_REP_ERR_TOO_BIG",
}

// OptionError is the server's refusal of an option during the handshake,
// e.g. an export that is not served here ("volume r0 is Secondary on beta;
// the Primary is alpha").
type OptionError struct {
	Option  uint32
	Reply   uint32 // NBD_REP_ERR_*
	Message string // the server's message, possibly empty
}

func (e *OptionError) Error() string {
	name := repErrNames[e.Reply]
	if name == "" {
		name = fmt.Sprintf("error reply %#x", e.Reply)
	}
	what := "option"
	if e.Option == optGo {
		what = "export refused"
	}
	if e.Message == "" {
		return fmt.Sprintf("nbd: %s (%s)", what, name)
	}
	return fmt.Sprintf("nbd: %s: %s (%s)", what, e.Message, name)
}

// Errno is an error the server returned for a request (EIO, ENOSPC...).
type Errno uint32

// Errno values allowed on the wire.
const (
	EPERM     Errno = 1
	EIO       Errno = 5
	ENOMEM    Errno = 12
	EINVAL    Errno = 22
	ENOSPC    Errno = 28
	EOVERFLOW Errno = 75
	ENOTSUP   Errno = 95
	ESHUTDOWN Errno = 108
)

func (e Errno) Error() string {
	names := map[Errno]string{EPERM: "EPERM", EIO: "EIO", ENOMEM: "ENOMEM", EINVAL: "EINVAL",
		ENOSPC: "ENOSPC", EOVERFLOW: "EOVERFLOW", ENOTSUP: "ENOTSUP", ESHUTDOWN: "ESHUTDOWN"}
	if n, ok := names[e]; ok {
		return "nbd: server replied " + n
	}
	return fmt.Sprintf("nbd: server replied errno %d", uint32(e))
}

// ErrClosed is returned for requests on a closed client and wrapped into
// the error of requests that were in flight when the connection ended (the
// server may or may not have carried them out).
var ErrClosed = errors.New("nbd: connection closed")

// Options tune Dial and Handshake.
type Options struct {
	// Export is the export name; "" asks for the server's default export.
	Export string
	// HandshakeTimeout bounds the handshake; 0 means 10 s.
	HandshakeTimeout time.Duration
	// BlockSize asks for the block size constraints (NBD_INFO_BLOCK_SIZE);
	// a server may then refuse unaligned requests.
	BlockSize bool
}

// Client is one NBD connection in the transmission phase.
type Client struct {
	nc    net.Conn
	size  int64
	flags uint16
	// Block size constraints when the server sent them (0 otherwise).
	minBlock, prefBlock, maxBlock uint32

	wmu sync.Mutex // serialises request writes on nc
	bw  *bufio.Writer

	mu      sync.Mutex
	pending map[uint64]*Call
	cookie  uint64
	err     error // set once the connection is unusable
	done    chan struct{}
	closing bool
}

// Dial connects to network ("unix" or "tcp") addr and does the handshake.
// ctx bounds the dial and the handshake.
func Dial(ctx context.Context, network, addr string, o Options) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c, err := Handshake(ctx, nc, o)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// Handshake negotiates the export on an open connection and starts the
// reply reader. On error the caller closes nc.
func Handshake(ctx context.Context, nc net.Conn, o Options) (*Client, error) {
	to := o.HandshakeTimeout
	if to <= 0 {
		to = 10 * time.Second
	}
	deadline := time.Now().Add(to)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if len(o.Export) > maxString {
		return nil, fmt.Errorf("nbd: export name longer than %d bytes", maxString)
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	c := &Client{nc: nc, bw: bufio.NewWriterSize(nc, 64<<10), pending: map[uint64]*Call{}, done: make(chan struct{})}
	if err := c.negotiate(br, o); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("nbd handshake: %w (%v)", ctx.Err(), err)
		}
		return nil, err
	}
	if !stop() {
		return nil, fmt.Errorf("nbd handshake: %w", ctx.Err())
	}
	nc.SetDeadline(time.Time{})
	go c.readLoop(br)
	return c, nil
}

func (c *Client) negotiate(br *bufio.Reader, o Options) error {
	var hello [18]byte
	if _, err := io.ReadFull(br, hello[:]); err != nil {
		return fmt.Errorf("nbd handshake: reading the greeting: %w", err)
	}
	if binary.BigEndian.Uint64(hello[0:8]) != magicNBD {
		return fmt.Errorf("nbd handshake: not an NBD server (greeting % x)", hello[:8])
	}
	if binary.BigEndian.Uint64(hello[8:16]) != magicIHaveOpt {
		return errors.New("nbd handshake: the server speaks oldstyle, not newstyle")
	}
	hs := binary.BigEndian.Uint16(hello[16:18])
	if hs&flagFixedNewstyle == 0 {
		return errors.New("nbd handshake: the server does not speak fixed newstyle")
	}
	cf := clientFixedNewstyle
	noZeroes := hs&flagNoZeroes != 0
	if noZeroes {
		cf |= clientNoZeroes
	}
	if _, err := c.nc.Write(binary.BigEndian.AppendUint32(nil, cf)); err != nil {
		return fmt.Errorf("nbd handshake: %w", err)
	}

	// NBD_OPT_GO: name, then the information requests.
	data := binary.BigEndian.AppendUint32(nil, uint32(len(o.Export)))
	data = append(data, o.Export...)
	if o.BlockSize {
		data = binary.BigEndian.AppendUint16(data, 1)
		data = binary.BigEndian.AppendUint16(data, infoBlockSize)
	} else {
		data = binary.BigEndian.AppendUint16(data, 0)
	}
	if err := c.sendOption(optGo, data); err != nil {
		return err
	}
	gotExport := false
	for {
		typ, payload, err := readOptReply(br, optGo)
		if err != nil {
			return err
		}
		switch {
		case typ == repInfo:
			if len(payload) < 2 {
				return errors.New("nbd handshake: short NBD_REP_INFO")
			}
			switch binary.BigEndian.Uint16(payload) {
			case infoExport:
				if len(payload) != 12 {
					return fmt.Errorf("nbd handshake: NBD_INFO_EXPORT of %d bytes", len(payload))
				}
				c.size = int64(binary.BigEndian.Uint64(payload[2:10]))
				c.flags = binary.BigEndian.Uint16(payload[10:12])
				gotExport = true
			case infoBlockSize:
				if len(payload) != 14 {
					return fmt.Errorf("nbd handshake: NBD_INFO_BLOCK_SIZE of %d bytes", len(payload))
				}
				c.minBlock = binary.BigEndian.Uint32(payload[2:6])
				c.prefBlock = binary.BigEndian.Uint32(payload[6:10])
				c.maxBlock = binary.BigEndian.Uint32(payload[10:14])
			}
			// Other information types are ignored, as the spec allows.
		case typ == repAck:
			if !gotExport {
				return errors.New("nbd handshake: NBD_OPT_GO acknowledged without NBD_INFO_EXPORT")
			}
			return c.checkSize()
		case typ == RepErrUnsup:
			// An old server without GO: EXPORT_NAME has no error reply
			// (the server closes the connection to refuse).
			return c.exportName(br, o.Export, noZeroes)
		case typ&(1<<31) != 0:
			c.abort(br)
			return &OptionError{Option: optGo, Reply: typ, Message: printable(payload)}
		default:
			return fmt.Errorf("nbd handshake: unexpected reply type %#x to NBD_OPT_GO", typ)
		}
	}
}

// abort ends a refused handshake politely (NBD_OPT_ABORT, whose answer
// is waited for briefly), so the server sees a client that gave up rather
// than one that vanished.
func (c *Client) abort(br *bufio.Reader) {
	c.nc.SetDeadline(time.Now().Add(time.Second))
	if c.sendOption(optAbort, nil) == nil {
		readOptReply(br, optAbort)
	}
}

func (c *Client) checkSize() error {
	if c.size < 0 {
		return fmt.Errorf("nbd handshake: export size %d out of range", c.size)
	}
	return nil
}

func (c *Client) exportName(br *bufio.Reader, name string, noZeroes bool) error {
	if err := c.sendOption(optExportName, []byte(name)); err != nil {
		return err
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		return fmt.Errorf("nbd handshake: the server closed the connection after NBD_OPT_EXPORT_NAME (export %q refused?): %w", name, err)
	}
	c.size = int64(binary.BigEndian.Uint64(b[0:8]))
	c.flags = binary.BigEndian.Uint16(b[8:10])
	return c.checkSize()
}

func (c *Client) sendOption(opt uint32, data []byte) error {
	b := binary.BigEndian.AppendUint64(nil, magicIHaveOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	if _, err := c.nc.Write(append(b, data...)); err != nil {
		return fmt.Errorf("nbd handshake: sending option %d: %w", opt, err)
	}
	return nil
}

func readOptReply(br *bufio.Reader, opt uint32) (uint32, []byte, error) {
	var h [20]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, fmt.Errorf("nbd handshake: reading the reply to option %d: %w", opt, err)
	}
	if binary.BigEndian.Uint64(h[0:8]) != magicOptReply {
		return 0, nil, fmt.Errorf("nbd handshake: bad option reply magic % x", h[0:8])
	}
	if got := binary.BigEndian.Uint32(h[8:12]); got != opt {
		return 0, nil, fmt.Errorf("nbd handshake: reply for option %d while waiting for %d", got, opt)
	}
	typ := binary.BigEndian.Uint32(h[12:16])
	n := binary.BigEndian.Uint32(h[16:20])
	if n > maxOptReply {
		return 0, nil, fmt.Errorf("nbd handshake: option reply of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		return 0, nil, fmt.Errorf("nbd handshake: reading the reply to option %d: %w", opt, err)
	}
	return typ, p, nil
}

// printable keeps a server message readable in an error.
func printable(b []byte) string {
	if len(b) > maxString {
		b = b[:maxString]
	}
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 && r != '\t' || r == 0x7f {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}

// Size is the export's size in bytes.
func (c *Client) Size() int64 { return c.size }

// Flags are the transmission flags the server advertised.
func (c *Client) Flags() uint16 { return c.flags }

// BlockSizes are the server's minimum, preferred and maximum block sizes,
// zero when it sent none.
func (c *Client) BlockSizes() (min, preferred, max uint32) {
	return c.minBlock, c.prefBlock, c.maxBlock
}

// RemoteAddr is the server's address.
func (c *Client) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Call is one request in flight. Done is closed when the reply arrived or
// the connection ended; then Err is set (nil on success) and, for a read,
// the buffer is filled.
type Call struct {
	Done chan struct{}
	Err  error
	// Replied is when the reply was read (zero if none came).
	Replied time.Time

	cmd uint16
	buf []byte // read destination
}

// Wait blocks until the call is done or ctx ends; a ctx error leaves the
// request in flight (NBD cannot cancel it).
func (cl *Call) Wait(ctx context.Context) error {
	select {
	case <-cl.Done:
		return cl.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// StartWrite sends a write of p at off and returns at once; p may be
// reused when StartWrite returns.
func (c *Client) StartWrite(p []byte, off int64, f WriteFlags) *Call {
	return c.start(cmdWrite, uint16(f), off, p, nil)
}

// StartRead sends a read of len(p) bytes at off; p is filled before Done
// is closed and must not be touched until then.
func (c *Client) StartRead(p []byte, off int64) *Call {
	return c.start(cmdRead, 0, off, nil, p)
}

// StartFlush sends a flush.
func (c *Client) StartFlush() *Call { return c.start(cmdFlush, 0, 0, nil, nil) }

// WriteAt writes p at off and waits for the reply.
func (c *Client) WriteAt(p []byte, off int64, f WriteFlags) error {
	cl := c.StartWrite(p, off, f)
	<-cl.Done
	return cl.Err
}

// ReadAt reads len(p) bytes at off.
func (c *Client) ReadAt(p []byte, off int64) error {
	cl := c.StartRead(p, off)
	<-cl.Done
	return cl.Err
}

// Flush asks the server to make every completed write durable.
func (c *Client) Flush() error {
	cl := c.StartFlush()
	<-cl.Done
	return cl.Err
}

// ReadAtContext is ReadAt bounded by ctx. If ctx ends first the request
// stays in flight and its data is discarded when it arrives; p is not
// written after ReadAtContext returns.
func (c *Client) ReadAtContext(ctx context.Context, p []byte, off int64) error {
	tmp := make([]byte, len(p))
	cl := c.start(cmdRead, 0, off, nil, tmp)
	select {
	case <-cl.Done:
		if cl.Err == nil {
			copy(p, tmp)
		}
		return cl.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) start(cmd, flags uint16, off int64, payload, buf []byte) *Call {
	cl := &Call{Done: make(chan struct{}), cmd: cmd, buf: buf}
	length := len(payload)
	if cmd == cmdRead {
		length = len(buf)
	}
	switch {
	case off < 0 || uint64(length) > 1<<32-1:
		return failed(cl, fmt.Errorf("nbd: request out of range (offset %d, length %d)", off, length))
	case cmd == cmdWrite && c.flags&FlagReadOnly != 0:
		return failed(cl, errors.New("nbd: the export is read-only"))
	case flags&cmdFlagFUA != 0 && c.flags&FlagSendFUA == 0:
		return failed(cl, errors.New("nbd: the server does not support FUA"))
	case cmd == cmdFlush && c.flags&FlagSendFlush == 0:
		return failed(cl, errors.New("nbd: the server does not support FLUSH"))
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return failed(cl, err)
	}
	c.cookie++
	cookie := c.cookie
	c.pending[cookie] = cl
	c.mu.Unlock()

	var h [28]byte
	binary.BigEndian.PutUint32(h[0:4], magicRequest)
	binary.BigEndian.PutUint16(h[4:6], flags)
	binary.BigEndian.PutUint16(h[6:8], cmd)
	binary.BigEndian.PutUint64(h[8:16], cookie)
	binary.BigEndian.PutUint64(h[16:24], uint64(off))
	binary.BigEndian.PutUint32(h[24:28], uint32(length))
	c.wmu.Lock()
	_, err := c.bw.Write(h[:])
	if err == nil && cmd == cmdWrite {
		_, err = c.bw.Write(payload)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		// The request may be partly sent: the stream is unusable.
		c.fail(fmt.Errorf("%w: sending a request: %v", ErrClosed, err))
	}
	return cl
}

func failed(cl *Call, err error) *Call {
	cl.Err = err
	close(cl.Done)
	return cl
}

// readLoop matches replies to calls until the connection ends.
func (c *Client) readLoop(br *bufio.Reader) {
	var h [16]byte
	for {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			c.fail(fmt.Errorf("%w: %v", ErrClosed, err))
			return
		}
		if m := binary.BigEndian.Uint32(h[0:4]); m != magicSimpleReply {
			c.fail(fmt.Errorf("%w: bad reply magic %#x (structured replies were not negotiated)", ErrClosed, m))
			return
		}
		errno := binary.BigEndian.Uint32(h[4:8])
		cookie := binary.BigEndian.Uint64(h[8:16])
		c.mu.Lock()
		cl := c.pending[cookie]
		delete(c.pending, cookie)
		c.mu.Unlock()
		if cl == nil {
			c.fail(fmt.Errorf("%w: reply for unknown cookie %d", ErrClosed, cookie))
			return
		}
		if errno == 0 && cl.cmd == cmdRead {
			if _, err := io.ReadFull(br, cl.buf); err != nil {
				cl.Err = fmt.Errorf("%w: reading the data of a read: %v", ErrClosed, err)
				cl.Replied = time.Now()
				close(cl.Done)
				c.fail(cl.Err)
				return
			}
		}
		cl.Replied = time.Now()
		if errno != 0 {
			cl.Err = Errno(errno)
		}
		close(cl.Done)
	}
}

// fail ends the connection: every call in flight gets err.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
		if c.closing {
			c.err = ErrClosed
		}
		close(c.done)
	}
	err = c.err
	p := c.pending
	c.pending = map[uint64]*Call{}
	c.mu.Unlock()
	c.nc.Close()
	for _, cl := range p {
		cl.Err = err
		close(cl.Done)
	}
}

// Err is why the connection ended, nil while it is usable.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Dead is closed when the connection ended.
func (c *Client) Dead() <-chan struct{} { return c.done }

// InFlight is the number of requests waiting for a reply.
func (c *Client) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Close sends NBD_CMD_DISC and closes the connection. Requests still in
// flight fail with ErrClosed (the server may have carried them out): wait
// for them first for an orderly end.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	c.mu.Unlock()
	var h [28]byte
	binary.BigEndian.PutUint32(h[0:4], magicRequest)
	binary.BigEndian.PutUint16(h[6:8], cmdDisc)
	c.wmu.Lock()
	c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	c.bw.Write(h[:])
	err := c.bw.Flush()
	c.wmu.Unlock()
	c.fail(ErrClosed)
	if err != nil {
		return fmt.Errorf("nbd: sending NBD_CMD_DISC: %w", err)
	}
	return nil
}

// Abort closes the connection without NBD_CMD_DISC (a client that
// vanished).
func (c *Client) Abort() { c.fail(ErrClosed) }
