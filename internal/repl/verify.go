package repl

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/blkrep/blkrep/nbd"
	"github.com/blkrep/blkrep/protocol"
)

// verifyReq is the most one verify request covers.
const verifyReq = 256 << 10

// Online verify compares every block of the volume with the peer by
// SHA-256 digest while the application keeps writing. Blocks that differ
// are marked out of sync in the peer's bitmap and counted; nothing is
// repaired until the operator asks for a resync (DRBD's rule: a verify
// that silently "fixes" one side could copy the bad side over the good).
//
// Both digests of a range must describe the same point of the write
// stream. The Primary computes its digest under the conflict lock at the
// moment it queues its message (request or reply): every earlier write of
// the range is already queued before it, every later one waits. The
// Secondary applies the Primary's writes in stream order on its receiver
// goroutine, and computes its digest there when it handles the Primary's
// message: it has then applied exactly the writes queued before it. So:
//
//	source Primary:   digest at request time (kept), compared with the reply
//	source Secondary: request; the Primary answers under the lock; the
//	                  source digests its own copy when the reply arrives
type verify struct {
	s       *session
	primary bool  // the source's role when it started; a role change aborts
	block   int64 // bytes per bitmap bit: the granularity of a mismatch
	prog    *progress

	mu       sync.Mutex
	cond     *sync.Cond
	inflight int64
	pending  map[uint64]pendingSum // by offset: requested, not yet answered
	aborted  string
}

type pendingSum struct {
	n      uint32
	sum    [protocol.SumSize]byte
	hasSum bool
	// sub: a block-sized request refining a range that differed; its
	// bytes were already counted as compared.
	sub bool
}

// startVerify begins an online verify with this link's peer, this node
// being the verify source.
func (l *link) startVerify() error {
	l.mu.Lock()
	s := l.sess
	switch {
	case s == nil || s.dead.Load():
		conn := l.state.conn
		l.mu.Unlock()
		return refusedf("%s is not connected (%s): verify needs a live connection", l.peer.Node, conn)
	case l.state.repl == ReplSyncSource || l.state.repl == ReplSyncTarget:
		l.mu.Unlock()
		return refusedf("a resync with %s is running: verify after it ends", l.peer.Node)
	case s.vf != nil:
		l.mu.Unlock()
		return refusedf("a verify with %s is already running", l.peer.Node)
	}
	size := s.v.Size()
	vf := &verify{s: s, primary: s.v.Primary(), block: int64(s.localState().BytesPerBit), pending: map[uint64]pendingSum{},
		prog: &progress{running: true, checksum: true, total: size, started: time.Now()}}
	vf.cond = sync.NewCond(&vf.mu)
	s.vf = vf
	l.state.verify = vf.prog
	l.mu.Unlock()
	l.setRepl(ReplVerifySource, "operator")
	l.log.Info("online verify starting", "bytes", size)
	go vf.run()
	return nil
}

// run is the source's requester loop. It ends when every range is
// answered or the session dies.
func (vf *verify) run() {
	s := vf.s
	cfg := &s.l.r.cfg
	size := s.v.Size()
	start := time.Now()
	var next time.Time
	for off := int64(0); off < size; off += verifyReq {
		n := min(int64(verifyReq), size-off)
		vf.mu.Lock()
		for vf.inflight > 0 && vf.inflight+n > cfg.ResyncInFlight && !s.dead.Load() && vf.aborted == "" {
			vf.cond.Wait()
		}
		aborted := vf.aborted
		vf.mu.Unlock()
		if s.dead.Load() {
			vf.end("the connection was lost")
			return
		}
		if aborted != "" {
			vf.end(aborted)
			return
		}
		// The resync's rate controller (resync_rate_min under load).
		s.l.r.pace(&next, start, n, s.dead.Load)
		if err := vf.request(off, n, false); err != nil {
			s.kill(err)
			vf.end(err.Error())
			return
		}
	}
	vf.mu.Lock()
	for vf.inflight > 0 && !s.dead.Load() && vf.aborted == "" {
		vf.cond.Wait()
	}
	aborted := vf.aborted
	vf.mu.Unlock()
	switch {
	case s.dead.Load():
		vf.end("the connection was lost")
		return
	case aborted != "":
		vf.end(aborted)
		return
	}
	if err := s.v.PersistBitmaps(); err != nil {
		s.kill(fmt.Errorf("verify: persisting the out-of-sync marks: %w", err))
		vf.end(err.Error())
		return
	}
	vf.prog.mu.Lock()
	mismatch := vf.prog.mismatch
	vf.prog.mu.Unlock()
	s.q.put(protocol.MsgVerifyDone, protocol.U64{V: uint64(mismatch)}.Append(nil), nil)
	vf.end("")
}

// request asks the peer for its digest of [off, off+n).
func (vf *verify) request(off, n int64, sub bool) error {
	s := vf.s
	rg := protocol.Range{Offset: uint64(off), Length: uint32(n)}
	ps := pendingSum{n: uint32(n), sub: sub}
	var lk span
	if vf.primary {
		// Digest and request under the lock: the same point of the stream.
		lk = s.l.r.cf.lock(off, n)
		defer s.l.r.cf.unlock(lk)
		sum, err := digest(s, off, n)
		if err != nil {
			return err
		}
		ps.sum, ps.hasSum = sum, true
	}
	vf.mu.Lock()
	vf.pending[uint64(off)] = ps
	vf.inflight += n
	vf.mu.Unlock()
	s.q.put(protocol.MsgVerifyReq, rg.Append(nil, false), nil)
	return nil
}

// reply handles the peer's digest (receiver goroutine).
func (vf *verify) reply(rg protocol.Range) error {
	s := vf.s
	vf.mu.Lock()
	ps, ok := vf.pending[rg.Offset]
	if ok && ps.n == rg.Length {
		delete(vf.pending, rg.Offset)
	}
	vf.mu.Unlock()
	if !ok || ps.n != rg.Length {
		return fmt.Errorf("%w: verify reply for [%d, +%d), which was not requested", protocol.ErrMalformed, rg.Offset, rg.Length)
	}
	off, n := int64(rg.Offset), int64(rg.Length)
	if s.v.Primary() != vf.primary {
		vf.abort("this node changed role during the verify")
	} else {
		mine := ps.sum
		if !ps.hasSum {
			var err error
			if mine, err = digest(s, off, n); err != nil {
				return err
			}
		}
		switch {
		case mine == rg.Sum:
		case n > vf.block:
			// Find which blocks differ: one request per block, so that
			// only those are marked (and later resynced).
			for b := off; b < off+n; b += vf.block {
				if err := vf.request(b, min(vf.block, off+n-b), true); err != nil {
					return err
				}
			}
		default:
			s.v.Mark(s.l.slot, off, n)
			vf.prog.mu.Lock()
			vf.prog.mismatch += n
			first := vf.prog.mismatch == n
			vf.prog.mu.Unlock()
			if first {
				s.l.log.Warn("verify: data differs from the peer; marked out of sync", "offset", off, "bytes", n)
			}
		}
	}
	if !ps.sub {
		vf.prog.add(n, 0)
	}
	vf.mu.Lock()
	vf.inflight -= n
	vf.cond.Broadcast()
	vf.mu.Unlock()
	return nil
}

func (vf *verify) abort(why string) {
	vf.mu.Lock()
	if vf.aborted == "" {
		vf.aborted = why
	}
	vf.cond.Broadcast()
	vf.mu.Unlock()
}

// end finishes the source's verify: status, log and event.
func (vf *verify) end(errMsg string) {
	s := vf.s
	// The link is Established again before the progress says finished:
	// whoever waits for the verify to end may act on the link at once
	// (a resync of its findings).
	s.l.mu.Lock()
	if s.vf == vf {
		s.vf = nil
	}
	s.l.mu.Unlock()
	vf.cond.Broadcast()
	if !s.dead.Load() {
		s.l.setRepl(ReplEstablished, "verify finished")
	}
	p := vf.prog
	p.mu.Lock()
	p.running, p.finished, p.lastErr = false, time.Now(), errMsg
	done, mismatch, d := p.done, p.mismatch, p.finished.Sub(p.started)
	p.mu.Unlock()
	logVerifyEnd(s, "source", done, mismatch, d, errMsg)
}

func logVerifyEnd(s *session, side string, done, mismatch int64, d time.Duration, errMsg string) {
	l := s.l
	if errMsg != "" {
		l.log.Warn("online verify stopped", "side", side, "compared", done, "mismatch_bytes", mismatch, "err", errMsg)
		l.event("verify-done", "", "", fmt.Sprintf("stopped after %d bytes: %s", done, errMsg))
		return
	}
	msg := fmt.Sprintf("%d bytes compared in %.1fs, %d bytes differ", done, d.Seconds(), mismatch)
	if mismatch > 0 {
		msg += fmt.Sprintf("; marked out of sync: run `blkrep resync %s` to resync them", l.r.cfg.Volume)
		l.log.Warn("online verify finished: data differs", "side", side, "compared", done, "mismatch_bytes", mismatch, "seconds", d.Seconds())
	} else {
		l.log.Info("online verify finished: identical", "side", side, "compared", done, "seconds", d.Seconds())
	}
	l.event("verify-done", "", "", msg)
}

// digest is SHA-256 of the local data in [off, off+n).
func digest(s *session, off, n int64) ([protocol.SumSize]byte, error) {
	buf := nbd.GetBuf(int(n))
	defer nbd.PutBuf(buf)
	if _, err := s.v.Data().ReadAt(buf, off); err != nil {
		return [protocol.SumSize]byte{}, fmt.Errorf("verify: reading [%d, +%d): %w", off, n, err)
	}
	return sha256.Sum256(buf), nil
}

// verifyTarget is the answering side's progress.
type verifyTarget struct {
	prog *progress
}

// handleVerify processes verify messages (receiver goroutine).
func (s *session) handleVerify(t protocol.MsgType, p []byte, size uint64) error {
	switch t {
	case protocol.MsgVerifyReq:
		rg, err := protocol.DecodeRange(p, t, size, false)
		if err != nil {
			return err
		}
		vt := s.vt
		if vt == nil {
			vt = &verifyTarget{prog: &progress{running: true, checksum: true, total: int64(size), started: time.Now()}}
			s.vt = vt
			s.l.mu.Lock()
			s.l.state.verify = vt.prog
			s.l.mu.Unlock()
			s.l.setRepl(ReplVerifyTarget, "the peer started a verify")
		}
		off, n := int64(rg.Offset), int64(rg.Length)
		// A Primary digests and answers under the conflict lock (see verify).
		primary := s.v.Primary()
		var lk span
		if primary {
			lk = s.l.r.cf.lock(off, n)
		}
		rg.Sum, err = digest(s, off, n)
		if err == nil {
			s.q.put(protocol.MsgVerifyRep, rg.Append(nil, true), nil)
		}
		if primary {
			s.l.r.cf.unlock(lk)
		}
		if err != nil {
			return err
		}
		// Refining requests (block-sized, inside a range already
		// answered) are not new work: done stops at the volume size.
		vt.prog.mu.Lock()
		vt.prog.done = min(vt.prog.done+n, vt.prog.total)
		vt.prog.mu.Unlock()
	case protocol.MsgVerifyRep:
		rg, err := protocol.DecodeRange(p, t, size, true)
		if err != nil {
			return err
		}
		s.l.mu.Lock()
		vf := s.vf
		s.l.mu.Unlock()
		if vf == nil {
			return fmt.Errorf("%w: verify reply outside a verify", protocol.ErrMalformed)
		}
		return vf.reply(rg)
	case protocol.MsgVerifyDone:
		u, err := protocol.DecodeU64(p, t)
		if err != nil {
			return err
		}
		vt := s.vt
		if vt == nil {
			return fmt.Errorf("%w: verify-done outside a verify", protocol.ErrMalformed)
		}
		s.vt = nil
		s.l.setRepl(ReplEstablished, "verify finished")
		pr := vt.prog
		pr.mu.Lock()
		pr.running, pr.finished, pr.mismatch = false, time.Now(), int64(min(u.V, uint64(size)))
		done, mismatch, d := pr.done, pr.mismatch, pr.finished.Sub(pr.started)
		pr.mu.Unlock()
		logVerifyEnd(s, "target", done, mismatch, d, "")
	}
	return nil
}

// Verify starts an online verify with every connected peer, this node
// being the verify source. It refuses when no peer is connected or a
// resync or verify runs.
func (r *Replica) Verify() (int, error) {
	started := 0
	var firstErr error
	for _, l := range r.links {
		if err := l.startVerify(); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		started++
	}
	if started == 0 {
		if firstErr == nil {
			firstErr = refusedf("%s has no peer", r.cfg.Volume)
		}
		return 0, firstErr
	}
	return started, nil
}
