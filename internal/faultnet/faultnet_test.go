package faultnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// newNet is a network whose connections are cut when the test ends.
func newNet(t *testing.T, seed uint64) *Net {
	n := New(seed, t.Logf)
	t.Cleanup(n.Close)
	return n
}

func TestSetDelayBound(t *testing.T) {
	if err := newNet(t, 4).SetDelay(MaxLatency, 0, time.Millisecond); err == nil {
		t.Fatal("a latency beyond MaxLatency was accepted")
	}
}

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

func dialFake(t *testing.T, n *Net, addr string) net.Conn {
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
	n := newNet(t, 1)
	if err := n.SetDelay(20*time.Millisecond, 30*time.Millisecond, 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
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
	n := newNet(t, 2)
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
	// The old connection lost bytes: it stays dead in that Direction.
	if _, err := roundTrip(c, "after", 200*time.Millisecond); err == nil {
		t.Fatal("a connection that dropped bytes delivered again after Heal")
	}
	c2 := dialFake(t, n, addr)
	if _, err := roundTrip(c2, "new", time.Second); err != nil {
		t.Fatalf("a new connection after Heal: %v", err)
	}
	st := n.Stats()
	if st.Dropped[Up] == 0 || st.Dropped[Down] != 0 {
		t.Errorf("dropped %v bytes (up, down): want some up, none down", st.Dropped)
	}
}

func TestNetPartitionCutHeal(t *testing.T) {
	addr, accepted := echoServer(t)
	n := newNet(t, 3)
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
	if _, err := n.Dial(ctx, addr); !errors.Is(err, ErrPartitioned) {
		t.Fatalf("dial while partitioned: %v, want %v", err, ErrPartitioned)
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
	if st := n.Stats(); st.Dials != 2 || st.Refused != 1 || st.Cuts != 1 {
		t.Errorf("stats %+v: want 2 dials, 1 refused, 1 cut", st)
	}
}
