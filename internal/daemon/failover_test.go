package daemon

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/blkrep/blkrep/failover"
	"github.com/blkrep/blkrep/internal/control"
)

// Three daemons (alpha, beta and a witness) with automatic failover:
// alpha, the preferred node, becomes Primary by itself and accepts
// writes; manual role changes are refused; when alpha's daemon dies, beta
// takes over and accepts writes, with the data alpha acknowledged.
func TestDaemonFailover(t *testing.T) {
	// The default profile (probe 1s, timeout 500ms): the fast one's 100 ms
	// probe timeout flaps under a loaded CI machine running every
	// package's tests at once.
	c := startFailoverCluster(t, foOptions{})
	ds := c.ds
	wait := func(what string, d time.Duration, cond func() bool) { t.Helper(); waitUntil(t, what, d, cond) }
	a, b := ds["alpha"].volumes[0], ds["beta"].volumes[0]
	wait("alpha Primary and accepting", 20*time.Second, func() bool {
		return a.vol.Primary() && a.gate.Mode().String() == "accept"
	})
	if b.vol.Primary() {
		t.Fatal("beta is Primary too")
	}
	wait("beta in sync", 20*time.Second, func() bool {
		p := a.rep.Peers()[0]
		return p.Replication == "Established" && p.Disk == "UpToDate"
	})
	// beta counts as in sync for failover once the witness recorded
	// alpha's lease without beta outdated (at promotion beta was not yet
	// connected, so alpha outdated it first).
	wait("the witness to record beta in sync", 20*time.Second, func() bool {
		st, found, err := failover.LoadState(ds["witness"].statePath("r0"), "t", "r0", "witness")
		return err == nil && found && st.Voter.Primary == "alpha" && len(st.Voter.Outdated) == 0
	})
	block := make([]byte, 4096)
	copy(block, "acknowledged by alpha")
	done := make(chan error, 1)
	go func() { _, err := a.rep.WriteAt(block, 8192); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("alpha's write was not acknowledged: gate %s", a.gate)
	}
	// Operator role changes go through the same rules: refused here.
	for _, c := range []struct {
		node string
		req  control.Request
		want string
	}{
		{"beta", controlReq("primary"), "run 'blkrep failover r0 --to beta' on alpha"},
		{"beta", controlReq("secondary"), "beta is not the primary of r0"},
		{"alpha", control.Request{Volume: "r0", Action: "primary", Force: true}, "primary --force would bypass the voters"},
	} {
		if _, err := ds[c.node].Do(context.Background(), c.req); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s %+v: %v, want a refusal with %q", c.node, c.req, err, c.want)
		}
	}

	// alpha dies: its gossip stops without leaving, then its replication.
	killed := c.kill("alpha")
	deadline := time.Now().Add(60 * time.Second)
	for !(b.vol.Primary() && b.gate.Mode().String() == "accept") {
		if time.Now().After(deadline) {
			t.Fatalf("beta did not take over within 60 s: failover %+v, gate %s, members %+v",
				ds["beta"].runner.Status(), b.gate, ds["beta"].gossip.Members())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("beta accepts writes %v after alpha died", time.Since(killed).Round(10*time.Millisecond))
	got := make([]byte, 4096)
	if _, err := b.rep.ReadAt(got, 8192); err != nil {
		t.Fatal(err)
	}
	if string(got[:21]) != "acknowledged by alpha" {
		t.Fatalf("beta lacks alpha's acknowledged write: %q", got[:21])
	}
	go func() { _, err := b.rep.WriteAt(block, 12288); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("beta's write was not acknowledged: gate %s", b.gate)
	}
}

func controlReq(action string) control.Request { return control.Request{Volume: "r0", Action: action} }

func testDaemonLog(node string) *slog.Logger {
	if os.Getenv("DAEMON_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", node)
}
