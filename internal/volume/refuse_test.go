package volume

// Damaged, foreign or mismatched metadata: Open refuses it with ErrRefused
// and a message naming the problem, and writes nothing; Inspect writes
// nothing either and reports the problem.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"log/slog"
	"strings"
	"testing"

	"github.com/blkrep/blkrep/internal/crashdisk"
	"github.com/blkrep/blkrep/meta"
)

const refuseSize = 16 << 20

// Superblock fields patched by the tests (meta/superblock.go: the version
// is a little-endian u32 at 8, the CRC32C of the block with the CRC field
// zeroed a u32 at 12).
const (
	sbOffVersion = 8
	sbOffCRC     = 12
)

// refuseFixture is a volume with fresh metadata that was opened, written
// and closed cleanly, so that every part of the metadata holds something.
type refuseFixture struct {
	spec Spec
	disk *crashdisk.Disk
	ctr  *opCounter
}

func newRefuseFixture(t *testing.T) *refuseFixture {
	t.Helper()
	s, d, ctr := crashSpecFor(t, refuseSize, []string{"beta"})
	mustCreate(t, s)
	v, err := Open(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 5 << 20, 9 << 20, 13 << 20} {
		if _, err := v.WriteAt(bytes.Repeat([]byte{9}, 8192), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	return &refuseFixture{spec: s, disk: d, ctr: ctr}
}

func (f *refuseFixture) superOffsets() [2]int64 {
	return meta.SuperblockOffsets(f.spec.DataBytes, false)
}

// patch changes the durable image behind the volume's back.
func (f *refuseFixture) patch(t *testing.T, off int64, fn func(b []byte), n int) {
	t.Helper()
	b := make([]byte, n)
	if _, err := f.disk.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	fn(b)
	if _, err := f.disk.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.disk.Sync(); err != nil {
		t.Fatal(err)
	}
}

func (f *refuseFixture) flipSuper(t *testing.T, copy int) {
	f.patch(t, f.superOffsets()[copy]+100, func(b []byte) { b[0] ^= 0x40 }, 1)
}

// setVersion gives a superblock copy another format version, with a
// valid checksum.
func (f *refuseFixture) setVersion(t *testing.T, copy int, version uint32) {
	f.patch(t, f.superOffsets()[copy], func(b []byte) {
		binary.LittleEndian.PutUint32(b[sbOffVersion:], version)
		binary.LittleEndian.PutUint32(b[sbOffCRC:], 0)
		binary.LittleEndian.PutUint32(b[sbOffCRC:], crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
	}, meta.SuperblockSize)
}

// usedCopy is the copy Load takes.
func (f *refuseFixture) usedCopy(t *testing.T) int {
	t.Helper()
	_, info, err := meta.Load(metaDev{f.disk}, f.spec.DataBytes, false)
	if err != nil {
		t.Fatal(err)
	}
	return info.Used
}

func (f *refuseFixture) layout(t *testing.T) meta.Layout {
	t.Helper()
	sb, _, err := meta.Load(metaDev{f.disk}, f.spec.DataBytes, false)
	if err != nil {
		t.Fatal(err)
	}
	l, err := layoutOf(sb)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// writesNothing runs fn and fails if it wrote or flushed anything.
func (f *refuseFixture) writesNothing(t *testing.T, what string, fn func()) {
	t.Helper()
	before := f.disk.Bytes()
	pending := f.disk.Pending()
	n0, _, _ := f.ctr.counts()
	fn()
	if n, w, s := f.ctr.counts(); n != n0 {
		t.Errorf("%s: %d disk writes and flushes (writes %d, flushes %d so far)", what, n-n0, w, s)
	}
	if f.disk.Pending() != pending || !bytes.Equal(before, f.disk.Bytes()) {
		t.Errorf("%s changed the disk", what)
	}
}

func TestOpenRefuses(t *testing.T) {
	for _, c := range []struct {
		name string
		// damage breaks the metadata, or changes the spec Open is given.
		damage func(t *testing.T, f *refuseFixture, s *Spec)
		// want are substrings of the refusal.
		want []string
		// inspectErr: Inspect finds no usable superblock; otherwise it
		// must list a problem containing inspectWant (in Problems, or
		// the activity log's error).
		inspectErr  bool
		inspectWant string
	}{
		{
			name:       "both superblock copies corrupt",
			damage:     func(t *testing.T, f *refuseFixture, s *Spec) { f.flipSuper(t, 0); f.flipSuper(t, 1) },
			want:       []string{"unreadable", "both copies", "checksum", "create-md --force"},
			inspectErr: true,
		},
		{
			name: "wrong magic in both copies",
			damage: func(t *testing.T, f *refuseFixture, s *Spec) {
				for i := range 2 {
					f.patch(t, f.superOffsets()[i], func(b []byte) { copy(b, "NOTOURS!") }, 8)
				}
			},
			want:       []string{"no blkrep metadata", "create-md"},
			inspectErr: true,
		},
		{
			name: "no metadata (fresh zero disk)",
			damage: func(t *testing.T, f *refuseFixture, s *Spec) {
				*s, f.disk, f.ctr = crashSpecFor(t, refuseSize, []string{"beta"})
			},
			want:       []string{"no blkrep metadata", "create-md"},
			inspectErr: true,
		},
		{
			name:       "future format version in both copies",
			damage:     func(t *testing.T, f *refuseFixture, s *Spec) { f.setVersion(t, 0, 2); f.setVersion(t, 1, 2) },
			want:       []string{"newer", "version 2"},
			inspectErr: true,
		},
		{
			// The newer blkrep updated one copy, then this one started:
			// using the older copy would overwrite the newer one.
			name:        "future format version in the newest copy",
			damage:      func(t *testing.T, f *refuseFixture, s *Spec) { f.setVersion(t, f.usedCopy(t), 2) },
			want:        []string{"newer", "version 2"},
			inspectWant: "newer",
		},
		{
			name:        "size mismatch",
			damage:      func(t *testing.T, f *refuseFixture, s *Spec) { s.SizeBytes -= 4 << 20 },
			want:        []string{"size", "16777216", "12582912"},
			inspectWant: "size = 12582912",
		},
		{
			name:        "wrong node",
			damage:      func(t *testing.T, f *refuseFixture, s *Spec) { s.Node = "gamma" },
			want:        []string{`node "alpha", not "gamma"`},
			inspectWant: "node",
		},
		{
			name:        "wrong volume",
			damage:      func(t *testing.T, f *refuseFixture, s *Spec) { s.Volume = "r1" },
			want:        []string{"another volume", FormatUUID(UUID("c", "r0")), FormatUUID(UUID("c", "r1"))},
			inspectWant: "another volume",
		},
		{
			name:        "wrong cluster",
			damage:      func(t *testing.T, f *refuseFixture, s *Spec) { s.Cluster = "d" },
			want:        []string{"another volume", `cluster "d"`},
			inspectWant: "another volume",
		},
		{
			name:        "bytes_per_bit mismatch",
			damage:      func(t *testing.T, f *refuseFixture, s *Spec) { s.BytesPerBit = 8192 },
			want:        []string{"bytes_per_bit = 4096", "8192"},
			inspectWant: "bytes_per_bit",
		},
		{
			name:        "al_extents mismatch",
			damage:      func(t *testing.T, f *refuseFixture, s *Spec) { s.ALExtents = 8 },
			want:        []string{"al_extents = 4", "8"},
			inspectWant: "al_extents",
		},
		{
			name:        "peer_slots mismatch",
			damage:      func(t *testing.T, f *refuseFixture, s *Spec) { s.PeerSlots = 5 },
			want:        []string{"peer_slots = 4", "5"},
			inspectWant: "peer_slots",
		},
		{
			name: "activity log ring destroyed",
			damage: func(t *testing.T, f *refuseFixture, s *Spec) {
				l := f.layout(t)
				f.patch(t, l.ALOffset, func(b []byte) {
					for i := range b {
						b[i] = byte(i*31 + 7)
					}
				}, l.ALRecords*meta.ALRecordSize)
			},
			want:        []string{"activity log", "no valid record", "create-md --force"},
			inspectWant: "no valid record",
		},
		{
			name: "no free peer slot",
			damage: func(t *testing.T, f *refuseFixture, s *Spec) {
				s.Peers = []string{"beta", "b2", "b3", "b4", "b5"} // four slots
			},
			want: []string{"no free peer slot", `"b5"`},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newRefuseFixture(t)
			s := f.spec
			c.damage(t, f, &s)
			f.writesNothing(t, "refused Open", func() {
				v, err := Open(s, Options{})
				if err == nil {
					v.Abandon()
					t.Fatal("Open accepted the metadata")
				}
				if !errors.Is(err, ErrRefused) {
					t.Errorf("error does not wrap ErrRefused: %v", err)
				}
				for _, w := range c.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("message lacks %q: %v", w, err)
					}
				}
				t.Logf("%v", err)
			})
			f.writesNothing(t, "Inspect", func() {
				d, err := Inspect(&s)
				switch {
				case c.inspectErr:
					if err == nil {
						t.Errorf("Inspect found a usable superblock: %+v", d)
					}
				case err != nil:
					t.Errorf("Inspect: %v", err)
				case c.inspectWant != "":
					found := strings.Contains(d.ActivityLog.Error, c.inspectWant)
					for _, p := range d.Problems {
						found = found || strings.Contains(p, c.inspectWant)
					}
					if !found {
						t.Errorf("dump lists no problem with %q: problems %q, activity log error %q", c.inspectWant, d.Problems, d.ActivityLog.Error)
					}
				}
			})
		})
	}
}

// TestOpenUsesTheIntactSuperblockCopy: one damaged copy is no reason to
// refuse: Open uses the other, says so, and rewrites the damaged one.
func TestOpenUsesTheIntactSuperblockCopy(t *testing.T) {
	for _, which := range []string{"newest", "older"} {
		t.Run(which, func(t *testing.T) {
			f := newRefuseFixture(t)
			bad := f.usedCopy(t)
			if which == "older" {
				bad = 1 - bad
			}
			f.flipSuper(t, bad)
			d, err := Inspect(&f.spec)
			if err != nil {
				t.Fatal(err)
			}
			if d.Superblock.CopyUsed != 1-bad || !strings.Contains(d.Superblock.CopyErrors[bad], "checksum") || d.Superblock.CopyErrors[1-bad] != "" {
				t.Errorf("dump: %+v", d.Superblock)
			}
			var logged bytes.Buffer
			v, err := Open(f.spec, Options{Log: slog.New(slog.NewTextHandler(&logged, nil))})
			if err != nil {
				t.Fatal(err)
			}
			if r := v.Recovery(); !strings.Contains(r.SuperblockCopyErr[bad], "checksum") || r.SuperblockCopyErr[1-bad] != "" || !r.Clean {
				t.Errorf("recovery: %+v", r)
			}
			if !strings.Contains(logged.String(), "superblock copy") {
				t.Errorf("the damaged copy is not logged:\n%s", logged.String())
			}
			if st := v.Status(); st.LastShutdown != "clean" || st.Peers[0].DirtyBytes != 4*8192 {
				t.Errorf("status: %+v", st)
			}
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			if d, err := Inspect(&f.spec); err != nil || d.Superblock.CopyErrors != [2]string{} {
				t.Errorf("after Open and Close both copies should be valid again: %+v %v", d.Superblock, err)
			}
		})
	}
}

// TestOpenSurvivesCorruptBitmapPages: a bitmap page failing its checksum
// is not refused: its whole region is out of sync.
func TestOpenSurvivesCorruptBitmapPages(t *testing.T) {
	f := newRefuseFixture(t)
	l := f.layout(t)
	f.patch(t, l.BitmapPageOffset(1, 0)+10, func(b []byte) { b[0] ^= 1 }, 1) // slot 1: unused, clear
	v, err := Open(f.spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := v.Status()
	if st.BadBitmapPages != 1 || st.Peers[1].DirtyBytes != refuseSize || st.Peers[0].DirtyBytes != 4*8192 {
		t.Errorf("status: bad pages %d, peers %+v", st.BadBitmapPages, st.Peers)
	}
	v.Abandon()
}
