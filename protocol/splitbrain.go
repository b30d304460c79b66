package protocol

// Split-brain recovery policies (config after_split_brain). Each one is
// configured data loss: it names a victim whose changes since the last
// common generation are overwritten by the other side's.
const (
	PolicyDisconnect            = "disconnect"
	PolicyDiscardZeroChanges    = "discard-zero-changes"
	PolicyDiscardLeastChanges   = "discard-least-changes"
	PolicyDiscardYoungerPrimary = "discard-younger-primary"
	PolicyDiscardSecondary      = "discard-secondary"
)

// SplitBrainVictim picks the victim of a split brain from both sides'
// handshake states: ok is false when nothing applies (the default
// policy, or the policy cannot tell) and the sides stay disconnected. An
// operator's --discard-my-data on exactly one side always decides. It is
// symmetric: the peer, calling it with the arguments swapped and
// localSmaller negated, picks the same victim.
func SplitBrainVictim(policy string, local, peer State, localSmaller bool) (victimLocal, ok bool) {
	ld, pd := local.Flags&StateDiscardMyData != 0, peer.Flags&StateDiscardMyData != 0
	if ld != pd {
		return ld, true
	}
	if ld && pd {
		return false, false // both volunteer: the operator must choose
	}
	switch policy {
	case PolicyDiscardZeroChanges:
		lz, pz := local.DirtyBytes == 0, peer.DirtyBytes == 0
		switch {
		case lz && pz:
			return !localSmaller, true
		case lz != pz:
			return lz, true
		}
	case PolicyDiscardLeastChanges:
		switch {
		case local.DirtyBytes == peer.DirtyBytes:
			return !localSmaller, true
		default:
			return local.DirtyBytes < peer.DirtyBytes, true
		}
	case PolicyDiscardYoungerPrimary:
		if local.PrimarySince != 0 && peer.PrimarySince != 0 && local.PrimarySince != peer.PrimarySince {
			return local.PrimarySince > peer.PrimarySince, true
		}
	case PolicyDiscardSecondary:
		if local.Role != peer.Role {
			return local.Role == RoleSecondary, true
		}
	}
	return false, false
}
