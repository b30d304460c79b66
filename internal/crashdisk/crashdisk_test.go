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

func TestFUASurvivesAndWinsOverOlderWrites(t *testing.T) {
	for seed := range uint64(50) {
		d := New(4096)
		d.WriteAt(bytes.Repeat([]byte{1}, 1024), 0)
		d.WriteAtFUA(bytes.Repeat([]byte{2}, 512), 0)
		d.Crash(seed)
		b := d.Bytes()
		if !bytes.Equal(b[:512], bytes.Repeat([]byte{2}, 512)) {
			t.Fatalf("seed %d: FUA write lost or overwritten: %v", seed, b[:4])
		}
		if b[512] != 0 && b[512] != 1 {
			t.Fatalf("seed %d: byte 512 = %d", seed, b[512])
		}
	}
}

func TestPowerCutFreezesTheImage(t *testing.T) {
	d := New(4096)
	d.WriteAt([]byte{1}, 0)
	d.Sync()
	d.WriteAt([]byte{2}, 1)
	d.PowerCut(3)
	img := d.Bytes()
	if _, err := d.WriteAt([]byte{9}, 0); !errors.Is(err, ErrPowerCut) {
		t.Fatalf("write after cut: %v", err)
	}
	if _, err := d.WriteAtFUA([]byte{9}, 0); !errors.Is(err, ErrPowerCut) {
		t.Fatalf("FUA write after cut: %v", err)
	}
	if err := d.Sync(); !errors.Is(err, ErrPowerCut) {
		t.Fatalf("sync after cut: %v", err)
	}
	if !bytes.Equal(d.Bytes(), img) || img[0] != 1 {
		t.Fatal("image changed after the cut")
	}
	d.Restart()
	if _, err := d.WriteAt([]byte{9}, 0); err != nil {
		t.Fatal(err)
	}
}
