package repl

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/control"
)

// corrupted are the blocks the verify tests damage on beta's disk behind
// blkrep's back; the application writes avoid them.
var corrupted = []int64{10, 1000, 5000}

func isCorrupted(block int64) bool {
	for _, c := range corrupted {
		if block == c {
			return true
		}
	}
	return false
}

// writeAvoiding keeps writing one-block writes through alpha at random
// blocks other than the corrupted ones until stop is closed.
func writeAvoiding(t *testing.T, r *Replica, seed uint64, stop chan struct{}, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 7))
		buf := make([]byte, 4096)
		for {
			select {
			case <-stop:
				return
			default:
			}
			blk := int64(rng.IntN(testSize / 4096))
			if isCorrupted(blk) {
				continue
			}
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			if _, err := r.WriteAt(buf, blk*4096); err != nil {
				t.Error(err)
				return
			}
		}
	}()
}

func waitVerifyDone(t *testing.T, n *tnode) control.Progress {
	t.Helper()
	var p control.Peer
	waitFor(t, n.name+" verify done", 30*time.Second, func() bool {
		p = n.rep.Peers()[0]
		return p.Verify != nil && !p.Verify.Running
	})
	return *p.Verify
}

// TestVerify: an online verify, run from either side while alpha keeps
// writing, finds exactly the blocks damaged on beta's disk, marks them
// out of sync without repairing them, and a resync then repairs them.
func TestVerify(t *testing.T) {
	for _, from := range []string{"alpha", "beta"} {
		t.Run("from-"+from, func(t *testing.T) {
			a, b := newPair(t, 'C')
			// The verify runs under application load: at resync_rate_min.
			a.tweak = func(c *Config) { c.ResyncRateMin = 1 << 30 }
			b.tweak = a.tweak
			a.primary = true
			a.start()
			b.start()
			waitEstablished(t, a, b)
			randWrites(t, a.rep, rand.New(rand.NewPCG(3, 3)), 100, 16)
			src, dst := a, b
			if from == "beta" {
				src, dst = b, a
			}

			// In sync: nothing differs, even with writes during the verify.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			writeAvoiding(t, a.rep, 1, stop, &wg)
			if _, err := src.rep.Verify(); err != nil {
				t.Fatal(err)
			}
			if _, err := src.rep.Verify(); err == nil {
				t.Error("a second verify started while one runs")
			}
			p := waitVerifyDone(t, src)
			close(stop)
			wg.Wait()
			if p.DoneBytes != testSize || p.MismatchBytes != 0 {
				t.Fatalf("verify of identical replicas: %+v", p)
			}
			if q := waitVerifyDone(t, dst); q.DoneBytes != testSize {
				t.Errorf("%s (verify target) compared %d bytes, want %d", dst.name, q.DoneBytes, testSize)
			}

			// Damage beta's disk behind blkrep's back.
			junk := bytes.Repeat([]byte{0xEE}, 4096)
			for _, blk := range corrupted {
				if _, err := b.disk.WriteAt(junk, blk*4096); err != nil {
					t.Fatal(err)
				}
			}
			stop = make(chan struct{})
			writeAvoiding(t, a.rep, 2, stop, &wg)
			if _, err := src.rep.Verify(); err != nil {
				t.Fatal(err)
			}
			p = waitVerifyDone(t, src)
			close(stop)
			wg.Wait()
			want := int64(len(corrupted)) * 4096
			if p.MismatchBytes != want || p.DoneBytes != testSize {
				t.Fatalf("verify found %d differing bytes of %d compared, want %d of %d", p.MismatchBytes, p.DoneBytes, want, testSize)
			}
			if got := src.rep.Peers()[0].OutOfSyncBytes; got != want {
				t.Fatalf("%s: %d bytes out of sync after the verify, want %d", src.name, got, want)
			}
			if q := waitVerifyDone(t, dst); q.MismatchBytes != want {
				t.Errorf("%s (verify target) reports %d differing bytes, want %d", dst.name, q.MismatchBytes, want)
			}
			// Never silently repaired.
			got := make([]byte, 4096)
			if _, err := b.disk.ReadAt(got, corrupted[0]*4096); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, junk) {
				t.Fatal("the verify changed beta's data")
			}

			// A resync (from the side that ran the verify) repairs beta
			// from the Primary, and only those blocks (every epoch is
			// acknowledged first, so the reconnect marks nothing else).
			if err := a.rep.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := src.rep.Resync(false, false); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "resync of the verify's findings", 30*time.Second, func() bool {
				p := b.rep.Peers()[0]
				return p.Resync != nil && !p.Resync.Running && p.Replication == ReplEstablished &&
					p.Resync.DoneBytes == want && a.rep.Peers()[0].OutOfSyncBytes == 0
			})
			if err := a.rep.Flush(); err != nil {
				t.Fatal(err)
			}
			a.stop()
			b.stop()
			sameImages(t, a, b)
		})
	}
}

// TestVerifyRefusals: verify needs a connected peer and no resync.
func TestVerifyRefusals(t *testing.T) {
	a, b := newPair(t, 'C')
	a.primary = true
	a.start()
	if _, err := a.rep.Verify(); err == nil {
		t.Fatal("verify started without a connected peer")
	}
	b.start()
	waitEstablished(t, a, b)
	if _, err := a.rep.Verify(); err != nil {
		t.Fatal(err)
	}
	waitVerifyDone(t, a)
}
