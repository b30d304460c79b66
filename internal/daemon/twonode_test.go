package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blkrep/blkrep/failover"
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
	c := startFailoverCluster(t, foOptions{NoWitness: true, VolumeKeys: fmt.Sprintf("two_node = true\nfence_peer = %q\n", fence)})
	ds := c.ds
	wait := func(what string, d time.Duration, cond func() bool) { t.Helper(); waitUntil(t, what, d, cond) }
	a, b := ds["alpha"].volumes[0], ds["beta"].volumes[0]
	wait("alpha Primary and accepting", 20*time.Second, func() bool { return accepting(a) })
	wait("beta in sync", 20*time.Second, func() bool { return peerInSync(a) })
	wait("beta's voter to record beta in sync", 20*time.Second, func() bool {
		st, found, err := failover.LoadState(ds["beta"].statePath("r0"), "t", "r0", "beta")
		return err == nil && found && st.Voter.Primary == "alpha" && len(st.Voter.Outdated) == 0
	})
	block := make([]byte, 4096)
	copy(block, "acknowledged by alpha")
	if _, err := a.rep.WriteAt(block, 8192); err != nil {
		t.Fatal(err)
	}
	killed := c.kill("alpha")
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
