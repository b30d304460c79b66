package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blkrep/blkrep/nbd"
)

func openTemp(t *testing.T, size int64) (*File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := Open(path, size, Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, path
}

func TestCreateSparse(t *testing.T) {
	f, path := openTemp(t, 64<<20)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 64<<20 {
		t.Fatalf("size %d", st.Size())
	}
	if blocks := st.Sys().(*syscall.Stat_t).Blocks; blocks*512 > 1<<20 {
		t.Fatalf("file not sparse: %d bytes allocated", blocks*512)
	}
	if f.IsBlockDevice() {
		t.Fatal("file reported as block device")
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.img")
	if _, err := Open(missing, 1<<20, Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing without create: %v", err)
	}
	wrong := filepath.Join(dir, "wrong.img")
	os.WriteFile(wrong, make([]byte, 4096), 0o600)
	if _, err := Open(wrong, 1<<20, Options{}); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("size mismatch: %v", err)
	}
	if _, err := Open(dir, 1<<20, Options{}); err == nil {
		t.Fatal("directory accepted as a store")
	}
	if _, err := Open(wrong, 0, Options{}); err == nil {
		t.Fatal("zero size accepted")
	}
}

func TestReadWriteFlush(t *testing.T) {
	f, path := openTemp(t, 1<<20)
	data := bytes.Repeat([]byte("blkrep!!"), 512)
	if _, err := f.WriteAt(data, 8192); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAtFUA(data[:512], 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 8192); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	raw, _ := os.ReadFile(path)
	if !bytes.Equal(raw[8192:8192+len(data)], data) || !bytes.Equal(raw[:512], data[:512]) {
		t.Fatal("file does not hold the data")
	}
	if _, err := f.WriteAt(data, 1<<20-100); err == nil {
		t.Fatal("write past the end accepted")
	}
	if _, err := f.ReadAt(got, -1); err == nil {
		t.Fatal("negative offset accepted")
	}
}

func TestTrimAndZeroes(t *testing.T) {
	f, _ := openTemp(t, 4<<20)
	ones := bytes.Repeat([]byte{1}, 1<<20)
	f.WriteAt(ones, 0)
	f.WriteAt(ones, 1<<20)
	if err := f.Trim(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteZeroes(1<<20, 4096, true, true); err != nil {
		t.Fatalf("fast no-hole zero: %v", err)
	}
	if err := f.WriteZeroes(1<<20+8192, 4096, false, false); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for _, off := range []int64{0, 1 << 20, 1<<20 + 8192} {
		f.ReadAt(buf, off)
		if !bytes.Equal(buf, make([]byte, 4096)) {
			t.Fatalf("range at %d not zero", off)
		}
	}
	f.ReadAt(buf, 1<<20+4096)
	if buf[0] != 1 {
		t.Fatal("zeroing spilled over")
	}
	if err := f.WriteZeroes(4<<20-4096, 8192, false, false); err == nil {
		t.Fatal("zero past the end accepted")
	}
	if err := f.Trim(4<<20, 1); err == nil {
		t.Fatal("trim past the end accepted")
	}
}

func TestExtents(t *testing.T) {
	f, _ := openTemp(t, 8<<20)
	f.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 2<<20)
	type ext struct {
		off, n int64
		fl     uint32
	}
	var got []ext
	if err := f.Extents(0, 8<<20, func(off, n int64, fl uint32) bool {
		got = append(got, ext{off, n, fl})
		return true
	}); err != nil {
		t.Fatal(err)
	}
	var total int64
	sawData := false
	for i, e := range got {
		if i > 0 && e.off != got[i-1].off+got[i-1].n {
			t.Fatalf("extents not contiguous: %+v", got)
		}
		total += e.n
		if e.fl == 0 && e.off <= 2<<20 && e.off+e.n >= 3<<20 {
			sawData = true
		}
		if e.fl != 0 && e.off < 3<<20 && e.off+e.n > 2<<20 {
			t.Fatalf("written range reported as hole: %+v", got)
		}
	}
	if total != 8<<20 || !sawData {
		t.Fatalf("extents %+v", got)
	}
}

// A failed fdatasync is sticky: every later write and flush fails, OnFail
// runs once, reads still work.
func TestFsyncFailureSticky(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.img")
	var fails atomic.Int32
	f, err := Open(path, 1<<20, Options{Create: true, OnFail: func(error) { fails.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteAt([]byte("data"), 0)
	f.fdatasync = func(int) error { return unix.EIO }
	if err := f.Flush(); !errors.Is(err, ErrFailed) {
		t.Fatalf("flush: %v", err)
	}
	f.fdatasync = unix.Fdatasync // the disk "recovers": it must not matter
	if err := f.Flush(); !errors.Is(err, ErrFailed) {
		t.Fatalf("second flush: %v", err)
	}
	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, ErrFailed) || nbd.Errno(err) != nbd.EIO {
		t.Fatalf("write after failure: %v", err)
	}
	if err := f.Trim(0, 4096); !errors.Is(err, ErrFailed) {
		t.Fatalf("trim after failure: %v", err)
	}
	buf := make([]byte, 4)
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "data" {
		t.Fatalf("read after failure: %v %q", err, buf)
	}
	if fails.Load() != 1 || f.Failed() == nil {
		t.Fatalf("OnFail ran %d times", fails.Load())
	}
}

// Concurrent flushes share syncs, and every Flush is covered by a sync
// that started after it was called.
func TestFlushCoalescing(t *testing.T) {
	f, _ := openTemp(t, 1<<20)
	var syncs atomic.Int32
	var inSync atomic.Bool
	gate := make(chan struct{})
	f.fdatasync = func(fd int) error {
		if !inSync.CompareAndSwap(false, true) {
			t.Error("two fdatasyncs at once")
		}
		syncs.Add(1)
		<-gate
		inSync.Store(false)
		return nil
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f.Flush() }() // starts sync #1
	for syncs.Load() == 0 {
		runtime.Gosched()
	}
	// These arrive while #1 runs: #1 does not cover them; they share #2.
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); f.Flush() }()
	}
	waiting := func() int {
		f.fmu.Lock()
		defer f.fmu.Unlock()
		return f.fWaiters
	}
	for waiting() < 8 {
		runtime.Gosched()
	}
	gate <- struct{}{} // finish #1; the 8 start and share #2
	gate <- struct{}{}
	wg.Wait()
	f.fdatasync = unix.Fdatasync
	if n := syncs.Load(); n != 2 {
		t.Fatalf("%d fdatasyncs for 9 flushes, want 2", n)
	}
}

func TestAtLeastAndLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.img")
	if err := os.WriteFile(path, make([]byte, 3*4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, 2*4096, Options{}); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("larger file without AtLeast: %v", err)
	}
	if _, err := Open(path, 4*4096, Options{AtLeast: true}); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("smaller file with AtLeast: %v", err)
	}
	s, err := Open(path, 2*4096, Options{AtLeast: true, Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Size() != 3*4096 {
		t.Errorf("size %d, want the whole file", s.Size())
	}
	if _, err := Open(path, 2*4096, Options{AtLeast: true, Lock: true}); !errors.Is(err, ErrInUse) {
		t.Errorf("second lock: %v", err)
	}
	if busy, err := InUse(path); err != nil || !busy {
		t.Errorf("InUse while locked: %v %v", busy, err)
	}
	s.Close()
	if busy, err := InUse(path); err != nil || busy {
		t.Errorf("InUse after close: %v %v", busy, err)
	}
}
