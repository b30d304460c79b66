package protocol

import (
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestDecideRules(t *testing.T) {
	a := func(cur, bm uint64, hist ...uint64) Gens {
		return Gens{Current: cur, Bitmap: bm, History: hist, Node: "alpha"}
	}
	b := func(cur, bm uint64, hist ...uint64) Gens {
		return Gens{Current: cur, Bitmap: bm, History: hist, Node: "beta"}
	}
	crashed := func(g Gens) Gens { g.CrashedPrimary = true; return g }
	dirty := func(g Gens, primary bool) Gens { g.Dirty, g.Primary = true, primary; return g }
	incons := func(g Gens) Gens { g.Inconsistent = true; return g }
	live := func(g Gens) Gens { g.Primary = true; return g }
	for _, tc := range []struct {
		name        string
		local, peer Gens
		want        Action
		rule        string
	}{
		{"fresh pair", a(0, 0), b(0, 0), NoSync, RuleBothJustCreated},
		{"local recreated", a(0, 0), b(7, 0), TargetFull, RuleLocalJustCreated},
		{"peer recreated", a(7, 3, 2), b(0, 0), SourceFull, RulePeerJustCreated},
		{"in sync", a(7, 0, 5), b(7, 0, 5), NoSync, RuleEqual},
		{"local crashed primary", crashed(a(7, 0)), b(7, 0), SourceBitmap, RuleEqualLocalCrashed},
		{"peer crashed primary", a(7, 0), crashed(b(7, 0)), TargetBitmap, RuleEqualPeerCrashed},
		{"both crashed: alpha < beta sends", crashed(a(7, 0)), crashed(b(7, 0)), SourceBitmap, RuleEqualBothCrashed},
		{"ambiguous writes, local primary", dirty(a(7, 0), true), b(7, 0), SourceBitmap, RuleEqualAmbiguous},
		{"ambiguous writes, peer primary", dirty(a(7, 0), false), dirty(b(7, 0), true), TargetBitmap, RuleEqualAmbiguous},
		{"peer wrote while I was away", a(7, 0), b(9, 7), TargetBitmap, RulePeerBitmapIsMyCurrent},
		{"I wrote while the peer was away", a(9, 7), b(7, 0), SourceBitmap, RuleMyBitmapIsPeerCurrent},
		{"peer is ahead, its bitmap lost", a(7, 0), b(9, 0, 7), TargetFull, RuleMyCurrentInPeerHist},
		{"I am ahead, my bitmap lost", a(11, 0, 9, 7), b(7, 0, 5), SourceFull, RulePeerCurrentInMyHist},
		{"split brain, common parent", a(9, 7), b(11, 7), SplitBrain, RuleSplitBrainBitmap},
		{"split brain, parent in history", a(9, 0, 7), b(11, 0, 7), SplitBrain, RuleSplitBrainHistory},
		{"split brain, crossed", a(9, 11), b(11, 9), SplitBrain, RuleSplitBrainCrossed},
		{"unrelated", a(9, 8, 6), b(11, 10, 4), Unrelated, RuleUnrelated},
		{"resume interrupted resync", incons(a(7, 0)), b(7, 0), TargetBitmap, RuleEqualLocalInconsist},
		{"peer resumes", a(7, 0), incons(b(7, 0)), SourceBitmap, RuleEqualPeerInconsist},
		{"nobody has good data", incons(a(7, 0)), incons(b(7, 0)), NoSync, RuleBothInconsistent},
		{"crashed primary meets the live one", crashed(a(7, 0)), live(b(7, 0)), TargetBitmap, RuleEqualLivePrimary},
		{"live primary meets the crashed one", live(a(7, 0)), crashed(b(7, 0)), SourceBitmap, RuleEqualLivePrimary},
		{"inconsistent would be source", incons(a(9, 7)), b(7, 0), Unrelated, RuleSourceInconsistent},
	} {
		d := Decide(tc.local, tc.peer)
		if d.Action != tc.want || d.Rule != tc.rule {
			t.Errorf("%s: got %v, want %v (rule %s)", tc.name, d, tc.want, tc.rule)
		}
	}
	if d := Decide(a(9, 7), b(11, 7)); !d.BitmapUsable {
		t.Error("split brain with a common bitmap id must say the bitmaps are usable")
	}
}

// mirrorRule maps a rule to the name the peer reports for the same case.
func mirrorRule(r string) string {
	return strings.NewReplacer("local", "peer", "peer", "local").Replace(r)
}

// TestDecideExhaustive checks every pair of generation states over a small
// universe of identifiers: the decision is symmetric (the peer computes
// the mirror), NoSync only for equal generations, Unrelated only with no
// identifier in common, and a bitmap sync only when the bitmap's base is
// the other side's current (or the generations are equal).
func TestDecideExhaustive(t *testing.T) {
	ids := []uint64{0, 1, 2, 3}
	hists := [][]uint64{nil, {1}, {2}, {3}, {1, 2}, {2, 3}, {3, 1}}
	var states []Gens
	for _, cur := range ids {
		for _, bm := range ids {
			for _, h := range hists {
				for flags := range 16 {
					states = append(states, Gens{Current: cur, Bitmap: bm, History: h,
						CrashedPrimary: flags&1 != 0, Primary: flags&2 != 0, Dirty: flags&4 != 0, Inconsistent: flags&8 != 0})
				}
			}
		}
	}
	n := 0
	for _, l := range states {
		l.Node = "alpha"
		for _, p := range states {
			p.Node = "beta"
			n++
			d, m := Decide(l, p), Decide(p, l)
			if m.Action != d.Action.Mirror() || m.Rule != mirrorRule(d.Rule) || m.BitmapUsable != d.BitmapUsable {
				t.Fatalf("not symmetric:\n local %+v\n peer  %+v\n local decides %v, peer decides %v", l, p, d, m)
			}
			if d.Action == NoSync && l.Current != p.Current {
				t.Fatalf("no sync between different generations: %+v %+v: %v", l, p, d)
			}
			if (d.Action.IsSource() && l.Inconsistent) || (d.Action.IsTarget() && p.Inconsistent) {
				t.Fatalf("an inconsistent replica would be a sync source: %+v %+v: %v", l, p, d)
			}
			if d.Action == Unrelated && d.Rule != RuleSourceInconsistent && shareID(l, p) {
				t.Fatalf("unrelated but sharing an id: %+v %+v", l, p)
			}
			if d.Action == SourceBitmap && l.Current != p.Current && l.Bitmap != p.Current {
				t.Fatalf("bitmap sync without a common base: %+v %+v: %v", l, p, d)
			}
			// Two replicas without a generation sync only when one wrote
			// (bits set, or a crashed primary's hot extents): a write
			// without the peer whose new generation never became durable.
			wrote := l.Dirty || p.Dirty || l.CrashedPrimary || p.CrashedPrimary
			if (d.Action == TargetFull || d.Action == TargetBitmap) && l.Current == 0 && p.Current == 0 && !wrote {
				t.Fatalf("sync between two just-created replicas: %v", d)
			}
			if l.Current == 0 && p.Current == 0 && wrote && d.Action == NoSync && !(l.Inconsistent && p.Inconsistent) {
				t.Fatalf("two replicas without a generation, one of which wrote, decide no sync: %+v %+v: %v", l, p, d)
			}
		}
	}
	t.Logf("%d pairs of states", n)
}

func shareID(l, p Gens) bool {
	set := map[uint64]bool{}
	for _, x := range append([]uint64{l.Current, l.Bitmap}, l.History...) {
		if x != 0 {
			set[x] = true
		}
	}
	for _, x := range append([]uint64{p.Current, p.Bitmap}, p.History...) {
		if set[x] {
			return true
		}
	}
	return false
}

var modelSeed = flag.Uint64("protocol.seed", 0, "run only this seed of TestDecideModel")

// node is one replica in the model: its generations, its data (block ->
// id of the write that put it there), every write it holds, and its
// bitmap for the other node.
type node struct {
	g       Gens
	data    map[int]int
	writes  map[int]bool
	bitmap  map[int]bool
	rotated bool // NewCurrent done since the disconnect
}

const modelBlocks = 8

// TestDecideModel drives two replicas through random histories (writes
// while connected and disconnected, disconnects, reconnects, metadata
// recreated) using NewCurrent and FinishSync as the daemon will, and
// checks each handshake against the truth: the side holding writes the
// other lacks is the source, diverged sides are a split brain (never a
// silent sync), nothing is ever unrelated, a bitmap-based sync covers
// every differing block, and after every sync both replicas are equal.
func TestDecideModel(t *testing.T) {
	seeds := uint64(3000)
	if testing.Short() {
		seeds = 300
	}
	first := uint64(1)
	if *modelSeed != 0 {
		first, seeds = *modelSeed, 1
	}
	rules := map[string]int{}
	for seed := first; seed < first+seeds; seed++ {
		if err := runModel(seed, rules); err != nil {
			t.Fatalf("seed %d: %v\nreplay: go test ./protocol -run TestDecideModel -protocol.seed=%d", seed, err, seed)
		}
	}
	t.Logf("%d histories; rules fired: %v", seeds, rules)
	for _, r := range []string{RuleBothJustCreated, RuleLocalJustCreated, RuleEqual, RulePeerBitmapIsMyCurrent,
		RuleMyBitmapIsPeerCurrent, RuleSplitBrainBitmap} {
		if rules[r] == 0 && *modelSeed == 0 {
			t.Errorf("rule %s never fired: the model explores too little", r)
		}
	}
}

func runModel(seed uint64, rules map[string]int) error {
	r := rand.New(rand.NewPCG(seed, 42))
	nextID := uint64(100)
	newID := func() uint64 { nextID++; return nextID }
	mk := func(name string) *node {
		return &node{g: Gens{Node: name}, data: map[int]int{}, writes: map[int]bool{}, bitmap: map[int]bool{}}
	}
	n := [2]*node{mk("alpha"), mk("beta")}
	connected := false
	writeID := 0
	var trace []string
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s\nhistory:\n  %s", fmt.Sprintf(format, args...), strings.Join(trace, "\n  "))
	}
	for step := 0; step < 24; step++ {
		switch ev := r.IntN(10); {
		case ev < 5: // a write on one node
			x := r.IntN(2)
			if !connected && n[x].g.Current == 0 && n[1-x].g.Current != 0 {
				// Recreated metadata: the operator makes it a sync target
				// before using it (writing there first would make it
				// unrelated, which Decide rightly refuses).
				x = 1 - x
			}
			writeID++
			b := r.IntN(modelBlocks)
			if connected {
				if n[0].g.Current == 0 { // the first write of a fresh pair
					id := newID()
					n[0].g.Current, n[1].g.Current = id, id
				}
				for _, m := range n {
					m.data[b], m.writes[writeID] = writeID, true
				}
				trace = append(trace, fmt.Sprintf("write #%d block %d on both", writeID, b))
				continue
			}
			m := n[x]
			if !m.rotated {
				m.g = m.g.NewCurrent(newID())
				m.rotated = true
			}
			m.data[b], m.writes[writeID], m.bitmap[b], m.g.Dirty = writeID, true, true, true
			trace = append(trace, fmt.Sprintf("write #%d block %d on %s alone (gens %+v)", writeID, b, m.g.Node, m.g))
		case ev < 7:
			if connected {
				connected = false
				n[0].rotated, n[1].rotated = false, false
				trace = append(trace, "disconnect")
			}
		case ev < 8 && !connected && step > 2:
			// create-md --force on one side: it forgets everything.
			x := r.IntN(2)
			if n[1-x].g.Current == 0 {
				continue
			}
			n[x].g = Gens{Node: n[x].g.Node}
			n[x].bitmap, n[x].rotated = map[int]bool{}, false
			trace = append(trace, fmt.Sprintf("metadata of %s recreated", n[x].g.Node))
		default:
			if connected {
				continue
			}
			d := Decide(n[0].g, n[1].g)
			if m := Decide(n[1].g, n[0].g); m.Action != d.Action.Mirror() {
				return fail("asymmetric: %v vs %v", d, m)
			}
			rules[d.Rule]++
			trace = append(trace, fmt.Sprintf("connect: alpha %+v beta %+v -> %v", n[0].g, n[1].g, d))
			aHasMore, bHasMore := !subset(n[0].writes, n[1].writes), !subset(n[1].writes, n[0].writes)
			src, dst := -1, -1
			switch {
			case d.Action == Unrelated:
				return fail("unrelated")
			case n[0].g.Current == 0 && n[1].g.Current != 0:
				if d.Action != TargetFull {
					return fail("a recreated alpha must be a full sync target, got %v", d)
				}
			case n[1].g.Current == 0 && n[0].g.Current != 0:
				if d.Action != SourceFull {
					return fail("a recreated beta must be a full sync target, got %v", d)
				}
			case aHasMore && bHasMore:
				if d.Action != SplitBrain {
					return fail("both sides hold writes the other lacks, got %v", d)
				}
			case aHasMore && !d.Action.IsSource():
				return fail("alpha holds writes beta lacks, got %v", d)
			case bHasMore && !d.Action.IsTarget():
				return fail("beta holds writes alpha lacks, got %v", d)
			case !aHasMore && !bHasMore && d.Action != NoSync && !(n[0].g.Current == 0 && n[1].g.Current == 0):
				return fail("same writes on both, got %v", d)
			}
			usable := d.Action == SourceBitmap || d.Action == TargetBitmap
			switch {
			case d.Action.IsSource():
				src, dst = 0, 1
			case d.Action.IsTarget():
				src, dst = 1, 0
			case d.Action == SplitBrain:
				// The operator discards one side (resync --discard-my-data).
				dst = r.IntN(2)
				src = 1 - dst
				usable = d.BitmapUsable
				trace = append(trace, fmt.Sprintf("  %s discards its data", n[dst].g.Node))
			}
			if src >= 0 {
				s, t := n[src], n[dst]
				if usable {
					union := maps.Clone(s.bitmap)
					maps.Copy(union, t.bitmap)
					for b := range modelBlocks {
						if s.data[b] != t.data[b] && !union[b] {
							return fail("block %d differs but is in neither bitmap", b)
						}
						if union[b] {
							setBlock(t.data, b, s.data[b])
						}
					}
				} else {
					t.data = maps.Clone(s.data)
				}
				t.writes = maps.Clone(s.writes)
				s.g, t.g = FinishSync(s.g, t.g)
			}
			if !maps.Equal(n[0].data, n[1].data) {
				return fail("replicas differ after %v: %v vs %v", d, n[0].data, n[1].data)
			}
			if d.Action == NoSync && (len(n[0].bitmap) > 0 || len(n[1].bitmap) > 0) {
				return fail("no sync, yet bits are set")
			}
			n[0].bitmap, n[1].bitmap = map[int]bool{}, map[int]bool{}
			n[0].g.Dirty, n[1].g.Dirty = false, false
			connected = true
		}
	}
	return nil
}

func setBlock(m map[int]int, b, v int) {
	if v == 0 {
		delete(m, b)
	} else {
		m[b] = v
	}
}

func subset(a, b map[int]bool) bool {
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
