package control

import "time"

// SchemaStatus names the version of the Status document. Frozen: bump the
// suffix (and keep serving the old one) for incompatible changes.
const SchemaStatus = "blkrep.status/v1"

// Status is the answer to GET /v1/status.
type Status struct {
	Schema        string    `json:"schema"`
	Node          string    `json:"node"`
	Cluster       string    `json:"cluster"`
	Version       string    `json:"version"`
	PID           int       `json:"pid"`
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	ControlSocket string    `json:"control_socket"`
	Volumes       []Volume  `json:"volumes"`
	// WitnessVolumes are the volumes this node votes for under automatic
	// failover without holding a replica of them: on a witness, every
	// failing-over volume. Absent on a data node.
	WitnessVolumes []WitnessVolume `json:"witness_volumes,omitempty"`
	// Gossip is this node's view of the failover gossip; nil when the
	// node runs no automatic failover.
	Gossip *Gossip `json:"gossip,omitempty"`
}

// WitnessVolume is a volume this node only votes for.
type WitnessVolume struct {
	Name     string   `json:"name"`
	Failover Failover `json:"failover"`
}

// Failover is one volume's automatic failover state as this node sees it
// (docs/failover.md).
type Failover struct {
	// Term is the highest promotion term this node knows for the volume.
	Term uint64 `json:"term"`
	// Primary is the primary of the newest term known to have had one;
	// "" when none is known.
	Primary string `json:"primary"`
	// IsPrimary: this node is the primary of Term.
	IsPrimary bool `json:"is_primary"`
	// Accepting: the failover decision lets this node acknowledge writes
	// (it is primary and holds a lease from a majority of the voters).
	Accepting bool `json:"accepting"`
	// Writes is the replica's write gate on a data node: "accept", "hold"
	// (writes wait: no majority lease yet, quorum lost under
	// quorum_loss = suspend, or a lost peer not yet declared outdated)
	// or "fail" (writes get EIO: quorum lost under quorum_loss = fail, or
	// demoted). Empty on a witness.
	Writes string `json:"writes,omitempty"`
	// WritesWaiting counts the writes the gate holds now.
	WritesWaiting int `json:"writes_waiting"`
	// Quorum: this node sees a majority of the voters that count.
	Quorum bool `json:"quorum"`
	// Voters are the configured voters (the nodes holding a replica and
	// the witnesses); VotersCounted, those that count for quorum (not the
	// ones that left gracefully); VotersSeen, those of VotersCounted this
	// node sees alive, itself included. All sorted.
	Voters        []string `json:"voters"`
	VotersCounted []string `json:"voters_counted"`
	VotersSeen    []string `json:"voters_seen"`
	// OutdatedPeers: on the primary, the peers it declared out of sync
	// (they miss acknowledged writes and cannot be promoted);
	// OutdatedConfirmed, those a majority of voters has recorded.
	OutdatedPeers     []string `json:"outdated_peers"`
	OutdatedConfirmed []string `json:"outdated_confirmed"`
	// Fenced: with two_node, the peer the fence_peer handler fenced; it
	// does not count for quorum until it is back.
	Fenced []string `json:"fenced"`
	// DataTerm is the term whose acknowledged writes this replica holds
	// (0: none known); 0 on a witness.
	DataTerm uint64 `json:"data_term"`
	// Why is the last decision's one-line explanation.
	Why string `json:"why"`
}

// Gossip is the failover gossip as this node sees it.
type Gossip struct {
	// Address is this node's gossip address (IP:port).
	Address string `json:"address"`
	// Witness: this node is a witness (votes, holds no data).
	Witness bool     `json:"witness"`
	Members []Member `json:"members"`
}

// Member is one node of the gossip, this one included.
type Member struct {
	Name string `json:"name"`
	// Address is its gossip address as the gossip knows it.
	Address string `json:"address"`
	// State is "alive", "suspect" (this node suspects it failed), "dead"
	// (crashed or cut off: counts against quorum) or "left" (stopped
	// gracefully: does not count against quorum).
	State   string `json:"state"`
	Witness bool   `json:"witness"`
	// Error is why its gossiped metadata could not be read.
	Error string `json:"error,omitempty"`
}

// Volume is one volume as this node holds it.
type Volume struct {
	Name string `json:"name"`
	// Role is DRBD's: "Primary" serves I/O, "Secondary" does not.
	Role string `json:"role"`
	// Connection summarises the peers' (Peer.Connection): "StandAlone"
	// while the volume has no peer or is disconnected, "Connected" when
	// every peer is, else the least connected peer's state.
	Connection string `json:"connection"`
	// Protocol is the replication protocol, "A", "B" or "C"; empty
	// without peers.
	Protocol string `json:"protocol,omitempty"`
	// SizeBytes is the exported size.
	SizeBytes int64   `json:"size_bytes"`
	BlockSize uint32  `json:"block_size"`
	Disk      Disk    `json:"disk"`
	Exports   []Addr  `json:"exports"`
	Device    Device  `json:"device"`
	IO        IOStats `json:"io"`
	// Metadata is nil for a volume with meta_disk = "none".
	Metadata *Metadata `json:"metadata,omitempty"`
	// Peers are the other nodes holding a replica, in config order.
	Peers []Peer `json:"peers,omitempty"`
	// Failover is nil unless automatic failover manages the volume on
	// this node.
	Failover *Failover `json:"failover,omitempty"`
}

// Peer is the replication link with one other node for one volume.
type Peer struct {
	Node    string `json:"node"`
	Address string `json:"address"`
	// Connection is StandAlone, Connecting, Connected or Disconnecting.
	Connection string `json:"connection"`
	// Replication is Off, Established, SyncSource, SyncTarget,
	// VerifySource, VerifyTarget, PausedSyncSource or PausedSyncTarget.
	Replication string `json:"replication"`
	// Role is the peer's: Primary, Secondary, or Unknown when not connected.
	Role string `json:"role"`
	// Disk is the peer's disk state, DUnknown when not connected.
	Disk string `json:"disk"`
	// Term is the peer's failover data term as it last told it (at a
	// handshake or while connected; kept after the link drops), absent
	// when 0: failover off or the term unknown.
	Term uint64 `json:"term,omitempty"`
	// OutOfSyncBytes may differ between this node and the peer.
	OutOfSyncBytes int64 `json:"out_of_sync_bytes"`
	// UnackedBytes were sent and not yet acknowledged.
	UnackedBytes   int64 `json:"unacked_bytes"`
	InFlightWrites int   `json:"in_flight_writes"`
	// Handshake is the last connection handshake's decision; nil before
	// the first.
	Handshake *Handshake `json:"handshake,omitempty"`
	// Resync is the running resync, or the last one; nil before the first.
	Resync *Progress `json:"resync,omitempty"`
	// Verify is the running online verify, or the last one.
	Verify *Progress `json:"verify,omitempty"`
	// SplitBrain: both nodes changed the data independently; nothing is
	// resynced until the operator discards one side's changes.
	SplitBrain bool   `json:"split_brain"`
	LastError  string `json:"last_error,omitempty"`
	// SentBytes and ReceivedBytes count replication traffic since start.
	SentBytes     uint64 `json:"sent_bytes"`
	ReceivedBytes uint64 `json:"received_bytes"`
	// Reconnects counts connections established again after a loss.
	Reconnects uint64 `json:"reconnects"`
}

// Handshake is what a connection handshake decided from the two nodes'
// data generations.
type Handshake struct {
	At time.Time `json:"at"`
	// Rule names the rule of the sync decision that fired (protocol's
	// Rule* names, e.g. "peer-current-in-local-history").
	Rule string `json:"rule"`
	// Action is the decision from this node's side (protocol.Action):
	// no-sync, source-bitmap, target-bitmap, source-full, target-full,
	// split-brain or unrelated.
	Action string `json:"action"`
	// LocalCurrent and PeerCurrent are the current generations (16 hex
	// digits) the nodes brought to the handshake.
	LocalCurrent string `json:"local_current"`
	PeerCurrent  string `json:"peer_current"`
}

// Progress is a resync or an online verify, running or finished.
type Progress struct {
	Running bool `json:"running"`
	// Checksum: blocks are compared by checksum (resync sends only those
	// that differ).
	Checksum bool `json:"checksum"`
	// TotalBytes is the work: out-of-sync bytes (resync) or the bytes to
	// compare (verify). It may grow while a resync runs.
	TotalBytes int64 `json:"total_bytes"`
	// DoneBytes of TotalBytes are done: sent, skipped or compared.
	DoneBytes int64 `json:"done_bytes"`
	// SkippedBytes of DoneBytes were found identical by checksum and not sent.
	SkippedBytes int64 `json:"skipped_bytes"`
	// MismatchBytes (verify) of DoneBytes differ; they are marked out of sync.
	MismatchBytes   int64   `json:"mismatch_bytes"`
	RateBytesPerSec float64 `json:"rate_bytes_per_sec"`
	// ETASeconds is the expected time to finish; 0 when unknown or done.
	ETASeconds float64   `json:"eta_seconds"`
	StartedAt  time.Time `json:"started_at"`
	// FinishedAt is nil while running.
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// Metadata is the replica's persistent state: superblock, activity log
// and bitmaps (docs/format/).
type Metadata struct {
	// Placement is "internal" (at the end of the disk) or "external".
	Placement string `json:"placement"`
	Path      string `json:"path"`
	// DiskBytes is the data disk's size; for internal metadata the
	// exported size is smaller by at least AreaBytes.
	DiskBytes int64 `json:"disk_bytes"`
	AreaBytes int64 `json:"area_bytes"`
	// Flags are the superblock's: consistent, was-up-to-date, primary,
	// crashed-primary, al-clean, just-created.
	Flags []string `json:"flags"`
	// Current is the data generation (16 hex digits; zero until the
	// first write of just-created metadata).
	Current string `json:"current"`
	// LastShutdown is "clean" or "crash" (the activity log's hot extents
	// were marked out of sync at start).
	LastShutdown string `json:"last_shutdown"`
	// BadBitmapPages failed their checksum at start (marked all dirty).
	BadBitmapPages int      `json:"bad_bitmap_pages"`
	BytesPerBit    uint32   `json:"bytes_per_bit"`
	ActivityLog    ALStatus `json:"activity_log"`
	// BitmapPageWrites and SuperblockWrites count metadata writes since start.
	BitmapPageWrites uint64     `json:"bitmap_page_writes"`
	SuperblockWrites uint64     `json:"superblock_writes"`
	Peers            []PeerSlot `json:"peers"`
	// Error is set when metadata could not be written: writes are refused.
	Error string `json:"error,omitempty"`
}

// ALStatus is the activity log's state and counters since start.
type ALStatus struct {
	Extents   int    `json:"extents"`   // capacity (al_extents)
	Hot       int    `json:"hot"`       // hot extents now
	InFlight  int    `json:"in_flight"` // extent references of writes in flight
	Waiting   int    `json:"waiting"`   // writes waiting for a transaction
	Writes    uint64 `json:"writes"`    // transaction records written
	Evictions uint64 `json:"evictions"` // extents made cold
	Starved   uint64 `json:"starved"`   // times no extent could be evicted
	Seq       uint64 `json:"seq"`       // newest record's sequence
}

// PeerSlot is one peer's bitmap.
type PeerSlot struct {
	Slot int `json:"slot"`
	// Node is empty for an unused slot.
	Node string `json:"node"`
	// DirtyBytes is how much of the volume may differ from the peer.
	DirtyBytes int64    `json:"dirty_bytes"`
	BitmapID   string   `json:"bitmap_id"`
	Flags      []string `json:"flags"`
}

// Disk is the local backing store.
type Disk struct {
	Path string `json:"path"`
	// Kind is "file" or "block".
	Kind string `json:"kind"`
	// State is "UpToDate", "Consistent", "Outdated", "Inconsistent",
	// "DUnknown", "Diskless" or "Failed" (a sync or write failed: writes
	// are refused until the daemon is restarted on a healthy disk).
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// Addr is a listening NBD endpoint.
type Addr struct {
	// Kind is "unix" or "tcp".
	Kind    string `json:"kind"`
	Address string `json:"address"`
	// URI is what NBD clients (qemu-io, nbdinfo...) take.
	URI string `json:"uri"`
}

// Device is the kernel block device.
type Device struct {
	// Path is e.g. "/dev/nbd0"; empty when none is configured.
	Path string `json:"path,omitempty"`
	// State is "none" (not configured), "attached", "detached" or
	// "unavailable" (see Error).
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// IOStats are the volume's NBD counters since the daemon started.
type IOStats struct {
	Clients      int64  `json:"clients"`
	TotalClients uint64 `json:"total_clients"`
	Reads        uint64 `json:"reads"`
	Writes       uint64 `json:"writes"`
	Flushes      uint64 `json:"flushes"`
	Trims        uint64 `json:"trims"`
	WriteZeroes  uint64 `json:"write_zeroes"`
	Caches       uint64 `json:"caches"`
	BlockStatus  uint64 `json:"block_status"`
	BytesRead    uint64 `json:"bytes_read"`
	BytesWritten uint64 `json:"bytes_written"`
	Errors       uint64 `json:"errors"`
}
