package daemon

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/blkrep/blkrep/failover"
	"github.com/blkrep/blkrep/internal/config"
	"github.com/blkrep/blkrep/internal/control"
	"github.com/blkrep/blkrep/internal/repl"
)

// Automatic failover (docs/failover.md): when [cluster] failover = true the
// daemon joins the gossip on its node's gossip address and runs a
// failover.Runner over every failing-over volume it votes for: the ones it
// holds a replica of, or all of them on a witness.

// statePath is where a volume's failover state lives: next to the node's
// control socket.
func (d *Daemon) statePath(volume string) string {
	return filepath.Join(filepath.Dir(d.node.ControlSocket), fmt.Sprintf("%s-%s.failover.json", d.node.Name, volume))
}

func (d *Daemon) startFailover() error {
	c := d.cfg.Cluster
	if !c.Failover || d.node.Gossip == "" {
		return nil
	}
	var vols []failover.RunnerVolume
	for i := range d.cfg.Volumes {
		vc := &d.cfg.Volumes[i]
		if !vc.Failover || !slices.Contains(vc.Voters(d.cfg), d.node.Name) {
			continue
		}
		dc := failover.DeciderConfig{
			Volume: vc.Name, Voters: vc.Voters(d.cfg), Preferred: vc.Preferred, AutoPromote: vc.AutoPromote,
			Lease: c.FailoverLease.Milliseconds(),
		}
		for _, w := range d.cfg.Witnesses() {
			if slices.Contains(dc.Voters, w) {
				dc.Witnesses = append(dc.Witnesses, w)
			}
		}
		dc.TwoNode = vc.TwoNode
		if vc.QuorumLoss == config.QuorumLossFail {
			dc.Policy = failover.PolicyFail
		}
		rv := failover.RunnerVolume{Decider: dc, StatePath: d.statePath(vc.Name)}
		for _, v := range d.volumes {
			if v.cfg.Name == vc.Name && v.rep != nil {
				rv.Replica = &repl.FailoverControl{Rep: v.rep, Gate: v.gate, Promoted: func() { d.attachIfConfigured(v) }}
			}
		}
		if rv.Replica == nil && !d.node.Witness {
			continue // the replica did not open (reported at start)
		}
		vols = append(vols, rv)
	}
	if len(vols) == 0 && !d.node.Witness {
		return nil
	}
	secret, err := d.cfg.LoadSecret()
	if err != nil {
		return err
	}
	var seeds []string
	for _, n := range d.cfg.Nodes {
		if n.Name != d.node.Name && n.Gossip != "" {
			seeds = append(seeds, n.Gossip)
		}
	}
	log := d.log.With("component", "failover")
	g, err := failover.StartGossip(failover.GossipConfig{
		Cluster: c.Name, Node: d.node.Name, Bind: d.node.Gossip, Seeds: seeds, Secret: []byte(secret),
		ProbeInterval: c.FailoverProbeInterval, ProbeTimeout: c.FailoverProbeTimeout, SuspicionMult: c.FailoverSuspicionMult,
		Log: log,
	}, failover.NodeMeta{Witness: d.node.Witness})
	if err != nil {
		return fmt.Errorf("node %q: gossip: %w", d.node.Name, err)
	}
	r, err := failover.StartRunner(failover.RunnerConfig{
		Cluster: c.Name, Node: d.node.Name, Witness: d.node.Witness, Gossip: g, Volumes: vols, Log: log,
		Handler: d.runHandler, Fence: d.runFence, Notify: d.failoverNotify(),
	})
	if err != nil {
		g.Shutdown()
		return err
	}
	d.mu.Lock() // replication callbacks read d.runner
	d.gossip, d.runner = g, r
	d.mu.Unlock()
	log.Info("automatic failover running", "gossip", d.node.Gossip, "volumes", len(vols), "witness", d.node.Witness)
	return nil
}

// stopFailover leaves the gossip gracefully (the others then do not
// count this node against quorum) and stops the runner.
func (d *Daemon) stopFailover() {
	if d.runner != nil {
		d.runner.Close()
	}
	if d.gossip != nil {
		if err := d.gossip.Leave(2 * time.Second); err != nil {
			d.log.Warn("leaving the gossip", "err", err)
		}
		d.gossip.Shutdown()
	}
}

// runHandler runs a volume's configured handler command with
// BLKREP_* variables, bounded by handler_timeout. A failure or a timeout
// is logged and published as an event; it never wedges the daemon.
func (d *Daemon) runHandler(volume, name, reason string) { _ = d.runHandlerErr(volume, name, reason) }

// runHandlerErr is runHandler reporting the failure (nil: it succeeded
// or none is configured).
func (d *Daemon) runHandlerErr(volume, name, reason string) error {
	var vc *config.Volume
	for i := range d.cfg.Volumes {
		if d.cfg.Volumes[i].Name == volume {
			vc = &d.cfg.Volumes[i]
		}
	}
	if vc == nil {
		return nil
	}
	cmd := map[string]string{"after-promote": vc.AfterPromote, "before-demote": vc.BeforeDemote,
		"quorum-lost": vc.QuorumLost, "fence-peer": vc.FencePeer}[name]
	msg := "no command configured"
	if cmd != "" {
		msg = cmd
	}
	d.bus.Publish(control.Event{Volume: volume, Kind: "failover-handler", New: name, Message: msg})
	if cmd == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), vc.HandlerTimeout)
	defer cancel()
	c := handlerCommand(ctx, cmd)
	dev := ""
	for _, v := range d.volumes {
		if v.cfg.Name == volume {
			dev = v.replica.Device
		}
	}
	c.Env = append(os.Environ(), "BLKREP_HANDLER="+name, "BLKREP_VOLUME="+volume, "BLKREP_NODE="+d.node.Name,
		"BLKREP_DEVICE="+dev, "BLKREP_CLUSTER="+d.cfg.Cluster.Name, "BLKREP_REASON="+reason,
		"BLKREP_PEERS="+strings.Join(vc.Peers(d.node.Name), " "))
	out, err := c.CombinedOutput()
	switch {
	case ctx.Err() != nil:
		d.log.Error("failover handler timed out", "volume", volume, "handler", name, "timeout", vc.HandlerTimeout, "output", string(out))
		err = fmt.Errorf("the %s handler timed out after %v (killed)", name, vc.HandlerTimeout)
		d.bus.Publish(control.Event{Volume: volume, Kind: "failover-handler", New: name, Message: err.Error()})
		return err
	case err != nil:
		d.log.Error("failover handler failed", "volume", volume, "handler", name, "err", err, "output", string(out))
		err = fmt.Errorf("the %s handler failed (%v): %s", name, err, strings.TrimSpace(string(out)))
		d.bus.Publish(control.Event{Volume: volume, Kind: "failover-handler", New: name, Message: err.Error()})
		return err
	default:
		d.log.Info("failover handler done", "volume", volume, "handler", name, "output", string(out))
	}
	return nil
}

// runFence runs a volume's fence_peer command against peer with
// BLKREP_PEER set, under handler_timeout, and applies DRBD's exit-code
// contract: 3 (the peer's disk is already Inconsistent), 4 (the peer was
// outdated) and 7 (the peer was powered off) mean the peer can no longer
// acknowledge writes; anything else, or a timeout, means it may.
func (d *Daemon) runFence(volume, peer string) bool {
	var vc *config.Volume
	for i := range d.cfg.Volumes {
		if d.cfg.Volumes[i].Name == volume {
			vc = &d.cfg.Volumes[i]
		}
	}
	if vc == nil || vc.FencePeer == "" {
		d.log.Error("no fence_peer handler: the peer cannot be fenced", "volume", volume, "peer", peer)
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), vc.HandlerTimeout)
	defer cancel()
	c := handlerCommand(ctx, vc.FencePeer)
	c.Env = append(os.Environ(), "BLKREP_HANDLER=fence-peer", "BLKREP_VOLUME="+volume, "BLKREP_NODE="+d.node.Name,
		"BLKREP_PEER="+peer, "BLKREP_CLUSTER="+d.cfg.Cluster.Name)
	out, err := c.CombinedOutput()
	code := c.ProcessState.ExitCode()
	ok := ctx.Err() == nil && (code == 3 || code == 4 || code == 7)
	msg := fmt.Sprintf("fence-peer against %s exited %d: %s", peer, code, map[bool]string{true: "fenced", false: "NOT fenced: nothing is promoted and writes stay held"}[ok])
	if ctx.Err() != nil {
		msg = fmt.Sprintf("fence-peer against %s timed out after %v: NOT fenced", peer, vc.HandlerTimeout)
	}
	d.bus.Publish(control.Event{Volume: volume, Peer: peer, Kind: "failover-handler", New: "fence-peer", Message: msg})
	if ok {
		d.log.Warn(msg, "volume", volume, "output", strings.TrimSpace(string(out)))
	} else {
		d.log.Error(msg, "volume", volume, "err", err, "output", strings.TrimSpace(string(out)))
	}
	return ok
}

// handlerCommand runs cmd with /bin/sh -c in its own process group: when
// ctx ends (handler_timeout) the whole group is killed, and the output is
// not waited for longer than a second after that, so a handler that
// leaves a child behind holding its output cannot wedge the daemon.
func handlerCommand(ctx context.Context, cmd string) *exec.Cmd {
	c := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = time.Second
	return c
}
