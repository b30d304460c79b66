package repl

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blkrep/blkrep/internal/volume"
	"github.com/blkrep/blkrep/nbd"
)

// Peer is one other replica of the volume.
type Peer struct {
	Node    string
	Address string // host:port it listens on
}

// Config is what a Replica needs from the configuration.
type Config struct {
	Cluster, Volume, Node string
	Protocol              byte // 'A', 'B' or 'C'
	Peers                 []Peer
	Secret                []byte

	PingInterval, PingTimeout, Timeout, ConnectInterval time.Duration
	MaxEpochWrites                                      int
	// ResyncRateMax is bytes/s, 0 for unlimited; ResyncRateMin is the rate
	// kept under application load; ResyncInFlight the target amount of
	// requested, unanswered resync data.
	ResyncRateMax, ResyncRateMin, ResyncInFlight int64
	ResyncChecksums                              string // after-crash, always, never
	AfterSplitBrain                              string
	SplitBrainHandler                            string

	Log *slog.Logger
	// Event is called on state changes (never blocks for long).
	Event func(peer, kind, old, new, msg string)
	// Dial connects to a peer (net.Dialer by default; tests inject a
	// fake network).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Hook, when set, is called at named points of the write, apply and
	// resync paths (see the hook* constants) on the goroutine that passes
	// them; tests crash a node or cut a link there. Nil in production.
	Hook func(point string)
	// Gate, when set, must let a Primary's write through before it is
	// acknowledged (automatic failover: docs/failover.md); nil: no
	// failover, a Primary keeps serving without its peers.
	Gate *FailoverGate
	// OnPeerTerm, when set, is told a peer's failover data term (see
	// Replica.SetTerm) whenever a handshake, or a state update on a
	// connected link, brings one > 0. It is called on a goroutine of its
	// own, never by a session: calls for one peer come in order, and a
	// value superseded before its call is skipped. Automatic failover
	// uses it to learn newer terms (a stale primary demotes).
	OnPeerTerm func(peer string, term uint64)
}

// Named points passed to Config.Hook.
const (
	HookPrimaryShipped    = "primary-shipped"      // write queued to the peers, local write not started
	HookPrimaryLocalDone  = "primary-local-done"   // local write done, peer acks not yet awaited
	HookPrimaryAcked      = "primary-acked"        // the write is about to be acknowledged to the client
	HookSecondaryReceived = "secondary-received"   // a write arrived, not yet applied
	HookSecondaryApplied  = "secondary-applied"    // a write applied, its ack not yet sent
	HookSecondaryBarrier  = "secondary-barrier"    // an epoch flushed, its barrier ack not yet sent
	HookResyncLanded      = "resync-target-landed" // resync data written on the target, bits not yet cleared
	HookResyncCheckpoint  = "resync-checkpointed"  // the target persisted its resync progress
	HookLinkTeardown      = "link-teardown"        // a session died; its unacknowledged writes are not marked yet
)

func (c *Config) hook(point string) {
	if c.Hook != nil {
		c.Hook(point)
	}
}

func (c *Config) defaults() {
	if c.Protocol == 0 {
		c.Protocol = 'C'
	}
	if c.PingInterval == 0 {
		c.PingInterval = 10 * time.Second
	}
	if c.PingTimeout == 0 {
		c.PingTimeout = 500 * time.Millisecond
	}
	if c.Timeout == 0 {
		c.Timeout = 6 * time.Second
	}
	if c.ConnectInterval == 0 {
		c.ConnectInterval = 3 * time.Second
	}
	if c.MaxEpochWrites == 0 {
		c.MaxEpochWrites = 2048
	}
	if c.ResyncInFlight == 0 {
		c.ResyncInFlight = 8 << 20
	}
	if c.ResyncRateMin == 0 {
		c.ResyncRateMin = 4 << 20
	}
	if c.ResyncChecksums == "" {
		c.ResyncChecksums = "after-crash"
	}
	if c.AfterSplitBrain == "" {
		c.AfterSplitBrain = "disconnect"
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Event == nil {
		c.Event = func(peer, kind, old, new, msg string) {}
	}
	if c.Dial == nil {
		c.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	}
}

// Replica is one volume's local replica with its links to the peers. It
// is the volume's nbd.Backend.
type Replica struct {
	cfg   Config
	v     *volume.Volume
	log   *slog.Logger
	links []*link
	cf    *conflicts
	// lastApp is when an application write last went through this
	// replica (unix ns): written by the Primary, or applied from the
	// Primary on a Secondary. A resync yields to it (resync_rate_min).
	lastApp atomic.Int64
	// term is this node's failover data term (SetTerm); 0: failover off
	// or unknown.
	term atomic.Uint64
	// electing: this node's failover runs an election (SetElecting).
	electing atomic.Bool
	// Config.OnPeerTerm calls waiting for delivery (term.go).
	ptMu      sync.Mutex
	ptPending map[string]uint64
	ptRunning bool

	wg sync.WaitGroup // the links' goroutines
	// writing counts the writes in progress: Close waits until the ones
	// it released (failover gate, lost links) have unwound.
	writing atomic.Int64
}

// appIdleAfter: without an application write for this long, the volume
// counts as idle and a resync runs at resync_rate_max. A resync target
// learns of the Primary's writes only as they arrive, so the first
// resyncGrace of a resync counts as busy.
const (
	appIdleAfter = 100 * time.Millisecond
	resyncGrace  = 50 * time.Millisecond
)

// pace waits until a request of n bytes may go, for a resync or verify
// that started at start; next is the pacer's state (the earliest time of
// the next request). The rate is re-read while waiting, so a volume that
// turns idle is not held back by a slow rate chosen while it was busy.
func (r *Replica) pace(next *time.Time, start time.Time, n int64, dead func() bool) {
	for !dead() {
		now := time.Now()
		rate := r.resyncRate(now, start)
		if rate == 0 {
			*next = time.Time{}
			return
		}
		if next.Before(now) {
			*next = now // no credit saved while idle or unlimited
		}
		if !next.After(now) {
			*next = next.Add(time.Duration(float64(n) / float64(rate) * float64(time.Second)))
			return
		}
		time.Sleep(min(next.Sub(now), 10*time.Millisecond))
	}
}

// resyncRate is the rate a resync (or verify) that started at start may
// use now (bytes/s, 0: unlimited): resync_rate_min while the application
// writes, else resync_rate_max.
func (r *Replica) resyncRate(now, start time.Time) int64 {
	rate := r.cfg.ResyncRateMax
	busy := now.Sub(time.Unix(0, r.lastApp.Load())) < appIdleAfter || now.Sub(start) < resyncGrace
	if busy && r.cfg.ResyncRateMin > 0 && (rate == 0 || r.cfg.ResyncRateMin < rate) {
		rate = r.cfg.ResyncRateMin
	}
	return rate
}

// New wraps v, which must have been opened with Options.Replicated (or
// Secondary). Start begins connecting.
func New(cfg Config, v *volume.Volume) (*Replica, error) {
	cfg.defaults()
	r := &Replica{cfg: cfg, v: v, log: cfg.Log, cf: newConflicts()}
	for _, p := range cfg.Peers {
		slot := v.SlotOf(p.Node)
		if slot < 0 {
			return nil, fmt.Errorf("volume %s: peer %q has no bitmap slot", cfg.Volume, p.Node)
		}
		r.links = append(r.links, newLink(r, p, slot))
	}
	return r, nil
}

// Start begins connecting to every peer.
func (r *Replica) Start() {
	for _, l := range r.links {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			l.run()
		}()
	}
}

// Close disconnects every peer, releases writes held by the failover
// gate (they fail) and waits for the links and for those writes to end.
// The volume itself is closed by the caller afterwards.
func (r *Replica) Close() {
	if g := r.cfg.Gate; g != nil {
		g.Close() // writes held for failover fail instead of waiting forever
	}
	for _, l := range r.links {
		l.stop()
	}
	r.wg.Wait()
	for r.writing.Load() > 0 { // released above: they only unwind now
		time.Sleep(time.Millisecond)
	}
}

// Volume returns the local replica.
func (r *Replica) Volume() *volume.Volume { return r.v }

// Accept hands an authenticated-to-be connection for this volume to the
// link of the peer that dialed. The Hello has been read already.
func (r *Replica) accept(c net.Conn, h helloIn) {
	for _, l := range r.links {
		if l.peer.Node == h.hello.From {
			l.offer(c, h)
			return
		}
	}
	refuse(c, fmt.Sprintf("node %q holds no replica of volume %q in %s's configuration", h.hello.From, r.cfg.Volume, r.cfg.Node))
}

var (
	_ nbd.Backend   = (*Replica)(nil)
	_ nbd.FUAWriter = (*Replica)(nil)
	_ nbd.Trimmer   = (*Replica)(nil)
	_ nbd.Zeroer    = (*Replica)(nil)
	_ nbd.Cacher    = (*Replica)(nil)
	_ nbd.Extenter  = (*Replica)(nil)
)

// ErrSecondary refuses I/O on a Secondary.
var ErrSecondary = errors.New("volume is Secondary")

// Admit is asked before an NBD client is served: a Secondary refuses,
// naming the Primary if one is connected.
func (r *Replica) Admit() error {
	if r.v.Primary() {
		return nil
	}
	for _, l := range r.links {
		if p := l.peerPrimary(); p {
			return fmt.Errorf("volume %s is Secondary on %s; the Primary is %s", r.cfg.Volume, r.cfg.Node, l.peer.Node)
		}
	}
	return fmt.Errorf("volume %s is Secondary on %s and no Primary is connected; make one Primary with `blkrep primary %s`", r.cfg.Volume, r.cfg.Node, r.cfg.Volume)
}

// Size is the exported size.
func (r *Replica) Size() int64 { return r.v.Size() }

// ReadAt reads locally (only the Primary serves clients; its data is
// always up to date).
func (r *Replica) ReadAt(p []byte, off int64) (int, error) {
	if !r.v.Primary() {
		return 0, ErrSecondary
	}
	return r.v.ReadAt(p, off)
}

// WriteAt replicates a write.
func (r *Replica) WriteAt(p []byte, off int64) (int, error) {
	return r.write(kindWrite, p, off, int64(len(p)), false)
}

// WriteAtFUA replicates a write that is durable on return (on the peer
// too under protocol C).
func (r *Replica) WriteAtFUA(p []byte, off int64) (int, error) {
	return r.write(kindWrite, p, off, int64(len(p)), true)
}

// Trim replicates a discard.
func (r *Replica) Trim(off, n int64) error {
	_, err := r.write(kindTrim, nil, off, n, false)
	return err
}

// WriteZeroes replicates zeroing.
func (r *Replica) WriteZeroes(off, n int64, noHole, fast bool) error {
	if fast {
		return fmt.Errorf("%w: fast zeroing", volume.ErrUnsupported)
	}
	_, err := r.write(kindZeroes, nil, off, n, false)
	return err
}

// Cache prefetches.
func (r *Replica) Cache(off, n int64) error { return r.v.Cache(off, n) }

// Extents reports allocation.
func (r *Replica) Extents(off, n int64, fn func(off, length int64, flags uint32) bool) error {
	return r.v.Extents(off, n, fn)
}

// Flush makes every completed write durable locally and, under protocol
// C, on every connected peer; under A and B it closes the epoch. With a
// failover gate it is acknowledged only once every peer that may lack a
// write it covers is outdated or resynced.
func (r *Replica) Flush() error { return r.flush(true) }

// flush is Flush; gated false skips the failover gate, for a flush whose
// success is acknowledged to nobody (the one before a demotion).
func (r *Replica) flush(gated bool) error {
	if !r.v.Primary() {
		return ErrSecondary
	}
	waits := make([]func() bool, len(r.links))
	for i, l := range r.links {
		waits[i] = l.flush()
	}
	err := r.v.Flush()
	var missed []missedPeer
	for i, w := range waits {
		if w != nil && !w() {
			// A lost link marked its unacknowledged writes; the flush still
			// succeeds locally (with a gate: once the peer is outdated or
			// resynced).
			missed = append(missed, r.links[i].lostMissed())
		}
	}
	if g := r.cfg.Gate; g != nil && err == nil && gated {
		err = g.admit(missed)
	}
	return err
}

type dataKind uint8

const (
	kindWrite dataKind = iota
	kindTrim
	kindZeroes
)

// write is the replicated write path: the activity log (Chunks), the
// conflict set, queue to the peers, the local write, then the wait the
// protocol asks for. Peers that did not get it are marked, and the
// generation rotated, before the write is acknowledged.
func (r *Replica) write(kind dataKind, p []byte, off, n int64, fua bool) (int, error) {
	if !r.v.Primary() {
		return 0, ErrSecondary
	}
	r.writing.Add(1)
	defer r.writing.Add(-1)
	r.lastApp.Store(time.Now().UnixNano())
	done := 0
	err := r.v.Chunks(off, n, func(o, m int64) error {
		var data []byte
		if kind == kindWrite {
			data = p[o-off : o-off+m]
		}
		s := r.cf.lock(o, m)
		reqs := make([]*req, len(r.links))
		var rotErr error        // a peer missed the write and the new generation could not be recorded
		var missed []missedPeer // peers that do not have the write
		for i, l := range r.links {
			rq, miss, err := l.ship(kind, data, o, m, fua) // missed: ship marked it and rotated
			reqs[i], rotErr = rq, cmp.Or(rotErr, err)
			if miss != nil {
				missed = append(missed, *miss)
			}
		}
		r.cfg.hook(HookPrimaryShipped)
		err := r.local(kind, data, o, m, fua)
		r.cf.unlock(s)
		r.cfg.hook(HookPrimaryLocalDone)
		var lost []int // slots whose link died before acknowledging the write
		for i, l := range r.links {
			if reqs[i] != nil && !reqs[i].wait() {
				lost = append(lost, l.slot)
				missed = append(missed, reqs[i].missed)
			}
		}
		if len(lost) > 0 {
			// The teardown marked the write and rotated; this only
			// reports a rotation it could not record.
			rotErr = cmp.Or(rotErr, r.v.EnsureRotated(lost))
		}
		err = cmp.Or(err, rotErr)
		if g := r.cfg.Gate; g != nil && err == nil {
			// Refused, the write is still on this disk and on each peer
			// that acknowledged it, and each peer that missed it is marked:
			// nothing for the volume to mark.
			err = volume.Settled(g.admit(missed))
		}
		if err == nil {
			r.cfg.hook(HookPrimaryAcked)
			done += int(m)
		}
		return err
	})
	return done, err
}

func (r *Replica) local(kind dataKind, data []byte, off, n int64, fua bool) error {
	d := r.v.Data()
	var err error
	switch kind {
	case kindWrite:
		if fua {
			_, err = d.WriteAtFUA(data, off)
		} else {
			_, err = d.WriteAt(data, off)
		}
	case kindTrim:
		err = trim(d, off, n)
	case kindZeroes:
		err = zeroes(d, off, n)
	}
	return err
}

// trim discards a range on disks that can. Both replicas trim the same
// ranges; a disk that cannot keeps the old data (allowed by TRIM).
func trim(d volume.Disk, off, n int64) error {
	if t, ok := d.(nbd.Trimmer); ok {
		return t.Trim(off, n)
	}
	return nil
}

// zeroes writes zeroes over a range, with the disk's own WRITE_ZEROES if
// it has one.
func zeroes(d volume.Disk, off, n int64) error {
	if z, ok := d.(nbd.Zeroer); ok {
		return z.WriteZeroes(off, n, false, false)
	}
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := d.WriteAt(buf[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}
