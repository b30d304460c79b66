package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// conn is one client in the transmission phase.
//
// One goroutine (serve) reads requests in order, validates them, registers
// mutating ones with the export's range tracker (which fixes the order of
// overlapping writes) and hands each to its own goroutine. Replies go out
// through a combining writer: whichever handler finds the socket idle
// writes its reply and everything queued meanwhile in one writev, so a deep
// queue costs few syscalls and a single request costs no extra handoff.
type conn struct {
	s   *Server
	nc  net.Conn
	br  *bufio.Reader
	exp *export
	log *slog.Logger
	neg negotiated

	handlers sync.WaitGroup
	active   atomic.Int32 // requests dispatched to workers and not finished
	work     chan work    // to idle workers; unbuffered
	workers  int          // started by the reader goroutine only

	// payload bytes held in memory, bounded by s.MaxInFlightBytes
	budgetMu   sync.Mutex
	budgetCond *sync.Cond
	budget     int64

	// Replies produced inline by the reader goroutine, written in one batch
	// when the reader runs out of buffered requests (or before it blocks).
	inBufs net.Buffers
	inRel  [][]byte

	wmu     sync.Mutex
	writing bool
	pending net.Buffers
	release [][]byte
	werr    error
}

func newConn(s *Server, nc net.Conn, neg *negotiated, log *slog.Logger) *conn {
	c := &conn{s: s, nc: nc, exp: neg.exp, log: log, neg: *neg}
	c.br = neg.br
	if c.br == nil {
		c.br = bufio.NewReaderSize(nc, 64<<10)
	}
	c.budgetCond = sync.NewCond(&c.budgetMu)
	c.work = make(chan work)
	return c
}

// stopReading makes the reader return so the connection drains and closes.
func (c *conn) stopReading() {
	c.nc.SetReadDeadline(time.Unix(1, 0))
}

func (c *conn) serve() {
	if !c.s.addConn(c) {
		c.nc.Close()
		return
	}
	c.exp.conns.Add(1)
	c.exp.totalConns.Add(1)
	c.log.Debug("nbd client connected", "structured", c.neg.structured)
	err := c.readLoop()
	// Let in-flight requests finish and send their replies before closing.
	c.handlers.Wait()
	close(c.work)
	c.nc.Close()
	c.exp.conns.Add(-1)
	c.s.removeConn(c)
	switch {
	case err == nil:
		c.log.Debug("nbd client disconnected")
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Debug("nbd client gone", "err", err)
	default:
		c.log.Info("nbd client dropped", "err", err)
	}
}

// readLoop returns nil on NBD_CMD_DISC.
func (c *conn) readLoop() error {
	var hdr [requestLen]byte
	var waits []chan struct{}
	defer c.flushInline()
	for {
		waits = waits[:0] // only READ/WRITE/TRIM/WRITE_ZEROES fill it below
		if c.br.Buffered() < requestLen {
			c.flushInline() // about to wait for the client: answer what we have
		}
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return errors.New("client vanished mid-request")
			}
			return err
		}
		var r Request
		if err := decodeRequest(hdr[:], &r); err != nil {
			return err
		}
		if r.Type == CmdDisc {
			return nil
		}
		errno := c.validate(&r)
		var buf []byte
		if r.Type == CmdWrite {
			if errno != 0 {
				// Keep the stream in sync: consume the payload we refuse.
				c.flushInline()
				if _, err := io.CopyN(io.Discard, c.br, int64(r.Length)); err != nil {
					return err
				}
			} else {
				c.acquire(int64(r.Length))
				if c.br.Buffered() < int(r.Length) {
					c.flushInline() // the payload is still on its way
				}
				buf = getBuf(int(r.Length))
				if _, err := io.ReadFull(c.br, buf); err != nil {
					putBuf(buf)
					c.releaseBudget(int64(r.Length))
					return errors.New("client vanished mid-request")
				}
			}
		}
		if errno != 0 {
			c.exp.errors.Add(1)
			c.replyError(&r, errno, "")
			continue
		}
		var start time.Time // the clock is read only for Export.Observe
		if c.exp.Observe != nil {
			start = time.Now()
		}
		if r.Type == CmdRead {
			c.acquire(int64(r.Length))
		}
		// Register once, in arrival order; every path below honours it.
		var ent *rangeEntry
		switch r.Type {
		case CmdRead, CmdWrite, CmdTrim, CmdWriteZeroes:
			ent, waits = c.exp.ranges.add(r.Offset, r.Offset+uint64(r.Length),
				r.Type != CmdRead, waits[:0])
		}
		if len(waits) == 0 {
			// Nothing earlier overlaps: cheap requests are served here.
			if r.Type == CmdRead && c.readInline(&r, start) {
				continue
			}
			if r.Type == CmdWrite && c.writeInline(&r, buf, ent, start) {
				continue
			}
			if c.active.Load() == 0 && c.br.Buffered() < requestLen {
				// The connection is idle: nothing in flight, nothing
				// queued. A worker would add a handoff and no concurrency.
				c.flushInline()
				c.handlers.Add(1)
				c.handle(r, buf, ent, nil, start)
				continue
			}
		}
		wk := work{r: r, buf: buf, ent: ent, start: start}
		if len(waits) > 0 {
			wk.waits = append([]chan struct{}(nil), waits...)
		}
		c.dispatch(wk)
	}
}

// work is one request handed to a worker.
type work struct {
	r     Request
	buf   []byte
	ent   *rangeEntry
	waits []chan struct{}
	start time.Time // for Export.Observe; zero without it
}

// maxWorkers bounds the goroutines serving one connection. Workers live as
// long as the connection, so their stacks are grown once, not per request.
const maxWorkers = 128

// dispatch hands w to an idle worker, starts a new one while under
// maxWorkers, or else waits for one to become idle. Progress is guaranteed:
// a worker only ever waits for requests dispatched before its own.
func (c *conn) dispatch(w work) {
	c.handlers.Add(1)
	c.active.Add(1)
	select {
	case c.work <- w:
		return
	default:
	}
	if c.workers < maxWorkers {
		c.workers++
		go c.worker(w)
		return
	}
	c.flushInline()
	c.work <- w
}

// maxInline bounds the requests served on the reader goroutine itself.
const maxInline = 128 << 10

// readInline serves a READ, with no earlier overlapping write in flight,
// on the reader goroutine when the backend can do it without blocking
// (data in the page cache): no handoff to a worker,
// and the reply joins a batch written with one writev. It reports false
// (nothing done, budget still held) when the read must go to a worker.
func (c *conn) readInline(r *Request, start time.Time) bool {
	nw, ok := c.exp.Backend.(NoWaitReader)
	if !ok || r.Length == 0 || r.Length > maxInline || r.Flags&CmdFlagFUA != 0 {
		return false
	}
	buf := getBuf(int(r.Length))
	if n, err := nw.ReadAtNoWait(buf, int64(r.Offset)); err != nil || n != len(buf) {
		putBuf(buf)
		return false
	}
	c.exp.reads.Add(1)
	c.exp.bytesRead.Add(uint64(r.Length))
	c.inBufs = append(c.inBufs, c.readReplyHeader(r, len(buf)), buf)
	c.inRel = append(c.inRel, buf)
	c.observe(r.Type, start)
	if len(c.inBufs) >= 32 {
		c.flushInline()
	}
	return true
}

// writeInline serves a plain WRITE, registered as ent with no earlier
// overlapping write in flight, on the reader goroutine: always for an
// export with InlineWrites, otherwise only when the connection is idle
// (nothing in flight, no next request buffered), where a handoff to a
// worker only adds latency. When it returns true it has released ent and
// buf; when false the caller still owns both.
func (c *conn) writeInline(r *Request, buf []byte, ent *rangeEntry, start time.Time) bool {
	if r.Length == 0 || r.Length > maxInline || r.Flags&CmdFlagFUA != 0 {
		// Large payloads go to a worker so the copy into the page cache
		// overlaps reading the next payload from the socket.
		return false
	}
	if !c.exp.InlineWrites && (c.active.Load() != 0 || c.br.Buffered() >= requestLen) {
		return false
	}
	var err error
	if tw, ok := c.exp.Backend.(TryWriter); ok {
		var done bool
		if _, done, err = tw.TryWriteAt(buf, int64(r.Offset)); !done {
			return false
		}
	} else {
		_, err = c.exp.Backend.WriteAt(buf, int64(r.Offset))
	}
	c.exp.ranges.remove(ent)
	putBuf(buf)
	c.releaseBudget(int64(r.Length))
	c.exp.writes.Add(1)
	if err != nil {
		c.flushInline()
		c.fail(r, err)
		c.observe(r.Type, start)
		return true
	}
	c.exp.bytesWritten.Add(uint64(r.Length))
	h := make([]byte, simpleLen)
	putSimpleReply(h, 0, r.Cookie)
	c.inBufs = append(c.inBufs, h)
	c.observe(r.Type, start)
	return true
}

// observe reports a served request to Export.Observe, if set.
func (c *conn) observe(cmd uint16, start time.Time) {
	if obs := c.exp.Observe; obs != nil {
		obs(cmd, time.Since(start))
	}
}

func (c *conn) flushInline() {
	if len(c.inBufs) == 0 {
		return
	}
	bufs, rel := c.inBufs, c.inRel
	c.inBufs, c.inRel = nil, nil
	c.sendBatch(bufs, rel)
}

func (c *conn) worker(w work) {
	for {
		c.handle(w.r, w.buf, w.ent, w.waits, w.start)
		c.active.Add(-1)
		var ok bool
		if w, ok = <-c.work; !ok {
			return
		}
	}
}

func (c *conn) acquire(n int64) {
	c.budgetMu.Lock()
	if c.budget > 0 && c.budget+n > c.s.MaxInFlightBytes && len(c.inRel) > 0 {
		// Our own unsent inline replies hold budget: send them first.
		c.budgetMu.Unlock()
		c.flushInline()
		c.budgetMu.Lock()
	}
	for c.budget > 0 && c.budget+n > c.s.MaxInFlightBytes {
		c.budgetCond.Wait()
	}
	c.budget += n
	c.budgetMu.Unlock()
}

func (c *conn) releaseBudget(n int64) {
	c.budgetMu.Lock()
	c.budget -= n
	c.budgetMu.Unlock()
	c.budgetCond.Broadcast()
}

func isMutating(t uint16) bool {
	return t == CmdWrite || t == CmdTrim || t == CmdWriteZeroes
}

// validate checks a request against the negotiated state and the export;
// it returns the errno to reply with, or 0.
func (c *conn) validate(r *Request) uint32 {
	allowed := CmdFlagFUA
	switch r.Type {
	case CmdRead:
		if c.neg.structured {
			allowed |= CmdFlagDF
		}
	case CmdWrite, CmdFlush, CmdTrim, CmdCache:
	case CmdWriteZeroes:
		allowed |= CmdFlagNoHole | CmdFlagFastZero
	case CmdBlockStatus:
		if !c.neg.metaAlloc {
			return EINVAL
		}
		allowed |= CmdFlagReqOne
	default:
		return EINVAL
	}
	if r.Flags&^allowed != 0 {
		return EINVAL
	}
	if r.Type == CmdFlush {
		return 0
	}
	if c.exp.ReadOnly && isMutating(r.Type) {
		return EPERM
	}
	if (r.Type == CmdRead || r.Type == CmdWrite) && r.Length > MaxPayload {
		if r.Flags&CmdFlagDF != 0 {
			return EOVERFLOW
		}
		return EINVAL
	}
	if r.Type == CmdBlockStatus && r.Length == 0 {
		return EINVAL
	}
	end := r.Offset + uint64(r.Length)
	if end < r.Offset || end > uint64(c.exp.Size) {
		if isMutating(r.Type) {
			return ENOSPC
		}
		return EINVAL
	}
	if c.neg.strictAlign && r.Type != CmdBlockStatus &&
		(r.Offset%MinBlockSize != 0 || r.Length%MinBlockSize != 0) {
		return EINVAL
	}
	return 0
}

// handle serves one request and queues its reply; start is when it was
// received, for Export.Observe.
func (c *conn) handle(r Request, buf []byte, ent *rangeEntry, waits []chan struct{}, start time.Time) {
	defer c.handlers.Done()
	if c.exp.Observe != nil {
		// Every return below has queued the reply.
		defer c.observe(r.Type, start)
	}
	for _, w := range waits {
		<-w
	}
	e := c.exp
	off, n := int64(r.Offset), int64(r.Length)
	fua := r.Flags&CmdFlagFUA != 0
	var err error
	switch r.Type {
	case CmdRead:
		buf = getBuf(int(n))
		if n > 0 {
			err = readFull(e.Backend, buf, off)
		}
		c.exp.ranges.remove(ent)
		e.reads.Add(1)
		if err == nil {
			e.bytesRead.Add(uint64(n))
			if fua {
				err = e.Backend.Flush() // FUA on a read: nothing new to sync, but honour it
			}
		}
		if err != nil {
			putBuf(buf)
			c.releaseBudget(n)
			c.fail(&r, err)
			return
		}
		c.replyRead(&r, buf)
		return
	case CmdWrite:
		if n == 0 {
			// Nothing to write; a FUA on it still means a flush below.
		} else if fw, ok := e.Backend.(FUAWriter); ok && fua {
			_, err = fw.WriteAtFUA(buf, off)
			fua = false
		} else {
			_, err = e.Backend.WriteAt(buf, off)
		}
		putBuf(buf)
		c.releaseBudget(n)
		e.writes.Add(1)
		if err == nil {
			e.bytesWritten.Add(uint64(n))
		}
	case CmdFlush:
		err = e.Backend.Flush()
		fua = false
		e.flushes.Add(1)
	case CmdTrim:
		if t, ok := e.Backend.(Trimmer); ok && n > 0 {
			err = t.Trim(off, n)
		}
		e.trims.Add(1)
	case CmdWriteZeroes:
		err = c.writeZeroes(off, n, r.Flags)
		e.zeroes.Add(1)
	case CmdCache:
		if ch, ok := e.Backend.(Cacher); ok && n > 0 {
			err = ch.Cache(off, n)
		}
		e.caches.Add(1)
	case CmdBlockStatus:
		e.blockStatus.Add(1)
		c.blockStatus(&r)
		return
	}
	c.exp.ranges.remove(ent)
	if err == nil && fua {
		err = e.Backend.Flush()
	}
	if err != nil {
		c.fail(&r, err)
		return
	}
	c.replySimple(r.Cookie, 0)
}

func (c *conn) writeZeroes(off, n int64, flags uint16) error {
	if n == 0 {
		return nil
	}
	noHole := flags&CmdFlagNoHole != 0
	fast := flags&CmdFlagFastZero != 0
	if z, ok := c.exp.Backend.(Zeroer); ok {
		return z.WriteZeroes(off, n, noHole, fast)
	}
	if fast {
		return ErrFastZeroUnsupported
	}
	const chunk = 1 << 20
	zero := getBuf(chunk)
	clear(zero)
	defer putBuf(zero)
	for n > 0 {
		m := min(n, chunk)
		if _, err := c.exp.Backend.WriteAt(zero[:m], off); err != nil {
			return err
		}
		off += m
		n -= m
	}
	return nil
}

func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// fail replies with the errno for a backend error and logs it, at most a
// few lines per second per export so a dying disk does not flood the log.
func (c *conn) fail(r *Request, err error) {
	errno := Errno(err)
	c.exp.errors.Add(1)
	now := time.Now().UnixNano()
	last := c.exp.lastErrLog.Load()
	if now-last > int64(200*time.Millisecond) && c.exp.lastErrLog.CompareAndSwap(last, now) {
		c.log.Error("nbd request failed", "cmd", CommandName(r.Type),
			"offset", r.Offset, "len", r.Length, "cookie", r.Cookie, "errno", errno, "err", err)
	}
	c.replyError(r, errno, err.Error())
}

func (c *conn) replySimple(cookie uint64, errno uint32) {
	b := make([]byte, simpleLen)
	putSimpleReply(b, errno, cookie)
	c.send(nil, b)
}

func (c *conn) replyError(r *Request, errno uint32, msg string) {
	if !c.neg.structured || (r.Type != CmdRead && r.Type != CmdBlockStatus) {
		c.replySimple(r.Cookie, errno)
		return
	}
	if len(msg) > 256 {
		msg = msg[:256]
	}
	b := make([]byte, structLen+6, structLen+6+len(msg))
	putStructHeader(b, replyFlagDone, replyTypeError, r.Cookie, uint32(6+len(msg)))
	binary.BigEndian.PutUint32(b[structLen:], errno)
	binary.BigEndian.PutUint16(b[structLen+4:], uint16(len(msg)))
	b = append(b, msg...)
	c.send(nil, b)
}

func (c *conn) replyRead(r *Request, data []byte) {
	h := c.readReplyHeader(r, len(data))
	if len(data) == 0 {
		putBuf(data)
		c.releaseBudget(0)
		c.send(nil, h)
		return
	}
	c.send(data, h, data)
}

// readReplyHeader is what precedes n bytes of READ data on the wire.
func (c *conn) readReplyHeader(r *Request, n int) []byte {
	if !c.neg.structured {
		h := make([]byte, simpleLen)
		putSimpleReply(h, 0, r.Cookie)
		return h
	}
	if n == 0 {
		h := make([]byte, structLen)
		putStructHeader(h, replyFlagDone, replyTypeNone, r.Cookie, 0)
		return h
	}
	h := make([]byte, structLen+8)
	putStructHeader(h, replyFlagDone, replyTypeOffsetData, r.Cookie, uint32(8+n))
	binary.BigEndian.PutUint64(h[structLen:], r.Offset)
	return h
}

// maxExtents bounds the descriptors in one BLOCK_STATUS reply.
const maxExtents = 1 << 14

func (c *conn) blockStatus(r *Request) {
	off, n := int64(r.Offset), int64(r.Length)
	b := make([]byte, structLen+4, structLen+4+8*16)
	binary.BigEndian.PutUint32(b[structLen:], metaContextAllocationID)
	count := 0
	add := func(length int64, flags uint32) bool {
		for length > 0 {
			l := min(length, 1<<31) // keep descriptor lengths well inside u32
			b = binary.BigEndian.AppendUint32(b, uint32(l))
			b = binary.BigEndian.AppendUint32(b, flags)
			length -= l
			count++
			if r.Flags&CmdFlagReqOne != 0 || count >= maxExtents {
				return false
			}
		}
		return true
	}
	var err error
	if ex, ok := c.exp.Backend.(Extenter); ok {
		err = ex.Extents(off, n, func(_, length int64, flags uint32) bool { return add(length, flags) })
	} else {
		add(n, 0)
	}
	if err == nil && count == 0 {
		add(n, 0)
	}
	if err != nil {
		c.fail(r, err)
		return
	}
	putStructHeader(b, replyFlagDone, replyTypeBlockStatus, r.Cookie, uint32(len(b)-structLen))
	c.send(nil, b)
}

// send queues buffers for the socket; rel (may be nil) is a pooled payload
// buffer given back once written. The first caller to find the socket idle
// writes everything queued, including what others add while it writes.
func (c *conn) send(rel []byte, bufs ...[]byte) {
	var rels [][]byte
	if rel != nil {
		rels = [][]byte{rel}
	}
	c.sendBatch(bufs, rels)
}

// sendBatch queues several replies at once; rels are pooled payload
// buffers (holding connection budget) given back once written.
func (c *conn) sendBatch(bufs net.Buffers, rels [][]byte) {
	c.wmu.Lock()
	if c.werr != nil {
		c.wmu.Unlock()
		for _, b := range rels {
			putBuf(b)
			c.releaseBudget(int64(len(b)))
		}
		return
	}
	c.pending = append(c.pending, bufs...)
	c.release = append(c.release, rels...)
	if c.writing {
		c.wmu.Unlock()
		return
	}
	c.writing = true
	for len(c.pending) > 0 && c.werr == nil {
		batch, rels := c.pending, c.release
		c.pending, c.release = nil, nil
		c.wmu.Unlock()
		_, err := batch.WriteTo(c.nc)
		for _, b := range rels {
			c.releaseBudget(int64(len(b)))
			putBuf(b)
		}
		c.wmu.Lock()
		if err != nil {
			c.werr = err
			c.nc.Close() // unblocks the reader; the client will not see more replies
			for _, b := range c.release {
				c.releaseBudget(int64(len(b)))
				putBuf(b)
			}
			c.pending, c.release = nil, nil
		}
	}
	c.writing = false
	c.wmu.Unlock()
}
