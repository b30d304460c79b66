package protocol

import (
	"flag"
	"math/rand/v2"
	"testing"
)

var splitBrainSeed = flag.Uint64("protocol.sbseed", 0, "replay TestSplitBrainSymmetric with this seed")

var allPolicies = []string{
	PolicyDisconnect, PolicyDiscardZeroChanges, PolicyDiscardLeastChanges,
	PolicyDiscardYoungerPrimary, PolicyDiscardSecondary, "", "no-such-policy",
}

// sbState is a split-brain side: how much it changed, when it became
// Primary (0: never), its role, and whether the operator asked it to be
// the victim.
func sbState(dirty, since uint64, role Role, discard bool) State {
	s := State{SizeBytes: testSize, BytesPerBit: 4096, Protocol: 'C', Current: 9, Bitmap: 7,
		DirtyBytes: dirty, PrimarySince: since, Role: role, Flags: StateDirty}
	if discard {
		s.Flags |= StateDiscardMyData
	}
	return s
}

func TestSplitBrainVictim(t *testing.T) {
	const (
		local = "local" // local is the victim
		peer  = "peer"  // peer is the victim
		none  = "none"  // ok is false: stay disconnected
	)
	sec, pri := RoleSecondary, RolePrimary
	type tc struct {
		name         string
		policy       string
		local, peer  State
		localSmaller bool
		want         string
	}
	cases := []tc{
		// disconnect never picks, whatever the figures.
		{"disconnect", PolicyDisconnect, sbState(0, 0, sec, false), sbState(100, 5, pri, false), true, none},
		{"unknown policy", "bogus", sbState(0, 0, sec, false), sbState(100, 5, pri, false), true, none},
		{"empty policy", "", sbState(0, 0, sec, false), sbState(100, 5, pri, false), true, none},

		{"zero changes: local has none", PolicyDiscardZeroChanges, sbState(0, 0, sec, false), sbState(4096, 0, sec, false), true, local},
		{"zero changes: peer has none", PolicyDiscardZeroChanges, sbState(4096, 0, sec, false), sbState(0, 0, sec, false), true, peer},
		{"zero changes: both none, local smaller", PolicyDiscardZeroChanges, sbState(0, 0, sec, false), sbState(0, 0, sec, false), true, peer},
		{"zero changes: both none, peer smaller", PolicyDiscardZeroChanges, sbState(0, 0, sec, false), sbState(0, 0, sec, false), false, local},
		{"zero changes: both changed", PolicyDiscardZeroChanges, sbState(1, 0, sec, false), sbState(4096, 0, sec, false), true, none},

		{"least changes: local fewer", PolicyDiscardLeastChanges, sbState(4096, 0, sec, false), sbState(8192, 0, sec, false), false, local},
		{"least changes: peer fewer", PolicyDiscardLeastChanges, sbState(8192, 0, sec, false), sbState(4096, 0, sec, false), true, peer},
		{"least changes: local zero", PolicyDiscardLeastChanges, sbState(0, 0, sec, false), sbState(1, 0, sec, false), false, local},
		{"least changes: tie, local smaller", PolicyDiscardLeastChanges, sbState(4096, 0, sec, false), sbState(4096, 0, sec, false), true, peer},
		{"least changes: tie, peer smaller", PolicyDiscardLeastChanges, sbState(4096, 0, sec, false), sbState(4096, 0, sec, false), false, local},
		{"least changes: both zero", PolicyDiscardLeastChanges, sbState(0, 0, sec, false), sbState(0, 0, sec, false), true, peer},

		{"younger primary: local younger", PolicyDiscardYoungerPrimary, sbState(0, 200, sec, false), sbState(0, 100, pri, false), true, local},
		{"younger primary: peer younger", PolicyDiscardYoungerPrimary, sbState(0, 100, pri, false), sbState(0, 200, sec, false), false, peer},
		{"younger primary: same instant", PolicyDiscardYoungerPrimary, sbState(0, 100, sec, false), sbState(0, 100, sec, false), true, none},
		{"younger primary: local never primary", PolicyDiscardYoungerPrimary, sbState(0, 0, sec, false), sbState(0, 100, pri, false), true, none},
		{"younger primary: peer never primary", PolicyDiscardYoungerPrimary, sbState(0, 100, pri, false), sbState(0, 0, sec, false), true, none},
		{"younger primary: neither", PolicyDiscardYoungerPrimary, sbState(5, 0, sec, false), sbState(0, 0, sec, false), true, none},

		{"secondary: local secondary", PolicyDiscardSecondary, sbState(0, 0, sec, false), sbState(0, 100, pri, false), true, local},
		{"secondary: peer secondary", PolicyDiscardSecondary, sbState(0, 100, pri, false), sbState(0, 0, sec, false), true, peer},
		{"secondary: both secondary", PolicyDiscardSecondary, sbState(0, 0, sec, false), sbState(5, 0, sec, false), true, none},
		{"secondary: both primary", PolicyDiscardSecondary, sbState(0, 1, pri, false), sbState(5, 2, pri, false), true, none},
	}
	// --discard-my-data on exactly one side decides under every policy,
	// against what the policy would pick; on both sides nothing does.
	for _, p := range allPolicies {
		cases = append(cases,
			tc{"discard-my-data local/" + p, p, sbState(8192, 100, pri, true), sbState(0, 200, sec, false), true, local},
			tc{"discard-my-data peer/" + p, p, sbState(0, 200, sec, false), sbState(8192, 100, pri, true), false, peer},
			tc{"discard-my-data both/" + p, p, sbState(0, 200, sec, true), sbState(8192, 100, pri, true), true, none},
			tc{"discard-my-data both, tie/" + p, p, sbState(0, 0, sec, true), sbState(0, 0, sec, true), false, none},
		)
	}
	for _, c := range cases {
		victimLocal, ok := SplitBrainVictim(c.policy, c.local, c.peer, c.localSmaller)
		got := none
		if ok {
			got = map[bool]string{true: local, false: peer}[victimLocal]
		}
		if got != c.want {
			t.Errorf("%s: victim %s, want %s", c.name, got, c.want)
		}
	}
}

// TestSplitBrainSymmetric: both sides run SplitBrainVictim on the same
// pair of states, each from its own point of view. They must agree: both
// decide or neither does, and when they decide exactly one is the victim.
func TestSplitBrainSymmetric(t *testing.T) {
	seed := rand.Uint64()
	if *splitBrainSeed != 0 {
		seed = *splitBrainSeed
	}
	r := rand.New(rand.NewPCG(seed, 4))
	// Small value sets so ties and zeroes are frequent.
	dirty := []uint64{0, 0, 1, 4096, 4096, ^uint64(0)}
	since := []uint64{0, 0, 1, 2, 1 << 60}
	random := func() State {
		s := State{SizeBytes: testSize, BytesPerBit: 4096, Protocol: 'C',
			DirtyBytes:   dirty[r.IntN(len(dirty))],
			PrimarySince: since[r.IntN(len(since))],
			Role:         Role(r.IntN(2)),
			Flags:        StateFlags(r.Uint32()) & knownStateFlags,
		}
		return s
	}
	n := 20000
	if testing.Short() {
		n = 2000
	}
	decided := map[string]int{}
	for range n {
		a, b := random(), random()
		for _, p := range allPolicies {
			for _, x := range []bool{true, false} {
				va, oka := SplitBrainVictim(p, a, b, x)
				vb, okb := SplitBrainVictim(p, b, a, !x)
				if oka != okb || oka && va == vb {
					t.Fatalf("policy %q, localSmaller %v:\n a %+v\n b %+v\n a says (victimLocal %v, ok %v), b says (%v, %v)\nreplay: go test ./protocol -run TestSplitBrainSymmetric -protocol.sbseed=%d",
						p, x, a, b, va, oka, vb, okb, seed)
				}
				if oka {
					decided[p]++
				}
			}
		}
	}
	// The generator must reach both outcomes of every deciding policy.
	for _, p := range allPolicies[1:5] {
		if decided[p] == 0 || decided[p] == 2*n {
			t.Errorf("seed %d: policy %s decided %d of %d cases: the generator misses a branch", seed, p, decided[p], 2*n)
		}
	}
}
