package nbdclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blkrep/blkrep/nbd"
)

// mem is an in-memory nbd.Backend counting what it is asked.
type mem struct {
	mu                sync.Mutex
	data              []byte
	writes, fua, sync int
	failAt            int64 // a write at this offset fails (-1: none)
}

func newMem(size int) *mem { return &mem{data: make([]byte, size), failAt: -1} }

func (m *mem) counts() (fua, sync int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fua, m.sync
}

func (m *mem) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(p, m.data[off:]), nil
}

func (m *mem) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off == m.failAt {
		return 0, errors.New("injected failure")
	}
	m.writes++
	return copy(m.data[off:], p), nil
}

func (m *mem) WriteAtFUA(p []byte, off int64) (int, error) {
	n, err := m.WriteAt(p, off)
	m.mu.Lock()
	m.fua++
	m.mu.Unlock()
	return n, err
}

func (m *mem) Flush() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sync++
	return nil
}

// serve starts the repo's NBD server with export "r0" on a unix socket
// (and TCP when tcp is set).
func serve(t *testing.T, b nbd.Backend, size int64, admit func() error) (srv *nbd.Server, sock, tcp string) {
	t.Helper()
	srv = nbd.NewServer(nil)
	srv.HandshakeTimeout = 5 * time.Second
	if err := srv.AddExport(nbd.Export{Name: "r0", Size: size, Backend: b, MultiConn: true, Admit: admit}); err != nil {
		t.Fatal(err)
	}
	sock = filepath.Join(t.TempDir(), "r0.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l, "r0")
	lt, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lt, "")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, sock, lt.Addr().String()
}

func dial(t *testing.T, network, addr string, o Options) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, network, addr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRoundTrip(t *testing.T) {
	const size = 1 << 20
	m := newMem(size)
	srv, sock, tcp := serve(t, m, size, nil)
	for _, tc := range []struct{ network, addr, export string }{
		{"unix", sock, ""}, {"tcp", tcp, "r0"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			c := dial(t, tc.network, tc.addr, Options{Export: tc.export, BlockSize: true})
			if c.Size() != size {
				t.Fatalf("size %d, want %d", c.Size(), size)
			}
			if f := c.Flags(); f&FlagHasFlags == 0 || f&FlagSendFlush == 0 || f&FlagSendFUA == 0 || f&FlagReadOnly != 0 {
				t.Fatalf("flags %#x", f)
			}
			if mn, pref, mx := c.BlockSizes(); mn != 512 || pref != 4096 || mx == 0 {
				t.Fatalf("block sizes %d/%d/%d", mn, pref, mx)
			}
			w := bytes.Repeat([]byte(tc.network[:1]), 8192)
			if err := c.WriteAt(w, 4096, 0); err != nil {
				t.Fatal(err)
			}
			fuaBefore, syncBefore := m.counts()
			if err := c.WriteAt(w[:4096], size-4096, FUA); err != nil {
				t.Fatal(err)
			}
			if fua, _ := m.counts(); fua != fuaBefore+1 {
				t.Fatalf("the FUA write did not reach WriteAtFUA (%d, %d)", fuaBefore, fua)
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			if _, sync := m.counts(); sync != syncBefore+1 {
				t.Fatal("FLUSH did not reach the backend")
			}
			got := make([]byte, 8192)
			if err := c.ReadAt(got, 4096); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, w) {
				t.Fatal("read back differs from what was written")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.ReadAtContext(ctx, got[:4096], size-4096); err != nil || !bytes.Equal(got[:4096], w[:4096]) {
				t.Fatalf("ReadAtContext: %v", err)
			}
			// Out of range: the server's errno, and the connection goes on.
			err := c.ReadAt(make([]byte, 4096), size)
			var e Errno
			if !errors.As(err, &e) || (e != EINVAL && e != EOVERFLOW) {
				t.Fatalf("read past the end: %v, want EINVAL or EOVERFLOW", err)
			}
			if err := c.ReadAt(got[:512], 0); err != nil {
				t.Fatalf("the connection did not survive an errno: %v", err)
			}
		})
	}
	// DISC: the server sees the client go away.
	c := dial(t, "unix", sock, Options{})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteAt(make([]byte, 512), 0, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after Close: %v, want ErrClosed", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := srv.Stats("r0")
		if st.Connections == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server still counts %d connections after DISC", st.Connections)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Many goroutines, many requests in flight on one connection; replies
// come back out of order and each lands in the right call.
func TestConcurrent(t *testing.T) {
	const size = 4 << 20
	m := newMem(size)
	_, sock, _ := serve(t, m, size, nil)
	c := dial(t, "unix", sock, Options{})
	const workers, per = 16, 64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; i < per; i++ {
				blk := int64(w + workers*r.IntN(size/4096/workers))
				buf := make([]byte, 4096)
				binary.BigEndian.PutUint64(buf, uint64(blk))
				binary.BigEndian.PutUint64(buf[8:], uint64(i))
				if err := c.WriteAt(buf, blk*4096, 0); err != nil {
					errs <- err
					return
				}
				got := make([]byte, 4096)
				if err := c.ReadAt(got, blk*4096); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, buf) {
					errs <- fmt.Errorf("worker %d block %d: read back differs", w, blk)
					return
				}
			}
		}()
	}
	// And a pipeline from one goroutine: 32 writes in flight at once.
	calls := make([]*Call, 32)
	for i := range calls {
		b := bytes.Repeat([]byte{byte(i)}, 4096)
		calls[i] = c.StartWrite(b, int64(i)*4096+size/2, 0)
	}
	for i, cl := range calls {
		if err := cl.Wait(context.Background()); err != nil {
			t.Fatalf("pipelined write %d: %v", i, err)
		}
		if cl.Replied.IsZero() {
			t.Fatal("Replied not set")
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if c.InFlight() != 0 {
		t.Fatalf("%d requests still pending", c.InFlight())
	}
}

func TestRefused(t *testing.T) {
	msg := "volume r0 is Secondary on beta; the Primary is alpha"
	_, sock, tcp := serve(t, newMem(1<<20), 1<<20, func() error { return errors.New(msg) })
	ctx := context.Background()
	_, err := Dial(ctx, "unix", sock, Options{})
	var oe *OptionError
	if !errors.As(err, &oe) || oe.Reply != RepErrPolicy || oe.Message != msg {
		t.Fatalf("got %v, want a policy refusal with the server's message", err)
	}
	if !strings.Contains(err.Error(), "the Primary is alpha") {
		t.Fatalf("error %q does not carry the server's message", err)
	}
	_, err = Dial(ctx, "tcp", tcp, Options{Export: "nope"})
	if !errors.As(err, &oe) || oe.Reply != RepErrUnknown {
		t.Fatalf("unknown export: %v", err)
	}
	_, err = Dial(ctx, "unix", filepath.Join(t.TempDir(), "absent.sock"), Options{})
	if err == nil {
		t.Fatal("dialing a missing socket succeeded")
	}
}

func TestServerError(t *testing.T) {
	m := newMem(1 << 20)
	m.failAt = 8192
	_, sock, _ := serve(t, m, 1<<20, nil)
	c := dial(t, "unix", sock, Options{})
	err := c.WriteAt(make([]byte, 4096), 8192, 0)
	if !errors.Is(err, EIO) {
		t.Fatalf("failing write: %v, want EIO", err)
	}
	if err := c.WriteAt(make([]byte, 4096), 0, 0); err != nil {
		t.Fatal(err)
	}
}

// Requests in flight when the connection drops fail with ErrClosed, and
// a server without NBD_OPT_GO is reached through NBD_OPT_EXPORT_NAME.
func TestOldServerAndDrop(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "old.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan int, 1)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		hello := binary.BigEndian.AppendUint64(nil, magicNBD)
		hello = binary.BigEndian.AppendUint64(hello, magicIHaveOpt)
		hello = binary.BigEndian.AppendUint16(hello, flagFixedNewstyle) // no NO_ZEROES
		nc.Write(hello)
		var b [4]byte
		io.ReadFull(nc, b[:])
		for {
			var h [16]byte
			if _, err := io.ReadFull(nc, h[:]); err != nil {
				return
			}
			opt := binary.BigEndian.Uint32(h[8:])
			data := make([]byte, binary.BigEndian.Uint32(h[12:]))
			io.ReadFull(nc, data)
			if opt == optExportName {
				r := binary.BigEndian.AppendUint64(nil, 65536)
				r = binary.BigEndian.AppendUint16(r, FlagHasFlags|FlagSendFlush)
				nc.Write(append(r, make([]byte, 124)...))
				break
			}
			r := binary.BigEndian.AppendUint64(nil, magicOptReply)
			r = binary.BigEndian.AppendUint32(r, opt)
			r = binary.BigEndian.AppendUint32(r, RepErrUnsup)
			r = binary.BigEndian.AppendUint32(r, 0)
			nc.Write(r)
		}
		// Take two requests without answering, then hang up.
		n := 0
		for n < 2 {
			var h [28]byte
			if _, err := io.ReadFull(nc, h[:]); err != nil {
				return
			}
			if binary.BigEndian.Uint16(h[6:]) == cmdWrite {
				io.CopyN(io.Discard, nc, int64(binary.BigEndian.Uint32(h[24:])))
			}
			n++
		}
		got <- n
	}()
	c := dial(t, "unix", sock, Options{Export: "x"})
	if c.Size() != 65536 {
		t.Fatalf("size %d", c.Size())
	}
	if err := c.WriteAt(make([]byte, 512), 0, FUA); err == nil {
		t.Fatal("FUA accepted by a server that does not advertise it")
	}
	w := c.StartWrite(make([]byte, 512), 0, 0)
	r := c.StartRead(make([]byte, 512), 0)
	<-got
	for _, cl := range []*Call{w, r} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := cl.Wait(ctx)
		cancel()
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("request in flight when the server hung up: %v, want ErrClosed", err)
		}
	}
	select {
	case <-c.Dead():
	case <-time.After(5 * time.Second):
		t.Fatal("Dead not closed")
	}
	if c.Err() == nil {
		t.Fatal("Err nil on a dead connection")
	}
}
