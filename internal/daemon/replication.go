package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/blkrep/blkrep/failover"
	"github.com/blkrep/blkrep/internal/control"
	"github.com/blkrep/blkrep/internal/repl"
)

// startReplication opens the node's replication listener when it holds a
// replica of a replicated volume.
func (d *Daemon) startReplication() error {
	need := false
	for _, lr := range d.cfg.LocalReplicas(d.node.Name) {
		need = need || lr.Volume.Replicated()
	}
	if !need {
		return nil
	}
	l, err := net.Listen("tcp", d.node.Address)
	if err != nil {
		return fmt.Errorf("node %q: address: %w", d.node.Name, err)
	}
	d.rln = repl.NewListener(l, d.cfg.Cluster.Name, d.node.Name, d.log)
	d.log.Info("replication listening", "address", d.node.Address)
	return nil
}

// newReplica builds the replication of a local volume.
func (d *Daemon) newReplica(v *replica, log *slog.Logger) (*repl.Replica, error) {
	secret, err := d.cfg.LoadSecret()
	if err != nil {
		return nil, err
	}
	vc := v.cfg
	var peers []repl.Peer
	for _, name := range vc.Peers(d.node.Name) {
		n, _ := d.cfg.Node(name)
		peers = append(peers, repl.Peer{Node: name, Address: n.Address})
	}
	if vc.Failover {
		v.gate = repl.NewFailoverGate() // writes wait until failover says this node may acknowledge them
	}
	r, err := repl.New(repl.Config{
		Gate:    v.gate,
		Cluster: d.cfg.Cluster.Name, Volume: vc.Name, Node: d.node.Name,
		Protocol: vc.Protocol[0], Peers: peers, Secret: secret,
		PingInterval: vc.PingInterval, PingTimeout: vc.PingTimeout, Timeout: vc.Timeout, ConnectInterval: vc.ConnectInterval,
		MaxEpochWrites: vc.MaxEpochWrites,
		ResyncRateMax:  vc.ResyncRateMax, ResyncRateMin: vc.ResyncRateMin, ResyncInFlight: vc.ResyncInFlight,
		ResyncChecksums: vc.ResyncChecksums, AfterSplitBrain: vc.AfterSplitBrain, SplitBrainHandler: vc.SplitBrainHandler,
		Log: log,
		Event: func(peer, kind, old, new, msg string) {
			d.bus.Publish(control.Event{Volume: vc.Name, Peer: peer, Kind: kind, Old: old, New: new, Message: msg})
		},
		OnPeerTerm: func(peer string, term uint64) {
			d.mu.Lock()
			run := d.runner
			d.mu.Unlock()
			if run != nil {
				run.ObserveTerm(vc.Name, peer, term)
			}
		},
	}, v.vol)
	if err != nil {
		return nil, err
	}
	if vc.Failover {
		// The data term travels in every handshake (docs/failover.md, "The
		// term in replication traffic"): known from the first one on.
		st, _, err := failover.LoadState(d.statePath(vc.Name), d.cfg.Cluster.Name, vc.Name, d.node.Name)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.SetTerm(st.DataTerm)
	}
	d.rln.Add(r)
	return r, nil
}

// Subscribe streams events (control.Handler).
func (d *Daemon) Subscribe() (<-chan control.Event, func()) { return d.bus.Subscribe() }

func refusal(code int, format string, args ...any) error {
	return &control.ActionError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Do runs an operator action (control.Handler).
func (d *Daemon) Do(ctx context.Context, req control.Request) (control.Reply, error) {
	var v *replica
	for _, x := range d.volumes {
		if x.cfg.Name == req.Volume {
			v = x
		}
	}
	if v == nil {
		return control.Reply{}, refusal(404, "no volume %q on node %s", req.Volume, d.node.Name)
	}
	if v.rep == nil {
		return control.Reply{}, refusal(400, "volume %q has a single replica: it is always Primary and has no peer to %s", req.Volume, req.Action)
	}
	r := v.rep
	wrap := func(err error) error {
		var re *repl.RefusedError
		if errors.As(err, &re) {
			return refusal(409, "%s", re.Msg)
		}
		return err
	}
	if v.gate != nil && (req.Action == control.ActionPrimary || req.Action == control.ActionSecondary) {
		return d.roleUnderFailover(ctx, v, req)
	}
	switch req.Action {
	case control.ActionFailover:
		return d.switchover(ctx, v, req)
	case control.ActionPrimary:
		if err := r.Promote(req.Force); err != nil {
			return control.Reply{}, wrap(err)
		}
		d.attachIfConfigured(v)
		return control.Reply{Message: fmt.Sprintf("%s is Primary on %s", req.Volume, d.node.Name)}, nil
	case control.ActionSecondary:
		if err := d.unused(v); err != nil {
			return control.Reply{}, err
		}
		if err := r.Demote(); err != nil {
			return control.Reply{}, wrap(err)
		}
		return control.Reply{Message: fmt.Sprintf("%s is Secondary on %s", req.Volume, d.node.Name)}, nil
	case control.ActionConnect:
		r.Connect()
		return control.Reply{Message: fmt.Sprintf("%s: connecting to its peers", req.Volume)}, nil
	case control.ActionDisconnect:
		r.Disconnect()
		return control.Reply{Message: fmt.Sprintf("%s: disconnected (StandAlone until `blkrep connect %s`)", req.Volume, req.Volume)}, nil
	case control.ActionResync:
		if err := r.Resync(req.Full, req.DiscardMyData); err != nil {
			return control.Reply{}, wrap(err)
		}
		switch {
		case req.DiscardMyData:
			return control.Reply{Message: fmt.Sprintf("%s: this node's changes will be discarded: it reconnects as sync target", req.Volume)}, nil
		case req.Full:
			return control.Reply{Message: fmt.Sprintf("%s: full resync from this node requested", req.Volume)}, nil
		}
		return control.Reply{Message: fmt.Sprintf("%s: handshake requested; a resync starts if the bitmaps say so", req.Volume)}, nil
	case control.ActionInvalidate:
		if err := r.Invalidate(); err != nil {
			return control.Reply{}, wrap(err)
		}
		return control.Reply{Message: fmt.Sprintf("%s: local data invalidated; a full resync into this node follows", req.Volume)}, nil
	case control.ActionVerify:
		n, err := r.Verify()
		if err != nil {
			return control.Reply{}, wrap(err)
		}
		return control.Reply{Message: fmt.Sprintf("%s: online verify started with %d peer(s); differing blocks are marked out of sync, not repaired", req.Volume, n)}, nil
	}
	return control.Reply{}, refusal(400, "unknown action %q", req.Action)
}

// unused refuses a step down while NBD clients or the kernel device use
// the volume on this node.
func (d *Daemon) unused(v *replica) error {
	if s, ok := d.srv.Stats(v.cfg.Name); ok && s.Connections > 0 {
		return refusal(409, "%d NBD client(s) have %s open on %s: disconnect them (unmount, detach) first", s.Connections, v.cfg.Name, d.node.Name)
	}
	d.mu.Lock()
	dev := v.dev
	d.mu.Unlock()
	if dev != nil && dev.status(v.replica.Device).State == "attached" {
		return refusal(409, "%s is attached as %s on %s: unmount it; blkrepd detaches it when it becomes Secondary only if nothing holds it open", v.cfg.Name, v.replica.Device, d.node.Name)
	}
	return nil
}

// attachIfConfigured attaches the kernel device after a promotion.
func (d *Daemon) attachIfConfigured(v *replica) {
	if v.replica.Device == "" {
		return
	}
	d.mu.Lock()
	has := v.dev != nil
	d.mu.Unlock()
	if has {
		return
	}
	dev := d.attach(v)
	d.mu.Lock() // Status reads v.dev from the control goroutine
	v.dev = dev
	d.mu.Unlock()
}

var _ control.Handler = (*Daemon)(nil)
