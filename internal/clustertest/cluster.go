package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/blkrep/blkrep/internal/control"
	"github.com/blkrep/blkrep/internal/testnet"
)

// Node names of the cluster.
const (
	Alpha   = "alpha"
	Beta    = "beta"
	Witness = "witness"
	// Volume is the name of the cluster's one volume.
	Volume = "r0"
)

// DataNodes are the nodes holding a replica, in configuration order
// (alpha is the preferred node).
var DataNodes = []string{Alpha, Beta}

// Options describe a cluster.
type Options struct {
	// Dir holds the configuration, disks, sockets, state files and logs;
	// required. Unix socket paths must stay under 108 bytes.
	Dir string
	// Bin is the directory with blkrepd and blkrep; required (BuildBinaries).
	Bin string
	// Profile is the failover profile, "default" or "fast" ("" = default).
	Profile string
	// Netns runs every node in a network namespace of its own.
	Netns bool
	// Size is the volume's exported size; 0 means 64 MiB.
	Size int64
	// QuorumLoss is the volume's quorum_loss ("" leaves the default).
	QuorumLoss string
	// VolumeTOML is added to the [[volume]] table as it is (e.g.
	// `ping_interval = "2s"`). connect_interval defaults to "1s" here.
	VolumeTOML string
	// LogLevel of the daemons; "" means info.
	LogLevel string
	// Logf reports progress (t.Logf); nil is silent.
	Logf func(format string, args ...any)
}

// Node is one daemon of the cluster.
type Node struct {
	Name    string
	Witness bool
	// IP is the node's address: 127.0.0.1 on loopback, 10.213.0.N in its
	// namespace.
	IP      string
	Address string // replication listener; "" on the witness
	Gossip  string
	Control string // control socket
	// NBDSocket serves the volume (the default export); "" on the witness.
	NBDSocket string
	Disk      string
	StateFile string // failover state of the volume
	Log       string // the daemon's output (JSON log lines), across restarts
	NS        string // network namespace, "" on loopback

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Cluster is three daemons and, in namespace mode, their network.
type Cluster struct {
	Opts   Options
	Config string // path of the configuration file
	Nodes  []*Node
	net    *netnsNet // nil on loopback

	closeOnce sync.Once
}

// DefaultSize is the volume size when Options.Size is 0.
const DefaultSize = 64 << 20

// New writes the configuration and, in namespace mode, creates the
// network (after removing what crashed earlier runs left). Nothing runs
// yet: see StartAll. Close undoes everything, also after an error.
func New(o Options) (*Cluster, error) {
	if o.Dir == "" || o.Bin == "" {
		return nil, errors.New("clustertest: Options.Dir and Options.Bin are required")
	}
	if o.Size == 0 {
		o.Size = DefaultSize
	}
	if o.Size%BlockSize != 0 {
		return nil, fmt.Errorf("clustertest: size %d is not a multiple of %d", o.Size, BlockSize)
	}
	if o.Profile == "" {
		o.Profile = "default"
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	for _, b := range []string{"blkrepd", "blkrep"} {
		if _, err := os.Stat(filepath.Join(o.Bin, b)); err != nil {
			return nil, fmt.Errorf("clustertest: %v (run make build)", err)
		}
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	o.Dir = dir
	c := &Cluster{Opts: o, Config: filepath.Join(dir, "cluster.toml")}
	for i, name := range []string{Alpha, Beta, Witness} {
		n := &Node{Name: name, Witness: name == Witness,
			Control:   filepath.Join(dir, name+".ctl"),
			StateFile: filepath.Join(dir, fmt.Sprintf("%s-%s.failover.json", name, Volume)),
			Log:       filepath.Join(dir, name+".log"),
		}
		if o.Netns {
			n.IP = fmt.Sprintf("10.213.0.%d", i+1)
			n.Gossip = n.IP + ":7946"
			if !n.Witness {
				n.Address = n.IP + ":7789"
			}
		} else {
			n.IP = "127.0.0.1"
			if n.Gossip, err = testnet.Addr(); err != nil {
				return nil, err
			}
			if !n.Witness {
				if n.Address, err = testnet.Addr(); err != nil {
					return nil, err
				}
			}
		}
		if !n.Witness {
			n.NBDSocket = filepath.Join(dir, name+"-"+Volume+".sock")
			n.Disk = filepath.Join(dir, name+"-"+Volume+".img")
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if len(n.Control) > 107 || len(n.NBDSocket) > 107 {
			return nil, fmt.Errorf("clustertest: directory %s too long for unix socket paths", dir)
		}
	}
	if err := os.WriteFile(c.Config, []byte(c.configText()), 0o600); err != nil {
		return nil, err
	}
	if o.Netns {
		if err := RequireNetns(); err != nil {
			return nil, err
		}
		RemoveStale(c.logf)
		if c.net, err = newNetnsNet(c.Nodes, c.logf); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) logf(format string, args ...any) {
	if c.Opts.Logf != nil {
		c.Opts.Logf(format, args...)
	}
}

func (c *Cluster) configText() string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by internal/clustertest.
[cluster]
name = "ct"
secret = "clustertest-secret-0123456789abcdef"
failover = true
failover_profile = %q
`, c.Opts.Profile)
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "\n[[node]]\nname = %q\ncontrol_socket = %q\ngossip = %q\n", n.Name, filepath.Base(n.Control), n.Gossip)
		if n.Address != "" {
			fmt.Fprintf(&b, "address = %q\n", n.Address)
		}
		if n.Witness {
			b.WriteString("witness = true\n")
		}
	}
	fmt.Fprintf(&b, "\n[[volume]]\nname = %q\nsize = %d\nprotocol = \"C\"\n", Volume, c.Opts.Size)
	if !strings.Contains(c.Opts.VolumeTOML, "connect_interval") {
		b.WriteString("connect_interval = \"1s\"\n")
	}
	if c.Opts.QuorumLoss != "" {
		fmt.Fprintf(&b, "quorum_loss = %q\n", c.Opts.QuorumLoss)
	}
	if c.Opts.VolumeTOML != "" {
		b.WriteString(strings.TrimSpace(c.Opts.VolumeTOML) + "\n")
	}
	for _, n := range c.Nodes {
		if n.Witness {
			continue
		}
		fmt.Fprintf(&b, "\n  [[volume.replica]]\n  node = %q\n  disk = %q\n  create = true\n  nbd_socket = %q\n",
			n.Name, filepath.Base(n.Disk), filepath.Base(n.NBDSocket))
	}
	return b.String()
}

// Node returns the node called name (nil if none).
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

func (c *Cluster) mustNode(name string) (*Node, error) {
	n := c.Node(name)
	if n == nil {
		return nil, fmt.Errorf("clustertest: no node %q", name)
	}
	return n, nil
}

// Endpoints are the data nodes' NBD sockets, for Writer.
func (c *Cluster) Endpoints() []Endpoint {
	var out []Endpoint
	for _, n := range c.Nodes {
		if n.NBDSocket != "" {
			out = append(out, Endpoint{Node: n.Name, Network: "unix", Addr: n.NBDSocket})
		}
	}
	return out
}

// Blocks is the number of BlockSize blocks of the volume.
func (c *Cluster) Blocks() int64 { return c.Opts.Size / BlockSize }

// StartAll starts the three daemons.
func (c *Cluster) StartAll() error {
	for _, n := range c.Nodes {
		if err := c.Start(n.Name); err != nil {
			return err
		}
	}
	return nil
}

// Running reports whether the node's daemon process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// PID is the daemon's process id (0 when not running).
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Start starts a node's daemon and waits until its control socket
// answers (at most 20 s).
func (c *Cluster) Start(name string) error {
	n, err := c.mustNode(name)
	if err != nil {
		return err
	}
	if n.Running() {
		return fmt.Errorf("clustertest: %s is already running", name)
	}
	f, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	mark(f, startMark)
	args := []string{"--config", c.Config, "--node", name, "--log-format", "json", "--log-level", c.Opts.LogLevel}
	daemon := filepath.Join(c.Opts.Bin, "blkrepd")
	var cmd *exec.Cmd
	if n.NS != "" {
		// ip netns exec execs the daemon in place: the pid is blkrepd's.
		cmd = exec.Command("ip", append([]string{"netns", "exec", n.NS, daemon}, args...)...)
	} else {
		cmd = exec.Command(daemon, args...)
	}
	cmd.Dir = c.Opts.Dir
	cmd.Stdout, cmd.Stderr = f, f
	// The daemon dies with the harness, even if the harness crashes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("clustertest: starting %s: %w", name, err)
	}
	done := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := control.NewClient(n.Control).Status(ctx)
		cancel()
		if err == nil {
			c.logf("%s: blkrepd running (pid %d)", name, cmd.Process.Pid)
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("clustertest: blkrepd %s exited at start (%s); log %s:\n%s", name, cmd.ProcessState, n.Log, tail(n.Log, 20))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("clustertest: blkrepd %s did not answer on %s within 20 s: %v", name, n.Control, err)
		}
	}
}

// Kill sends SIGKILL to the node's daemon and waits for it to die. It
// returns the time just before the signal.
func (c *Cluster) Kill(name string) (time.Time, error) {
	return c.signal(name, syscall.SIGKILL, 10*time.Second)
}

// Stop stops the node's daemon with SIGTERM (a graceful stop: it leaves
// the gossip) and waits up to 40 s.
func (c *Cluster) Stop(name string) error {
	_, err := c.signal(name, syscall.SIGTERM, 40*time.Second)
	return err
}

func (c *Cluster) signal(name string, sig syscall.Signal, wait time.Duration) (time.Time, error) {
	n, err := c.mustNode(name)
	if err != nil {
		return time.Time{}, err
	}
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil || !n.Running() {
		return time.Time{}, fmt.Errorf("clustertest: %s is not running", name)
	}
	at := time.Now()
	if err := cmd.Process.Signal(sig); err != nil {
		return at, err
	}
	select {
	case <-done:
	case <-time.After(wait):
		cmd.Process.Kill()
		<-done
		return at, fmt.Errorf("clustertest: %s did not exit within %s of %s", name, wait, sig)
	}
	if f, err := os.OpenFile(n.Log, os.O_WRONLY|os.O_APPEND, 0); err == nil {
		mark(f, fmt.Sprintf("clustertest: %s sent, exited %s", sig, cmd.ProcessState))
		f.Close()
	}
	c.logf("%s: %s at %s", name, sig, at.Format("15:04:05.000"))
	return at, nil
}

// Restart starts a node that was killed or stopped.
func (c *Cluster) Restart(name string) error { return c.Start(name) }

// Close kills every daemon and removes the namespaces. It is safe to call
// more than once and after a failed New.
func (c *Cluster) Close() {
	c.closeOnce.Do(func() {
		for _, n := range c.Nodes {
			n.mu.Lock()
			cmd, done := n.cmd, n.done
			n.mu.Unlock()
			if cmd != nil && cmd.Process != nil && done != nil {
				cmd.Process.Kill()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
				}
			}
		}
		if c.net != nil {
			c.net.close()
		}
	})
}

// startMark is the line the harness writes into a node's log before each
// start of its daemon.
const startMark = "clustertest: starting blkrepd"

// mark writes a JSON line of the harness into a node's log.
func mark(w io.Writer, msg string) {
	b, _ := json.Marshal(map[string]string{"time": time.Now().Format(time.RFC3339Nano), "level": "info", "msg": msg})
	w.Write(append(b, '\n'))
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// Tail returns the last lines of a node's log.
func (c *Cluster) Tail(name string, lines int) string {
	n := c.Node(name)
	if n == nil {
		return ""
	}
	return tail(n.Log, lines)
}

// Status runs `blkrep status --json` on a node.
func (c *Cluster) Status(name string) (*control.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.Opts.Bin, "blkrep"), "--config", c.Config, "--node", name, "status", "--json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("blkrep --node %s status --json: %v: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	var st control.Status
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("blkrep --node %s status --json: %v", name, err)
	}
	return &st, nil
}

// volumeStatus is the volume's status on a data node.
func (c *Cluster) volumeStatus(name string) (*control.Volume, error) {
	st, err := c.Status(name)
	if err != nil {
		return nil, err
	}
	for i := range st.Volumes {
		if st.Volumes[i].Name == Volume {
			return &st.Volumes[i], nil
		}
	}
	return nil, fmt.Errorf("%s: no volume %s in status", name, Volume)
}

// Primary returns the data node whose status says Primary ("" if none;
// an error if both do).
func (c *Cluster) Primary() (string, error) {
	var prim []string
	for _, name := range DataNodes {
		if !c.Node(name).Running() {
			continue
		}
		v, err := c.volumeStatus(name)
		if err != nil {
			return "", err
		}
		if v.Role == "Primary" {
			prim = append(prim, name)
		}
	}
	switch len(prim) {
	case 0:
		return "", nil
	case 1:
		return prim[0], nil
	}
	return "", fmt.Errorf("both %v say Primary", prim)
}

// WaitPrimary waits until exactly one running data node is Primary.
func (c *Cluster) WaitPrimary(timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		p, err := c.Primary()
		if err == nil && p != "" {
			return p, nil
		}
		last = err
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no primary after %s (last: %v)", timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// voterRecord is the part of a failover state file (failover.State)
// that InSync reads.
type voterRecord struct {
	Voter struct {
		Term        uint64   `json:"term"`
		Primary     string   `json:"primary"`
		PrimaryTerm uint64   `json:"primary_term"`
		Outdated    []string `json:"outdated"`
	} `json:"voter"`
	DataTerm uint64 `json:"data_term"`
}

// StateOf reads a node's failover state file.
func (c *Cluster) StateOf(name string) (voterRecord, error) {
	var r voterRecord
	n, err := c.mustNode(name)
	if err != nil {
		return r, err
	}
	b, err := os.ReadFile(n.StateFile)
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(b, &r)
}

// InSync reports whether the cluster is ready for the next failure: both
// data nodes run, one is Primary, both say UpToDate and the link is
// Established with nothing out of sync on both sides, and the other
// voters (the secondary and the witness) have recorded the primary's
// lease without the secondary outdated, the secondary holding the data
// of that term: it could be elected. why says what is missing.
func (c *Cluster) InSync() (ok bool, why string, err error) {
	prim := ""
	for _, name := range DataNodes {
		if !c.Node(name).Running() {
			return false, name + " is not running", nil
		}
		v, err := c.volumeStatus(name)
		if err != nil {
			return false, "", err
		}
		if v.Role == "Primary" {
			if prim != "" {
				return false, fmt.Sprintf("both %s and %s say Primary", prim, name), nil
			}
			prim = name
		}
		if v.Disk.State != "UpToDate" {
			return false, fmt.Sprintf("%s: disk %s", name, v.Disk.State), nil
		}
		if len(v.Peers) != 1 {
			return false, "", fmt.Errorf("%s: %d peers in status", name, len(v.Peers))
		}
		p := v.Peers[0]
		if p.SplitBrain {
			return false, fmt.Sprintf("%s: split brain with %s (last error: %s)", name, p.Node, p.LastError), nil
		}
		if p.Connection != "Connected" || p.Replication != "Established" || p.Disk != "UpToDate" || p.OutOfSyncBytes != 0 {
			return false, fmt.Sprintf("%s: peer %s %s/%s/%s, %d bytes out of sync", name, p.Node, p.Connection, p.Replication, p.Disk, p.OutOfSyncBytes), nil
		}
	}
	if prim == "" {
		return false, "no primary", nil
	}
	sec := Alpha
	if prim == Alpha {
		sec = Beta
	}
	for _, voter := range []string{sec, Witness} {
		r, err := c.StateOf(voter)
		if err != nil {
			return false, fmt.Sprintf("%s: failover state: %v", voter, err), nil
		}
		if r.Voter.Primary != prim || slices.Contains(r.Voter.Outdated, sec) {
			return false, fmt.Sprintf("%s records primary %q (term %d) with outdated %v", voter, r.Voter.Primary, r.Voter.PrimaryTerm, r.Voter.Outdated), nil
		}
	}
	if r, _ := c.StateOf(sec); r.DataTerm < r.Voter.PrimaryTerm {
		return false, fmt.Sprintf("%s holds the data of term %d, the primary's term is %d", sec, r.DataTerm, r.Voter.PrimaryTerm), nil
	}
	return true, "", nil
}

// WaitInSync waits for InSync.
func (c *Cluster) WaitInSync(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, why, err := c.InSync()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not in sync after %s: %s", timeout, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// CompareDisks is check (c): the exported area of alpha's and beta's
// disks holds the same bytes. Call it once both are in sync and nothing
// writes.
func (c *Cluster) CompareDisks() error {
	a, err := os.Open(c.Node(Alpha).Disk)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := os.Open(c.Node(Beta).Disk)
	if err != nil {
		return err
	}
	defer b.Close()
	const chunk = 1 << 20
	ba, bb := make([]byte, chunk), make([]byte, chunk)
	var diff []int64
	for off := int64(0); off < c.Opts.Size; off += chunk {
		n := min(chunk, c.Opts.Size-off)
		if _, err := a.ReadAt(ba[:n], off); err != nil {
			return fmt.Errorf("reading alpha's disk at %d: %w", off, err)
		}
		if _, err := b.ReadAt(bb[:n], off); err != nil {
			return fmt.Errorf("reading beta's disk at %d: %w", off, err)
		}
		if bytes.Equal(ba[:n], bb[:n]) {
			continue
		}
		for i := int64(0); i < n; i += BlockSize {
			if !bytes.Equal(ba[i:i+BlockSize], bb[i:i+BlockSize]) {
				if len(diff) < 5 {
					ta, _, ea := DecodeTag(ba[i : i+BlockSize])
					tb, _, eb := DecodeTag(bb[i : i+BlockSize])
					c.logf("disks differ at %d: alpha has %v (%v), beta has %v (%v)", off+i, ta, ea, tb, eb)
				}
				diff = append(diff, off+i)
			}
		}
	}
	if len(diff) > 0 {
		return fmt.Errorf("check (c): alpha's and beta's disks differ in %d blocks of %d (first at byte %d)", len(diff), c.Blocks(), diff[0])
	}
	return nil
}

// ReadVolume reads the whole volume through the NBD export of whichever
// data node admits a client (the primary).
func (c *Cluster) ReadVolume(ctx context.Context) (node string, data []byte, err error) {
	cl, node, err := dialAny(ctx, c.Endpoints(), "", 0)
	if err != nil {
		return "", nil, err
	}
	defer cl.Close()
	data = make([]byte, c.Opts.Size)
	const chunk = 1 << 20
	for off := int64(0); off < c.Opts.Size; off += chunk {
		n := min(chunk, c.Opts.Size-off)
		if err := cl.ReadAtContext(ctx, data[off:off+n], off); err != nil {
			return node, nil, fmt.Errorf("reading %s's export at %d: %w", node, off, err)
		}
	}
	return node, data, nil
}

// Partition cuts a from b both ways (nftables rules in a's namespace).
func (c *Cluster) Partition(a, b string) error {
	if c.net == nil {
		return errors.New("clustertest: partitions need namespace mode (Options.Netns)")
	}
	if _, err := c.mustNode(b); err != nil {
		return err
	}
	return c.net.block(a, b, true)
}

// Heal removes the partition between a and b (made by Partition(a, b),
// Partition(b, a) or Isolate).
func (c *Cluster) Heal(a, b string) error {
	if c.net == nil {
		return errors.New("clustertest: partitions need namespace mode (Options.Netns)")
	}
	if err := c.net.block(a, b, false); err != nil {
		return err
	}
	return c.net.block(b, a, false)
}

// Isolate cuts a node from every other node.
func (c *Cluster) Isolate(name string) error {
	for _, n := range c.Nodes {
		if n.Name != name {
			if err := c.Partition(name, n.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

// HealAll removes every partition.
func (c *Cluster) HealAll() error {
	if c.net == nil {
		return errors.New("clustertest: partitions need namespace mode (Options.Netns)")
	}
	return c.net.healAll()
}

// LinkDown takes a node's network interface down (the node sees its own
// link fail, unlike a partition); LinkUp brings it back.
func (c *Cluster) LinkDown(name string) error { return c.link(name, "down") }

// LinkUp undoes LinkDown.
func (c *Cluster) LinkUp(name string) error { return c.link(name, "up") }

func (c *Cluster) link(name, state string) error {
	if c.net == nil {
		return errors.New("clustertest: links need namespace mode (Options.Netns)")
	}
	n, err := c.mustNode(name)
	if err != nil {
		return err
	}
	return run("ip", "-n", n.NS, "link", "set", "dev", "eth0", state)
}

// BuildBinaries builds blkrepd and blkrep from the module at moduleDir
// into dir (CGO off, like the Makefile).
func BuildBinaries(moduleDir, dir string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-o", dir+string(filepath.Separator), "./cmd/blkrepd", "./cmd/blkrep")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	return nil
}

// ModuleDir is the root of the module the caller runs in (go env GOMOD).
func ModuleDir() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(mod), nil
}
