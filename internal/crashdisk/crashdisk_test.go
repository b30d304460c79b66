package crashdisk

import (
	"bytes"
	"errors"
	"math/rand/v2"
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

// refDisk is the straightforward model Disk must match: a durable and a
// volatile image, pending writes replayed onto the durable one at a crash.
type refDisk struct {
	durable, volatile []byte
	pending           []write
}

func (r *refDisk) write(p []byte, off int64, fua bool) {
	copy(r.volatile[off:], p)
	r.pending = append(r.pending, write{off: off, data: append([]byte(nil), p...), fua: fua})
}

func (r *refDisk) sync() { copy(r.durable, r.volatile); r.pending = nil }

func (r *refDisk) crash(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	img := append([]byte(nil), r.durable...)
	for _, w := range r.pending {
		if w.fua {
			copy(img[w.off:], w.data)
			continue
		}
		switch rng.IntN(3) {
		case 0:
		case 1:
			copy(img[w.off:], w.data)
		default:
			sectors := (len(w.data) + SectorSize - 1) / SectorSize
			n := min(rng.IntN(sectors+1)*SectorSize, len(w.data))
			copy(img[w.off:], w.data[:n])
		}
	}
	r.durable, r.volatile, r.pending = img, append([]byte(nil), img...), nil
}

// TestMatchesReferenceModel: keeping only the volatile image and undoing
// pending writes at a crash gives, seed for seed, what replaying them onto
// a separate durable image gives.
func TestMatchesReferenceModel(t *testing.T) {
	const size = 3*chunkSize + 5000 // chunks, and a partial last one
	noise := make([]byte, size)
	for i := range noise {
		noise[i] = byte(i*7 + i>>8 + 1)
	}
	for seed := range uint64(100) {
		rng := rand.New(rand.NewPCG(seed, 1))
		d := New(size)
		ref := &refDisk{durable: make([]byte, size), volatile: make([]byte, size)}
		for step := range 60 {
			switch k := rng.IntN(10); {
			case k < 6:
				off := int64(rng.IntN(size / 256 * 256))
				n := 1 + rng.IntN(min(3000, size-int(off)))
				if rng.IntN(4) == 0 { // across chunks
					n = 1 + rng.IntN(size-int(off))
				}
				p := make([]byte, n)
				if rng.IntN(3) > 0 { // else zeroes
					from := rng.IntN(size - n + 1)
					copy(p, noise[from:])
					p[0] = byte(step)
				}
				fua := k == 5
				if fua {
					d.WriteAtFUA(p, off)
				} else {
					d.WriteAt(p, off)
				}
				ref.write(p, off, fua)
			case k < 8:
				d.Sync()
				ref.sync()
			default:
				cs := rng.Uint64()
				if k == 8 {
					d.Crash(cs)
				} else {
					d.PowerCut(cs)
					d.Restart()
				}
				ref.crash(cs)
				if !bytes.Equal(d.Bytes(), ref.volatile) {
					t.Fatalf("seed %d step %d: image differs from the reference model after a crash", seed, step)
				}
			}
			if step%10 == 9 && !bytes.Equal(d.Bytes(), ref.volatile) {
				t.Fatalf("seed %d step %d: image differs from the reference model", seed, step)
			}
			if d.Pending() != len(ref.pending) {
				t.Fatalf("seed %d step %d: %d pending, model %d", seed, step, d.Pending(), len(ref.pending))
			}
		}
	}
}

func TestHaltKeepsUnsyncedWrites(t *testing.T) {
	d := New(8192)
	d.WriteAt(bytes.Repeat([]byte{1}, 4096), 0) // never synced
	d.Halt()
	if _, err := d.WriteAt(bytes.Repeat([]byte{2}, 4096), 4096); !errors.Is(err, ErrPowerCut) {
		t.Fatalf("a write after Halt: %v, want %v", err, ErrPowerCut)
	}
	if err := d.Sync(); !errors.Is(err, ErrPowerCut) {
		t.Fatalf("a sync after Halt: %v, want %v", err, ErrPowerCut)
	}
	d.Restart()
	want := append(bytes.Repeat([]byte{1}, 4096), make([]byte, 4096)...)
	if got := d.Bytes(); !bytes.Equal(got, want) {
		t.Fatal("after Halt and Restart the image is not the one written before the halt")
	}
	if _, err := d.WriteAt(bytes.Repeat([]byte{3}, 4096), 4096); err != nil {
		t.Fatalf("a write after Restart: %v", err)
	}
}
