package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/config"
	"github.com/blkrep/blkrep/internal/control"
	"github.com/blkrep/blkrep/internal/daemon"
	"github.com/blkrep/blkrep/internal/testnet"
)

var voters = []string{"alpha", "beta", "witness"}

func failoverNode(node string, witness bool, states ...string) *control.Gossip {
	g := &control.Gossip{Address: "10.0.0.9:7946", Witness: witness}
	for i, n := range voters {
		g.Members = append(g.Members, control.Member{Name: n, Address: "10.0.0.1:7946", State: states[i], Witness: n == "witness"})
	}
	return g
}

func TestPrintStatusFailover(t *testing.T) {
	primary := control.Status{Node: "beta", Cluster: "t", Version: "1", PID: 1,
		Gossip: failoverNode("beta", false, "dead", "alive", "alive"),
		Volumes: []control.Volume{{Name: "r0", Role: "Primary", Connection: "Connecting", Protocol: "C",
			Disk: control.Disk{State: "UpToDate"}, Device: control.Device{State: "none"},
			Failover: &control.Failover{Term: 3, Primary: "beta", IsPrimary: true, Accepting: true, Writes: "accept",
				Quorum: true, Voters: voters, VotersCounted: voters, VotersSeen: []string{"beta", "witness"},
				OutdatedPeers: []string{"alpha"}, OutdatedConfirmed: []string{"alpha"}, DataTerm: 3,
				Why: "primary of term 3 with a majority lease"}}}}
	holding := control.Status{Node: "beta", Gossip: failoverNode("beta", false, "suspect", "alive", "dead"),
		Volumes: []control.Volume{{Name: "r0", Role: "Primary", Failover: &control.Failover{Term: 3, Primary: "beta",
			IsPrimary: true, Writes: "hold", WritesWaiting: 7, Voters: voters, VotersCounted: voters, VotersSeen: []string{"beta"},
			OutdatedPeers: []string{"alpha"}, DataTerm: 3, Why: "primary of term 3 lost its majority lease: writes held"}}}}
	secondary := control.Status{Node: "alpha", Gossip: failoverNode("alpha", false, "alive", "alive", "left"),
		Volumes: []control.Volume{{Name: "r0", Role: "Secondary", Failover: &control.Failover{Term: 3, Primary: "beta",
			Writes: "fail", Quorum: true, Voters: voters, VotersCounted: []string{"alpha", "beta"},
			VotersSeen: []string{"alpha", "beta"}, DataTerm: 3}}}}
	witness := control.Status{Node: "witness", Volumes: []control.Volume{}, Gossip: failoverNode("witness", true, "dead", "alive", "alive"),
		WitnessVolumes: []control.WitnessVolume{{Name: "r0", Failover: control.Failover{Term: 3, Primary: "beta",
			Quorum: true, Voters: voters, VotersCounted: voters, VotersSeen: []string{"beta", "witness"}, Why: "following beta"}}}}
	unknown := control.Status{Node: "alpha", Volumes: []control.Volume{{Name: "r0", Role: "Secondary",
		Failover: &control.Failover{Writes: "hold", Voters: voters, VotersCounted: voters, VotersSeen: []string{"alpha"}}}}}
	cases := []struct {
		name string
		st   control.Status
		want []string
		not  []string
	}{
		{"primary", primary, []string{
			"\ngossip   10.0.0.9:7946: alpha DEAD, beta alive (this node), witness alive (witness)\n",
			"\nr0  role:Primary  disk:UpToDate  connection:Connecting  protocol:C\n" +
				"    failover term 3, primary beta (this node), accepting writes, quorum 2/3 (beta witness; alpha DEAD)\n" +
				"             data term 3, outdated peers: alpha (confirmed: cannot be promoted until resynced)\n" +
				"             why: primary of term 3 with a majority lease\n",
		}, []string{"witness  this node"}},
		{"holding", holding, []string{
			"gossip   10.0.0.9:7946: alpha SUSPECT, beta alive (this node), witness DEAD (witness)\n",
			"    failover term 3, primary beta (this node), HOLDING writes (7 waiting), NO QUORUM 1/3 (beta; alpha SUSPECT; witness DEAD)\n",
			"outdated peers: alpha (NOT YET CONFIRMED by a majority: writes it misses wait)\n",
			"why: primary of term 3 lost its majority lease: writes held\n",
		}, nil},
		{"secondary", secondary, []string{
			"    failover term 3, primary beta, quorum 2/2 (alpha beta; witness left)\n             data term 3\n",
		}, []string{"accepting writes", "HOLDING", "why:"}},
		{"witness", witness, []string{
			"gossip   10.0.0.9:7946: alpha DEAD, beta alive, witness alive (this node, witness)\n" +
				"witness  this node votes in failover elections and holds no data\n",
			"\nr0  witness: votes, no replica on this node\n" +
				"    failover term 3, primary beta, quorum 2/3 (beta witness; alpha DEAD)\n" +
				"             why: following beta\n",
		}, []string{"data term", "role:"}},
		{"nothing known, no gossip", unknown, []string{
			"    failover term 0, no primary known, NO QUORUM 1/3 (alpha; beta UNREACHABLE; witness UNREACHABLE)\n             data term 0\n",
		}, []string{"gossip"}},
	}
	for _, c := range cases {
		var b bytes.Buffer
		printStatus(&b, &c.st)
		out := b.String()
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q:\n%s", c.name, w, out)
			}
		}
		for _, n := range c.not {
			if strings.Contains(out, n) {
				t.Errorf("%s: output has %q:\n%s", c.name, n, out)
			}
		}
		if testing.Verbose() {
			t.Logf("%s:\n%s", c.name, out)
		}
	}

	// Without failover nothing of it shows.
	var b bytes.Buffer
	printStatus(&b, &control.Status{Node: "alpha", Volumes: []control.Volume{{Name: "r0", Role: "Primary"}}})
	for _, n := range []string{"failover", "gossip", "witness", "quorum"} {
		if strings.Contains(b.String(), n) {
			t.Errorf("a status without failover shows %q:\n%s", n, b.String())
		}
	}
}

func TestFormatFailoverEvent(t *testing.T) {
	at := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	e := control.Event{Seq: 9, Time: at, Volume: "r0", Kind: control.EventFailover,
		Message: "term 2 -> 3, primary alpha -> beta (this node), this node became primary, holding writes; why: elected for term 3"}
	want := "2026-11-21T10:00:00Z r0 failover: term 2 -> 3, primary alpha -> beta (this node), this node became primary, holding writes; why: elected for term 3"
	if got := formatEvent(e); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	e = control.Event{Time: at, Volume: "r0", Kind: control.EventFailoverHandler, New: "after-promote", Message: "/usr/local/bin/mount-it"}
	want = "2026-11-21T10:00:00Z r0 failover-handler after-promote: /usr/local/bin/mount-it"
	if got := formatEvent(e); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// blkrep status against three real daemons with automatic failover: the
// primary, and the witness listing the volume it votes for.
func TestStatusFailoverCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three daemons")
	}
	dir := t.TempDir()
	conf := fmt.Sprintf(`
[cluster]
name = "t"
secret = "failover-test-secret-0123456789"
failover = true

[[node]]
name = "alpha"
control_socket = "alpha.ctl"
address = %q
gossip = %q

[[node]]
name = "beta"
control_socket = "beta.ctl"
address = %q
gossip = %q

[[node]]
name = "witness"
control_socket = "witness.ctl"
gossip = %q
witness = true

[[volume]]
name = "r0"
size = "4MiB"
connect_interval = "1s"

  [[volume.replica]]
  node = "alpha"
  disk = "alpha-r0.img"
  create = true

  [[volume.replica]]
  node = "beta"
  disk = "beta-r0.img"
  create = true
`, testnet.MustAddr(t), testnet.MustAddr(t), testnet.MustAddr(t), testnet.MustAddr(t), testnet.MustAddr(t))
	cfgPath := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range voters {
		d, err := daemon.New(cfg, n, daemon.Options{NoDevices: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Start(); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		t.Cleanup(func() { d.Shutdown(context.Background()) })
	}
	statusOf := func(node string) (control.Status, string) {
		t.Helper()
		code, out, stderr := runCLI("--config", cfgPath, "--node", node, "status", "--json")
		var st control.Status
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			t.Fatalf("%s: status --json: %d %s %s", node, code, out, stderr)
		}
		return st, out
	}
	settled := func(st control.Status, f *control.Failover) bool {
		if f == nil || f.Primary != "alpha" || f.Term == 0 || !f.Quorum || len(f.VotersSeen) != 3 || st.Gossip == nil {
			return false
		}
		for _, m := range st.Gossip.Members {
			if m.State != "alive" {
				return false
			}
		}
		return len(st.Gossip.Members) == 3
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		a, aj := statusOf("alpha")
		w, wj := statusOf("witness")
		if len(a.Volumes) == 1 && len(w.WitnessVolumes) == 1 && settled(a, a.Volumes[0].Failover) &&
			a.Volumes[0].Failover.Accepting && settled(w, &w.WitnessVolumes[0].Failover) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("failover did not settle within 30 s:\nalpha %s\nwitness %s", aj, wj)
		}
		time.Sleep(100 * time.Millisecond)
	}
	a, aj := statusOf("alpha")
	term := a.Volumes[0].Failover.Term
	for _, k := range []string{`"failover": {`, `"is_primary": true`, `"writes": "accept"`, `"gossip": {`, `"state": "alive"`} {
		if !strings.Contains(aj, k) {
			t.Errorf("alpha's status --json lacks %s:\n%s", k, aj)
		}
	}
	code, out, _ := runCLI("--config", cfgPath, "--node", "alpha", "status")
	for _, want := range []string{
		"\ngossip   " + a.Gossip.Address + ": alpha alive (this node), beta alive, witness alive (witness)\n",
		fmt.Sprintf("    failover term %d, primary alpha (this node), accepting writes, quorum 3/3 (alpha beta witness)\n", term),
		fmt.Sprintf("             data term %d", term),
		"             why: ",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("alpha's status lacks %q:\n%s", want, out)
		}
	}
	if testing.Verbose() {
		t.Logf("blkrep status on alpha:\n%s\nblkrep status --json on alpha:\n%s", out, aj)
	}
	code, out, _ = runCLI("--config", cfgPath, "--node", "witness", "status")
	for _, want := range []string{
		"witness alive (this node, witness)\nwitness  this node votes in failover elections and holds no data\n",
		fmt.Sprintf("\nr0  witness: votes, no replica on this node\n    failover term %d, primary alpha, quorum 3/3 (alpha beta witness)\n", term),
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("the witness's status lacks %q:\n%s", want, out)
		}
	}
	if testing.Verbose() {
		t.Logf("blkrep status on the witness:\n%s", out)
	}
}
