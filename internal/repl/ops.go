package repl

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/blkrep/blkrep/internal/control"
	"github.com/blkrep/blkrep/meta"
)

// handlerTimeout bounds a configured handler.
const handlerTimeout = 60 * time.Second

// Promote makes the replica Primary. It refuses while a connected peer is
// Primary, and, without force, when the local data is not UpToDate (a
// sync target, or never synced).
func (r *Replica) Promote(force bool) error {
	if r.v.Primary() {
		return nil
	}
	for _, l := range r.links {
		if l.peerPrimary() {
			return refusedf("%s is Primary; run `blkrep secondary %s` there first", l.peer.Node, r.cfg.Volume)
		}
		l.mu.Lock()
		target := l.state.repl == ReplSyncTarget
		l.mu.Unlock()
		if target && !force {
			return refusedf("a resync from %s into this replica is running: its data is Inconsistent until it ends (`--force` would make it Primary anyway, with incomplete data)", l.peer.Node)
		}
	}
	if !r.v.UpToDate() && !force {
		return refusedf("the local data is %s, not UpToDate: connect to a peer with good data and let the resync finish, or `blkrep primary --force %s` to declare this copy the good one",
			r.DiskState(), r.cfg.Volume)
	}
	if err := r.v.SetPrimary(true, force); err != nil {
		return err
	}
	r.cfg.Event("", "role", "Secondary", "Primary", "")
	r.log.Info("now Primary", "force", force)
	for _, l := range r.links {
		l.sendState()
	}
	return nil
}

// PromoteElected is Promote for a node automatic failover elected
// (docs/failover.md): the voters decided, so a peer this replica still
// sees as Primary is a stale one whose link has not noticed yet (a
// partition waits for the ping timeout). Its session is dropped (the
// link reconnects, and the handshake's term check refuses the stale
// primary) and the promotion goes ahead. Writes that peer had in flight
// were never acknowledged: it lost its lease before this election.
func (r *Replica) PromoteElected() error {
	var dropped bool
	for _, l := range r.links {
		if !l.peerPrimary() {
			continue
		}
		l.mu.Lock()
		s := l.sess
		l.mu.Unlock()
		if s != nil {
			r.log.Warn("dropping the session with the stale primary: this node was elected", "peer", l.peer.Node)
			s.kill(fmt.Errorf("%s was elected primary: the session with %s, primary of an older term, ends", r.cfg.Node, l.peer.Node))
			dropped = true
		}
	}
	if dropped {
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			stale := false
			for _, l := range r.links {
				stale = stale || l.peerPrimary()
			}
			if !stale {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return r.Promote(false)
}

// Drain closes every open epoch and waits, at most timeout, until each
// connected peer acknowledged every write sent to it (under every
// protocol). It reports whether all did. A planned switchover calls it
// with writes held, so that the node taking over has every write.
func (r *Replica) Drain(timeout time.Duration) bool {
	var waits []func() bool
	for _, l := range r.links {
		if w := l.barrier(); w != nil {
			waits = append(waits, w)
		}
	}
	done := make(chan bool, 1)
	go func() {
		ok := true
		for _, w := range waits {
			ok = w() && ok
		}
		done <- ok
	}()
	select {
	case ok := <-done:
		return ok
	case <-time.After(timeout):
		return false
	}
}

// Demote makes the replica Secondary; the caller has checked that no
// client and no device uses it. Writes in flight have completed.
func (r *Replica) Demote() error {
	if !r.v.Primary() {
		return nil
	}
	// Durability only: nobody is told this flush succeeded, so the
	// failover gate (which may wait for a majority) has no say.
	if err := r.flush(false); err != nil {
		return fmt.Errorf("flushing before becoming Secondary: %w", err)
	}
	if err := r.v.SetPrimary(false, false); err != nil {
		return err
	}
	r.cfg.Event("", "role", "Primary", "Secondary", "")
	r.log.Info("now Secondary")
	for _, l := range r.links {
		l.sendState()
	}
	return nil
}

// StepDown makes the replica Secondary because automatic failover found
// a newer term: another node is Primary now. Unlike Demote it waits for
// no peer and no failover gate (the caller set the gate to GateFail, so
// writes it held fail instead of waiting for a lease that will not come):
// it flushes the local disk and changes the role.
func (r *Replica) StepDown() error {
	if !r.v.Primary() {
		return nil
	}
	ferr := r.v.Flush()
	if err := r.v.SetPrimary(false, false); err != nil {
		return err
	}
	r.cfg.Event("", "role", "Primary", "Secondary", "a newer failover term exists")
	r.log.Warn("now Secondary: another node was promoted for a newer term")
	for _, l := range r.links {
		l.sendState()
	}
	return ferr
}

// RefusedError is an operator action refused in the current state; its
// message says why and what to do.
type RefusedError struct{ Msg string }

func (e *RefusedError) Error() string { return e.Msg }

func refusedf(format string, args ...any) error {
	return &RefusedError{Msg: fmt.Sprintf(format, args...)}
}

// Connect (re)starts connecting to every peer.
func (r *Replica) Connect() {
	for _, l := range r.links {
		l.connectNow()
	}
}

// Disconnect drops every peer and stays StandAlone.
func (r *Replica) Disconnect() {
	for _, l := range r.links {
		l.disconnect()
	}
	// Return once every session is down, so that what the operator does
	// next (promote here, write) already sees the peer gone.
	deadline := time.Now().Add(5 * time.Second)
	for _, l := range r.links {
		for l.connected() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Resync runs a new handshake now (reconnecting if needed). full: this
// replica is the source of a full resync. discardMyData: this replica is
// the split-brain victim.
func (r *Replica) Resync(full, discardMyData bool) error {
	if discardMyData && r.v.Primary() {
		return refusedf("this node is Primary: make it Secondary before discarding its data")
	}
	for _, l := range r.links {
		l.mu.Lock()
		l.discardMyData = discardMyData
		l.forceFull = full
		s := l.sess
		// A plain resync of an Established link re-runs the handshake:
		// ranges marked out of sync while connected (by a verify) are
		// then resynced. A running resync or verify is left alone.
		plain := l.state.repl == ReplEstablished
		l.mu.Unlock()
		if s != nil && (full || discardMyData || plain) {
			s.kill(fmt.Errorf("reconnecting for the resync the operator asked for"))
		}
		l.connectNow()
	}
	return nil
}

// Invalidate makes this replica the target of a full resync.
func (r *Replica) Invalidate() error {
	if r.v.Primary() {
		return refusedf("this node is Primary: its data cannot be invalidated while it serves")
	}
	if err := r.v.Invalidate(); err != nil {
		return err
	}
	for _, l := range r.links {
		l.mu.Lock()
		s := l.sess
		l.mu.Unlock()
		if s != nil {
			s.kill(fmt.Errorf("reconnecting: the local data was invalidated"))
		}
		l.connectNow()
	}
	return nil
}

// DiskState is the local disk state: UpToDate, Consistent, Inconsistent.
func (r *Replica) DiskState() string {
	f := r.v.Flags()
	switch {
	case f&meta.FlagJustCreated != 0:
		return "UpToDate"
	case f&meta.FlagConsistent == 0:
		return "Inconsistent"
	case f&meta.FlagWasUpToDate == 0:
		return "Consistent"
	}
	for _, l := range r.links {
		l.mu.Lock()
		target := l.state.repl == ReplSyncTarget
		l.mu.Unlock()
		if target {
			return "Inconsistent"
		}
	}
	return "UpToDate"
}

// Role is Primary or Secondary.
func (r *Replica) Role() string {
	if r.v.Primary() {
		return "Primary"
	}
	return "Secondary"
}

// Protocol is the configured protocol letter.
func (r *Replica) Protocol() string { return string(r.cfg.Protocol) }

// Connection summarises the links: Connected when every peer is,
// otherwise the first other state.
func (r *Replica) Connection() string {
	out := ConnConnected
	for _, l := range r.links {
		l.mu.Lock()
		c := l.state.conn
		l.mu.Unlock()
		if c != ConnConnected {
			return c
		}
	}
	return out
}

// Peers reports every link for status.
func (r *Replica) Peers() []control.Peer {
	out := make([]control.Peer, 0, len(r.links))
	for _, l := range r.links {
		out = append(out, l.status())
	}
	return out
}

func (l *link) status() control.Peer {
	l.mu.Lock()
	st := l.state
	var unacked int64
	inflight := 0
	if s := l.sess; s != nil {
		unacked = s.ep.UnackedBytes()
		inflight = s.ep.AwaitingAck()
	}
	l.mu.Unlock()
	p := control.Peer{
		Node: l.peer.Node, Address: l.peer.Address,
		Connection: st.conn, Replication: st.repl, Role: st.peerRole, Disk: st.peerDisk, Term: st.peerTerm,
		OutOfSyncBytes: l.v.DirtyBytes(l.slot), UnackedBytes: unacked, InFlightWrites: inflight,
		SplitBrain: st.splitBrain, LastError: st.lastErr,
		SentBytes: l.sent.Load(), ReceivedBytes: l.recvd.Load(), Reconnects: l.reconnects.Load(),
	}
	if h := st.handshake; h != nil {
		p.Handshake = &control.Handshake{At: h.at.UTC(), Rule: h.rule, Action: h.action,
			LocalCurrent: fmt.Sprintf("%016X", h.localCurrent), PeerCurrent: fmt.Sprintf("%016X", h.peerCurrent)}
	}
	if rp := st.resync; rp != nil {
		p.Resync = rp.status()
	}
	if vp := st.verify; vp != nil {
		p.Verify = vp.status()
	}
	return p
}

func (p *progress) status() *control.Progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := &control.Progress{Running: p.running, Checksum: p.checksum, TotalBytes: p.total, DoneBytes: p.done,
		SkippedBytes: p.skipped, MismatchBytes: p.mismatch, StartedAt: p.started.UTC()}
	if !p.running {
		f := p.finished.UTC()
		out.FinishedAt = &f
	}
	out.RateBytesPerSec = p.rate(time.Now())
	if p.running && out.RateBytesPerSec > 0 {
		out.ETASeconds = float64(max(p.total-p.done, 0)) / out.RateBytesPerSec
	}
	return out
}

// splitBrainHandler runs the configured command, bounded in time, in the
// background.
func (r *Replica) splitBrainHandler(peer string) {
	cmd := r.cfg.SplitBrainHandler
	if cmd == "" {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), handlerTimeout)
		defer cancel()
		c := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
		c.Env = append(os.Environ(), "BLKREP_VOLUME="+r.cfg.Volume, "BLKREP_NODE="+r.cfg.Node,
			"BLKREP_PEER="+peer, "BLKREP_REASON=split-brain")
		out, err := c.CombinedOutput()
		if err != nil {
			r.log.Error("split-brain handler failed", "command", cmd, "err", err, "output", string(out))
			return
		}
		r.log.Info("split-brain handler ran", "command", cmd, "output", string(out))
	}()
}
