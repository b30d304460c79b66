package qemu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// The host side of the guest agent's protocol (tests/qemu/agent/doc.go):
// newline-delimited JSON over the virtio-serial port "blkrep.agent",
// which QEMU exposes on the host as a unix socket.

type agentRequest struct {
	ID        uint64 `json:"id"`
	Cmd       string `json:"cmd,omitempty"`
	Stdin     []byte `json:"stdin,omitempty"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
	Stream    bool   `json:"stream,omitempty"`
	Signal    uint64 `json:"signal,omitempty"`
	Sig       int    `json:"sig,omitempty"`
	Read      string `json:"read,omitempty"`
	Offset    int64  `json:"offset,omitempty"`
	Length    int64  `json:"length,omitempty"`
}

type agentReply struct {
	ID    uint64  `json:"id"`
	Hello string  `json:"hello"`
	Line  *string `json:"line"`
	Done  bool    `json:"done"`
	Code  int     `json:"code"`
	Out   string  `json:"out"`
	Data  []byte  `json:"data"`
	Error string  `json:"error"`
}

// Line is one output line of a streamed command, with the host's time of
// arrival (the guest's clock is not the host's).
type Line struct {
	Text string
	At   time.Time
}

type pending struct {
	onLine func(Line)
	done   chan agentReply
}

// agentConn is one connection to a booted guest's agent. It ends when the
// guest dies (its QEMU closes the socket).
type agentConn struct {
	conn  net.Conn
	wmu   sync.Mutex
	mu    sync.Mutex
	next  uint64
	calls map[uint64]*pending
	dead  error
	hello chan struct{}
	once  sync.Once
}

func dialAgent(path string) (*agentConn, error) {
	var c net.Conn
	var err error
	for i := 0; i < 100; i++ { // QEMU creates the socket right after it starts
		if c, err = net.Dial("unix", path); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	a := &agentConn{conn: c, calls: map[uint64]*pending{}, hello: make(chan struct{})}
	go a.readLoop()
	return a, nil
}

func (a *agentConn) readLoop() {
	sc := bufio.NewScanner(a.conn)
	sc.Buffer(make([]byte, 64<<10), 128<<20)
	for sc.Scan() {
		at := time.Now()
		var r agentReply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue // noise before the agent opened the port
		}
		if r.Hello != "" {
			a.once.Do(func() { close(a.hello) })
			continue
		}
		a.mu.Lock()
		p := a.calls[r.ID]
		if r.Done {
			delete(a.calls, r.ID)
		}
		a.mu.Unlock()
		switch {
		case p == nil:
		case r.Line != nil:
			if p.onLine != nil {
				p.onLine(Line{Text: *r.Line, At: at})
			}
		case r.Done:
			p.done <- r
		}
	}
	err := sc.Err()
	if err == nil {
		err = fmt.Errorf("the guest closed the agent connection")
	}
	a.mu.Lock()
	a.dead = err
	calls := a.calls
	a.calls = map[uint64]*pending{}
	a.mu.Unlock()
	for _, p := range calls {
		p.done <- agentReply{Code: -1, Error: "agent connection lost: " + err.Error()}
	}
}

// start sends req and returns the channel of its final reply.
func (a *agentConn) start(req agentRequest, onLine func(Line)) (uint64, chan agentReply, error) {
	p := &pending{onLine: onLine, done: make(chan agentReply, 1)}
	a.mu.Lock()
	if a.dead != nil {
		a.mu.Unlock()
		return 0, nil, a.dead
	}
	a.next++
	req.ID = a.next
	a.calls[req.ID] = p
	a.mu.Unlock()
	b, err := json.Marshal(req)
	if err != nil {
		return 0, nil, err
	}
	a.wmu.Lock()
	_, err = a.conn.Write(append(b, '\n'))
	a.wmu.Unlock()
	if err != nil {
		return 0, nil, err
	}
	return req.ID, p.done, nil
}

// call runs req to its end. wait bounds the host's wait: a little more than
// the request's own timeout.
func (a *agentConn) call(req agentRequest, onLine func(Line), wait time.Duration) (agentReply, error) {
	_, done, err := a.start(req, onLine)
	if err != nil {
		return agentReply{}, err
	}
	select {
	case r := <-done:
		if strings.HasPrefix(r.Error, "agent connection lost") {
			return r, fmt.Errorf("%s", r.Error)
		}
		return r, nil
	case <-time.After(wait):
		return agentReply{}, fmt.Errorf("no answer from the guest agent in %s", wait)
	}
}

func (a *agentConn) close() { a.conn.Close() }
