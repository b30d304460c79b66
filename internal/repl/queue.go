package repl

import (
	"net"
	"sync"

	"github.com/blkrep/blkrep/nbd"
	"github.com/blkrep/blkrep/protocol"
)

// maxQueued bounds what waits in a link's send queue. A writer blocks
// beyond it (protocol A's back-pressure, as DRBD blocks on a full send
// buffer).
const maxQueued = 64 << 20

// sendq is one connection's outgoing messages, in order. Writers append
// under the link's lock; the sender goroutine writes them out in batches
// (one writev per batch).
type sendq struct {
	mu     sync.Mutex
	cond   *sync.Cond
	bufs   net.Buffers
	pooled [][]byte // data from getBuf, recycled once its batch is written
	bytes  int64
	closed bool
	err    error
}

func newSendq() *sendq {
	q := &sendq{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// put queues a message: header, fixed part and optional data (not
// copied: the caller keeps it alive until the sender is done with it).
// It blocks while the queue is over maxQueued; false once closed.
func (q *sendq) put(t protocol.MsgType, fixed []byte, data []byte) bool {
	return q.putData(t, fixed, data, false)
}

// putData is put; with pooled, data came from getBuf and the queue owns
// it: it is recycled once written (or dropped with the queue).
func (q *sendq) putData(t protocol.MsgType, fixed []byte, data []byte, pooled bool) bool {
	hdr := make([]byte, protocol.HeaderSize, protocol.HeaderSize+len(fixed))
	protocol.PutHeader(hdr, t, len(fixed)+len(data))
	hdr = append(hdr, fixed...)
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.bytes > maxQueued && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		if pooled {
			nbd.PutBuf(data)
		}
		return false
	}
	q.bufs = append(q.bufs, hdr)
	if pooled {
		q.pooled = append(q.pooled, data)
	}
	q.bytes += int64(len(hdr))
	if len(data) > 0 {
		q.bufs = append(q.bufs, data)
		q.bytes += int64(len(data))
	}
	q.cond.Broadcast()
	return true
}

// queued is how many bytes wait.
func (q *sendq) queued() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}

func (q *sendq) close(err error) {
	q.mu.Lock()
	if !q.closed {
		q.closed, q.err = true, err
	}
	q.cond.Broadcast()
	q.mu.Unlock()
}

// run writes queued messages to c until the queue is closed or a write
// fails. It returns the bytes sent.
func (q *sendq) run(c net.Conn, sent func(int64)) error {
	for {
		q.mu.Lock()
		for len(q.bufs) == 0 && !q.closed {
			q.cond.Wait()
		}
		if q.closed {
			err := q.err
			q.mu.Unlock()
			return err
		}
		bufs, pooled := q.bufs, q.pooled
		q.bufs, q.pooled = nil, nil
		var n int64
		for _, b := range bufs {
			n += int64(len(b))
		}
		q.mu.Unlock()
		if _, err := bufs.WriteTo(c); err != nil {
			q.close(err)
			return err
		}
		sent(n)
		for _, b := range pooled {
			nbd.PutBuf(b)
		}
		q.mu.Lock()
		q.bytes -= n
		q.cond.Broadcast()
		q.mu.Unlock()
	}
}
