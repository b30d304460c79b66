package torture

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blkrep/blkrep/failover"
	"github.com/blkrep/blkrep/internal/crashdisk"
	"github.com/blkrep/blkrep/internal/faultnet"
	"github.com/blkrep/blkrep/internal/repl"
	"github.com/blkrep/blkrep/internal/testnet"
	"github.com/blkrep/blkrep/internal/volume"
	"github.com/blkrep/blkrep/meta"
)

// Timings of the simulated cluster: the daemon's defaults scaled down
// about twentyfold so that a schedule takes about a second. Their ratios
// follow the default profile (docs/config.md): a primary that loses its
// peers stops acknowledging (ping timeout, then the lease) before the
// others may elect a successor.
const (
	pingInterval    = 40 * time.Millisecond
	pingTimeout     = 80 * time.Millisecond
	ackTimeout      = 300 * time.Millisecond
	connectInterval = 20 * time.Millisecond
	runnerTick      = 10 * time.Millisecond
	leaseMS         = 250 // failover lease, in runner ticks (ms)
	deadAfter       = 120 * time.Millisecond
	maxMsgDelay     = 5 * time.Millisecond
)

var secret = []byte("torture-secret-0123456789abcdef")

// node is one node of the simulated cluster.
type node struct {
	c         *Cluster
	name      string
	witness   bool
	spec      volume.Spec
	disk      *crashdisk.Disk
	addr      string
	statePath string

	// hooks: the crash armed at a named point (nil: none).
	armMu  sync.Mutex
	arm    *armed
	counts map[string]int

	mu     sync.Mutex // guards the running parts below
	up     bool
	vol    *volume.Volume
	rep    *repl.Replica
	ln     *repl.Listener
	lnDone chan struct{}
	run    *failover.Runner
	// gen counts starts; a crash carried out for an older start is void.
	gen atomic.Int64
	// crashes counts crashes: an answer computed by a node that crashed
	// since the request was sent is never seen by the client (a dead
	// process sends nothing).
	crashes atomic.Int64
}

type armed struct {
	point string
	nth   int
	fire  func()
}

// Cluster is the simulated cluster of one schedule: data nodes with
// crashable disks, real replicas (internal/repl) talking over
// internal/faultnet, a witness, and real failover runners over the
// simulated gossip (hub).
type Cluster struct {
	opts  Options
	nodes []*node
	byN   map[string]*node
	byA   map[string]*node
	nets  map[[2]string]*faultnet.Net // per pair of data nodes
	hub   *hub
	log   *slog.Logger

	mu   sync.Mutex
	cuts map[[2]string]bool // partitions the schedule set (pairs, sorted)
}

// Options describe a cluster.
type Options struct {
	Seed      uint64
	Protocol  byte // 'A', 'B' or 'C'
	DataNodes int  // 2 or 3
	Size      int64
	Dir       string // failover state files
	Log       *slog.Logger
}

var dataNames = []string{"alpha", "beta", "gamma"}

const witnessName = "witness"

func newCluster(o Options) (*Cluster, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{opts: o, byN: map[string]*node{}, byA: map[string]*node{}, nets: map[[2]string]*faultnet.Net{},
		log: o.Log, cuts: map[[2]string]bool{}}
	names := append(slices.Clone(dataNames[:o.DataNodes]), witnessName)
	for i, name := range names {
		n := &node{c: c, name: name, witness: name == witnessName, statePath: filepath.Join(o.Dir, name+".state"), counts: map[string]int{}}
		if !n.witness {
			var peers []string
			for _, p := range dataNames[:o.DataNodes] {
				if p != name {
					peers = append(peers, p)
				}
			}
			s := volume.Spec{Cluster: "torture", Volume: "r0", Node: name, SizeBytes: o.Size, Peers: peers,
				PeerSlots: 3, BytesPerBit: 4096, ALExtents: 4, MetaPath: name + "-disk"}
			dev, err := meta.DeviceBytesFor(o.Size, s.Geometry())
			if err != nil {
				return nil, err
			}
			n.disk = crashdisk.New(int(dev))
			s.Data, s.DataBytes = n.disk, dev
			if _, err := volume.Create(&s, false); err != nil {
				return nil, fmt.Errorf("%s: create: %w", name, err)
			}
			n.spec = s
			// Below the ephemeral range: no outgoing connection can take
			// the port while the node is down (internal/testnet).
			addr, err := testnet.Addr()
			if err != nil {
				return nil, err
			}
			n.addr = addr
			c.byA[n.addr] = n
			for _, p := range names[:i] {
				if p != witnessName {
					c.nets[pairKey(p, name)] = faultnet.New(o.Seed^uint64(len(c.nets)+1), nil)
				}
			}
		}
		c.nodes = append(c.nodes, n)
		c.byN[name] = n
	}
	c.hub = newHub(o.Seed, names, deadAfter, maxMsgDelay)
	return c, nil
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

func (c *Cluster) dataNodes() []*node { return c.nodes[:c.opts.DataNodes] }

// linkUp reports whether a pair may talk: both run and the schedule has
// not cut them (under c.mu).
func (c *Cluster) linkUp(a, b *node) bool {
	return a.isUp() && b.isUp() && !c.cuts[pairKey(a.name, b.name)]
}

// syncLinks brings the replication network and the gossip in line with
// which nodes run and which pairs the schedule cut.
func (c *Cluster) syncLinks() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.nodes {
		for _, b := range c.nodes {
			if a.name >= b.name {
				continue
			}
			up := c.linkUp(a, b)
			c.hub.setCut(a.name, b.name, c.cuts[pairKey(a.name, b.name)])
			// Only a change of state touches the pair: a blackhole or a
			// delay stays until the schedule heals it.
			if nt := c.nets[pairKey(a.name, b.name)]; nt != nil {
				switch partitioned := nt.Stats().Partitioned; {
				case up && partitioned:
					nt.Heal()
				case !up && !partitioned:
					nt.CutAndPartition()
				}
			}
		}
	}
}

// partition cuts the pair a-b until healAll.
func (c *Cluster) partition(a, b string) {
	c.mu.Lock()
	c.cuts[pairKey(a, b)] = true
	c.mu.Unlock()
	c.syncLinks()
}

// healAll ends every partition, delay and blackhole.
func (c *Cluster) healAll() {
	c.mu.Lock()
	c.cuts = map[[2]string]bool{}
	c.mu.Unlock()
	for _, nt := range c.nets {
		nt.SetDelay(0, 0, 0)
		nt.Heal()
	}
	c.syncLinks()
}

func (n *node) isUp() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.up
}

// dial is a data node's Config.Dial: through the pair's fake network.
func (n *node) dial(ctx context.Context, addr string) (net.Conn, error) {
	peer := n.c.byA[addr]
	if peer == nil {
		return nil, fmt.Errorf("torture: no node at %s", addr)
	}
	return n.c.nets[pairKey(n.name, peer.name)].Dial(ctx, addr)
}

// hook counts a named point (internal/repl's Config.Hook and
// internal/volume's CrashPoint) and fires the crash armed there.
func (n *node) hook(point string) {
	n.armMu.Lock()
	n.counts[point]++
	a := n.arm
	fire := a != nil && a.point == point && n.counts[point] >= a.nth
	if fire {
		n.arm = nil
	}
	n.armMu.Unlock()
	if fire {
		a.fire()
	}
}

// start starts (or restarts) a node.
func (n *node) start() error {
	c := n.c
	log := c.log.With("node", n.name)
	n.gen.Add(1)
	var vols []failover.RunnerVolume
	dc := failover.DeciderConfig{Volume: "r0", Preferred: "alpha", AutoPromote: true, Lease: leaseMS,
		Witnesses: []string{witnessName}}
	for _, d := range c.dataNodes() {
		dc.Voters = append(dc.Voters, d.name)
	}
	dc.Voters = append(dc.Voters, witnessName)
	rv := failover.RunnerVolume{Decider: dc, StatePath: n.statePath}
	var (
		vol    *volume.Volume
		rep    *repl.Replica
		ln     *repl.Listener
		lnDone chan struct{}
		runner atomic.Pointer[failover.Runner]
	)
	if !n.witness {
		n.disk.Restart()
		var err error
		vol, err = volume.Open(n.spec, volume.Options{Secondary: true, Replicated: true, Log: log, CrashPoint: n.hook})
		if err != nil {
			return fmt.Errorf("%s: open the volume after a restart: %w", n.name, err)
		}
		var peers []repl.Peer
		for _, p := range c.dataNodes() {
			if p != n {
				peers = append(peers, repl.Peer{Node: p.name, Address: p.addr})
			}
		}
		gate := repl.NewFailoverGate()
		rep, err = repl.New(repl.Config{Cluster: "torture", Volume: "r0", Node: n.name, Protocol: c.opts.Protocol,
			Peers: peers, Secret: secret, PingInterval: pingInterval, PingTimeout: pingTimeout, Timeout: ackTimeout,
			ConnectInterval: connectInterval, MaxEpochWrites: 16, Gate: gate, Dial: n.dial, Hook: n.hook, Log: log,
			OnPeerTerm: func(peer string, term uint64) {
				if r := runner.Load(); r != nil {
					r.ObserveTerm("r0", peer, term)
				}
			}}, vol)
		if err != nil {
			vol.Abandon()
			return fmt.Errorf("%s: replica: %w", n.name, err)
		}
		st, _, err := failover.LoadState(n.statePath, "torture", "r0", n.name)
		if err != nil {
			rep.Close()
			vol.Abandon()
			return fmt.Errorf("%s: failover state: %w", n.name, err)
		}
		rep.SetTerm(st.DataTerm)
		var l net.Listener
		for i := 0; ; i++ {
			l, err = net.Listen("tcp", n.addr)
			if err == nil {
				break
			}
			if i == 100 {
				rep.Close()
				vol.Abandon()
				return fmt.Errorf("%s: listen again on %s: %w", n.name, n.addr, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		ln = repl.NewListener(l, "torture", n.name, log)
		ln.Add(rep)
		lnDone = make(chan struct{})
		go func() { ln.Serve(); close(lnDone) }()
		rep.Start()
		rv.Replica = &repl.FailoverControl{Rep: rep, Gate: gate}
	}
	vols = append(vols, rv)
	n.mu.Lock()
	n.up = true
	n.vol, n.rep, n.ln, n.lnDone = vol, rep, ln, lnDone
	n.mu.Unlock()
	c.syncLinks()
	mem := c.hub.start(n.name)
	r, err := failover.StartRunner(failover.RunnerConfig{Cluster: "torture", Node: n.name, Witness: n.witness,
		Gossip: mem, Volumes: vols, Tick: runnerTick, Log: log.With("component", "failover")})
	if err != nil {
		n.stopNow(false, 0)
		n.teardown()
		return fmt.Errorf("%s: failover runner: %w", n.name, err)
	}
	runner.Store(r)
	n.mu.Lock()
	n.run = r
	n.mu.Unlock()
	return nil
}

// stopNow is the instant of a crash: the disk stops taking writes (a
// power loss also drops or tears the unsynced ones), the node vanishes
// from the network and the gossip. Safe to call from a hook: it waits
// for nothing the node's goroutines hold.
func (n *node) stopNow(powerLoss bool, seed uint64) {
	n.crashes.Add(1)
	if n.disk != nil {
		if powerLoss {
			n.disk.PowerCut(seed)
		} else {
			n.disk.Halt()
		}
	}
	n.mu.Lock()
	n.up = false
	n.mu.Unlock()
	n.c.hub.stop(n.name, false)
	n.c.syncLinks()
}

// teardown stops what still runs of a crashed node.
func (n *node) teardown() {
	n.mu.Lock()
	run, ln, lnDone, rep, vol := n.run, n.ln, n.lnDone, n.rep, n.vol
	n.run, n.ln, n.lnDone, n.rep, n.vol = nil, nil, nil, nil, nil
	n.mu.Unlock()
	if run != nil {
		run.Close()
	}
	if ln != nil {
		ln.Close()
		<-lnDone
	}
	if rep != nil {
		rep.Close()
	}
	if vol != nil {
		vol.Abandon()
	}
}

// replica returns the running replica (nil when down or a witness).
func (n *node) replica() *repl.Replica {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.up {
		return nil
	}
	return n.rep
}

// accepting reports whether the node is primary and acknowledges writes.
func (n *node) accepting() bool {
	_, ok := n.serving()
	return ok
}

// serving reports whether the node is primary and accepts writes, and if
// so names its tenure: the node, its start and its data term. A node that
// restarted, or that serves a new term, may hold data resynced from a
// peer meanwhile (a primary never becomes a resync target, but a node
// between two terms may): the writer starts a new tenure then.
func (n *node) serving() (tenure string, ok bool) {
	n.mu.Lock()
	run, up := n.run, n.up
	n.mu.Unlock()
	if !up || run == nil || n.witness {
		return "", false
	}
	for _, st := range run.Status() {
		if st.Volume == "r0" && st.IsPrimary && st.Accepting {
			return fmt.Sprintf("%s start %d term %d", n.name, n.gen.Load(), st.DataTerm), true
		}
	}
	return "", false
}

// close stops every node (end of a schedule).
func (c *Cluster) close() {
	for _, n := range c.nodes {
		n.mu.Lock()
		up := n.up
		n.mu.Unlock()
		if up {
			n.stopNow(false, 0)
		}
		n.teardown()
	}
	c.hub.close()
	for _, nt := range c.nets {
		nt.Close()
	}
	for a := range c.byA {
		testnet.Release(a)
	}
}
