package repl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blkrep/blkrep/internal/volume"
	"github.com/blkrep/blkrep/protocol"
)

// Connection states (status "connection").
const (
	ConnStandAlone    = "StandAlone" // not trying: disconnected by the operator, split brain, unrelated data
	ConnConnecting    = "Connecting"
	ConnConnected     = "Connected"
	ConnDisconnecting = "Disconnecting"
)

// Replication states (status "replication").
const (
	ReplOff         = "Off"
	ReplEstablished = "Established"
	ReplSyncSource  = "SyncSource"
	ReplSyncTarget  = "SyncTarget"
	// ReplVerifySource: this node runs an online verify against the peer;
	// ReplVerifyTarget: the peer runs one against this node.
	ReplVerifySource = "VerifySource"
	ReplVerifyTarget = "VerifyTarget"
)

// link is the replica's relation with one peer: it (re)connects, runs
// the handshake and serves sessions, one at a time.
type link struct {
	r    *Replica
	v    *volume.Volume
	peer Peer
	slot int
	dial bool // the smaller node name dials
	log  *slog.Logger

	offers chan offer
	quit   chan struct{}
	kick   chan struct{}
	once   sync.Once

	// gate keeps writes out of a handshake: the handshake holds it from
	// before it sends this node's State until the session is installed,
	// and a write holds it shared while it ships to the session or, with
	// none, marks and rotates. So every write is either in the State and
	// bitmap the handshake sends, or shipped through the new session;
	// none can fall between (marked after the bitmap exchange, or cleared
	// by a no-sync decision, and never sent).
	gate sync.RWMutex

	mu    sync.Mutex
	want  bool     // connecting wanted
	sess  *session // live session, nil when none
	state linkState
	// lost is the failover gate's view of the peer when the last session
	// was lost: writes and flushes it failed wait on it. lostMarked: that
	// session's teardown marked writes of epochs the peer had not
	// acknowledged.
	lost       missedPeer
	lostMarked bool
	// discardMyData: the next handshake makes this side the split-brain
	// victim (set by `blkrep resync --discard-my-data`).
	discardMyData bool
	forceFull     bool
	// authKey is the dialer's MAC of the last authentication: a value
	// both sides know, unique to the connection (link.run goroutine only).
	authKey [protocol.MACSize]byte

	sent, recvd atomic.Uint64
	reconnects  atomic.Uint64
}

type offer struct {
	c net.Conn
	h helloIn
}

// linkState is what status shows, under link.mu.
type linkState struct {
	conn, repl string
	peerRole   string
	peerDisk   string
	lastErr    string
	splitBrain bool
	handshake  *handshakeInfo
	resync     *progress
	verify     *progress
	// peerTerm is the peer's failover data term as it last told it (0:
	// failover off or unknown); kept when the link drops.
	peerTerm uint64
	// staleReported is the stale-primary refusal last reported (term.go),
	// "" once a handshake passes that check.
	staleReported string
}

type handshakeInfo struct {
	at                        time.Time
	rule, action              string
	localCurrent, peerCurrent uint64
}

func newLink(r *Replica, p Peer, slot int) *link {
	return &link{
		r: r, v: r.v, peer: p, slot: slot, dial: r.cfg.Node < p.Node,
		log:    r.log.With("peer", p.Node),
		offers: make(chan offer, 1), quit: make(chan struct{}), kick: make(chan struct{}, 1),
		want:  true,
		state: linkState{conn: ConnConnecting, repl: ReplOff, peerRole: "Unknown", peerDisk: "DUnknown"},
	}
}

func (l *link) stop() {
	l.once.Do(func() { close(l.quit) })
	l.mu.Lock()
	s := l.sess
	l.mu.Unlock()
	if s != nil {
		s.kill(errors.New("shutting down"))
	}
}

// offer hands an accepted connection to the link.
func (l *link) offer(c net.Conn, h helloIn) {
	if l.dial {
		refuse(c, fmt.Sprintf("%s dials %s for volume %s, not the other way round (are both configurations the same file?)", l.r.cfg.Node, l.peer.Node, l.r.cfg.Volume))
		return
	}
	// The peer reconnected: its end of the old session is gone. Killed
	// before the offer is handed over, never the session built from it.
	l.mu.Lock()
	old := l.sess
	l.mu.Unlock()
	if old != nil {
		old.kill(errors.New("the peer opened a new connection"))
	}
	select {
	case l.offers <- offer{c, h}:
	case <-l.quit:
		c.Close()
		return
	default:
		// One pending offer is enough; the newest wins.
		select {
		case old := <-l.offers:
			old.c.Close()
		default:
		}
		select {
		case l.offers <- offer{c, h}:
		default:
			c.Close()
		}
	}
}

func (l *link) event(kind, old, new, msg string) {
	l.r.cfg.Event(l.peer.Node, kind, old, new, msg)
}

// setConn changes the connection state and reports it.
func (l *link) setConn(state, msg string) {
	l.mu.Lock()
	old := l.state.conn
	l.state.conn = state
	l.mu.Unlock()
	if old != state {
		l.event("connection", old, state, msg)
	}
}

func (l *link) setRepl(state, msg string) {
	l.mu.Lock()
	old := l.state.repl
	l.state.repl = state
	l.mu.Unlock()
	if old != state {
		l.event("replication", old, state, msg)
	}
}

func (l *link) setErr(err error) {
	l.mu.Lock()
	l.state.lastErr = err.Error()
	l.mu.Unlock()
}

// sleep waits d, or less if told to stop or connect now; false on stop.
func (l *link) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.quit:
		return false
	case <-l.kick:
		return true
	case <-t.C:
		return true
	}
}

// run connects, serves and reconnects until stop.
func (l *link) run() {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-l.quit; cancel() }()
	first := true
	for {
		select {
		case <-l.quit:
			return
		default:
		}
		l.mu.Lock()
		want := l.want
		l.mu.Unlock()
		if !want {
			l.setConn(ConnStandAlone, "")
			select {
			case <-l.quit:
				return
			case <-l.kick:
			case o := <-l.offers:
				// StandAlone: not accepting.
				refuse(o.c, fmt.Sprintf("volume %s is StandAlone on %s (run `blkrep connect %s` there)", l.r.cfg.Volume, l.r.cfg.Node, l.r.cfg.Volume))
			}
			continue
		}
		l.setConn(ConnConnecting, "")
		s, err := l.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.setErr(err)
			if first || !errors.Is(err, errNoOffer) {
				l.log.Warn("cannot connect to peer", "address", l.peer.Address, "err", err)
			}
			first = false
			var re *refusal
			if errors.As(err, &re) && re.standAlone {
				l.mu.Lock()
				l.want = false
				l.mu.Unlock()
				continue
			}
			if !l.sleep(l.r.cfg.ConnectInterval) {
				return
			}
			continue
		}
		first = true
		l.serve(s)
		l.reconnects.Add(1)
	}
}

var errNoOffer = errors.New("waiting for the peer to connect")

// refusal is a handshake outcome that is not a network failure.
type refusal struct {
	msg        string
	standAlone bool // do not retry until told to
}

func (e *refusal) Error() string { return e.msg }

// connect gets an authenticated connection (dialing, or taking the
// peer's) and runs the handshake on it.
func (l *link) connect(ctx context.Context) (*session, error) {
	var c net.Conn
	var br *bufio.Reader
	if l.dial {
		var err error
		if c, br, err = l.dialAuth(ctx); err != nil {
			return nil, err
		}
	} else {
		t := time.NewTimer(l.r.cfg.ConnectInterval)
		defer t.Stop()
		select {
		case o := <-l.offers:
			if err := l.acceptAuth(o.c, o.h); err != nil {
				o.c.Close()
				return nil, err
			}
			c, br = o.c, o.h.br
		case <-t.C:
			return nil, errNoOffer
		case <-l.kick:
			return nil, errNoOffer
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s := newSession(l, c, br)
	l.gate.Lock() // serve releases it once the session is installed
	if err := s.handshake(); err != nil {
		l.gate.Unlock()
		c.Close()
		return nil, err
	}
	return s, nil
}

// connectNow asks the link to (re)connect.
func (l *link) connectNow() {
	l.mu.Lock()
	l.want = true
	l.state.splitBrain = false
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// disconnect drops the session and stays StandAlone.
func (l *link) disconnect() {
	l.mu.Lock()
	l.want = false
	s := l.sess
	l.mu.Unlock()
	if s != nil {
		l.setConn(ConnDisconnecting, "operator")
		// Graceful: the open epoch is closed and acknowledged first, so
		// writes that reached the peer are not resynced for nothing.
		if wait := l.barrier(); wait != nil {
			done := make(chan struct{})
			go func() { wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(l.r.cfg.Timeout):
			}
		}
		s.kill(errors.New("disconnected by the operator"))
	}
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *link) peerPrimary() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sess != nil && l.state.peerRole == protocol.RolePrimary.String()
}

// connected reports whether a session is up.
func (l *link) connected() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sess != nil
}

// ship queues a write for the peer. Under protocols B and C the returned
// req completes on the peer's ack. A write that does not go (no session)
// is marked out of sync for the peer and the generation rotated (err: the
// rotation failed), all under the handshake gate; missed says so for the
// failover gate.
func (l *link) ship(kind dataKind, data []byte, off, n int64, fua bool) (rq *req, missed *missedPeer, err error) {
	l.gate.RLock()
	defer l.gate.RUnlock()
	ok := false
	l.mu.Lock()
	if s := l.sess; s != nil && !s.dead.Load() {
		rq, ok = s.ship(kind, data, off, n, fua)
	}
	if !ok {
		missed = l.missed()
	}
	l.mu.Unlock()
	if !ok {
		l.v.Mark(l.slot, off, n)
		err = l.v.EnsureRotated([]int{l.slot})
	}
	return rq, missed, err
}

// missed describes the peer for the failover gate, for a write it misses
// now (call with l.mu held, no live session: no resync can finish
// before the write is marked).
func (l *link) missed() *missedPeer {
	m := &missedPeer{node: l.peer.Node}
	if g := l.r.cfg.Gate; g != nil {
		m.synced = g.syncedCount(l.peer.Node)
	}
	return m
}

// resynced tells the failover gate that a resync from this node into the
// peer finished on s, if s is still the live session.
func (l *link) resynced(s *session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g := l.r.cfg.Gate; g != nil && l.sess == s && !s.dead.Load() {
		g.resynced(l.peer.Node)
	}
}

// lostMissed describes the peer for the failover gate, for a write or
// flush its last session lost before the peer acknowledged it.
func (l *link) lostMissed() missedPeer {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// flush closes the epoch; under protocol C it returns a function that
// blocks until the peer acknowledged it (false: the link failed first).
// With no session, it reports the failure at once if the last session was
// lost with epochs the peer had not acknowledged: the writes in them may
// have been acknowledged (the peer had them in memory), and a flush makes
// them durable, so the failover gate must know that the peer may lack
// them.
func (l *link) flush() func() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sess
	if s == nil {
		if l.lostMarked {
			return func() bool { return false }
		}
		return nil
	}
	if s.dead.Load() {
		return s.lostWait()
	}
	return s.closeEpoch(s.ep.Flush(s.now()))
}

// barrier closes the epoch and, under every protocol, returns a function
// that blocks until the peer acknowledged every epoch so far (nil when
// nothing is unacknowledged or no session is up).
func (l *link) barrier() func() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sess
	if s == nil {
		return nil
	}
	if s.dead.Load() {
		return s.lostWait()
	}
	return s.closeEpoch(s.ep.Drain(s.now()))
}

// sendState tells a connected peer about a role or generation change.
func (l *link) sendState() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.sess; s != nil {
		st := s.localState()
		s.q.put(protocol.MsgGens, st.Append(nil), nil)
	}
}
