package interop

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"syscall"
	"testing"
	"time"
)

// TestShutdownDrainsInFlight: SIGTERM while a client has many FUA writes
// in flight (each one syncs, so most are still running when the signal
// lands). Every write the daemon acknowledged must be on disk after a
// restart, every write it applied must have been acknowledged (an in-flight
// request finishes, reply included), every reply is a success, and it exits
// 0 with its sockets removed.
func TestShutdownDrainsInFlight(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	s := d.connect(t, sessionOpts{structured: true})
	const n, bs = 128, 64 << 10
	data := randBytes(t, n*bs)
	var b []byte
	cookies := make(map[uint64]int, n)
	for i := 0; i < n; i++ {
		b = s.encode(b, cmdWrite, cmdFlagFUA, uint64(i*bs), bs, data[i*bs:(i+1)*bs])
		cookies[s.cookie<<8|0x5a] = i
	}
	// Send the first batch and wait for one reply so requests are
	// certainly in flight, then SIGTERM while the rest is on the wire.
	sendErr := make(chan error, 1)
	go func() { sendErr <- s.send(b) }()
	first := s.next()
	if first.errno != 0 {
		t.Fatalf("first write: errno %d", first.errno)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	acked := []int{cookies[first.cookie]}
	for {
		r, err := s.tryNext()
		if err != nil {
			break // the daemon closed the connection
		}
		if r.errno != 0 {
			t.Errorf("write %d answered errno %d during shutdown", cookies[r.cookie], r.errno)
			continue
		}
		acked = append(acked, cookies[r.cookie])
	}
	<-sendErr // may fail: the daemon stops reading
	d.waitExit(t, stopTimeout)
	d.assertCleanExit(t)
	t.Logf("%d of %d writes acknowledged before the daemon closed the connection", len(acked), n)

	d.start(t)
	s = d.connect(t, sessionOpts{structured: true})
	isAcked := make(map[int]bool, len(acked))
	for _, i := range acked {
		isAcked[i] = true
	}
	applied := 0
	for i := 0; i < n; i++ {
		got := s.mustRead(uint64(i*bs), bs)
		switch {
		case bytes.Equal(got, data[i*bs:(i+1)*bs]):
			applied++
			if !isAcked[i] {
				t.Errorf("write %d was applied but its reply never reached the client before the daemon closed the connection", i)
			}
		case isAcked[i]:
			t.Errorf("write %d was acknowledged before shutdown but is not on disk after restart", i)
		case !isZero(got):
			t.Errorf("write %d is partly applied after shutdown", i)
		}
	}
	t.Logf("%d writes applied", applied)
	s.disconnect()
}

// tryNext reads one reply, returning an error instead of failing when the
// connection ends.
func (s *session) tryNext() (r reply, err error) {
	s.nc.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := s.br.Peek(1); err != nil {
		return reply{}, err
	}
	return s.next(), nil
}

// TestShutdownWithIdleClients: SIGTERM while one client sits idle in the
// transmission phase and another has connected but not finished (or even
// started) its handshake. Neither has anything in flight, so the daemon must
// exit promptly (well before its 30s shutdown timeout), with status 0.
func TestShutdownWithIdleClients(t *testing.T) {
	for _, phase := range []string{"transmission", "handshake-after-greeting", "handshake-mid-option"} {
		t.Run(phase, func(t *testing.T) {
			d := startDaemon(t, daemonOpts{})
			var w *wire
			switch phase {
			case "transmission":
				w = d.connect(t, sessionOpts{structured: true}).wire
			case "handshake-after-greeting":
				w = d.dial(t)
				w.greeting()
			case "handshake-mid-option":
				w = d.dial(t)
				w.hello(clientFixedNewstyle | clientNoZeroes)
				b := binary.BigEndian.AppendUint64(nil, ihaveOpt)
				b = binary.BigEndian.AppendUint32(b, optGo)
				b = binary.BigEndian.AppendUint32(b, 1000)
				w.mustSend(b)
			}
			d.checkServing(t)
			if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			took := d.waitExit(t, stopTimeout)
			t.Logf("exited %v after SIGTERM", took.Round(time.Millisecond))
			d.assertCleanExit(t)
			// The idle client sees the connection closed.
			w.nc.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := io.Copy(io.Discard, w.br); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("idle client's connection after shutdown: %v", err)
			}
		})
	}
}
