package failover

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/testnet"
	"github.com/hashicorp/memberlist"
)

// The tests run real memberlist clusters on 127.0.0.1 with a fast
// profile: a dead node is detected in well under a second.

var testSecret = []byte("correct horse battery staple")

const (
	testCluster = "test"
	// bound is the most any wait below takes on a healthy machine, with a
	// wide margin for -race on a loaded CI runner.
	bound = 10 * time.Second
)

// fastConfig returns a GossipConfig on bind with the fast test profile.
func fastConfig(name, bind string, seeds ...string) GossipConfig {
	return GossipConfig{
		Cluster: testCluster, Node: name, Bind: bind, Seeds: seeds, Secret: testSecret,
		ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond,
		GossipInterval: 50 * time.Millisecond, SuspicionMult: 2,
	}
}

// start starts a node that logs into a new recorder; cleanup shuts it
// down.
func start(t *testing.T, cfg GossipConfig, meta NodeMeta) (*Gossip, *recorder) {
	t.Helper()
	rec := newRecorder()
	cfg.Log = slog.New(rec)
	g, err := StartGossip(cfg, meta)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.Node, err)
	}
	t.Cleanup(func() {
		if err := g.Shutdown(); err != nil {
			t.Errorf("shutdown %s: %v", cfg.Node, err)
		}
	})
	return g, rec
}

// waitFor polls cond until it holds, failing the test after bound with
// what cond last described.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v still waiting for %s; last seen: %s", bound, what, seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func describe(ms []Member) string {
	var parts []string
	for _, m := range ms {
		s := fmt.Sprintf("%s@%s %s %+v", m.Name, m.Addr, m.State, m.Meta)
		if m.MetaErr != nil {
			s += fmt.Sprintf(" (meta error: %v)", m.MetaErr)
		}
		parts = append(parts, s)
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

func find(g *Gossip, name string) (Member, bool) {
	for _, m := range g.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// memberIs returns a waitFor condition: g lists name in state and with a
// Meta that passes check (nil: any).
func memberIs(g *Gossip, name string, state MemberState, check func(Member) bool) func() (bool, string) {
	return func() (bool, string) {
		ms := g.Members()
		for _, m := range ms {
			if m.Name == name {
				return m.State == state && (check == nil || check(m)), describe(ms)
			}
		}
		return false, describe(ms)
	}
}

func names(ms []Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func metaOf(volume string, term uint64) NodeMeta {
	return NodeMeta{Volumes: []VolumeMeta{{Name: volume, Role: RoleSecondary, Disk: DiskUpToDate, Term: term, DataTerm: term, InSync: true}}}
}

// watchStates records the states g's Changed signals show for node, until
// g shuts down.
type stateLog struct {
	mu     sync.Mutex
	states []MemberState
}

func watchStates(g *Gossip, node string) *stateLog {
	sl := &stateLog{}
	record := func() {
		if m, ok := find(g, node); ok {
			sl.mu.Lock()
			if n := len(sl.states); n == 0 || sl.states[n-1] != m.State {
				sl.states = append(sl.states, m.State)
			}
			sl.mu.Unlock()
		}
	}
	record()
	go func() {
		for range g.Changed() {
			record()
		}
	}()
	return sl
}

func (sl *stateLog) get() []MemberState {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return append([]MemberState(nil), sl.states...)
}

// The whole life of a three-node cluster: joining through the retry,
// metadata, messages, a graceful leave, a failure.
func TestGossipCluster(t *testing.T) {
	t.Parallel()
	aAddr, bAddr, cAddr := testnet.MustAddr(t), testnet.MustAddr(t), testnet.MustAddr(t)
	// alpha's seed (beta) and beta's seed (gamma) are not up when they
	// start; gamma joins alpha at once. Nobody but alpha has beta as a
	// seed, so beta gets in only through a retry (alpha's or its own).
	failedOnce := func(l *recorder) func() (bool, string) {
		return func() (bool, string) {
			return len(l.records("cannot join any seed yet")) > 0, fmt.Sprint(l.records(""))
		}
	}
	alpha, aLog := start(t, fastConfig("alpha", aAddr, bAddr), metaOf("r0", 1))
	waitFor(t, "alpha's first join attempt to fail", failedOnce(aLog))
	beta, bLog := start(t, fastConfig("beta", bAddr, cAddr, bAddr), metaOf("r0", 1))
	waitFor(t, "beta's first join attempt to fail", failedOnce(bLog))
	gamma, _ := start(t, fastConfig("gamma", cAddr, aAddr), NodeMeta{Witness: true})
	gs := []*Gossip{alpha, beta, gamma}
	addrs := map[string]string{"alpha": aAddr, "beta": bAddr, "gamma": cAddr}

	for _, g := range gs {
		for _, n := range []string{"alpha", "beta", "gamma"} {
			waitFor(t, n+" alive in "+g.cfg.Node+"'s view", memberIs(g, n, StateAlive, func(m Member) bool {
				return m.Addr == addrs[n] && m.MetaErr == nil
			}))
		}
	}
	if len(aLog.records("joined the cluster"))+len(bLog.records("joined the cluster")) == 0 {
		t.Fatalf("beta is in, but neither alpha nor beta logged a join: %v %v", aLog.records(""), bLog.records(""))
	}
	ms := beta.Members()
	if got := names(ms); !reflect.DeepEqual(got, []string{"alpha", "beta", "gamma"}) {
		t.Fatalf("beta lists %v, want alpha, beta, gamma in order", got)
	}
	if !reflect.DeepEqual(ms[0].Meta, metaOf("r0", 1)) || !reflect.DeepEqual(ms[2].Meta, NodeMeta{Witness: true}) {
		t.Fatalf("beta sees the wrong metadata: %s", describe(ms))
	}

	t.Run("metadata", func(t *testing.T) {
		for range len(gamma.Changed()) {
			<-gamma.Changed()
		}
		// Rapid updates coalesce; the last one wins everywhere.
		for term := uint64(2); term <= 20; term++ {
			if err := alpha.SetMeta(metaOf("r0", term)); err != nil {
				t.Fatal(err)
			}
		}
		want := metaOf("r0", 20)
		want.Volumes[0].Role = RolePrimary
		if err := alpha.SetMeta(want); err != nil {
			t.Fatal(err)
		}
		if m, _ := find(alpha, "alpha"); !reflect.DeepEqual(m.Meta, want) {
			t.Fatalf("alpha lists itself with %+v, want %+v at once", m.Meta, want)
		}
		for _, g := range []*Gossip{beta, gamma} {
			waitFor(t, g.cfg.Node+" to see alpha's new metadata", memberIs(g, "alpha", StateAlive, func(m Member) bool {
				return reflect.DeepEqual(m.Meta, want)
			}))
		}
		select {
		case <-gamma.Changed():
		default:
			t.Fatal("gamma's Changed did not signal the metadata update")
		}
	})

	t.Run("messages", func(t *testing.T) {
		if err := alpha.Send("beta", []byte("vote for me")); err != nil {
			t.Fatal(err)
		}
		if err := gamma.Send("alpha", nil); err != nil {
			t.Fatal(err)
		}
		big := bytes.Repeat([]byte{7}, 100_000)
		if err := gamma.Send("alpha", big); err != nil {
			t.Fatal(err)
		}
		// Each Send is a stream of its own: gamma's two messages may
		// arrive in either order.
		receive := func(g *Gossip, n int) []Message {
			var got []Message
			for range n {
				select {
				case m := <-g.Messages():
					got = append(got, m)
				case <-time.After(bound):
					t.Fatalf("%s received %d messages, want %d", g.cfg.Node, len(got), n)
				}
			}
			slices.SortFunc(got, func(a, b Message) int { return len(a.Payload) - len(b.Payload) })
			return got
		}
		same := func(got []Message, want ...Message) bool {
			return slices.EqualFunc(got, want, func(a, b Message) bool {
				return a.From == b.From && bytes.Equal(a.Payload, b.Payload)
			})
		}
		if got := receive(beta, 1); !same(got, Message{From: "alpha", Payload: []byte("vote for me")}) {
			t.Fatalf("beta received %+v", got)
		}
		if got := receive(alpha, 2); !same(got, Message{From: "gamma", Payload: []byte{}}, Message{From: "gamma", Payload: big}) {
			t.Fatalf("alpha received %d messages: from %q, %d bytes, and from %q, %d bytes", len(got),
				got[0].From, len(got[0].Payload), got[1].From, len(got[1].Payload))
		}
		if err := alpha.Send("nobody", []byte("x")); err == nil || !strings.Contains(err.Error(), `Send to "nobody": no such member`) {
			t.Fatalf("Send to an unknown node: %v", err)
		}
		if err := alpha.Send("beta", make([]byte, MaxMessage+1)); err == nil || !strings.Contains(err.Error(), "payload of 1048577 bytes, at most 1048576") {
			t.Fatalf("Send of an oversized payload: %v", err)
		}
	})

	t.Run("leave", func(t *testing.T) {
		if err := gamma.Leave(bound); err != nil {
			t.Fatal(err)
		}
		if m, _ := find(gamma, "gamma"); m.State != StateLeft || !m.Meta.Leaving {
			t.Fatalf("gamma lists itself as %s with %+v after Leave", m.State, m.Meta)
		}
		if err := gamma.SetMeta(NodeMeta{}); err == nil || !strings.Contains(err.Error(), "after Leave") {
			t.Fatalf("SetMeta after Leave: %v", err)
		}
		if err := gamma.Leave(bound); err != nil {
			t.Fatalf("second Leave: %v", err)
		}
		for _, g := range []*Gossip{alpha, beta} {
			waitFor(t, g.cfg.Node+" to list gamma as left", memberIs(g, "gamma", StateLeft, func(m Member) bool {
				return m.Meta.Leaving && m.Meta.Witness
			}))
		}
		if err := gamma.Shutdown(); err != nil {
			t.Fatal(err)
		}
		if err := alpha.Send("gamma", []byte("x")); err == nil || !strings.Contains(err.Error(), `Send to "gamma": the member is left`) {
			t.Fatalf("Send to a left node: %v", err)
		}
	})

	t.Run("failure", func(t *testing.T) {
		seen := watchStates(alpha, "beta")
		if err := beta.Shutdown(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "alpha to list beta as dead", memberIs(alpha, "beta", StateDead, nil))
		// alpha is the only node left to probe beta: its own failed probe
		// made beta suspect before the suspicion timed out.
		waitFor(t, "alpha's Changed to show beta dead", func() (bool, string) {
			got := seen.get()
			return len(got) > 0 && got[len(got)-1] == StateDead, fmt.Sprint(got)
		})
		got := seen.get()
		if !reflect.DeepEqual(got, []MemberState{StateAlive, StateSuspect, StateDead}) {
			t.Fatalf("alpha saw beta go through %v, want alive, suspect, dead", got)
		}
		// Left stays left (not dead) after the node stopped.
		if m, _ := find(alpha, "gamma"); m.State != StateLeft {
			t.Fatalf("alpha lists gamma as %s after it stopped, want left", m.State)
		}
		if err := alpha.Send("beta", []byte("x")); err == nil || !strings.Contains(err.Error(), `Send to "beta": the member is dead`) {
			t.Fatalf("Send to a dead node: %v", err)
		}
	})
}

// Nodes with another secret or another cluster name never get in; a
// node with the right ones, started at the same time, does.
func TestGossipRejectsOutsiders(t *testing.T) {
	t.Parallel()
	aAddr, bAddr := testnet.MustAddr(t), testnet.MustAddr(t)
	alpha, aLog := start(t, fastConfig("alpha", aAddr, bAddr), NodeMeta{})
	beta, _ := start(t, fastConfig("beta", bAddr, aAddr), NodeMeta{})
	waitFor(t, "beta alive in alpha's view", memberIs(alpha, "beta", StateAlive, nil))

	wrongKey := fastConfig("mallory", testnet.MustAddr(t), aAddr, bAddr)
	wrongKey.Secret = []byte("correct horse battery stapler")
	wrongCluster := fastConfig("eve", testnet.MustAddr(t), aAddr, bAddr)
	wrongCluster.Cluster = "other"
	mallory, mLog := start(t, wrongKey, NodeMeta{})
	eve, eLog := start(t, wrongCluster, NodeMeta{})
	carol, _ := start(t, fastConfig("carol", testnet.MustAddr(t), aAddr), NodeMeta{})

	insiders := []*Gossip{alpha, beta, carol}
	check := func() {
		t.Helper()
		for _, g := range insiders {
			for _, m := range g.Members() {
				if m.Name == "mallory" || m.Name == "eve" {
					t.Fatalf("%s lists %s: %s", g.cfg.Node, m.Name, describe(g.Members()))
				}
			}
		}
		for _, g := range []*Gossip{mallory, eve} {
			if got := names(g.Members()); !reflect.DeepEqual(got, []string{g.cfg.Node}) {
				t.Fatalf("%s lists %v, want only itself", g.cfg.Node, got)
			}
		}
	}
	for _, g := range insiders {
		waitFor(t, "carol alive in "+g.cfg.Node+"'s view", func() (bool, string) {
			check()
			return memberIs(g, "carol", StateAlive, nil)()
		})
	}
	// Both outsiders tried at least twice (the first attempt and a retry),
	// and alpha turned them away.
	for _, l := range []*recorder{mLog, eLog} {
		waitFor(t, "two failed join attempts", func() (bool, string) {
			check()
			r := l.records("cannot join any seed yet")
			return len(r) >= 2, fmt.Sprint(r)
		})
	}
	waitFor(t, "alpha to log both refusals", func() (bool, string) {
		check()
		return len(aLog.records("unacceptable label \"other\"")) > 0 && len(aLog.records("no installed keys could decrypt")) > 0,
			fmt.Sprint(aLog.records("memberlist"))
	})
	check()
}

// rawDelegate is a bare memberlist delegate with settable metadata.
type rawDelegate struct{ meta atomic.Pointer[[]byte] }

func (d *rawDelegate) NodeMeta(int) []byte                 { return *d.meta.Load() }
func (d *rawDelegate) NotifyMsg([]byte)                    {}
func (d *rawDelegate) GetBroadcasts(int, int) [][]byte     { return nil }
func (d *rawDelegate) LocalState(bool) []byte              { return nil }
func (d *rawDelegate) MergeRemoteState(buf []byte, j bool) {}

// A peer that gossips metadata that does not decode is listed with
// MetaErr; the cluster goes on.
func TestGossipUndecodableMeta(t *testing.T) {
	t.Parallel()
	aAddr, bAddr := testnet.MustAddr(t), testnet.MustAddr(t)
	alpha, aLog := start(t, fastConfig("alpha", aAddr, bAddr), NodeMeta{})
	beta, _ := start(t, fastConfig("beta", bAddr, aAddr), NodeMeta{})

	d := &rawDelegate{}
	garbage := []byte{9, 9, 9}
	d.meta.Store(&garbage)
	jAddr, err := parseIPPort(testnet.MustAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name, mc.Label, mc.SecretKey = "junk", testCluster, gossipKey(testSecret)
	mc.BindAddr, mc.BindPort = jAddr.Addr().String(), int(jAddr.Port())
	mc.AdvertiseAddr, mc.AdvertisePort = mc.BindAddr, mc.BindPort
	mc.ProbeInterval, mc.ProbeTimeout, mc.GossipInterval, mc.SuspicionMult = 100*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond, 2
	mc.Delegate = d
	mc.Logger = log.New(io.Discard, "", 0)
	raw, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Shutdown()
	if _, err := raw.Join([]string{aAddr}); err != nil {
		t.Fatal(err)
	}

	badMeta := func(frag string) func(Member) bool {
		return func(m Member) bool {
			return errors.Is(m.MetaErr, ErrBadMeta) && strings.Contains(m.MetaErr.Error(), frag) &&
				reflect.DeepEqual(m.Meta, NodeMeta{})
		}
	}
	for _, g := range []*Gossip{alpha, beta} {
		waitFor(t, g.cfg.Node+" to list junk with a metadata error", memberIs(g, "junk", StateAlive, badMeta("version 9, want 1")))
	}
	garbage2 := []byte{1, 0x80, 0}
	d.meta.Store(&garbage2)
	if err := raw.UpdateNode(bound); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alpha to see junk's new bad metadata", memberIs(alpha, "junk", StateAlive, badMeta("unknown bits 0x80")))
	if r := aLog.records("undecodable node metadata"); len(r) != 2 {
		t.Fatalf("alpha logged %v, want one warning per distinct bad metadata", r)
	}
	good, _ := EncodeNodeMeta(NodeMeta{Witness: true})
	d.meta.Store(&good)
	if err := raw.UpdateNode(bound); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alpha to see junk's valid metadata", memberIs(alpha, "junk", StateAlive, func(m Member) bool {
		return m.MetaErr == nil && m.Meta.Witness
	}))
	// The rest of the cluster works on.
	if err := alpha.SetMeta(metaOf("r1", 3)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "beta to see alpha's metadata", memberIs(beta, "alpha", StateAlive, func(m Member) bool {
		return reflect.DeepEqual(m.Meta, metaOf("r1", 3))
	}))
	if err := raw.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alpha to list junk as dead", memberIs(alpha, "junk", StateDead, nil))
}

// The view's state machine, driven through the callbacks memberlist
// makes, without a network.
func TestGossipViewStates(t *testing.T) {
	t.Parallel()
	g, rec := start(t, fastConfig("self", testnet.MustAddr(t)), NodeMeta{})
	d := &delegate{g}
	ip := net.IPv4(127, 0, 0, 1).To4()
	enc := func(m NodeMeta) []byte {
		b, err := EncodeNodeMeta(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	state := func(name string) MemberState {
		m, ok := find(g, name)
		if !ok {
			t.Fatalf("%s not listed: %s", name, describe(g.Members()))
		}
		return m.State
	}
	expect := func(name string, want MemberState) {
		t.Helper()
		if got := state(name); got != want {
			t.Fatalf("%s is %s, want %s", name, got, want)
		}
	}
	signalled := func() bool {
		select {
		case <-g.Changed():
			return true
		default:
			return false
		}
	}
	signalled()

	x := &memberlist.Node{Name: "x", Addr: ip, Port: 1, Meta: enc(metaOf("r0", 1))}
	d.NotifyJoin(x)
	expect("x", StateAlive)
	if !signalled() {
		t.Fatal("no signal for a join")
	}
	g.memberlistLine("Suspect x has failed, no acks received")
	expect("x", StateSuspect)
	if !signalled() {
		t.Fatal("no signal for a suspicion")
	}
	g.memberlistLine("Suspect nobody has failed, no acks received") // unknown: ignored
	g.memberlistLine("Suspect self has failed, no acks received")   // never itself
	expect("self", StateAlive)
	d.NotifyPingComplete(x, time.Millisecond, nil)
	expect("x", StateAlive)
	if !signalled() {
		t.Fatal("no signal for the end of a suspicion")
	}
	g.memberlistLine("Suspect x has failed, no acks received")
	d.NotifyUpdate(x) // an update is an alive message: the suspicion is over
	expect("x", StateAlive)
	d.NotifyLeave(x)
	expect("x", StateDead)
	g.memberlistLine("Suspect x has failed, no acks received") // only alive nodes become suspect
	expect("x", StateDead)
	d.NotifyPingComplete(x, time.Millisecond, nil)
	expect("x", StateDead)
	d.NotifyJoin(x)
	expect("x", StateAlive)
	x.Meta = enc(NodeMeta{Leaving: true})
	d.NotifyUpdate(x)
	d.NotifyLeave(x)
	expect("x", StateLeft)

	// Bad metadata: listed with MetaErr, logged once per distinct value;
	// a node with bad metadata that goes away is dead.
	y := &memberlist.Node{Name: "y", Addr: ip, Port: 2, Meta: []byte{1, 4, 0}}
	d.NotifyJoin(y)
	d.NotifyUpdate(y)
	y.Meta = []byte{1, 0, 1}
	d.NotifyUpdate(y)
	d.NotifyUpdate(y)
	if r := rec.records("undecodable node metadata"); len(r) != 2 {
		t.Fatalf("logged %v, want 2 warnings", r)
	}
	m, _ := find(g, "y")
	if !errors.Is(m.MetaErr, ErrBadMeta) || !strings.Contains(m.MetaErr.Error(), "volume 0 of 1 name length missing") {
		t.Fatalf("y listed with %v", m.MetaErr)
	}
	d.NotifyLeave(y)
	expect("y", StateDead)

	// Members returns copies.
	d.NotifyJoin(&memberlist.Node{Name: "z", Addr: ip, Port: 3, Meta: enc(metaOf("r0", 1))})
	ms := g.Members()
	ms[3].Meta.Volumes[0].Term = 99
	if m, _ := find(g, "z"); m.Meta.Volumes[0].Term != 1 {
		t.Fatal("Members shares the Volumes slice with the view")
	}
	if got := names(g.Members()); !reflect.DeepEqual(got, []string{"self", "x", "y", "z"}) {
		t.Fatalf("Members lists %v, want self, x, y, z", got)
	}
}

// One node on its own: SetMeta errors, messages to itself, Leave, and
// Shutdown.
func TestGossipSingleNode(t *testing.T) {
	t.Parallel()
	addr := testnet.MustAddr(t)
	g, _ := start(t, fastConfig("solo", addr), metaOf("r0", 1))
	ms := g.Members()
	if len(ms) != 1 || ms[0].Name != "solo" || ms[0].Addr != addr || ms[0].State != StateAlive ||
		!reflect.DeepEqual(ms[0].Meta, metaOf("r0", 1)) || ms[0].MetaErr != nil {
		t.Fatalf("a lone node lists %s", describe(ms))
	}
	for len(g.Changed()) > 0 {
		<-g.Changed()
	}
	if err := g.SetMeta(metaOf("r0", 1)); err != nil {
		t.Fatal(err)
	}
	if len(g.Changed()) != 0 {
		t.Fatal("setting the metadata already set signalled a change")
	}
	err := g.SetMeta(NodeMeta{Volumes: []VolumeMeta{{Name: "b"}, {Name: "a"}}})
	if !errors.Is(err, ErrBadMeta) || !strings.Contains(err.Error(), "SetMeta") || !strings.Contains(err.Error(), `volume "a" after "b"`) {
		t.Fatalf("SetMeta of unsorted volumes: %v", err)
	}
	err = g.SetMeta(sizedMeta(t, 600))
	if !errors.Is(err, ErrBadMeta) || !strings.Contains(err.Error(), "node metadata is 600 bytes, memberlist allows 512") {
		t.Fatalf("SetMeta of a meta too big: %v", err)
	}
	if m, _ := find(g, "solo"); !reflect.DeepEqual(m.Meta, metaOf("r0", 1)) {
		t.Fatalf("a failed SetMeta changed the metadata to %+v", m.Meta)
	}
	if err := g.Send("solo", []byte("hello me")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-g.Messages():
		if m.From != "solo" || string(m.Payload) != "hello me" {
			t.Fatalf("received %+v", m)
		}
	case <-time.After(bound):
		t.Fatal("nothing received")
	}
	// Messages never read are dropped by Shutdown: the deliverer holds
	// the first, the second waits in the queue.
	for _, p := range []string{"unread 1", "unread 2"} {
		if err := g.Send("solo", []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a message in the queue", func() (bool, string) {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.queue) > 0, fmt.Sprintf("%d queued", len(g.queue))
	})
	if err := g.Leave(0); err == nil || !strings.Contains(err.Error(), "Leave timeout 0s, want > 0") {
		t.Fatalf("Leave(0): %v", err)
	}
	if err := g.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	if m, _ := find(g, "solo"); m.State != StateLeft {
		t.Fatalf("after Leave the node lists itself as %s", m.State)
	}
	if err := g.Send("solo", nil); err == nil || !strings.Contains(err.Error(), `Send to "solo": the member is left`) {
		t.Fatalf("Send to itself after Leave: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := g.Shutdown(); err != nil {
			t.Fatalf("Shutdown %d: %v", i+1, err)
		}
	}
	for range g.Changed() {
	}
	for m := range g.Messages() {
		t.Fatalf("received %+v after Shutdown", m)
	}
	for what, err := range map[string]error{
		"SetMeta": g.SetMeta(NodeMeta{}),
		"Send":    g.Send("solo", nil),
		"Leave":   g.Leave(time.Second),
	} {
		if err == nil || !strings.Contains(err.Error(), "after Shutdown") {
			t.Errorf("%s after Shutdown: %v", what, err)
		}
	}
}

func TestGossipConfigErrors(t *testing.T) {
	t.Parallel()
	taken := testnet.MustAddr(t)
	l, err := net.Listen("tcp", taken)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		name   string
		change func(*GossipConfig)
		meta   NodeMeta
		want   string
	}{
		{"empty cluster", func(c *GossipConfig) { c.Cluster = "" }, NodeMeta{}, `Cluster "": length 0, want 1 to 255 bytes`},
		{"long cluster", func(c *GossipConfig) { c.Cluster = strings.Repeat("c", 256) }, NodeMeta{}, "length 256, want 1 to 255 bytes"},
		{"empty node", func(c *GossipConfig) { c.Node = "" }, NodeMeta{}, `Node "": length 0, want 1 to 64`},
		{"node with newline", func(c *GossipConfig) { c.Node = "a\nb" }, NodeMeta{}, `Node "a\nb": "a\nb" contains the control character U+000A`},
		{"bind without port", func(c *GossipConfig) { c.Bind = "127.0.0.1" }, NodeMeta{}, `Bind "127.0.0.1": address 127.0.0.1: missing port`},
		{"bind host name", func(c *GossipConfig) { c.Bind = "localhost:7946" }, NodeMeta{}, `Bind "localhost:7946": host "localhost" is not a literal IP address`},
		{"bind port 0", func(c *GossipConfig) { c.Bind = "127.0.0.1:0" }, NodeMeta{}, `Bind "127.0.0.1:0": port "0" is not a number from 1 to 65535`},
		{"bind port too big", func(c *GossipConfig) { c.Bind = "127.0.0.1:65536" }, NodeMeta{}, `port "65536" is not a number`},
		{"bind unspecified", func(c *GossipConfig) { c.Bind = "0.0.0.0:7946" }, NodeMeta{}, `Bind "0.0.0.0:7946": 0.0.0.0 is not a specific address`},
		{"bind unspecified v6", func(c *GossipConfig) { c.Bind = "[::]:7946" }, NodeMeta{}, `:: is not a specific address`},
		{"seed host name", func(c *GossipConfig) { c.Seeds = []string{"127.0.0.1:7000", "db1.example:7946"} }, NodeMeta{},
			`seed "db1.example:7946": host "db1.example" is not a literal IP address`},
		{"short secret", func(c *GossipConfig) { c.Secret = []byte("fifteen bytes!!") }, NodeMeta{}, "Secret is 15 bytes, want at least 16"},
		{"negative probe interval", func(c *GossipConfig) { c.ProbeInterval = -time.Second }, NodeMeta{}, "ProbeInterval -1s is negative"},
		{"negative gossip interval", func(c *GossipConfig) { c.GossipInterval = -1 }, NodeMeta{}, "GossipInterval -1ns is negative"},
		{"probe timeout too long", func(c *GossipConfig) { c.ProbeTimeout = c.ProbeInterval }, NodeMeta{}, "ProbeTimeout 100ms is not below ProbeInterval 100ms"},
		{"default probe interval", func(c *GossipConfig) { c.ProbeInterval, c.ProbeTimeout = 0, 2*time.Second }, NodeMeta{},
			"ProbeTimeout 2s is not below ProbeInterval 1s"},
		{"negative suspicion", func(c *GossipConfig) { c.SuspicionMult = -1 }, NodeMeta{}, "SuspicionMult -1 is negative"},
		{"bad meta", func(*GossipConfig) {}, NodeMeta{Volumes: []VolumeMeta{{Name: "a", Disk: 9}}}, `node metadata: failover: malformed node metadata: volume "a": disk 9`},
		{"address in use", func(c *GossipConfig) { c.Bind = taken }, NodeMeta{}, "failover: gossip on " + taken + ": "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fastConfig("n", "127.0.0.1:1")
			tc.change(&cfg)
			g, err := StartGossip(cfg, tc.meta)
			if err == nil {
				g.Shutdown()
				t.Fatalf("started; want an error with %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
	// Defaults, and the seed list's clean-up.
	cfg := GossipConfig{Cluster: "c", Node: "n", Bind: "10.0.0.1:7946", Secret: testSecret,
		Seeds: []string{"10.0.0.1:7946", "10.0.0.2:7946", "[::ffff:10.0.0.2]:7946", "[fe80::1]:7946"}}
	_, _, seeds, err := checkGossipConfig(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(seeds, []string{"10.0.0.2:7946", "[fe80::1]:7946"}) {
		t.Fatalf("seeds %q: want itself and duplicates left out", seeds)
	}
	if cfg.ProbeInterval != time.Second || cfg.ProbeTimeout != 500*time.Millisecond ||
		cfg.GossipInterval != 200*time.Millisecond || cfg.SuspicionMult != 4 {
		t.Fatalf("defaults: %+v", cfg)
	}
}

// The key derivation's test vector (docs/format/gossip.md), as
// printf 'blkrep gossip key v1\0correct horse battery staple' | sha256sum
// computes it.
func TestGossipKey(t *testing.T) {
	want := "29cfb6c5ff081ee50f09d91f4171a0889ef942f16893f29c5887c062bbc28f58"
	if got := hex.EncodeToString(gossipKey(testSecret)); got != want {
		t.Fatalf("key %s, want %s", got, want)
	}
}

func TestEnvelope(t *testing.T) {
	b := envelope("alpha", []byte{0xde, 0xad})
	if want := []byte{1, 5, 'a', 'l', 'p', 'h', 'a', 0xde, 0xad}; !bytes.Equal(b, want) {
		t.Fatalf("envelope % x, want % x", b, want)
	}
	from, p, err := openEnvelope(b)
	if err != nil || from != "alpha" || !bytes.Equal(p, []byte{0xde, 0xad}) {
		t.Fatalf("opened %q % x, %v", from, p, err)
	}
	if from, p, err := openEnvelope([]byte{1, 1, 'a'}); err != nil || from != "a" || len(p) != 0 {
		t.Fatalf("empty payload: %q % x, %v", from, p, err)
	}
	for _, tc := range []struct {
		b    []byte
		want string
	}{
		{nil, "user message of 0 bytes, at least 2"},
		{[]byte{1}, "user message of 1 bytes, at least 2"},
		{[]byte{2, 1, 'a'}, "user message version 2, want 1"},
		{[]byte{1, 0}, "sender name: length 0, want 1 to 64"},
		{[]byte{1, 3, 'a', 'b'}, "sender name of 3 bytes, 2 left"},
		{[]byte{1, 1, 0x07}, "control character U+0007"},
		{append([]byte{1, 1, 'a'}, make([]byte, MaxMessage+1)...), `user message from "a": payload of 1048577 bytes, at most 1048576`},
	} {
		if _, _, err := openEnvelope(tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("% .8x: error %v, want %q", tc.b, err, tc.want)
		}
	}
}
