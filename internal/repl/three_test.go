package repl

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/volume"
)

// newTrio makes alpha, beta and gamma, each with the other two as peers.
func newTrio(t *testing.T, proto byte) (a, b, g *tnode) {
	t.Helper()
	a, b, g = newNode(t, "alpha", "beta", proto), newNode(t, "beta", "alpha", proto), newNode(t, "gamma", "alpha", proto)
	// Each node's bitmap slots: its two peers.
	a.spec.Peers = []string{"beta", "gamma"}
	b.spec.Peers = []string{"alpha", "gamma"}
	g.spec.Peers = []string{"alpha", "beta"}
	for _, n := range []*tnode{a, b, g} {
		recreate(t, n)
	}
	a.peers = []Peer{{Node: "beta", Address: b.addr}, {Node: "gamma", Address: g.addr}}
	b.peers = []Peer{{Node: "alpha", Address: a.addr}, {Node: "gamma", Address: g.addr}}
	g.peers = []Peer{{Node: "alpha", Address: a.addr}, {Node: "beta", Address: b.addr}}
	t.Cleanup(func() { a.stop(); b.stop(); g.stop() })
	return a, b, g
}

func allEstablished(n *tnode) bool {
	for _, p := range n.rep.Peers() {
		if p.Connection != ConnConnected || p.Replication != ReplEstablished {
			return false
		}
	}
	return true
}

// TestThreeReplicas: one Primary replicating to two Secondaries from a
// fresh start (three just-created replicas connect and agree, which a
// per-link first generation once broke); a Secondary that was down gets
// exactly what it missed from the Primary while the other stays in sync.
func TestThreeReplicas(t *testing.T) {
	a, b, g := newTrio(t, 'C')
	a.primary = true
	a.start()
	b.start()
	g.start()
	waitFor(t, "all three connected", 20*time.Second, func() bool { return allEstablished(a) && allEstablished(b) && allEstablished(g) })
	rng := rand.New(rand.NewPCG(9, 9))
	randWrites(t, a.rep, rng, 100, 8)
	if err := a.rep.Flush(); err != nil {
		t.Fatal(err)
	}
	sameImages(t, a, b)
	sameImages(t, a, g)

	g.stop()
	waitFor(t, "alpha sees gamma gone", 10*time.Second, func() bool { return a.rep.Peers()[1].Connection != ConnConnected })
	for i := range 20 {
		if _, err := a.rep.WriteAt(bytes.Repeat([]byte{byte(i + 7)}, 4096), int64(i)*256*4096); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.rep.Flush(); err != nil {
		t.Fatal(err)
	}
	sameImages(t, a, b) // beta got every write
	if p := a.rep.Peers(); p[0].OutOfSyncBytes != 0 || p[1].OutOfSyncBytes != 20*4096 {
		t.Fatalf("alpha out of sync: beta %d, gamma %d; want 0 and %d", p[0].OutOfSyncBytes, p[1].OutOfSyncBytes, 20*4096)
	}
	g.start()
	waitFor(t, "gamma resynced from alpha", 30*time.Second, func() bool {
		p := g.rep.Peers()[0] // alpha
		return p.Resync != nil && !p.Resync.Running && p.Replication == ReplEstablished && a.rep.Peers()[1].OutOfSyncBytes == 0
	})
	if got := g.rep.Peers()[0].Resync.DoneBytes; got != 20*4096 {
		t.Errorf("gamma resynced %d bytes from alpha, want %d", got, 20*4096)
	}
	a.stop()
	b.stop()
	g.stop()
	sameImages(t, a, b)
	sameImages(t, a, g)
}

// TestThreeReplicasSecondariesReconnect documents the gap left in
// multi-replica volumes: beta, a Secondary, adopts alpha's new generation
// while gamma is away, but records nothing for gamma (a Secondary marks no
// bitmap for absent peers and does not rotate for them), so beta and
// gamma then share no generation and refuse each other as unrelated
// (safe: nothing is overwritten, but they stay StandAlone). DRBD 9 has
// every node track every peer, and resyncs a node from one source at a
// time (paused sync); both are needed here: two links resyncing the same
// target concurrently could let one source's older block overwrite the
// Primary's newer write.
func TestThreeReplicasSecondariesReconnect(t *testing.T) {
	t.Skip("KNOWN GAP (issue 4, >2 replicas): Secondaries track no bitmap for absent peers; see the comment")
	a, b, g := newTrio(t, 'C')
	a.primary = true
	a.start()
	b.start()
	g.start()
	waitFor(t, "all three connected", 20*time.Second, func() bool { return allEstablished(a) && allEstablished(b) && allEstablished(g) })
	if _, err := a.rep.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	g.stop()
	if _, err := a.rep.WriteAt(bytes.Repeat([]byte{1}, 4096), 4096); err != nil {
		t.Fatal(err)
	}
	g.start()
	waitFor(t, "all three connected again", 30*time.Second, func() bool { return allEstablished(a) && allEstablished(b) && allEstablished(g) })
	a.stop()
	b.stop()
	g.stop()
	sameImages(t, a, g)
	sameImages(t, b, g)
}

// recreate writes n's metadata again for its current spec (its peers).
func recreate(t *testing.T, n *tnode) {
	t.Helper()
	if _, err := volume.Create(&n.spec, true); err != nil {
		t.Fatal(err)
	}
}
