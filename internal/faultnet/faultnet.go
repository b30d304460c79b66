package faultnet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

const (
	// MaxLatency bounds a direction's delay plus jitter.
	MaxLatency = time.Second
	// maxInFlight is how many chunks a direction holds while delaying
	// them (each at most relayChunk bytes).
	maxInFlight = 256
	relayChunk  = 32 << 10
)

// ErrPartitioned is what a dial returns while the network is partitioned.
var ErrPartitioned = errors.New("faultnet: partitioned: no route to the peer")

// Direction is a direction of a relayed connection.
type Direction int

const (
	Up   Direction = iota // dialer to acceptor
	Down                  // acceptor to dialer
)

func (d Direction) String() string { return [...]string{"up", "down"}[d] }

// Net is one fake network between a dialer and the listeners it dials.
type Net struct {
	seed  uint64
	logfn func(format string, args ...any)

	mu          sync.Mutex
	rng         *rand.Rand
	latency     [2]time.Duration
	jitter      time.Duration
	drop        [2]bool
	partitioned bool
	conns       map[*conn]struct{}
	// Counters, for assertions.
	dials, refused, cuts int
	delivered, dropped   [2]int64
}

// New returns a healed network without delay. logf, when not nil,
// receives what the network does (connections closed and why). Close
// cuts whatever is still connected.
func New(seed uint64, logf func(format string, args ...any)) *Net {
	return &Net{seed: seed, logfn: logf, rng: rand.New(rand.NewPCG(seed, 0xfa17)), conns: map[*conn]struct{}{}}
}

// Close cuts every live connection (Cut without counting it).
func (n *Net) Close() {
	n.mu.Lock()
	cuts := n.cuts
	n.mu.Unlock()
	n.cut()
	n.mu.Lock()
	n.cuts = cuts
	n.mu.Unlock()
}

// Dial is the dialer's Config.Dial.
func (n *Net) Dial(ctx context.Context, addr string) (net.Conn, error) {
	n.mu.Lock()
	if n.partitioned {
		n.refused++
		n.mu.Unlock()
		return nil, fmt.Errorf("dial %s: %w", addr, ErrPartitioned)
	}
	n.mu.Unlock()
	var d net.Dialer
	tc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	outer, inner := net.Pipe()
	c := &conn{n: n, outer: outer, inner: inner, tcp: tc}
	n.mu.Lock()
	if n.partitioned { // partitioned while dialing
		n.refused++
		n.mu.Unlock()
		c.close("partitioned while dialing")
		return nil, fmt.Errorf("dial %s: %w", addr, ErrPartitioned)
	}
	n.dials++
	n.conns[c] = struct{}{}
	n.mu.Unlock()
	c.wg.Add(2)
	go c.pump(Up, inner, tc)
	go c.pump(Down, tc, inner)
	return outer, nil
}

// SetDelay sets each Direction's latency and a jitter added to both
// (uniform in [0, jitter), from the seeded generator).
func (n *Net) SetDelay(up, down, jitter time.Duration) error {
	if max(up, down)+jitter > MaxLatency {
		return fmt.Errorf("faultnet: latency %s+%s beyond the %s bound", max(up, down), jitter, MaxLatency)
	}
	n.mu.Lock()
	n.latency = [2]time.Duration{up, down}
	n.jitter = jitter
	n.mu.Unlock()
	return nil
}

// Blackhole drops every byte in the chosen Directions, on live and new
// connections, until Heal.
func (n *Net) Blackhole(up, down bool) {
	n.mu.Lock()
	n.drop = [2]bool{up, down}
	n.mu.Unlock()
}

// RefuseDials makes dials fail until Heal.
func (n *Net) RefuseDials() {
	n.mu.Lock()
	n.partitioned = true
	n.mu.Unlock()
}

// Partition makes dials fail and blackholes both Directions.
func (n *Net) Partition() {
	n.mu.Lock()
	n.partitioned = true
	n.drop = [2]bool{true, true}
	n.mu.Unlock()
}

// CutAndPartition partitions, then cuts every live connection: the
// endpoints see their connection fail at once and cannot reconnect until
// Heal. Safe to call from a hook (it does not wait for anything).
func (n *Net) CutAndPartition() {
	n.Partition()
	n.cut()
}

// Cut closes every live connection abruptly; later dials succeed.
func (n *Net) Cut() { n.cut() }

func (n *Net) cut() {
	n.mu.Lock()
	cs := make([]*conn, 0, len(n.conns))
	for c := range n.conns {
		cs = append(cs, c)
	}
	if len(cs) > 0 {
		n.cuts++
	}
	n.mu.Unlock()
	for _, c := range cs {
		c.close("cut")
	}
}

// Heal ends a partition and blackholes: dials succeed again. Connections
// that already dropped bytes keep dropping (see the file comment).
func (n *Net) Heal() {
	n.mu.Lock()
	n.partitioned = false
	n.drop = [2]bool{}
	n.mu.Unlock()
}

// Stats are the network's counters: dials made and refused, cuts that
// closed something, live connections, bytes delivered and dropped per
// direction.
type Stats struct {
	Partitioned                bool
	Dials, Refused, Cuts, Live int
	Delivered, Dropped         [2]int64
}

// Stats returns a copy of the counters.
func (n *Net) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return Stats{Partitioned: n.partitioned, Dials: n.dials, Refused: n.refused, Cuts: n.cuts, Live: len(n.conns),
		Delivered: n.delivered, Dropped: n.dropped}
}

// conn is one relayed connection.
type conn struct {
	n            *Net
	outer, inner net.Conn // the dialer's end of the pipe, and the relay's
	tcp          net.Conn // to the acceptor

	mu       sync.Mutex
	closed   bool
	poisoned [2]bool // the Direction dropped bytes: it never delivers again
	wg       sync.WaitGroup
}

// close ends the connection abruptly, once; the pumps stop delivering.
func (c *conn) close(why string) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	c.n.logf("faultnet: connection %s closed: %s", c.tcp.LocalAddr(), why)
	if tc, ok := c.tcp.(*net.TCPConn); ok {
		tc.SetLinger(0) // RST, not FIN: an abrupt cut
	}
	c.tcp.Close()
	c.inner.Close()
	c.outer.Close()
	c.n.mu.Lock()
	delete(c.n.conns, c)
	c.n.mu.Unlock()
}

// deliverable reports whether a chunk may go out in Direction d now, and
// poisons the Direction when it may not because of a blackhole.
func (c *conn) deliverable(d Direction, size int) bool {
	c.n.mu.Lock()
	drop := c.n.drop[d]
	c.n.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	if drop {
		c.poisoned[d] = true
	}
	ok := !c.poisoned[d]
	c.n.mu.Lock()
	if ok {
		c.n.delivered[d] += int64(size)
	} else {
		c.n.dropped[d] += int64(size)
	}
	c.n.mu.Unlock()
	return ok
}

func (c *conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

type chunk struct {
	b  []byte
	at time.Time
}

// pump relays Direction d from src to dst until src fails; then, unless
// d is blackholed, the close travels on to dst.
func (c *conn) pump(d Direction, src, dst net.Conn) {
	defer c.wg.Done()
	q := make(chan chunk, maxInFlight)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ch := range q {
			if wait := time.Until(ch.at); wait > 0 {
				time.Sleep(wait) // bounded by MaxLatency
			}
			if !c.deliverable(d, len(ch.b)) {
				continue
			}
			if _, err := dst.Write(ch.b); err != nil {
				c.close(fmt.Sprintf("%s: delivering: %v", d, err))
			}
		}
	}()
	var rerr error
	for {
		buf := make([]byte, relayChunk)
		k, err := src.Read(buf)
		if k > 0 {
			q <- chunk{b: buf[:k], at: time.Now().Add(c.n.latencyOf(d))}
		}
		if err != nil {
			rerr = err
			break
		}
	}
	close(q)
	<-done
	c.mu.Lock()
	propagate := !c.closed && !c.poisoned[d]
	c.mu.Unlock()
	if propagate {
		c.n.mu.Lock()
		propagate = !c.n.drop[d]
		c.n.mu.Unlock()
	}
	if propagate {
		c.close(fmt.Sprintf("%s: the sender's side ended (%v)", d, rerr))
	}
}

// logf logs what the network does when the test logs the nodes too.
func (n *Net) logf(format string, args ...any) {
	if n.logfn != nil {
		n.logfn(format, args...)
	}
}

func (n *Net) latencyOf(d Direction) time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.latency[d]
	if n.jitter > 0 {
		l += time.Duration(n.rng.Int64N(int64(n.jitter)))
	}
	return l
}
