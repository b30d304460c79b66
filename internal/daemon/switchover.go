package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/blkrep/blkrep/failover"
	"github.com/blkrep/blkrep/internal/control"
	"github.com/blkrep/blkrep/internal/repl"
)

// switchoverDrain bounds how long a planned switchover waits for the
// replication of writes already acknowledged (protocols A and B) to reach
// the node taking over; switchoverElect how long it waits for that node's
// election before it reports the outcome as unknown.
var (
	switchoverDrain = 30 * time.Second
	switchoverElect = 15 * time.Second
)

// switchover is `blkrep failover VOLUME [--to NODE]` on the primary
// (docs/failover.md, "Planned switchover"): the before-demote handler
// runs (it stops the service and unmounts), the kernel device is
// detached, writes are held, the replication to the node taking over is
// drained, then the runner steps down, ends its lease and asks that node
// to take over, which it does at once. Every refusal before the step down
// leaves everything as it was.
func (d *Daemon) switchover(ctx context.Context, v *replica, req control.Request) (control.Reply, error) {
	name := v.cfg.Name
	if d.runner == nil || v.gate == nil {
		return control.Reply{}, refusal(409, "a planned switchover of %s needs automatic failover ([cluster] failover = true); "+
			"without it run 'blkrep secondary %s' here, then 'blkrep primary %s' on the other node", name, name, name)
	}
	before := d.failoverStatus(name)
	term, prim := before.Term, before.Primary
	if !v.vol.Primary() || v.gate.Mode() != repl.GateAccept {
		where := ""
		if prim != "" && prim != d.node.Name {
			where = fmt.Sprintf(": run it on %s, the primary of term %d", prim, term)
		}
		return control.Reply{}, refusal(409, "%s is not the primary of %s accepting writes (gate %s)%s", d.node.Name, name, v.gate.Mode(), where)
	}
	if _, err := d.runner.HandoverTarget(name, req.To); err != nil {
		return control.Reply{}, refusal(409, "%v; nothing changed", err)
	}
	if err := d.runHandlerErr(name, "before-demote", "planned switchover (blkrep failover)"); err != nil {
		return control.Reply{}, refusal(409, "%v; nothing changed: %s is still the primary of %s", err, d.node.Name, name)
	}
	d.mu.Lock()
	dev := v.dev
	d.mu.Unlock()
	if dev != nil && dev.status(v.replica.Device).State != "detached" {
		if err := deviceBusy(v.replica.Device); err != nil {
			return control.Reply{}, refusal(409, "%s: %v: unmount it (the before_demote handler is the place); nothing changed", v.replica.Device, err)
		}
		if err := dev.detach(); err != nil {
			return control.Reply{}, refusal(409, "detaching %s: %v; %s stays primary", v.replica.Device, err, d.node.Name)
		}
		d.mu.Lock()
		v.dev = nil
		d.mu.Unlock()
	}
	if s, ok := d.srv.Stats(name); ok && s.Connections > 0 {
		return control.Reply{}, refusal(409, "%d NBD client(s) have %s open on %s: disconnect them first (the before_demote handler is the place); nothing changed",
			s.Connections, name, d.node.Name)
	}
	// Hold writes (a client connecting now waits), then let the peers
	// acknowledge everything already sent.
	start := time.Now()
	v.gate.SetMode(repl.GateHold)
	resume := func() {
		if st := d.failoverStatus(name); st.IsPrimary && st.Accepting {
			v.gate.SetMode(repl.GateAccept)
		}
	}
	if !v.rep.Drain(switchoverDrain) {
		resume()
		return control.Reply{}, refusal(503, "the replication of %s did not drain within %v; nothing changed: %s is still the primary", name, switchoverDrain, d.node.Name)
	}
	to, err := d.runner.Handover(name, req.To)
	if err != nil {
		resume()
		return control.Reply{}, refusal(409, "%v; nothing changed: %s is still the primary of %s", err, d.node.Name, name)
	}
	for time.Since(start) < switchoverElect && ctx.Err() == nil {
		if st := d.failoverStatus(name); st.Primary == to && st.Term > term {
			return control.Reply{Message: fmt.Sprintf("%s handed over to %s: %s is the primary of term %d (writes held %.1f s)",
				name, to, to, st.Term, time.Since(start).Seconds())}, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return control.Reply{}, refusal(503, "%s stepped down and asked %s to take over, but no election of %s is known here yet: check 'blkrep status' on %s",
		d.node.Name, to, to, to)
}

// roleUnderFailover is 'blkrep primary' and 'blkrep secondary' on a
// volume failover manages: they go through the same rules as the
// automatic decisions (docs/failover.md, "Operator requests").
func (d *Daemon) roleUnderFailover(ctx context.Context, v *replica, req control.Request) (control.Reply, error) {
	name := v.cfg.Name
	if d.runner == nil {
		return control.Reply{}, refusal(503, "automatic failover of %s is not running on %s (see the log): no role change now", name, d.node.Name)
	}
	if req.Action == control.ActionSecondary {
		if !d.failoverStatus(name).IsPrimary {
			return control.Reply{}, refusal(409, "%s is not the primary of %s", d.node.Name, name)
		}
		if err := d.unused(v); err != nil {
			return control.Reply{}, err
		}
		if err := d.runner.RequestSecondary(name); err != nil {
			return control.Reply{}, refusal(409, "%v", err)
		}
		return control.Reply{Message: fmt.Sprintf("%s is Secondary on %s; no node is promoted while %s lives, until 'blkrep primary %s' on a node (or 'blkrep failover')",
			name, d.node.Name, d.node.Name, name)}, nil
	}
	if req.Force {
		return control.Reply{}, refusal(409, "primary --force would bypass the voters, which automatic failover never does: "+
			"'blkrep primary %s' asks for an election; to force stale data into service, turn failover off for the cluster first", name)
	}
	if err := d.runner.RequestPrimary(name); err != nil {
		return control.Reply{}, refusal(409, "%v", err)
	}
	deadline := time.Now().Add(switchoverElect)
	var st failover.VolumeStatus
	for time.Now().Before(deadline) && ctx.Err() == nil {
		st = d.failoverStatus(name)
		switch {
		case st.IsPrimary && st.Accepting:
			return control.Reply{Message: fmt.Sprintf("%s is Primary on %s (elected for term %d)", name, d.node.Name, st.Term)}, nil
		case strings.Contains(st.Why, "got no majority") || strings.Contains(st.Why, "refuses"):
			return control.Reply{}, refusal(409, "%s was not elected: %s (see the voters' reasons in the log)", d.node.Name, st.Why)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return control.Reply{}, refusal(503, "%s was not elected within %v: %s", d.node.Name, switchoverElect, st.Why)
}

// failoverStatus is the runner's view of volume (zero if it has none).
func (d *Daemon) failoverStatus(volume string) failover.VolumeStatus {
	for _, st := range d.runner.Status() {
		if st.Volume == volume {
			return st
		}
	}
	return failover.VolumeStatus{}
}

// deviceBusy reports whether something holds the block device open
// exclusively (a mounted file system does): an exclusive open then fails
// with EBUSY.
func deviceBusy(path string) error {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_EXCL|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.EBUSY) {
		return errors.New("in use (mounted, or open exclusively)")
	}
	if err == nil {
		syscall.Close(fd)
	}
	return nil
}
