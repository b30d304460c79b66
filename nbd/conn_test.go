package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestReadWriteRoundTrip(t *testing.T) {
	m := newMem(t, 1<<20)
	_, path := startServer(t, m, 1<<20, nil)
	cl := open(t, path, false, false)
	data := bytes.Repeat([]byte{0xa5}, 8192)
	cl.request(CmdWrite, 0, 1, 4096, 8192, data)
	if c, e, _ := cl.simple(0); c != 1 || e != 0 {
		t.Fatalf("write: cookie %d errno %d", c, e)
	}
	cl.request(CmdRead, 0, 2, 4096, 8192, nil)
	c, e, got := cl.simple(8192)
	if c != 2 || e != 0 || !bytes.Equal(got, data) {
		t.Fatalf("read back: cookie %d errno %d equal %v", c, e, bytes.Equal(got, data))
	}
	if !bytes.Equal(m.snapshot()[4096:12288], data) {
		t.Fatal("backend does not hold the data")
	}
}

func TestRequestErrors(t *testing.T) {
	const size = 1 << 20
	cases := []struct {
		name       string
		typ, flags uint16
		off        uint64
		length     uint32
		payload    bool // a write payload follows
		structured bool
		align      bool
		want       uint32
	}{
		{name: "read past end", typ: CmdRead, off: size - 512, length: 1024, want: EINVAL},
		{name: "read at end ok", typ: CmdRead, off: size - 512, length: 512, want: 0},
		{name: "write past end", typ: CmdWrite, off: size, length: 512, payload: true, want: ENOSPC},
		{name: "write offset overflow", typ: CmdWrite, off: 1<<64 - 256, length: 512, payload: true, want: ENOSPC},
		{name: "read offset overflow", typ: CmdRead, off: 1<<64 - 256, length: 512, want: EINVAL},
		{name: "trim past end", typ: CmdTrim, off: 0, length: size + 4096, want: ENOSPC},
		{name: "zero past end", typ: CmdWriteZeroes, off: size - 4096, length: 8192, want: ENOSPC},
		{name: "cache past end", typ: CmdCache, off: size, length: 1, want: EINVAL},
		{name: "unknown command", typ: 99, want: EINVAL},
		{name: "resize unsupported", typ: 8, want: EINVAL},
		{name: "no-hole on write", typ: CmdWrite, flags: CmdFlagNoHole, length: 512, payload: true, want: EINVAL},
		{name: "df without structured", typ: CmdRead, flags: CmdFlagDF, length: 512, want: EINVAL},
		{name: "fast-zero on trim", typ: CmdTrim, flags: CmdFlagFastZero, length: 512, want: EINVAL},
		{name: "unknown flag", typ: CmdFlush, flags: 1 << 9, want: EINVAL},
		{name: "oversized write", typ: CmdWrite, length: MaxPayload + 1, off: 0, payload: true, want: EINVAL},
		{name: "oversized read", typ: CmdRead, length: MaxPayload + 1, want: EINVAL},
		{name: "oversized read with df", typ: CmdRead, flags: CmdFlagDF, length: MaxPayload + 1, structured: true, want: EOVERFLOW},
		{name: "block status without context", typ: CmdBlockStatus, length: 512, want: EINVAL},
		{name: "block status zero length", typ: CmdBlockStatus, length: 0, structured: true, want: EINVAL},
		{name: "misaligned after block size negotiation", typ: CmdWrite, off: 1, length: 512, payload: true, align: true, want: EINVAL},
		{name: "misaligned allowed without negotiation", typ: CmdWrite, off: 1, length: 3, payload: true, want: 0},
		{name: "zero length write", typ: CmdWrite, off: 0, length: 0, want: 0},
		{name: "fua on flush", typ: CmdFlush, flags: CmdFlagFUA, want: 0},
		{name: "fua on read", typ: CmdRead, flags: CmdFlagFUA, length: 512, want: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newMem(t, size)
			_, path := startServer(t, m, size, nil)
			cl := open(t, path, tc.structured, tc.align)
			var payload []byte
			if tc.payload {
				payload = make([]byte, tc.length)
			}
			cl.request(tc.typ, tc.flags, 42, tc.off, tc.length, payload)
			errno := readErrno(t, cl, tc.typ, tc.length, tc.structured)
			if errno != tc.want {
				t.Fatalf("errno %d, want %d", errno, tc.want)
			}
			// The connection stays in sync and usable.
			cl.request(CmdWrite, 0, 43, 0, 512, make([]byte, 512))
			if c, e, _ := cl.simple(0); c != 43 || e != 0 {
				t.Fatalf("follow-up write: cookie %d errno %d", c, e)
			}
		})
	}
}

// readErrno reads one reply of either kind and returns its error.
func readErrno(t *testing.T, cl *client, typ uint16, length uint32, structured bool) uint32 {
	t.Helper()
	if structured && (typ == CmdRead || typ == CmdBlockStatus) {
		for {
			ch := cl.structured()
			if ch.typ == replyTypeError {
				return binary.BigEndian.Uint32(ch.payload)
			}
			if ch.flags&replyFlagDone != 0 {
				return 0
			}
		}
	}
	n := 0
	if typ == CmdRead {
		n = int(length)
	}
	_, errno, _ := cl.simple(n)
	return errno
}

func TestBadMagicCloses(t *testing.T) {
	_, path := startServer(t, newMem(t, 1<<20), 1<<20, nil)
	cl := open(t, path, false, false)
	b := encodeRequest(nil, &Request{Type: CmdRead, Length: 512})
	b[0] ^= 0xff
	cl.write(b)
	if !cl.closed() {
		t.Fatal("connection kept after a bad request magic")
	}
}

func TestStructuredRead(t *testing.T) {
	m := newMem(t, 1<<20)
	copy(m.data[8192:], "hello")
	_, path := startServer(t, m, 1<<20, nil)
	cl := open(t, path, true, true)
	cl.request(CmdRead, CmdFlagDF, 9, 8192, 512, nil)
	ch := cl.structured()
	if ch.typ != replyTypeOffsetData || ch.flags&replyFlagDone == 0 || ch.cookie != 9 {
		t.Fatalf("chunk %+v", ch)
	}
	if off := binary.BigEndian.Uint64(ch.payload); off != 8192 || string(ch.payload[8:13]) != "hello" {
		t.Fatalf("offset %d data %q", off, ch.payload[8:13])
	}
	// Errors on reads come as error chunks.
	cl.request(CmdRead, 0, 10, 1<<20, 512, nil)
	ch = cl.structured()
	if ch.typ != replyTypeError || binary.BigEndian.Uint32(ch.payload) != EINVAL {
		t.Fatalf("error chunk %+v", ch)
	}
	// Non-read commands keep simple replies.
	cl.request(CmdFlush, 0, 11, 0, 0, nil)
	if c, e, _ := cl.simple(0); c != 11 || e != 0 {
		t.Fatalf("flush %d %d", c, e)
	}
}

type extentMem struct {
	*memBackend
}

func (e extentMem) Extents(off, n int64, fn func(off, length int64, flags uint32) bool) error {
	// First 64 KiB data, the rest a hole.
	if off < 65536 {
		l := min(65536-off, n)
		if !fn(off, l, 0) {
			return nil
		}
		off, n = off+l, n-l
	}
	if n > 0 {
		fn(off, n, StateHole|StateZero)
	}
	return nil
}

func TestBlockStatus(t *testing.T) {
	_, path := startServer(t, extentMem{newMem(t, 1<<20)}, 1<<20, nil)
	cl := open(t, path, true, true)
	cl.request(CmdBlockStatus, 0, 5, 0, 1<<20, nil)
	ch := cl.structured()
	if ch.typ != replyTypeBlockStatus || ch.flags&replyFlagDone == 0 {
		t.Fatalf("chunk %+v", ch)
	}
	p := ch.payload
	if binary.BigEndian.Uint32(p) != metaContextAllocationID || len(p) != 4+16 {
		t.Fatalf("payload % x", p)
	}
	if l, f := binary.BigEndian.Uint32(p[4:]), binary.BigEndian.Uint32(p[8:]); l != 65536 || f != 0 {
		t.Fatalf("extent 0: %d %d", l, f)
	}
	if l, f := binary.BigEndian.Uint32(p[12:]), binary.BigEndian.Uint32(p[16:]); l != 1<<20-65536 || f != StateHole|StateZero {
		t.Fatalf("extent 1: %d %d", l, f)
	}
	cl.request(CmdBlockStatus, CmdFlagReqOne, 6, 0, 1<<20, nil)
	if ch := cl.structured(); len(ch.payload) != 4+8 {
		t.Fatalf("REQ_ONE gave %d bytes", len(ch.payload))
	}
}

func TestFlushFUATrimZero(t *testing.T) {
	m := newMem(t, 1<<20)
	_, path := startServer(t, m, 1<<20, nil)
	cl := open(t, path, false, false)
	cl.request(CmdWrite, CmdFlagFUA, 1, 0, 512, bytes.Repeat([]byte{1}, 512))
	cl.simple(0)
	cl.request(CmdFlush, 0, 2, 0, 0, nil)
	cl.simple(0)
	cl.request(CmdTrim, CmdFlagFUA, 3, 0, 512, nil)
	cl.simple(0)
	cl.request(CmdWriteZeroes, CmdFlagNoHole|CmdFlagFastZero, 4, 512, 512, nil)
	if _, e, _ := cl.simple(0); e != 0 {
		t.Fatalf("write zeroes errno %d", e)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// FUA write used WriteAtFUA; the FUA trim added a flush to the explicit one.
	if m.fuaWrites != 1 || m.flushes != 2 || m.trims != 1 || m.zeroes != 1 {
		t.Fatalf("fua %d flushes %d trims %d zeroes %d", m.fuaWrites, m.flushes, m.trims, m.zeroes)
	}
}

func TestFastZeroUnsupported(t *testing.T) {
	// A backend without Zeroer cannot zero fast: ENOTSUP, and the range is
	// untouched; without FAST_ZERO it is zeroed by writes.
	type plain struct{ Backend }
	m := newMem(t, 1<<20)
	copy(m.data, "xxxx")
	_, path := startServer(t, plain{m}, 1<<20, nil)
	cl := open(t, path, false, false)
	cl.request(CmdWriteZeroes, CmdFlagFastZero, 1, 0, 4096, nil)
	if _, e, _ := cl.simple(0); e != ENOTSUP {
		t.Fatalf("fast zero errno %d", e)
	}
	if string(m.snapshot()[:4]) != "xxxx" {
		t.Fatal("failed fast zero changed data")
	}
	cl.request(CmdWriteZeroes, 0, 2, 0, 4096, nil)
	if _, e, _ := cl.simple(0); e != 0 {
		t.Fatalf("zero errno %d", e)
	}
	if !bytes.Equal(m.snapshot()[:4096], make([]byte, 4096)) {
		t.Fatal("not zeroed")
	}
}

func TestBackendErrorsBecomeErrno(t *testing.T) {
	m := newMem(t, 1<<20)
	m.flushErr = syscall.EIO
	_, path := startServer(t, m, 1<<20, nil)
	cl := open(t, path, false, false)
	cl.request(CmdFlush, 0, 1, 0, 0, nil)
	if _, e, _ := cl.simple(0); e != EIO {
		t.Fatalf("flush errno %d", e)
	}
	for err, want := range map[error]uint32{
		syscall.ENOSPC: ENOSPC, syscall.EDQUOT: ENOSPC, syscall.EROFS: EPERM,
		syscall.EIO: EIO, errors.New("weird"): EIO, ErrFastZeroUnsupported: ENOTSUP,
		syscall.EINVAL: EIO, // a backend EINVAL is our bug, not the client's
	} {
		if got := Errno(err); got != want {
			t.Errorf("Errno(%v) = %d, want %d", err, got, want)
		}
	}
}

// Overlapping writes must reach the backend in arrival order even when the
// first one is slow; non-overlapping ones must not wait.
func TestOverlappingWritesOrdered(t *testing.T) {
	m := newMem(t, 1<<20)
	release := make(chan struct{})
	var once sync.Once
	m.writeHook = func(off int64) {
		if off == 0 {
			once.Do(func() { <-release })
		}
	}
	_, path := startServer(t, m, 1<<20, nil)
	cl := open(t, path, false, false)
	// One write call, so the server sees all three at once and hands the
	// first to a worker (it would serve a lone request inline).
	var b []byte
	for _, w := range []struct {
		cookie, off uint64
		fill        byte
	}{{1, 0, 1}, {2, 2048, 2}, {3, 65536, 3}} { // 1 blocks in the backend; 2 overlaps it
		b = encodeRequest(b, &Request{Type: CmdWrite, Cookie: w.cookie, Offset: w.off, Length: 4096})
		b = append(b, bytes.Repeat([]byte{w.fill}, 4096)...)
	}
	cl.write(b)
	// 3 does not overlap: it completes while 1 is stuck.
	if c, e, _ := cl.simple(0); c != 3 || e != 0 {
		t.Fatalf("first reply cookie %d errno %d, want 3", c, e)
	}
	time.Sleep(50 * time.Millisecond) // give 2 a chance to (wrongly) overtake
	close(release)
	got := map[uint64]bool{}
	for range 2 {
		c, e, _ := cl.simple(0)
		if e != 0 {
			t.Fatalf("errno %d", e)
		}
		got[c] = true
	}
	d := m.snapshot()
	if d[2047] != 1 || d[2048] != 2 || d[6143] != 2 {
		t.Fatalf("overlap applied out of order: %d %d %d (order %v)", d[2047], d[2048], d[6143], m.order)
	}
}

// A read that arrives after an overlapping write sees it.
func TestReadAfterWriteOrdered(t *testing.T) {
	m := newMem(t, 1<<20)
	release := make(chan struct{})
	m.writeHook = func(off int64) { <-release }
	_, path := startServer(t, m, 1<<20, nil)
	cl := open(t, path, false, false)
	cl.request(CmdWrite, 0, 1, 0, 512, bytes.Repeat([]byte{7}, 512))
	cl.request(CmdRead, 0, 2, 0, 512, nil)
	time.Sleep(20 * time.Millisecond)
	close(release)
	for range 2 {
		c, e, d := cl.simple(0)
		if e != 0 {
			t.Fatalf("errno %d", e)
		}
		if c == 2 {
			d = make([]byte, 512)
			cl.read(d)
			if d[0] != 7 {
				t.Fatalf("read overtook the write: %d", d[0])
			}
		}
	}
}

func TestDiscWaitsForInFlight(t *testing.T) {
	m := newMem(t, 1<<20)
	release := make(chan struct{})
	m.writeHook = func(off int64) { <-release }
	s, path := startServer(t, m, 1<<20, nil)
	cl := open(t, path, false, false)
	for i := range 8 {
		cl.request(CmdWrite, 0, uint64(i), uint64(i)*4096, 4096, bytes.Repeat([]byte{byte(i + 1)}, 4096))
	}
	cl.request(CmdDisc, 0, 99, 0, 0, nil)
	time.Sleep(20 * time.Millisecond)
	close(release)
	for range 8 {
		if _, e, _ := cl.simple(0); e != 0 {
			t.Fatalf("in-flight write failed: %d", e)
		}
	}
	if !cl.closed() {
		t.Fatal("not closed after DISC")
	}
	d := m.snapshot()
	for i := range 8 {
		if d[i*4096] != byte(i+1) {
			t.Fatalf("write %d lost", i)
		}
	}
	st, _ := s.Stats("r0")
	if st.Writes != 8 {
		t.Fatalf("stats writes %d", st.Writes)
	}
}

func TestClientVanishesMidPayload(t *testing.T) {
	m := newMem(t, 1<<20)
	_, path := startServer(t, m, 1<<20, nil)
	cl := open(t, path, false, false)
	b := encodeRequest(nil, &Request{Type: CmdWrite, Offset: 0, Length: 65536})
	cl.write(append(b, make([]byte, 100)...))
	cl.c.Close()
	// The server keeps serving others and applied nothing.
	cl2 := open(t, path, false, false)
	cl2.request(CmdRead, 0, 1, 0, 512, nil)
	if _, e, _ := cl2.simple(512); e != 0 {
		t.Fatalf("errno %d", e)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.order) != 0 {
		t.Fatalf("partial write applied: %v", m.order)
	}
}

func TestShutdownDrains(t *testing.T) {
	m := newMem(t, 1<<20)
	release := make(chan struct{})
	m.writeHook = func(off int64) { <-release }
	s, path := startServer(t, m, 1<<20, nil)
	cl := open(t, path, false, false)
	cl.request(CmdWrite, 0, 1, 0, 512, make([]byte, 512))
	time.Sleep(20 * time.Millisecond)
	done := make(chan error)
	go func() { done <- s.Shutdown(t.Context()) }()
	time.Sleep(20 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("Shutdown returned with a request in flight")
	default:
	}
	close(release)
	if c, e, _ := cl.simple(0); c != 1 || e != 0 {
		t.Fatalf("in-flight write during shutdown: cookie %d errno %d", c, e)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestReadOnlyExport(t *testing.T) {
	m := newMem(t, 1<<20)
	_, path := startServer(t, m, 1<<20, func(e *Export) { e.ReadOnly = true })
	cl := open(t, path, false, false)
	cl.request(CmdWrite, 0, 1, 0, 512, make([]byte, 512))
	if _, e, _ := cl.simple(0); e != EPERM {
		t.Fatalf("write to read-only: %d", e)
	}
}

func TestAdmitRefuses(t *testing.T) {
	m := newMem(t, 1<<20)
	_, path := startServer(t, m, 1<<20, func(e *Export) {
		e.Admit = func() error { return errors.New("volume r0 is Secondary; the primary is beta") }
	})
	cl := dial(t, path)
	cl.flags(clientFixedNewstyle)
	cl.option(optGo, goData("r0"))
	r := cl.optReply()
	if r.typ != repErrPolicy || !bytes.Contains(r.data, []byte("primary is beta")) {
		t.Fatalf("refusal %#x %q", r.typ, r.data)
	}
}

// Deep queues of mixed requests all get exactly one reply each.
func TestManyInFlight(t *testing.T) {
	m := newMem(t, 4<<20)
	s, path := startServer(t, m, 4<<20, nil)
	cl := open(t, path, false, false)
	const n = 512
	go func() {
		for i := range n {
			if i%2 == 0 {
				cl.request(CmdWrite, 0, uint64(i), uint64(i%64)*4096, 4096, bytes.Repeat([]byte{byte(i)}, 4096))
			} else {
				cl.request(CmdRead, 0, uint64(i), uint64(i%64)*4096, 4096, nil)
			}
		}
	}()
	seen := make(map[uint64]bool)
	for range n {
		c, e, _ := cl.simple(0)
		if e != 0 || seen[c] {
			t.Fatalf("cookie %d errno %d dup %v", c, e, seen[c])
		}
		seen[c] = true
		if c%2 == 1 {
			cl.read(make([]byte, 4096))
		}
	}
	// Every write replied to has left the ordering tracker.
	cl.request(CmdFlush, 0, n, 0, 0, nil)
	cl.simple(0)
	if k := s.lookup("r0").ranges.inFlight(); k != 0 {
		t.Fatalf("%d writes still registered after their replies", k)
	}
}

// A FLUSH must not inherit the ordering waits of the request before it
// (regression: it waited for an unrelated stuck write).
func TestFlushDoesNotWaitForUnrelatedWrites(t *testing.T) {
	m := newMem(t, 1<<20)
	release := make(chan struct{})
	var once sync.Once
	m.writeHook = func(off int64) {
		if off == 0 {
			once.Do(func() { <-release })
		}
	}
	_, path := startServer(t, m, 1<<20, nil)
	var closeOnce sync.Once
	unblock := func() { closeOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock) // runs before the server's shutdown, even on failure
	cl := open(t, path, false, false)
	cl.c.SetDeadline(time.Now().Add(2 * time.Second))
	var b []byte
	b = encodeRequest(b, &Request{Type: CmdWrite, Cookie: 1, Offset: 0, Length: 8192})
	b = append(b, make([]byte, 8192)...)
	b = encodeRequest(b, &Request{Type: CmdWrite, Cookie: 2, Offset: 4096, Length: 4096})
	b = append(b, make([]byte, 4096)...)
	b = encodeRequest(b, &Request{Type: CmdFlush, Cookie: 3})
	cl.write(b)
	if c, e, _ := cl.simple(0); c != 3 || e != 0 {
		t.Fatalf("first reply: cookie %d errno %d, want the flush (3)", c, e)
	}
	unblock()
	for range 2 {
		if _, e, _ := cl.simple(0); e != 0 {
			t.Fatalf("errno %d", e)
		}
	}
}
