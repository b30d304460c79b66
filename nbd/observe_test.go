package nbd

import (
	"bytes"
	"sync"
	"syscall"
	"testing"
	"time"
)

// observed counts Export.Observe calls per command.
type observed struct {
	mu    sync.Mutex
	n     map[uint16]int
	bad   int // negative durations
	total int
}

func (o *observed) observe(cmd uint16, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = make(map[uint16]int)
	}
	o.n[cmd]++
	o.total++
	if d < 0 {
		o.bad++
	}
}

// Every served request is observed once, whichever path serves it (inline
// read, inline write, the reader when idle, a worker), failed ones too;
// requests refused by validation are not.
func TestObserveOncePerRequest(t *testing.T) {
	m := newMem(t, 1<<20)
	var o observed
	s, path := startServer(t, m, 1<<20, func(e *Export) { e.Observe = o.observe })
	cl := open(t, path, true, false) // structured: BLOCK_STATUS needs it
	data := bytes.Repeat([]byte{7}, 4096)
	cl.request(CmdWrite, 0, 1, 0, 4096, data) // inline: connection idle
	cl.simple(0)
	cl.request(CmdWrite, CmdFlagFUA, 2, 4096, 4096, data) // FUA: handle
	cl.simple(0)
	cl.request(CmdRead, 0, 3, 0, 4096, nil) // inline: ReadAtNoWait
	cl.structured()
	cl.request(CmdRead, CmdFlagFUA, 4, 0, 4096, nil) // FUA read: handle
	cl.structured()
	cl.request(CmdFlush, 0, 5, 0, 0, nil)
	cl.simple(0)
	cl.request(CmdTrim, 0, 6, 0, 512, nil)
	cl.simple(0)
	cl.request(CmdWriteZeroes, 0, 7, 0, 512, nil)
	cl.simple(0)
	cl.request(CmdCache, 0, 8, 0, 512, nil)
	cl.simple(0)
	cl.request(CmdBlockStatus, 0, 9, 0, 4096, nil)
	cl.structured()
	cl.request(CmdRead, 0, 10, 1<<20, 512, nil) // past the end: refused, not observed
	cl.structured()
	m.mu.Lock()
	m.flushErr = syscall.EIO
	m.mu.Unlock()
	cl.request(CmdFlush, 0, 11, 0, 0, nil) // fails in the backend: observed
	cl.simple(0)
	cl.request(CmdDisc, 0, 12, 0, 0, nil)
	// Handlers observe after queueing their reply: wait for them to end.
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	want := map[uint16]int{CmdWrite: 2, CmdRead: 2, CmdFlush: 2, CmdTrim: 1, CmdWriteZeroes: 1, CmdCache: 1, CmdBlockStatus: 1}
	for cmd, n := range want {
		if o.n[cmd] != n {
			t.Errorf("%s observed %d times, want %d", CommandName(cmd), o.n[cmd], n)
		}
	}
	if o.total != 10 || o.bad != 0 {
		t.Fatalf("observed %d requests (%v), %d negative durations; want 10, 0", o.total, o.n, o.bad)
	}
}

// Requests served by workers, with many in flight, are each observed once.
func TestObserveWorkers(t *testing.T) {
	m := newMem(t, 4<<20)
	var o observed
	s, path := startServer(t, m, 4<<20, func(e *Export) { e.Observe = o.observe })
	cl := open(t, path, false, false)
	const n = 256
	const size = maxInline * 2 // too large to be served inline
	go func() {
		for i := range n {
			cl.request(CmdWrite, 0, uint64(i), uint64(i%8)*size, size, bytes.Repeat([]byte{byte(i)}, size))
		}
	}()
	for range n {
		if _, e, _ := cl.simple(0); e != 0 {
			t.Fatalf("errno %d", e)
		}
	}
	cl.request(CmdDisc, 0, n, 0, 0, nil)
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n[CmdWrite] != n || o.total != n {
		t.Fatalf("observed %v, want %d writes", o.n, n)
	}
}
