package protocol

import (
	"fmt"
	"strconv"
)

// DefaultMaxEpochWrites is the most writes one epoch holds when
// EpochConfig.MaxWrites is not set (DRBD's bound).
const DefaultMaxEpochWrites = 2048

// Span is the byte range [Off, Off+Len) of one write.
type Span struct{ Off, Len int64 }

// String formats a span as off+len.
func (s Span) String() string {
	return strconv.FormatInt(s.Off, 10) + "+" + strconv.FormatInt(s.Len, 10)
}

// EpochConfig configures an Epochs tracker.
type EpochConfig struct {
	// Protocol is 'A', 'B' or 'C'. Under B (receive ack) and C (write
	// ack) every write awaits its own ack; under C a Flush also waits for
	// the barrier ack of the newest epoch.
	Protocol byte
	// MaxWrites closes an epoch when it holds this many writes
	// (DefaultMaxEpochWrites when <= 0).
	MaxWrites int
	// MaxAge closes the open epoch at a Tick when it has been open for at
	// least this long (in the unit of now); <= 0: never by age.
	MaxAge int64
	// AckTimeout: a Tick reports TimedOut when something is outstanding
	// and the peer acknowledged nothing for longer than this; <= 0: never.
	AckTimeout int64
}

// Shipped is what Write decided for one write.
type Shipped struct {
	// Seq is the write's sequence number: the Seq of its MsgData.
	Seq uint64
	// Epoch is the epoch the write belongs to.
	Epoch uint64
	// AwaitAck (protocols B and C): complete the write to the client only
	// after WriteAck(Seq) succeeds, or as failed when Lost lists Seq.
	AwaitAck bool
	// Barrier, when not 0, is the epoch this write closed (FUA or
	// MaxWrites): send MsgBarrier(Barrier) right after the write's
	// MsgData.
	Barrier uint64
}

// Actions is the work a call hands back. Each method documents which
// fields it sets; 0 and nil mean nothing to do. Do the work in field order:
// Barrier, Release, Wake, Mark, Fail, FailWaiters.
type Actions struct {
	// Barrier, when not 0, is the epoch just closed: send
	// MsgBarrier(Barrier) after every MsgData sent so far.
	Barrier uint64
	// Waiter, when not 0, is the id of a flush waiter: the flush (or
	// graceful disconnect) completes when a later Actions lists it in
	// Wake (the peer acknowledged) or FailWaiters (the link died).
	Waiter uint64
	// Release holds the spans of the writes of epochs the peer
	// acknowledged, one per write in sequence order: drop their
	// activity-log holds (one UnholdRange per span: holds are counted).
	Release []Span
	// Wake holds the flush waiters whose epoch the peer acknowledged:
	// complete them as successful.
	Wake []uint64
	// Mark holds the spans of every write of every unacknowledged epoch,
	// one per write in sequence order: the peer may or may not have them.
	// Mark each out of sync for the peer, then drop its hold.
	Mark []Span
	// Fail holds the sequence numbers of writes that awaited their ack:
	// complete them as not replicated (their spans are in Mark).
	Fail []uint64
	// FailWaiters holds every flush waiter: complete them as failed.
	FailWaiters []uint64
	// TimedOut (Tick only): something is outstanding and the peer
	// acknowledged nothing for longer than AckTimeout. End the connection
	// and call Lost; nothing else was done.
	TimedOut bool
}

// Epochs is the Primary's bookkeeping for one replication link: which
// writes belong to which epoch, when an epoch closes (the caller sends
// MsgBarrier), what a barrier ack or a write ack completes, and what a lost
// connection leaves behind (REFERENCE.md sections 1-2).
//
// It is a pure state machine: it sends nothing, waits for nothing and
// reads no clock. Every method that needs the time takes now, a monotonic
// tick in units the caller chooses (MaxAge and AckTimeout are in the same
// units; for internal/repl, nanoseconds of a monotonic clock such as
// time.Since of a fixed instant). The methods return what the caller must
// do; the caller does it in the order each method's doc gives. Nothing here
// is safe for concurrent use: the caller serialises the calls (internal/repl:
// under link.mu).
//
// Numbering: sequence numbers, epoch numbers and flush-waiter ids each
// count from 1 and are never 0, so 0 means "none" in Shipped and Actions.
// Lost keeps the counters: numbering continues on the next connection, so
// a number names one write, epoch or waiter for the tracker's whole life
// (a stale id from a dead connection can never match a new one). The
// Secondary keeps no sequence state across connections, so the wire does
// not care; a caller that wants numbering to restart makes a new tracker.
//
// Allocation: Write, WriteAck, Flush, Drain and Tick allocate nothing
// once the internal rings have grown to the working set (no map, no
// per-write object). BarrierAck and Lost allocate only the slices they
// return, which then belong to the caller.
//
// Make one with NewEpochs; the zero value is not usable, and an Epochs must
// not be copied after its first use (it holds rings).
type Epochs struct {
	cfg       EpochConfig
	awaitAcks bool

	// writes holds every write of every unacknowledged epoch (closed or
	// open), in sequence order; sequence numbers in it are contiguous and
	// end at lastSeq. closed holds the closed, unacknowledged epochs in
	// order, their numbers contiguous; the open epoch's writes are the
	// tail of writes. waiters are in epoch order because a waiter always
	// attaches to the newest closed epoch.
	writes  ring[pendingWrite]
	closed  ring[closedEpoch]
	waiters ring[flushWaiter]

	open       uint64 // the open epoch, 0 when none
	openWrites int
	openedAt   int64

	lastSeq, lastEpoch, lastWaiter uint64

	awaiting     int   // elements of writes still awaiting their ack
	unacked      int64 // the sum of the lengths in writes
	lastProgress int64
}

type pendingWrite struct {
	span     Span
	awaiting bool
}

type closedEpoch struct {
	num    uint64
	writes int
}

type flushWaiter struct{ id, epoch uint64 }

// NewEpochs returns an empty tracker. It panics on a protocol other than
// 'A', 'B' or 'C' (the configuration is validated before it gets here).
func NewEpochs(c EpochConfig) Epochs {
	switch c.Protocol {
	case 'A', 'B', 'C':
	default:
		panic(fmt.Sprintf("protocol: NewEpochs with protocol %q", c.Protocol))
	}
	if c.MaxWrites <= 0 {
		c.MaxWrites = DefaultMaxEpochWrites
	}
	return Epochs{cfg: c, awaitAcks: c.Protocol != 'A'}
}

// Write records one write of n bytes at off, made at now, in the open
// epoch (opening the next one if none is open), and closes the epoch after
// it when the write is FUA or the epoch reached MaxWrites. Call it once
// the write's activity-log extents are held (not at all if holding them
// failed: the write is then not shipped) and before queueing its MsgData,
// so a Lost that races the send still marks it; then queue MsgData with
// Shipped.Seq, then the barrier if Shipped.Barrier is set. n is the
// write's length in bytes (>= 0).
func (e *Epochs) Write(off, n int64, fua bool, now int64) Shipped {
	if e.open == 0 {
		e.lastEpoch++
		e.open, e.openWrites, e.openedAt = e.lastEpoch, 0, now
	}
	e.lastSeq++
	s := Shipped{Seq: e.lastSeq, Epoch: e.open, AwaitAck: e.awaitAcks}
	if e.awaitAcks {
		e.addOutstanding(now)
		e.awaiting++
	}
	e.writes.push(pendingWrite{span: Span{off, n}, awaiting: e.awaitAcks})
	e.unacked += n
	e.openWrites++
	if fua || e.openWrites >= e.cfg.MaxWrites {
		s.Barrier = e.close(now)
	}
	return s
}

// Flush closes the open epoch, if any (Actions.Barrier). Under protocol C
// the flush must also wait for the peer: when an epoch is unacknowledged,
// Actions.Waiter names a waiter attached to the newest one (its ack covers
// every write completed before the flush). Under A and B, and when nothing
// is unacknowledged, the flush waits for nothing here.
func (e *Epochs) Flush(now int64) Actions {
	a := Actions{Barrier: e.close(now)}
	if e.cfg.Protocol == 'C' {
		a.Waiter = e.wait()
	}
	return a
}

// Drain is Flush for a graceful disconnect, under every protocol: it closes
// the open epoch and, when an epoch is unacknowledged, returns a waiter
// for the newest one, so the caller can wait (bounded by its timeout)
// before it cuts the link, and writes that reached the peer are not
// marked for resync for nothing.
func (e *Epochs) Drain(now int64) Actions {
	return Actions{Barrier: e.close(now), Waiter: e.wait()}
}

// Tick is the passage of time; alWaiters says the activity log has writers
// waiting for extents to go cold (which only the barrier ack of the epochs
// holding them allows). It reports TimedOut, and does nothing else, when
// something is outstanding and the last progress is more than AckTimeout
// before now. Otherwise it closes the open epoch (Actions.Barrier) when
// alWaiters is set or the epoch has been open for at least MaxAge.
func (e *Epochs) Tick(now int64, alWaiters bool) Actions {
	if e.cfg.AckTimeout > 0 && e.Outstanding() > 0 && now-e.lastProgress > e.cfg.AckTimeout {
		return Actions{TimedOut: true}
	}
	if e.open != 0 && (alWaiters || e.cfg.MaxAge > 0 && now-e.openedAt >= e.cfg.MaxAge) {
		return Actions{Barrier: e.close(now)}
	}
	return Actions{}
}

// BarrierAck handles the peer's MsgBarrierAck(num), received at now: the
// writes of every closed epoch up to num are durable on the peer. Those
// epochs must be outstanding and their writes acknowledged one by one (the
// peer acks every write of an epoch before its barrier under B and C);
// otherwise, that is for an epoch never closed, already acknowledged or
// still open, or ahead of a write ack, it returns an error wrapping
// ErrMalformed and changes nothing, and the caller ends the connection.
// On success Actions.Release holds the spans of those epochs' writes and
// Actions.Wake the flush waiters they satisfy.
func (e *Epochs) BarrierAck(num uint64, now int64) (Actions, error) {
	nc := e.closed.size()
	if nc == 0 || num < e.closed.at(0).num || num > e.closed.at(nc-1).num {
		return Actions{}, malformed("barrier ack for epoch %d, which is not outstanding (%s)", num, e.outstandingEpochs())
	}
	k := int(num - e.closed.at(0).num + 1)
	nw := 0
	for i := range k {
		nw += e.closed.at(i).writes
	}
	for i := range nw {
		if e.writes.at(i).awaiting {
			return Actions{}, malformed("barrier ack for epoch %d before the ack of its write %d", num, e.firstSeq()+uint64(i))
		}
	}
	a := Actions{Release: make([]Span, nw)}
	for i := range nw {
		w := e.writes.pop()
		a.Release[i] = w.span
		e.unacked -= w.span.Len
	}
	for range k {
		e.closed.pop()
	}
	for e.waiters.size() > 0 && e.waiters.at(0).epoch <= num {
		a.Wake = append(a.Wake, e.waiters.pop().id)
	}
	e.lastProgress = now
	return a, nil
}

// WriteAck handles the peer's MsgRecvAck (B) or MsgWriteAck (C) for write
// seq, received at now. On nil the caller completes write seq as
// replicated; it stays in its epoch (its hold is dropped by the epoch's
// BarrierAck). A seq that awaits no ack (unknown, already acknowledged, or
// any seq under protocol A) is an error wrapping ErrMalformed, and nothing
// changes.
func (e *Epochs) WriteAck(seq uint64, now int64) error {
	first := e.firstSeq()
	if seq < first || seq > e.lastSeq || !e.writes.at(int(seq-first)).awaiting {
		return malformed("ack for write %d, which awaits none", seq)
	}
	e.writes.at(int(seq - first)).awaiting = false
	e.awaiting--
	e.lastProgress = now
	return nil
}

// Lost handles the end of the connection. Every write of every
// unacknowledged epoch, closed or open, is in Actions.Mark (mark it out of
// sync for the peer, then drop its hold); the writes that awaited their ack
// are in Actions.Fail and every flush waiter in Actions.FailWaiters. The
// tracker is then empty and ready for the next connection; numbering
// continues (see the type's doc).
func (e *Epochs) Lost() Actions {
	var a Actions
	if n := e.writes.size(); n > 0 {
		a.Mark = make([]Span, n)
		seq := e.firstSeq()
		for i := range n {
			w := e.writes.at(i)
			a.Mark[i] = w.span
			if w.awaiting {
				a.Fail = append(a.Fail, seq+uint64(i))
			}
		}
	}
	for i := range e.waiters.size() {
		a.FailWaiters = append(a.FailWaiters, e.waiters.at(i).id)
	}
	e.writes.reset()
	e.closed.reset()
	e.waiters.reset()
	e.open, e.openWrites, e.awaiting, e.unacked = 0, 0, 0, 0
	return a
}

// UnackedBytes is the sum of the lengths of the writes whose epoch the peer
// has not acknowledged yet (open epoch included): what a lost connection
// would mark.
func (e *Epochs) UnackedBytes() int64 { return e.unacked }

// AwaitingAck is the number of writes awaiting their own ack (B and C).
func (e *Epochs) AwaitingAck() int { return e.awaiting }

// Outstanding is what the peer owes: writes awaiting their ack plus closed
// epochs awaiting their barrier ack. The open epoch is not owed anything
// until it closes.
func (e *Epochs) Outstanding() int { return e.awaiting + e.closed.size() }

// LastProgress is the tick of the last ack, or of the moment Outstanding
// went from 0 to 1, whichever is later: with Outstanding() > 0, the peer
// has acknowledged nothing since then. Tick compares it with AckTimeout.
func (e *Epochs) LastProgress() int64 { return e.lastProgress }

// OpenEpoch is the number of the open epoch, 0 when none is open.
func (e *Epochs) OpenEpoch() uint64 { return e.open }

// close closes the open epoch, if any, and returns its number (0: none).
func (e *Epochs) close(now int64) uint64 {
	if e.open == 0 {
		return 0
	}
	e.addOutstanding(now)
	num := e.open
	e.closed.push(closedEpoch{num: num, writes: e.openWrites})
	e.open, e.openWrites = 0, 0
	return num
}

// wait attaches a new waiter to the newest closed epoch (0: none closed).
func (e *Epochs) wait() uint64 {
	nc := e.closed.size()
	if nc == 0 {
		return 0
	}
	e.lastWaiter++
	e.waiters.push(flushWaiter{id: e.lastWaiter, epoch: e.closed.at(nc - 1).num})
	return e.lastWaiter
}

// addOutstanding is called before something becomes owed by the peer.
func (e *Epochs) addOutstanding(now int64) {
	if e.Outstanding() == 0 {
		e.lastProgress = now
	}
}

// firstSeq is the sequence number of writes' first element.
func (e *Epochs) firstSeq() uint64 { return e.lastSeq - uint64(e.writes.size()) + 1 }

func (e *Epochs) outstandingEpochs() string {
	switch nc := e.closed.size(); nc {
	case 0:
		return "none is"
	case 1:
		return fmt.Sprintf("epoch %d is", e.closed.at(0).num)
	default:
		return fmt.Sprintf("epochs %d to %d are", e.closed.at(0).num, e.closed.at(nc-1).num)
	}
}

// ring is a growable FIFO of T: push at the back, pop at the front, index
// from the front. Its length is a power of two.
type ring[T any] struct {
	buf     []T
	head, n int
}

// ringKeep is the largest ring (in elements) reset keeps for reuse.
const ringKeep = 4096

func (r *ring[T]) size() int { return r.n }

func (r *ring[T]) at(i int) *T { return &r.buf[(r.head+i)&(len(r.buf)-1)] }

func (r *ring[T]) push(v T) {
	if r.n == len(r.buf) {
		nb := make([]T, max(16, 2*len(r.buf)))
		for i := range r.n {
			nb[i] = *r.at(i)
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = v
	r.n++
}

func (r *ring[T]) pop() T {
	v := r.buf[r.head]
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	return v
}

// reset empties the ring, keeping its buffer unless it grew large.
func (r *ring[T]) reset() {
	if len(r.buf) > ringKeep {
		r.buf = nil
	}
	r.head, r.n = 0, 0
}
