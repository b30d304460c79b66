package meta

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/blkrep/blkrep/internal/crashdisk"
)

// flip damages one byte of the device.
func flip(t *testing.T, d *crashdisk.Disk, off int64) {
	t.Helper()
	b := make([]byte, 1)
	d.ReadAt(b, off)
	b[0] ^= 0xff
	d.WriteAt(b, off)
}

func testSB(dev int64) *Superblock {
	l, _ := ComputeLayout(Geometry{DeviceBytes: dev})
	sb := &Superblock{
		Flags: FlagJustCreated | FlagConsistent, SizeBytes: l.ExportedBytes, DeviceBytes: dev,
		BytesPerBit: DefaultBytesPerBit, ALRecords: DefaultALRecords, ALExtents: 1237,
		Node: "alpha", Current: 0x1234, Peers: make([]PeerSlot, 3),
	}
	sb.VolumeUUID[0] = 0xab
	sb.Peers[0] = PeerSlot{Node: "beta", BitmapID: 0x99, Flags: PeerOutdated}
	sb.History[0] = 0x42
	return sb
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	sb := testSB(64 << 20)
	sb.Seq = 7
	b, err := sb.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", sb) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, sb)
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := testSB(64 << 20).Encode()
	mut := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	resum := func(b []byte) { // recompute the CRC so only the field is wrong
		copy(b[offCRC:], []byte{0, 0, 0, 0})
		c := crcOf(b)
		b[offCRC], b[offCRC+1], b[offCRC+2], b[offCRC+3] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
	}
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"zeros", make([]byte, SuperblockSize), ErrNoMetadata},
		{"foreign magic", mut(func(b []byte) { copy(b, "EXT4SUPR") }), ErrNoMetadata},
		{"flipped bit", mut(func(b []byte) { b[200] ^= 1 }), ErrCorrupt},
		{"torn sector", mut(func(b []byte) { clear(b[256:512]) }), ErrCorrupt},
		{"future version", mut(func(b []byte) { b[offVersion] = FormatVersion + 1; resum(b) }), ErrFutureVersion},
		{"slots out of range", mut(func(b []byte) { b[offSlots] = 200; resum(b) }), ErrCorrupt},
		{"bpb not power of two", mut(func(b []byte) { b[offBPB] = 1; resum(b) }), ErrCorrupt},
		{"name length", mut(func(b []byte) { b[offNode] = 200; resum(b) }), ErrCorrupt},
		{"short", good[:100], ErrCorrupt},
	}
	for _, tc := range cases {
		if _, err := Decode(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func crcOf(b []byte) uint32 {
	c := bytes.Clone(b)
	copy(c[offCRC:], []byte{0, 0, 0, 0})
	return crcChecksum(c)
}

func TestLoadPicksNewestValid(t *testing.T) {
	const size = 64 << 20
	dev := crashdisk.New(size)
	sb := testSB(size)
	if _, _, err := Load(dev, size, false); !errors.Is(err, ErrNoMetadata) {
		t.Fatalf("empty device: %v", err)
	}
	info, err := Initialize(dev, sb)
	if err != nil {
		t.Fatal(err)
	}
	sb.Current = 0x5678
	if _, err := Write(dev, sb, &info, sb.Seq); err != nil {
		t.Fatal(err)
	}
	got, li, err := Load(dev, size, false)
	if err != nil || got.Current != 0x5678 || got.Seq != 3 || li.Used != 0 {
		t.Fatalf("load: %+v %+v %v", got, li, err)
	}
	// Damage the newest copy: the previous state comes back.
	off := SuperblockOffsets(size, false)[li.Used]
	flip(t, dev, off+300)
	got, li, err = Load(dev, size, false)
	if err != nil || got.Current != 0x1234 || li.CopyErr[0] == nil {
		t.Fatalf("after damage: %+v %+v %v", got, li, err)
	}
	// Both bad: refuse with a message naming both.
	flip(t, dev, SuperblockOffsets(size, false)[1]+300)
	if _, _, err := Load(dev, size, false); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("both damaged: %v", err)
	}
	// Geometry from another device size.
	dev2 := crashdisk.New(size)
	Initialize(dev2, testSB(size))
	if _, _, err := Load(dev2, size+4096, false); !errors.Is(err, ErrNoMetadata) && !errors.Is(err, ErrGeometryMismatch) {
		t.Fatalf("other size: %v", err)
	}
}

// For many seeds: update the superblock repeatedly, crash at a random
// point (unsynced writes kept, lost or torn), and check Load returns
// exactly the last synced state or the one being written, never an error.
func TestCrashDuringUpdate(t *testing.T) {
	const size = 1 << 20
	for seed := uint64(0); seed < 500; seed++ {
		r := rand.New(rand.NewPCG(seed, 1))
		dev := crashdisk.New(size)
		sb := testSB(size)
		info, err := Initialize(dev, sb)
		if err != nil {
			t.Fatal(err)
		}
		committed := sb.Current
		for range r.IntN(5) {
			sb.Current = r.Uint64()
			Write(dev, sb, &info, sb.Seq)
			committed = sb.Current
		}
		// The update in progress: written, maybe not synced.
		inFlight := r.Uint64()
		sb.Current = inFlight
		b, _ := sb.Encode()
		dev.WriteAt(b, SuperblockOffsets(size, false)[1-info.Used])
		dev.Crash(seed)
		got, _, err := Load(dev, size, false)
		if err != nil {
			t.Fatalf("seed %d: load after crash: %v", seed, err)
		}
		if got.Current != committed && got.Current != inFlight {
			t.Fatalf("seed %d: got generation %#x, want %#x or %#x", seed, got.Current, committed, inFlight)
		}
	}
}

func TestLayout(t *testing.T) {
	l, err := ComputeLayout(Geometry{DeviceBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	// 1 GiB at 4 KiB/bit = 262144 bits = 8 pages per slot, 3 slots.
	if l.BitmapPages != 8 || l.BitmapBytes != 8*4096 || l.PageCRCBytes != 4096 {
		t.Fatalf("bitmap geometry %+v", l)
	}
	wantArea := int64(2*4096 + 8*4096 + 3*(4096+8*4096))
	if l.AreaBytes != wantArea || l.ExportedBytes != 1<<30-wantArea || l.AreaOffset != l.ExportedBytes {
		t.Fatalf("area %d exported %d", l.AreaBytes, l.ExportedBytes)
	}
	if l.Superblock[1] != 1<<30-4096 || l.ALOffset != l.AreaOffset {
		t.Fatalf("offsets %+v", l)
	}
	end := l.BitmapPageOffset(2, l.BitmapPages-1) + BitmapPageSize
	if end != l.Superblock[0] {
		t.Fatalf("regions do not tile the area: bitmaps end at %d, superblock at %d", end, l.Superblock[0])
	}
	ext, _ := ComputeLayout(Geometry{DeviceBytes: 1 << 30, External: true})
	if ext.ExportedBytes != 1<<30 || ext.Superblock[0] != 0 || ext.ALOffset != 8192 {
		t.Fatalf("external %+v", ext)
	}
	// 1 TiB at 4 KiB per bit: 32 MiB of bitmap per slot.
	tb, _ := ComputeLayout(Geometry{DeviceBytes: 1 << 40, External: true})
	if tb.BitmapBytes != 32<<20 {
		t.Fatalf("1 TiB bitmap %d", tb.BitmapBytes)
	}
	for _, g := range []Geometry{
		{DeviceBytes: 4096},
		{DeviceBytes: 1<<30 + 1},
		{DeviceBytes: 1 << 30, PeerSlots: 2},
		{DeviceBytes: 1 << 30, BytesPerBit: 3000},
		{DeviceBytes: 1 << 30, BytesPerBit: 2 << 20},
		{DeviceBytes: 1 << 30, ALRecords: 1},
	} {
		if _, err := ComputeLayout(g); !errors.Is(err, ErrGeometry) {
			t.Errorf("%+v accepted: %v", g, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	good, _ := testSB(64 << 20).Encode()
	f.Add(good)
	f.Add(make([]byte, SuperblockSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		sb, err := Decode(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode back to the same bytes.
		again, err := sb.Encode()
		if err != nil {
			t.Fatalf("decoded superblock does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatal("decode/encode not the identity on a valid block")
		}
	})
}

func TestDeviceBytesFor(t *testing.T) {
	for _, exported := range []int64{4096, 1 << 20, 256 << 20, 10 << 30, 1 << 40, (1 << 40) + 4096*32768*8} {
		for _, bpb := range []uint32{4096, 65536, 1 << 20} {
			g := Geometry{PeerSlots: 3, BytesPerBit: bpb}
			dev, err := DeviceBytesFor(exported, g)
			if err != nil {
				t.Fatal(err)
			}
			g.DeviceBytes = dev
			l, err := ComputeLayout(g)
			if err != nil {
				t.Fatal(err)
			}
			if l.ExportedBytes != exported {
				t.Errorf("exported %d bpb %d: device %d exports %d", exported, bpb, dev, l.ExportedBytes)
			}
			g.DeviceBytes = dev - BlockSize
			if l2, err := ComputeLayout(g); err == nil && l2.ExportedBytes >= exported {
				t.Errorf("exported %d bpb %d: device %d is not the smallest", exported, bpb, dev)
			}
			g.External = true
			if d, err := DeviceBytesFor(exported, g); err != nil || d != exported {
				t.Errorf("external: %d, %v", d, err)
			}
		}
	}
	if _, err := DeviceBytesFor(1000, Geometry{}); !errors.Is(err, ErrGeometry) {
		t.Errorf("unaligned size: %v", err)
	}
}
