package repl

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/blkrep/blkrep/protocol"
)

// Listener accepts the peers' connections on the node's address and
// hands each to the Replica of the volume its Hello names.
type Listener struct {
	cluster, node string
	l             net.Listener
	log           *slog.Logger

	mu       sync.Mutex
	replicas map[string]*Replica
	wg       sync.WaitGroup
}

// NewListener serves l for node.
func NewListener(l net.Listener, cluster, node string, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Listener{cluster: cluster, node: node, l: l, log: log, replicas: map[string]*Replica{}}
}

// Add registers a volume's replica.
func (ln *Listener) Add(r *Replica) {
	ln.mu.Lock()
	ln.replicas[r.cfg.Volume] = r
	ln.mu.Unlock()
}

// Addr is the listening address.
func (ln *Listener) Addr() net.Addr { return ln.l.Addr() }

// Serve accepts until Close.
func (ln *Listener) Serve() error {
	for {
		c, err := ln.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		ln.wg.Add(1)
		go func() {
			defer ln.wg.Done()
			ln.handle(c)
		}()
	}
}

// Close stops accepting.
func (ln *Listener) Close() error {
	err := ln.l.Close()
	ln.wg.Wait()
	return err
}

func (ln *Listener) handle(c net.Conn) {
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	br := bufio.NewReaderSize(c, 256<<10)
	p, err := expect(br, protocol.MsgHello)
	if err != nil {
		ln.log.Warn("replication connection dropped before the handshake", "remote", c.RemoteAddr(), "err", err)
		c.Close()
		return
	}
	h, err := protocol.DecodeHello(p)
	if err != nil {
		ln.log.Warn("replication connection sent a bad hello", "remote", c.RemoteAddr(), "err", err)
		refuse(c, err.Error())
		return
	}
	ln.mu.Lock()
	r := ln.replicas[h.Volume]
	ln.mu.Unlock()
	var reason string
	switch {
	case h.Cluster != ln.cluster:
		reason = fmt.Sprintf("cluster %q, not %q", h.Cluster, ln.cluster)
	case h.To != ln.node:
		reason = fmt.Sprintf("this is node %q, not %q", ln.node, h.To)
	case r == nil:
		reason = fmt.Sprintf("node %q holds no replica of volume %q", ln.node, h.Volume)
	}
	if reason != "" {
		ln.log.Warn("refused a replication connection", "remote", c.RemoteAddr(), "from", h.From, "volume", h.Volume, "reason", reason)
		refuse(c, reason)
		return
	}
	r.accept(c, helloIn{hello: h, br: br})
}
