package repl

import "github.com/blkrep/blkrep/failover"

// FailoverControl adapts a Replica and its FailoverGate to
// failover.ReplicaControl: the glue between a failover.Runner and the
// replication layer, shared by the daemon and the torture harness
// (internal/torture).
type FailoverControl struct {
	Rep  *Replica
	Gate *FailoverGate
	// Promoted, when set, runs after a successful promotion (the daemon
	// attaches the volume's NBD device).
	Promoted func()
}

var _ failover.ReplicaControl = (*FailoverControl)(nil)

func diskOf(s string) failover.Disk {
	switch s {
	case "UpToDate":
		return failover.DiskUpToDate
	case "Consistent":
		return failover.DiskConsistent
	case "Outdated":
		return failover.DiskOutdated
	case "Inconsistent":
		return failover.DiskInconsistent
	}
	return failover.DiskUnknown
}

// Local reports the replica's role and disk, and the peers it is in sync
// with: connected, established, UpToDate and nothing out of sync (a
// session that looks alive here may be dead on the other side; the
// terms the peers announced on it say which).
func (c *FailoverControl) Local() failover.Local {
	r := c.Rep
	l := failover.Local{Role: failover.RoleSecondary, Disk: diskOf(r.DiskState())}
	if r.v.Primary() {
		l.Role = failover.RolePrimary
	}
	if l.Disk != failover.DiskUpToDate {
		return l
	}
	l.PeerTerms = map[string]uint64{}
	for _, p := range r.Peers() {
		if p.Connection == ConnConnected && p.Replication == ReplEstablished && p.Disk == "UpToDate" && p.OutOfSyncBytes == 0 {
			l.InSyncWith = append(l.InSyncWith, p.Node)
			l.PeerTerms[p.Node] = p.Term
		}
	}
	return l
}

// Promote makes the replica Primary (PromoteElected); writes stay held
// by the gate until SetWrites(WritesAccept).
func (c *FailoverControl) Promote(term uint64) error {
	if err := c.Rep.PromoteElected(); err != nil {
		return err
	}
	if c.Promoted != nil {
		c.Promoted()
	}
	return nil
}

// Demote fails the held writes (they can never be acknowledged now) and
// steps down.
func (c *FailoverControl) Demote() error {
	c.Gate.SetMode(GateFail)
	return c.Rep.StepDown()
}

// SetWrites sets the gate's mode.
func (c *FailoverControl) SetWrites(m failover.WriteMode) {
	switch m {
	case failover.WritesAccept:
		c.Gate.SetMode(GateAccept)
	case failover.WritesFail:
		c.Gate.SetMode(GateFail)
	default:
		c.Gate.SetMode(GateHold)
	}
}

// SetTerm passes the data term to the replication handshake.
func (c *FailoverControl) SetTerm(dataTerm uint64) { c.Rep.SetTerm(dataTerm) }

// SetOutdated tells the gate whether peer's outdate is confirmed.
func (c *FailoverControl) SetOutdated(peer string, confirmed bool) {
	c.Gate.SetOutdated(peer, confirmed)
}

// SetElecting tells the replica whether this node runs an election.
func (c *FailoverControl) SetElecting(electing bool) { c.Rep.SetElecting(electing) }
