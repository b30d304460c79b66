package repl

import (
	"bytes"
	"testing"
	"time"
)

// TestFreshPairFirstWriteWithoutPeer: two just-created replicas agree on a
// first generation at their first handshake, so alpha's very first
// writes, made while beta is down, are resynced by bitmap (exactly what
// was written), not by a full sync of the volume.
func TestFreshPairFirstWriteWithoutPeer(t *testing.T) {
	a, b := newPair(t, 'C')
	a.primary = true
	a.start()
	b.start()
	waitEstablished(t, a, b)
	if h := b.rep.Peers()[0].Handshake; h == nil || h.Rule != "both-just-created" {
		t.Fatalf("first handshake: %+v", h)
	}
	waitFor(t, "both adopt the agreed first generation", 10*time.Second, func() bool {
		return a.vol.Current() != 0 && a.vol.Current() == b.vol.Current()
	})
	b.stop()
	waitFor(t, "alpha sees beta gone", 10*time.Second, func() bool { return a.rep.Peers()[0].Connection != ConnConnected })
	for i := range 10 {
		if _, err := a.rep.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 4096), int64(i)*1<<20); err != nil {
			t.Fatal(err)
		}
	}
	b.start()
	waitResyncDone(t, b)
	waitEstablished(t, a, b)
	if got := resyncBytes(t, b); got != 10*4096 {
		t.Errorf("resynced %d bytes, want %d (a full sync would be %d)", got, 10*4096, testSize)
	}
	if h := b.rep.Peers()[0].Handshake; h == nil || h.Rule != "peer-bitmap-is-local-current" {
		t.Errorf("handshake after the outage: %+v", h)
	}
	a.stop()
	b.stop()
	sameImages(t, a, b)
}
