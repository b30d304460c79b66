package qemu

import (
	"strings"
	"testing"
	"time"
)

// failoverTarget is how soon the secondary must serve writes after the
// primary's power loss: issue 5's target for the default profile is 5 s on
// the host; guests under TCG, three on two cores, get 3 s more.
const failoverTarget = 8 * time.Second

// addFileSum records a "file NAME SHA256" line of blkrep-agent writefiles
// in m; other lines are ignored.
func addFileSum(m map[string]string, line string) {
	if f := strings.Fields(line); len(f) == 3 && f[0] == "file" {
		m[f[1]] = f[2]
	}
}

// fileSums parses the output of blkrep-agent writefiles.
func fileSums(t *testing.T, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		addFileSum(m, l)
	}
	if len(m) == 0 {
		t.Fatalf("writefiles printed no file:\n%s", out)
	}
	return m
}

// checkFiles verifies on n that every file of sums under dir has its
// checksum.
func checkFiles(t *testing.T, n *Node, dir string, sums map[string]string) {
	t.Helper()
	out := n.Run("cd " + dir + " && sha256sum f*")
	got := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			got[f[1]] = f[0]
		}
	}
	bad := 0
	for name, sum := range sums {
		if got[name] != sum {
			if bad++; bad <= 5 {
				t.Errorf("%s: %s/%s: sha256 %q, written %q", n.Name, dir, name, got[name], sum)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%s: %d of %d files lost or damaged", n.Name, bad, len(sums))
	}
	t.Logf("%s: all %d files under %s have their checksums", n.Name, len(sums), dir)
}

// fsckClean mounts the file system (the kernel replays its journal, as it
// would on the node taking over), unmounts it and runs e2fsck -fn, which
// must find nothing.
func fsckClean(t *testing.T, n *Node) {
	t.Helper()
	n.Run("mkdir -p " + mnt + " && mount -t ext4 " + device + " " + mnt + " && umount " + mnt)
	out, code := n.RunCode(e2fsck+" -fn "+device, 2*time.Minute)
	if code != 0 {
		t.Fatalf("%s: e2fsck -fn %s: exit %d:\n%s", n.Name, device, code, out)
	}
	t.Logf("%s: e2fsck -fn clean: %s", n.Name, lastLine(out))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

// Scenarios 2 and 3: power loss of the primary with a mounted file system,
// automatic failover, then the old primary's return.
func TestPowerLoss(t *testing.T) {
	c := replicated(t, Replicated{})
	alpha, beta := c.Node("alpha"), c.Node("beta")

	// 2. mkfs and mount on alpha, write and fsync files, power off alpha.
	alpha.Run(mkfsMount)
	sums := fileSums(t, alpha.Run("blkrep-agent writefiles "+mnt+"/before 32 262144"))
	// Writes in flight at the moment of the power loss: not fsynced, may be
	// lost, must not damage the file system.
	alpha.Spawn("background writes", "blkrep-agent writefiles "+mnt+"/inflight 1000 65536")
	time.Sleep(2 * time.Second)
	down := alpha.PowerOff()
	c.WaitFor("beta Primary", time.Minute, beta.isPrimary)
	took := time.Since(down)
	if took > failoverTarget {
		t.Errorf("beta served writes %.1fs after alpha's power loss; the target is %s", took.Seconds(), failoverTarget)
	}
	t.Logf("failover: beta Primary with %s attached %.1fs after alpha lost power", device, took.Seconds())
	fsckClean(t, beta)
	beta.Run("mount -t ext4 " + device + " " + mnt)
	checkFiles(t, beta, mnt+"/before", sums)

	// 3. Changes while alpha is away; alpha boots again, rejoins as
	// Secondary and resyncs only what changed.
	sums2 := fileSums(t, beta.Run("blkrep-agent writefiles "+mnt+"/after 16 262144"))
	alpha.Start()
	alpha.StartDaemon()
	c.waitRejoined("beta", "alpha")
	v, why := beta.Volume()
	if v == nil {
		t.Fatal(why)
	}
	size := int64(c.sizeMiB) << 20
	rs := v.Peers[0].Resync
	if rs == nil || rs.Running {
		t.Fatalf("beta shows no finished resync towards alpha: %+v", rs)
	}
	hs := v.Peers[0].Handshake
	if hs == nil {
		t.Fatalf("beta shows no handshake with alpha")
	}
	t.Logf("resync to alpha: %d bytes (%d skipped by checksum) of a %d-byte device (%.1f%%); handshake: %s (%s), beta %s, alpha %s",
		rs.TotalBytes, rs.SkippedBytes, size, 100*float64(rs.TotalBytes)/float64(size), hs.Action, hs.Rule, hs.LocalCurrent, hs.PeerCurrent)
	// What changed: alpha's hot extents (it crashed as primary, any of them
	// may hold writes beta never got) and what beta wrote since, 4 MiB of
	// files with their metadata and journal blocks.
	if limit := int64(alExtents)<<22 + 12<<20; rs.TotalBytes <= 0 || rs.TotalBytes > limit {
		t.Errorf("resync of %d bytes: expected alpha's %d hot extents plus what beta wrote, at most %d bytes", rs.TotalBytes, alExtents, limit)
	}
	checkFiles(t, beta, mnt+"/after", sums2)
	beta.Run("umount " + mnt)
	c.WaitFor("beta and alpha in sync after the unmount", time.Minute, func() (bool, string) { return c.inSync("beta", "alpha") })
	c.SameData("alpha", "beta")
}
