package failover

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// The gossip layer (docs/format/gossip.md): a memberlist cluster whose
// node metadata is each node's NodeMeta, plus opaque user messages
// between named nodes. memberlist does the membership and failure
// detection (SWIM); this file adds the key derivation, the cluster label,
// the view of every member's state and metadata, and the message queue.
//
// Member states. memberlist v0.7.0 keeps each node's state in an
// unexported field (nodeState.State, which shadows Node.State): the State
// of the *memberlist.Node values it hands out (Members, the event
// delegate) is never set, and Members leaves out dead and left nodes
// (hashicorp/memberlist#266). So the Gossip keeps its own view, fed by
// memberlist's callbacks:
//
//   - alive: NotifyJoin, NotifyUpdate;
//   - dead or left: NotifyLeave; left when the node's last metadata has
//     Leaving set (Leave gossips that before memberlist's leave), dead
//     otherwise;
//   - suspect: memberlist has no callback for suspicion. The local failure
//     detector logs "Suspect NAME has failed, no acks received" when its
//     probe of a node fails, just before it marks the node suspect; the
//     Gossip reads that line from memberlist's log. The next successful
//     probe of the node by this node (the ping delegate) makes it alive
//     again, as do a join or a metadata update. Suspicions that other
//     nodes gossip are not seen: suspect means "this node's last probe of
//     it failed".
//
// The event callbacks run with memberlist's node lock held, the others
// from its probe, packet and stream goroutines: they take g.mu, wait for
// nothing else but the logger, and never call memberlist. No method calls
// memberlist while holding g.mu, so the lock order is always memberlist's
// node lock, then g.mu.

// keyContext is hashed before the cluster secret to derive the
// memberlist key.
const keyContext = "blkrep gossip key v1\x00"

// MinSecret is the shortest cluster secret StartGossip accepts, in bytes.
const MinSecret = 16

// MaxMessage is the largest user message payload Send sends and the
// gossip layer delivers, in bytes.
const MaxMessage = 1 << 20

// envelopeVersion opens every user message (docs/format/gossip.md).
const envelopeVersion = 1

// joinRetry is how often a node that has not joined any seed tries again.
const joinRetry = time.Second

// reconnectEvery is how often a joined node contacts again the seeds it
// does not see alive (Gossip.reconnect).
var reconnectEvery = 2 * time.Second

// memberlist v0.7.0 logs suspectPrefix + name + suspectSuffix (after
// "memberlist: ") when the local failure detector's probe of a node
// fails, just before it marks the node suspect (state.go, probeNode).
// TestGossipCluster fails if a memberlist upgrade changes the line.
const (
	suspectPrefix = "Suspect "
	suspectSuffix = " has failed, no acks received"
)

// GossipConfig configures StartGossip.
type GossipConfig struct {
	// Cluster is the cluster name, 1 to 255 bytes. It is memberlist's
	// label: every packet and stream carries it, authenticated, and nodes
	// drop what carries another one, so two clusters never merge.
	Cluster string
	// Node is this node's name (memberlist's node name): 1 to 64 bytes of
	// valid UTF-8 without control characters, unique in the cluster.
	Node string
	// Bind is "IP:port" for both TCP and UDP. The IP must be literal (no
	// DNS) and specific (not 0.0.0.0 or ::): it is also the address this
	// node advertises to its peers.
	Bind string
	// Seeds are other nodes' gossip "IP:port" addresses (literal IPs). The
	// node joins them at start, in the background, and tries again every
	// second until one join succeeds (a node may start before its
	// peers). An entry equal to Bind is ignored, so every node may be
	// given the same list.
	Seeds []string
	// Secret is the cluster secret, at least MinSecret bytes. The gossip
	// key is the SHA-256 of "blkrep gossip key v1\x00" followed by the
	// secret: all gossip and messages are encrypted and authenticated
	// with it (AES-256-GCM).
	Secret []byte
	// ProbeInterval, ProbeTimeout, GossipInterval: memberlist's timings
	// (0: memberlist.DefaultLANConfig's, 1 s, 500 ms and 200 ms).
	// ProbeTimeout must be below ProbeInterval.
	ProbeInterval, ProbeTimeout, GossipInterval time.Duration
	// SuspicionMult: memberlist's suspicion multiplier (0: the default, 4).
	// A suspect node is declared dead after about
	// SuspicionMult * max(1, log10(nodes)) * ProbeInterval.
	SuspicionMult int
	// Log receives the gossip layer's and memberlist's logs (nil: none).
	Log *slog.Logger
}

// Member is one node in the gossip layer's view.
type Member struct {
	Name string
	Addr string // its gossip "IP:port"
	// State is derived from memberlist's reports as docs/format/gossip.md
	// ("Member states") describes; suspect is this node's own suspicion.
	State MemberState
	// Meta is the node's last metadata that decoded (for this node: the
	// last SetMeta). It is the zero NodeMeta when MetaErr is set.
	Meta NodeMeta
	// MetaErr is the error decoding the node's metadata (wrapping
	// ErrBadMeta), nil when it decoded.
	MetaErr error
}

// Message is a user message received through the gossip layer.
type Message struct {
	// From is the sender's node name, as the sender states it. Only
	// holders of the cluster secret can send, and any of them can state
	// any name.
	From    string
	Payload []byte // owned by the receiver
}

// Gossip is this node's membership in the cluster's gossip. Its methods
// are safe for concurrent use.
type Gossip struct {
	cfg    GossipConfig
	seeds  []string
	log    *slog.Logger
	ml     *memberlist.Memberlist
	update time.Duration // how long the metadata updater waits for a broadcast

	life sync.Mutex // serialises Leave and Shutdown

	mu      sync.Mutex
	meta    []byte   // the encoding of metaVal
	metaVal NodeMeta // this node's metadata
	members map[string]*member
	queue   []Message // received, not yet delivered
	left    bool      // Leave was called
	stopped bool      // Shutdown was called: the channels are closed

	changed  chan struct{} // capacity 1
	msgs     chan Message
	wakeMsgs chan struct{} // capacity 1: the queue grew
	wakeMeta chan struct{} // capacity 1: metadata to gossip
	done     chan struct{} // closed by Shutdown
	wg       sync.WaitGroup
}

// member is one node in the view.
type member struct {
	ip      net.IP
	port    uint16
	state   MemberState
	meta    NodeMeta
	metaErr error
	badMeta string // the undecodable metadata last logged ("" none)
}

// StartGossip validates cfg, starts memberlist on cfg.Bind with meta as
// this node's metadata, and starts joining cfg.Seeds in the background.
// It fails if the configuration or meta is invalid or the address cannot
// be bound.
func StartGossip(cfg GossipConfig, meta NodeMeta) (*Gossip, error) {
	ip, port, seeds, err := checkGossipConfig(&cfg)
	if err != nil {
		return nil, err
	}
	enc, err := EncodeNodeMeta(meta)
	if err != nil {
		return nil, fmt.Errorf("failover: gossip: node metadata: %w", err)
	}
	base := cfg.Log
	if base == nil {
		base = slog.New(slog.DiscardHandler)
	}
	key := gossipKey(cfg.Secret)
	cfg.Secret = nil // not kept
	g := &Gossip{
		cfg:      cfg,
		seeds:    seeds,
		log:      base.With("component", "gossip"),
		update:   cfg.GossipInterval,
		meta:     enc,
		metaVal:  cloneMeta(meta),
		members:  map[string]*member{}, // this node's entry: from NotifyJoin during Create
		changed:  make(chan struct{}, 1),
		msgs:     make(chan Message),
		wakeMsgs: make(chan struct{}, 1),
		wakeMeta: make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Node
	mc.Label = cfg.Cluster
	mc.BindAddr = ip.String()
	mc.BindPort = int(port)
	mc.AdvertiseAddr = ip.String()
	mc.AdvertisePort = int(port)
	mc.SecretKey = key
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.GossipInterval = cfg.GossipInterval
	mc.SuspicionMult = cfg.SuspicionMult
	d := &delegate{g}
	mc.Delegate, mc.Events, mc.Ping = d, d, d
	mc.Logger = log.New(&memberlistLog{log: base, line: g.memberlistLine}, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("failover: gossip on %s: %w", cfg.Bind, err)
	}
	g.ml = ml
	g.wg.Add(3)
	go g.deliver()
	go g.updater()
	go g.join()
	g.log.Info("gossip started", "node", cfg.Node, "bind", cfg.Bind, "cluster", cfg.Cluster, "seeds", seeds)
	return g, nil
}

// gossipKey derives the memberlist key (AES-256) from the cluster secret.
func gossipKey(secret []byte) []byte {
	h := sha256.New()
	h.Write([]byte(keyContext))
	h.Write(secret)
	return h.Sum(nil)
}

// parseIPPort parses a literal "IP:port" with a port from 1 to 65535.
func parseIPPort(s string) (netip.AddrPort, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("host %q is not a literal IP address", host)
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("port %q is not a number from 1 to 65535", ps)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
}

// checkGossipConfig validates cfg and fills in the default timings. It
// returns the bind address and the seeds to join.
func checkGossipConfig(cfg *GossipConfig) (net.IP, uint16, []string, error) {
	fail := func(format string, args ...any) (net.IP, uint16, []string, error) {
		return nil, 0, nil, fmt.Errorf("failover: gossip config: "+format, args...)
	}
	if len(cfg.Cluster) == 0 || len(cfg.Cluster) > memberlist.LabelMaxSize {
		return fail("Cluster %q: length %d, want 1 to %d bytes", cfg.Cluster, len(cfg.Cluster), memberlist.LabelMaxSize)
	}
	if err := checkName(cfg.Node); err != nil {
		return fail("Node %q: %v", cfg.Node, err)
	}
	bind, err := parseIPPort(cfg.Bind)
	if err != nil {
		return fail("Bind %q: %v", cfg.Bind, err)
	}
	if bind.Addr().IsUnspecified() {
		return fail("Bind %q: %s is not a specific address (peers reach this node at Bind)", cfg.Bind, bind.Addr())
	}
	var seeds []string
	for _, s := range cfg.Seeds {
		ap, err := parseIPPort(s)
		if err != nil {
			return fail("seed %q: %v", s, err)
		}
		if ap == bind || slices.Contains(seeds, ap.String()) {
			continue
		}
		seeds = append(seeds, ap.String())
	}
	if len(cfg.Secret) < MinSecret {
		return fail("Secret is %d bytes, want at least %d", len(cfg.Secret), MinSecret)
	}
	def := memberlist.DefaultLANConfig()
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"ProbeInterval", &cfg.ProbeInterval, def.ProbeInterval},
		{"ProbeTimeout", &cfg.ProbeTimeout, def.ProbeTimeout},
		{"GossipInterval", &cfg.GossipInterval, def.GossipInterval},
	} {
		if *d.v < 0 {
			return fail("%s %v is negative", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.ProbeTimeout >= cfg.ProbeInterval {
		return fail("ProbeTimeout %v is not below ProbeInterval %v", cfg.ProbeTimeout, cfg.ProbeInterval)
	}
	switch {
	case cfg.SuspicionMult < 0:
		return fail("SuspicionMult %d is negative", cfg.SuspicionMult)
	case cfg.SuspicionMult == 0:
		cfg.SuspicionMult = def.SuspicionMult
	}
	a := bind.Addr().AsSlice()
	return net.IP(a), bind.Port(), seeds, nil
}

func cloneMeta(m NodeMeta) NodeMeta {
	m.Volumes = slices.Clone(m.Volumes)
	return m
}

// signal notes a change for Changed; g.mu is held.
func (g *Gossip) signal() {
	if g.stopped {
		return
	}
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// SetMeta replaces this node's metadata. It fails if m does not encode
// (EncodeNodeMeta's rules, among them the size limit), after Leave and
// after Shutdown. It does not wait for the network: the Gossip's own
// goroutine gossips the newest metadata (memberlist's UpdateNode),
// coalescing calls that come faster than it goes out. Setting the
// metadata already set sends nothing.
func (g *Gossip) SetMeta(m NodeMeta) error {
	b, err := EncodeNodeMeta(m)
	if err != nil {
		return fmt.Errorf("failover: gossip: SetMeta: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.stopped:
		return errors.New("failover: gossip: SetMeta after Shutdown")
	case g.left:
		return errors.New("failover: gossip: SetMeta after Leave: this node has left the cluster")
	}
	if bytes.Equal(b, g.meta) {
		return nil // nothing new to gossip
	}
	g.meta, g.metaVal = b, cloneMeta(m)
	g.signal()
	wake(g.wakeMeta)
	return nil
}

// updater gossips the metadata SetMeta stored. UpdateNode returns when
// the update has been broadcast (or after one gossip interval): calls
// that come faster coalesce into the next update.
func (g *Gossip) updater() {
	defer g.wg.Done()
	for {
		select {
		case <-g.done:
			return
		case <-g.wakeMeta:
		}
		if err := g.ml.UpdateNode(g.update); err != nil {
			g.log.Debug("metadata update not yet broadcast", "err", err)
		}
	}
}

// join joins the seeds, trying again every joinRetry until one join
// succeeds, or Leave or Shutdown.
func (g *Gossip) join() {
	defer g.wg.Done()
	if len(g.seeds) == 0 {
		return
	}
	for attempt := 1; ; attempt++ {
		if g.quitting() {
			return
		}
		n, err := g.ml.Join(g.seeds)
		if n > 0 {
			g.log.Info("joined the cluster", "seeds_contacted", n, "attempts", attempt)
			g.reconnect()
			return
		}
		if attempt == 1 {
			g.log.Warn("cannot join any seed yet, trying again every second", "seeds", g.seeds, "err", joinError(err))
		} else {
			g.log.Debug("cannot join any seed yet", "attempt", attempt, "err", joinError(err))
		}
		t := time.NewTimer(joinRetry)
		select {
		case <-g.done:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// quitting: Leave or Shutdown was called (joins must stop).
func (g *Gossip) quitting() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stopped || g.left
}

// reconnect joins again, every reconnectEvery, each seed whose node this
// node does not see alive. memberlist never probes a member it declared
// dead, so without this a partition that heals leaves the two sides
// seeing each other dead for good (found by tests/netns: a witness cut
// off for 15 s was never alive again for a data node, which then had no
// quorum). Serf does the same.
func (g *Gossip) reconnect() {
	for {
		t := time.NewTimer(reconnectEvery)
		select {
		case <-g.done:
			t.Stop()
			return
		case <-t.C:
		}
		g.mu.Lock()
		alive := map[string]bool{}
		for name, e := range g.members {
			if e.state == StateAlive && name != g.cfg.Node {
				alive[net.JoinHostPort(e.ip.String(), strconv.Itoa(int(e.port)))] = true
			}
		}
		g.mu.Unlock()
		for _, seed := range g.seeds {
			if g.quitting() {
				return
			}
			if alive[seed] {
				continue
			}
			if n, err := g.ml.Join([]string{seed}); n > 0 {
				g.log.Info("reconnected to a node not seen alive", "address", seed)
			} else {
				g.log.Debug("reconnect failed", "address", seed, "err", joinError(err))
			}
		}
	}
}

// joinError flattens memberlist's multi-error (one error per seed) to
// one line.
func joinError(err error) string {
	if err == nil {
		return "no seed answered"
	}
	if me, ok := err.(interface{ WrappedErrors() []error }); ok {
		var parts []string
		for _, e := range me.WrappedErrors() {
			parts = append(parts, e.Error())
		}
		return strings.Join(parts, "; ")
	}
	return err.Error()
}

// Members returns every node the gossip layer knows, this node included,
// sorted by name. Dead and left nodes stay listed until they come back
// (memberlist forgets them after a while; this view does not).
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	out := make([]Member, 0, len(g.members))
	for name, e := range g.members {
		m := Member{Name: name, Addr: net.JoinHostPort(e.ip.String(), strconv.Itoa(int(e.port))),
			State: e.state, Meta: cloneMeta(e.meta), MetaErr: e.metaErr}
		if name == g.cfg.Node {
			m.Meta = cloneMeta(g.metaVal)
		}
		out = append(out, m)
	}
	g.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Changed returns a channel that receives a value when something in
// Members may have changed: a node joined, left, died, became suspect or
// alive again, or changed its metadata. Signals coalesce (capacity 1);
// read Members after each. Shutdown closes it.
func (g *Gossip) Changed() <-chan struct{} { return g.changed }

// Messages returns the channel of received user messages, in arrival
// order. Each Send travels on a stream of its own, so two messages from
// one node may arrive in either order. Messages wait in an unbounded
// queue until read, so memberlist never waits for the reader. Shutdown
// closes the channel; messages still queued are dropped.
func (g *Gossip) Messages() <-chan Message { return g.msgs }

// Send sends payload (at most MaxMessage bytes) to the named member over
// a TCP stream (memberlist's SendReliable), encrypted with the cluster
// key. It fails if the member is unknown, dead or left, or the stream
// fails; it blocks until the payload is written (memberlist's stream
// timeout, 10 s, bounds a peer that does not answer).
func (g *Gossip) Send(node string, payload []byte) error {
	if len(payload) > MaxMessage {
		return fmt.Errorf("failover: gossip: Send to %q: payload of %d bytes, at most %d", node, len(payload), MaxMessage)
	}
	g.mu.Lock()
	e := g.members[node]
	stopped := g.stopped
	var to *memberlist.Node
	var state MemberState
	if e != nil {
		to = &memberlist.Node{Name: node, Addr: slices.Clone(e.ip), Port: e.port}
		state = e.state
	}
	g.mu.Unlock()
	switch {
	case stopped:
		return fmt.Errorf("failover: gossip: Send to %q after Shutdown", node)
	case to == nil:
		return fmt.Errorf("failover: gossip: Send to %q: no such member", node)
	case state == StateDead || state == StateLeft:
		return fmt.Errorf("failover: gossip: Send to %q: the member is %s", node, state)
	}
	if err := g.ml.SendReliable(to, envelope(g.cfg.Node, payload)); err != nil {
		return fmt.Errorf("failover: gossip: Send to %q at %s: %w", node, to.Address(), err)
	}
	return nil
}

// envelope frames a user message: version, sender name, payload.
func envelope(from string, payload []byte) []byte {
	b := make([]byte, 0, 2+len(from)+len(payload))
	b = append(b, envelopeVersion, byte(len(from)))
	b = append(b, from...)
	return append(b, payload...)
}

// openEnvelope splits a user message into sender and payload (payload
// aliases b).
func openEnvelope(b []byte) (string, []byte, error) {
	if len(b) < 2 {
		return "", nil, fmt.Errorf("user message of %d bytes, at least 2", len(b))
	}
	if b[0] != envelopeVersion {
		return "", nil, fmt.Errorf("user message version %d, want %d", b[0], envelopeVersion)
	}
	n := int(b[1])
	if len(b)-2 < n {
		return "", nil, fmt.Errorf("user message sender name of %d bytes, %d left", n, len(b)-2)
	}
	from := string(b[2 : 2+n])
	if err := checkName(from); err != nil {
		return "", nil, fmt.Errorf("user message sender name: %v", err)
	}
	payload := b[2+n:]
	if len(payload) > MaxMessage {
		return "", nil, fmt.Errorf("user message from %q: payload of %d bytes, at most %d", from, len(payload), MaxMessage)
	}
	return from, payload, nil
}

// deliver feeds the queue to the Messages channel.
func (g *Gossip) deliver() {
	defer g.wg.Done()
	defer close(g.msgs)
	for {
		g.mu.Lock()
		var m Message
		have := len(g.queue) > 0
		if have {
			m = g.queue[0]
			g.queue[0] = Message{}
			g.queue = g.queue[1:]
			if len(g.queue) == 0 {
				g.queue = nil
			}
		}
		g.mu.Unlock()
		if !have {
			select {
			case <-g.done:
				return
			case <-g.wakeMsgs:
			}
			continue
		}
		select {
		case <-g.done:
			return
		case g.msgs <- m:
		}
	}
}

// Leave announces that this node leaves the cluster and waits up to
// timeout (> 0) for the announcement to go out: the other nodes then
// list it as StateLeft. It first gossips this node's metadata with
// Leaving set, then memberlist's leave. The node keeps answering gossip
// until Shutdown, which should follow; it cannot rejoin. A second call
// does nothing.
func (g *Gossip) Leave(timeout time.Duration) error {
	if timeout <= 0 {
		return fmt.Errorf("failover: gossip: Leave timeout %v, want > 0", timeout)
	}
	g.life.Lock()
	defer g.life.Unlock()
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return errors.New("failover: gossip: Leave after Shutdown")
	}
	if g.left {
		g.mu.Unlock()
		return nil
	}
	m := cloneMeta(g.metaVal)
	m.Leaving = true
	b, err := EncodeNodeMeta(m) // the same size as the stored encoding
	if err != nil {
		g.mu.Unlock()
		return fmt.Errorf("failover: gossip: Leave: %w", err)
	}
	g.meta, g.metaVal, g.left = b, m, true
	g.signal()
	g.mu.Unlock()

	deadline := time.Now().Add(timeout)
	if err := g.ml.UpdateNode(timeout / 2); err != nil {
		g.log.Warn("leaving: the metadata with Leaving set may not have reached every node", "err", err)
	}
	err = g.ml.Leave(max(time.Until(deadline), time.Millisecond))
	g.mu.Lock()
	if e := g.members[g.cfg.Node]; e != nil && e.state != StateLeft {
		e.state = StateLeft
		g.signal()
	}
	g.mu.Unlock()
	if err != nil {
		return fmt.Errorf("failover: gossip: Leave: %w", err)
	}
	g.log.Info("left the cluster")
	return nil
}

// Shutdown stops memberlist and the Gossip's goroutines, without a leave
// announcement (call Leave first for a graceful stop: otherwise the other
// nodes see this one fail). Changed and Messages are closed when it
// returns. Calling it again does nothing.
func (g *Gossip) Shutdown() error {
	g.life.Lock()
	defer g.life.Unlock()
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return nil
	}
	g.stopped = true
	close(g.changed)
	g.queue = nil
	g.mu.Unlock()
	close(g.done)
	err := g.ml.Shutdown()
	g.wg.Wait()
	if err != nil {
		return fmt.Errorf("failover: gossip: Shutdown: %w", err)
	}
	g.log.Info("gossip stopped")
	return nil
}

// nodeEvent applies one of memberlist's events about n.
func (g *Gossip) nodeEvent(n *memberlist.Node, state MemberState) {
	self := n.Name == g.cfg.Node
	var meta NodeMeta
	var metaErr error
	if !self {
		meta, metaErr = DecodeNodeMeta(n.Meta)
	}
	if state == StateDead && metaErr == nil && meta.Leaving {
		state = StateLeft
	}
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return
	}
	e := g.members[n.Name]
	known := e != nil
	if e == nil {
		e = &member{}
		g.members[n.Name] = e
	}
	old := e.state
	e.ip, e.port, e.state = slices.Clone(n.Addr), n.Port, state
	logBad := false
	if !self {
		e.meta, e.metaErr = meta, metaErr
		switch {
		case metaErr == nil:
			e.badMeta = ""
		case string(n.Meta) != e.badMeta:
			e.badMeta, logBad = string(n.Meta), true
		}
	}
	if self && state == StateDead {
		e.state = StateLeft // memberlist reports this node's own leave
	}
	now := e.state
	g.signal()
	g.mu.Unlock()

	if logBad {
		g.log.Warn("undecodable node metadata", "node", n.Name, "bytes", len(n.Meta), "err", metaErr)
	}
	if !known || old != now {
		g.log.Info("member "+now.String(), "node", n.Name, "addr", n.Address())
	} else {
		g.log.Debug("member metadata updated", "node", n.Name)
	}
}

// memberlistLine reads memberlist's log lines for the local failure
// detector's suspicions.
func (g *Gossip) memberlistLine(msg string) {
	name, ok := strings.CutPrefix(msg, suspectPrefix)
	if !ok {
		return
	}
	if name, ok = strings.CutSuffix(name, suspectSuffix); !ok {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if e := g.members[name]; e != nil && name != g.cfg.Node && e.state == StateAlive {
		e.state = StateSuspect
		g.signal()
	}
}

// delegate receives memberlist's callbacks (memberlist.Delegate,
// EventDelegate and PingDelegate) without exporting them on Gossip.
type delegate struct{ g *Gossip }

// NodeMeta returns this node's encoded metadata.
func (d *delegate) NodeMeta(limit int) []byte {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	if len(d.g.meta) > limit {
		return nil // cannot happen: EncodeNodeMeta keeps to memberlist.MetaMaxSize
	}
	return d.g.meta
}

// NotifyMsg queues a user message; memberlist may reuse b.
func (d *delegate) NotifyMsg(b []byte) {
	g := d.g
	from, payload, err := openEnvelope(b)
	if err != nil {
		g.log.Warn("dropped a malformed user message", "bytes", len(b), "err", err)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return
	}
	g.queue = append(g.queue, Message{From: from, Payload: bytes.Clone(payload)})
	wake(g.wakeMsgs)
}

// GetBroadcasts: the gossip layer broadcasts nothing of its own.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState: no state of its own in push/pull syncs.
func (d *delegate) LocalState(join bool) []byte { return nil }

// MergeRemoteState: nothing to merge.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {}

// NotifyJoin: n is alive (again).
func (d *delegate) NotifyJoin(n *memberlist.Node) { d.g.nodeEvent(n, StateAlive) }

// NotifyUpdate: n is alive with new metadata.
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.g.nodeEvent(n, StateAlive) }

// NotifyLeave: n is dead or left (nodeEvent tells which).
func (d *delegate) NotifyLeave(n *memberlist.Node) { d.g.nodeEvent(n, StateDead) }

// AckPayload: nothing rides on probe acks.
func (d *delegate) AckPayload() []byte { return nil }

// NotifyPingComplete: this node's probe of other succeeded, so a
// suspicion of it from this node's failure detector is over.
func (d *delegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	g := d.g
	name := other.Name
	g.mu.Lock()
	defer g.mu.Unlock()
	if e := g.members[name]; e != nil && e.state == StateSuspect {
		e.state = StateAlive
		g.signal()
	}
}
