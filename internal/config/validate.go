package config

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/blkrep/blkrep/activelog"
	"github.com/blkrep/blkrep/meta"
)

var (
	clusterNameRE = regexp.MustCompile(`^[a-z0-9_-]+$`)
	nameRE        = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,63}$`)
	deviceRE      = regexp.MustCompile(`^/dev/nbd[0-9]+$`)
	hostnameRE    = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)
)

// validator turns a rawFile into a Config, collecting every problem. Sections are
// checked in file order; names, sockets, listeners, disks and devices are recorded
// as they are met so that a clash names both users.
type validator struct {
	dir  string
	errs []error

	nodes     map[string]int    // node name -> index of its first [[node]]
	badNode   bool              // some [[node]] has no usable name
	addressed map[string]bool   // node name -> its address key is set (valid or not) or was reported missing
	secretSet bool              // [cluster] has secret or secret_file (valid or not)
	sockets   map[string]string // absolute unix socket path -> its first user
	nodePaths map[string]string // node + "\x00" + disk, meta_disk, device or socket path -> its first user
	listeners []listener

	failover bool // [cluster] failover = true
	// failoverKnown: [cluster] failover is absent or a boolean, so the checks
	// that depend on it can run (else they would only echo its problem).
	failoverKnown bool
	gossiped      map[string]bool // node name -> its gossip key is set (valid or not) or was reported missing
	badWitness    bool            // some [[node]] has a witness key that is not a boolean
}

type listener struct {
	host     string // canonical: lower-case name or unmapped IP; "" for a wildcard
	port     int
	addr     string // as written
	owner    string
	wildcard bool
}

// fail records a problem with key in section; kinds are sentinels or causes
// wrapped besides ErrInvalid.
func (v *validator) fail(section, key string, kinds []error, format string, args ...any) {
	v.errs = append(v.errs, &Error{
		Section: section,
		Key:     key,
		Problem: fmt.Sprintf(format, args...),
		errs:    append([]error{ErrInvalid}, kinds...),
	})
}

func (v *validator) failf(section, key, format string, args ...any) {
	v.fail(section, key, nil, format, args...)
}

func (v *validator) required(section, key string, f field) bool {
	if !f.set {
		v.failf(section, key, "is required")
	}
	return f.set
}

func (v *validator) wrongType(section, key, want string, f field) {
	v.failf(section, key, "must be %s, not %s %s", want, article(tomlType(f.v)), tomlType(f.v))
}

func article(s string) string {
	if strings.ContainsRune("aeiou", rune(s[0])) {
		return "an"
	}
	return "a"
}

// str reads a string; ok is false if the key is absent or not a string (reported).
func (v *validator) str(section, key string, f field) (s string, ok bool) {
	if !f.set {
		return "", false
	}
	s, ok = f.v.(string)
	if !ok {
		v.wrongType(section, key, "a string", f)
	}
	return s, ok
}

// nonEmpty reads a string that, if present, must not be empty.
func (v *validator) nonEmpty(section, key string, f field) (string, bool) {
	s, ok := v.str(section, key, f)
	if ok && s == "" {
		v.failf(section, key, "must not be empty (leave the key out instead)")
		return "", false
	}
	return s, ok
}

// path reads a path and resolves it against the configuration directory.
func (v *validator) path(section, key string, f field) (string, bool) {
	s, ok := v.nonEmpty(section, key, f)
	if !ok {
		return "", false
	}
	if strings.IndexByte(s, 0) >= 0 {
		v.failf(section, key, "path %q contains a NUL byte", s)
		return "", false
	}
	return v.resolve(s), true
}

func (v *validator) resolve(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(v.dir, p)
}

// socket checks a resolved unix socket path and claims it for owner, in the
// whole file and, when node is not empty, among node's paths (so that no disk or
// meta_disk of the node is a socket).
func (v *validator) socket(section, key, path, owner, node string) {
	if n := len(path); n > MaxUnixSocketPathBytes {
		v.failf(section, key, "unix socket path %s is %d bytes long; the limit is %d", path, n, MaxUnixSocketPathBytes)
	}
	if prev, dup := v.sockets[path]; dup {
		v.failf(section, key, "unix socket %s is also the %s", path, prev)
		return
	}
	v.sockets[path] = owner
	if node != "" {
		v.nodePath(section, key, node, path, owner)
	}
}

// nodePath claims a disk, meta_disk, device or socket path on node for owner.
func (v *validator) nodePath(section, key, node, path, owner string) {
	k := node + "\x00" + path
	if prev, dup := v.nodePaths[k]; dup {
		v.failf(section, key, "%s on node %q is also the %s", path, node, prev)
		return
	}
	v.nodePaths[k] = owner
}

func (v *validator) config(raw *rawFile) *Config {
	v.nodes = map[string]int{}
	v.sockets = map[string]string{}
	v.nodePaths = map[string]string{}
	v.addressed = map[string]bool{}
	v.gossiped = map[string]bool{}
	c := &Config{Dir: v.dir}
	c.Cluster = v.cluster(&raw.Cluster)
	if len(raw.Node) == 0 {
		v.failf("", "node", "at least one [[node]] is required")
	}
	for i := range raw.Node {
		c.Nodes = append(c.Nodes, v.node(i, &raw.Node[i]))
	}
	if len(raw.Volume) == 0 {
		v.failf("", "volume", "at least one [[volume]] is required")
	}
	vols := map[string]int{}
	for i := range raw.Volume {
		vol := v.volume(i, &raw.Volume[i], c.Nodes)
		if vol.Name != "" {
			if first, dup := vols[vol.Name]; dup {
				v.failf(label("volume", vol.Name, i), "name", "volume %q is declared twice (volume #%d and #%d)", vol.Name, first+1, i+1)
			} else {
				vols[vol.Name] = i
			}
		}
		c.Volumes = append(c.Volumes, vol)
	}
	v.replication(c)
	v.failoverVoters(c)
	return c
}

// replication checks what replicated volumes need from the other tables: a
// shared secret, and an address on every node holding one of their replicas.
// Each missing key is reported once, for the first volume that needs it.
func (v *validator) replication(c *Config) {
	for i := range c.Volumes {
		vol := &c.Volumes[i]
		if !vol.Replicated() {
			continue
		}
		if !v.secretSet {
			v.secretSet = true
			v.failf("cluster", "secret", "is required because %s has %d replicas (the nodes authenticate each other with it): "+
				"set secret, or secret_file to the path of a file holding it; generate one with: head -c 32 /dev/urandom | base64",
				label("volume", vol.Name, i), len(vol.Replicas))
		}
		for _, r := range vol.Replicas {
			first, known := v.nodes[r.Node]
			if r.Node == "" || !known || v.addressed[r.Node] {
				continue
			}
			v.addressed[r.Node] = true
			v.failf(label("node", r.Node, first), "address", "is required because it holds a replica of replicated %s", label("volume", vol.Name, i))
		}
	}
}

// failoverVoters checks the voters of the replicated volumes: no witness holds
// a replica; with failover on, every voter has a gossip address (reported once
// per node) and every replicated volume has at least MinFailoverVoters.
func (v *validator) failoverVoters(c *Config) {
	// The uniquely named nodes that are witnesses, in file order.
	var witnesses []string
	isWitness := map[string]bool{}
	for name, i := range v.nodes {
		if c.Nodes[i].Witness {
			isWitness[name] = true
		}
	}
	for _, n := range c.Nodes {
		if isWitness[n.Name] && !slices.Contains(witnesses, n.Name) {
			witnesses = append(witnesses, n.Name)
		}
	}
	for i := range c.Volumes {
		vol := &c.Volumes[i]
		for _, r := range vol.Replicas {
			if isWitness[r.Node] {
				v.failf(label("node", r.Node, v.nodes[r.Node]), "witness", "a witness holds no data, but node %q holds a replica of %s; remove witness = true or that replica",
					r.Node, label("volume", vol.Name, i))
			}
		}
	}
	if !v.failover {
		return
	}
	needGossip := func(node, why string) {
		first, known := v.nodes[node]
		if node == "" || !known || v.gossiped[node] {
			return
		}
		v.gossiped[node] = true
		v.failf(label("node", node, first), "gossip", "is required because failover needs every voter's gossip address (%s)", why)
	}
	for i := range c.Volumes {
		vol := &c.Volumes[i]
		if !vol.Replicated() {
			continue
		}
		var voters []string
		for _, r := range vol.Replicas {
			needGossip(r.Node, "it holds a replica of replicated "+label("volume", vol.Name, i))
			if r.Node != "" && !slices.Contains(voters, r.Node) {
				voters = append(voters, r.Node)
			}
		}
		for _, w := range witnesses {
			if !slices.Contains(voters, w) {
				voters = append(voters, w)
			}
		}
		// Fewer than two is a problem with the replicas, reported with them;
		// with a witness key in error, the count is not known.
		switch {
		case vol.TwoNode && len(voters) != 2 && !v.badWitness:
			v.failf(label("volume", vol.Name, i), "two_node", "applies only to a volume with exactly two voters (two replicas and no witness), but %s has %d: %s",
				label("volume", vol.Name, i), len(voters), strings.Join(voters, ", "))
		case len(voters) == 2 && !v.badWitness && !vol.TwoNode:
			v.failf(label("volume", vol.Name, i), "replica", "failover needs at least %d voters (the nodes holding a replica, and the witnesses), but %s has 2, %q and %q: "+
				"losing either node would stop writes on the other; add a node with witness = true (or, at your own risk, two_node = true with a fence_peer handler)", MinFailoverVoters, label("volume", vol.Name, i), voters[0], voters[1])
		}
	}
	for _, w := range witnesses {
		needGossip(w, "it is a witness")
	}
}

// label names the i-th (0-based) table of a kind: `node "alpha"`, or `node #2`
// when it has no usable name.
func label(kind, name string, i int) string {
	if name == "" {
		return fmt.Sprintf("%s #%d", kind, i+1)
	}
	return fmt.Sprintf("%s %q", kind, name)
}

func (v *validator) cluster(raw *rawCluster) Cluster {
	const sec = "cluster"
	cl := Cluster{Name: DefaultClusterName}
	if s, ok := v.str(sec, "name", raw.Name); ok {
		if !clusterNameRE.MatchString(s) {
			v.failf(sec, "name", "%q must match [a-z0-9_-]+", s)
		} else {
			cl.Name = s
		}
	}
	// Messages give the secret's length, never its value.
	if s, ok := v.str(sec, "secret", raw.Secret); ok {
		if n := len(s); n < MinSecretBytes || n > MaxSecretBytes {
			v.failf(sec, "secret", "is %d bytes long; it must be %d to %d bytes (generate one with: head -c 32 /dev/urandom | base64)", n, MinSecretBytes, MaxSecretBytes)
		} else {
			cl.Secret = s
		}
	}
	if p, ok := v.path(sec, "secret_file", raw.SecretFile); ok {
		cl.SecretFile = p
	}
	if raw.Secret.set && raw.SecretFile.set {
		v.failf(sec, "secret_file", "cannot be set together with secret: keep one (secret_file keeps the secret out of this file, which every node has)")
	}
	v.secretSet = raw.Secret.set || raw.SecretFile.set

	b, ok := v.boolean(sec, "failover", raw.Failover)
	cl.Failover = ok && b
	v.failover, v.failoverKnown = cl.Failover, ok || !raw.Failover.set
	cl.FailoverProfile = DefaultFailoverProfile
	if raw.FailoverProfile.set && v.failoverKnown && !v.failover {
		v.failf(sec, "failover_profile", "needs failover = true (the profile sets the timings of automatic failover, which is off)")
	} else if s, ok := v.oneOf(sec, "failover_profile", raw.FailoverProfile, FailoverProfileDefault, FailoverProfileFast); ok {
		cl.FailoverProfile = s
	}
	if cl.FailoverProfile == FailoverProfileFast {
		cl.FailoverProbeInterval, cl.FailoverProbeTimeout = FastFailoverProbeInterval, FastFailoverProbeTimeout
		cl.FailoverSuspicionMult, cl.FailoverLease = FastFailoverSuspicionMult, FastFailoverLease
	} else {
		cl.FailoverProbeInterval, cl.FailoverProbeTimeout = DefaultFailoverProbeInterval, DefaultFailoverProbeTimeout
		cl.FailoverSuspicionMult, cl.FailoverLease = DefaultFailoverSuspicionMult, DefaultFailoverLease
	}
	return cl
}

// name reads a node or volume name; it returns "" if absent or invalid.
func (v *validator) name(section string, f field) string {
	if !v.required(section, "name", f) {
		return ""
	}
	s, ok := v.str(section, "name", f)
	if !ok {
		return ""
	}
	if !nameRE.MatchString(s) {
		v.failf(section, "name", "%q must be 1 to %d of A-Z a-z 0-9 _ . -", s, MaxNameLen)
		return ""
	}
	return s
}

func (v *validator) node(i int, raw *rawNode) Node {
	sec := label("node", "", i)
	var n Node
	n.Name = v.name(sec, raw.Name)
	sec = label("node", n.Name, i)
	unique := false
	switch first, dup := v.nodes[n.Name]; {
	case n.Name == "":
		v.badNode = true
	case dup:
		v.failf(sec, "name", "node %q is declared twice (node #%d and #%d)", n.Name, first+1, i+1)
	default:
		v.nodes[n.Name] = i
		unique = true
	}

	if p, ok := v.path(sec, "control_socket", raw.ControlSocket); ok {
		n.ControlSocket = p
		v.socket(sec, "control_socket", p, fmt.Sprintf("control_socket of %s", sec), owned(unique, n.Name))
	} else if !raw.ControlSocket.set && unique {
		n.ControlSocket = v.resolve(n.Name + ".ctl")
		v.socket(sec, "control_socket (default)", n.ControlSocket, fmt.Sprintf("control_socket (default) of %s", sec), n.Name)
	}

	n.NBDTCP = v.tcp(sec, "nbd_tcp", raw.NBDTCP, false)
	n.Address = v.tcp(sec, "address", raw.Address, true)
	if raw.Address.set && unique {
		v.addressed[n.Name] = true
	}
	n.Metrics = v.tcp(sec, "metrics", raw.Metrics, false)
	n.Gossip = v.gossip(sec, raw.Gossip)
	if raw.Gossip.set && unique {
		v.gossiped[n.Name] = true
	}
	b, ok := v.boolean(sec, "witness", raw.Witness)
	v.badWitness = v.badWitness || raw.Witness.set && !ok
	if ok && b {
		n.Witness = true
		if v.failoverKnown && !v.failover {
			v.failf(sec, "witness", "witness = true needs [cluster] failover = true (a witness holds no data: it only votes in failover elections)")
		}
	}
	return n
}

// gossip reads a node's gossip key: a dialed TCP address like address (see
// tcp), whose host must moreover be a literal IP address without a zone, which
// the gossip layer binds and advertises (it resolves no names).
func (v *validator) gossip(section string, f field) string {
	const key = "gossip"
	if s, ok := f.v.(string); ok && s != "" {
		// Problems other than the host's form are left to tcp.
		if l, err := parseListen(s); err == nil {
			host, _, _ := net.SplitHostPort(s)
			if ip, err := netip.ParseAddr(host); l.wildcard || err != nil || ip.Zone() != "" {
				v.failf(section, key, "%q: the host must be this node's own IP address, where the other nodes reach it: "+
					"not a wildcard (empty, 0.0.0.0 or ::), a host name (the gossip layer resolves no names) or an address with a zone; "+
					"e.g. \"10.0.0.1:7946\"", s)
				return ""
			}
		}
	}
	return v.tcp(section, key, f, true)
}

// tcp reads a "host:port" key of section and claims it as a TCP listen address;
// it returns the value as written, or "" if absent or invalid (reported). When
// dialed, peers dial the address, so its host must not be a wildcard.
func (v *validator) tcp(section, key string, f field, dialed bool) string {
	s, ok := v.nonEmpty(section, key, f)
	if !ok {
		return ""
	}
	l, err := parseListen(s)
	switch {
	case err != nil:
		v.failf(section, key, "%q: %s", s, err)
		return ""
	case dialed && l.wildcard:
		v.failf(section, key, "%q: the host must be an address the peers can dial, not a wildcard (empty, 0.0.0.0 or ::); "+
			"write this node's own IP address or host name, e.g. \"10.0.0.1:7789\"", s)
		return ""
	}
	l.owner = fmt.Sprintf("%s of %s", key, section)
	v.listen(section, key, l)
	return s
}

// owned returns name if the node is uniquely named, else "" (its paths are then
// not claimed on any node).
func owned(unique bool, name string) string {
	if unique {
		return name
	}
	return ""
}

// parseListen reads a TCP listen address "host:port"; host may be empty, an IP
// address or a host name; port is numeric, 1..65535.
func parseListen(s string) (listener, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return listener{}, fmt.Errorf("must be host:port (%s)", ae.Err)
		}
		return listener{}, fmt.Errorf("must be host:port")
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 || portStr[0] == '+' || portStr[0] == '0' {
		return listener{}, fmt.Errorf("port %q must be a number from 1 to 65535", portStr)
	}
	l := listener{port: port, addr: s}
	switch ip, err := netip.ParseAddr(host); {
	case host == "":
		l.wildcard = true
	case err == nil:
		ip = ip.Unmap()
		l.wildcard = ip.IsUnspecified()
		l.host = ip.String()
	case hostnameRE.MatchString(host):
		l.host = strings.ToLower(host)
	default:
		return listener{}, fmt.Errorf("host %q is neither an IP address nor a host name", host)
	}
	if l.wildcard {
		l.host = ""
	}
	return l, nil
}

// listen claims a TCP listen address. A wildcard host clashes with any host on the
// same port: the file cannot tell whether two nodes share a machine.
func (v *validator) listen(section, key string, l listener) {
	for _, prev := range v.listeners {
		if prev.port == l.port && (prev.host == l.host || prev.wildcard || l.wildcard) {
			v.failf(section, key, "%s clashes with %s (%s)", l.addr, prev.owner, prev.addr)
			return
		}
	}
	v.listeners = append(v.listeners, l)
}

func (v *validator) volume(i int, raw *rawVolume, nodes []Node) Volume {
	sec := label("volume", "", i)
	vol := Volume{
		BlockSize:       DefaultBlockSize,
		DeviceTimeout:   DefaultDeviceTimeout,
		DeadConnTimeout: DefaultDeadConnTimeout,
		BytesPerBit:     DefaultBytesPerBit,
		ALExtents:       DefaultALExtents,
		PeerSlots:       DefaultPeerSlots,
		Protocol:        DefaultProtocol,
		PingInterval:    DefaultPingInterval,
		PingTimeout:     DefaultPingTimeout,
		Timeout:         DefaultTimeout,
		ConnectInterval: DefaultConnectInterval,
		MaxEpochWrites:  DefaultMaxEpochWrites,
		ResyncRateMax:   DefaultResyncRateMax,
		ResyncRateMin:   DefaultResyncRateMin,
		ResyncInFlight:  DefaultResyncInFlight,
		ResyncChecksums: DefaultResyncChecksums,
		AfterSplitBrain: DefaultAfterSplitBrain,
	}
	vol.Name = v.name(sec, raw.Name)
	sec = label("volume", vol.Name, i)

	if v.required(sec, "size", raw.Size) {
		vol.SizeBytes = v.size(sec, "size", raw.Size)
	}
	if s, ok := v.str(sec, "description", raw.Description); ok {
		if len(s) > MaxDescriptionBytes {
			v.failf(sec, "description", "is %d bytes long; the limit is %d", len(s), MaxDescriptionBytes)
		}
		vol.Description = s
	}
	if raw.BlockSize.set {
		n, ok := raw.BlockSize.v.(int64)
		switch {
		case !ok:
			v.wrongType(sec, "block_size", "an integer", raw.BlockSize)
		case n < MinBlockSize || n > MaxBlockSize || bits.OnesCount64(uint64(n)) != 1:
			v.failf(sec, "block_size", "%d must be a power of two from %d to %d", n, MinBlockSize, MaxBlockSize)
		default:
			vol.BlockSize = uint32(n)
		}
	}
	if raw.DeviceTimeout.set {
		vol.DeviceTimeout = v.duration(sec, "device_timeout", raw.DeviceTimeout)
	}
	if raw.DeadConnTimeout.set {
		vol.DeadConnTimeout = v.duration(sec, "dead_conn_timeout", raw.DeadConnTimeout)
	}
	if raw.BytesPerBit.set {
		if n, what, ok := v.sizeValue(sec, "bytes_per_bit", raw.BytesPerBit, "4KiB"); ok {
			if n < meta.MinBytesPerBit || n > meta.MaxBytesPerBit || bits.OnesCount64(uint64(n)) != 1 {
				v.failf(sec, "bytes_per_bit", "%s must be a power of two from %d (4KiB) to %d (1MiB)", what, meta.MinBytesPerBit, meta.MaxBytesPerBit)
			} else {
				vol.BytesPerBit = uint32(n)
			}
		}
	}
	if n, ok := v.intRange(sec, "al_extents", raw.ALExtents, 1, activelog.MaxExtents); ok {
		vol.ALExtents = int(n)
	}
	slotsOK := true
	if raw.PeerSlots.set {
		var n int64
		n, slotsOK = v.intRange(sec, "peer_slots", raw.PeerSlots, meta.MinPeerSlots, meta.MaxPeerSlots)
		if slotsOK {
			vol.PeerSlots = int(n)
		}
	}

	v.replicationKeys(sec, raw, &vol)

	if len(raw.Replica) == 0 {
		v.failf(sec, "replica", "at least one [[volume.replica]] is required")
	}
	// Each replica keeps a bitmap slot for every other one.
	switch peers := len(raw.Replica) - 1; {
	case peers > meta.MaxPeerSlots:
		v.failf(sec, "replica", "a volume has at most %d replicas (one more than the largest peer_slots, %d), not %d", meta.MaxPeerSlots+1, meta.MaxPeerSlots, len(raw.Replica))
	case !slotsOK || peers <= vol.PeerSlots:
	case raw.PeerSlots.set:
		v.failf(sec, "peer_slots", "%d is fewer than the %d peers of a volume with %d replicas (each replica keeps a bitmap for every other one); set peer_slots = %d or more", vol.PeerSlots, peers, len(raw.Replica), peers)
	default:
		v.failf(sec, "peer_slots", "the default of %d is fewer than the %d peers of a volume with %d replicas (each replica keeps a bitmap for every other one); set peer_slots = %d or more", vol.PeerSlots, peers, len(raw.Replica), peers)
	}
	seen := map[string]bool{}
	for j := range raw.Replica {
		r := v.replica(sec, j, &raw.Replica[j], nodes, len(raw.Replica))
		if r.Node != "" {
			if seen[r.Node] {
				v.failf(fmt.Sprintf("%s replica for node %q", sec, r.Node), "node", "%s already has a replica on node %q", sec, r.Node)
			}
			seen[r.Node] = true
		}
		vol.Replicas = append(vol.Replicas, r)
	}
	v.failoverKeys(sec, raw, &vol)
	// A Config from Parse must give every replica a disk size; only an
	// enormous size with internal metadata overflows.
	for j := range vol.Replicas {
		if vol.SizeBytes == 0 || !vol.Replicas[j].MetaInternal() {
			continue
		}
		if _, err := (LocalReplica{&vol, &vol.Replicas[j]}).DiskBytes(); err != nil {
			v.failf(sec, "size", "%d bytes is too large to hold with internal metadata: with the metadata area, the disk would exceed %d bytes; use external metadata (meta_disk = \"<path>\") or a smaller size", vol.SizeBytes, int64(math.MaxInt64))
		}
		break
	}
	return vol
}

// replicationKeys reads the replication keys of the volume in section sec into
// vol, which holds their defaults.
func (v *validator) replicationKeys(sec string, raw *rawVolume, vol *Volume) {
	if s, ok := v.str(sec, "protocol", raw.Protocol); ok {
		switch u := strings.ToUpper(s); u {
		case ProtocolA, ProtocolB, ProtocolC:
			vol.Protocol = u
		default:
			v.failf(sec, "protocol", `%q must be "A", "B" or "C" (a write completes once written locally and A: sent to the peers, B: received by them, C: written by them)`, s)
		}
	}

	// ping_timeout < ping_interval, each as given or its default.
	intervalOK, timeoutOK := !raw.PingInterval.set, !raw.PingTimeout.set
	if d, ok := v.durationIn(sec, "ping_interval", raw.PingInterval, MinPingInterval, MaxPingInterval); ok {
		vol.PingInterval, intervalOK = d, true
	}
	if d, ok := v.durationIn(sec, "ping_timeout", raw.PingTimeout, MinPingTimeout, MaxPingTimeout); ok {
		vol.PingTimeout, timeoutOK = d, true
	}
	if intervalOK && timeoutOK && vol.PingTimeout >= vol.PingInterval {
		def := ""
		if !raw.PingInterval.set {
			def = ", the default"
		}
		v.failf(sec, "ping_timeout", "%s must be less than ping_interval (%s%s): a ping is answered before the next one is due", fmtDuration(vol.PingTimeout), fmtDuration(vol.PingInterval), def)
	}
	if d, ok := v.durationIn(sec, "timeout", raw.Timeout, MinTimeout, MaxTimeout); ok {
		vol.Timeout = d
	}
	if d, ok := v.durationIn(sec, "connect_interval", raw.ConnectInterval, MinConnectInterval, MaxConnectInterval); ok {
		vol.ConnectInterval = d
	}
	if n, ok := v.intRange(sec, "max_epoch_writes", raw.MaxEpochWrites, 1, MaxEpochWritesLimit); ok {
		vol.MaxEpochWrites = int(n)
	}

	// resync_rate_min <= resync_rate_max, each as given or its default.
	maxOK, minOK := !raw.ResyncRateMax.set, !raw.ResyncRateMin.set
	maxWhat := ""
	if n, what, ok := v.rate(sec, "resync_rate_max", raw.ResyncRateMax, true); ok {
		vol.ResyncRateMax, maxWhat, maxOK = n, what, true
	}
	minWhat := fmt.Sprintf(`the default of "%dMiB/s" (%d bytes/s)`, DefaultResyncRateMin>>20, DefaultResyncRateMin)
	if n, what, ok := v.rate(sec, "resync_rate_min", raw.ResyncRateMin, false); ok {
		vol.ResyncRateMin, minWhat, minOK = n, what, true
	}
	if maxOK && minOK && vol.ResyncRateMax != 0 && vol.ResyncRateMin > vol.ResyncRateMax {
		v.failf(sec, "resync_rate_min", "%s is more than resync_rate_max, %s; the minimum must not exceed the limit", minWhat, maxWhat)
	}
	if raw.ResyncInFlight.set {
		if n, what, ok := v.sizeValue(sec, "resync_in_flight", raw.ResyncInFlight, "8MiB"); ok {
			if n < MinResyncInFlight || n > MaxResyncInFlight {
				v.failf(sec, "resync_in_flight", "%s is out of range: it must be from %d (64KiB) to %d (1GiB)", what, MinResyncInFlight, MaxResyncInFlight)
			} else {
				vol.ResyncInFlight = n
			}
		}
	}

	if s, ok := v.oneOf(sec, "resync_checksums", raw.ResyncChecksums,
		ResyncChecksumsAfterCrash, ResyncChecksumsAlways, ResyncChecksumsNever); ok {
		vol.ResyncChecksums = s
	}
	if s, ok := v.oneOf(sec, "after_split_brain", raw.AfterSplitBrain,
		AfterSplitBrainDisconnect, AfterSplitBrainDiscardZeroChanges, AfterSplitBrainDiscardLeastChanges,
		AfterSplitBrainDiscardYoungerPrimary, AfterSplitBrainDiscardSecondary); ok {
		vol.AfterSplitBrain = s
	}
	if s, ok := v.command(sec, "split_brain_handler", raw.SplitBrainHandler); ok {
		vol.SplitBrainHandler = s
	}
}

// failoverKeys reads the failover keys of the volume in section sec into vol,
// whose replicas are read. They apply only to a replicated volume with
// [cluster] failover = true; otherwise each one present is reported.
func (v *validator) failoverKeys(sec string, raw *rawVolume, vol *Volume) {
	vol.Failover = v.failover && vol.Replicated()
	vol.AutoPromote = DefaultAutoPromote
	vol.QuorumLoss = DefaultQuorumLoss
	vol.HandlerTimeout = DefaultHandlerTimeout
	if len(vol.Replicas) > 0 {
		vol.Preferred = vol.Replicas[0].Node
	}
	keys := []struct {
		key string
		f   field
	}{
		{"auto_promote", raw.AutoPromote}, {"preferred", raw.Preferred}, {"quorum_loss", raw.QuorumLoss},
		{"after_promote", raw.AfterPromote}, {"before_demote", raw.BeforeDemote}, {"fence_peer", raw.FencePeer},
		{"quorum_lost", raw.QuorumLost}, {"handler_timeout", raw.HandlerTimeout}, {"two_node", raw.TwoNode},
	}
	why := ""
	switch off := v.failoverKnown && !v.failover; {
	case len(vol.Replicas) == 0: // reported with the replicas
		return
	case !vol.Replicated() && off:
		why = fmt.Sprintf("only applies to a replicated volume (%s has 1 replica) and needs [cluster] failover = true", sec)
	case !vol.Replicated():
		why = fmt.Sprintf("only applies to a replicated volume (%s has 1 replica: failover moves the primary role between replicas)", sec)
	case off:
		why = "needs [cluster] failover = true (automatic failover is off)"
	}
	if why != "" {
		for _, k := range keys {
			if k.f.set {
				v.failf(sec, k.key, "%s", why)
			}
		}
		return
	}

	if b, ok := v.boolean(sec, "auto_promote", raw.AutoPromote); ok {
		vol.AutoPromote = b
	}
	if s, ok := v.nonEmpty(sec, "preferred", raw.Preferred); ok {
		if _, held := vol.Replica(s); held {
			vol.Preferred = s
		} else {
			var nodes []string
			for _, r := range vol.Replicas {
				if r.Node != "" {
					nodes = append(nodes, strconv.Quote(r.Node))
				}
			}
			v.failf(sec, "preferred", "node %q holds no replica of %s; the preferred node must be one of its replicas' nodes: %s", s, sec, strings.Join(nodes, ", "))
		}
	}
	if s, ok := v.oneOf(sec, "quorum_loss", raw.QuorumLoss, QuorumLossSuspend, QuorumLossFail); ok {
		vol.QuorumLoss = s
	}
	for _, h := range []struct {
		key string
		f   field
		dst *string
	}{
		{"after_promote", raw.AfterPromote, &vol.AfterPromote},
		{"before_demote", raw.BeforeDemote, &vol.BeforeDemote},
		{"fence_peer", raw.FencePeer, &vol.FencePeer},
		{"quorum_lost", raw.QuorumLost, &vol.QuorumLost},
	} {
		if s, ok := v.command(sec, h.key, h.f); ok {
			*h.dst = s
		}
	}
	if d, ok := v.durationIn(sec, "handler_timeout", raw.HandlerTimeout, MinHandlerTimeout, MaxHandlerTimeout); ok {
		vol.HandlerTimeout = d
	}
	if b, ok := v.boolean(sec, "two_node", raw.TwoNode); ok && b {
		vol.TwoNode = true
		if vol.FencePeer == "" && !raw.FencePeer.set {
			v.failf(sec, "two_node", "two_node = true needs a fence_peer handler: with two voters a node may take over only once the handler proved the other outdated (exit 3 or 4) or powered off (exit 7)")
		}
	}
}

// command reads an optional shell command: not empty and without NUL bytes.
func (v *validator) command(section, key string, f field) (string, bool) {
	s, ok := v.nonEmpty(section, key, f)
	if ok && strings.IndexByte(s, 0) >= 0 {
		v.failf(section, key, "command %q contains a NUL byte", s)
		return "", false
	}
	return s, ok
}

// boolean reads an optional boolean; ok is false if it is absent or not a
// boolean (reported).
func (v *validator) boolean(section, key string, f field) (b, ok bool) {
	if !f.set {
		return false, false
	}
	b, ok = f.v.(bool)
	if !ok {
		v.wrongType(section, key, "true or false", f)
	}
	return b, ok
}

// durationIn reads an optional Go duration string in [lo, hi]; unlike duration,
// it takes fractions of a second. ok is false if it is absent or invalid
// (reported).
func (v *validator) durationIn(section, key string, f field, lo, hi time.Duration) (time.Duration, bool) {
	if !f.set {
		return 0, false
	}
	switch x := f.v.(type) {
	case string:
		d, err := time.ParseDuration(x)
		switch {
		case err != nil:
			v.failf(section, key, `invalid duration %q (use a Go duration such as "500ms" or "10s")`, x)
		case d < lo || d > hi:
			v.failf(section, key, "%q is out of range: it must be from %s to %s", x, fmtDuration(lo), fmtDuration(hi))
		default:
			return d, true
		}
	case int64:
		v.failf(section, key, `%d has no unit: use a string such as "%ds" or "%dms"`, x, x, x)
	default:
		v.wrongType(section, key, `a duration string such as "500ms"`, f)
	}
	return 0, false
}

// fmtDuration writes d for messages, without the zero tails of
// time.Duration.String ("1m", not "1m0s").
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// rate reads a rate in bytes per second: an integer, or a size string for
// parseSize optionally followed by "/s"; with unlimited, also RateUnlimited,
// returned as 0. A rate is positive. what describes it for messages.
func (v *validator) rate(section, key string, f field, unlimited bool) (n int64, what string, ok bool) {
	if !f.set {
		return 0, "", false
	}
	switch x := f.v.(type) {
	case int64:
		n, what = x, fmt.Sprintf("%d bytes/s", x)
	case string:
		t := strings.TrimSpace(x)
		if strings.EqualFold(t, RateUnlimited) {
			if unlimited {
				return 0, strconv.Quote(x), true
			}
			v.failf(section, key, `%q: a minimum cannot be unlimited; write a rate such as "4MiB/s"`, x)
			return 0, "", false
		}
		if len(t) >= 2 && strings.EqualFold(t[len(t)-2:], "/s") {
			t = t[:len(t)-2]
		}
		m, err := parseSize(t)
		if err != nil {
			v.fail(section, key, []error{ErrSize}, `invalid rate %q (write a size per second such as "100MiB/s"): %v`, x, err)
			return 0, "", false
		}
		n, what = m, fmt.Sprintf("%q (%d bytes/s)", x, m)
	default:
		if unlimited {
			v.wrongType(section, key, `"unlimited", an integer number of bytes per second or a string such as "100MiB/s"`, f)
		} else {
			v.wrongType(section, key, `an integer number of bytes per second or a string such as "4MiB/s"`, f)
		}
		return 0, "", false
	}
	if n <= 0 {
		if unlimited {
			v.failf(section, key, `%s must be positive (write "unlimited" for no limit)`, what)
		} else {
			v.failf(section, key, "%s must be positive", what)
		}
		return 0, "", false
	}
	return n, what, true
}

// oneOf reads an optional string that must be one of values; ok is false if it
// is absent or invalid (reported).
func (v *validator) oneOf(section, key string, f field, values ...string) (string, bool) {
	s, ok := v.str(section, key, f)
	if !ok {
		return "", false
	}
	if slices.Contains(values, s) {
		return s, true
	}
	quoted := make([]string, len(values))
	for i, val := range values {
		quoted[i] = strconv.Quote(val)
	}
	list := strings.Join(quoted[:len(quoted)-1], ", ") + " or " + quoted[len(quoted)-1]
	hint := ""
	if near := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "_", "-"); slices.Contains(values, near) {
		hint = fmt.Sprintf(" (did you mean %q?)", near)
	}
	v.failf(section, key, "%q must be %s%s", s, list, hint)
	return "", false
}

// sizeValue reads a size: integer bytes or a string for ParseSize (example is
// one, for the message on a wrong type). what describes the value for messages.
func (v *validator) sizeValue(section, key string, f field, example string) (n int64, what string, ok bool) {
	switch x := f.v.(type) {
	case int64:
		return x, fmt.Sprintf("%d bytes", x), true
	case string:
		n, err := parseSize(x)
		if err != nil {
			v.fail(section, key, []error{ErrSize}, "invalid size %q: %v", x, err)
			return 0, "", false
		}
		return n, fmt.Sprintf("%q (%d bytes)", x, n), true
	default:
		v.wrongType(section, key, fmt.Sprintf("an integer number of bytes or a string such as %q", example), f)
		return 0, "", false
	}
}

// intRange reads an optional integer in [lo, hi]; ok is false if it is absent or
// invalid (reported).
func (v *validator) intRange(section, key string, f field, lo, hi int64) (int64, bool) {
	if !f.set {
		return 0, false
	}
	n, ok := f.v.(int64)
	switch {
	case !ok:
		v.wrongType(section, key, "an integer", f)
	case n < lo || n > hi:
		v.failf(section, key, "%d is out of range: it must be from %d to %d", n, lo, hi)
	default:
		return n, true
	}
	return 0, false
}

// size reads a volume size: the result is a positive multiple of SizeAlignBytes,
// or 0 after reporting a problem.
func (v *validator) size(section, key string, f field) int64 {
	n, what, ok := v.sizeValue(section, key, f, "256MiB")
	if !ok {
		return 0
	}
	switch {
	case n <= 0:
		v.failf(section, key, "%s must be positive", what)
	case n%SizeAlignBytes != 0:
		v.failf(section, key, "%s is not a multiple of %d", what, SizeAlignBytes)
	default:
		return n
	}
	return 0
}

// duration reads a Go duration string ("30s"), or the integer 0; the kernel counts
// these timeouts in seconds, so the value must be whole seconds and not negative.
func (v *validator) duration(section, key string, f field) time.Duration {
	var d time.Duration
	switch x := f.v.(type) {
	case string:
		var err error
		if d, err = time.ParseDuration(x); err != nil {
			v.failf(section, key, `invalid duration %q (use a Go duration such as "30s" or "2m")`, x)
			return 0
		}
	case int64:
		if x != 0 {
			v.failf(section, key, `%d has no unit: use a string such as "%ds"`, x, x)
			return 0
		}
	default:
		v.wrongType(section, key, `a duration string such as "30s"`, f)
		return 0
	}
	switch {
	case d < 0:
		v.failf(section, key, "%s must not be negative", d)
	case d%time.Second != 0:
		v.failf(section, key, "%s must be a whole number of seconds (the kernel counts in seconds)", d)
	default:
		return d
	}
	return 0
}

// replica reads the j-th replica of the volume in section vsec, which has n
// replicas.
func (v *validator) replica(vsec string, j int, raw *rawReplica, nodes []Node, n int) Replica {
	sec := fmt.Sprintf("%s replica #%d", vsec, j+1)
	var r Replica
	if v.required(sec, "node", raw.Node) {
		if s, ok := v.str(sec, "node", raw.Node); ok {
			if s == "" {
				v.failf(sec, "node", "must not be empty")
			} else {
				r.Node = s
				sec = fmt.Sprintf("%s replica for node %q", vsec, s)
				// With a [[node]] missing or unnamed, that one is reported instead.
				if _, known := v.nodes[s]; !known && !v.badNode && len(nodes) > 0 {
					v.fail(sec, "node", []error{ErrUnknownNode}, "no [[node]] is called %q (known nodes: %s)", s, quoteNames(nodes))
				}
			}
		}
	}
	if v.required(sec, "disk", raw.Disk) {
		if p, ok := v.path(sec, "disk", raw.Disk); ok {
			r.Disk = p
			if r.Node != "" {
				v.nodePath(sec, "disk", r.Node, p, fmt.Sprintf("disk of %s", vsec))
			}
		}
	}
	if b, ok := v.boolean(sec, "create", raw.Create); ok {
		r.Create = b
	}
	if p, ok := v.path(sec, "nbd_socket", raw.NBDSocket); ok {
		r.NBDSocket = p
		v.socket(sec, "nbd_socket", p, fmt.Sprintf("nbd_socket of %s", sec), r.Node)
	}
	if s, ok := v.nonEmpty(sec, "device", raw.Device); ok {
		if !deviceRE.MatchString(s) {
			v.failf(sec, "device", "%q must be a kernel NBD device, /dev/nbdN", s)
		} else {
			r.Device = s
			if r.Node != "" {
				v.nodePath(sec, "device", r.Node, s, fmt.Sprintf("device of %s", vsec))
			}
		}
	}
	r.MetaDisk = v.metaDisk(sec, vsec, r.Node, raw.MetaDisk, n)
	return r
}

// metaDisk reads meta_disk: MetaDiskInternal when absent, MetaDiskNone, or an
// absolute path claimed on node. It returns MetaDiskInternal after a problem.
func (v *validator) metaDisk(sec, vsec, node string, f field, replicas int) string {
	const key = "meta_disk"
	s, ok := v.str(sec, key, f)
	if !ok {
		return MetaDiskInternal
	}
	switch {
	case s == MetaDiskInternal:
		return s
	case s == MetaDiskNone:
		if replicas > 1 {
			v.failf(sec, key, "%q: a volume without metadata cannot be replicated (%s has %d replicas); use \"internal\" or a metadata file", s, vsec, replicas)
		}
		return s
	}
	for _, kw := range []string{MetaDiskInternal, MetaDiskNone} {
		if strings.EqualFold(strings.TrimSpace(s), kw) {
			v.failf(sec, key, "%q is neither %q nor %q (for a metadata file of that name, write %q)", s, MetaDiskInternal, MetaDiskNone, "./"+s)
			return MetaDiskInternal
		}
	}
	p, ok := v.path(sec, key, f)
	if !ok {
		return MetaDiskInternal
	}
	if node != "" {
		v.nodePath(sec, key, node, p, fmt.Sprintf("meta_disk of %s", vsec))
	}
	return p
}

// quoteNames lists the valid node names, quoted, for messages.
func quoteNames(nodes []Node) string {
	var names []string
	seen := map[string]bool{}
	for _, n := range nodes {
		if n.Name != "" && !seen[n.Name] {
			seen[n.Name] = true
			names = append(names, strconv.Quote(n.Name))
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
