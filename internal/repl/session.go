package repl

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blkrep/blkrep/internal/volume"
	"github.com/blkrep/blkrep/nbd"
	"github.com/blkrep/blkrep/protocol"
)

// session is one authenticated connection with the peer.
type session struct {
	l  *link
	v  *volume.Volume
	c  net.Conn
	br *bufio.Reader
	q  *sendq

	peer     protocol.State // the peer's state (handshake, then MsgGens)
	proto    byte
	decision protocol.Decision

	dead    atomic.Bool
	errOnce sync.Once
	err     error
	wg      sync.WaitGroup
	// torn is closed when the link's teardown of the session ended: its
	// unacknowledged writes are marked, and the link's lost is set.
	torn chan struct{}

	// Primary side, under l.mu: the epoch and ack bookkeeping is the pure
	// protocol.Epochs; the session does the I/O it asks for.
	ep          protocol.Epochs
	start       time.Time            // the tracker's clock: ticks are ns since start
	reqs        map[uint64]*req      // writes awaiting their ack, by seq
	flushers    map[uint64]chan bool // flush waiters, by tracker waiter id
	sentCurrent uint64

	rs *resync // while SyncTarget or SyncSource
	vf *verify // this node's verify as source (under l.mu)
	// vt is the verify the peer runs against this node (receiver
	// goroutine only).
	vt *verifyTarget
}

// req is one write awaiting the peer's ack (protocols B and C).
type req struct {
	done chan struct{}
	ok   bool
	// missed: set when the link was lost before the peer acknowledged
	// (ok false), for the failover gate.
	missed missedPeer
}

func (r *req) wait() bool {
	<-r.done
	return r.ok
}

func newSession(l *link, c net.Conn, br *bufio.Reader) *session {
	cfg := &l.r.cfg
	return &session{l: l, v: l.v, c: c, br: br, q: newSendq(), proto: cfg.Protocol,
		ep: protocol.NewEpochs(protocol.EpochConfig{Protocol: cfg.Protocol, MaxWrites: cfg.MaxEpochWrites,
			MaxAge: int64(maxEpochAge), AckTimeout: int64(cfg.Timeout)}),
		start: time.Now(), reqs: map[uint64]*req{}, flushers: map[uint64]chan bool{}, torn: make(chan struct{})}
}

// maxEpochAge closes an epoch that stays open this long, so that its
// activity-log extents can go cold and its writes stop being ambiguous.
const maxEpochAge = time.Second

// now is the epoch tracker's clock.
func (s *session) now() int64 { return int64(time.Since(s.start)) }

// kill ends the session; the first error is kept.
func (s *session) kill(err error) {
	s.errOnce.Do(func() {
		s.err = err
		s.dead.Store(true)
		s.c.Close()
		s.q.close(err)
		if rs := s.rs; rs != nil {
			rs.mu.Lock()
			rs.cond.Broadcast()
			rs.mu.Unlock()
		}
	})
}

// localState is what this replica tells the peer.
func (s *session) localState() protocol.State {
	l := s.l
	g := s.v.Gens(l.slot)
	st := protocol.State{
		VolumeUUID:  volume.UUID(l.r.cfg.Cluster, l.r.cfg.Volume),
		SizeBytes:   uint64(s.v.Size()),
		BytesPerBit: s.v.BytesPerBit(),
		Protocol:    l.r.cfg.Protocol,
		Current:     g.Current,
		Bitmap:      g.Bitmap,
		History:     g.History,
		DirtyBytes:  uint64(s.v.DirtyBytes(l.slot)),
		Term:        l.r.term.Load(),
	}
	if g.Primary {
		st.Role = protocol.RolePrimary
		st.PrimarySince = uint64(s.v.PrimarySince().UnixNano())
	}
	if g.CrashedPrimary {
		st.Flags |= protocol.StateCrashedPrimary
	}
	if g.Inconsistent {
		st.Flags |= protocol.StateInconsistent
	}
	if g.Dirty {
		st.Flags |= protocol.StateDirty
	}
	if l.discardMyData {
		st.Flags |= protocol.StateDiscardMyData
	}
	if l.forceFull {
		st.Flags |= protocol.StateFullSource
	}
	return st
}

func gensOf(st protocol.State, node string) protocol.Gens {
	return protocol.Gens{
		Current: st.Current, Bitmap: st.Bitmap, History: st.History,
		CrashedPrimary: st.Flags&protocol.StateCrashedPrimary != 0,
		Primary:        st.Role == protocol.RolePrimary,
		Dirty:          st.Flags&protocol.StateDirty != 0,
		Inconsistent:   st.Flags&protocol.StateInconsistent != 0,
		Node:           node,
	}
}

func diskState(st protocol.State) string {
	if st.Flags&protocol.StateInconsistent != 0 {
		return "Inconsistent"
	}
	return "UpToDate"
}

// handshake exchanges states, decides, and exchanges bitmaps.
func (s *session) handshake() error {
	l := s.l
	cfg := &l.r.cfg
	l.mu.Lock()
	mine := s.localState()
	l.mu.Unlock()
	if err := send(s.c, protocol.MsgState, mine.Append(nil)); err != nil {
		return err
	}
	p, err := expect(s.br, protocol.MsgState)
	if err != nil {
		return err
	}
	peer, err := protocol.DecodeState(p)
	if err != nil {
		return err
	}
	s.peer = peer
	switch {
	case peer.VolumeUUID != mine.VolumeUUID:
		return s.refuseStandAlone(fmt.Sprintf("unrelated data: %s's volume %s has uuid %s, ours %s",
			l.peer.Node, cfg.Volume, volume.FormatUUID(peer.VolumeUUID), volume.FormatUUID(mine.VolumeUUID)))
	case peer.SizeBytes != mine.SizeBytes:
		return s.refuseStandAlone(fmt.Sprintf("size mismatch: %s's replica of %s is %d bytes, ours %d; both must match the configuration",
			l.peer.Node, cfg.Volume, peer.SizeBytes, mine.SizeBytes))
	case peer.BytesPerBit != mine.BytesPerBit:
		return s.refuseStandAlone(fmt.Sprintf("bytes_per_bit differs: %s has %d, we have %d", l.peer.Node, peer.BytesPerBit, mine.BytesPerBit))
	case peer.Protocol != mine.Protocol:
		return s.refuseStandAlone(fmt.Sprintf("protocol differs: %s uses %c, we use %c", l.peer.Node, peer.Protocol, mine.Protocol))
	}
	// The failover terms (term.go): learn the peer's, refuse a stale
	// primary.
	l.mu.Lock()
	l.state.peerTerm = peer.Term
	l.mu.Unlock()
	l.r.notifyPeerTerm(l.peer.Node, peer.Term)
	if msg := s.staleTerm(mine, peer); msg != "" {
		return s.refuseRetry(msg)
	}
	local, remote := gensOf(mine, cfg.Node), gensOf(peer, l.peer.Node)
	d := protocol.Decide(local, remote)
	d = s.resolve(d, mine, peer)
	d, msg := s.termDirection(d, mine, peer)
	if msg != "" {
		return s.refuseRetry(msg)
	}
	if d.Action.IsTarget() && l.r.electing.Load() {
		return s.refuseRetry(fmt.Sprintf("%s runs a failover election: it does not become a resync target of %s meanwhile (rule %s); retrying",
			cfg.Node, l.peer.Node, d.Rule))
	}
	s.decision = d
	l.log.Info("handshake", "rule", d.Rule, "action", d.Action.String(),
		"local_current", fmt.Sprintf("%016X", mine.Current), "peer_current", fmt.Sprintf("%016X", peer.Current))
	l.mu.Lock()
	l.state.handshake = &handshakeInfo{at: time.Now(), rule: d.Rule, action: d.Action.String(), localCurrent: mine.Current, peerCurrent: peer.Current}
	l.state.peerRole, l.state.peerDisk = peer.Role.String(), diskState(peer)
	l.mu.Unlock()
	l.event("handshake", "", d.Action.String(), "rule "+d.Rule)

	switch d.Action {
	case protocol.Unrelated:
		return s.refuseStandAlone(fmt.Sprintf("refusing to connect: %s and %s share no data generation (rule %s): "+
			"unrelated data is never overwritten; if one side is garbage, recreate its metadata (`blkrep create-md --force %s`) and connect again",
			cfg.Node, l.peer.Node, d.Rule, cfg.Volume))
	case protocol.SplitBrain:
		l.mu.Lock()
		l.state.splitBrain = true
		l.mu.Unlock()
		msg := fmt.Sprintf("SPLIT BRAIN detected with %s (rule %s): both sides wrote since they last were in sync; "+
			"nothing is overwritten. On the node whose changes to drop run `blkrep resync %s --discard-my-data`", l.peer.Node, d.Rule, cfg.Volume)
		l.log.Error(msg)
		l.event("split-brain", "", "", msg)
		l.r.splitBrainHandler(l.peer.Node)
		return s.refuseStandAlone(msg)
	}
	if peer.Role == protocol.RolePrimary && mine.Role == protocol.RolePrimary {
		if termsKnown(mine, peer) {
			// Both Primary for one term cannot last under failover (a
			// term has one primary): wait for it to demote one.
			return s.refuseRetry(fmt.Sprintf("both %s and %s are Primary (failover terms %d and %d): waiting for failover to demote one",
				cfg.Node, l.peer.Node, mine.Term, peer.Term))
		}
		return s.refuseStandAlone(fmt.Sprintf("both %s and %s are Primary: demote one (`blkrep secondary %s`), then `blkrep connect %s` on both",
			cfg.Node, l.peer.Node, cfg.Volume, cfg.Volume))
	}
	if d.Action.IsTarget() && mine.Role == protocol.RolePrimary || d.Action.IsSource() && peer.Role == protocol.RolePrimary {
		target := cfg.Node
		if d.Action.IsSource() {
			target = l.peer.Node
		}
		return s.refuseRetry(fmt.Sprintf("resync from %s would overwrite the data of %s, which is Primary (rule %s): demote it first", l.peer.Node, target, d.Rule))
	}

	// Exchange bitmaps for a bitmap resync; a full one sets every bit.
	switch d.Action {
	case protocol.SourceFull, protocol.TargetFull:
		s.v.SetAll(l.slot)
	case protocol.SourceBitmap, protocol.TargetBitmap:
		if err := s.exchangeBitmaps(); err != nil {
			return err
		}
	}
	switch {
	case d.Action.IsTarget():
		if err := s.v.StartSyncTarget(l.slot, d.Action == protocol.TargetFull, peer.Current); err != nil {
			return err
		}
	case d.Action == protocol.NoSync && !local.Inconsistent:
		if err := s.v.InSync(l.slot); err != nil {
			return err
		}
	}
	l.mu.Lock()
	l.discardMyData, l.forceFull = false, false
	l.state.splitBrain = false
	l.state.lastErr = ""
	l.mu.Unlock()
	return nil
}

// resolve applies the failover terms, the split-brain policies and the
// operator's --discard-my-data / --full requests to a decision.
func (s *session) resolve(d protocol.Decision, mine, peer protocol.State) protocol.Decision {
	cfg := &s.l.r.cfg
	if d.Action == protocol.SplitBrain {
		// Different failover terms decide before any policy or operator
		// request: the newer term's data holds every acknowledged write.
		if victimLocal, ok := termVictim(mine, peer); ok {
			return s.termResolve(d, mine, peer, victimLocal)
		}
		victimLocal, ok := protocol.SplitBrainVictim(cfg.AfterSplitBrain, mine, peer, cfg.Node < s.l.peer.Node)
		if ok {
			rule := d.Rule + "+" + cfg.AfterSplitBrain
			if mine.Flags&protocol.StateDiscardMyData != 0 || peer.Flags&protocol.StateDiscardMyData != 0 {
				rule = d.Rule + "+discard-my-data"
			}
			s.l.log.Warn("split brain resolved: the victim's changes are discarded", "rule", d.Rule, "victim_is_local", victimLocal, "policy", rule)
			return victimDecision(victimLocal, d.BitmapUsable, rule)
		}
	}
	// `blkrep resync --full` on one side: that side is the source of a
	// full sync (on both sides at once, the Primary's or the smaller
	// name's request wins).
	lf, pf := mine.Flags&protocol.StateFullSource != 0, peer.Flags&protocol.StateFullSource != 0
	if lf && pf {
		lf = mine.Role == protocol.RolePrimary || (mine.Role == peer.Role && cfg.Node < s.l.peer.Node)
		pf = !lf
	}
	switch {
	case lf && !mine.Inconsistent():
		return protocol.Decision{Action: protocol.SourceFull, Rule: "operator-full-resync"}
	case pf && !peer.Inconsistent():
		return protocol.Decision{Action: protocol.TargetFull, Rule: "operator-full-resync"}
	}
	return d
}

func (s *session) refuseStandAlone(msg string) error {
	refuse(s.c, msg)
	return &refusal{msg: msg, standAlone: true}
}

func (s *session) refuseRetry(msg string) error {
	refuse(s.c, msg)
	return &refusal{msg: msg}
}

// exchangeBitmaps sends this replica's bitmap for the peer while reading
// the peer's into the same slot: both end with the union.
func (s *session) exchangeBitmaps() error {
	l := s.l
	errc := make(chan error, 1)
	go func() {
		var from uint64
		nbits := s.v.NBits()
		for {
			runs, next := s.v.Runs(l.slot, from, 4096)
			if len(runs) > 0 {
				m := protocol.BitmapMsg{Runs: runs}
				if err := send(s.c, protocol.MsgBitmap, m.Append(nil)); err != nil {
					errc <- err
					return
				}
			}
			if next >= nbits {
				break
			}
			from = next
		}
		errc <- send(s.c, protocol.MsgBitmapDone, nil)
	}()
	var runs []protocol.Run
	nbits := s.v.NBits()
	var recvErr error
	for recvErr == nil {
		t, p, _, err := protocol.ReadMessage(s.br, nil)
		if err != nil {
			recvErr = err
			break
		}
		if t == protocol.MsgBitmapDone {
			break
		}
		if t != protocol.MsgBitmap {
			recvErr = fmt.Errorf("%w: expected bitmap, got %s", protocol.ErrMalformed, t)
			break
		}
		m, err := protocol.DecodeBitmap(p, nbits)
		if err != nil {
			recvErr = err
			break
		}
		runs = append(runs, m.Runs...)
	}
	if recvErr != nil {
		s.c.Close()
		<-errc
		return recvErr
	}
	if err := <-errc; err != nil {
		return err
	}
	return s.v.MarkRuns(l.slot, runs)
}

// serve runs an established session until it fails, then tears it down.
func (l *link) serve(s *session) {
	s.c.SetDeadline(time.Time{})
	d := s.decision
	repl := ReplEstablished
	switch {
	case d.Action.IsTarget():
		s.rs = newResync(s, true)
		repl = ReplSyncTarget
	case d.Action.IsSource():
		s.rs = newResync(s, false)
		repl = ReplSyncSource
	}
	if d.Rule == protocol.RuleBothJustCreated && len(l.r.links) == 1 {
		// Two just-created replicas, in sync by definition: both take the
		// same first generation now (derived from this connection's
		// authentication, which both know), so that a write made later
		// without the peer is resynced by bitmap, not by a full sync.
		// Only for a pair: with more replicas each link would derive its
		// own generation and the replicas would end up unrelated; there
		// the Primary's first write makes the generation and the
		// connected peers adopt it (a peer away then gets a full sync).
		if err := s.v.AdoptFirstGeneration(firstGeneration(l.authKey)); err != nil {
			s.kill(fmt.Errorf("recording the first generation: %w", err))
		}
	}
	l.mu.Lock()
	l.sess = s
	s.sentCurrent = s.v.Current()
	if s.rs != nil {
		l.state.resync = s.rs.prog
	}
	l.mu.Unlock()
	l.gate.Unlock() // taken by connect before the handshake
	l.setConn(ConnConnected, "")
	l.setRepl(repl, "rule "+d.Rule)
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		err := s.q.run(s.c, func(n int64) { l.sent.Add(uint64(n)) })
		if err != nil {
			s.kill(err)
		}
	}()
	go func() {
		defer s.wg.Done()
		s.kill(s.receive())
	}()
	go func() {
		defer s.wg.Done()
		s.pinger()
	}()
	if s.rs != nil && s.rs.target {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.rs.request(); err != nil {
				s.kill(err)
			}
		}()
	}
	s.wg.Wait()
	l.teardown(s)
}

// firstGeneration derives the first data generation of a just-created
// pair from the key both sides of the connection hold: never 0, low bit
// clear like every generation.
func firstGeneration(key [protocol.MACSize]byte) uint64 {
	h := sha256.Sum256(append([]byte("blkrep first generation\x00"), key[:]...))
	g := binary.LittleEndian.Uint64(h[:8]) &^ 1
	if g == 0 {
		g = 2
	}
	return g
}

// teardown runs after every goroutine of s stopped: every write of an
// unacknowledged epoch may be missing on the peer, so it is marked before
// its hold is dropped; writes waiting for an ack complete as lost.
func (l *link) teardown(s *session) {
	l.r.cfg.hook(HookLinkTeardown)
	l.mu.Lock()
	l.sess = nil
	l.lost = *l.missed()
	a := s.ep.Lost()
	failed := make([]*req, 0, len(a.Fail))
	for _, seq := range a.Fail {
		failed = append(failed, s.reqs[seq])
		delete(s.reqs, seq)
	}
	waiters := make([]chan bool, 0, len(a.FailWaiters))
	for _, id := range a.FailWaiters {
		waiters = append(waiters, s.flushers[id])
		delete(s.flushers, id)
	}
	l.state.peerRole, l.state.peerDisk = "Unknown", "DUnknown"
	l.state.lastErr = s.err.Error()
	vf := s.vf
	l.mu.Unlock()
	if vf != nil {
		vf.abort("the connection was lost")
	}
	if vt := s.vt; vt != nil {
		s.vt = nil
		vt.prog.mu.Lock()
		vt.prog.running, vt.prog.finished, vt.prog.lastErr = false, time.Now(), "the connection was lost"
		vt.prog.mu.Unlock()
	}
	// Mark before failing: Replica.write counts on a failed write being
	// marked already.
	marked := int64(0)
	for _, r := range a.Mark {
		l.v.Mark(l.slot, r.Off, r.Len)
		marked += r.Len
		l.v.UnholdRange(r.Off, r.Len)
	}
	if marked > 0 {
		// Rotate now, before the failed writes are acknowledged and
		// before the next handshake sends this node's State.
		if err := l.v.EnsureRotated([]int{l.slot}); err != nil {
			l.log.Error("cannot record a new generation after losing the peer", "err", err)
		}
	}
	l.mu.Lock()
	l.lostMarked = marked > 0
	l.mu.Unlock()
	for _, r := range failed {
		r.ok, r.missed = false, l.lost
		close(r.done)
	}
	for _, w := range waiters {
		w <- false
	}
	if s.rs != nil && s.rs.target {
		s.rs.checkpoint()
	}
	l.log.Warn("connection to peer lost", "err", s.err, "unacknowledged_bytes_marked", marked)
	l.setRepl(ReplOff, "")
	l.setConn(ConnConnecting, s.err.Error())
	close(s.torn)
}

// ship queues one write (under l.mu).
func (s *session) ship(kind dataKind, data []byte, off, n int64, fua bool) (*req, bool) {
	if cur := s.v.Current(); cur != s.sentCurrent {
		// The Primary's first write on just-created metadata made a
		// generation: the peer adopts it before the data.
		st := s.localState()
		if !s.q.put(protocol.MsgGens, st.Append(nil), nil) {
			return nil, false
		}
		s.sentCurrent = cur
	}
	if err := s.v.HoldRange(off, n); err != nil {
		s.l.log.Error("cannot hold activity-log extents for an epoch", "err", err)
		return nil, false
	}
	sh := s.ep.Write(off, n, fua, s.now())
	pooled := false
	m := protocol.Data{Seq: sh.Seq, Offset: uint64(off), Length: uint32(n)}
	switch kind {
	case kindTrim:
		m.Kind = protocol.KindTrim
	case kindZeroes:
		m.Kind = protocol.KindZeroes
	default:
		if s.proto == 'A' {
			// The write completes before it is sent: a copy the queue owns.
			b := nbd.GetBuf(len(data))
			copy(b, data)
			data, pooled = b, true
		}
	}
	if fua {
		m.Flags |= protocol.DataFUA
	}
	var rq *req
	if sh.AwaitAck {
		rq = &req{done: make(chan struct{})}
		s.reqs[sh.Seq] = rq
	}
	if !s.q.putData(protocol.MsgData, m.AppendFixed(nil), data, pooled) {
		// The session died: teardown marks the epoch's ranges and
		// completes rq as lost.
		return rq, true
	}
	if sh.Barrier != 0 {
		s.q.put(protocol.MsgBarrier, protocol.U64{V: sh.Barrier}.Append(nil), nil)
	}
	return rq, true
}

// closeEpoch (under l.mu) runs a tracker action that may close the open
// epoch (queueing its barrier) and may hand out a flush waiter: then it
// returns a function that waits for the peer's ack (false: the link
// died first).
func (s *session) closeEpoch(a protocol.Actions) func() bool {
	if a.Barrier != 0 {
		s.q.put(protocol.MsgBarrier, protocol.U64{V: a.Barrier}.Append(nil), nil)
	}
	if a.Waiter == 0 {
		return nil
	}
	ch := make(chan bool, 1)
	s.flushers[a.Waiter] = ch
	return func() bool { return <-ch }
}

// lostWait is the wait of a flush or drain on a session that died and is
// not torn down yet: what it sent may not have reached the peer, and its
// teardown marks it. The wait ends with the teardown and reports the
// failure, so the caller treats the peer as having missed the epoch and
// the failover gate sees the count of resyncs noted by that teardown
// (before, such a flush succeeded at once without the peer, and a Drain
// reported every peer acknowledged: internal/torture under protocol A).
func (s *session) lostWait() func() bool {
	return func() bool {
		<-s.torn
		return false
	}
}

// barrierAck completes every epoch up to num.
func (s *session) barrierAck(num uint64) error {
	l := s.l
	l.mu.Lock()
	a, err := s.ep.BarrierAck(num, s.now())
	woken := make([]chan bool, 0, len(a.Wake))
	for _, id := range a.Wake {
		woken = append(woken, s.flushers[id])
		delete(s.flushers, id)
	}
	l.mu.Unlock()
	if err != nil {
		return err
	}
	for _, r := range a.Release {
		s.v.UnholdRange(r.Off, r.Len)
	}
	for _, w := range woken {
		w <- true
	}
	return nil
}

func (s *session) writeAck(seq uint64) error {
	l := s.l
	l.mu.Lock()
	err := s.ep.WriteAck(seq, s.now())
	rq := s.reqs[seq]
	if err == nil {
		delete(s.reqs, seq)
	}
	l.mu.Unlock()
	if err != nil {
		return err
	}
	rq.ok = true
	close(rq.done)
	return nil
}

// pinger sends keepalives, enforces the ack timeout and closes epochs
// that stay open while the activity log needs their extents.
func (s *session) pinger() {
	cfg := &s.l.r.cfg
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastPing := time.Now()
	for {
		select {
		case <-tick.C:
		case <-s.l.quit:
			// link.stop kills the live session, but one installed just
			// after it looked would run on (a daemon's stop hung in
			// Replica.Close, cmd/blkrep TestStatusFailoverCluster).
			s.kill(errors.New("shutting down"))
			return
		}
		if s.dead.Load() {
			return
		}
		now := time.Now()
		if now.Sub(lastPing) >= cfg.PingInterval {
			lastPing = now
			s.q.put(protocol.MsgPing, protocol.U64{V: uint64(now.UnixNano())}.Append(nil), nil)
		}
		waiters := s.v.Waiters()
		s.l.mu.Lock()
		a := s.ep.Tick(s.now(), waiters)
		if !a.TimedOut {
			s.closeEpoch(a)
		}
		s.l.mu.Unlock()
		if a.TimedOut {
			s.kill(fmt.Errorf("the peer acknowledged nothing for %s (timeout)", cfg.Timeout))
			return
		}
	}
}

// receive reads and handles messages until the connection fails.
//
// Small messages are handled on this goroutine when nothing is queued
// (the latency path: an ack, a 4 KiB write). Barriers (a disk flush),
// large messages, and everything
// behind a queued message, go in order to an applier goroutine, so that
// reading the next write from the socket overlaps writing this one to
// disk. Order is kept: a message is handled here only when every earlier
// one is done.
func (s *session) receive() error {
	cfg := &s.l.r.cfg
	size := uint64(s.v.Size())
	ap := newApplier(s, size)
	defer ap.stop()
	var hdr [protocol.HeaderSize]byte
	var small []byte // reused for messages handled here
	for {
		s.c.SetReadDeadline(time.Now().Add(cfg.PingInterval + cfg.PingTimeout))
		t, p, pooled, err := s.readMessage(hdr[:], &small)
		if err != nil {
			if s.dead.Load() {
				return s.err
			}
			if aerr := ap.failed(); aerr != nil {
				return aerr
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("the peer sent nothing for %s (ping timeout)", cfg.PingInterval+cfg.PingTimeout)
			}
			return fmt.Errorf("reading from the peer: %w", err)
		}
		s.l.recvd.Add(uint64(protocol.HeaderSize + len(p)))
		if !pooled && t != protocol.MsgBarrier && ap.idle() {
			if err := s.handle(t, p, size); err != nil {
				return err
			}
			continue
		}
		if !pooled {
			// Queued behind others: it needs a buffer of its own.
			b := nbd.GetBuf(len(p))
			copy(b, p)
			p, pooled = b, true
		}
		if err := ap.put(t, p); err != nil {
			return err
		}
	}
}

// inlineMax: messages up to this size may be handled on the reader.
const inlineMax = 64 << 10

// readMessage reads one message. A payload up to inlineMax lands in
// *small (reused); a larger one in a pooled buffer (pooled is true),
// which the applier returns.
func (s *session) readMessage(hdr []byte, small *[]byte) (protocol.MsgType, []byte, bool, error) {
	if _, err := io.ReadFull(s.br, hdr); err != nil {
		return 0, nil, false, err
	}
	h, err := protocol.DecodeHeader(hdr)
	if err != nil {
		return 0, nil, false, err
	}
	n := int(h.Length)
	var p []byte
	pooled := n > inlineMax
	if pooled {
		p = nbd.GetBuf(n)
	} else {
		if cap(*small) < n {
			*small = make([]byte, inlineMax)
		}
		p = (*small)[:n]
	}
	if _, err := io.ReadFull(s.br, p); err != nil {
		if pooled {
			nbd.PutBuf(p)
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, false, err
	}
	return h.Type, p, pooled, nil
}

// applier handles queued messages in order on its own goroutine.
type applier struct {
	s    *session
	size uint64
	ch   chan inMsg
	done chan struct{}

	pending atomic.Int64 // queued and not yet handled
	mu      sync.Mutex
	cond    *sync.Cond
	bytes   int64 // payload bytes queued
	err     error
}

type inMsg struct {
	t protocol.MsgType
	p []byte
}

// applyQueueBytes bounds the payload queued for the applier.
const applyQueueBytes = 64 << 20

func newApplier(s *session, size uint64) *applier {
	ap := &applier{s: s, size: size, ch: make(chan inMsg, 1024), done: make(chan struct{})}
	ap.cond = sync.NewCond(&ap.mu)
	go ap.run()
	return ap
}

func (ap *applier) run() {
	defer close(ap.done)
	for m := range ap.ch {
		var err error
		if !ap.s.dead.Load() && ap.failed() == nil {
			err = ap.s.handle(m.t, m.p, ap.size)
		}
		nbd.PutBuf(m.p)
		ap.mu.Lock()
		ap.bytes -= int64(len(m.p))
		if err != nil && ap.err == nil {
			ap.err = err
		}
		ap.cond.Broadcast()
		ap.mu.Unlock()
		ap.pending.Add(-1)
		if err != nil {
			ap.s.kill(err)
		}
	}
}

// idle: nothing queued, so a message may be handled on the reader.
func (ap *applier) idle() bool { return ap.pending.Load() == 0 }

func (ap *applier) failed() error {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	return ap.err
}

// put queues a message (p from getBuf), waiting while the queue is full.
func (ap *applier) put(t protocol.MsgType, p []byte) error {
	ap.mu.Lock()
	for ap.bytes > 0 && ap.bytes+int64(len(p)) > applyQueueBytes && ap.err == nil && !ap.s.dead.Load() {
		ap.cond.Wait()
	}
	err := ap.err
	if err == nil && ap.s.dead.Load() {
		err = ap.s.err
	}
	if err != nil {
		ap.mu.Unlock()
		nbd.PutBuf(p)
		return err
	}
	ap.bytes += int64(len(p))
	ap.mu.Unlock()
	ap.pending.Add(1)
	ap.ch <- inMsg{t, p}
	return nil
}

// stop waits until every queued message is handled (or dropped, once
// the session is dead): nothing touches the session after receive returns.
func (ap *applier) stop() {
	close(ap.ch)
	ap.mu.Lock()
	ap.cond.Broadcast()
	ap.mu.Unlock()
	<-ap.done
}

func (s *session) handle(t protocol.MsgType, p []byte, size uint64) error {
	switch t {
	case protocol.MsgData:
		m, err := protocol.DecodeData(p, size)
		if err != nil {
			return err
		}
		return s.apply(m)
	case protocol.MsgRecvAck, protocol.MsgWriteAck:
		u, err := protocol.DecodeU64(p, t)
		if err != nil {
			return err
		}
		return s.writeAck(u.V)
	case protocol.MsgNegAck:
		u, _ := protocol.DecodeU64(p, t)
		return fmt.Errorf("the peer failed to write (write %d): its disk has a problem", u.V)
	case protocol.MsgBarrier:
		u, err := protocol.DecodeU64(p, t)
		if err != nil {
			return err
		}
		if err := s.v.Data().Flush(); err != nil {
			s.q.put(protocol.MsgRefuse, (&protocol.Refuse{Reason: "flush failed: " + err.Error()}).Append(nil), nil)
			return fmt.Errorf("flushing for epoch %d: %w", u.V, err)
		}
		s.l.r.cfg.hook(HookSecondaryBarrier)
		s.q.put(protocol.MsgBarrierAck, u.Append(nil), nil)
	case protocol.MsgBarrierAck:
		u, err := protocol.DecodeU64(p, t)
		if err != nil {
			return err
		}
		return s.barrierAck(u.V)
	case protocol.MsgPing:
		u, err := protocol.DecodeU64(p, t)
		if err != nil {
			return err
		}
		s.q.put(protocol.MsgPingAck, u.Append(nil), nil)
	case protocol.MsgPingAck:
	case protocol.MsgGens:
		st, err := protocol.DecodeState(p)
		if err != nil {
			return err
		}
		return s.peerChanged(st)
	case protocol.MsgRefuse:
		r, err := protocol.DecodeRefuse(p)
		if err != nil {
			return err
		}
		return fmt.Errorf("%w by the peer: %s", errRefused, r.Reason)
	case protocol.MsgVerifyReq, protocol.MsgVerifyRep, protocol.MsgVerifyDone:
		return s.handleVerify(t, p, size)
	case protocol.MsgResyncReq, protocol.MsgCsumReq, protocol.MsgResyncData, protocol.MsgResyncSame,
		protocol.MsgResyncAck, protocol.MsgResyncDone:
		if s.rs == nil {
			return fmt.Errorf("%w: %s outside a resync", protocol.ErrMalformed, t)
		}
		return s.rs.handle(t, p, size)
	default:
		return fmt.Errorf("%w: unexpected %s", protocol.ErrMalformed, t)
	}
	return nil
}

// apply writes one of the Primary's writes (Secondary side), in the
// order received.
func (s *session) apply(m protocol.Data) error {
	if s.v.Primary() {
		return fmt.Errorf("the peer sent a write but this node is Primary: refusing (two primaries)")
	}
	s.l.r.cfg.hook(HookSecondaryReceived)
	s.l.r.lastApp.Store(time.Now().UnixNano())
	if s.proto == 'B' {
		s.q.put(protocol.MsgRecvAck, protocol.U64{V: m.Seq}.Append(nil), nil)
	}
	d := s.v.Data()
	off, n := int64(m.Offset), int64(m.Length)
	var err error
	switch m.Kind {
	case protocol.KindWrite:
		if m.Flags&protocol.DataFUA != 0 {
			_, err = d.WriteAtFUA(m.Data, off)
		} else {
			_, err = d.WriteAt(m.Data, off)
		}
	case protocol.KindTrim:
		err = trim(d, off, n)
	case protocol.KindZeroes:
		err = zeroes(d, off, n)
	}
	if err != nil {
		s.q.put(protocol.MsgNegAck, protocol.U64{V: m.Seq}.Append(nil), nil)
		return fmt.Errorf("applying the peer's write at %d: %w", off, err)
	}
	s.l.r.cfg.hook(HookSecondaryApplied)
	if s.proto == 'C' {
		s.q.put(protocol.MsgWriteAck, protocol.U64{V: m.Seq}.Append(nil), nil)
	}
	return nil
}

// peerChanged handles the peer's new state: role and generations.
func (s *session) peerChanged(st protocol.State) error {
	l := s.l
	if st.VolumeUUID != s.peer.VolumeUUID || st.SizeBytes != s.peer.SizeBytes {
		return fmt.Errorf("%w: the peer's volume identity changed mid-session", protocol.ErrMalformed)
	}
	old := s.peer
	s.peer = st
	l.mu.Lock()
	oldRole := l.state.peerRole
	l.state.peerRole, l.state.peerDisk = st.Role.String(), diskState(st)
	l.state.peerTerm = st.Term
	repl := l.state.repl
	l.mu.Unlock()
	if oldRole != st.Role.String() {
		l.event("peer-role", oldRole, st.Role.String(), "")
	}
	if st.Term != old.Term {
		l.r.notifyPeerTerm(l.peer.Node, st.Term)
	}
	if st.Current != old.Current && st.Role == protocol.RolePrimary && !s.v.Primary() && repl == ReplEstablished {
		// In sync and connected: the Primary's new generation is ours.
		if err := s.v.AdoptCurrent(st.Current); err != nil {
			return err
		}
	}
	return nil
}
