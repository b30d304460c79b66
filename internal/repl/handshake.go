package repl

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/blkrep/blkrep/protocol"
)

// handshakeTimeout bounds the whole handshake: a peer that stalls in it
// is dropped.
const handshakeTimeout = 10 * time.Second

// errRefused wraps a refusal the peer sent (or that we sent).
var errRefused = errors.New("refused")

// helloIn is a Hello read by the Listener, with the reader that may hold
// bytes after it.
type helloIn struct {
	hello protocol.Hello
	br    *bufio.Reader
}

func send(c net.Conn, t protocol.MsgType, p []byte) error {
	b := make([]byte, protocol.HeaderSize, protocol.HeaderSize+len(p))
	protocol.PutHeader(b, t, len(p))
	_, err := c.Write(append(b, p...))
	return err
}

// refuse tells the peer why and closes the connection.
func refuse(c net.Conn, reason string) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	send(c, protocol.MsgRefuse, (&protocol.Refuse{Reason: reason}).Append(nil))
	c.Close()
}

// expect reads one message and requires type t; a Refuse becomes an
// error carrying the peer's reason.
func expect(br *bufio.Reader, t protocol.MsgType) ([]byte, error) {
	typ, p, _, err := protocol.ReadMessage(br, nil)
	if err != nil {
		return nil, err
	}
	if typ == protocol.MsgRefuse {
		r, err := protocol.DecodeRefuse(p)
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w by the peer: %s", errRefused, r.Reason)
	}
	if typ != t {
		return nil, fmt.Errorf("%w: expected %s, got %s", protocol.ErrMalformed, t, typ)
	}
	return p, nil
}

func nonce() [protocol.NonceSize]byte {
	var n [protocol.NonceSize]byte
	rand.Read(n[:])
	return n
}

// dialAuth connects to the peer and runs the dialer's half of the
// authentication.
func (l *link) dialAuth(ctx context.Context) (net.Conn, *bufio.Reader, error) {
	cfg := &l.r.cfg
	dctx, cancel := context.WithTimeout(ctx, max(cfg.ConnectInterval, 2*time.Second))
	c, err := cfg.Dial(dctx, l.peer.Address)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	br := bufio.NewReaderSize(c, 256<<10)
	my := protocol.Hello{MinVersion: protocol.MinVersion, MaxVersion: protocol.MaxVersion,
		Cluster: cfg.Cluster, Volume: cfg.Volume, From: cfg.Node, To: l.peer.Node, Nonce: nonce()}
	if err := send(c, protocol.MsgHello, my.Append(nil)); err != nil {
		c.Close()
		return nil, nil, err
	}
	p, err := expect(br, protocol.MsgHello)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	their, err := protocol.DecodeHello(p)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	ver, ok := protocol.Version(my.MinVersion, my.MaxVersion, their.MinVersion, their.MaxVersion)
	if !ok || their.From != l.peer.Node || their.To != cfg.Node || their.Volume != cfg.Volume || their.Cluster != cfg.Cluster {
		refuse(c, "handshake answer does not match the request")
		return nil, nil, fmt.Errorf("%w: the peer answered for cluster %q volume %q node %q", errRefused, their.Cluster, their.Volume, their.From)
	}
	want := protocol.AuthMAC(cfg.Secret, "acceptor", my.Nonce, their.Nonce, cfg.Cluster, cfg.Volume, cfg.Node, l.peer.Node, ver)
	if !protocol.CheckMAC(their.MAC, want) {
		refuse(c, "authentication failed")
		return nil, nil, fmt.Errorf("%w: %s at %s failed to prove it knows the cluster secret (different secret?)", errRefused, l.peer.Node, l.peer.Address)
	}
	a := protocol.Auth{MAC: protocol.AuthMAC(cfg.Secret, "dialer", their.Nonce, my.Nonce, cfg.Cluster, cfg.Volume, cfg.Node, l.peer.Node, ver)}
	if err := send(c, protocol.MsgAuth, a.Append(nil)); err != nil {
		c.Close()
		return nil, nil, err
	}
	l.authKey = a.MAC
	return c, br, nil
}

// acceptAuth runs the acceptor's half; h is the dialer's Hello.
func (l *link) acceptAuth(c net.Conn, h helloIn) error {
	cfg := &l.r.cfg
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	ver, ok := protocol.Version(protocol.MinVersion, protocol.MaxVersion, h.hello.MinVersion, h.hello.MaxVersion)
	if !ok {
		reason := fmt.Sprintf("no common protocol version: %s speaks %d..%d, %s %d..%d",
			cfg.Node, protocol.MinVersion, protocol.MaxVersion, h.hello.From, h.hello.MinVersion, h.hello.MaxVersion)
		refuse(c, reason)
		return fmt.Errorf("%w: %s", errRefused, reason)
	}
	my := protocol.Hello{MinVersion: protocol.MinVersion, MaxVersion: protocol.MaxVersion,
		Cluster: cfg.Cluster, Volume: cfg.Volume, From: cfg.Node, To: h.hello.From, Nonce: nonce()}
	mac := protocol.AuthMAC(cfg.Secret, "acceptor", h.hello.Nonce, my.Nonce, cfg.Cluster, cfg.Volume, h.hello.From, cfg.Node, ver)
	my.MAC = mac[:]
	if err := send(c, protocol.MsgHello, my.Append(nil)); err != nil {
		return err
	}
	p, err := expect(h.br, protocol.MsgAuth)
	if err != nil {
		return err
	}
	a, err := protocol.DecodeAuth(p)
	if err != nil {
		return err
	}
	want := protocol.AuthMAC(cfg.Secret, "dialer", my.Nonce, h.hello.Nonce, cfg.Cluster, cfg.Volume, h.hello.From, cfg.Node, ver)
	if !protocol.CheckMAC(a.MAC[:], want) {
		refuse(c, "authentication failed")
		return fmt.Errorf("%w: %s (from %s) failed to prove it knows the cluster secret (different secret?)", errRefused, h.hello.From, c.RemoteAddr())
	}
	l.authKey = want
	return nil
}
