package repl

import (
	"errors"
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

// With a failover gate, a Primary acknowledges nothing before the
// decision says so, nothing its disconnected peer missed before that
// peer is confirmed outdated, and fails writes under GateFail.
func TestFailoverGate(t *testing.T) {
	a, b := newPair(t, 'C')
	g := NewFailoverGate()
	a.tweak = func(c *Config) { c.Gate = g }
	a.primary = true
	a.start()
	b.start()
	waitEstablished(t, a, b)

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
	// A flush covers completed writes only, all of them admitted: it does
	// not wait for the held one.
	if err := a.rep.Flush(); err != nil {
		t.Fatal(err)
	}
	g.SetOutdated("beta", true)
	if err := mustWait(t, "write after beta's outdate", w, 5*time.Second); err != nil {
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
