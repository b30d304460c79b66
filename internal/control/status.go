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
}

// Volume is one volume as this node holds it.
type Volume struct {
	Name string `json:"name"`
	// Role is DRBD's: "Primary" serves I/O, "Secondary" does not.
	Role string `json:"role"`
	// Connection is "StandAlone" while the volume has no peer.
	Connection string `json:"connection"`
	// SizeBytes is the exported size.
	SizeBytes int64   `json:"size_bytes"`
	BlockSize uint32  `json:"block_size"`
	Disk      Disk    `json:"disk"`
	Exports   []Addr  `json:"exports"`
	Device    Device  `json:"device"`
	IO        IOStats `json:"io"`
}

// Disk is the local backing store.
type Disk struct {
	Path string `json:"path"`
	// Kind is "file" or "block".
	Kind string `json:"kind"`
	// State is "UpToDate" or "Failed" (a sync or write failed: writes are
	// refused until the daemon is restarted on a healthy disk).
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
