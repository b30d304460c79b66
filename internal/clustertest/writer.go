package clustertest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blkrep/blkrep/internal/nbdclient"
)

// Endpoint is where a node serves the volume over NBD.
type Endpoint struct {
	Node    string
	Network string // "unix" or "tcp"
	Addr    string
}

// WriterOptions tune the load writer.
type WriterOptions struct {
	Endpoints []Endpoint
	// Export is the NBD export name ("" = the socket's default export).
	Export string
	// Blocks is how many BlockSize blocks of the volume are written
	// (from offset 0); required.
	Blocks int64
	// Workers write concurrently, each to its own blocks (block % Workers
	// == worker) over its own connection, one write at a time, so every
	// block's writes are ordered. 0 means 4.
	Workers int
	// Interval is each worker's pause after a write; 0 means 5 ms.
	// Negative: no pause.
	Interval time.Duration
	// WriteTimeout: a write not answered by then is left in flight (its
	// answer is still recorded if it comes) and the worker reconnects,
	// possibly to another node. 0 means 5 s.
	WriteTimeout time.Duration
	// FUA sets NBD_CMD_FLAG_FUA on every write.
	FUA bool
	// Seed of the block choice; 0 picks one from the clock.
	Seed uint64
	// Logf reports connection changes (nil: silent).
	Logf func(format string, args ...any)
}

// Write is one write of the load writer.
type Write struct {
	Tag
	// Acked is when the acknowledgement arrived (zero: never acknowledged).
	Acked time.Time
	// Err is why it was not acknowledged: the server's errno, the
	// connection ending, or still in flight when the writer stopped. Such
	// a write is in doubt: it may or may not be on the disks.
	Err string
	// Late: acknowledged after the worker had given up waiting.
	Late bool
}

// ConnEvent is a worker's connection change, for diagnosis.
type ConnEvent struct {
	Time   time.Time
	Worker int
	Node   string // the node connected to, or refused/failed
	Err    string // "" when connected
}

// History is what the writer did.
type History struct {
	Writes []Write // by sequence number
	Conns  []ConnEvent
	Blocks int64
}

// Writer writes tagged blocks to the volume through whichever node
// admits NBD clients (the primary), and records every write.
type Writer struct {
	o    WriterOptions
	seq  atomic.Uint64
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	writes  []*Write
	conns   []ConnEvent
	zombies []*nbdclient.Client // connections with a write given up on
	changed chan struct{}       // closed and replaced at every acknowledgement
	pending sync.WaitGroup      // watchers of given-up writes
}

// StartWriter starts the workers.
func StartWriter(o WriterOptions) (*Writer, error) {
	if len(o.Endpoints) == 0 || o.Blocks <= 0 {
		return nil, errors.New("clustertest: the writer needs endpoints and blocks")
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if int64(o.Workers) > o.Blocks {
		o.Workers = int(o.Blocks)
	}
	if o.Interval == 0 {
		o.Interval = 5 * time.Millisecond
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 5 * time.Second
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	w := &Writer{o: o, stop: make(chan struct{}), changed: make(chan struct{})}
	for i := 0; i < o.Workers; i++ {
		w.wg.Add(1)
		go w.worker(i)
	}
	return w, nil
}

func (w *Writer) logf(format string, args ...any) {
	if w.o.Logf != nil {
		w.o.Logf(format, args...)
	}
}

func (w *Writer) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

func (w *Writer) connEvent(worker int, node string, err error) {
	e := ConnEvent{Time: time.Now(), Worker: worker, Node: node}
	if err != nil {
		e.Err = err.Error()
	}
	w.mu.Lock()
	w.conns = append(w.conns, e)
	w.mu.Unlock()
}

// dialAny connects to the first endpoint, from start on, that admits a
// client.
func dialAny(ctx context.Context, eps []Endpoint, export string, start int) (*nbdclient.Client, string, error) {
	var errs []error
	for i := range eps {
		ep := eps[(start+i)%len(eps)]
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := nbdclient.Dial(dctx, ep.Network, ep.Addr, nbdclient.Options{Export: export})
		cancel()
		if err == nil {
			return c, ep.Node, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", ep.Node, err))
	}
	return nil, "", errors.Join(errs...)
}

// connect loops until a node admits the worker or the writer stops.
func (w *Writer) connect(worker int, after int) (*nbdclient.Client, string, int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-w.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var lastErr string
	for !w.stopped() {
		// Start with the node after the one that failed, so a worker
		// does not keep returning to a primary that holds its writes.
		start := (after + 1) % len(w.o.Endpoints)
		c, node, err := dialAny(ctx, w.o.Endpoints, w.o.Export, start)
		if err == nil {
			w.connEvent(worker, node, nil)
			for i, ep := range w.o.Endpoints {
				if ep.Node == node {
					return c, node, i
				}
			}
			return c, node, 0
		}
		if err.Error() != lastErr {
			lastErr = err.Error()
			w.connEvent(worker, "", err)
		}
		select {
		case <-w.stop:
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil, "", after
}

func (w *Writer) worker(id int) {
	defer w.wg.Done()
	rng := rand.New(rand.NewPCG(w.o.Seed, uint64(id)))
	per := (w.o.Blocks - int64(id) + int64(w.o.Workers) - 1) / int64(w.o.Workers)
	buf := make([]byte, BlockSize)
	var c *nbdclient.Client
	node, epIdx := "", -1
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for !w.stopped() {
		if c == nil {
			c, node, epIdx = w.connect(id, epIdx)
			if c == nil {
				return
			}
			w.logf("writer %d: connected to %s", id, node)
		}
		block := int64(id) + int64(w.o.Workers)*rng.Int64N(per)
		rec := &Write{Tag: Tag{Seq: w.seq.Add(1), Offset: block * BlockSize, Issued: time.Now(), Node: node}}
		rec.Encode(buf)
		var flags nbdclient.WriteFlags
		if w.o.FUA {
			flags = nbdclient.FUA
		}
		w.mu.Lock()
		w.writes = append(w.writes, rec)
		w.mu.Unlock()
		call := c.StartWrite(buf, rec.Offset, flags)
		timer := time.NewTimer(w.o.WriteTimeout)
		select {
		case <-call.Done:
			timer.Stop()
			w.finish(rec, call, false)
			if call.Err != nil {
				w.logf("writer %d: write seq %d on %s: %v", id, rec.Seq, node, call.Err)
				c.Close()
				c = nil
				continue
			}
		case <-timer.C:
			// Give up waiting, but keep the connection open: an answer
			// that comes later is an acknowledgement too (and one from an
			// old primary after the new one acknowledged is what check
			// (a) is about).
			w.logf("writer %d: write seq %d on %s not answered within %s: reconnecting", id, rec.Seq, node, w.o.WriteTimeout)
			w.mu.Lock()
			w.zombies = append(w.zombies, c)
			w.mu.Unlock()
			w.pending.Add(1)
			go func() {
				defer w.pending.Done()
				<-call.Done
				w.finish(rec, call, true)
			}()
			c = nil
			continue
		}
		if w.o.Interval > 0 {
			select {
			case <-w.stop:
			case <-time.After(w.o.Interval):
			}
		}
	}
}

func (w *Writer) finish(rec *Write, call *nbdclient.Call, late bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if call.Err == nil {
		rec.Acked, rec.Late = call.Replied, late
		close(w.changed)
		w.changed = make(chan struct{})
	} else {
		rec.Err = call.Err.Error()
	}
}

// Acked counts the acknowledged writes so far.
func (w *Writer) Acked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, r := range w.writes {
		if !r.Acked.IsZero() {
			n++
		}
	}
	return n
}

// WaitAck waits for the first acknowledgement after the time after that
// match accepts (nil: any), and returns that write.
func (w *Writer) WaitAck(after time.Time, match func(Write) bool, timeout time.Duration) (Write, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		var best *Write
		for _, r := range w.writes {
			if r.Acked.After(after) && (match == nil || match(*r)) && (best == nil || r.Acked.Before(best.Acked)) {
				best = r
			}
		}
		ch := w.changed
		var out Write
		if best != nil {
			out = *best
		}
		w.mu.Unlock()
		if best != nil {
			return out, nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return Write{}, fmt.Errorf("no write acknowledged within %s", timeout)
		}
	}
}

// WaitAckBy waits for the first write acknowledged by node after after.
func (w *Writer) WaitAckBy(node string, after time.Time, timeout time.Duration) (Write, error) {
	wr, err := w.WaitAck(after, func(r Write) bool { return r.Node == node }, timeout)
	if err != nil {
		return wr, fmt.Errorf("%s: %w", node, err)
	}
	return wr, nil
}

// Stop stops the workers (each waits for its write in flight, at most
// WriteTimeout), waits up to grace for the answers of writes given up on
// earlier, closes every connection and returns the history.
func (w *Writer) Stop(grace time.Duration) *History {
	close(w.stop)
	w.wg.Wait()
	done := make(chan struct{})
	go func() { w.pending.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
	}
	w.mu.Lock()
	zs := w.zombies
	w.zombies = nil
	w.mu.Unlock()
	for _, z := range zs {
		z.Abort()
	}
	<-done // Abort failed whatever was still in flight
	w.mu.Lock()
	defer w.mu.Unlock()
	h := &History{Blocks: w.o.Blocks, Conns: slices.Clone(w.conns)}
	for _, r := range w.writes {
		h.Writes = append(h.Writes, *r)
	}
	slices.SortFunc(h.Writes, func(a, b Write) int { return cmp.Compare(a.Seq, b.Seq) })
	return h
}
