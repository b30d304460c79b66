package repl

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// writeAsync writes one block through r and reports the result on the
// returned channel.
func writeAsync(r *Replica, off int64) chan error {
	ch := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		buf[0] = byte(off >> 12)
		_, err := r.WriteAt(buf, off)
		ch <- err
	}()
	return ch
}

func mustWait(t *testing.T, what string, ch chan error, d time.Duration) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatalf("%s: no answer within %s", what, d)
		return nil
	}
}

func mustHold(t *testing.T, what string, ch chan error) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s: answered (%v) while the gate should hold it", what, err)
	case <-time.After(150 * time.Millisecond):
	}
}

// gatedPair starts alpha, Primary under protocol C with a failover gate
// in mode and hook as its Config.Hook, and beta, and waits until they are
// connected.
func gatedPair(t *testing.T, mode GateMode, hook func(string)) (a, b *tnode, g *FailoverGate) {
	t.Helper()
	a, b = newPair(t, 'C')
	g = NewFailoverGate()
	g.SetMode(mode)
	a.tweak = func(c *Config) { c.Gate, c.Hook = g, hook }
	a.primary = true
	a.start()
	b.start()
	waitEstablished(t, a, b)
	return a, b, g
}

// With a failover gate, a Primary acknowledges nothing before the
// decision says so, nothing its disconnected peer missed before that
// peer is confirmed outdated, and fails writes under GateFail.
func TestFailoverGate(t *testing.T) {
	a, b, g := gatedPair(t, GateHold, nil)

	w := writeAsync(a.rep, 0)
	mustHold(t, "write in GateHold", w)
	if g.Waiting() != 1 {
		t.Fatalf("gate: %s, want 1 waiting", g)
	}
	g.SetMode(GateAccept)
	if err := mustWait(t, "write after GateAccept", w, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// Connected and in sync: writes go through without any outdate.
	if err := mustWait(t, "connected write", writeAsync(a.rep, 4096), 5*time.Second); err != nil {
		t.Fatal(err)
	}

	// beta goes away: alpha must not acknowledge what beta misses until
	// beta is confirmed outdated.
	b.stop()
	waitFor(t, "alpha sees beta gone", 10*time.Second, func() bool { return a.peerStatus() != ConnConnected+"/"+ReplEstablished })
	w = writeAsync(a.rep, 8192)
	mustHold(t, "write beta missed", w)
	// A flush makes the completed writes durable; beta acknowledged the
	// last ones in memory only before it went: the flush waits for its
	// outdate too.
	flush := make(chan error, 1)
	go func() { flush <- a.rep.Flush() }()
	mustHold(t, "flush of writes beta acknowledged in memory only", flush)
	g.SetOutdated("beta", true)
	if err := mustWait(t, "write after beta's outdate", w, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := mustWait(t, "flush after beta's outdate", flush, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	g.SetMode(GateFail)
	if err := mustWait(t, "write in GateFail", writeAsync(a.rep, 12288), 5*time.Second); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("write in GateFail: %v, want ErrNoQuorum", err)
	}
	// A held write is released by Close.
	g.SetMode(GateHold)
	w = writeAsync(a.rep, 16384)
	mustHold(t, "write in GateHold", w)
	a.stop()
	if err := mustWait(t, "held write at close", w, 5*time.Second); err == nil {
		t.Fatal("a held write succeeded when the replica closed")
	}
}

// A write the gate refuses is on this disk and on every peer that
// acknowledged it, and marked for every peer that missed it: the refusal
// must not mark it again for a connected peer, where no resync would ever
// clear the bits (internal/torture seed 1684: a primary demoted while
// writes waited in its gate, after the resync had already sent them, was
// left Established with bytes out of sync for good).
func TestRefusedWriteLeavesNoStaleBits(t *testing.T) {
	a, b, g := gatedPair(t, GateAccept, nil)
	oos := func() int64 { return a.rep.Peers()[0].OutOfSyncBytes }

	// Refused while connected: beta has the write, alpha too.
	g.SetMode(GateFail)
	if err := mustWait(t, "connected write in GateFail", writeAsync(a.rep, 0), 5*time.Second); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("write in GateFail: %v, want ErrNoQuorum", err)
	}
	if n := oos(); n != 0 {
		t.Fatalf("a refused write beta acknowledged left %d bytes out of sync on an Established link", n)
	}
	sameImages(t, a, b)

	// Missed by beta, held (no lease); beta comes back and the resync
	// sends it; then the gate refuses it (the primary lost its election).
	g.SetMode(GateHold)
	b.stop()
	waitFor(t, "alpha sees beta gone", 10*time.Second, func() bool { return a.peerStatus() != ConnConnected+"/"+ReplEstablished })
	w := writeAsync(a.rep, 8192)
	mustHold(t, "write beta missed", w)
	// 8 KiB: this write, and the first one's epoch that beta had not
	// acknowledged when it went.
	if n := oos(); n != 8192 {
		t.Fatalf("out of sync with beta away: %d bytes, want 8192", n)
	}
	b.start()
	waitEstablished(t, a, b)
	waitFor(t, "the resync clears the bits", 10*time.Second, func() bool { return oos() == 0 })
	g.SetMode(GateFail)
	if err := mustWait(t, "held write in GateFail", w, 5*time.Second); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("held write in GateFail: %v, want ErrNoQuorum", err)
	}
	if n := oos(); n != 0 || a.peerStatus() != ConnConnected+"/"+ReplEstablished {
		t.Fatalf("after the refusal: %s with %d bytes out of sync, want Established with 0", a.peerStatus(), n)
	}
	sameImages(t, a, b)
}

// A write its peer missed waits for the peer's outdate, or for the peer
// to have it: once a resync from this node into the peer finished, it is
// acknowledged without an outdate (tests/netns TestTorture: a primary
// that could not outdate its peer, for want of a majority, held such
// writes for ever once the peer was back in sync, and every later request
// overlapping them waited behind them).
func TestGateAdmitsAfterResync(t *testing.T) {
	a, b, _ := gatedPair(t, GateAccept, nil)
	b.stop()
	waitFor(t, "alpha sees beta gone", 10*time.Second, func() bool { return a.peerStatus() != ConnConnected+"/"+ReplEstablished })
	w := writeAsync(a.rep, 8192)
	mustHold(t, "write beta missed", w)
	b.start()
	if err := mustWait(t, "write after beta's resync", w, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := a.rep.Peers()[0].OutOfSyncBytes; n != 0 {
		t.Fatalf("acknowledged with %d bytes out of sync with beta", n)
	}
	sameImages(t, a, b)

	// A resync that finished before the write was marked does not count.
	b.stop()
	waitFor(t, "alpha sees beta gone again", 10*time.Second, func() bool { return a.peerStatus() != ConnConnected+"/"+ReplEstablished })
	mustHold(t, "a second write beta missed", writeAsync(a.rep, 16384))
}

// A write held across a turn to GateFail fails, even when the mode
// changed again before it woke: the node was demoted meanwhile, and a
// resync may have overwritten what it wrote.
func TestGateFailsWritesHeldAcrossDemotion(t *testing.T) {
	a, _, g := gatedPair(t, GateHold, nil)
	w := writeAsync(a.rep, 0)
	mustHold(t, "write in GateHold", w)
	g.mu.Lock() // the held writer cannot look before the mode changed again
	g.setModeLocked(GateFail)
	g.setModeLocked(GateAccept)
	g.mu.Unlock()
	if err := mustWait(t, "write held across GateFail", w, 5*time.Second); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("write held across GateFail: %v, want ErrNoQuorum", err)
	}
}

// A flush or drain that finds the session dead but not yet torn down
// waits for the teardown and reports the peer as having missed the epoch:
// it once succeeded at once, as if no peer were connected, so a Drain
// reported every peer acknowledged and a flush was acknowledged without
// the peer's durability or its outdate (internal/torture, protocol A: a
// flush taken for acknowledged by the peer that never had the writes).
// And a flush with no session at all, while writes are marked for the
// peer, needs the peer outdated too.
func TestFlushOnLostSessionAsksTheGate(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	a, b, g := gatedPair(t, GateAccept, func(point string) {
		if point == HookLinkTeardown {
			once.Do(func() { close(entered); <-release })
		}
	})
	if err := mustWait(t, "connected write", writeAsync(a.rep, 0), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	b.stop()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("alpha's session with beta did not end")
	}
	// Dead, not torn down.
	if a.rep.Drain(100 * time.Millisecond) {
		t.Error("Drain reported every peer acknowledged while the session with beta was dead")
	}
	flush := make(chan error, 1)
	go func() { flush <- a.rep.Flush() }()
	mustHold(t, "flush on a dead session", flush)
	close(release)
	mustHold(t, "flush after the teardown, beta not outdated", flush)
	g.SetOutdated("beta", true)
	if err := mustWait(t, "flush after beta's outdate", flush, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	// No session at all, beta's bits set: a flush waits for its outdate.
	g.SetOutdated("beta", false)
	flush = make(chan error, 1)
	go func() { flush <- a.rep.Flush() }()
	mustHold(t, "flush with beta away and marked", flush)
	g.SetOutdated("beta", true)
	if err := mustWait(t, "flush after beta's outdate", flush, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}
