package repl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blkrep/blkrep/protocol"
)

// termLog records a node's Config.OnPeerTerm calls.
type termLog struct {
	mu  sync.Mutex
	got map[string][]uint64
}

func watchTerms(n *tnode) *termLog {
	tl := &termLog{got: map[string][]uint64{}}
	n.tweak = func(c *Config) {
		c.OnPeerTerm = func(peer string, term uint64) {
			tl.mu.Lock()
			tl.got[peer] = append(tl.got[peer], term)
			tl.mu.Unlock()
		}
	}
	return tl
}

func (tl *termLog) terms(peer string) []uint64 {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return slices.Clone(tl.got[peer])
}

func (tl *termLog) waitLearn(t *testing.T, who, peer string, term uint64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s learns %s's term %d", who, peer, term), 10*time.Second, func() bool {
		return slices.Contains(tl.terms(peer), term)
	})
}

// hasEvent reports whether one of n's events contains every part.
func (n *tnode) hasEvent(parts ...string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.ContainsFunc(n.events, func(e string) bool {
		for _, p := range parts {
			if !strings.Contains(e, p) {
				return false
			}
		}
		return true
	})
}

// TestTermExchanged: each handshake carries the node's data term; the
// peer shows it in status and hands it to OnPeerTerm, and a change while
// connected reaches the peer at once.
func TestTermExchanged(t *testing.T) {
	a, b := newPair(t, 'C')
	ta, tb := watchTerms(a), watchTerms(b)
	a.primary, a.term = true, 7
	b.term = 6 // lags behind its primary's term: allowed
	a.start()
	b.start()
	waitEstablished(t, a, b)
	if got := a.rep.Peers()[0].Term; got != 6 {
		t.Errorf("alpha shows beta's term %d, want 6", got)
	}
	if got := b.rep.Peers()[0].Term; got != 7 {
		t.Errorf("beta shows alpha's term %d, want 7", got)
	}
	ta.waitLearn(t, "alpha", "beta", 6)
	tb.waitLearn(t, "beta", "alpha", 7)
	if a.rep.Term() != 7 || b.rep.Term() != 6 {
		t.Errorf("Term(): %d %d", a.rep.Term(), b.rep.Term())
	}

	// beta is in sync with the primary of term 7 now.
	b.rep.SetTerm(7)
	waitFor(t, "alpha sees beta's new term", 10*time.Second, func() bool { return a.rep.Peers()[0].Term == 7 })
	ta.waitLearn(t, "alpha", "beta", 7)
	if got := ta.terms("beta"); !slices.Equal(got, []uint64{6, 7}) {
		t.Errorf("alpha's OnPeerTerm calls for beta: %v, want [6 7]", got)
	}
	if a.peerStatus() != ConnConnected+"/"+ReplEstablished {
		t.Errorf("a term change broke the session: %s", a.peerStatus())
	}
	if _, err := a.rep.WriteAt(bytes.Repeat([]byte{1}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(a.rep.Peers()[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(j), `"term":7`) {
		t.Errorf("status JSON without the peer's term: %s", j)
	}
}

// TestTermStalePrimaryRefused: a secondary holding data of term 5
// refuses a primary of term 4 (which learns term 5 from the attempt,
// so failover can demote it), keeps retrying, and takes the primary once
// its term is 5 or newer.
func TestTermStalePrimaryRefused(t *testing.T) {
	for _, good := range []uint64{5, 6} {
		t.Run(fmt.Sprint(good), func(t *testing.T) {
			a, b := newPair(t, 'C')
			ta, tb := watchTerms(a), watchTerms(b)
			a.primary, a.term = true, 4
			b.term = 5
			a.start()
			b.start()
			waitFor(t, "beta refuses the stale primary", 10*time.Second, func() bool {
				return strings.Contains(b.rep.Peers()[0].LastError, "stale primary: term 4 < 5")
			})
			waitFor(t, "alpha knows it is a stale primary", 10*time.Second, func() bool {
				return strings.Contains(a.rep.Peers()[0].LastError, "this node is a stale primary: term 4 < 5")
			})
			ta.waitLearn(t, "alpha", "beta", 5)
			tb.waitLearn(t, "beta", "alpha", 4)
			if !b.hasEvent("alpha error", "stale primary: term 4 < 5") {
				t.Errorf("beta: no event for the refusal: %q", b.events)
			}
			// Refused, never connected, and still trying.
			time.Sleep(500 * time.Millisecond)
			for _, n := range []*tnode{a, b} {
				p := n.rep.Peers()[0]
				if p.Connection == ConnConnected || p.Connection == ConnStandAlone || p.Handshake != nil {
					t.Fatalf("%s: connection %s, handshake %+v: want a refused handshake being retried", n.name, p.Connection, p.Handshake)
				}
				if n.hasEvent("connection Connecting->Connected") {
					t.Fatalf("%s connected to the stale primary", n.name)
				}
			}
			b.mu.Lock()
			if k := strings.Count(strings.Join(b.events, "\n"), "stale primary"); k != 1 {
				t.Errorf("beta reported the refusal %d times, want once: %q", k, b.events)
			}
			b.mu.Unlock()
			// Failover gives alpha the newest term (or a newer one): the
			// link's next attempt succeeds without the operator.
			a.rep.SetTerm(good)
			waitEstablished(t, a, b)
			if got := b.rep.Peers()[0].Term; got != good {
				t.Errorf("beta shows alpha's term %d, want %d", got, good)
			}
			if _, err := a.rep.WriteAt(bytes.Repeat([]byte{9}, 4096), 0); err != nil {
				t.Fatal(err)
			}
			sameImages(t, a, b)
		})
	}
}

// TestTermBothPrimary: two Primaries of one term (a race around a
// promotion) are refused and retried, not left StandAlone as without
// failover: failover demotes one and the link connects by itself.
func TestTermBothPrimary(t *testing.T) {
	a, b := newPair(t, 'C')
	a.primary, b.primary, a.term, b.term = true, true, 5, 5
	a.start()
	b.start()
	for _, n := range []*tnode{a, b} {
		waitFor(t, n.name+" refuses two primaries", 10*time.Second, func() bool {
			return strings.Contains(n.rep.Peers()[0].LastError, "are Primary (failover terms 5 and 5)")
		})
	}
	time.Sleep(300 * time.Millisecond)
	for _, n := range []*tnode{a, b} {
		if c := n.rep.Peers()[0].Connection; c == ConnStandAlone || c == ConnConnected {
			t.Fatalf("%s: %s, want a refused handshake being retried", n.name, c)
		}
	}
	if err := b.rep.StepDown(); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, a, b)
}

// splitBrain makes a split brain between alpha (the old primary, term
// termA) and beta (promoted for term termB): both write while
// disconnected. Blocks 0-19 hold 0x11 from before the split; alpha
// then writes 0xAA over blocks 0-9 and steps down (unless keepPrimary),
// beta writes 0xBB over blocks 5-14. Both are then told to connect.
func splitBrain(t *testing.T, termA, termB uint64, keepPrimary bool) (a, b *tnode) {
	t.Helper()
	return diverge(t, termA, termB, keepPrimary, true, true)
}

// diverge is splitBrain where beta may stay Secondary (promote false:
// another node is the primary of termB) and may write nothing.
func diverge(t *testing.T, termA, termB uint64, keepPrimary, promote, writes bool) (a, b *tnode) {
	t.Helper()
	return divergeHooked(t, termA, termB, keepPrimary, promote, writes, nil)
}

// divergeHooked is diverge with hook as alpha's Config.Hook.
func divergeHooked(t *testing.T, termA, termB uint64, keepPrimary, promote, writes bool, hook func(string)) (a, b *tnode) {
	t.Helper()
	a, b = newPair(t, 'C')
	a.tweak = func(c *Config) { c.Hook = hook }
	a.primary, a.term, b.term = true, termA, termA
	a.start()
	b.start()
	waitEstablished(t, a, b)
	fill := func(n *tnode, val byte, from, to int64) {
		t.Helper()
		for blk := from; blk < to; blk++ {
			if _, err := n.rep.WriteAt(bytes.Repeat([]byte{val}, 4096), blk*4096); err != nil {
				t.Fatal(err)
			}
		}
		if err := n.rep.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	fill(a, 0x11, 0, 20)
	a.rep.Disconnect()
	b.rep.Disconnect()
	fill(a, 0xAA, 0, 10) // never acknowledged under failover: alpha lost its lease
	if !keepPrimary {
		if err := a.rep.StepDown(); err != nil {
			t.Fatal(err)
		}
	}
	if promote {
		if err := b.rep.Promote(false); err != nil {
			t.Fatal(err)
		}
	}
	b.rep.SetTerm(termB)
	if writes {
		fill(b, 0xBB, 5, 15)
	}
	a.rep.Connect()
	b.rep.Connect()
	return a, b
}

// checkBlocks checks the first 20 blocks of n's disk.
func checkBlocks(t *testing.T, n *tnode, want func(blk int64) byte) {
	t.Helper()
	img := n.image()
	for blk := int64(0); blk < 20; blk++ {
		if w := bytes.Repeat([]byte{want(blk)}, 4096); !bytes.Equal(img[blk*4096:(blk+1)*4096], w) {
			t.Errorf("%s: block %d starts with %#x, want %#x", n.name, blk, img[blk*4096], want(blk))
		}
	}
}

// TestTermSplitBrain: a split brain between term 4 (alpha, the old
// primary) and term 5 (beta, promoted) resolves itself although
// after_split_brain is "disconnect": alpha, once Secondary, is the sync
// target; its writes made without beta are gone and both disks are
// identical. While alpha is still Primary the session is refused.
func TestTermSplitBrain(t *testing.T) {
	a, b := splitBrain(t, 4, 5, true)
	waitFor(t, "alpha is refused as a stale primary", 10*time.Second, func() bool {
		return strings.Contains(a.rep.Peers()[0].LastError, "this node is a stale primary: term 4 < 5")
	})
	if p := a.rep.Peers()[0]; p.Connection == ConnStandAlone || p.SplitBrain {
		t.Fatalf("alpha: %s, split brain %v: want a refused handshake being retried", p.Connection, p.SplitBrain)
	}
	// Failover demotes alpha: the link's next attempt resolves the split.
	if err := a.rep.StepDown(); err != nil {
		t.Fatal(err)
	}
	waitResyncDone(t, a)
	waitEstablished(t, a, b)
	h := a.rep.Peers()[0].Handshake
	if h == nil || !strings.HasSuffix(h.Rule, "+term") || h.Action != "target-bitmap" {
		t.Fatalf("alpha's handshake: %+v, want target-bitmap by a split-brain rule +term", h)
	}
	if hb := b.rep.Peers()[0].Handshake; hb == nil || hb.Action != "source-bitmap" || hb.Rule != h.Rule {
		t.Fatalf("beta's handshake: %+v", hb)
	}
	if !a.hasEvent("beta split-brain", "term 5 beats term 4: discarding this node's writes the new primary never saw") {
		t.Errorf("alpha: no split-brain event naming the terms: %q", a.events)
	}
	if !b.hasEvent("alpha split-brain", "term 5 beats term 4: alpha discards its writes") {
		t.Errorf("beta: no split-brain event naming the terms: %q", b.events)
	}
	for _, n := range []*tnode{a, b} {
		if n.rep.Peers()[0].SplitBrain {
			t.Errorf("%s still reports a split brain", n.name)
		}
	}
	if err := b.rep.Flush(); err != nil {
		t.Fatal(err)
	}
	want := func(blk int64) byte {
		if blk >= 5 && blk < 15 {
			return 0xBB
		}
		return 0x11 // alpha's 0xAA over 0-4 is gone
	}
	checkBlocks(t, a, want)
	checkBlocks(t, b, want)
	sameImages(t, a, b)
}

// TestTermSplitBrainSecondaryVictim: the same with alpha already
// Secondary when they meet (the common case: failover demoted it while
// cut off): resolved at the first handshake.
func TestTermSplitBrainSecondaryVictim(t *testing.T) {
	a, b := splitBrain(t, 4, 5, false)
	waitResyncDone(t, a)
	waitEstablished(t, a, b)
	if h := a.rep.Peers()[0].Handshake; h == nil || !strings.HasSuffix(h.Rule, "+term") {
		t.Fatalf("alpha's handshake: %+v", h)
	}
	if err := b.rep.Flush(); err != nil {
		t.Fatal(err)
	}
	sameImages(t, a, b)
	checkBlocks(t, a, func(blk int64) byte {
		if blk >= 5 && blk < 15 {
			return 0xBB
		}
		return 0x11
	})
}

// TestTermStaleWritesNeverSource: alpha, the primary of term 4, wrote
// after losing beta (never acknowledged: its lease was gone) and stepped
// down; beta holds the data of term 5 but wrote nothing since, so by
// generations alpha's data is the newer. The terms turn the decision
// round: alpha is the target and its writes are gone, whether beta is
// the primary of term 5 (else refused: it would be overwritten) or its
// secondary (else overwritten with writes its primary never saw).
func TestTermStaleWritesNeverSource(t *testing.T) {
	for _, promote := range []bool{true, false} {
		t.Run(fmt.Sprint("beta-primary-", promote), func(t *testing.T) {
			a, b := diverge(t, 4, 5, false, promote, false)
			waitResyncDone(t, a)
			waitEstablished(t, a, b)
			h := a.rep.Peers()[0].Handshake
			if h == nil || h.Rule != "local-bitmap-is-peer-current+term" || h.Action != "target-bitmap" {
				t.Fatalf("alpha's handshake: %+v", h)
			}
			if !a.hasEvent("beta split-brain", "term 5 beats term 4: discarding this node's writes the new primary never saw") {
				t.Errorf("alpha: no event naming the terms: %q", a.events)
			}
			for _, n := range []*tnode{a, b} {
				checkBlocks(t, n, func(int64) byte { return 0x11 })
			}
			sameImages(t, a, b)
		})
	}
}

// TestTermResyncResumes: the resync the terms turned around (alpha's
// bitmap tracks beta's current, so the generations make alpha the source;
// beta's newer term makes it the target) is cut short. It must resume
// from the bitmaps: the target takes the source's generation when the
// resync starts. It once kept its own, and the next handshake picked
// alpha, Inconsistent, as the source again and refused for good
// (internal/torture, long mode, seed 643753404775606).
func TestTermResyncResumes(t *testing.T) {
	var once sync.Once
	var a *tnode
	a, b := divergeHooked(t, 4, 5, false, false, false, func(point string) {
		if point == HookResyncLanded {
			// The first range landed on alpha: cut the session before
			// its ack (Disconnect does not wait for this goroutine).
			once.Do(func() { a.rep.Disconnect() })
		}
	})
	waitFor(t, "the resync is cut short", 10*time.Second, func() bool {
		p := a.rep.Peers()[0]
		return p.Connection == ConnStandAlone && a.rep.DiskState() == "Inconsistent"
	})
	a.rep.Connect()
	waitResyncDone(t, a)
	waitEstablished(t, a, b)
	if h := a.rep.Peers()[0].Handshake; h == nil || h.Action != "target-bitmap" {
		t.Fatalf("alpha's handshake after the cut: %+v", h)
	}
	for _, n := range []*tnode{a, b} {
		checkBlocks(t, n, func(int64) byte { return 0x11 })
	}
	sameImages(t, a, b)
}

// TestTermZeroUnchanged: with a term of 0 on either side (failover off
// or the term unknown) nothing changes: a split brain waits for the
// operator, and a primary is accepted whatever the other term. Equal
// terms leave a split brain to the policy too.
func TestTermZeroUnchanged(t *testing.T) {
	for _, c := range []struct{ a, b uint64 }{{0, 0}, {0, 5}, {4, 0}, {5, 5}} {
		t.Run(fmt.Sprintf("split-brain-%d-%d", c.a, c.b), func(t *testing.T) {
			a, b := splitBrain(t, c.a, c.b, false)
			for _, n := range []*tnode{a, b} {
				waitFor(t, n.name+" StandAlone in split brain", 10*time.Second, func() bool {
					p := n.rep.Peers()[0]
					return p.SplitBrain && p.Connection == ConnStandAlone
				})
			}
			if h := a.rep.Peers()[0].Handshake; h == nil || h.Action != "split-brain" {
				t.Fatalf("alpha's handshake: %+v", h)
			}
			if a.hasEvent("beats term") || b.hasEvent("beats term") {
				t.Error("a term resolved the split brain")
			}
			// Untouched: each keeps its own writes.
			checkBlocks(t, a, func(blk int64) byte {
				if blk < 10 {
					return 0xAA
				}
				return 0x11
			})
		})
	}
	// Generations decide the direction: alpha's writes without beta win.
	for _, c := range []struct{ a, b uint64 }{{0, 5}, {4, 0}, {5, 5}} {
		t.Run(fmt.Sprintf("newer-gens-%d-%d", c.a, c.b), func(t *testing.T) {
			a, b := diverge(t, c.a, c.b, false, false, false)
			waitResyncDone(t, b)
			waitEstablished(t, a, b)
			if h := a.rep.Peers()[0].Handshake; h == nil || h.Rule != "local-bitmap-is-peer-current" || h.Action != "source-bitmap" {
				t.Fatalf("alpha's handshake: %+v", h)
			}
			checkBlocks(t, b, func(blk int64) byte {
				if blk < 10 {
					return 0xAA
				}
				return 0x11
			})
			sameImages(t, a, b)
		})
	}
	for _, c := range []struct{ a, b uint64 }{{0, 5}, {4, 0}} {
		t.Run(fmt.Sprintf("primary-%d-secondary-%d", c.a, c.b), func(t *testing.T) {
			a, b := newPair(t, 'C')
			ta, tb := watchTerms(a), watchTerms(b)
			a.primary, a.term, b.term = true, c.a, c.b
			a.start()
			b.start()
			waitEstablished(t, a, b)
			if got := b.rep.Peers()[0].Term; got != c.a {
				t.Errorf("beta shows alpha's term %d, want %d", got, c.a)
			}
			if _, err := a.rep.WriteAt(bytes.Repeat([]byte{3}, 4096), 0); err != nil {
				t.Fatal(err)
			}
			sameImages(t, a, b)
			time.Sleep(100 * time.Millisecond)
			for _, x := range []struct {
				tl   *termLog
				peer string
				term uint64
			}{{ta, "beta", c.b}, {tb, "alpha", c.a}} {
				got := x.tl.terms(x.peer)
				if x.term == 0 && len(got) > 0 {
					t.Errorf("OnPeerTerm called for %s's term 0: %v", x.peer, got)
				}
				if x.term != 0 && !slices.Equal(got, []uint64{x.term}) {
					t.Errorf("OnPeerTerm for %s: %v, want [%d]", x.peer, got, x.term)
				}
			}
		})
	}
}

// TestTermRules: the pure rules, both sides of a pair at once (each side
// must reach the mirror conclusion of the other).
func TestTermRules(t *testing.T) {
	P, S := protocol.RolePrimary, protocol.RoleSecondary
	st := func(role protocol.Role, term uint64) protocol.State { return protocol.State{Role: role, Term: term} }
	for _, c := range []struct {
		mine, peer            protocol.State
		localStale, peerStale bool
		victimLocal, victimOK bool
	}{
		{st(S, 5), st(P, 4), false, true, false, true},
		{st(S, 5), st(P, 5), false, false, false, false},
		{st(S, 5), st(P, 6), false, false, true, true},
		{st(P, 4), st(P, 5), true, false, true, true},
		{st(S, 4), st(S, 5), false, false, true, true},
		{st(S, 0), st(P, 4), false, false, false, false},
		{st(S, 5), st(P, 0), false, false, false, false},
		{st(P, 0), st(S, 0), false, false, false, false},
		{st(S, 4), protocol.State{Role: S, Term: 5, Flags: protocol.StateInconsistent}, false, false, false, false},
	} {
		ls, ps := stalePrimary(c.mine, c.peer)
		v, ok := termVictim(c.mine, c.peer)
		if ls != c.localStale || ps != c.peerStale || v != c.victimLocal || ok != c.victimOK {
			t.Errorf("%+v vs %+v: stale %v %v, victim %v %v", c.mine, c.peer, ls, ps, v, ok)
		}
		// The peer's view is the mirror.
		ls2, ps2 := stalePrimary(c.peer, c.mine)
		v2, ok2 := termVictim(c.peer, c.mine)
		if ls2 != ps || ps2 != ls || ok2 != ok || (ok && v2 == v) {
			t.Errorf("%+v vs %+v: not symmetric", c.mine, c.peer)
		}
	}
}

// A node running a failover election does not become a resync target:
// it could win holding half-copied data (found by internal/torture). The
// resync runs once the election is over.
func TestElectingRefusesResyncTarget(t *testing.T) {
	a, b := newPair(t, 'C')
	a.primary = true
	a.start()
	b.start()
	waitEstablished(t, a, b)
	b.stop()
	waitFor(t, "alpha sees beta gone", 10*time.Second, func() bool { return a.rep.Peers()[0].Connection != ConnConnected })
	for i := range 4 {
		if _, err := a.rep.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 4096), int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	b.electing = true
	b.start()
	waitFor(t, "beta refuses the resync while electing", 10*time.Second, func() bool {
		return strings.Contains(b.rep.Peers()[0].LastError, "runs a failover election")
	})
	time.Sleep(300 * time.Millisecond) // several connect intervals
	if p := b.rep.Peers()[0]; p.Replication == ReplEstablished || b.rep.DiskState() != "UpToDate" {
		t.Fatalf("beta, electing, became a resync target: %s/%s, disk %s", p.Connection, p.Replication, b.rep.DiskState())
	}
	b.rep.SetElecting(false)
	waitResyncDone(t, b)
	waitEstablished(t, a, b)
	if got := resyncBytes(t, b); got != 4*4096 {
		t.Errorf("resynced %d bytes after the election, want %d", got, 4*4096)
	}
}
