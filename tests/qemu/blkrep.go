package qemu

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/control"
)

// The blkrep side of the harness: the cluster configuration, the daemons
// and their status, as an operator would run them on three machines.

const (
	stateDir = "/var/lib/blkrep" // on the state disk: survives power loss
	cfgPath  = stateDir + "/cluster.toml"
	volume   = "r0"
	device   = "/dev/nbd0"
	mnt      = "/mnt/r0"

	// The guests' shell is busybox's, which runs its own applets (mke2fs,
	// tc...) before anything in PATH: the real tools by absolute path.
	mke2fs    = "/usr/sbin/mke2fs -q -t ext4"
	e2fsck    = "/usr/sbin/e2fsck"
	tc        = "/usr/sbin/tc"
	mkfsMount = mke2fs + " " + device + " && mkdir -p " + mnt + " && mount -t ext4 " + device + " " + mnt
)

// Replicated describes the volume of a replicated cluster.
type Replicated struct {
	Kernel   string // "6.1" (default) or "6.12"
	Protocol string // "C" (default), "B" or "A"
	SizeMiB  int    // the exported size; default 128
}

// alExtents is the activity log's size in the VM suite: 8 extents of 4 MiB.
// After a primary's crash its hot extents are resynced; with the default
// (1237 extents, 4.8 GiB) every extent of a 128 MiB device that was ever
// written is hot, and a crash resyncs the whole device, which would hide
// whether resync is proportional to what changed.
const alExtents = 8

// replicated boots alpha and beta (data nodes, alpha preferred) and a
// witness, writes the configuration, creates the metadata, starts the
// three daemons and waits until alpha is Primary with /dev/nbd0 attached
// and both replicas are in sync.
func replicated(t *testing.T, r Replicated) *Cluster {
	t.Helper()
	if r.Kernel == "" {
		r.Kernel = "6.1"
	}
	if r.Protocol == "" {
		r.Protocol = "C"
	}
	if r.SizeMiB == 0 {
		r.SizeMiB = 128
	}
	c := NewCluster(t, image(t, r.Kernel))
	c.sizeMiB = r.SizeMiB
	data := r.SizeMiB + 4 // room for the internal metadata at the end
	c.AddNode("alpha", NodeOptions{DataMiB: data})
	c.AddNode("beta", NodeOptions{DataMiB: data})
	c.AddNode("witness", NodeOptions{MemoryMiB: 256})
	c.Start()
	cfg := c.config(r)
	for _, n := range c.nodes {
		n.WriteFile(cfgPath, []byte(cfg))
		if n.Data != "" {
			n.Run(blkrep(n, "create-md "+volume))
		}
	}
	for _, n := range c.nodes {
		n.StartDaemon()
	}
	c.WaitFor("alpha Primary with "+device+" attached, beta in sync", 3*time.Minute, func() (bool, string) {
		return c.inSync("alpha", "beta")
	})
	return c
}

func (c *Cluster) config(r Replicated) string {
	var b strings.Builder
	fmt.Fprintf(&b, `[cluster]
name = "vm"
secret = "blkrep-vm-suite-secret-not-for-production"
failover = true
failover_profile = "default"
`)
	for _, n := range c.nodes {
		fmt.Fprintf(&b, "\n[[node]]\nname = %q\ncontrol_socket = %q\ngossip = \"%s:7946\"\n", n.Name, stateDir+"/"+n.Name+".ctl", n.IP)
		if n.Data == "" {
			b.WriteString("witness = true\n")
		} else {
			fmt.Fprintf(&b, "address = \"%s:7788\"\n", n.IP)
		}
	}
	fmt.Fprintf(&b, `
[[volume]]
name = %q
size = "%dMiB"
protocol = %q
connect_interval = "1s"
device_timeout = "10s"
al_extents = %d
auto_promote = true
preferred = "alpha"
quorum_loss = "suspend"
`, volume, r.SizeMiB, r.Protocol, alExtents)
	for _, n := range c.nodes {
		if n.Data != "" {
			fmt.Fprintf(&b, "\n  [[volume.replica]]\n  node = %q\n  disk = \"/dev/vdb\"\n  device = %q\n  nbd_socket = \"/run/blkrep/%s-r0.sock\"\n", n.Name, device, n.Name)
		}
	}
	return b.String()
}

// blkrep is the operator's command line on node n.
func blkrep(n *Node, args string) string {
	return fmt.Sprintf("blkrep --config %s --node %s %s", cfgPath, n.Name, args)
}

// StartDaemon starts blkrepd in the background, logging to the state disk.
func (n *Node) StartDaemon() {
	n.c.t.Helper()
	n.Run(fmt.Sprintf("mkdir -p /run/blkrep && setsid blkrepd --config %s --node %s >>%s/blkrepd.log 2>&1 </dev/null &",
		cfgPath, n.Name, stateDir))
	n.c.logf("%s: blkrepd started", n.Name)
}

// Status is `blkrep status --json` on n; nil with the reason when it fails
// (the daemon is starting, the guest is down).
func (n *Node) Status() (*control.Status, string) {
	out, code := n.RunCode(blkrep(n, "status --json"), 20*time.Second)
	if code != 0 {
		return nil, fmt.Sprintf("%s: status: exit %d: %s", n.Name, code, strings.TrimSpace(out))
	}
	var s control.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return nil, fmt.Sprintf("%s: status: %v", n.Name, err)
	}
	return &s, ""
}

// Volume is the status of volume r0 on n.
func (n *Node) Volume() (*control.Volume, string) {
	s, why := n.Status()
	if s == nil {
		return nil, why
	}
	for i := range s.Volumes {
		if s.Volumes[i].Name == volume {
			return &s.Volumes[i], ""
		}
	}
	return nil, n.Name + ": no volume " + volume + " in the status"
}

// WaitFor polls cond until it holds; on timeout the test fails with cond's
// last explanation.
func (c *Cluster) WaitFor(what string, timeout time.Duration, cond func() (bool, string)) time.Duration {
	c.t.Helper()
	start := time.Now()
	why := ""
	for time.Since(start) < timeout {
		var ok bool
		if ok, why = cond(); ok {
			d := time.Since(start)
			c.logf("%s (after %.1fs)", what, d.Seconds())
			return d
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatalf("waited %s for %s: %s", timeout, what, why)
	return 0
}

// isPrimary reports whether n serves the volume as the elected primary
// with the device attached and writes accepted.
func (n *Node) isPrimary() (bool, string) {
	v, why := n.Volume()
	if v == nil {
		return false, why
	}
	switch {
	case v.Role != "Primary":
		return false, fmt.Sprintf("%s is %s", n.Name, v.Role)
	case v.Device.State != "attached":
		return false, fmt.Sprintf("%s: device %s %s", n.Name, v.Device.State, v.Device.Error)
	case v.Failover != nil && !v.Failover.Accepting:
		return false, fmt.Sprintf("%s: primary, writes held (%s)", n.Name, v.Failover.Why)
	}
	return true, ""
}

// inSync reports whether prim is Primary and the other data node is its
// up-to-date, connected secondary with nothing left to resync.
func (c *Cluster) inSync(prim, sec string) (bool, string) {
	if ok, why := c.Node(prim).isPrimary(); !ok {
		return false, why
	}
	for _, name := range []string{prim, sec} {
		v, why := c.Node(name).Volume()
		if v == nil {
			return false, why
		}
		if v.Disk.State != "UpToDate" {
			return false, fmt.Sprintf("%s: disk %s", name, v.Disk.State)
		}
		if len(v.Peers) != 1 {
			return false, fmt.Sprintf("%s: %d peers", name, len(v.Peers))
		}
		p := v.Peers[0]
		if p.Connection != "Connected" || p.Replication != "Established" || p.Disk != "UpToDate" || p.OutOfSyncBytes != 0 {
			return false, fmt.Sprintf("%s: peer %s %s/%s/%s, %d bytes out of sync", name, p.Node,
				p.Connection, p.Replication, p.Disk, p.OutOfSyncBytes)
		}
	}
	return true, ""
}

// waitRejoined waits until sec, back after a crash or a cut, is prim's
// up-to-date Secondary with nothing left to resync.
func (c *Cluster) waitRejoined(prim, sec string) {
	c.t.Helper()
	c.WaitFor(sec+" back as "+prim+"'s up-to-date Secondary", 3*time.Minute, func() (bool, string) {
		if ok, why := c.inSync(prim, sec); !ok {
			return false, why
		}
		v, why := c.Node(sec).Volume()
		if v == nil {
			return false, why
		}
		return v.Role == "Secondary", sec + " is " + v.Role
	})
}

// SameData compares the volume's bytes on the data disks of a and b (the
// first SizeMiB of each /dev/vdb, read on the host) after both guests
// synced their caches.
func (c *Cluster) SameData(a, b string) {
	c.t.Helper()
	na, nb := c.Node(a), c.Node(b)
	for _, n := range []*Node{na, nb} {
		if n.running() {
			n.Run("sync")
		}
	}
	size := int64(c.sizeMiB) << 20
	da, err := readPrefix(na.Data, size)
	if err != nil {
		c.t.Fatal(err)
	}
	db, err := readPrefix(nb.Data, size)
	if err != nil {
		c.t.Fatal(err)
	}
	if !bytes.Equal(da, db) {
		for off := int64(0); off < size; off += 4096 {
			if !bytes.Equal(da[off:off+4096], db[off:off+4096]) {
				c.t.Fatalf("the disks of %s and %s differ, first at byte %d", a, b, off)
			}
		}
	}
	c.logf("the %d MiB of %s's and %s's disks are byte-identical", c.sizeMiB, a, b)
}

func readPrefix(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}
