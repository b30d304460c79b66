package repl

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/crashdisk"
	"github.com/blkrep/blkrep/internal/testnet"
	"github.com/blkrep/blkrep/internal/volume"
	"github.com/blkrep/blkrep/meta"
)

const testSize = 32 << 20

var testSecret = []byte("0123456789abcdef-test-secret")

// tnode is one node of an in-process cluster: a crashable disk, its
// volume, its replica and its replication listener.
type tnode struct {
	t       testing.TB
	name    string
	spec    volume.Spec
	disk    *crashdisk.Disk
	addr    string
	peers   []Peer
	proto   byte
	secret  []byte
	mu      sync.Mutex
	events  []string
	vol     *volume.Volume
	rep     *Replica
	ln      *Listener
	lnDone  chan struct{}
	tweak   func(*Config)
	primary bool
	term    uint64 // the failover data term set before the replica starts
	// electing: SetElecting(true) before the replica starts.
	electing bool
}

func testLog(t testing.TB) *slog.Logger {
	if testing.Verbose() || os.Getenv("REPL_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newPair makes alpha and beta with fresh metadata, not started.
func newPair(t testing.TB, proto byte) (*tnode, *tnode) {
	t.Helper()
	a, b := newNode(t, "alpha", "beta", proto), newNode(t, "beta", "alpha", proto)
	a.peers = []Peer{{Node: "beta", Address: b.addr}}
	b.peers = []Peer{{Node: "alpha", Address: a.addr}}
	t.Cleanup(func() { a.stop(); b.stop() })
	return a, b
}

func newNode(t testing.TB, name, peer string, proto byte) *tnode {
	t.Helper()
	s := volume.Spec{Cluster: "c", Volume: "r0", Node: name, SizeBytes: testSize, Peers: []string{peer},
		PeerSlots: 3, BytesPerBit: 4096, ALExtents: 8, MetaPath: name + "-disk"}
	dev, err := meta.DeviceBytesFor(testSize, s.Geometry())
	if err != nil {
		t.Fatal(err)
	}
	d := crashdisk.New(int(dev))
	s.Data, s.DataBytes = d, dev
	if _, err := volume.Create(&s, false); err != nil {
		t.Fatal(err)
	}
	addr := testnet.MustAddr(t)
	return &tnode{t: t, name: name, spec: s, disk: d, addr: addr, proto: proto, secret: testSecret}
}

func (n *tnode) start() {
	t := n.t
	t.Helper()
	n.disk.Restart()
	v, err := volume.Open(n.spec, volume.Options{Secondary: !n.primary, Replicated: true, Log: testLog(t).With("node", n.name)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Cluster: "c", Volume: "r0", Node: n.name, Protocol: n.proto, Peers: n.peers, Secret: n.secret,
		PingInterval: time.Second, PingTimeout: 500 * time.Millisecond, Timeout: 3 * time.Second,
		ConnectInterval: 100 * time.Millisecond, MaxEpochWrites: 64,
		Log: testLog(t).With("node", n.name),
		Event: func(peer, kind, old, new, msg string) {
			n.mu.Lock()
			n.events = append(n.events, fmt.Sprintf("%s %s %s->%s %s", peer, kind, old, new, msg))
			n.mu.Unlock()
		}}
	if n.tweak != nil {
		n.tweak(&cfg)
	}
	r, err := New(cfg, v)
	if err != nil {
		t.Fatal(err)
	}
	r.SetTerm(n.term)
	r.SetElecting(n.electing)
	var l net.Listener
	for i := 0; ; i++ {
		l, err = net.Listen("tcp", n.addr)
		if err == nil {
			break
		}
		if i == 50 {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.ln = NewListener(l, "c", n.name, cfg.Log)
	n.ln.Add(r)
	n.lnDone = make(chan struct{})
	go func() { n.ln.Serve(); close(n.lnDone) }()
	n.vol, n.rep = v, r
	r.Start()
}

// stop shuts down cleanly.
func (n *tnode) stop() {
	if n.rep == nil {
		return
	}
	n.ln.Close()
	<-n.lnDone
	n.rep.Close()
	if err := n.vol.Close(); err != nil {
		n.t.Errorf("%s: close: %v", n.name, err)
	}
	n.rep, n.vol = nil, nil
}

// crash stops the node as a power cut would: unsynced writes are lost,
// and nothing the process does afterwards reaches its disk.
func (n *tnode) crash(seed uint64) {
	n.disk.PowerCut(seed)
	n.ln.Close()
	<-n.lnDone
	n.rep.Close()
	n.vol.Abandon()
	n.rep, n.vol = nil, nil
	// The disk powers on again at the next start.
}

func (n *tnode) peerStatus() string {
	p := n.rep.Peers()[0]
	return p.Connection + "/" + p.Replication
}

func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitEstablished(t testing.TB, nodes ...*tnode) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, n.name+" Connected/Established", 20*time.Second, func() bool {
			return n.peerStatus() == ConnConnected+"/"+ReplEstablished
		})
	}
}

// image returns the exported part of a node's disk.
func (n *tnode) image() []byte {
	buf := make([]byte, testSize)
	if _, err := n.disk.ReadAt(buf, 0); err != nil {
		n.t.Fatal(err)
	}
	return buf
}

func sameImages(t testing.TB, a, b *tnode) {
	t.Helper()
	x, y := a.image(), b.image()
	if !bytes.Equal(x, y) {
		for i := range x {
			if x[i] != y[i] {
				t.Fatalf("%s and %s differ first at byte %d (block %d)", a.name, b.name, i, i/4096)
			}
		}
	}
}

func randWrites(t testing.TB, r *Replica, rng *rand.Rand, n int, maxBlocks int) int64 {
	t.Helper()
	var total int64
	for range n {
		blocks := 1 + rng.IntN(maxBlocks)
		off := int64(rng.IntN(testSize/4096-blocks)) * 4096
		buf := make([]byte, blocks*4096)
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		if _, err := r.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
		total += int64(len(buf))
	}
	return total
}

func TestReplicateProtocols(t *testing.T) {
	for _, proto := range []byte{'A', 'B', 'C'} {
		t.Run(string(proto), func(t *testing.T) {
			a, b := newPair(t, proto)
			a.primary = true
			a.start()
			b.start()
			waitEstablished(t, a, b)
			rng := rand.New(rand.NewPCG(1, uint64(proto)))
			randWrites(t, a.rep, rng, 300, 16)
			if err := a.rep.Flush(); err != nil {
				t.Fatal(err)
			}
			if proto == 'C' {
				// Acknowledged under C means applied on beta: no wait.
				sameImages(t, a, b)
			}
			waitFor(t, "nothing unacknowledged", 10*time.Second, func() bool {
				p := a.rep.Peers()[0]
				return p.UnackedBytes == 0 && p.InFlightWrites == 0
			})
			a.stop()
			b.stop()
			sameImages(t, a, b)
		})
	}
}

// resyncBytes is the last resync's size as the target saw it.
func resyncBytes(t testing.TB, n *tnode) int64 {
	t.Helper()
	p := n.rep.Peers()[0]
	if p.Resync == nil {
		t.Fatalf("%s: no resync recorded", n.name)
	}
	return p.Resync.DoneBytes
}

func waitResyncDone(t testing.TB, n *tnode) {
	t.Helper()
	waitFor(t, n.name+" resync done", 30*time.Second, func() bool {
		p := n.rep.Peers()[0]
		return p.Resync != nil && !p.Resync.Running && p.Replication == ReplEstablished
	})
}

// TestResyncAfterSecondaryOutage: beta is stopped, alpha writes without
// it (rotating its generation), beta comes back and receives only what
// changed.
func TestResyncAfterSecondaryOutage(t *testing.T) {
	a, b := newPair(t, 'C')
	a.primary = true
	a.start()
	b.start()
	waitEstablished(t, a, b)
	rng := rand.New(rand.NewPCG(2, 2))
	randWrites(t, a.rep, rng, 50, 8)
	if err := a.rep.Flush(); err != nil { // every epoch acknowledged: nothing ambiguous
		t.Fatal(err)
	}
	gen := a.vol.Current()
	b.stop()
	waitFor(t, "alpha sees beta gone", 10*time.Second, func() bool { return a.rep.Peers()[0].Connection != ConnConnected })
	// 40 writes of one block each, at distinct 4 KiB blocks.
	for i := range 40 {
		buf := bytes.Repeat([]byte{byte(i + 1)}, 4096)
		if _, err := a.rep.WriteAt(buf, int64(i)*64*4096); err != nil {
			t.Fatal(err)
		}
	}
	if a.vol.Current() == gen {
		t.Fatal("no new generation after writing without the peer")
	}
	if got := a.rep.Peers()[0].OutOfSyncBytes; got != 40*4096 {
		t.Fatalf("alpha: %d bytes out of sync, want %d", got, 40*4096)
	}
	b.start()
	waitResyncDone(t, b)
	waitEstablished(t, a, b)
	if got := resyncBytes(t, b); got != 40*4096 {
		t.Errorf("resynced %d bytes, want %d", got, 40*4096)
	}
	if h := b.rep.Peers()[0].Handshake; h == nil || h.Rule != "peer-bitmap-is-local-current" {
		t.Errorf("handshake: %+v", h)
	}
	if a.vol.Current() != b.vol.Current() {
		t.Errorf("generations differ after resync: %016X %016X", a.vol.Current(), b.vol.Current())
	}
	randWrites(t, a.rep, rng, 20, 8)
	sameImages(t, a, b)
	if p := a.rep.Peers()[0]; p.OutOfSyncBytes != 0 {
		t.Errorf("alpha still has %d bytes out of sync", p.OutOfSyncBytes)
	}
}

// TestFullSyncToNewPeer: alpha wrote before beta ever connected; beta's
// just-created metadata makes it the target of a full sync, with holes
// for the blocks alpha never wrote.
func TestFullSyncToNewPeer(t *testing.T) {
	a, b := newPair(t, 'C')
	a.primary = true
	a.start()
	rng := rand.New(rand.NewPCG(3, 3))
	randWrites(t, a.rep, rng, 30, 8)
	b.start()
	waitResyncDone(t, b)
	waitEstablished(t, a, b)
	if h := b.rep.Peers()[0].Handshake; h == nil || h.Rule != "local-just-created" {
		t.Errorf("handshake: %+v", h)
	}
	if got := resyncBytes(t, b); got != testSize {
		t.Errorf("full sync moved %d bytes, want %d", got, testSize)
	}
	sameImages(t, a, b)
}

// TestSecondaryPowerCut: beta loses power under write load; the writes
// of unacknowledged epochs are marked on alpha and resynced.
func TestSecondaryPowerCut(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			a, b := newPair(t, 'C')
			a.primary = true
			a.start()
			b.start()
			waitEstablished(t, a, b)
			rng := rand.New(rand.NewPCG(seed, 4))
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := 0; i < 400; i++ {
					blocks := 1 + rng.IntN(8)
					off := int64(rng.IntN(testSize/4096-blocks)) * 4096
					buf := bytes.Repeat([]byte{byte(i)}, blocks*4096)
					if _, err := a.rep.WriteAt(buf, off); err != nil {
						t.Error(err)
						return
					}
					if i%50 == 0 {
						a.rep.Flush()
					}
				}
			}()
			time.Sleep(time.Duration(seed) * 5 * time.Millisecond)
			b.crash(seed)
			<-done
			b.start()
			waitResyncDone(t, b)
			waitEstablished(t, a, b)
			sameImages(t, a, b)
		})
	}
}

// TestPrimaryPowerCutNoAckedWriteLost: under protocol C alpha loses power
// mid-load. Every write alpha acknowledged is on beta; beta is promoted
// and writes; alpha comes back as Secondary, becomes sync target (its
// unacknowledged tail is discarded) and both end byte-identical.
func TestPrimaryPowerCutNoAckedWriteLost(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			a, b := newPair(t, 'C')
			a.primary = true
			a.start()
			b.start()
			waitEstablished(t, a, b)
			const blocks = testSize / 4096
			var mu sync.Mutex
			acked := map[int64]byte{}
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						blk := int64((w*7919 + i*4) % blocks)
						val := byte(1 + (w*31+i)%250)
						if _, err := a.rep.WriteAt(bytes.Repeat([]byte{val}, 4096), blk*4096); err != nil {
							return // the volume is going away
						}
						mu.Lock()
						acked[blk] = val
						mu.Unlock()
					}
				}()
			}
			time.Sleep(time.Duration(20+10*seed) * time.Millisecond)
			// Power cut: freeze acknowledgements first (nothing acked
			// after this instant is counted), then cut.
			mu.Lock()
			snapshot := make(map[int64]byte, len(acked))
			for k, v := range acked {
				snapshot[k] = v
			}
			a.disk.PowerCut(seed)
			mu.Unlock()
			close(stop)
			wg.Wait() // writers fail on the dead disk, or finish unacknowledged
			a.crash(seed)
			// Each block holds its acknowledged value or a later one (a
			// write alpha never acknowledged may still have reached beta):
			// never zero, which it was before any write.
			img := b.image()
			missing := 0
			for blk := range snapshot {
				if img[blk*4096] == 0 {
					missing++
				}
			}
			if missing > 0 {
				t.Fatalf("%d acknowledged blocks are not on beta", missing)
			}
			waitFor(t, "beta sees alpha gone", 10*time.Second, func() bool { return b.rep.Peers()[0].Connection != ConnConnected })
			if err := b.rep.Promote(false); err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(seed, 9))
			randWrites(t, b.rep, rng, 20, 4)
			a.primary = false
			a.start()
			waitResyncDone(t, a)
			waitEstablished(t, a, b)
			if h := a.rep.Peers()[0].Handshake; h == nil || !a.rep.Peers()[0].Handshake.At.After(time.Time{}) {
				t.Fatalf("no handshake on alpha: %+v", h)
			}
			t.Logf("alpha rejoined: rule %s, resynced %d bytes", a.rep.Peers()[0].Handshake.Rule, resyncBytes(t, a))
			sameImages(t, a, b)
		})
	}
}

// A session installed just after link.stop looked for one (the handshake
// ended meanwhile) still ends: stop must not wait for it for ever.
func TestStopEndsASessionInstalledMeanwhile(t *testing.T) {
	a, b := newPair(t, 'C')
	a.primary = true
	a.start()
	b.start()
	waitEstablished(t, a, b)
	l := a.rep.links[0]
	l.mu.Lock()
	s := l.sess
	l.sess = nil // as if it were not installed yet when stop looks
	l.mu.Unlock()
	l.stop()
	l.mu.Lock()
	l.sess = s
	l.mu.Unlock()
	waitFor(t, "the session ends", 5*time.Second, func() bool { return s.dead.Load() })
}
