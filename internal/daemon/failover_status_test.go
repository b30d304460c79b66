package daemon

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blkrep/blkrep/failover"
	"github.com/blkrep/blkrep/internal/control"
)

// What the operator sees of automatic failover: the failover part of the
// status (on the primary, the secondary and the witness, through the
// control socket), the "failover" events and the metrics, before and after
// the primary dies.
func TestDaemonFailoverStatus(t *testing.T) {
	c := startFailoverCluster(t, foOptions{Metrics: true})
	ds, evs, metrics := c.ds, c.events, c.metrics
	// failover returns node's failover state of r0 as the control socket
	// sends it (a witness's from witness_volumes), with the whole status.
	failoverOf := func(node string) (*control.Failover, *control.Status) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := control.NewClient(ds[node].node.ControlSocket).Status(ctx)
		if err != nil {
			t.Fatalf("%s: status: %v", node, err)
		}
		for i := range st.Volumes {
			if st.Volumes[i].Name == "r0" {
				return st.Volumes[i].Failover, st
			}
		}
		for i := range st.WitnessVolumes {
			if st.WitnessVolumes[i].Name == "r0" {
				return &st.WitnessVolumes[i].Failover, st
			}
		}
		return nil, st
	}
	wait := func(what string, d time.Duration, cond func() bool, show func() any) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %s waiting for %s: %+v", d, what, show())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	members := func(st *control.Status) map[string]string {
		out := map[string]string{}
		if st.Gossip != nil {
			for _, m := range st.Gossip.Members {
				out[m.Name] = m.State
			}
		}
		return out
	}
	voters := []string{"alpha", "beta", "witness"}

	// alpha, the preferred node, becomes primary and accepts writes, with
	// every voter seen; beta is in sync, so nobody is outdated any more.
	var af *control.Failover
	var ast *control.Status
	wait("alpha's status: primary, accepting, quorum 3/3, nobody outdated", 30*time.Second, func() bool {
		af, ast = failoverOf("alpha")
		return af != nil && af.IsPrimary && af.Accepting && af.Writes == "accept" && af.Quorum &&
			len(af.VotersSeen) == 3 && len(af.OutdatedPeers) == 0
	}, func() any { return af })
	if af.Term == 0 || af.Primary != "alpha" || af.DataTerm != af.Term || af.Why == "" || af.WritesWaiting != 0 ||
		!slices.Equal(af.Voters, voters) || !slices.Equal(af.VotersCounted, voters) || !slices.Equal(af.VotersSeen, voters) {
		t.Errorf("alpha's failover status: %+v", af)
	}
	if af.OutdatedPeers == nil || af.OutdatedConfirmed == nil {
		t.Errorf("alpha: outdated lists are null, not []: %+v", af)
	}
	if ast.Gossip == nil || ast.Gossip.Witness || ast.Gossip.Address != ds["alpha"].node.Gossip || len(ast.WitnessVolumes) != 0 {
		t.Errorf("alpha's gossip: %+v, witness volumes %+v", ast.Gossip, ast.WitnessVolumes)
	}
	term := af.Term

	var bf *control.Failover
	wait("beta's status: secondary following alpha", 20*time.Second, func() bool {
		bf, _ = failoverOf("beta")
		return bf != nil && bf.Primary == "alpha" && bf.Term == term && bf.Quorum
	}, func() any { return bf })
	if bf.IsPrimary || bf.Accepting || bf.Writes == "accept" || bf.Writes == "" {
		t.Errorf("beta's failover status: %+v", bf)
	}

	// The witness holds no replica: its volume is in witness_volumes.
	var wf *control.Failover
	var wst *control.Status
	wait("the witness's status", 20*time.Second, func() bool {
		wf, wst = failoverOf("witness")
		m := members(wst)
		return wf != nil && wf.Primary == "alpha" && wf.Term == term && wf.Quorum && len(wf.VotersSeen) == 3 &&
			m["alpha"] == "alive" && m["beta"] == "alive" && m["witness"] == "alive"
	}, func() any { return wst })
	if len(wst.Volumes) != 0 || len(wst.WitnessVolumes) != 1 || wf.IsPrimary || wf.Accepting || wf.Writes != "" ||
		wf.DataTerm != 0 || !slices.Equal(wf.Voters, voters) || !wst.Gossip.Witness {
		t.Errorf("the witness's status: %+v", wst)
	}
	for _, g := range wst.Gossip.Members {
		if g.Witness != (g.Name == "witness") || g.Address == "" || g.Error != "" {
			t.Errorf("the witness's member %+v", g)
		}
	}

	// Events: alpha told how it became primary.
	var got []string
	wantEvent := func(node string, want ...string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case e := <-evs[node]:
				if e.Kind != control.EventFailover {
					continue
				}
				got = append(got, e.Message)
				if e.Volume != "r0" || e.Message == "" {
					t.Errorf("%s: failover event %+v", node, e)
				}
				ok := true
				for _, w := range want {
					ok = ok && strings.Contains(e.Message, w)
				}
				if ok {
					return
				}
			case <-timeout:
				t.Fatalf("%s: no failover event with %q; got %q", node, want, got)
			}
		}
	}
	wantEvent("alpha", "this node became primary")
	wantEvent("alpha", "accepting writes")

	// Metrics: the figures of the status, by volume.
	text := scrape(t, metrics["alpha"])
	for _, want := range []string{
		fmt.Sprintf(`blkrep_failover_term{node="alpha",volume="r0"} %d`, term),
		`blkrep_failover_primary{node="alpha",volume="r0"} 1`,
		`blkrep_failover_accepting{node="alpha",volume="r0"} 1`,
		`blkrep_failover_quorum{node="alpha",volume="r0"} 1`,
		`blkrep_failover_outdated_peers{node="alpha",volume="r0"} 0`,
		`blkrep_failover_write_gate{mode="accept",node="alpha",volume="r0"} 1`,
		`blkrep_failover_voters_seen{node="alpha",volume="r0"} 3`,
		`blkrep_gossip_members{node="alpha",state="alive"} 3`,
		`blkrep_gossip_members{node="alpha",state="dead"} 0`,
	} {
		if !hasLine(text, want) {
			t.Errorf("alpha: no line %s", want)
		}
	}
	text = scrape(t, metrics["witness"])
	for _, want := range []string{
		fmt.Sprintf(`blkrep_failover_term{node="witness",volume="r0"} %d`, term),
		`blkrep_failover_primary{node="witness",volume="r0"} 0`,
		`blkrep_failover_quorum{node="witness",volume="r0"} 1`,
	} {
		if !hasLine(text, want) {
			t.Errorf("witness: no line %s", want)
		}
	}
	if strings.Contains(text, "blkrep_failover_write_gate") || strings.Contains(text, "blkrep_volume_role") {
		t.Errorf("the witness reports a write gate or a replica:\n%s", text)
	}
	if t.Failed() {
		t.FailNow()
	}

	// alpha dies (its gossip stops without leaving): beta takes over in a
	// newer term, sees alpha dead, and outdates it.
	ds["alpha"].runner.Close()
	ds["alpha"].gossip.Shutdown()
	ds["alpha"].Shutdown(context.Background())
	var bst *control.Status
	wait("beta's status: primary of a newer term, alpha dead and outdated", 60*time.Second, func() bool {
		bf, bst = failoverOf("beta")
		return bf != nil && bf.IsPrimary && bf.Accepting && bf.Writes == "accept" && bf.Term > term &&
			slices.Equal(bf.OutdatedConfirmed, []string{"alpha"}) && members(bst)["alpha"] == "dead"
	}, func() any { return bf })
	if bf.Primary != "beta" || !bf.Quorum || !slices.Equal(bf.VotersSeen, []string{"beta", "witness"}) ||
		!slices.Equal(bf.VotersCounted, voters) || !slices.Equal(bf.OutdatedPeers, []string{"alpha"}) || bf.DataTerm != bf.Term {
		t.Errorf("beta's failover status after the takeover: %+v", bf)
	}
	wantEvent("beta", "this node became primary", fmt.Sprintf("-> %d", bf.Term))
	text = scrape(t, metrics["beta"])
	for _, want := range []string{
		fmt.Sprintf(`blkrep_failover_term{node="beta",volume="r0"} %d`, bf.Term),
		`blkrep_failover_primary{node="beta",volume="r0"} 1`,
		`blkrep_failover_accepting{node="beta",volume="r0"} 1`,
		`blkrep_failover_outdated_peers{node="beta",volume="r0"} 1`,
		`blkrep_failover_voters_seen{node="beta",volume="r0"} 2`,
		`blkrep_failover_voters_counted{node="beta",volume="r0"} 3`,
		`blkrep_gossip_members{node="beta",state="dead"} 1`,
	} {
		if !hasLine(text, want) {
			t.Errorf("beta: no line %s", want)
		}
	}
	if testing.Verbose() {
		t.Logf("failover events seen:\n%s", strings.Join(got, "\n"))
	}
	wait("the witness to follow beta", 20*time.Second, func() bool {
		wf, _ = failoverOf("witness")
		return wf != nil && wf.Primary == "beta" && wf.Term == bf.Term
	}, func() any { return wf })
}

// The events' messages, from the runner's status changes.
func TestFailoverChange(t *testing.T) {
	sec := failover.VolumeStatus{Volume: "r0", Term: 2, Primary: "alpha", DataTerm: 2, Quorum: true,
		Seen: []string{"alpha", "beta", "witness"}, Why: "following alpha"}
	prim := failover.VolumeStatus{Volume: "r0", Term: 3, Primary: "beta", IsPrimary: true, DataTerm: 3, Quorum: true,
		Seen: []string{"beta", "witness"}, Outdated: []string{"alpha"}, Why: "elected for term 3"}
	acc := prim
	acc.Accepting, acc.Confirmed, acc.Why = true, []string{"alpha"}, "primary of term 3 with a majority lease"
	lost := acc
	lost.Accepting, lost.Quorum, lost.Seen, lost.Why = false, false, []string{"beta"}, "primary of term 3 lost its majority lease: writes held"
	cases := []struct {
		name string
		old  failover.VolumeStatus
		had  bool
		s    failover.VolumeStatus
		want string
	}{
		{"first", failover.VolumeStatus{}, false, sec, "term 2, primary alpha, quorum (sees alpha beta witness), data term 2; why: following alpha"},
		{"first, nothing known", failover.VolumeStatus{}, false, failover.VolumeStatus{Volume: "r0", Seen: []string{"beta"}},
			"term 0, primary none known, NO QUORUM (sees beta)"},
		{"promoted", sec, true, prim, "term 2 -> 3, primary alpha -> beta (this node), this node became primary, holding writes, " +
			"sees beta witness, outdated peers alpha (not yet confirmed), data term 2 -> 3; why: elected for term 3"},
		{"accepting", prim, true, acc, "accepting writes, outdated peers alpha (confirmed); why: primary of term 3 with a majority lease"},
		{"quorum lost", acc, true, lost, "STOPPED accepting writes, NO QUORUM (sees beta); why: primary of term 3 lost its majority lease: writes held"},
		{"only the explanation", acc, true, func() failover.VolumeStatus { s := acc; s.Why = "x"; return s }(), "why: x"},
		{"nothing", acc, true, acc, ""},
		{"stepped down", acc, true, func() failover.VolumeStatus {
			s := acc
			s.Term, s.Primary, s.IsPrimary, s.Accepting, s.Outdated, s.Confirmed, s.Why = 4, "alpha", false, false, nil, nil, ""
			return s
		}(), "term 3 -> 4, primary beta (this node) -> alpha, this node stepped down, STOPPED accepting writes, no outdated peers"},
	}
	for _, c := range cases {
		if got := failoverChange("beta", c.old, c.had, c.s); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}
