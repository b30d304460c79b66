package protocol

import (
	"fmt"
	"slices"
)

// HistoryLen is how many older generation identifiers a replica keeps
// (meta.HistoryLen: the superblock's history).
const HistoryLen = 16

// Gens is what one replica knows about its data generations with respect
// to one peer: what it sends in the handshake and what the sync decision
// compares. Current 0 means just created: no data generation yet.
type Gens struct {
	// Current is the generation of the data on this replica.
	Current uint64
	// Bitmap is the generation this replica's bitmap for the peer tracks
	// changes against: its Current when it last was in sync with the peer
	// and then wrote without it. Zero while in sync.
	Bitmap uint64
	// History holds older Currents and Bitmaps, newest first, at most
	// HistoryLen.
	History []uint64
	// CrashedPrimary: the replica crashed while Primary; its activity
	// log's hot extents are marked in the bitmap and must be resynced
	// from it even though the generations are equal.
	CrashedPrimary bool
	// Primary: the replica is Primary now (or was at the disconnect).
	Primary bool
	// Dirty: the bitmap for the peer has bits set (writes whose outcome
	// on the peer is unknown, or writes made without it).
	Dirty bool
	// Inconsistent: the data is not a usable image (a resync target that
	// has not finished). It is never a sync source.
	Inconsistent bool
	// Node names the replica: ties are broken by it, the same way on both
	// sides.
	Node string
}

// Action is what the handshake does about the data.
type Action int

// Actions, from this replica's point of view.
const (
	NoSync Action = iota
	// SourceBitmap: this replica sends the blocks set in the union of both
	// bitmaps.
	SourceBitmap
	// TargetBitmap: this replica receives the blocks set in the union.
	TargetBitmap
	// SourceFull / TargetFull: every block (no usable bitmap).
	SourceFull
	TargetFull
	// SplitBrain: both sides changed the data since their last common
	// generation. Nothing is synced until a policy or the operator picks a
	// victim. Bitmaps (BitmapUsable) or a full sync then heal it.
	SplitBrain
	// Unrelated: no generation in common: refuse, never overwrite.
	Unrelated
)

var actionNames = [...]string{"no-sync", "source-bitmap", "target-bitmap", "source-full", "target-full", "split-brain", "unrelated"}

func (a Action) String() string {
	if a >= 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Mirror is the same action seen from the peer.
func (a Action) Mirror() Action {
	switch a {
	case SourceBitmap:
		return TargetBitmap
	case TargetBitmap:
		return SourceBitmap
	case SourceFull:
		return TargetFull
	case TargetFull:
		return SourceFull
	}
	return a
}

// IsSource reports whether this replica sends data.
func (a Action) IsSource() bool { return a == SourceBitmap || a == SourceFull }

// IsTarget reports whether this replica receives data.
func (a Action) IsTarget() bool { return a == TargetBitmap || a == TargetFull }

// Decision is the outcome of Decide: the action and the rule that fired.
// Log Rule and show it in status: operators paste it into bug reports.
type Decision struct {
	Action Action
	Rule   string
	// BitmapUsable, for SplitBrain: the two sides share the generation
	// their bitmaps track against, so after the victim is chosen the
	// union of the bitmaps covers every difference.
	BitmapUsable bool
}

func (d Decision) String() string { return fmt.Sprintf("%s (rule %s)", d.Action, d.Rule) }

// Rule names, in the order Decide tries them. Frozen: they appear in logs
// and status.
const (
	RuleBothJustCreated       = "both-just-created"
	RuleLocalJustCreated      = "local-just-created"
	RulePeerJustCreated       = "peer-just-created"
	RuleEqualLocalInconsist   = "equal-local-inconsistent"
	RuleEqualPeerInconsist    = "equal-peer-inconsistent"
	RuleBothInconsistent      = "both-inconsistent"
	RuleEqualLivePrimary      = "equal-live-primary"
	RuleEqualBothCrashed      = "equal-both-crashed-primary"
	RuleEqualLocalCrashed     = "equal-local-crashed-primary"
	RuleEqualPeerCrashed      = "equal-peer-crashed-primary"
	RuleEqualAmbiguous        = "equal-ambiguous-writes"
	RuleEqual                 = "equal"
	RulePeerBitmapIsMyCurrent = "peer-bitmap-is-local-current"
	RuleMyBitmapIsPeerCurrent = "local-bitmap-is-peer-current"
	RuleMyCurrentInPeerHist   = "local-current-in-peer-history"
	RulePeerCurrentInMyHist   = "peer-current-in-local-history"
	RuleSplitBrainBitmap      = "split-brain-common-bitmap"
	RuleSplitBrainHistory     = "split-brain-common-history"
	RuleSplitBrainCrossed     = "split-brain-crossed-bitmaps"
	RuleUnrelated             = "unrelated"
	RuleSourceInconsistent    = "source-inconsistent"
)

// tieSource breaks a tie between two replicas that both qualify (or
// neither does) as sync source: the one with the smaller node name sends.
// Both sides compute the same answer.
func tieSource(local, peer Gens) bool { return local.Node < peer.Node }

// Decide compares the generations of this replica (local) and its peer
// at the handshake, in the fixed rule order of REFERENCE.md section 3,
// and returns the action from local's point of view. It is pure, and
// symmetric: Decide(peer, local) is the mirror of Decide(local, peer).
func Decide(local, peer Gens) Decision {
	d := decide(local, peer)
	// An inconsistent image must never overwrite anything.
	if (d.Action.IsSource() && local.Inconsistent) || (d.Action.IsTarget() && peer.Inconsistent) {
		return Decision{Action: Unrelated, Rule: RuleSourceInconsistent}
	}
	return d
}

func decide(local, peer Gens) Decision {
	l, p := local, peer
	switch {
	case l.Current == 0 && p.Current == 0 && !l.Dirty && !p.Dirty && !l.CrashedPrimary && !p.CrashedPrimary:
		return Decision{Action: NoSync, Rule: RuleBothJustCreated}
	case l.Current == 0 && p.Current == 0:
		// Fresh on both sides, but one wrote without the other and
		// crashed before its first generation was durable (bits set,
		// Current still 0): equal generations, decided below (found by
		// internal/torture, seed 1394: the bits were never resynced).
	case l.Current == 0 && p.Current != 0:
		return Decision{Action: TargetFull, Rule: RuleLocalJustCreated}
	case p.Current == 0 && l.Current != 0:
		return Decision{Action: SourceFull, Rule: RulePeerJustCreated}
	}
	if l.Current == p.Current {
		source := func(rule string, localSends bool) Decision {
			if localSends {
				return Decision{Action: SourceBitmap, Rule: rule}
			}
			return Decision{Action: TargetBitmap, Rule: rule}
		}
		switch {
		case l.Inconsistent && p.Inconsistent:
			return Decision{Action: NoSync, Rule: RuleBothInconsistent}
		case l.Inconsistent:
			// An interrupted resync: resume it from the bitmaps.
			return source(RuleEqualLocalInconsist, false)
		case p.Inconsistent:
			return source(RuleEqualPeerInconsist, true)
		case l.Primary != p.Primary && (l.CrashedPrimary || p.CrashedPrimary):
			// A crashed primary meets the node that took over without
			// writing yet: what the crashed one wrote last was never
			// acknowledged by its peer, and the live primary's users
			// never saw it. The live primary wins.
			return source(RuleEqualLivePrimary, l.Primary)
		case l.CrashedPrimary && p.CrashedPrimary:
			return source(RuleEqualBothCrashed, tieSource(l, p))
		case l.CrashedPrimary:
			return source(RuleEqualLocalCrashed, true)
		case p.CrashedPrimary:
			return source(RuleEqualPeerCrashed, false)
		case l.Dirty || p.Dirty:
			// Writes in flight at a disconnect, never followed by another
			// write (which would have made a new generation): the
			// Primary's version wins.
			if l.Primary != p.Primary {
				return source(RuleEqualAmbiguous, l.Primary)
			}
			return source(RuleEqualAmbiguous, tieSource(l, p))
		}
		return Decision{Action: NoSync, Rule: RuleEqual}
	}
	peerTracksMe := p.Bitmap != 0 && p.Bitmap == l.Current
	iTrackPeer := l.Bitmap != 0 && l.Bitmap == p.Current
	switch {
	case peerTracksMe && iTrackPeer:
		// Each claims the other's current as its base: impossible in one
		// history. Refuse to pick a side.
		return Decision{Action: SplitBrain, Rule: RuleSplitBrainCrossed}
	case peerTracksMe:
		return Decision{Action: TargetBitmap, Rule: RulePeerBitmapIsMyCurrent}
	case iTrackPeer:
		return Decision{Action: SourceBitmap, Rule: RuleMyBitmapIsPeerCurrent}
	}
	inL, inP := slices.Contains(l.History, p.Current), slices.Contains(p.History, l.Current)
	switch {
	case inP && !inL:
		return Decision{Action: TargetFull, Rule: RuleMyCurrentInPeerHist}
	case inL && !inP:
		return Decision{Action: SourceFull, Rule: RulePeerCurrentInMyHist}
	}
	if l.Bitmap != 0 && l.Bitmap == p.Bitmap {
		return Decision{Action: SplitBrain, Rule: RuleSplitBrainBitmap, BitmapUsable: true}
	}
	for _, a := range append([]uint64{l.Bitmap, l.Current}, l.History...) {
		if a == 0 {
			continue
		}
		if a == p.Bitmap || a == p.Current || slices.Contains(p.History, a) {
			return Decision{Action: SplitBrain, Rule: RuleSplitBrainHistory}
		}
	}
	return Decision{Action: Unrelated, Rule: RuleUnrelated}
}

// pushHistory puts id at the front of h, dropping the oldest beyond
// HistoryLen and never repeating the front.
func pushHistory(h []uint64, id uint64) []uint64 {
	if id == 0 || (len(h) > 0 && h[0] == id) {
		return h
	}
	out := append([]uint64{id}, h...)
	if len(out) > HistoryLen {
		out = out[:HistoryLen]
	}
	return out
}

// NewCurrent is the lazy rotation: the first write after the peer was
// lost (or after a promotion without it) gives the data a new generation
// id. The bitmap starts tracking against the old current if it was not
// tracking yet; otherwise the old current goes to the history.
func (g Gens) NewCurrent(id uint64) Gens {
	g.History = slices.Clone(g.History)
	if g.Bitmap == 0 {
		g.Bitmap = g.Current
	} else {
		g.History = pushHistory(g.History, g.Current)
	}
	g.Current = id
	return g
}

// FinishSync returns both sides' generations after a completed resync
// from source to target: the target takes the source's current, both
// bitmaps are empty and their ids go to the history.
func FinishSync(source, target Gens) (Gens, Gens) {
	s, t := source, target
	s.History = pushHistory(slices.Clone(s.History), s.Bitmap)
	s.Bitmap, s.Dirty, s.CrashedPrimary = 0, false, false
	t.History = slices.Clone(t.History)
	t.History = pushHistory(t.History, t.Bitmap)
	if t.Current != s.Current {
		t.History = pushHistory(t.History, t.Current)
	}
	t.Current, t.Bitmap, t.Dirty, t.CrashedPrimary = s.Current, 0, false, false
	return s, t
}
