package repl

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/blkrep/blkrep/nbd"
	"github.com/blkrep/blkrep/protocol"
)

// resyncReq is the most one resync request asks for.
const resyncReq = 512 << 10

// checkpointEvery bounds the resync progress a target can lose in a
// crash: after this much data (or checkpointPeriod) it flushes its data
// and then persists its cleared bits.
const (
	checkpointEvery  = 256 << 20
	checkpointPeriod = 5 * time.Second
)

// progress is a resync's figures for status (under its own lock).
type progress struct {
	mu                   sync.Mutex
	running, checksum    bool
	total, done, skipped int64
	mismatch             int64 // verify: bytes that differ
	started, finished    time.Time
	lastErr              string
	samples              []sample // (time, done) at most rateWindow/10 apart
}

// rateWindow is how far back the rate shown while a resync or verify
// runs looks: recent enough to show throttling, long enough to be steady.
const rateWindow = 5 * time.Second

type sample struct {
	at   time.Time
	done int64
}

func (p *progress) add(done, skipped int64) {
	p.mu.Lock()
	p.done += done
	p.skipped += skipped
	now := time.Now()
	if n := len(p.samples); n == 0 || now.Sub(p.samples[n-1].at) >= rateWindow/10 {
		p.samples = append(p.samples, sample{now, p.done})
		for len(p.samples) > 2 && now.Sub(p.samples[1].at) > rateWindow {
			p.samples = p.samples[1:]
		}
	}
	p.mu.Unlock()
}

// rate is bytes/s over the last rateWindow while running, the average
// once finished (under p.mu).
func (p *progress) rate(now time.Time) float64 {
	if !p.running {
		if secs := p.finished.Sub(p.started).Seconds(); secs > 0 {
			return float64(p.done) / secs
		}
		return 0
	}
	// From the newest sample at least rateWindow old (or the start).
	from := sample{p.started, 0}
	for _, sm := range p.samples {
		if now.Sub(sm.at) < rateWindow {
			break
		}
		from = sm
	}
	if secs := now.Sub(from.at).Seconds(); secs > 0 {
		return float64(p.done-from.done) / secs
	}
	return 0
}

// resync drives one resync. The target asks for every range set in its
// bitmap (the union of both sides' after the handshake), in increasing
// order, keeping ResyncInFlight bytes requested; the source answers each
// request with data, a hole, or "same" (checksum resync), read under the
// conflict lock so that it never overtakes a newer application write.
type resync struct {
	s      *session
	target bool
	csum   bool
	// sourceCurrent is the source's generation at the handshake: the
	// target's generation once done.
	sourceCurrent uint64
	prog          *progress

	mu       sync.Mutex
	cond     *sync.Cond
	inflight int64
	finished bool
	// since the last checkpoint
	landed   int64
	lastCkpt time.Time
}

func newResync(s *session, target bool) *resync {
	cfg := &s.l.r.cfg
	rule := s.decision.Rule
	crash := rule == protocol.RuleEqualLocalCrashed || rule == protocol.RuleEqualPeerCrashed ||
		rule == protocol.RuleEqualBothCrashed || rule == protocol.RuleEqualLivePrimary
	full := s.decision.Action == protocol.SourceFull || s.decision.Action == protocol.TargetFull
	rs := &resync{s: s, target: target, sourceCurrent: s.peer.Current,
		csum: cfg.ResyncChecksums == "always" || (cfg.ResyncChecksums == "after-crash" && crash && !full)}
	rs.cond = sync.NewCond(&rs.mu)
	rs.prog = &progress{running: true, checksum: rs.csum, total: s.v.DirtyBytes(s.l.slot), started: time.Now()}
	s.l.log.Info("resync starting", "role", map[bool]string{true: "target", false: "source"}[target],
		"bytes", rs.prog.total, "checksums", rs.csum, "rule", rule)
	return rs
}

// request is the target's requester loop.
func (rs *resync) request() error {
	s := rs.s
	cfg := &s.l.r.cfg
	slot := s.l.slot
	start := time.Now()
	var next time.Time // pacing: the earliest time of the next request
	for pass := 0; ; pass++ {
		if pass == 3 {
			return fmt.Errorf("resync: %d bytes still out of sync after %d passes", s.v.DirtyBytes(slot), pass)
		}
		cursor := int64(0)
		for {
			off, n, ok := s.v.NextDirty(slot, cursor, resyncReq)
			if !ok {
				break
			}
			cursor = off + n
			rs.mu.Lock()
			for rs.inflight > 0 && rs.inflight+n > cfg.ResyncInFlight && !s.dead.Load() {
				rs.cond.Wait()
			}
			rs.mu.Unlock()
			if s.dead.Load() {
				return nil
			}
			// The rate controller: the in-flight window above fills the
			// link; resync_rate_max caps the rate, resync_rate_min is what
			// is left to the resync while the application writes.
			s.l.r.pace(&next, start, n, s.dead.Load)
			if rs.checkpointDue() {
				rs.drain()
				if err := rs.checkpoint(); err != nil {
					return err
				}
			}
			rg := protocol.Range{Offset: uint64(off), Length: uint32(n)}
			t := protocol.MsgResyncReq
			if rs.csum {
				buf := nbd.GetBuf(int(n))
				_, err := s.v.Data().ReadAt(buf, off)
				rg.Sum = sha256.Sum256(buf)
				nbd.PutBuf(buf)
				if err != nil {
					return fmt.Errorf("resync: reading local data for checksums: %w", err)
				}
				t = protocol.MsgCsumReq
			}
			rs.mu.Lock()
			rs.inflight += n
			rs.mu.Unlock()
			if !s.q.put(t, rg.Append(nil, rs.csum), nil) {
				return nil
			}
		}
		rs.drain()
		if s.dead.Load() {
			return nil
		}
		if err := rs.checkpoint(); err != nil {
			return err
		}
		if s.v.DirtyBytes(slot) == 0 {
			break
		}
	}
	return rs.finishTarget()
}

func (rs *resync) drain() {
	rs.mu.Lock()
	for rs.inflight > 0 && !rs.s.dead.Load() {
		rs.cond.Wait()
	}
	rs.mu.Unlock()
}

func (rs *resync) checkpointDue() bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.lastCkpt.IsZero() {
		rs.lastCkpt = time.Now()
	}
	return rs.landed >= checkpointEvery || (rs.landed > 0 && time.Since(rs.lastCkpt) >= checkpointPeriod)
}

// checkpoint makes the landed data durable, then the cleared bits: a
// crash never leaves a bit cleared over data that was lost.
func (rs *resync) checkpoint() error {
	s := rs.s
	if err := s.v.Data().Flush(); err != nil {
		return fmt.Errorf("resync: flushing resynced data: %w", err)
	}
	if err := s.v.PersistBitmaps(); err != nil {
		return fmt.Errorf("resync: persisting progress: %w", err)
	}
	rs.mu.Lock()
	rs.landed, rs.lastCkpt = 0, time.Now()
	rs.mu.Unlock()
	s.l.r.cfg.hook(HookResyncCheckpoint)
	return nil
}

func (rs *resync) finishTarget() error {
	s := rs.s
	if err := s.v.Data().Flush(); err != nil {
		return err
	}
	if err := s.v.FinishSyncTarget(s.l.slot, rs.sourceCurrent); err != nil {
		return err
	}
	rs.finish("")
	s.q.put(protocol.MsgResyncDone, protocol.U64{V: rs.sourceCurrent}.Append(nil), nil)
	s.l.mu.Lock()
	s.l.state.peerDisk = "UpToDate"
	s.l.mu.Unlock()
	s.l.setRepl(ReplEstablished, "resync finished")
	return nil
}

func (rs *resync) finish(errMsg string) {
	p := rs.prog
	p.mu.Lock()
	p.running, p.finished, p.lastErr = false, time.Now(), errMsg
	done, total, d := p.done, p.total, p.finished.Sub(p.started)
	skipped := p.skipped
	p.mu.Unlock()
	rs.mu.Lock()
	rs.finished = true
	rs.mu.Unlock()
	rs.s.l.log.Info("resync finished", "bytes", done, "of", total, "identical_by_checksum", skipped, "seconds", d.Seconds())
	rs.s.l.event("resync-done", "", "", fmt.Sprintf("%d bytes in %.1fs (%d identical by checksum)", done, d.Seconds(), skipped))
}

var zero = make([]byte, resyncReq)

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zero))
		if !bytes.Equal(b[:n], zero[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// handle processes a resync message (receiver goroutine).
func (rs *resync) handle(t protocol.MsgType, p []byte, size uint64) error {
	s := rs.s
	slot := s.l.slot
	switch t {
	case protocol.MsgResyncReq, protocol.MsgCsumReq:
		if rs.target {
			return fmt.Errorf("%w: %s sent to the sync target", protocol.ErrMalformed, t)
		}
		rg, err := protocol.DecodeRange(p, t, size, t == protocol.MsgCsumReq)
		if err != nil {
			return err
		}
		return rs.serve(t, rg)
	case protocol.MsgResyncData:
		if !rs.target {
			return fmt.Errorf("%w: resync data sent to the sync source", protocol.ErrMalformed)
		}
		m, err := protocol.DecodeResyncData(p, size)
		if err != nil {
			return err
		}
		off, n := int64(m.Offset), int64(m.Length)
		if m.Hole {
			err = zeroes(s.v.Data(), off, n)
		} else {
			_, err = s.v.Data().WriteAt(m.Data, off)
		}
		if err != nil {
			return fmt.Errorf("resync: writing [%d, +%d): %w", off, n, err)
		}
		rs.landedRange(off, n, false)
	case protocol.MsgResyncSame:
		if !rs.target {
			return fmt.Errorf("%w: resync-same sent to the sync source", protocol.ErrMalformed)
		}
		rg, err := protocol.DecodeRange(p, t, size, false)
		if err != nil {
			return err
		}
		rs.landedRange(int64(rg.Offset), int64(rg.Length), true)
	case protocol.MsgResyncAck:
		rg, err := protocol.DecodeRange(p, t, size, false)
		if err != nil {
			return err
		}
		s.v.Clear(slot, int64(rg.Offset), int64(rg.Length))
		rs.prog.add(int64(rg.Length), 0)
	case protocol.MsgResyncDone:
		if rs.target {
			return fmt.Errorf("%w: resync-done sent to the sync target", protocol.ErrMalformed)
		}
		if err := s.v.FinishSyncSource(slot); err != nil {
			return err
		}
		rs.finish("")
		s.l.mu.Lock()
		s.l.state.peerDisk = "UpToDate"
		s.l.mu.Unlock()
		s.l.setRepl(ReplEstablished, "resync finished")
		s.l.resynced(s)
	}
	return nil
}

// landedRange records a range written (or found identical) on the
// target and acknowledges it to the source.
func (rs *resync) landedRange(off, n int64, same bool) {
	s := rs.s
	s.l.r.cfg.hook(HookResyncLanded)
	s.v.Clear(s.l.slot, off, n)
	rg := protocol.Range{Offset: uint64(off), Length: uint32(n)}
	s.q.put(protocol.MsgResyncAck, rg.Append(nil, false), nil)
	if same {
		rs.prog.add(n, n)
	} else {
		rs.prog.add(n, 0)
	}
	rs.mu.Lock()
	rs.inflight -= n
	rs.landed += n
	rs.cond.Broadcast()
	rs.mu.Unlock()
}

// serve answers a resync request (source side).
func (rs *resync) serve(t protocol.MsgType, rg protocol.Range) error {
	s := rs.s
	off, n := int64(rg.Offset), int64(rg.Length)
	buf := nbd.GetBuf(int(n)) // the send queue recycles it once sent
	lk := s.l.r.cf.lock(off, n)
	defer s.l.r.cf.unlock(lk)
	if _, err := s.v.Data().ReadAt(buf, off); err != nil {
		nbd.PutBuf(buf)
		return fmt.Errorf("resync: reading [%d, +%d): %w", off, n, err)
	}
	if t == protocol.MsgCsumReq && sha256.Sum256(buf) == rg.Sum {
		nbd.PutBuf(buf)
		s.q.put(protocol.MsgResyncSame, rg.Append(nil, false), nil)
		return nil
	}
	m := protocol.ResyncData{Offset: rg.Offset, Length: rg.Length}
	if isZero(buf) {
		nbd.PutBuf(buf)
		m.Hole = true
		s.q.put(protocol.MsgResyncData, m.Append(nil), nil)
		return nil
	}
	s.q.putData(protocol.MsgResyncData, m.Append(nil), buf, true)
	return nil
}
