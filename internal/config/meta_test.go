package config

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/blkrep/blkrep/activelog"
	"github.com/blkrep/blkrep/meta"
)

// metaReplica parses a one-replica volume of size with the given volume and
// replica keys.
func metaReplica(t *testing.T, size, volumeKeys, replicaKeys string) LocalReplica {
	t.Helper()
	in := volKeys("size = "+size+"\n"+volumeKeys) + replicaKeys + "\n"
	c, err := Parse([]byte(in), testDir)
	if err != nil {
		t.Fatal(err)
	}
	return c.LocalReplicas("alpha")[0]
}

func TestMetaGeometry(t *testing.T) {
	lr := metaReplica(t, `"1GiB"`, "bytes_per_bit = \"64KiB\"\nal_extents = 65536\npeer_slots = 7", `  meta_disk = "r0.meta"`)
	g := lr.Volume.MetaGeometry(lr.Replica, 12345<<12)
	want := meta.Geometry{DeviceBytes: 12345 << 12, External: true, PeerSlots: 7, BytesPerBit: 64 << 10, ALRecords: activelog.RingRecordsFor(65536)}
	if g != want {
		t.Errorf("MetaGeometry = %+v, want %+v", g, want)
	}
	if g.ALRecords < 2 || g.ALRecords > meta.MaxALRecords {
		t.Errorf("the largest al_extents needs %d ring records, outside meta's 2..%d", g.ALRecords, meta.MaxALRecords)
	}
	lr = metaReplica(t, `"1GiB"`, "", "")
	if g := lr.Volume.MetaGeometry(lr.Replica, 1<<30); g != (meta.Geometry{DeviceBytes: 1 << 30, PeerSlots: 3, BytesPerBit: 4096, ALRecords: 8}) {
		t.Errorf("default MetaGeometry = %+v", g)
	}
	// A Volume built by hand: zero fields take the defaults.
	if g := (&Volume{SizeBytes: 1 << 20}).MetaGeometry(&Replica{MetaDisk: MetaDiskInternal}, 1<<20); g != (meta.Geometry{DeviceBytes: 1 << 20, PeerSlots: 3, BytesPerBit: 4096, ALRecords: 8}) {
		t.Errorf("MetaGeometry of a zero Volume = %+v", g)
	}
}

func TestDiskBytes(t *testing.T) {
	for _, tc := range []struct {
		name, size, volumeKeys, replicaKeys string
		disk, metaFile                      int64
	}{
		// 1 MiB, defaults: 8 KiB of superblocks, 8 AL records, 3 x (4 KiB of page
		// checksums + 1 bitmap page).
		{"internal 1MiB", `"1MiB"`, "", "", 1<<20 + 64<<10, 0},
		{"external 1MiB", `"1MiB"`, "", `  meta_disk = "m"`, 1 << 20, 64 << 10},
		{"none 1MiB", `"1MiB"`, "", `  meta_disk = "none"`, 1 << 20, 0},
		// The figure docs/config.md gives.
		{"internal 256MiB", `"256MiB"`, "", "", 256<<20 + 88<<10, 0},
		{"external 256MiB", `"256MiB"`, "", `  meta_disk = "m"`, 256 << 20, 76 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lr := metaReplica(t, tc.size, tc.volumeKeys, tc.replicaKeys)
			got, err := lr.DiskBytes()
			if err != nil || got != tc.disk {
				t.Errorf("DiskBytes = %d, %v; want %d", got, err, tc.disk)
			}
			if got := lr.MetaFileBytes(); got != tc.metaFile {
				t.Errorf("MetaFileBytes = %d, want %d", got, tc.metaFile)
			}
		})
	}
}

// TestDiskBytesLayout: a disk of DiskBytes with internal metadata exports the
// volume size exactly, one block less cannot hold it, and maxInternalSize is the
// largest size a disk holds; an external file of MetaFileBytes holds the area.
func TestDiskBytesLayout(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		size := fmtSize(rng.Int64N(1<<28)/SizeAlignBytes*SizeAlignBytes + SizeAlignBytes)
		if rng.IntN(10) == 0 {
			size = fmtSize((rng.Int64N(1<<20) + 1) << 30) // up to 1 PiB
		}
		keys := ""
		if rng.IntN(2) == 0 {
			keys = "bytes_per_bit = " + fmtSize(int64(meta.MinBytesPerBit)<<rng.IntN(9)) + "\npeer_slots = " + fmtSize(int64(3+rng.IntN(30))) + "\nal_extents = " + fmtSize(rng.Int64N(activelog.MaxExtents)+1)
		}
		lr := metaReplica(t, size, keys, "")
		v, r := lr.Volume, lr.Replica
		disk, err := lr.DiskBytes()
		if err != nil {
			t.Fatalf("size %s %q: %v", size, keys, err)
		}
		l, err := meta.ComputeLayout(v.MetaGeometry(r, disk))
		if err != nil || l.ExportedBytes != v.SizeBytes {
			t.Fatalf("size %s %q: disk %d exports %d, %v", size, keys, disk, l.ExportedBytes, err)
		}
		if got := maxInternalSize(v, r, disk); got != v.SizeBytes {
			t.Fatalf("size %s %q: maxInternalSize(%d) = %d", size, keys, disk, got)
		}
		if got := maxInternalSize(v, r, disk+meta.BlockSize-1); got != v.SizeBytes {
			t.Fatalf("size %s %q: maxInternalSize(%d) = %d", size, keys, disk+meta.BlockSize-1, got)
		}
		if got := maxInternalSize(v, r, disk-1); got >= v.SizeBytes {
			t.Fatalf("size %s %q: maxInternalSize(%d) = %d", size, keys, disk-1, got)
		} else if got > 0 {
			need, err := (LocalReplica{&Volume{SizeBytes: got, BytesPerBit: v.BytesPerBit, ALExtents: v.ALExtents, PeerSlots: v.PeerSlots}, r}).DiskBytes()
			if err != nil || need > disk-1 {
				t.Fatalf("size %s %q: maxInternalSize(%d) = %d, which needs %d, %v", size, keys, disk-1, got, need, err)
			}
		}

		ext := LocalReplica{v, &Replica{MetaDisk: "/m"}}
		if d, err := ext.DiskBytes(); err != nil || d != v.SizeBytes {
			t.Fatalf("external DiskBytes = %d, %v", d, err)
		}
		el, err := meta.ComputeLayout(v.MetaGeometry(ext.Replica, v.SizeBytes))
		if err != nil || ext.MetaFileBytes() != el.AreaBytes || el.AreaBytes <= 0 {
			t.Fatalf("MetaFileBytes = %d, layout %+v, %v", ext.MetaFileBytes(), el, err)
		}
	}
}

func fmtSize(n int64) string {
	return strconv.FormatInt(n, 10)
}
