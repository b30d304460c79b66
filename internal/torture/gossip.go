package torture

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"sync"
	"time"

	"github.com/blkrep/blkrep/failover"
)

// hub is the simulated gossip layer of a cluster: which nodes run and
// which pairs can talk (the same cuts as the replication network), each
// node's gossiped metadata, and the failover messages between them. It
// plays memberlist's part for failover.Runner through member, which
// implements failover.Membership:
//
//   - a node sees another Alive while both run and their pair is not cut;
//     Suspect from the moment they cannot talk; Dead once that lasted
//     deadAfter; Left after a graceful stop;
//   - a node sees the last metadata another gossiped while they could
//     talk (memberlist keeps a dead member's last metadata);
//   - a message is delivered after a seeded delay of up to maxMsgDelay
//     if the pair can still talk then; otherwise it is lost. Send to a
//     node that cannot be reached fails at once.
type hub struct {
	deadAfter   time.Duration
	maxMsgDelay time.Duration

	mu      sync.Mutex
	rng     *rand.Rand
	members map[string]*member
	cut     map[[2]string]bool
	// silentSince: when a viewer lost contact with a node (zero: in
	// contact).
	silentSince map[[2]string]time.Time
	seenMeta    map[[2]string]failover.NodeMeta
	quit        chan struct{}
	done        chan struct{}
}

// member is one node's view of the hub (failover.Membership).
type member struct {
	h    *hub
	name string

	// Under h.mu:
	up      bool
	left    bool
	meta    failover.NodeMeta
	changed chan struct{}
	msgs    chan failover.Message
	view    []failover.Member // the last view signalled
}

var _ failover.Membership = (*member)(nil)

func newHub(seed uint64, names []string, deadAfter, maxMsgDelay time.Duration) *hub {
	h := &hub{deadAfter: deadAfter, maxMsgDelay: maxMsgDelay, rng: rand.New(rand.NewPCG(seed, 0x6055)),
		members: map[string]*member{}, cut: map[[2]string]bool{}, silentSince: map[[2]string]time.Time{},
		seenMeta: map[[2]string]failover.NodeMeta{}, quit: make(chan struct{}), done: make(chan struct{})}
	for _, n := range names {
		h.members[n] = &member{h: h, name: n}
	}
	go h.loop()
	return h
}

func (h *hub) close() {
	close(h.quit)
	<-h.done
}

// loop re-evaluates the views as time passes (Suspect turns Dead).
func (h *hub) loop() {
	defer close(h.done)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-h.quit:
			return
		case <-t.C:
			h.mu.Lock()
			h.refresh()
			h.mu.Unlock()
		}
	}
}

// talk reports whether a and b can exchange gossip now (under h.mu).
func (h *hub) talk(a, b string) bool {
	if a == b {
		return h.members[a].up
	}
	return h.members[a].up && h.members[b].up && !h.cut[pairKey(a, b)]
}

func pairKey(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// refresh updates the silence clocks and the metadata seen, and signals
// every running node whose view changed (under h.mu).
func (h *hub) refresh() {
	now := time.Now()
	for _, v := range h.members {
		if !v.up {
			continue
		}
		for _, m := range h.members {
			if m == v {
				continue
			}
			k := [2]string{v.name, m.name}
			if h.talk(v.name, m.name) {
				delete(h.silentSince, k)
				h.seenMeta[k] = m.meta
			} else if _, ok := h.silentSince[k]; !ok {
				h.silentSince[k] = now
			}
		}
		view := h.viewOf(v, now)
		if !reflect.DeepEqual(view, v.view) {
			v.view = view
			select {
			case v.changed <- struct{}{}:
			default:
			}
		}
	}
}

func (h *hub) viewOf(v *member, now time.Time) []failover.Member {
	var out []failover.Member
	for _, name := range sortedKeys(h.members) {
		m := h.members[name]
		if m == v {
			out = append(out, failover.Member{Name: m.name, State: failover.StateAlive, Meta: m.meta})
			continue
		}
		k := [2]string{v.name, m.name}
		meta, known := h.seenMeta[k]
		if !known {
			continue // never met: memberlist does not list it
		}
		st := failover.StateAlive
		if since, silent := h.silentSince[k]; silent {
			switch {
			case m.left && !m.up:
				st = failover.StateLeft
			case now.Sub(since) >= h.deadAfter:
				st = failover.StateDead
			default:
				st = failover.StateSuspect
			}
		}
		out = append(out, failover.Member{Name: m.name, State: st, Meta: meta})
	}
	return out
}

// start makes a node run (again): fresh channels for its new runner.
func (h *hub) start(name string) *member {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.members[name]
	m.up, m.left, m.view = true, false, nil
	m.meta = failover.NodeMeta{}
	m.changed = make(chan struct{}, 1)
	m.msgs = make(chan failover.Message, 256)
	h.refresh()
	return m
}

// stop: the node no longer runs (crashed, or left when graceful).
func (h *hub) stop(name string, graceful bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.members[name]
	m.up, m.left = false, graceful
	h.refresh()
}

// setCut cuts or restores the pair's gossip.
func (h *hub) setCut(a, b string, cut bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cut {
		h.cut[pairKey(a, b)] = true
	} else {
		delete(h.cut, pairKey(a, b))
	}
	h.refresh()
}

// Members implements failover.Membership.
func (m *member) Members() []failover.Member {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	return m.h.viewOf(m, time.Now())
}

// Changed implements failover.Membership.
func (m *member) Changed() <-chan struct{} {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	return m.changed
}

// Messages implements failover.Membership.
func (m *member) Messages() <-chan failover.Message {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	return m.msgs
}

var errUnreachable = errors.New("torture: simulated gossip: node unreachable")

// Send implements failover.Membership.
func (m *member) Send(node string, payload []byte) error {
	h := m.h
	h.mu.Lock()
	to, ok := h.members[node]
	if !ok || !m.up || !h.talk(m.name, node) {
		h.mu.Unlock()
		return errUnreachable
	}
	delay := time.Duration(0)
	if h.maxMsgDelay > 0 {
		delay = time.Duration(h.rng.Int64N(int64(h.maxMsgDelay)))
	}
	ch := to.msgs
	h.mu.Unlock()
	msg := failover.Message{From: m.name, Payload: append([]byte(nil), payload...)}
	time.AfterFunc(delay, func() {
		h.mu.Lock()
		ok := h.talk(m.name, node) && to.msgs == ch // the receiver did not restart meanwhile
		h.mu.Unlock()
		if ok {
			select {
			case ch <- msg:
			default: // a full queue loses it, as a congested network would
			}
		}
	})
	return nil
}

// SetMeta implements failover.Membership.
func (m *member) SetMeta(meta failover.NodeMeta) error {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	if m.up {
		m.meta = meta
		m.h.refresh()
	}
	return nil
}
