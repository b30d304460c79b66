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
// docs/failover.md). Without a gate (Config.Gate nil) a replica behaves
// as issue 4 says: a Primary keeps serving without its peer.
type FailoverGate struct {
	mu       sync.Mutex
	cond     *sync.Cond
	mode     GateMode
	outdated map[string]bool
	closed   bool
	waiting  int
}

// NewFailoverGate returns a gate in GateHold: nothing is acknowledged
// before the failover decision says so.
func NewFailoverGate() *FailoverGate {
	g := &FailoverGate{outdated: map[string]bool{}}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// SetMode changes the mode; waiting writers re-check at once.
func (g *FailoverGate) SetMode(m GateMode) {
	g.mu.Lock()
	g.mode = m
	g.cond.Broadcast()
	g.mu.Unlock()
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
func (g *FailoverGate) admit(missed []string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for {
		switch {
		case g.closed:
			return errGateClosed
		case g.mode == GateFail:
			return ErrNoQuorum
		case g.mode == GateAccept && !slices.ContainsFunc(missed, func(p string) bool { return !g.outdated[p] }):
			return nil
		}
		g.waiting++
		g.cond.Wait()
		g.waiting--
	}
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
