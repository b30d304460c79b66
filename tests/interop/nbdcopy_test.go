package interop

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestNbdcopy copies a random 64 MiB image into a 64 MiB volume with four
// connections (and four threads: nbdcopy caps connections at its thread
// count, which defaults to the number of CPUs) and 64 requests in flight
// each, copies it back out, and
// compares; then restarts the daemon and compares again (the data survived
// a clean shutdown), this time copying out over TCP.
func TestNbdcopy(t *testing.T) {
	requireTools(t, "nbdcopy")
	const size = 64 << 20
	d := startDaemon(t, daemonOpts{sizeBytes: size, tcp: true})
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	data := randBytes(t, size)
	// A few zero runs, so that nbdcopy's sparse and zeroing paths are
	// used on the way in as well as plain writes.
	clear(data[4<<20 : 6<<20])
	clear(data[size-1<<20:])
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	copyOut := func(uri, name string) {
		t.Helper()
		dst := filepath.Join(dir, name)
		mustRun(t, 60*time.Second, nil, "nbdcopy", "--connections=4", "--threads=4", "--requests=64", uri, dst)
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != size {
			t.Fatalf("%s: copied out %d bytes, want %d", uri, len(got), size)
		}
		if i := firstDiff(got, data); i >= 0 {
			t.Fatalf("%s: copied-out image differs from the original at byte %d", uri, i)
		}
	}

	before := d.stats(t)
	mustRun(t, 60*time.Second, nil, "nbdcopy", "--connections=4", "--threads=4", "--requests=64", "--flush", src, d.unixURI())
	after := d.stats(t)
	if after.TotalClients-before.TotalClients < 4 {
		t.Errorf("nbdcopy --connections=4 opened %d connections", after.TotalClients-before.TotalClients)
	}
	if after.Flushes == before.Flushes || after.Errors != before.Errors {
		t.Errorf("counters %+v -> %+v: want a flush and no errors", before, after)
	}
	if got := d.readDisk(t, 0, size); !bytes.Equal(got, data) {
		t.Fatalf("disk file differs from the source image at byte %d", firstDiff(got, data))
	}
	copyOut(d.unixURI(), "out1.img")

	d.restart(t)
	copyOut(d.tcpURI(), "out2.img")
}
