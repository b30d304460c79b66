package check

import (
	"errors"
	"sync"
	"testing"
)

func TestHistoryRecords(t *testing.T) {
	h := NewHistory()
	w1 := h.BeginWrite(4096, 4096, 2, "beta", false) // t=1
	w2 := h.BeginWrite(0, 512, 2, "beta", true)      // t=2
	h.Note("partition", "beta", "from alpha", false) // t=3
	h.EndWrite(w1, nil)                              // t=4
	f := h.BeginFlush(2, "beta")                     // t=5
	h.EndFlush(f, errors.New("peer gone"))           // t=6
	h.Note("powerloss", "alpha", "torn", true)       // t=7
	w3 := h.BeginWrite(512, 512, 3, "alpha", false)  // t=8
	h.EndWrite(w3, errors.New("EIO"))                // t=9
	h.Note("end", "", "heal", false)                 // t=10

	if w1.ID != 1 || w2.ID != 2 || w3.ID != 3 || f.ID != 1 {
		t.Fatalf("ids %d %d %d, flush %d", w1.ID, w2.ID, w3.ID, f.ID)
	}
	ws, fs, es := h.Snapshot()
	if len(ws) != 3 || len(fs) != 1 || len(es) != 3 {
		t.Fatalf("%d writes, %d flushes, %d events", len(ws), len(fs), len(es))
	}
	for _, tc := range []struct{ got, want string }{
		{ws[0].String(), "t=1 write #1 [4096+4096) tenure 2 node beta acked t=4"},
		{ws[1].String(), "t=2 write #2 [0+512) fua tenure 2 node beta in flight"},
		{ws[2].String(), "t=8 write #3 [512+512) tenure 3 node alpha failed t=9: EIO"},
		{fs[0].String(), "t=5 flush #1 tenure 2 node beta failed t=6: peer gone"},
		{es[0].String(), "t=3 partition beta: from alpha"},
		{es[1].String(), "t=7 powerloss alpha: torn (power loss)"},
		{es[2].String(), "t=10 end: heal"},
	} {
		if tc.got != tc.want {
			t.Errorf("got  %q\nwant %q", tc.got, tc.want)
		}
	}
	if !ws[0].Acked || ws[1].Acked || ws[1].Done != 0 || ws[2].Acked || ws[2].Err != "EIO" || !es[1].PowerLoss {
		t.Fatalf("outcomes: %+v %+v", ws, es)
	}
	// Snapshots are copies.
	ws[0].Acked = false
	es[0].Kind = "x"
	ws2, _, es2 := h.Snapshot()
	if !ws2[0].Acked || es2[0].Kind != "partition" {
		t.Fatal("Snapshot shares memory with the history")
	}
	// A snapshot taken before EndWrite does not change after it.
	h.EndWrite(w2, nil)
	if ws2[1].Done != 0 {
		t.Fatal("snapshot changed")
	}
}

func TestHistoryPanics(t *testing.T) {
	h := NewHistory()
	w := h.BeginWrite(0, 512, 1, "alpha", false)
	h.EndWrite(w, nil)
	f := h.BeginFlush(1, "alpha")
	h.EndFlush(f, nil)
	for name, fn := range map[string]func(){
		"EndWrite twice":   func() { h.EndWrite(w, nil) },
		"EndFlush twice":   func() { h.EndFlush(f, nil) },
		"unaligned offset": func() { h.BeginWrite(100, 512, 1, "alpha", false) },
		"partial sector":   func() { h.BeginWrite(0, 100, 1, "alpha", false) },
		"empty":            func() { h.BeginWrite(0, 0, 1, "alpha", false) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			fn()
		}()
	}
}

// Concurrent recording: every tick is distinct, ids are dense, and each
// write's Issued precedes its Done.
func TestHistoryConcurrent(t *testing.T) {
	h := NewHistory()
	const workers, each = 8, 500
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := range each {
				w := h.BeginWrite(int64(g*each+i)*SectorSize, SectorSize, g, "alpha", false)
				if i%10 == 0 {
					h.Note("tick", "alpha", "", false)
					f := h.BeginFlush(g, "alpha")
					h.EndFlush(f, nil)
				}
				h.EndWrite(w, nil)
			}
		})
	}
	wg.Wait()
	ws, fs, es := h.Snapshot()
	if len(ws) != workers*each || len(fs) != workers*each/10 || len(es) != workers*each/10 {
		t.Fatalf("%d writes %d flushes %d events", len(ws), len(fs), len(es))
	}
	ticks := map[int64]bool{}
	see := func(at int64) {
		if at == 0 || ticks[at] {
			t.Fatalf("tick %d zero or reused", at)
		}
		ticks[at] = true
	}
	for i, w := range ws {
		if w.ID != uint64(i+1) || w.Done <= w.Issued || !w.Acked {
			t.Fatalf("write %d: %+v", i, w)
		}
		if i > 0 && w.Issued <= ws[i-1].Issued {
			t.Fatalf("writes not in issue order at %d", i)
		}
		see(w.Issued)
		see(w.Done)
	}
	for _, f := range fs {
		see(f.Issued)
		see(f.Done)
	}
	for i, e := range es {
		see(e.At)
		if i > 0 && e.At <= es[i-1].At {
			t.Fatalf("events not in order at %d", i)
		}
	}
}
