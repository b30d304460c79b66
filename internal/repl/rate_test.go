package repl

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// TestResyncYieldsToApplication: while alpha's application writes, the
// resync into beta runs at resync_rate_min; on an idle volume it runs at
// resync_rate_max (unlimited here).
func TestResyncYieldsToApplication(t *testing.T) {
	const dirty = 4 << 20
	const minRate = 2 << 20
	a, b := newPair(t, 'C')
	a.tweak = func(c *Config) { c.ResyncRateMin = minRate }
	b.tweak = a.tweak
	a.primary = true
	a.start()
	b.start()
	waitEstablished(t, a, b)
	// A first write while connected: both adopt the first generation, so
	// the resyncs below are bitmap-based, not a full sync.
	if _, err := a.rep.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := a.rep.Flush(); err != nil {
		t.Fatal(err)
	}

	resync := func(load bool) time.Duration {
		t.Helper()
		b.stop()
		waitFor(t, "alpha sees beta gone", 10*time.Second, func() bool { return a.rep.Peers()[0].Connection != ConnConnected })
		if _, err := a.rep.WriteAt(bytes.Repeat([]byte{0x5A}, dirty), 0); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		if load {
			// The application keeps writing the last MiB (not resynced).
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 4096)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
					}
					if _, err := a.rep.WriteAt(buf, testSize-1<<20+int64(i%256)*4096); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		b.start()
		waitResyncDone(t, b)
		close(stop)
		wg.Wait()
		p := b.rep.Peers()[0].Resync
		if p.DoneBytes < dirty || p.DoneBytes > dirty+1<<20 {
			t.Fatalf("resync moved %d bytes, want %d (plus at most the MiB the application writes)", p.DoneBytes, dirty)
		}
		return p.FinishedAt.Sub(p.StartedAt)
	}
	loaded := resync(true)
	// 4 MiB at 2 MiB/s: the requests before the first application write
	// reaches beta go at once (allow two), the rest are paced.
	if floor := time.Duration(float64(dirty-2*resyncReq) / minRate * float64(time.Second)); loaded < floor*9/10 {
		t.Errorf("under application load the resync took %s: faster than resync_rate_min allows (%s)", loaded, floor)
	}
	idle := resync(false)
	if idle >= loaded/2 {
		t.Errorf("an idle volume resynced in %s, under load %s: the resync did not run at full speed when idle", idle, loaded)
	}
	t.Logf("resync of %d bytes: %s under load (min rate %d B/s), %s idle", dirty, loaded, minRate, idle)
	sameImages(t, a, b)
}

// TestProgressRateIsRecent: the rate shown while running follows the
// last rateWindow, so a resync that slowed down shows its new rate.
func TestProgressRateIsRecent(t *testing.T) {
	t0 := time.Now().Add(-20 * time.Second)
	p := &progress{running: true, started: t0}
	// 100 MiB/s for 10 s, then 1 MiB/s for 10 s, sampled every 0.5 s.
	done := int64(0)
	for i := 1; i <= 40; i++ {
		if i <= 20 {
			done += 50 << 20
		} else {
			done += 512 << 10
		}
		p.samples = append(p.samples, sample{t0.Add(time.Duration(i) * 500 * time.Millisecond), done})
	}
	p.done = done
	now := t0.Add(20 * time.Second)
	if r := p.rate(now); r < 0.9*(1<<20) || r > 1.1*(1<<20) {
		t.Errorf("recent rate %.0f B/s, want about 1 MiB/s", r)
	}
	p.running, p.finished = false, now
	if r, avg := p.rate(now), float64(done)/20; r != avg {
		t.Errorf("finished: rate %.0f, want the average %.0f", r, avg)
	}
}
