package qemu

import (
	"strings"
	"testing"
	"time"
)

// Scenario 1, on both kernels: blkrepd alone attaches /dev/nbd0 through
// netlink; mkfs.ext4, mount, files with checksums, sync, unmount, e2fsck
// -fn clean, remount, verify; kill -9 of the daemon while mounted and
// writing, restart, the device re-attaches and the blocked write completes;
// BLKDISCARD and BLKZEROOUT (WRITE_ZEROES on 6.12); a stalled daemon;
// SIGTERM detaches; a clean kernel log; then the nbd/kernel package's own
// smoke test. The steps live in guest/standalone.sh, which prints one
// "VMSMOKE STEP id: PASS|FAIL" marker per step: every step must pass.
func TestStandalone(t *testing.T) {
	steps := []string{"0", "1", "2", "3", "4", "stall", "5", "6", "klog", "pkg"}
	for _, series := range []string{"6.1", "6.12"} {
		t.Run(series, func(t *testing.T) {
			t.Parallel()
			c := NewCluster(t, image(t, series))
			n := c.AddNode("alpha", NodeOptions{MemoryMiB: 512})
			c.Start()
			p := n.Spawn("standalone.sh", "sh /standalone.sh")
			code, ok := p.Wait(5 * time.Minute)
			lines := p.Lines()
			var out strings.Builder
			for _, l := range lines {
				out.WriteString(l.Text + "\n")
			}
			if !ok {
				p.Signal(9)
				t.Fatalf("standalone.sh still running after 5 minutes:\n%s", out.String())
			}
			failed := code != 0
			for _, s := range steps {
				marker := "VMSMOKE STEP " + s + ": "
				found := ""
				for _, l := range lines {
					if strings.HasPrefix(l.Text, marker) {
						found = l.Text
						break
					}
				}
				switch {
				case strings.HasPrefix(found, marker+"PASS"):
					t.Logf("%s", found)
				case found == "":
					t.Errorf("step %s did not run", s)
					failed = true
				default:
					t.Errorf("%s", found)
					failed = true
				}
			}
			if failed {
				t.Fatalf("standalone.sh exited %d; its output:\n%s", code, out.String())
			}
		})
	}
}
