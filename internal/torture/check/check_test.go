package check

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// run builds a history and the image it ends with, by hand.
type run struct {
	t   *testing.T
	h   *History
	img []byte
}

func newRun(t *testing.T, sectors int) *run {
	return &run{t: t, h: NewHistory(), img: make([]byte, sectors*SectorSize)}
}

func node(tenure int) string { return []string{"alpha", "beta"}[tenure%2] }

// begin starts a write of n sectors at sector s.
func (r *run) begin(s, n int64, tenure int) *Write {
	return r.h.BeginWrite(s*SectorSize, n*SectorSize, tenure, node(tenure), false)
}

// ack records a write of n sectors at sector s, acknowledged, and lands
// it on the image.
func (r *run) ack(s, n int64, tenure int) *Write {
	w := r.begin(s, n, tenure)
	r.h.EndWrite(w, nil)
	r.land(w)
	return w
}

// ackLost records an acknowledged write that does not reach the image.
func (r *run) ackLost(s, n int64, tenure int) *Write {
	w := r.begin(s, n, tenure)
	r.h.EndWrite(w, nil)
	return w
}

// land puts w's data on the image.
func (r *run) land(w *Write) { r.landSectors(w, int(w.Len/SectorSize)) }

// landSectors puts the first k sectors of w on the image (a torn write).
func (r *run) landSectors(w *Write, k int) {
	Fill(r.img[w.Off:w.Off+int64(k)*SectorSize], w.ID, w.Off)
}

// flush records an acknowledged flush.
func (r *run) flush(tenure int) *Flush {
	f := r.h.BeginFlush(tenure, node(tenure))
	r.h.EndFlush(f, nil)
	r.h.PeerAcked(f)
	return f
}

func (r *run) judge(p Protocol) *Report { return Judge(p, r.h, r.img) }

func kinds(rep *Report) []string {
	var ks []string
	for _, v := range rep.Violations {
		ks = append(ks, v.Kind)
	}
	return ks
}

// expect checks the kinds of rep's violations, in order.
func expect(t *testing.T, rep *Report, want ...string) {
	t.Helper()
	if got := kinds(rep); !slices.Equal(got, want) {
		t.Fatalf("protocol %s: violations %q, want %q\n%v\n%s", rep.Protocol, got, want, rep.Err(), rep)
	}
	if rep.OK() != (len(want) == 0) || (rep.Err() == nil) != (len(want) == 0) {
		t.Fatalf("OK %v, Err %v with %d violations", rep.OK(), rep.Err(), len(want))
	}
}

var all = []Protocol{ProtocolA, ProtocolB, ProtocolC}

func TestCleanRun(t *testing.T) {
	r := newRun(t, 64)
	r.ack(0, 8, 1)
	r.ack(8, 4, 1)
	r.flush(1)
	r.ack(0, 2, 1) // overwrites the start of #1
	w := r.begin(20, 4, 1)
	r.h.EndWrite(w, errors.New("EIO")) // failed, never landed
	r.h.Note("crash", "alpha", "SIGKILL", false)
	r.h.Note("promote", "beta", "term 2", false)
	r.ack(12, 4, 2)
	r.begin(30, 2, 2) // in flight, never landed
	f := r.h.BeginFlush(2, "beta")
	r.h.EndFlush(f, errors.New("peer gone"))
	for _, p := range all {
		rep := r.judge(p)
		expect(t, rep)
		if rep.Writes != 6 || rep.Acked != 4 || rep.Failed != 1 || rep.InFlight != 1 || rep.Flushes != 2 || rep.FlushesAcked != 1 {
			t.Fatalf("counts:\n%s", rep)
		}
		if rep.Sectors != 64 || rep.SectorsWritten != 8+4+4+4+2 || rep.Torn != 0 {
			t.Fatalf("sectors:\n%s", rep)
		}
		wantReq, wantStrong := 2, 0 // #1 and #2 are flushed
		if p != ProtocolA {
			wantReq, wantStrong = 4, 2
		}
		if rep.Required != wantReq || rep.Strong != wantStrong || rep.Excused != 0 {
			t.Fatalf("required %d strong %d, want %d %d", rep.Required, rep.Strong, wantReq, wantStrong)
		}
		if !strings.Contains(rep.String(), "violations  0") {
			t.Fatalf("summary:\n%s", rep)
		}
	}
}

func TestLostAckedWrite(t *testing.T) {
	r := newRun(t, 16)
	r.ack(0, 2, 1)
	w := r.ackLost(4, 2, 1)
	expect(t, r.judge(ProtocolA))
	expect(t, r.judge(ProtocolB), KindLost)
	rep := r.judge(ProtocolC)
	expect(t, rep, KindLost)
	v := rep.Violations[0]
	if v.Off != 4*SectorSize || v.Len != 2*SectorSize || v.Found != 0 || v.Want != w.ID {
		t.Fatalf("violation %+v", v)
	}
	if !strings.Contains(v.Msg, "sector is zero") || !strings.Contains(v.Msg, "protocol C") {
		t.Fatalf("msg %q", v.Msg)
	}
	if len(v.History) != 1 || v.History[0] != w.String() {
		t.Fatalf("history %q", v.History)
	}

	// Flushed: lost under every protocol, and the flush is in the history.
	f := r.flush(1)
	for _, p := range all {
		rep := r.judge(p)
		expect(t, rep, KindLost)
		v := rep.Violations[0]
		if !strings.Contains(v.Msg, "flushed by flush #1") {
			t.Fatalf("msg %q", v.Msg)
		}
		if !slices.Equal(v.History, []string{w.String(), f.String()}) {
			t.Fatalf("history %q", v.History)
		}
	}
}

func TestLostAfterPowerLoss(t *testing.T) {
	r := newRun(t, 16)
	r.ack(0, 2, 1)
	r.ackLost(4, 2, 1)
	r.h.Note("powerloss", "alpha", "lose unsynced", true)
	for _, p := range all {
		rep := r.judge(p)
		expect(t, rep)
		if p != ProtocolA && (rep.Excused != 2 || rep.Strong != 0 || rep.Required != 0) {
			t.Fatalf("%s: excused %d strong %d required %d", p, rep.Excused, rep.Strong, rep.Required)
		}
	}
	// A write acknowledged after the power loss is required again.
	r.ackLost(8, 1, 2)
	expect(t, r.judge(ProtocolA))
	expect(t, r.judge(ProtocolC), KindLost)

	// A power loss noted without PowerLoss (a process crash) excuses nothing.
	r2 := newRun(t, 16)
	r2.ackLost(4, 2, 1)
	r2.h.Note("crash", "alpha", "SIGKILL", false)
	expect(t, r2.judge(ProtocolC), KindLost)

	// Flushed before the power loss: lost.
	r3 := newRun(t, 16)
	w3 := r3.ackLost(4, 2, 1)
	r3.flush(1)
	r3.h.Note("powerloss", "alpha", "", true)
	for _, p := range all {
		rep := r3.judge(p)
		expect(t, rep, KindLost)
		if rep.Violations[0].Want != w3.ID {
			t.Fatalf("%+v", rep.Violations[0])
		}
		// The power loss event is in the history.
		if h := rep.Violations[0].History; len(h) != 3 || !strings.Contains(h[2], "(power loss)") {
			t.Fatalf("history %q", h)
		}
	}
}

func TestFUA(t *testing.T) {
	r := newRun(t, 16)
	w := r.h.BeginWrite(0, SectorSize, 1, "alpha", true)
	r.h.EndWrite(w, nil)
	r.h.Note("powerloss", "alpha", "", true)
	// FUA makes the write required under B and C even after a power loss,
	// not under A.
	expect(t, r.judge(ProtocolA))
	expect(t, r.judge(ProtocolB), KindLost)
	rep := r.judge(ProtocolC)
	expect(t, rep, KindLost)
	if !strings.Contains(rep.Violations[0].Msg, "FUA") {
		t.Fatalf("msg %q", rep.Violations[0].Msg)
	}
	// An unacknowledged FUA write is not required.
	r2 := newRun(t, 16)
	w2 := r2.h.BeginWrite(0, SectorSize, 1, "alpha", true)
	r2.h.EndWrite(w2, errors.New("EIO"))
	for _, p := range all {
		expect(t, r2.judge(p))
	}
}

func TestOlderVersion(t *testing.T) {
	r := newRun(t, 16)
	w1 := r.ack(0, 4, 1)
	w2 := r.ackLost(0, 4, 1)
	r.flush(1)
	for _, p := range all {
		rep := r.judge(p)
		expect(t, rep, KindLost)
		v := rep.Violations[0]
		if v.Found != w1.ID || v.Want != w2.ID || v.Len != 4*SectorSize || !strings.Contains(v.Msg, "holds write #1") {
			t.Fatalf("%+v", v)
		}
	}
	// A later write in doubt over it is fine.
	w3 := r.begin(0, 4, 1)
	r.land(w3)
	for _, p := range all {
		expect(t, r.judge(p))
	}
}

func TestNeverWritten(t *testing.T) {
	setup := func() *run {
		r := newRun(t, 32)
		r.ack(0, 4, 1)
		r.ack(8, 4, 1)
		return r
	}
	for _, tc := range []struct {
		name   string
		mangle func(r *run)
		off    int64 // sector
		found  uint64
		want   uint64 // under B and C (strong rule); none under A
		msg    string
	}{
		{"corrupt", func(r *run) { r.img[2*SectorSize+100] ^= 1 }, 2, 0, 1, "bad CRC"},
		{"bad magic", func(r *run) { r.img[9*SectorSize] = 'X' }, 9, 0, 2, "bad magic"},
		{"wrong offset", func(r *run) {
			copy(r.img[1*SectorSize:2*SectorSize], r.img[8*SectorSize:9*SectorSize])
		}, 1, 2, 1, "wrong offset"},
		{"foreign write", func(r *run) {
			Fill(r.img[1*SectorSize:2*SectorSize], 2, 1*SectorSize) // #2 covers [8, 12)
		}, 1, 2, 1, "does not cover"},
		{"unknown write", func(r *run) { Fill(r.img[3*SectorSize:4*SectorSize], 99, 3*SectorSize) }, 3, 99, 1, "never recorded"},
		{"id zero", func(r *run) { Fill(r.img[3*SectorSize:4*SectorSize], 0, 3*SectorSize) }, 3, 0, 1, "never recorded"},
		{"uncovered stamp", func(r *run) { Fill(r.img[20*SectorSize:21*SectorSize], 1, 20*SectorSize) }, 20, 1, 0, "no recorded write covers"},
		{"uncovered garbage", func(r *run) { r.img[31*SectorSize+511] = 1 }, 31, 0, 0, "not zero"},
	} {
		r := setup()
		tc.mangle(r)
		for _, p := range all {
			rep := r.judge(p)
			expect(t, rep, KindNeverWritten)
			v := rep.Violations[0]
			want := tc.want
			if p == ProtocolA {
				want = 0
			}
			if v.Off != tc.off*SectorSize || v.Len != SectorSize || v.Found != tc.found || v.Want != want || !strings.Contains(v.Msg, tc.msg) {
				t.Errorf("%s: %+v, want sector %d found %d msg %q", tc.name, v, tc.off, tc.found, tc.msg)
			}
		}
	}
	// A corrupt sector where a required write should be names it.
	r := setup()
	r.flush(1)
	r.img[2*SectorSize+100] ^= 1
	rep := r.judge(ProtocolA)
	expect(t, rep, KindNeverWritten)
	if v := rep.Violations[0]; v.Want != 1 || !strings.Contains(v.Msg, "write #1 is required here") || len(v.History) == 0 {
		t.Fatalf("%+v", v)
	}
}

func TestTornInDoubt(t *testing.T) {
	r := newRun(t, 16)
	r.ack(0, 8, 1)
	r.flush(1)
	w := r.begin(0, 8, 1) // in flight when the power went
	r.landSectors(w, 3)
	r.h.Note("powerloss", "alpha", "torn", true)
	for _, p := range all {
		rep := r.judge(p)
		expect(t, rep)
		if rep.Torn != 5 {
			t.Fatalf("torn %d, want 5", rep.Torn)
		}
	}
	// A torn write over zeroes counts too.
	r2 := newRun(t, 16)
	w2 := r2.begin(4, 4, 1)
	r2.landSectors(w2, 1)
	if rep := r2.judge(ProtocolC); !rep.OK() || rep.Torn != 3 {
		t.Fatalf("%v\n%s", rep.Err(), rep)
	}
	// Acked, torn, not flushed, power lost: fine under C, counted.
	r3 := newRun(t, 16)
	w3 := r3.begin(0, 4, 1)
	r3.h.EndWrite(w3, nil)
	r3.landSectors(w3, 2)
	r3.h.Note("powerloss", "alpha", "", true)
	if rep := r3.judge(ProtocolC); !rep.OK() || rep.Torn != 2 {
		t.Fatalf("%v\n%s", rep.Err(), rep)
	}
	// Flushed and torn: lost, on the missing sectors only.
	r4 := newRun(t, 16)
	w4 := r4.begin(0, 4, 1)
	r4.h.EndWrite(w4, nil)
	r4.flush(1)
	r4.landSectors(w4, 2)
	rep := r4.judge(ProtocolA)
	expect(t, rep, KindLost)
	if v := rep.Violations[0]; v.Off != 2*SectorSize || v.Len != 2*SectorSize || rep.Torn != 2 {
		t.Fatalf("%+v torn %d", v, rep.Torn)
	}
}

// The cut rule: epoch 1 (before flush #1) lost, epoch 2 present.
func TestCut(t *testing.T) {
	r := newRun(t, 32)
	w1 := r.ackLost(0, 2, 1) // epoch 1
	f := r.flush(1)
	r.h.Note("partition", "alpha", "", false)
	w2 := r.begin(8, 2, 1) // epoch 2, in doubt but present
	r.land(w2)
	for _, p := range all {
		rep := r.judge(p)
		expect(t, rep, KindLost, KindCut)
		v := rep.Violations[1]
		if v.Off != 0 || v.Len != 2*SectorSize || v.Found != 0 || v.Want != w1.ID {
			t.Fatalf("%+v", v)
		}
		if want := "write #2 is present but #1, acknowledged before flush #1 which completed before #2 was issued, is not"; !strings.Contains(v.Msg, want) {
			t.Fatalf("msg %q", v.Msg)
		}
		wantHist := []string{w1.String(), f.String(), "t=5 partition alpha", w2.String()}
		if !slices.Equal(v.History, wantHist) {
			t.Fatalf("history\n%s\nwant\n%s", strings.Join(v.History, "\n"), strings.Join(wantHist, "\n"))
		}
	}
	// Without epoch 2 present it is a plain rollback: lost, no cut.
	clear(r.img)
	for _, p := range all {
		expect(t, r.judge(p), KindLost)
	}
}

// A write of an earlier epoch present on one sector and missing on
// another, while a later epoch is present: cut on the missing sector.
func TestCutPartial(t *testing.T) {
	r := newRun(t, 32)
	w1 := r.begin(0, 4, 1)
	r.h.EndWrite(w1, nil)
	r.landSectors(w1, 1)
	r.flush(1)
	r.flush(1)
	r.ack(16, 1, 1)
	rep := r.judge(ProtocolA)
	expect(t, rep, KindLost, KindCut)
	if v := rep.Violations[1]; v.Off != SectorSize || v.Len != 3*SectorSize || v.Want != 1 {
		t.Fatalf("%+v", v)
	}
}

// The cut is the latest flush any present write implies: here #4,
// issued after flush #2, requires #2 (acked before flush #2), though #3,
// issued after flush #1 only, would not.
func TestCutLatestFlush(t *testing.T) {
	r := newRun(t, 32)
	r.ack(0, 1, 1)       // #1
	r.flush(1)           // flush #1
	r.ackLost(2, 1, 1)   // #2
	r.ack(4, 1, 1)       // #3: sees flush #1 only
	f2 := r.flush(1)     // flush #2
	w4 := r.ack(6, 1, 1) // #4
	r.ack(8, 1, 1)       // #5
	rep := r.judge(ProtocolA)
	expect(t, rep, KindLost, KindCut)
	if v := rep.Violations[1]; v.Want != 2 || !strings.Contains(v.Msg, fmt.Sprintf("write #%d is present", w4.ID)) || !strings.Contains(v.Msg, fmt.Sprintf("flush #%d", f2.ID)) {
		t.Fatalf("%+v", v)
	}

	// Overlapping flushes: #2 issued later but done first; what counts is
	// the latest issued of those done before the present write.
	r2 := newRun(t, 32)
	r2.ackLost(0, 1, 1)               // #1
	fa := r2.h.BeginFlush(1, "alpha") // flush #1
	r2.ackLost(2, 1, 1)               // #2, acked before flush #2 was issued
	fb := r2.h.BeginFlush(1, "alpha") // flush #2
	r2.h.EndFlush(fb, nil)
	r2.h.EndFlush(fa, nil)
	r2.h.PeerAcked(fb)
	r2.h.PeerAcked(fa)
	w := r2.ack(4, 1, 1) // #3
	rep = r2.judge(ProtocolA)
	expect(t, rep, KindLost, KindCut, KindLost, KindCut)
	if rep.Violations[3].Want != 2 || !strings.Contains(rep.Violations[3].Msg, fmt.Sprintf("before flush #2 which completed before #%d", w.ID)) {
		t.Fatalf("%+v", rep.Violations[3])
	}
}

// A flush acknowledged before the later write was issued, but in another
// tenure: no cut under A (and write #1 is not flushed by it).
func TestNoCutAcrossTenures(t *testing.T) {
	r := newRun(t, 32)
	r.ackLost(0, 2, 1)
	r.h.Note("promote", "beta", "", false)
	r.flush(2)
	r.ack(8, 2, 2)
	expect(t, r.judge(ProtocolA))
	expect(t, r.judge(ProtocolC), KindLost) // the strong rule, not the cut
	// A flush still in flight gives no cut either.
	r2 := newRun(t, 32)
	r2.ackLost(0, 2, 1)
	r2.h.BeginFlush(1, "alpha")
	r2.ack(8, 2, 1)
	expect(t, r2.judge(ProtocolA))
	// Nor a flush that was issued before the lost write was acknowledged.
	r3 := newRun(t, 32)
	w := r3.begin(0, 2, 1)
	f := r3.h.BeginFlush(1, "alpha")
	r3.h.EndWrite(w, nil)
	r3.h.EndFlush(f, nil)
	r3.ack(8, 2, 1)
	expect(t, r3.judge(ProtocolA))
	// Nor one that completed after the present write was issued.
	r4 := newRun(t, 32)
	r4.ackLost(0, 2, 1)
	f4 := r4.h.BeginFlush(1, "alpha")
	w4 := r4.begin(8, 2, 1)
	r4.h.EndFlush(f4, nil)
	r4.h.PeerAcked(f4)
	r4.land(w4)
	rep := r4.judge(ProtocolA)
	expect(t, rep, KindLost) // #1 is flushed, but no cut: #2 may have overtaken it
}

func TestShortImage(t *testing.T) {
	r := newRun(t, 8)
	r.ack(0, 4, 1)
	r.flush(1)
	rep := Judge(ProtocolA, r.h, r.img[:2*SectorSize])
	expect(t, rep, KindShort)
	if v := rep.Violations[0]; v.Off != 2*SectorSize || v.Len != 2*SectorSize || v.Want != 1 {
		t.Fatalf("%+v", v)
	}
}

func TestErrListsAtMostTen(t *testing.T) {
	r := newRun(t, 64)
	for s := int64(0); s < 64; s += 2 {
		r.ackLost(s, 1, 1)
	}
	rep := r.judge(ProtocolC)
	if len(rep.Violations) != 32 {
		t.Fatalf("%d violations", len(rep.Violations))
	}
	msg := rep.Err().Error()
	if n := strings.Count(msg, "\nlost ["); n != 10 || !strings.Contains(msg, "... and 22 more") || !strings.HasPrefix(msg, "protocol C: 32 violations") {
		t.Fatalf("%d listed:\n%s", n, msg)
	}
}

// History lines are capped, keeping the first and last events.
func TestHistoryCap(t *testing.T) {
	r := newRun(t, 8)
	w := r.ackLost(0, 1, 1)
	for i := range 100 {
		r.h.Note("partition", "alpha", fmt.Sprint(i), false)
	}
	rep := r.judge(ProtocolC)
	expect(t, rep, KindLost)
	h := rep.Violations[0].History
	if len(h) > maxLines || h[0] != w.String() || !strings.HasSuffix(h[1], ": 0") || !strings.HasSuffix(h[len(h)-1], ": 99") {
		t.Fatalf("%d lines:\n%s", len(h), strings.Join(h, "\n"))
	}
	if !slices.ContainsFunc(h, func(l string) bool { return strings.Contains(l, "events omitted") }) {
		t.Fatalf("no elision:\n%s", strings.Join(h, "\n"))
	}
	// Events before the involved writes are not listed.
	r2 := newRun(t, 8)
	r2.h.Note("crash", "beta", "long ago", false)
	r2.ackLost(0, 1, 1)
	if h := r2.judge(ProtocolC).Violations[0].History; len(h) != 1 {
		t.Fatalf("%q", h)
	}
}

func TestIdentical(t *testing.T) {
	a := make([]byte, 16*SectorSize)
	Fill(a[:8*SectorSize], 1, 0)
	b := slices.Clone(a)
	if err := Identical(a, b); err != nil {
		t.Fatal(err)
	}
	Fill(b[2*SectorSize:3*SectorSize], 5, 2*SectorSize)
	b[10*SectorSize] = 1
	err := Identical(a, b, "alpha", "beta")
	if err == nil || !strings.Contains(err.Error(), "2 sectors differ; the first at 1024: alpha has write #1, beta has write #5") {
		t.Fatalf("%v", err)
	}
	clear(b[:SectorSize])
	if err := Identical(a, b); err == nil || !strings.Contains(err.Error(), "3 sectors differ; the first at 0: a has write #1, b has zero") {
		t.Fatalf("%v", err)
	}
	if err := Identical(a, b[:SectorSize]); err == nil || !strings.Contains(err.Error(), "is 512") {
		t.Fatalf("%v", err)
	}
}

// A violation run stops where the finding changes.
func TestRuns(t *testing.T) {
	r := newRun(t, 32)
	r.ackLost(0, 4, 1)
	r.ackLost(4, 4, 1)
	w := r.ack(8, 4, 1)
	r.h.Note("x", "alpha", "", false)
	clear(r.img[9*SectorSize : 10*SectorSize])
	rep := r.judge(ProtocolC)
	expect(t, rep, KindLost, KindLost, KindLost)
	for i, want := range [][2]int64{{0, 4}, {4, 4}, {9, 1}} {
		if v := rep.Violations[i]; v.Off != want[0]*SectorSize || v.Len != want[1]*SectorSize {
			t.Fatalf("%d: %+v", i, v)
		}
	}
	if rep.Violations[2].Want != w.ID || rep.Torn != 1 {
		t.Fatalf("%+v torn %d", rep.Violations[2], rep.Torn)
	}
}

// Judge is linear: a big image and history (64 MiB, 100k writes of up to
// 256 KiB each, so their lengths add up to far more than the image) take
// well under seconds. Not timed: a quadratic checker would simply hang.
func TestLarge(t *testing.T) {
	size, nwrites := int64(64<<20), 100_000
	if testing.Short() {
		size, nwrites = 8<<20, 10_000
	}
	sectors := size / SectorSize
	rng := rand.New(rand.NewPCG(1, 2))
	h := NewHistory()
	var flushed []*Write
	var last []*Write // since the last flush
	tenure := 1
	for i := range nwrites {
		n := int64(1 + rng.IntN(8))
		if rng.IntN(10) == 0 {
			n = int64(1 + rng.IntN(512))
		}
		s := rng.Int64N(sectors - n)
		w := h.BeginWrite(s*SectorSize, n*SectorSize, tenure, node(tenure), rng.IntN(20) == 0)
		if i < nwrites-10 {
			h.EndWrite(w, nil)
			last = append(last, w)
		}
		switch {
		case i%50 == 49:
			f := h.BeginFlush(tenure, node(tenure))
			h.EndFlush(f, nil)
			h.PeerAcked(f)
			flushed = append(flushed, last...)
			last = last[:0]
		case i%5000 == 4999:
			h.Note("promote", node(tenure+1), "", false)
			tenure++
		}
	}
	ws, _, _ := h.Snapshot()
	// The image: per sector, the last write (ids are the order).
	img := make([]byte, size)
	j := &judge{writes: ws, n: int(sectors)}
	top := j.paint(func(int) bool { return true })
	for s, id := range top {
		if id != 0 {
			stamp(img[int64(s)*SectorSize:int64(s+1)*SectorSize], id, int64(s)*SectorSize)
		}
	}
	start := time.Now()
	rep := Judge(ProtocolC, h, img)
	t.Logf("%v for %d writes on %d MiB", time.Since(start), nwrites, size>>20)
	expect(t, rep)
	if rep.Writes != nwrites || rep.InFlight != 10 || rep.SectorsWritten == 0 || rep.Required != nwrites-10 {
		t.Fatalf("\n%s", rep)
	}
	// Lose one flushed write: lost on every sector it still holds.
	var victim *Write
	for _, w := range slices.Backward(flushed) {
		if top[w.Off/SectorSize] == w.ID {
			victim = w
			break
		}
	}
	o := victim.Off
	clear(img[o : o+SectorSize])
	rep = Judge(ProtocolA, h, img)
	if len(rep.Violations) == 0 || rep.Violations[0].Off != o || rep.Violations[0].Want != victim.ID {
		t.Fatalf("victim #%d at %d: %v", victim.ID, o, rep.Err())
	}
}

// Under A and B a flush does not wait for the peers: only one the peers
// acknowledged (Flush.PeerAcked) makes the writes before it required.
// The cut still follows every acknowledged flush.
func TestFlushNeedsPeerAckUnderAB(t *testing.T) {
	r := newRun(t, 32)
	r.ackLost(0, 2, 1)
	f := r.h.BeginFlush(1, "alpha")
	r.h.EndFlush(f, nil)
	expect(t, r.judge(ProtocolA))
	expect(t, r.judge(ProtocolC), KindLost)
	r.ack(8, 2, 1) // issued after the flush, present: the cut needs #1
	expect(t, r.judge(ProtocolA), KindCut)
	r.h.PeerAcked(f)
	expect(t, r.judge(ProtocolA), KindLost, KindCut)
}
