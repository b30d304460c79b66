package clustertest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// nsPrefix starts the name of every namespace this package creates:
// "blkrepct-PID-N-NODE" (N counts the clusters of one process; NODE is
// a node's name or "br" for the bridge).
const nsPrefix = "blkrepct-"

var nsCounter atomic.Int64

// RequireNetns says why namespace mode cannot run here (nil when it can):
// it needs root, ip and nft.
func RequireNetns() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		missing = append(missing, "ip (Debian package iproute2)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		missing = append(missing, "nft (Debian package nftables)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("network namespace tests need %s (scripts/install-deps.sh test installs the packages)", strings.Join(missing, ", "))
	}
	return nil
}

func run(name string, args ...string) error {
	return runIn(nil, name, args...)
}

func runIn(stdin []byte, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// RemoveStale removes the namespaces (and the processes in them) of
// earlier runs whose process is gone.
func RemoveStale(logf func(string, ...any)) {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, nsPrefix) {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(name, nsPrefix), "-", 2)[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // its run is still going
		}
		killNamespace(name)
		if err := run("ip", "netns", "del", name); err != nil {
			logf("removing stale namespace %s: %v", name, err)
		} else {
			logf("removed stale namespace %s", name)
		}
	}
}

// killNamespace kills every process in a namespace.
func killNamespace(ns string) {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// netnsNet is the namespaces of one cluster: one per node, each with
// eth0 (10.213.0.N/24) on a veth pair whose other end is a port of bridge
// br0 in the bridge namespace.
type netnsNet struct {
	bridge string
	nodes  []*Node

	mu      sync.Mutex
	blocked map[string][]string // node -> IPs its namespace drops
}

func newNetnsNet(nodes []*Node, logf func(string, ...any)) (*netnsNet, error) {
	base := fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), nsCounter.Add(1))
	nn := &netnsNet{bridge: base + "-br", nodes: nodes, blocked: map[string][]string{}}
	for _, n := range nodes {
		n.NS = base + "-" + n.Name
	}
	steps := [][]string{
		{"netns", "add", nn.bridge},
		{"-n", nn.bridge, "link", "set", "dev", "lo", "up"},
		{"-n", nn.bridge, "link", "add", "br0", "type", "bridge"},
		{"-n", nn.bridge, "link", "set", "dev", "br0", "up"},
	}
	for _, n := range nodes {
		port := "v-" + n.Name
		steps = append(steps,
			[]string{"netns", "add", n.NS},
			[]string{"-n", n.NS, "link", "set", "dev", "lo", "up"},
			[]string{"-n", n.NS, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", nn.bridge},
			[]string{"-n", nn.bridge, "link", "set", "dev", port, "master", "br0"},
			[]string{"-n", nn.bridge, "link", "set", "dev", port, "up"},
			[]string{"-n", n.NS, "addr", "add", n.IP + "/24", "dev", "eth0"},
			[]string{"-n", n.NS, "link", "set", "dev", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if err := run("ip", s...); err != nil {
			nn.close()
			return nil, err
		}
	}
	logf("namespaces %s-{%s,br} on 10.213.0.0/24", base, strings.Join(nodeNames(nodes), ","))
	return nn, nil
}

func nodeNames(nodes []*Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	return out
}

func (nn *netnsNet) node(name string) (*Node, error) {
	for _, n := range nn.nodes {
		if n.Name == name {
			return n, nil
		}
	}
	return nil, fmt.Errorf("clustertest: no node %q", name)
}

// block makes a's namespace drop (on) or pass (off) all traffic to and
// from b.
func (nn *netnsNet) block(a, b string, on bool) error {
	na, err := nn.node(a)
	if err != nil {
		return err
	}
	nb, err := nn.node(b)
	if err != nil {
		return err
	}
	if a == b {
		return errors.New("clustertest: a node cannot be partitioned from itself")
	}
	nn.mu.Lock()
	defer nn.mu.Unlock()
	ips := slices.DeleteFunc(slices.Clone(nn.blocked[a]), func(ip string) bool { return ip == nb.IP })
	if on {
		ips = append(ips, nb.IP)
		slices.Sort(ips)
	}
	if err := applyRules(na.NS, ips); err != nil {
		return err
	}
	nn.blocked[a] = ips
	return nil
}

func (nn *netnsNet) healAll() error {
	nn.mu.Lock()
	defer nn.mu.Unlock()
	var errs []error
	for a := range nn.blocked {
		n, err := nn.node(a)
		if err != nil {
			continue
		}
		if err := applyRules(n.NS, nil); err != nil {
			errs = append(errs, err)
		} else {
			delete(nn.blocked, a)
		}
	}
	return errors.Join(errs...)
}

// applyRules replaces the namespace's clustertest table in one nft
// transaction: drop everything from and to ips (no table when empty).
func applyRules(ns string, ips []string) error {
	var b strings.Builder
	b.WriteString("table inet clustertest\ndelete table inet clustertest\n")
	if len(ips) > 0 {
		set := strings.Join(ips, ", ")
		fmt.Fprintf(&b, `table inet clustertest {
	chain input {
		type filter hook input priority 0; policy accept;
		ip saddr { %s } drop
	}
	chain output {
		type filter hook output priority 0; policy accept;
		ip daddr { %s } drop
	}
}
`, set, set)
	}
	return runIn([]byte(b.String()), "ip", "netns", "exec", ns, "nft", "-f", "-")
}

// close kills what runs in the namespaces and deletes them (the veth
// pairs and the bridge go with them).
func (nn *netnsNet) close() {
	for _, n := range nn.nodes {
		if n.NS == "" {
			continue
		}
		killNamespace(n.NS)
		run("ip", "netns", "del", n.NS)
	}
	killNamespace(nn.bridge)
	run("ip", "netns", "del", nn.bridge)
}
