package repl

import (
	"fmt"

	"github.com/blkrep/blkrep/protocol"
)

// The failover term in replication traffic (docs/failover.md, "The term
// in replication traffic"). Each side sends its data term in State.Term
// at every handshake. When both are known (> 0):
//   - a Primary whose term is lower than the peer's data term is stale (a
//     newer primary was elected after its lease ran out): no session runs
//     with it, the handshake is refused and retried until failover
//     demotes it;
//   - a split brain between different terms is resolved without the
//     operator: the side with the lower term is the victim, as if
//     `--discard-my-data` were given there;
//   - more generally, data never flows from the lower term onto the
//     higher one: a decision that would make the lower side the sync
//     source (its generations look newer because it wrote after losing
//     its lease, or it crashed as primary) is turned round.
//
// With a term of 0 on either side (failover off or the term unknown)
// nothing changes.

// SetTerm sets this node's failover data term: the failover term of the
// data it holds (its own term while Primary; the term of the primary it
// was last in sync with while Secondary; 0 when failover is off or the
// term is unknown). Every handshake sends it as State.Term; a change is
// also sent at once to the connected peers (MsgGens). Safe for concurrent
// use; it never blocks.
func (r *Replica) SetTerm(t uint64) {
	if r.term.Swap(t) == t {
		return
	}
	// sendState reads the term when it sends, so the last message a
	// peer gets carries the newest value whatever order these run in.
	go func() {
		for _, l := range r.links {
			l.sendState()
		}
	}()
}

// SetElecting tells the replica whether this node's failover runs an
// election. Meanwhile a handshake that would make it a resync target is
// refused and retried: a candidate that became a target could win with
// half-copied (Inconsistent) data and the data term of the election, and
// then neither side could be the sync source (found by
// internal/torture).
func (r *Replica) SetElecting(electing bool) { r.electing.Store(electing) }

// Term returns the data term last given to SetTerm.
func (r *Replica) Term() uint64 { return r.term.Load() }

// notifyPeerTerm hands a peer's term > 0 to Config.OnPeerTerm on a
// goroutine of its own: the session never waits for the callback. Per
// peer, values are delivered in order; one superseded before its
// delivery is skipped.
func (r *Replica) notifyPeerTerm(peer string, term uint64) {
	fn := r.cfg.OnPeerTerm
	if fn == nil || term == 0 {
		return
	}
	r.ptMu.Lock()
	if r.ptPending == nil {
		r.ptPending = map[string]uint64{}
	}
	r.ptPending[peer] = term
	if r.ptRunning {
		r.ptMu.Unlock()
		return
	}
	r.ptRunning = true
	r.ptMu.Unlock()
	go func() {
		for {
			r.ptMu.Lock()
			batch := r.ptPending
			r.ptPending = nil
			if len(batch) == 0 {
				r.ptRunning = false
				r.ptMu.Unlock()
				return
			}
			r.ptMu.Unlock()
			for p, t := range batch {
				fn(p, t)
			}
		}
	}()
}

// termsKnown: both sides run failover and know their data term.
func termsKnown(a, b protocol.State) bool { return a.Term > 0 && b.Term > 0 }

// stalePrimary reports whether this side (local) or the peer (remote) is
// a Primary whose term is lower than the other side's data term.
func stalePrimary(mine, peer protocol.State) (local, remote bool) {
	if !termsKnown(mine, peer) {
		return false, false
	}
	return mine.Role == protocol.RolePrimary && mine.Term < peer.Term,
		peer.Role == protocol.RolePrimary && peer.Term < mine.Term
}

// termVictim picks the victim of a split brain by the data terms: the
// side with the lower one. ok is false when a term is unknown or both are
// equal (the policy or the operator decides).
// A winner whose data is Inconsistent cannot be a sync source: ok is
// false then too.
func termVictim(mine, peer protocol.State) (victimLocal, ok bool) {
	if !termsKnown(mine, peer) || mine.Term == peer.Term {
		return false, false
	}
	victimLocal = mine.Term < peer.Term
	winner := mine
	if victimLocal {
		winner = peer
	}
	if winner.Inconsistent() {
		return false, false
	}
	return victimLocal, true
}

// staleTerm returns why the handshake is refused because one side is a
// stale primary, or "". Both sides come to the same conclusion and both
// refuse; the link retries like after any failed handshake.
func (s *session) staleTerm(mine, peer protocol.State) string {
	l := s.l
	cfg := &l.r.cfg
	local, remote := stalePrimary(mine, peer)
	var msg string
	switch {
	case remote:
		msg = fmt.Sprintf("stale primary: term %d < %d: %s is Primary for failover term %d but %s holds data of term %d; "+
			"refusing the session until failover demotes %s", peer.Term, mine.Term, l.peer.Node, peer.Term, cfg.Node, mine.Term, l.peer.Node)
	case local:
		msg = fmt.Sprintf("this node is a stale primary: term %d < %d: %s is Primary for failover term %d but %s holds data of term %d; "+
			"refusing the session until failover demotes this node", mine.Term, peer.Term, cfg.Node, mine.Term, l.peer.Node, peer.Term)
	default:
		l.mu.Lock()
		l.state.staleReported = ""
		l.mu.Unlock()
		return ""
	}
	l.mu.Lock()
	repeat := l.state.staleReported == msg // the link retries: report once
	l.state.staleReported = msg
	l.mu.Unlock()
	if !repeat {
		l.log.Warn(msg, "local_term", mine.Term, "peer_term", peer.Term)
		l.event("error", "", "", msg)
	}
	return msg
}

// termResolve resolves a split brain between two data terms: the side
// with the lower term is the sync target. A primary whose term was
// superseded lost its lease before the newer term existed, so it
// acknowledged nothing the newer primary lacks: its writes since the
// split were never acknowledged and are discarded. (staleTerm refused the
// session already if the victim is still Primary.)
func (s *session) termResolve(d protocol.Decision, mine, peer protocol.State, victimLocal bool) protocol.Decision {
	l := s.l
	hi, lo := max(mine.Term, peer.Term), min(mine.Term, peer.Term)
	var msg string
	if victimLocal {
		msg = fmt.Sprintf("term %d beats term %d: discarding this node's writes the new primary never saw "+
			"(split brain with %s resolved by the failover term: this node is the sync target)", hi, lo, l.peer.Node)
	} else {
		msg = fmt.Sprintf("term %d beats term %d: %s discards its writes this node never saw "+
			"(split brain resolved by the failover term: this node is the sync source)", hi, lo, l.peer.Node)
	}
	l.log.Warn(msg, "rule", d.Rule, "victim_is_local", victimLocal, "local_term", mine.Term, "peer_term", peer.Term)
	l.event("split-brain", "", "", msg)
	return victimDecision(victimLocal, d.BitmapUsable, d.Rule+"+term")
}

// victimDecision is how a resolved split brain resyncs: the victim is the
// target, of the union of both bitmaps when they are usable, of every
// block otherwise.
func victimDecision(victimLocal, bitmapUsable bool, rule string) protocol.Decision {
	switch {
	case victimLocal && bitmapUsable:
		return protocol.Decision{Action: protocol.TargetBitmap, Rule: rule}
	case victimLocal:
		return protocol.Decision{Action: protocol.TargetFull, Rule: rule}
	case bitmapUsable:
		return protocol.Decision{Action: protocol.SourceBitmap, Rule: rule}
	default:
		return protocol.Decision{Action: protocol.SourceFull, Rule: rule}
	}
}

// termDirection applies the last term rule to the final decision: the
// side with the lower data term is never the sync source of the side
// with the higher one. What the lower side has and the higher lacks was
// written after its primary lost its lease, never acknowledged (or is
// the hot extents of a primary that crashed): the decision is turned
// round and the higher side's data is copied over those blocks (the
// union of both bitmaps, or every block). When the higher side cannot be
// a source (Inconsistent) the handshake is refused (msg) and retried; a
// just-created higher side holds no data and takes the lower side's.
func (s *session) termDirection(d protocol.Decision, mine, peer protocol.State) (_ protocol.Decision, msg string) {
	if !termsKnown(mine, peer) || mine.Term == peer.Term {
		return d, ""
	}
	lowerLocal := mine.Term < peer.Term
	if !(lowerLocal && d.Action.IsSource() || !lowerLocal && d.Action.IsTarget()) {
		return d, ""
	}
	l := s.l
	cfg := &l.r.cfg
	lowNode, highNode, high := cfg.Node, l.peer.Node, peer
	if !lowerLocal {
		lowNode, highNode, high = l.peer.Node, cfg.Node, mine
	}
	lo, hi := min(mine.Term, peer.Term), max(mine.Term, peer.Term)
	switch {
	case high.Current == 0:
		return d, ""
	case high.Inconsistent():
		return d, fmt.Sprintf("term %d < %d: the sync decision (rule %s) would copy %s's data of term %d over %s's of term %d, "+
			"and %s's is Inconsistent so it cannot be the source instead: refusing; %s takes its data from a node of term %d",
			lo, hi, d.Rule, lowNode, lo, highNode, hi, highNode, highNode, hi)
	}
	var text string
	if lowerLocal {
		text = fmt.Sprintf("term %d beats term %d: discarding this node's writes the new primary never saw "+
			"(rule %s would have made this node the sync source of %s: it is the target instead)", hi, lo, d.Rule, l.peer.Node)
	} else {
		text = fmt.Sprintf("term %d beats term %d: %s discards its writes this node never saw "+
			"(rule %s would have made %s the sync source: this node is the source instead)", hi, lo, l.peer.Node, d.Rule, l.peer.Node)
	}
	l.log.Warn(text, "rule", d.Rule, "local_term", mine.Term, "peer_term", peer.Term)
	l.event("split-brain", "", "", text)
	return protocol.Decision{Action: d.Action.Mirror(), Rule: d.Rule + "+term"}, ""
}
