package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/blkrep/blkrep/activelog"
	"github.com/blkrep/blkrep/meta"
)

// Defaults and limits of the schema. docs/config.md repeats them; keep both in step.
const (
	DefaultClusterName     = "blkrep"
	DefaultBlockSize       = 4096
	DefaultDeviceTimeout   = 30 * time.Second
	DefaultDeadConnTimeout = 120 * time.Second

	// SizeAlignBytes is what a volume size must be a multiple of.
	SizeAlignBytes = 4096
	// MinBlockSize and MaxBlockSize bound block_size (a power of two).
	MinBlockSize = 512
	MaxBlockSize = 4096
	// MaxDescriptionBytes bounds a volume description (the NBD export description).
	MaxDescriptionBytes = 4096
	// MaxNameLen bounds node and volume names.
	MaxNameLen = 63
	// MaxUnixSocketPathBytes is the longest path a unix socket can be bound to on
	// Linux (sun_path is 108 bytes including the terminating NUL).
	MaxUnixSocketPathBytes = 107

	// DefaultBytesPerBit is the default bitmap granularity; bytes_per_bit is a
	// power of two in [meta.MinBytesPerBit, meta.MaxBytesPerBit].
	DefaultBytesPerBit = meta.DefaultBytesPerBit
	// DefaultALExtents is the default number of activity-log extents; al_extents
	// is in [1, activelog.MaxExtents].
	DefaultALExtents = activelog.DefaultExtents
	// DefaultPeerSlots is the default number of peer bitmap slots; peer_slots is
	// in [meta.MinPeerSlots, meta.MaxPeerSlots].
	DefaultPeerSlots = meta.MinPeerSlots

	// MetaDiskInternal and MetaDiskNone are the meta_disk values that are not
	// paths; see Replica.MetaDisk.
	MetaDiskInternal = "internal"
	MetaDiskNone     = "none"
)

// Replication: [cluster] secret and the replication keys of [[volume]].
const (
	// MinSecretBytes and MaxSecretBytes bound the shared secret (secret, or the
	// content of secret_file once trailing whitespace is trimmed).
	MinSecretBytes = 16
	MaxSecretBytes = 1024

	// DefaultProtocol is the default replication protocol; see Volume.Protocol.
	DefaultProtocol = ProtocolC
	// DefaultPingInterval, DefaultPingTimeout, DefaultTimeout and
	// DefaultConnectInterval are the defaults of ping_interval, ping_timeout,
	// timeout and connect_interval, bounded by the Min* and Max* below.
	DefaultPingInterval    = 10 * time.Second
	DefaultPingTimeout     = 500 * time.Millisecond
	DefaultTimeout         = 6 * time.Second
	DefaultConnectInterval = 3 * time.Second
	MinPingInterval        = time.Second
	MaxPingInterval        = 10 * time.Minute
	MinPingTimeout         = 100 * time.Millisecond
	MaxPingTimeout         = time.Minute
	MinTimeout             = time.Second
	MaxTimeout             = 10 * time.Minute
	MinConnectInterval     = 100 * time.Millisecond
	MaxConnectInterval     = 10 * time.Minute

	// DefaultMaxEpochWrites is the default of max_epoch_writes, which is in
	// [1, MaxEpochWritesLimit].
	DefaultMaxEpochWrites = 2048
	MaxEpochWritesLimit   = 65536

	// DefaultResyncRateMax is the default resync_rate_max: unlimited (0).
	DefaultResyncRateMax = 0
	// DefaultResyncRateMin is the default resync_rate_min, in bytes per second.
	DefaultResyncRateMin = 4 << 20
	// DefaultResyncInFlight is the default resync_in_flight, in bytes; it is in
	// [MinResyncInFlight, MaxResyncInFlight].
	DefaultResyncInFlight = 8 << 20
	MinResyncInFlight     = 64 << 10
	MaxResyncInFlight     = 1 << 30
	// RateUnlimited is the resync_rate_max value for no limit, stored as 0.
	RateUnlimited = "unlimited"

	// DefaultResyncChecksums and DefaultAfterSplitBrain are the defaults of
	// resync_checksums and after_split_brain.
	DefaultResyncChecksums = ResyncChecksumsAfterCrash
	DefaultAfterSplitBrain = AfterSplitBrainDisconnect
)

// Failover: [cluster] failover, failover_profile; [[node]] gossip, witness; and
// the failover keys of [[volume]]. See docs/failover.md.
const (
	// DefaultFailoverProfile is the default failover_profile.
	DefaultFailoverProfile = FailoverProfileDefault

	// The timings of failover_profile = "default": the gossip layer probes a
	// node every DefaultFailoverProbeInterval, waits DefaultFailoverProbeTimeout
	// for the answer and declares a suspect node dead after about
	// DefaultFailoverSuspicionMult probe intervals; a primary's lease lasts
	// DefaultFailoverLease. See Cluster.FailoverProbeInterval.
	DefaultFailoverProbeInterval = time.Second
	DefaultFailoverProbeTimeout  = 500 * time.Millisecond
	DefaultFailoverSuspicionMult = 4
	DefaultFailoverLease         = 3 * time.Second

	// The timings of failover_profile = "fast": quicker failover, at the cost
	// of more gossip traffic and of false suspicions on a loaded network.
	FastFailoverProbeInterval = 200 * time.Millisecond
	FastFailoverProbeTimeout  = 100 * time.Millisecond
	FastFailoverSuspicionMult = 2
	FastFailoverLease         = time.Second

	// DefaultAutoPromote and DefaultQuorumLoss are the defaults of auto_promote
	// and quorum_loss.
	DefaultAutoPromote = true
	DefaultQuorumLoss  = QuorumLossSuspend
	// DefaultHandlerTimeout is the default handler_timeout, which is in
	// [MinHandlerTimeout, MaxHandlerTimeout].
	DefaultHandlerTimeout = 30 * time.Second
	MinHandlerTimeout     = time.Second
	MaxHandlerTimeout     = 10 * time.Minute

	// MinFailoverVoters is the fewest voters (nodes holding a replica, plus
	// witnesses) a replicated volume has with failover on: with two, losing
	// either node would stop writes on the other.
	MinFailoverVoters = 3
)

// The values of failover_profile.
const (
	FailoverProfileDefault = "default" // DefaultFailover... timings
	FailoverProfileFast    = "fast"    // FastFailover... timings
)

// The values of quorum_loss: what a primary does with writes while it has no
// quorum.
const (
	QuorumLossSuspend = "suspend" // hold them until quorum returns
	QuorumLossFail    = "fail"    // fail them with EIO
)

// The values of protocol (as stored in Volume.Protocol; the file may use lower
// case).
const (
	ProtocolA = "A" // a write completes once written locally and sent to the peers
	ProtocolB = "B" // ... and received by the peers
	ProtocolC = "C" // ... and written by the peers
)

// The values of resync_checksums: when a resync compares checksums of blocks
// before sending them.
const (
	ResyncChecksumsAfterCrash = "after-crash"
	ResyncChecksumsAlways     = "always"
	ResyncChecksumsNever      = "never"
)

// The values of after_split_brain: what to do when two replicas that were both
// written independently meet again.
const (
	AfterSplitBrainDisconnect            = "disconnect"
	AfterSplitBrainDiscardZeroChanges    = "discard-zero-changes"
	AfterSplitBrainDiscardLeastChanges   = "discard-least-changes"
	AfterSplitBrainDiscardYoungerPrimary = "discard-younger-primary"
	AfterSplitBrainDiscardSecondary      = "discard-secondary"
)

// Sentinel errors. Every error returned by Parse, Load and CheckNode is, or joins,
// *Error values that unwrap to one or more of these; match them with errors.Is.
var (
	// ErrInvalid: the file is not a valid configuration (syntax, types, values,
	// cross-references, clashes). Every error from Parse wraps it, as do Load's
	// except those reading the file.
	ErrInvalid = errors.New("config: invalid configuration")
	// ErrUnknownKey: the file has a key the schema does not know (also wraps ErrInvalid).
	ErrUnknownKey = errors.New("config: unknown key")
	// ErrUnknownNode: a node name that no [[node]] declares: CheckNode's argument,
	// or a replica's node (then also wraps ErrInvalid).
	ErrUnknownNode = errors.New("config: unknown node")
	// ErrSize: a size string ParseSize cannot read (in Parse, also wraps ErrInvalid).
	ErrSize = errors.New("config: invalid size")
	// ErrDisk: CheckNode found a local replica's disk missing, of the wrong size or
	// of the wrong file type.
	ErrDisk = errors.New("config: disk not usable")
	// ErrNoDir: CheckNode found that a directory which must hold a socket or a disk
	// to be created does not exist.
	ErrNoDir = errors.New("config: directory does not exist")
	// ErrSecret: LoadSecret (or CheckNode, through it) could not use secret_file:
	// missing, unreadable, readable by other users, too short or too long.
	ErrSecret = errors.New("config: secret not usable")
)

// Config is one parsed, statically valid cluster configuration. The same file is
// used by every node; a daemon selects its part with LocalReplicas.
type Config struct {
	Path    string // absolute path of the file (empty when built by Parse)
	Dir     string // absolute directory relative paths were resolved against
	Cluster Cluster
	Nodes   []Node   // in file order
	Volumes []Volume // in file order
}

// Cluster is the [cluster] table.
type Cluster struct {
	Name string
	// Secret and SecretFile give the shared secret of the nodes' HMAC
	// challenge-response; at most one is set, and one is whenever a volume is
	// replicated. Read it with LoadSecret.
	Secret     string // inline secret, MinSecretBytes to MaxSecretBytes, or ""
	SecretFile string // absolute path of a file holding it, or ""

	// Failover turns automatic failover on for every replicated volume (see
	// Volume.Failover). Every node holding a replica of a replicated volume,
	// and every witness, then has a Gossip address.
	Failover bool
	// FailoverProfile is FailoverProfileDefault or FailoverProfileFast; the
	// four timings below are that profile's (the DefaultFailover... or
	// FastFailover... constants). Parse sets them even when Failover is
	// false; they are meaningful only when it is true.
	FailoverProfile string
	// FailoverProbeInterval is how often the gossip layer probes a node,
	// FailoverProbeTimeout (less than it) how long a probe waits for its
	// answer (memberlist's ProbeInterval and ProbeTimeout).
	FailoverProbeInterval time.Duration
	FailoverProbeTimeout  time.Duration
	// FailoverSuspicionMult is memberlist's suspicion multiplier: a suspect
	// node is declared dead after about FailoverSuspicionMult *
	// max(1, log10(nodes)) * FailoverProbeInterval.
	FailoverSuspicionMult int
	// FailoverLease is the length of a primary's lease from its voters.
	FailoverLease time.Duration
}

// Node is one [[node]] table.
type Node struct {
	Name          string
	ControlSocket string // absolute unix socket path
	NBDTCP        string // "host:port" as written, or "" for no TCP listener
	// Address is "host:port" as written, or "": where the node listens for its
	// peers' replication connections and where they dial it. Never a wildcard
	// host; set for every node holding a replica of a replicated volume.
	Address string
	Metrics string // "host:port" as written for the Prometheus endpoint, or ""
	// Gossip is "IP:port" as written, or "": where the node's gossip layer
	// (memberlist) listens, on TCP and UDP, and where the other nodes reach
	// it. The host is a literal IP address, never a wildcard. Set for every
	// voter (see Volume.Voters) when Cluster.Failover is true.
	Gossip string
	// Witness: the node holds no data and only votes in failover elections.
	// Only with Cluster.Failover; a witness holds no replica.
	Witness bool
}

// Volume is one [[volume]] table.
type Volume struct {
	Name            string // also the NBD export name
	Description     string // NBD export description
	SizeBytes       int64  // > 0, multiple of SizeAlignBytes
	BlockSize       uint32 // power of two in [MinBlockSize, MaxBlockSize]
	DeviceTimeout   time.Duration
	DeadConnTimeout time.Duration
	// BytesPerBit is the dirty-bitmap granularity: a power of two in
	// [meta.MinBytesPerBit, meta.MaxBytesPerBit].
	BytesPerBit uint32
	// ALExtents is the number of hot 4 MiB activity-log extents, in
	// [1, activelog.MaxExtents].
	ALExtents int
	// PeerSlots is the number of peer bitmap slots, in [meta.MinPeerSlots,
	// meta.MaxPeerSlots] and at least len(Replicas)-1.
	PeerSlots int
	Replicas  []Replica // at least one, at most one per node

	// Replication; meaningful only when Replicated. Parse sets every field,
	// with its default (Default...) when the key is absent.

	// Protocol is ProtocolA, ProtocolB or ProtocolC: when a write completes.
	Protocol string
	// PingInterval is how often an idle connection is probed; PingTimeout (less
	// than PingInterval) how long a ping may wait for its answer.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// Timeout is how long a write sent to a peer may wait for its
	// acknowledgement before the peer is declared dead.
	Timeout time.Duration
	// ConnectInterval is the retry period while a peer is unreachable.
	ConnectInterval time.Duration
	// MaxEpochWrites: an epoch of replicated writes closes at every FLUSH or FUA
	// and after at most this many writes; in [1, MaxEpochWritesLimit].
	MaxEpochWrites int
	// ResyncRateMax is the resync rate limit in bytes per second, 0 for none;
	// ResyncRateMin (> 0, and <= ResyncRateMax unless that is 0) the rate the
	// resync keeps even under application load.
	ResyncRateMax int64
	ResyncRateMin int64
	// ResyncInFlight is the target amount of resync data in flight, in bytes,
	// in [MinResyncInFlight, MaxResyncInFlight].
	ResyncInFlight int64
	// ResyncChecksums is ResyncChecksumsAfterCrash, ResyncChecksumsAlways or
	// ResyncChecksumsNever.
	ResyncChecksums string
	// AfterSplitBrain is one of the AfterSplitBrain... values.
	AfterSplitBrain string
	// SplitBrainHandler is a command for /bin/sh -c, run by the daemon when it
	// detects a split brain, as written; "" for none.
	SplitBrainHandler string

	// Failover; meaningful only when Failover is true. Parse sets every field,
	// with its default when the key is absent (Preferred: the node of the
	// first replica).

	// Failover: automatic failover applies to this volume, that is
	// Cluster.Failover is true and the volume is Replicated. Its voters are
	// Voters.
	Failover bool
	// AutoPromote allows the nodes of this volume to be promoted
	// automatically (DefaultAutoPromote).
	AutoPromote bool
	// Preferred is the node, holding a replica, that is promoted at cluster
	// start.
	Preferred string
	// QuorumLoss is QuorumLossSuspend or QuorumLossFail: what the primary
	// does with writes while it has no quorum.
	QuorumLoss string
	// AfterPromote, BeforeDemote, FencePeer and QuorumLost are commands for
	// /bin/sh -c, as written ("" for none), run by the daemon: after this
	// node is promoted, before it is demoted, to fence a peer (DRBD's
	// fence-peer contract) and when the primary loses quorum.
	AfterPromote string
	BeforeDemote string
	FencePeer    string
	// TwoNode allows failover with only two voters (the two replicas, no
	// witness): a node then counts the other as gone once the fence_peer
	// handler proved it outdated or powered off (required with it).
	TwoNode    bool
	QuorumLost string
	// HandlerTimeout bounds each run of those handlers, in
	// [MinHandlerTimeout, MaxHandlerTimeout].
	HandlerTimeout time.Duration
}

// Replica is one [[volume.replica]] table: where a node keeps its copy of a volume.
type Replica struct {
	Node      string
	Disk      string // absolute path of a file or block device
	Create    bool   // create Disk sparse (at LocalReplica.DiskBytes) and an external MetaDisk if missing
	NBDSocket string // absolute unix socket path, or ""
	Device    string // /dev/nbdN to attach on Node, or ""
	// MetaDisk is where the replica keeps its metadata (superblock, bitmaps,
	// activity log): MetaDiskInternal (at the end of Disk), MetaDiskNone (no
	// metadata; only for a volume with a single replica) or the absolute path of
	// an external metadata file or block device. See MetaInternal, MetaNone and
	// MetaExternal.
	MetaDisk string
}

// LocalReplica is a replica held by one node, with its volume. Both point into the
// Config they came from.
type LocalReplica struct {
	Volume  *Volume
	Replica *Replica
}

// Error is one problem in a configuration. Section names the table holding the key
// (`volume "r0" replica for node "alpha"`, empty for the top level) and Key the key
// in it ("disk"); for ErrUnknownKey, Key is the full dotted key and Problem a hint
// (possibly empty).
type Error struct {
	Section string
	Key     string
	Problem string
	errs    []error // sentinels and causes, for errors.Is and errors.As
}

func (e *Error) Error() string {
	if errors.Is(e, ErrUnknownKey) {
		if e.Problem != "" {
			return fmt.Sprintf("config: unknown key %q (%s)", e.Key, e.Problem)
		}
		return fmt.Sprintf("config: unknown key %q", e.Key)
	}
	var b strings.Builder
	b.WriteString("config: ")
	if e.Section != "" {
		b.WriteString(e.Section)
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Problem)
	return b.String()
}

// Unwrap returns the sentinels (ErrInvalid, ...) and the underlying causes.
func (e *Error) Unwrap() []error { return e.errs }

// Load reads the file at path and parses it with Parse, resolving relative paths
// against the file's directory. It does not look at disks or sockets: see CheckNode.
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data, filepath.Dir(abs))
	if err != nil {
		return nil, err
	}
	c.Path = abs
	return c, nil
}

// Parse decodes and statically validates a configuration: syntax, types, unknown
// keys, values, references between tables and clashes between names, sockets,
// listeners, disks and devices. Relative paths are resolved against dir, which must
// be absolute. Parse does not touch the filesystem. All problems found are
// reported, joined with errors.Join; each is an *Error wrapping ErrInvalid.
func Parse(data []byte, dir string) (*Config, error) {
	if !filepath.IsAbs(dir) {
		return nil, &Error{Problem: fmt.Sprintf("directory %q for relative paths is not absolute", dir), errs: []error{ErrInvalid}}
	}
	raw, unknown, err := decode(data)
	if err != nil {
		return nil, err
	}
	v := validator{dir: filepath.Clean(dir), errs: unknown}
	c := v.config(raw)
	if err := errors.Join(v.errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// Node returns the node called name.
func (c *Config) Node(name string) (*Node, bool) {
	for i := range c.Nodes {
		if c.Nodes[i].Name == name {
			return &c.Nodes[i], true
		}
	}
	return nil, false
}

// Volume returns the volume called name.
func (c *Config) Volume(name string) (*Volume, bool) {
	for i := range c.Volumes {
		if c.Volumes[i].Name == name {
			return &c.Volumes[i], true
		}
	}
	return nil, false
}

// Replica returns v's replica on node.
func (v *Volume) Replica(node string) (*Replica, bool) {
	for i := range v.Replicas {
		if v.Replicas[i].Node == node {
			return &v.Replicas[i], true
		}
	}
	return nil, false
}

// Replicated reports whether v has more than one replica, and so is replicated
// over the network.
func (v *Volume) Replicated() bool { return len(v.Replicas) > 1 }

// Peers returns the nodes of v's replicas other than node's, in file order (all
// of them if node holds no replica of v); nil if there are none.
func (v *Volume) Peers(node string) []string {
	var peers []string
	for i := range v.Replicas {
		if v.Replicas[i].Node != node {
			peers = append(peers, v.Replicas[i].Node)
		}
	}
	return peers
}

// Voters returns the nodes that vote on v's failover: the nodes of v's
// replicas and every witness of c (the Config v belongs to), sorted, each
// once. They matter only when v.Failover is true.
func (v *Volume) Voters(c *Config) []string {
	voters := c.Witnesses()
	for i := range v.Replicas {
		voters = append(voters, v.Replicas[i].Node)
	}
	slices.Sort(voters)
	return slices.Compact(voters)
}

// Witnesses returns the names of the witness nodes (witness = true), in file
// order; nil if there are none.
func (c *Config) Witnesses() []string {
	var names []string
	for i := range c.Nodes {
		if c.Nodes[i].Witness {
			names = append(names, c.Nodes[i].Name)
		}
	}
	return names
}

// LocalReplicas returns the replicas held by node, in volume order; nil for a node
// with no replica or an unknown node.
func (c *Config) LocalReplicas(node string) []LocalReplica {
	var out []LocalReplica
	for i := range c.Volumes {
		v := &c.Volumes[i]
		if r, ok := v.Replica(node); ok {
			out = append(out, LocalReplica{Volume: v, Replica: r})
		}
	}
	return out
}

// NodeNames returns the node names in file order.
func (c *Config) NodeNames() []string {
	names := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		names[i] = n.Name
	}
	return names
}
