package crashdisk

import (
	"bytes"
	"errors"
	"testing"
)

func TestSyncedSurvives(t *testing.T) {
	d := New(8192)
	d.WriteAt(bytes.Repeat([]byte{1}, 4096), 0)
	d.Sync()
	d.WriteAt(bytes.Repeat([]byte{2}, 4096), 4096)
	for seed := range uint64(50) {
		c := New(8192)
		c.WriteAt(bytes.Repeat([]byte{1}, 4096), 0)
		c.Sync()
		c.WriteAt(bytes.Repeat([]byte{2}, 4096), 4096)
		c.Crash(seed)
		b := c.Bytes()
		if !bytes.Equal(b[:4096], bytes.Repeat([]byte{1}, 4096)) {
			t.Fatalf("seed %d: synced data lost", seed)
		}
		// The unsynced write is whole, absent, or a sector-aligned prefix.
		tail := b[4096:]
		n := bytes.IndexByte(tail, 0)
		if n < 0 {
			n = len(tail)
		}
		if n%SectorSize != 0 || !bytes.Equal(tail[n:], make([]byte, len(tail)-n)) {
			t.Fatalf("seed %d: unsynced write not a sector prefix (%d bytes)", seed, n)
		}
	}
}

func TestOutcomesVaryBySeed(t *testing.T) {
	seen := map[int]bool{}
	for seed := range uint64(100) {
		d := New(4096)
		d.WriteAt(bytes.Repeat([]byte{7}, 4096), 0)
		d.Crash(seed)
		seen[bytes.Count(d.Bytes(), []byte{7})] = true
	}
	if !seen[0] || !seen[4096] || len(seen) < 3 {
		t.Fatalf("crash outcomes %v: want lost, whole and torn", seen)
	}
}

func TestInjectedFailures(t *testing.T) {
	d := New(4096)
	d.FailNextSync()
	d.WriteAt([]byte{1}, 0)
	if err := d.Sync(); !errors.Is(err, ErrInjected) {
		t.Fatalf("sync: %v", err)
	}
	if d.Pending() != 1 {
		t.Fatal("failed sync made data durable")
	}
	d.FailWrite(2)
	if _, err := d.WriteAt([]byte{1}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt([]byte{1}, 0); !errors.Is(err, ErrInjected) {
		t.Fatalf("second write: %v", err)
	}
	if _, err := d.WriteAt([]byte{1}, 4096); err == nil {
		t.Fatal("write past the end accepted")
	}
}
