package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blkrep/blkrep/failover"
	"github.com/blkrep/blkrep/internal/config"
	"github.com/blkrep/blkrep/internal/testnet"
)

// two_node = true: alpha and beta without a witness. When alpha dies,
// beta runs the fence-peer handler (BLKREP_PEER=alpha); exit 7 (powered
// off) lets it take over; the first attempt exits 5 (peer unreachable)
// and must not.
func TestDaemonTwoNode(t *testing.T) {
	dir := t.TempDir()
	fence := filepath.Join(dir, "fence.sh")
	script := "#!/bin/sh\necho \"$BLKREP_NODE fences $BLKREP_PEER\" >> " + dir + "/fenced\n" +
		"[ -e " + dir + "/allow ] && exit 7\ntouch " + dir + "/allow\nexit 5\n"
	if err := os.WriteFile(fence, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf(`
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

[[volume]]
name = "r0"
size = "4MiB"
connect_interval = "1s"
two_node = true
fence_peer = %q

  [[volume.replica]]
  node = "alpha"
  disk = "alpha-r0.img"
  create = true

  [[volume.replica]]
  node = "beta"
  disk = "beta-r0.img"
  create = true
`, testnet.MustAddr(t), testnet.MustAddr(t), testnet.MustAddr(t), testnet.MustAddr(t), fence)
	path := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ds := map[string]*Daemon{}
	for _, n := range []string{"alpha", "beta"} {
		d, err := New(cfg, n, Options{NoDevices: true, Log: testDaemonLog(n)})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Start(); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		ds[n] = d
		t.Cleanup(func() { d.Shutdown(context.Background()) })
	}
	wait := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %s waiting for %s", d, what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	a, b := ds["alpha"].volumes[0], ds["beta"].volumes[0]
	accepting := func(v *replica) bool { return v.vol.Primary() && v.gate.Mode().String() == "accept" }
	wait("alpha Primary and accepting", 20*time.Second, func() bool { return accepting(a) })
	wait("beta in sync", 20*time.Second, func() bool {
		p := a.rep.Peers()[0]
		return p.Replication == "Established" && p.Disk == "UpToDate"
	})
	wait("beta's voter to record beta in sync", 20*time.Second, func() bool {
		st, found, err := failover.LoadState(ds["beta"].statePath("r0"), "t", "r0", "beta")
		return err == nil && found && st.Voter.Primary == "alpha" && len(st.Voter.Outdated) == 0
	})
	block := make([]byte, 4096)
	copy(block, "acknowledged by alpha")
	if _, err := a.rep.WriteAt(block, 8192); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	ds["alpha"].runner.Close()
	ds["alpha"].gossip.Shutdown()
	ds["alpha"].Shutdown(context.Background())
	wait("beta accepting", 30*time.Second, func() bool { return accepting(b) })
	t.Logf("beta accepts writes %v after alpha died (one failed fence attempt first)", time.Since(killed).Round(10*time.Millisecond))
	got, _ := os.ReadFile(filepath.Join(dir, "fenced"))
	if string(got) != "beta fences alpha\nbeta fences alpha\n" {
		t.Fatalf("fence-peer runs: %q, want two by beta against alpha", got)
	}
	buf := make([]byte, 4096)
	if _, err := b.rep.ReadAt(buf, 8192); err != nil || string(buf[:21]) != "acknowledged by alpha" {
		t.Fatalf("beta lacks alpha's acknowledged write: %q, %v", buf[:21], err)
	}
}
