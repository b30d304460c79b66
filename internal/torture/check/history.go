package check

import (
	"fmt"
	"sync"
)

// Write is one recorded write. ID, Off, Len, Tenure, FUA, Node and Issued
// are set by BeginWrite and never change; Done, Acked and Err are set by
// EndWrite under the recorder's lock, so read them from a Snapshot while
// writes are still running.
type Write struct {
	ID       uint64 // 1, 2, ... in the order the writes began
	Off, Len int64  // bytes, whole sectors
	Tenure   int
	FUA      bool
	Node     string // the node it was sent to
	Issued   int64  // tick of BeginWrite
	Done     int64  // tick of EndWrite; 0: never ended (in flight, in doubt)
	Acked    bool
	Err      string // why it failed ("" if acked or in flight)
}

// Flush is one recorded flush, with the same rules as Write.
type Flush struct {
	ID     uint64 // 1, 2, ... in the order the flushes began
	Tenure int
	Node   string
	Issued int64
	Done   int64 // 0: never ended
	Acked  bool
	Err    string
	// PeerAcked: the harness saw the peers acknowledge everything up to
	// this flush (under A and B a flush does not wait for them; the
	// harness asks the primary afterwards). Only such flushes make writes
	// required under A and B (rule 2).
	PeerAcked bool
}

// Event is a fault or a cluster event the harness noted: "partition",
// "crash", "powerloss", "promote", ... PowerLoss marks an event after
// which the data a node had not synced may be lost.
type Event struct {
	At        int64
	Kind      string
	Node      string
	Detail    string
	PowerLoss bool
}

// History records what a workload did, against a logical clock: every
// recorded thing (a write or flush beginning or ending, an event) takes
// the next tick, so ticks give the order the recorder saw. Safe for
// concurrent use.
type History struct {
	mu      sync.Mutex
	tick    int64
	writes  []*Write
	flushes []*Flush
	events  []Event
}

// NewHistory returns an empty history.
func NewHistory() *History { return &History{} }

func (h *History) next() int64 {
	h.tick++
	return h.tick
}

// BeginWrite records a write of n bytes at off (both whole sectors, n >
// 0) sent to node in tenure, and returns its record for EndWrite. Its ID
// is the one to stamp its data with (Fill).
func (h *History) BeginWrite(off, n int64, tenure int, node string, fua bool) *Write {
	if off < 0 || n <= 0 || off%SectorSize != 0 || n%SectorSize != 0 {
		panic(fmt.Sprintf("check.BeginWrite: %d bytes at %d: not whole sectors", n, off))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	w := &Write{ID: uint64(len(h.writes) + 1), Off: off, Len: n, Tenure: tenure, FUA: fua, Node: node, Issued: h.next()}
	h.writes = append(h.writes, w)
	return w
}

// EndWrite records the end of w: acknowledged if err is nil, failed
// otherwise. A write that is never ended stays in flight: in doubt, it
// may or may not have landed. Ending a write twice panics.
func (h *History) EndWrite(w *Write, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.Done != 0 {
		panic(fmt.Sprintf("check.EndWrite: write #%d ended twice", w.ID))
	}
	w.Done = h.next()
	w.Acked = err == nil
	if err != nil {
		w.Err = err.Error()
	}
}

// BeginFlush records a flush sent to node in tenure.
func (h *History) BeginFlush(tenure int, node string) *Flush {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := &Flush{ID: uint64(len(h.flushes) + 1), Tenure: tenure, Node: node, Issued: h.next()}
	h.flushes = append(h.flushes, f)
	return f
}

// EndFlush records the end of f, like EndWrite.
func (h *History) EndFlush(f *Flush, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f.Done != 0 {
		panic(fmt.Sprintf("check.EndFlush: flush #%d ended twice", f.ID))
	}
	f.Done = h.next()
	f.Acked = err == nil
	if err != nil {
		f.Err = err.Error()
	}
}

// PeerAcked records that the peers acknowledged everything up to the
// acknowledged flush f (see Flush.PeerAcked).
func (h *History) PeerAcked(f *Flush) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f.PeerAcked = true
}

// Note records an event: a fault the harness injected or something the
// cluster did. powerLoss marks an event after which a node's unsynced
// data may be lost (a power cut, a torn write).
func (h *History) Note(kind, node, detail string, powerLoss bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, Event{At: h.next(), Kind: kind, Node: node, Detail: detail, PowerLoss: powerLoss})
}

// Snapshot returns copies of the records: writes and flushes by ID,
// events by time.
func (h *History) Snapshot() (writes []Write, flushes []Flush, events []Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	writes = make([]Write, len(h.writes))
	for i, w := range h.writes {
		writes[i] = *w
	}
	flushes = make([]Flush, len(h.flushes))
	for i, f := range h.flushes {
		flushes[i] = *f
	}
	return writes, flushes, append([]Event(nil), h.events...)
}

// String formats the write as a history line:
// "t=12 write #5 [4096+4096) tenure 2 node beta acked t=15".
func (w Write) String() string {
	fua := ""
	if w.FUA {
		fua = " fua"
	}
	return fmt.Sprintf("t=%d write #%d [%d+%d)%s tenure %d node %s %s", w.Issued, w.ID, w.Off, w.Len, fua, w.Tenure, w.Node, outcome(w.Done, w.Acked, w.Err))
}

// String formats the flush as a history line:
// "t=20 flush #3 tenure 2 node beta acked t=22".
func (f Flush) String() string {
	s := fmt.Sprintf("t=%d flush #%d tenure %d node %s %s", f.Issued, f.ID, f.Tenure, f.Node, outcome(f.Done, f.Acked, f.Err))
	if f.PeerAcked {
		s += ", peers acked"
	}
	return s
}

// String formats the event as a history line:
// "t=18 powerloss alpha: torn (power loss)".
func (e Event) String() string {
	s := fmt.Sprintf("t=%d %s", e.At, e.Kind)
	if e.Node != "" {
		s += " " + e.Node
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.PowerLoss {
		s += " (power loss)"
	}
	return s
}

func outcome(done int64, acked bool, err string) string {
	switch {
	case done == 0:
		return "in flight"
	case acked:
		return fmt.Sprintf("acked t=%d", done)
	default:
		return fmt.Sprintf("failed t=%d: %s", done, err)
	}
}
