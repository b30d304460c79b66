package nbd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Export describes one volume served by the Server.
type Export struct {
	Name        string
	Description string
	Size        int64  // bytes
	BlockSize   uint32 // preferred block size; 0 means 4096
	ReadOnly    bool
	// MultiConn is set when a Flush through any connection covers the
	// writes acknowledged on all of them (true for a backend whose Flush
	// syncs the whole store). It advertises NBD_FLAG_CAN_MULTI_CONN.
	MultiConn bool
	Backend   Backend
	// InlineWrites says WriteAt only copies into the page cache (no
	// network, no waiting for the disk) so plain writes are best done on
	// the connection's reader goroutine: buffered writes to one file
	// serialise on the inode lock in the kernel anyway, and parallel
	// writers only spin on it. Without it, writes are inlined only when
	// the connection is otherwise idle.
	InlineWrites bool
	// Admit, when set, is asked before a client enters the transmission
	// phase; a non-nil error refuses the client with that message.
	Admit func() error
	// Observe, when set, is called once per served request with its
	// command (CmdRead...) and the time from the request being fully
	// received (header and payload) to its reply being queued for the
	// socket, failed requests included; requests refused by validation
	// (bad flags, out of range) are not observed. It runs on the
	// request's goroutine, often the connection's reader: it must be
	// cheap and must not block. Nil (the default) costs one nil check per
	// request: no clock is read.
	Observe func(cmd uint16, d time.Duration)
}

// Stats are an export's I/O counters since the daemon started.
type Stats struct {
	Connections      int64  `json:"connections"`
	TotalConnections uint64 `json:"total_connections"`
	Reads            uint64 `json:"reads"`
	Writes           uint64 `json:"writes"`
	Flushes          uint64 `json:"flushes"`
	Trims            uint64 `json:"trims"`
	WriteZeroes      uint64 `json:"write_zeroes"`
	Caches           uint64 `json:"caches"`
	BlockStatus      uint64 `json:"block_status"`
	BytesRead        uint64 `json:"bytes_read"`
	BytesWritten     uint64 `json:"bytes_written"`
	Errors           uint64 `json:"errors"`
}

type export struct {
	Export
	ranges rangeTracker

	conns, totalConns                                          atomic.Int64
	reads, writes, flushes, trims, zeroes, caches, blockStatus atomic.Uint64
	bytesRead, bytesWritten, errors                            atomic.Uint64
	lastErrLog                                                 atomic.Int64
}

// flags returns the transmission flags for a client; DF only when the
// client negotiated structured replies.
func (e *export) flags(structured bool) uint16 {
	f := FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendCache
	if e.ReadOnly {
		f |= FlagReadOnly
	} else {
		f |= FlagSendTrim | FlagSendWriteZeroes | FlagSendFastZero
	}
	if e.MultiConn {
		f |= FlagCanMultiConn
	}
	if structured {
		f |= FlagSendDF
	}
	return f
}

func (e *export) blockSize() uint32 {
	if e.BlockSize == 0 {
		return 4096
	}
	return e.BlockSize
}

// Server serves exports to NBD clients. The zero value is not usable; call
// NewServer.
type Server struct {
	log *slog.Logger

	// HandshakeTimeout bounds the whole negotiation phase of one client.
	HandshakeTimeout time.Duration
	// MaxInFlightBytes bounds the payload bytes one connection may hold in
	// memory (write data received, read data not yet sent).
	MaxInFlightBytes int64

	mu        sync.Mutex
	exports   map[string]*export
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	handshake map[net.Conn]struct{} // clients still negotiating
	shutdown  bool
	wg        sync.WaitGroup
}

// NewServer returns a server logging to log (nil discards).
func NewServer(log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		log:              log,
		HandshakeTimeout: 30 * time.Second,
		MaxInFlightBytes: 128 << 20,
		exports:          make(map[string]*export),
		listeners:        make(map[net.Listener]struct{}),
		conns:            make(map[*conn]struct{}),
		handshake:        make(map[net.Conn]struct{}),
	}
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("nbd: server closed")

// AddExport makes an export available. Names are unique.
func (s *Server) AddExport(e Export) error {
	if e.Backend == nil {
		return fmt.Errorf("nbd: export %q has no backend", e.Name)
	}
	if e.Size < 0 {
		return fmt.Errorf("nbd: export %q has negative size", e.Name)
	}
	if len(e.Name) > maxStringLen || len(e.Description) > maxStringLen {
		return fmt.Errorf("nbd: export %q: name or description longer than %d bytes", e.Name, maxStringLen)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.exports[e.Name]; ok {
		return fmt.Errorf("nbd: export %q already exists", e.Name)
	}
	s.exports[e.Name] = &export{Export: e}
	return nil
}

// Stats returns the counters of an export.
func (s *Server) Stats(name string) (Stats, bool) {
	s.mu.Lock()
	e := s.exports[name]
	s.mu.Unlock()
	if e == nil {
		return Stats{}, false
	}
	return Stats{
		Connections:      e.conns.Load(),
		TotalConnections: uint64(e.totalConns.Load()),
		Reads:            e.reads.Load(),
		Writes:           e.writes.Load(),
		Flushes:          e.flushes.Load(),
		Trims:            e.trims.Load(),
		WriteZeroes:      e.zeroes.Load(),
		Caches:           e.caches.Load(),
		BlockStatus:      e.blockStatus.Load(),
		BytesRead:        e.bytesRead.Load(),
		BytesWritten:     e.bytesWritten.Load(),
		Errors:           e.errors.Load(),
	}, true
}

// TransmissionFlags returns the flags a client without structured replies
// (such as the kernel) is told, for handing to the kernel on attach.
func (s *Server) TransmissionFlags(name string) (uint16, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.exports[name]
	if e == nil {
		return 0, false
	}
	return e.flags(false), true
}

func (s *Server) lookup(name string) *export {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exports[name]
}

func (s *Server) exportNames() []*export {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*export, 0, len(s.exports))
	for _, e := range s.exports {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Serve accepts clients on l until Shutdown or a listener error. A client
// asking for the empty export name gets defaultExport (may be empty: then
// the empty name is unknown unless an export is named "").
func (s *Server) Serve(l net.Listener, defaultExport string) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.shutdown
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Back off on transient accept errors (EMFILE) instead of
				// spinning; clients keep waiting in the backlog.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("nbd accept failed, retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if !s.enter() {
			nc.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.wg.Done()
			s.ServeConn(nc, defaultExport)
		}()
	}
}

// enter counts a serving goroutine, which calls s.wg.Done when it ends;
// false once shut down.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	s.wg.Add(1)
	return true
}

// ServeConn negotiates with one client and serves it until it disconnects.
// It closes nc.
func (s *Server) ServeConn(nc net.Conn, defaultExport string) {
	log := s.log.With("remote", remoteName(nc))
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.handshake[nc] = struct{}{}
	s.mu.Unlock()
	neg, err := s.negotiate(nc, defaultExport, log)
	s.mu.Lock()
	delete(s.handshake, nc)
	s.mu.Unlock()
	if err != nil {
		if !errors.Is(err, errAborted) {
			log.Info("nbd handshake ended", "err", err)
		}
		nc.Close()
		return
	}
	c := newConn(s, nc, neg, log.With("volume", neg.exp.Name))
	c.serve()
}

// ServeTransmission serves a socket that is already in the transmission
// phase (the kernel's end of a socketpair): simple replies only, no
// handshake. It closes nc when the peer disconnects.
func (s *Server) ServeTransmission(nc net.Conn, name string) error {
	e := s.lookup(name)
	if e == nil {
		nc.Close()
		return fmt.Errorf("nbd: unknown export %q", name)
	}
	if !s.enter() {
		nc.Close()
		return ErrServerClosed
	}
	defer s.wg.Done()
	neg := &negotiated{exp: e, br: nil}
	c := newConn(s, nc, neg, s.log.With("volume", name, "remote", "kernel"))
	c.serve()
	return nil
}

// Shutdown stops accepting, asks every connection to stop reading new
// requests, lets in-flight requests finish and their replies go out, then
// closes. If ctx ends first the remaining connections are closed hard.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.stopReading()
	}
	for nc := range s.handshake {
		// Nothing is in flight before the handshake ends: cut it short.
		nc.SetDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		for nc := range s.handshake {
			nc.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

func (s *Server) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

func (s *Server) addConn(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func remoteName(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	if a := nc.LocalAddr(); a != nil {
		return "unix:" + a.String()
	}
	return "unknown"
}
