package repl

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// GateMode is whether a Primary under automatic failover may acknowledge
// writes (docs/failover.md): the failover decision sets it.
type GateMode uint8

const (
	// GateHold: writes wait (the node has no majority lease yet, or lost
	// it under quorum_loss = suspend).
	GateHold GateMode = iota
	// GateAccept: writes are acknowledged.
	GateAccept
	// GateFail: writes fail with ErrNoQuorum (quorum_loss = fail).
	GateFail
)

func (m GateMode) String() string {
	switch m {
	case GateHold:
		return "hold"
	case GateAccept:
		return "accept"
	case GateFail:
		return "fail"
	}
	return "GateMode(?)"
}

// ErrNoQuorum fails writes on a Primary that lost quorum under
// quorum_loss = fail (the NBD client sees EIO).
var ErrNoQuorum = errors.New("this primary lost quorum: writes fail (quorum_loss = fail)")

// errGateClosed releases the writers waiting in a gate when the replica
// closes.
var errGateClosed = errors.New("the volume is closing")

// FailoverGate holds, fails or lets through the acknowledgements of a
// Primary under automatic failover. Two things must hold before a write
// is acknowledged: the mode is GateAccept, and every peer that missed the
// write (not connected, or its link lost before it acknowledged) has been
// declared outdated by this primary at a majority of the voters, so it
// can never be promoted without the write ("the outdate step" of
// docs/failover.md), or it has had the write since: a resync from this
// node finished after the write was marked for it. Without a gate
// (Config.Gate nil) a replica behaves as issue 4 says: a Primary keeps
// serving without its peer.
type FailoverGate struct {
	mu       sync.Mutex
	cond     *sync.Cond
	mode     GateMode
	outdated map[string]bool
	// synced counts, per peer, the resyncs this node finished as its
	// source.
	synced map[string]uint64
	// fails counts the turns to GateFail: a write waiting across one
	// fails even if the mode changed again before it woke (the node was
	// demoted meanwhile; a resync may have overwritten its data).
	fails   uint64
	closed  bool
	waiting int
}

// missedPeer is a peer that did not get a write, with the gate's count
// of its resyncs (synced) when the write was marked out of sync for it.
type missedPeer struct {
	node   string
	synced uint64
}

// NewFailoverGate returns a gate in GateHold: nothing is acknowledged
// before the failover decision says so.
func NewFailoverGate() *FailoverGate {
	g := &FailoverGate{outdated: map[string]bool{}, synced: map[string]uint64{}}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// SetMode changes the mode; waiting writers re-check at once.
func (g *FailoverGate) SetMode(m GateMode) {
	g.mu.Lock()
	g.setModeLocked(m)
	g.mu.Unlock()
}

func (g *FailoverGate) setModeLocked(m GateMode) {
	if m == GateFail {
		g.fails++
	}
	g.mode = m
	g.cond.Broadcast()
}

// Mode returns the current mode.
func (g *FailoverGate) Mode() GateMode {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mode
}

// SetOutdated records whether a majority confirmed peer as outdated by
// this primary (false again once the peer is back in sync).
func (g *FailoverGate) SetOutdated(peer string, confirmed bool) {
	g.mu.Lock()
	if confirmed {
		g.outdated[peer] = true
	} else {
		delete(g.outdated, peer)
	}
	g.cond.Broadcast()
	g.mu.Unlock()
}

// syncedCount returns how many resyncs from this node to peer finished.
// A link reads it under its lock when it marks a write for the peer.
func (g *FailoverGate) syncedCount(peer string) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.synced[peer]
}

// resynced records that a resync from this node to peer finished: every
// write marked for the peer before that resync's handshake is on it now
// (found by tests/netns TestTorture: writes held while the primary had no
// majority waited for an outdate of their peer that could never come
// once the peer was back in sync, and their ranges blocked every later
// request).
func (g *FailoverGate) resynced(peer string) {
	g.mu.Lock()
	g.synced[peer]++
	g.cond.Broadcast()
	g.mu.Unlock()
}

// Waiting returns how many writes the gate holds now.
func (g *FailoverGate) Waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting
}

// Close releases every waiting writer with an error; later writes fail.
func (g *FailoverGate) Close() {
	g.mu.Lock()
	g.closed = true
	g.cond.Broadcast()
	g.mu.Unlock()
}

// admit blocks until a write that the peers in missed did not get may be
// acknowledged, or returns why it fails.
func (g *FailoverGate) admit(missed []missedPeer) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	fails := g.fails
	for {
		switch {
		case g.closed:
			return errGateClosed
		case g.mode == GateFail || g.fails != fails:
			return ErrNoQuorum
		case g.mode == GateAccept && !slices.ContainsFunc(missed, g.lacks):
			return nil
		}
		g.waiting++
		g.cond.Wait()
		g.waiting--
	}
}

// lacks reports whether a peer that missed a write may still be promoted
// without it: neither outdated nor resynced since. Call with g.mu held.
func (g *FailoverGate) lacks(p missedPeer) bool {
	return !g.outdated[p.node] && g.synced[p.node] <= p.synced
}

// String describes the gate for logs and status.
func (g *FailoverGate) String() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for p := range g.outdated {
		out = append(out, p)
	}
	slices.Sort(out)
	return fmt.Sprintf("%s, outdated [%s], %d waiting", g.mode, strings.Join(out, " "), g.waiting)
}
