package volume

import (
	"bytes"
	"errors"
	"testing"

	"github.com/blkrep/blkrep/activelog"
	"github.com/blkrep/blkrep/internal/crashdisk"
	"github.com/blkrep/blkrep/meta"
)

const testSize = 64 << 20 // exported bytes

// testSpec returns a spec for internal metadata on a fresh crashdisk.
func testSpec(t testing.TB, peers ...string) (Spec, *crashdisk.Disk) {
	t.Helper()
	s := Spec{Cluster: "c", Volume: "r0", Node: "alpha", SizeBytes: testSize, Peers: peers,
		PeerSlots: 3, BytesPerBit: 4096, ALExtents: 4, MaxUpdates: 2, MetaPath: "test-disk"}
	dev, err := meta.DeviceBytesFor(testSize, s.Geometry())
	if err != nil {
		t.Fatal(err)
	}
	d := crashdisk.New(int(dev))
	s.Data, s.DataBytes = d, dev
	return s, d
}

func mustCreate(t testing.TB, s Spec) {
	t.Helper()
	if _, err := Create(&s, false); err != nil {
		t.Fatal(err)
	}
}

func TestCreateOpenWriteClose(t *testing.T) {
	s, _ := testSpec(t, "beta")
	mustCreate(t, s)
	v, err := Open(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	buf := bytes.Repeat([]byte{7}, 8192)
	for _, off := range []int64{0, 5 << 20, 9 << 20, 13 << 20, 17 << 20, 33 << 20} {
		if _, err := v.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	st := v.Status()
	if st.ActivityLog.Hot != 4 || st.ActivityLog.Writes == 0 || st.ActivityLog.Evictions == 0 {
		t.Errorf("activity log: %+v", st.ActivityLog)
	}
	if st.Peers[0].Node != "beta" || st.Peers[0].DirtyBytes != 6*8192 {
		t.Errorf("peer slot 0: %+v", st.Peers[0])
	}
	if st.Peers[1].DirtyBytes != 0 {
		t.Errorf("unused slot has bits: %+v", st.Peers[1])
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	dump, err := Inspect(&s)
	if err != nil {
		t.Fatal(err)
	}
	if !dump.ActivityLog.Clean || dump.Peers[0].DirtyBytes != 6*8192 || len(dump.Problems) != 0 {
		t.Errorf("dump after clean close: clean=%v dirty=%d problems=%v", dump.ActivityLog.Clean, dump.Peers[0].DirtyBytes, dump.Problems)
	}
	if !contains(dump.Flags, "al-clean") || contains(dump.Flags, "primary") || contains(dump.Flags, "just-created") {
		t.Errorf("flags after close: %v", dump.Flags)
	}
	if dump.Current == "0000000000000000" {
		t.Error("no data generation after the first write")
	}
	// Reopen: nothing crashed, bits kept.
	v, err = Open(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st := v.Status(); st.LastShutdown != "clean" || st.Peers[0].DirtyBytes != 6*8192 {
		t.Errorf("reopen: %+v", st)
	}
	v.Close()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestCrashMarksHotExtents(t *testing.T) {
	s, d := testSpec(t) // standalone: no peer, bits only from the crash
	mustCreate(t, s)
	v, err := Open(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{1 << 20, 9 << 20, 30 << 20} {
		if _, err := v.WriteAt(make([]byte, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	v.Abandon()
	d.Crash(1)
	v, err = Open(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := v.Status()
	if st.LastShutdown != "crash" || !contains(st.Flags, "crashed-primary") {
		t.Errorf("after crash: %s %v", st.LastShutdown, st.Flags)
	}
	for _, p := range st.Peers {
		if p.DirtyBytes != 3*activelog.ExtentSize {
			t.Errorf("slot %d: %d dirty bytes, want 3 extents", p.Slot, p.DirtyBytes)
		}
	}
	v.Abandon()
	dump, err := Inspect(&s)
	if err != nil {
		t.Fatal(err)
	}
	if len(dump.ActivityLog.Hot) != 3 || dump.Peers[2].DirtyBytes != 3*activelog.ExtentSize || !contains(dump.Flags, "crashed-primary") {
		t.Errorf("dump: hot %v peers %+v flags %v", dump.ActivityLog.Hot, dump.Peers, dump.Flags)
	}
}

func TestCreateRefusesExisting(t *testing.T) {
	s, d := testSpec(t)
	d.WriteAt([]byte{1}, s.DataBytes-10<<10) // data in the future metadata area
	if _, err := Create(&s, false); !errors.Is(err, ErrExists) {
		t.Fatalf("data at the end: %v", err)
	}
	c, err := Create(&s, true)
	if err != nil || !c.DataOverwritten {
		t.Fatalf("forced: %+v %v", c, err)
	}
	if _, err := Create(&s, false); !errors.Is(err, ErrExists) {
		t.Fatalf("existing metadata: %v", err)
	}
	if c, err := Create(&s, true); err != nil || !c.Replaced {
		t.Fatalf("forced over metadata: %+v %v", c, err)
	}
}
