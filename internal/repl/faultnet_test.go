package repl

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// This file is the fake network of the fault tests (fault_test.go): a
// relay injected through Config.Dial on the dialing node. Dial connects
// to the peer's real listener (the accepting side goes through Listener
// unchanged) and hands the dialer one end of a net.Pipe; two pump
// goroutines carry the bytes between that pipe and the TCP connection,
// one per direction, and apply the faults:
//
//	dialer ──pipe── [up pump ──▶]  ──tcp── acceptor
//	       ◀──────  [◀── down pump] ◀─────
//
//   - delay: every chunk read from one side is delivered no earlier than
//     its latency (per direction, plus a seeded jitter) after it was read.
//     Chunks stay in order (a byte stream) and in flight concurrently (a
//     pipeline, not one sleep per write); at most maxInFlight chunks wait,
//     which is the relay's window: a writer beyond it blocks.
//   - blackhole: a direction stops delivering without closing anything;
//     the bytes are dropped. A direction of a connection that dropped a
//     byte never delivers again (the stream has a gap: resuming it would
//     hand the peer garbage), so Heal does not revive it: the endpoints
//     must notice by their ping or ack timeouts and reconnect.
//   - cut: every live connection is closed abruptly (RST on the TCP side,
//     the pipe closed on the dialer's side); bytes in flight are lost.
//   - partition: dials fail at once, and every direction is blackholed.
//   - heal: dials succeed again and new connections deliver normally.
//
// A side that closes its connection is seen by the other side (the close
// travels like data) unless its direction is blackholed.
//
// Time is real: what is deterministic is the seeded jitter and what the
// tests decide at named hook points (cut at the Nth call of a point), not
// goroutine scheduling. Every wait is bounded: latencies are capped at
// maxLatency, and tests time out.

const (
	// maxLatency bounds a direction's delay plus jitter.
	maxLatency = time.Second
	// maxInFlight is how many chunks a direction holds while delaying
	// them (each at most relayChunk bytes).
	maxInFlight = 256
	relayChunk  = 32 << 10
)

// errPartitioned is what a dial returns while the network is partitioned.
var errPartitioned = errors.New("fakenet: partitioned: no route to the peer")

type direction int

const (
	dirUp   direction = iota // dialer to acceptor
	dirDown                  // acceptor to dialer
)

func (d direction) String() string { return [...]string{"up", "down"}[d] }

// fakeNet is one fake network between a dialer and the listeners it dials.
type fakeNet struct {
	t    testing.TB
	seed uint64

	mu          sync.Mutex
	rng         *rand.Rand
	latency     [2]time.Duration
	jitter      time.Duration
	drop        [2]bool
	partitioned bool
	conns       map[*faultConn]struct{}
	// Counters, for assertions.
	dials, refused, cuts int
	delivered, dropped   [2]int64
}

// faultSeed returns the seed of a scenario: REPL_FAULT_SEED overrides
// def, to replay a run whose log printed its seed.
func faultSeed(t testing.TB, def uint64) uint64 {
	t.Helper()
	seed := def
	if s := os.Getenv("REPL_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("REPL_FAULT_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (REPL_FAULT_SEED=%d replays it)", seed, seed)
	return seed
}

// newFakeNet returns a healed network without delay; the test's end cuts
// whatever is still connected.
func newFakeNet(t testing.TB, seed uint64) *fakeNet {
	n := &fakeNet{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 0xfa17)), conns: map[*faultConn]struct{}{}}
	t.Cleanup(n.cut)
	return n
}

// Dial is the dialer's Config.Dial.
func (n *fakeNet) Dial(ctx context.Context, addr string) (net.Conn, error) {
	n.mu.Lock()
	if n.partitioned {
		n.refused++
		n.mu.Unlock()
		return nil, fmt.Errorf("dial %s: %w", addr, errPartitioned)
	}
	n.mu.Unlock()
	var d net.Dialer
	tc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	outer, inner := net.Pipe()
	c := &faultConn{n: n, outer: outer, inner: inner, tcp: tc}
	n.mu.Lock()
	if n.partitioned { // partitioned while dialing
		n.refused++
		n.mu.Unlock()
		c.close("partitioned while dialing")
		return nil, fmt.Errorf("dial %s: %w", addr, errPartitioned)
	}
	n.dials++
	n.conns[c] = struct{}{}
	n.mu.Unlock()
	c.wg.Add(2)
	go c.pump(dirUp, inner, tc)
	go c.pump(dirDown, tc, inner)
	return outer, nil
}

// SetDelay sets each direction's latency and a jitter added to both
// (uniform in [0, jitter), from the seeded generator).
func (n *fakeNet) SetDelay(up, down, jitter time.Duration) {
	if max(up, down)+jitter > maxLatency {
		n.t.Fatalf("fakenet: latency %s+%s beyond the %s bound", max(up, down), jitter, maxLatency)
	}
	n.mu.Lock()
	n.latency = [2]time.Duration{up, down}
	n.jitter = jitter
	n.mu.Unlock()
}

// Blackhole drops every byte in the chosen directions, on live and new
// connections, until Heal.
func (n *fakeNet) Blackhole(up, down bool) {
	n.mu.Lock()
	n.drop = [2]bool{up, down}
	n.mu.Unlock()
}

// RefuseDials makes dials fail until Heal.
func (n *fakeNet) RefuseDials() {
	n.mu.Lock()
	n.partitioned = true
	n.mu.Unlock()
}

// Partition makes dials fail and blackholes both directions.
func (n *fakeNet) Partition() {
	n.mu.Lock()
	n.partitioned = true
	n.drop = [2]bool{true, true}
	n.mu.Unlock()
}

// CutAndPartition partitions, then cuts every live connection: the
// endpoints see their connection fail at once and cannot reconnect until
// Heal. Safe to call from a hook (it does not wait for anything).
func (n *fakeNet) CutAndPartition() {
	n.Partition()
	n.cut()
}

// Cut closes every live connection abruptly; later dials succeed.
func (n *fakeNet) Cut() { n.cut() }

func (n *fakeNet) cut() {
	n.mu.Lock()
	cs := make([]*faultConn, 0, len(n.conns))
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
func (n *fakeNet) Heal() {
	n.mu.Lock()
	n.partitioned = false
	n.drop = [2]bool{}
	n.mu.Unlock()
}

// stats is a copy of the counters.
type netStats struct {
	partitioned                bool
	dials, refused, cuts, live int
	delivered, dropped         [2]int64
}

func (n *fakeNet) stats() netStats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return netStats{partitioned: n.partitioned, dials: n.dials, refused: n.refused, cuts: n.cuts, live: len(n.conns),
		delivered: n.delivered, dropped: n.dropped}
}

// faultConn is one relayed connection.
type faultConn struct {
	n            *fakeNet
	outer, inner net.Conn // the dialer's end of the pipe, and the relay's
	tcp          net.Conn // to the acceptor

	mu       sync.Mutex
	closed   bool
	poisoned [2]bool // the direction dropped bytes: it never delivers again
	wg       sync.WaitGroup
}

// close ends the connection abruptly, once; the pumps stop delivering.
func (c *faultConn) close(why string) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	c.n.logf("fakenet: connection %s closed: %s", c.tcp.LocalAddr(), why)
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

// deliverable reports whether a chunk may go out in direction d now, and
// poisons the direction when it may not because of a blackhole.
func (c *faultConn) deliverable(d direction, size int) bool {
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

func (c *faultConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

type chunk struct {
	b  []byte
	at time.Time
}

// pump relays direction d from src to dst until src fails; then, unless
// d is blackholed, the close travels on to dst.
func (c *faultConn) pump(d direction, src, dst net.Conn) {
	defer c.wg.Done()
	q := make(chan chunk, maxInFlight)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ch := range q {
			if wait := time.Until(ch.at); wait > 0 {
				time.Sleep(wait) // bounded by maxLatency
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
func (n *fakeNet) logf(format string, args ...any) {
	if testing.Verbose() || os.Getenv("REPL_LOG") != "" {
		n.t.Logf(format, args...)
	}
}

func (n *fakeNet) latencyOf(d direction) time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.latency[d]
	if n.jitter > 0 {
		l += time.Duration(n.rng.Int64N(int64(n.jitter)))
	}
	return l
}

// --- tests of the fake network itself ---

// echoServer accepts connections and echoes what it reads; accepted
// connections are reported on the channel.
func echoServer(t *testing.T) (string, chan net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 16)
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					k, err := c.Read(buf)
					if k > 0 {
						if _, err := c.Write(buf[:k]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String(), accepted
}

func dialFake(t *testing.T, n *fakeNet, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := n.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads its echo within d; it returns the time
// taken or an error.
func roundTrip(c net.Conn, msg string, d time.Duration) (time.Duration, error) {
	start := time.Now()
	c.SetDeadline(start.Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg)); err != nil {
		return 0, err
	}
	buf := make([]byte, len(msg))
	for got := 0; got < len(buf); {
		k, err := c.Read(buf[got:])
		if err != nil {
			return 0, err
		}
		got += k
	}
	if string(buf) != msg {
		return 0, fmt.Errorf("echo %q, sent %q", buf, msg)
	}
	return time.Since(start), nil
}

func TestNetDelay(t *testing.T) {
	addr, _ := echoServer(t)
	n := newFakeNet(t, faultSeed(t, 1))
	n.SetDelay(20*time.Millisecond, 30*time.Millisecond, 5*time.Millisecond)
	c := dialFake(t, n, addr)
	for i := range 5 {
		rtt, err := roundTrip(c, fmt.Sprintf("ping %d", i), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		// 20+30 ms each way, jitter [0, 5) ms on each: 50..60 ms, plus
		// scheduling.
		if rtt < 50*time.Millisecond || rtt > 500*time.Millisecond {
			t.Errorf("round trip %d took %s, want 50 ms..500 ms", i, rtt)
		}
	}
	// Delay is latency, not bandwidth: 20 writes in a row arrive about
	// one latency later, not twenty.
	start := time.Now()
	for i := range 20 {
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 20)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	for got := 0; got < 20; {
		k, err := c.Read(buf[got:])
		if err != nil {
			t.Fatal(err)
		}
		got += k
	}
	for i, b := range buf {
		if b != byte(i) {
			t.Fatalf("byte %d is %d: the relay reordered the stream", i, b)
		}
	}
	if d := time.Since(start); d > 20*50*time.Millisecond/2 {
		t.Errorf("20 pipelined writes took %s: the delay is serialising them", d)
	}
}

func TestNetBlackholeIsSticky(t *testing.T) {
	addr, _ := echoServer(t)
	n := newFakeNet(t, faultSeed(t, 2))
	c := dialFake(t, n, addr)
	if _, err := roundTrip(c, "before", time.Second); err != nil {
		t.Fatal(err)
	}
	n.Blackhole(true, false) // requests vanish, nothing is closed
	if _, err := roundTrip(c, "during", 200*time.Millisecond); err == nil {
		t.Fatal("a round trip got through the blackhole")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("blackhole: %v, want a timeout (nothing closed)", err)
	}
	n.Heal()
	// The old connection lost bytes: it stays dead in that direction.
	if _, err := roundTrip(c, "after", 200*time.Millisecond); err == nil {
		t.Fatal("a connection that dropped bytes delivered again after Heal")
	}
	c2 := dialFake(t, n, addr)
	if _, err := roundTrip(c2, "new", time.Second); err != nil {
		t.Fatalf("a new connection after Heal: %v", err)
	}
	st := n.stats()
	if st.dropped[dirUp] == 0 || st.dropped[dirDown] != 0 {
		t.Errorf("dropped %v bytes (up, down): want some up, none down", st.dropped)
	}
}

func TestNetPartitionCutHeal(t *testing.T) {
	addr, accepted := echoServer(t)
	n := newFakeNet(t, faultSeed(t, 3))
	c := dialFake(t, n, addr)
	srv := <-accepted
	if _, err := roundTrip(c, "hello", time.Second); err != nil {
		t.Fatal(err)
	}
	n.CutAndPartition()
	// Both ends see the cut at once.
	c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the dialer's end still reads after a cut")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the dialer's end timed out instead of seeing the cut")
	}
	srv.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := srv.Read(make([]byte, 1)); err == nil {
		t.Fatal("the acceptor's end still reads after a cut")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the acceptor's end timed out instead of seeing the cut")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := n.Dial(ctx, addr); !errors.Is(err, errPartitioned) {
		t.Fatalf("dial while partitioned: %v, want %v", err, errPartitioned)
	}
	n.Heal()
	c2 := dialFake(t, n, addr)
	if _, err := roundTrip(c2, "again", time.Second); err != nil {
		t.Fatalf("after Heal: %v", err)
	}
	// A side closing is seen by the other side.
	srv2 := <-accepted
	srv2.Close()
	c2.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatal("the acceptor closed but the dialer still reads")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the acceptor's close did not reach the dialer")
	}
	if st := n.stats(); st.dials != 2 || st.refused != 1 || st.cuts != 1 {
		t.Errorf("stats %+v: want 2 dials, 1 refused, 1 cut", st)
	}
}
