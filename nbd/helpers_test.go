package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// memBackend is an in-memory Backend that records what it is asked and
// fails the test on any access outside the volume.
type memBackend struct {
	t    testing.TB
	mu   sync.Mutex
	data []byte

	flushes, fuaWrites, trims, zeroes int
	flushErr                          error
	writeHook                         func(off int64) // called before a write lands, outside the lock
	order                             []string
}

func newMem(t testing.TB, size int) *memBackend { return &memBackend{t: t, data: make([]byte, size)} }

func (m *memBackend) bounds(off int64, n int) error {
	if off < 0 || off+int64(n) > int64(len(m.data)) {
		m.t.Errorf("backend access outside the volume: [%d, +%d) of %d", off, n, len(m.data))
		return errors.New("out of range")
	}
	return nil
}

func (m *memBackend) ReadAt(p []byte, off int64) (int, error) {
	if err := m.bounds(off, len(p)); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(p, m.data[off:]), nil
}

// ReadAtNoWait serves even 4 KiB blocks "from cache" and refuses odd ones,
// so tests exercise both the inline and the worker read paths.
func (m *memBackend) ReadAtNoWait(p []byte, off int64) (int, error) {
	if (off/4096)%2 == 1 {
		return 0, syscall.EAGAIN
	}
	return m.ReadAt(p, off)
}

func (m *memBackend) WriteAt(p []byte, off int64) (int, error) {
	if err := m.bounds(off, len(p)); err != nil {
		return 0, err
	}
	if m.writeHook != nil {
		m.writeHook(off)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.order = append(m.order, fmt.Sprintf("w%d:%x", off, p[0]))
	return copy(m.data[off:], p), nil
}

func (m *memBackend) WriteAtFUA(p []byte, off int64) (int, error) {
	n, err := m.WriteAt(p, off)
	m.mu.Lock()
	m.fuaWrites++
	m.mu.Unlock()
	return n, err
}

func (m *memBackend) Flush() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flushes++
	return m.flushErr
}

func (m *memBackend) Trim(off, n int64) error {
	if err := m.bounds(off, int(n)); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.trims++
	clear(m.data[off : off+n])
	return nil
}

func (m *memBackend) WriteZeroes(off, n int64, noHole, fast bool) error {
	if err := m.bounds(off, int(n)); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.zeroes++
	clear(m.data[off : off+n])
	return nil
}

func (m *memBackend) snapshot() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.data)
}

// startServer serves one export named "r0" on a unix socket.
func startServer(t testing.TB, b Backend, size int64, mod func(*Export)) (*Server, string) {
	t.Helper()
	s := NewServer(nil)
	s.HandshakeTimeout = 5 * time.Second
	e := Export{Name: "r0", Description: "test volume", Size: size, Backend: b, MultiConn: true}
	if mod != nil {
		mod(&e)
	}
	if err := s.AddExport(e); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l, "r0")
	t.Cleanup(func() { s.Shutdown(t.Context()) })
	return s, path
}

// client is a minimal NBD client for tests.
type client struct {
	t  testing.TB
	c  net.Conn
	r  io.Reader
	hs uint16
}

func dial(t testing.TB, path string) *client {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	cl := &client{t: t, c: c, r: c}
	var hello [18]byte
	cl.read(hello[:])
	if binary.BigEndian.Uint64(hello[0:]) != magicNBD || binary.BigEndian.Uint64(hello[8:]) != magicIHaveOpt {
		t.Fatalf("bad server greeting % x", hello)
	}
	cl.hs = binary.BigEndian.Uint16(hello[16:])
	return cl
}

func (cl *client) read(p []byte) {
	cl.t.Helper()
	if _, err := io.ReadFull(cl.r, p); err != nil {
		cl.t.Fatalf("read: %v", err)
	}
}

func (cl *client) write(p []byte) {
	cl.t.Helper()
	if _, err := cl.c.Write(p); err != nil {
		cl.t.Fatalf("write: %v", err)
	}
}

func (cl *client) flags(f uint32) {
	cl.write(binary.BigEndian.AppendUint32(nil, f))
}

func (cl *client) option(opt uint32, data []byte) {
	b := binary.BigEndian.AppendUint64(nil, magicIHaveOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	cl.write(append(b, data...))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (cl *client) optReply() optReply {
	cl.t.Helper()
	var h [20]byte
	cl.read(h[:])
	if binary.BigEndian.Uint64(h[0:]) != magicOptReply {
		cl.t.Fatalf("bad option reply magic % x", h)
	}
	r := optReply{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:])}
	r.data = make([]byte, binary.BigEndian.Uint32(h[16:]))
	cl.read(r.data)
	return r
}

// replies reads option replies up to and including the final one.
func (cl *client) replies() []optReply {
	var out []optReply
	for {
		r := cl.optReply()
		out = append(out, r)
		if r.typ != repServer && r.typ != repInfo && r.typ != repMetaContext {
			return out
		}
	}
}

func goData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

func metaData(name string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// open does a full handshake with GO; structured selects structured
// replies and base:allocation.
func open(t testing.TB, path string, structured, blockSize bool) *client {
	t.Helper()
	cl := dial(t, path)
	cl.flags(clientFixedNewstyle | clientNoZeroes)
	if structured {
		cl.option(optStructuredReply, nil)
		if r := cl.optReply(); r.typ != repAck {
			t.Fatalf("structured reply: %#x", r.typ)
		}
		cl.option(optSetMetaContext, metaData("r0", metaContextAllocation))
		rs := cl.replies()
		if len(rs) != 2 || rs[0].typ != repMetaContext {
			t.Fatalf("set meta context: %+v", rs)
		}
	}
	var infos []uint16
	if blockSize {
		infos = append(infos, infoBlockSize)
	}
	cl.option(optGo, goData("r0", infos...))
	rs := cl.replies()
	if last := rs[len(rs)-1]; last.typ != repAck {
		t.Fatalf("GO failed: %#x %q", last.typ, last.data)
	}
	return cl
}

func (cl *client) request(typ, flags uint16, cookie, off uint64, length uint32, payload []byte) {
	b := encodeRequest(nil, &Request{Type: typ, Flags: flags, Cookie: cookie, Offset: off, Length: length})
	cl.write(append(b, payload...))
}

// simple reads a simple reply (and n bytes of data if it succeeded).
func (cl *client) simple(n int) (cookie uint64, errno uint32, data []byte) {
	cl.t.Helper()
	var h [16]byte
	cl.read(h[:])
	if m := binary.BigEndian.Uint32(h[0:]); m != magicSimpleReply {
		cl.t.Fatalf("expected simple reply, magic %#x", m)
	}
	errno = binary.BigEndian.Uint32(h[4:])
	cookie = binary.BigEndian.Uint64(h[8:])
	if errno == 0 && n > 0 {
		data = make([]byte, n)
		cl.read(data)
	}
	return
}

type chunk struct {
	flags, typ uint16
	cookie     uint64
	payload    []byte
}

func (cl *client) structured() chunk {
	cl.t.Helper()
	var h [20]byte
	cl.read(h[:])
	if m := binary.BigEndian.Uint32(h[0:]); m != magicStructReply {
		cl.t.Fatalf("expected structured reply, magic %#x", m)
	}
	c := chunk{flags: binary.BigEndian.Uint16(h[4:]), typ: binary.BigEndian.Uint16(h[6:]), cookie: binary.BigEndian.Uint64(h[8:])}
	c.payload = make([]byte, binary.BigEndian.Uint32(h[16:]))
	cl.read(c.payload)
	return c
}

// closed reports whether the server closed the connection.
func (cl *client) closed() bool {
	cl.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var b [1]byte
	_, err := cl.c.Read(b[:])
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}
