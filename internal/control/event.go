package control

import (
	"sync"
	"time"
)

// Event is one line of GET /v1/events: something changed on a volume or a
// peer connection. Fields are only ever added (like Status).
type Event struct {
	// Seq numbers the events a daemon publishes, from 1; a reader that
	// sees a gap missed events (it read too slowly). It restarts with the
	// daemon.
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Volume  string    `json:"volume,omitempty"`
	Peer    string    `json:"peer,omitempty"`
	Kind    string    `json:"kind"` // e.g. role, connection, replication, disk, split-brain, resync-done, verify-done, handshake, error, failover
	Old     string    `json:"old,omitempty"`
	New     string    `json:"new,omitempty"`
	Message string    `json:"message,omitempty"`
}

// Event kinds (docs/control-api.md says what Old, New and Message hold for
// each). Frozen; kinds may be added, so readers must ignore unknown ones.
const (
	EventRole        = "role"        // the volume's role: Old -> New (Primary, Secondary)
	EventConnection  = "connection"  // a peer connection: StandAlone, Connecting, Connected, Disconnecting
	EventReplication = "replication" // a peer's replication state: Off, Established, SyncSource...
	EventDisk        = "disk"        // the local disk state (Peer empty) or the peer's (Peer set)
	EventSplitBrain  = "split-brain" // the handshake found split brain; Message says how to resolve it
	EventResyncDone  = "resync-done" // a resync ended; Message has the bytes and time
	EventVerifyDone  = "verify-done" // an online verify ended; Message has the mismatches
	EventHandshake   = "handshake"   // a connection's handshake decided: New is the action, Message the rule
	EventError       = "error"       // something failed; Message says what
	// EventFailover: a volume's automatic failover state changed (term,
	// primary, write gate, quorum, outdated peers, the decision's
	// explanation); Message says what changed, for the operator.
	EventFailover = "failover"
	// EventFailoverHandler: a failover handler runs; New names it
	// (after-promote, before-demote, quorum-lost, fence-peer), Message is
	// the command.
	EventFailoverHandler = "failover-handler"
)

// Bus fans events out to subscribers without ever blocking the publisher:
// a subscriber whose channel is full misses the event (and sees a gap in
// Seq). The daemon publishes to one Bus and hands its Subscribe to the
// control server (as part of its Handler). Safe for concurrent use.
type Bus struct {
	buffer int
	now    func() time.Time

	mu     sync.Mutex
	seq    uint64
	subs   map[chan Event]struct{}
	closed bool
}

// NewBus returns a bus whose subscribers each get a channel of buffer
// events (at least 1).
func NewBus(buffer int) *Bus {
	return &Bus{buffer: max(buffer, 1), now: time.Now, subs: make(map[chan Event]struct{})}
}

// Publish sends e to every subscriber that has room, numbering it (Seq)
// and stamping it (Time) unless the caller set them. It never blocks.
// After Close it does nothing.
func (b *Bus) Publish(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.seq++
	if e.Seq == 0 {
		e.Seq = b.seq
	}
	if e.Time.IsZero() {
		e.Time = b.now()
	}
	for ch := range b.subs {
		select {
		case ch <- e:
		default: // full: this subscriber misses e
		}
	}
}

// Subscribe returns a channel of the events published from now on and a
// func that ends the subscription and closes the channel (idempotent).
// After Close the channel is closed at once.
func (b *Bus) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event, b.buffer)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(ch)
		return ch, func() {}
	}
	b.subs[ch] = struct{}{}
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, ok := b.subs[ch]; ok {
			delete(b.subs, ch)
			close(ch)
		}
	}
}

// Close ends every subscription (their channels are closed) and makes
// later Publish calls no-ops.
func (b *Bus) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	for ch := range b.subs {
		close(ch)
		delete(b.subs, ch)
	}
}

// subscribers counts the live subscriptions (for tests).
func (b *Bus) subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}
