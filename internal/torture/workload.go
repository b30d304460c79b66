package torture

import (
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/blkrep/blkrep/internal/repl"
	"github.com/blkrep/blkrep/internal/torture/check"
)

// blockSize is the workload's unit: every write is one to maxBlocks
// blocks, each of whose sectors is stamped (check.Fill).
const (
	blockSize = 4096
	maxBlocks = 3
	// opTimeout: a write or flush not answered by then is left in flight
	// (its answer is still recorded if it comes) and the writer moves on.
	opTimeout = 1500 * time.Millisecond
)

var errGaveUp = errors.New("torture: no answer in time; left in flight")

// writer is the client workload: it writes through whichever node is
// primary and accepts writes, in batches of concurrent writes to
// disjoint blocks, each batch followed by a FLUSH, and records every
// request and answer in the history. Any error, timeout or change of
// node starts a new tenure (check.History).
type writer struct {
	c      *Cluster
	h      *check.History
	rng    *rand.Rand
	blocks int64

	mu   sync.Mutex
	busy map[int64]bool // blocks with a write left in flight

	tenure int
	key    string // the tenure's node.serving

	wg   sync.WaitGroup // the writer loop and the writes left in flight
	quit chan struct{}
}

func startWriter(c *Cluster, h *check.History, seed uint64, blocks int64) *writer {
	w := &writer{c: c, h: h, rng: rand.New(rand.NewPCG(seed, 0x3717e)), blocks: blocks, busy: map[int64]bool{}, quit: make(chan struct{})}
	w.wg.Add(1)
	go w.loop()
	return w
}

// stop ends the loop and waits up to d for the requests left in flight.
// It reports whether they all ended.
func (w *writer) stop(d time.Duration) bool {
	close(w.quit)
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func (w *writer) stopped() bool {
	select {
	case <-w.quit:
		return true
	default:
		return false
	}
}

// primary returns the node accepting writes (nil: none now) and its
// tenure (node.serving).
func (w *writer) primary() (*node, *repl.Replica, string) {
	for _, n := range w.c.dataNodes() {
		if key, ok := n.serving(); ok {
			if r := n.replica(); r != nil {
				return n, r, key
			}
		}
	}
	return nil, nil, ""
}

// newTenure starts a tenure: key is node.serving's ("" after an error).
// The key, not the node alone: an idle writer once kept alpha's tenure
// across alpha's crash, an election beta won without serving, and alpha's
// return for a newer term with beta's data (seed 35, protocol A), and the
// checker then required alpha's earlier writes as if alpha had served
// throughout.
func (w *writer) newTenure(key string) {
	w.tenure++
	w.key = key
}

func (w *writer) loop() {
	defer w.wg.Done()
	for !w.stopped() {
		n, r, key := w.primary()
		if n == nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if key != w.key {
			w.newTenure(key)
		}
		if !w.batch(n, r) {
			w.newTenure("")
			time.Sleep(2 * time.Millisecond) // a node refusing every write is not a loop to spin in
			continue
		}
		f := w.h.BeginFlush(w.tenure, n.name)
		if err := w.call(n, func() error { return r.Flush() }, func(err error) { w.h.EndFlush(f, err) }, nil); err != nil {
			w.newTenure("")
		} else if w.c.opts.Protocol != 'C' && w.rng.IntN(3) == 0 && peersAcked(r) {
			// Under A and B a flush does not wait for the peers: ask
			// whether they acknowledged everything so far (check.Flush).
			w.h.PeerAcked(f)
		}
		time.Sleep(time.Duration(w.rng.IntN(3)) * time.Millisecond)
	}
}

// peersAcked reports whether every peer of r was connected before and
// after a Drain that succeeded: Drain alone also succeeds when no peer is
// connected (nothing to wait for), which proves nothing about them.
func peersAcked(r *repl.Replica) bool {
	connected := func() bool {
		for _, p := range r.Peers() {
			if p.Connection != repl.ConnConnected || p.Replication != repl.ReplEstablished {
				return false
			}
		}
		return true
	}
	return connected() && r.Drain(opTimeout) && connected()
}

// batch issues 1 to 6 concurrent writes to disjoint free blocks and
// waits for their answers; it reports whether all were acknowledged.
func (w *writer) batch(n *node, r *repl.Replica) bool {
	k := 1 + w.rng.IntN(6)
	type op struct {
		off, n int64
		fua    bool
	}
	var ops []op
	w.mu.Lock()
	for range k {
		b := w.rng.Int64N(w.blocks)
		n := 1 + w.rng.Int64N(maxBlocks)
		if b+n > w.blocks {
			n = w.blocks - b
		}
		free := true
		for i := b; i < b+n; i++ {
			free = free && !w.busy[i]
		}
		if !free {
			continue
		}
		for i := b; i < b+n; i++ {
			w.busy[i] = true // until its answer, even one that comes late
		}
		ops = append(ops, op{b * blockSize, n * blockSize, w.rng.IntN(8) == 0})
	}
	w.mu.Unlock()
	errs := make(chan error, len(ops))
	for _, o := range ops {
		wr := w.h.BeginWrite(o.off, o.n, w.tenure, n.name, o.fua)
		buf := make([]byte, o.n)
		check.Fill(buf, wr.ID, o.off)
		release := func() {
			w.mu.Lock()
			for i := o.off / blockSize; i < (o.off+o.n)/blockSize; i++ {
				delete(w.busy, i)
			}
			w.mu.Unlock()
		}
		go func() {
			errs <- w.call(n, func() error {
				var err error
				if o.fua {
					_, err = r.WriteAtFUA(buf, o.off)
				} else {
					_, err = r.WriteAt(buf, o.off)
				}
				return err
			}, func(err error) {
				w.h.EndWrite(wr, err)
				release()
			}, release)
		}()
	}
	ok := true
	for range ops {
		if err := <-errs; err != nil {
			ok = false
		}
	}
	return ok
}

// call runs op on node n, records its answer with end whenever it
// comes, and returns it, or errGaveUp after opTimeout (the blocks of a
// write stay busy until its answer: writes to one block never overlap).
// An answer from a node that crashed after the request was sent never
// reaches the client: the request stays in flight for ever (lost runs
// instead of end, when not nil).
func (w *writer) call(n *node, op func() error, end func(error), lost func()) error {
	res := make(chan error, 1)
	crashes := n.crashes.Load()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		err := op()
		if n.crashes.Load() != crashes {
			if lost != nil {
				lost()
			}
			res <- errGaveUp
			return
		}
		end(err)
		res <- err
	}()
	select {
	case err := <-res:
		return err
	case <-time.After(opTimeout):
		return errGaveUp
	case <-w.quit:
		return errGaveUp
	}
}
