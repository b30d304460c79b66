package failover

// Role is a replica's role as gossiped.
type Role uint8

const (
	RoleSecondary Role = iota
	RolePrimary
)

func (r Role) String() string {
	switch r {
	case RoleSecondary:
		return "Secondary"
	case RolePrimary:
		return "Primary"
	}
	return "Role(?)"
}

// Disk is a replica's disk state as gossiped (the names of blkrep status).
type Disk uint8

const (
	DiskUnknown Disk = iota // DUnknown: not reported
	DiskInconsistent
	DiskOutdated
	DiskConsistent
	DiskUpToDate
)

func (d Disk) String() string {
	switch d {
	case DiskUnknown:
		return "DUnknown"
	case DiskInconsistent:
		return "Inconsistent"
	case DiskOutdated:
		return "Outdated"
	case DiskConsistent:
		return "Consistent"
	case DiskUpToDate:
		return "UpToDate"
	}
	return "Disk(?)"
}

// VolumeMeta is one volume's state as a node gossips it.
type VolumeMeta struct {
	Name string // the volume's name (1 to 64 bytes)
	Role Role
	Disk Disk
	// Term is the highest promotion term this node knows for the volume.
	Term uint64
	// DataTerm is the term whose acknowledged writes this replica holds in
	// full: the term it was Primary in, or the term of the Primary it was
	// connected to and in sync with (0: none known).
	DataTerm uint64
	// InSync: connected to the Primary of Term and in sync with it now.
	InSync bool
}

// NodeMeta is what a node puts in its memberlist node metadata.
type NodeMeta struct {
	Witness bool // a witness: votes, holds no data
	// Leaving: the node announced a graceful stop (it then leaves the
	// cluster); it does not count against quorum afterwards.
	Leaving bool
	Volumes []VolumeMeta // sorted by name, names unique
}

// MemberState is a node's state in the gossip layer's view.
type MemberState uint8

const (
	StateAlive MemberState = iota
	StateSuspect
	StateDead
	StateLeft // left gracefully: does not count against quorum
)

func (s MemberState) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return "state(?)"
}
