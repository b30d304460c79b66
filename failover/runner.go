package failover

import (
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
)

// WriteMode is what the runner tells a replica about acknowledging writes.
type WriteMode uint8

const (
	WritesHold WriteMode = iota
	WritesAccept
	WritesFail
)

// ReplicaControl is the local replica of one volume as the runner drives
// it (internal/daemon adapts internal/repl to it). Its methods must not
// block for long: the runner calls them from its loop.
type ReplicaControl interface {
	// Local returns the replica's state now.
	Local() Local
	// Promote makes the replica Primary for term; writes stay held until
	// SetWrites(WritesAccept).
	Promote(term uint64) error
	// Demote makes it Secondary.
	Demote() error
	SetWrites(m WriteMode)
	SetOutdated(peer string, confirmed bool)
	// SetElecting tells the replica an election of this node runs (or
	// ended): meanwhile it must not become a resync target, or it could
	// win holding half-copied data (docs/reliability.md).
	SetElecting(electing bool)
	// SetTerm tells the replication layer the data term this replica
	// holds: it travels in every handshake, so a stale primary is refused
	// (docs/failover.md, "The term in replication traffic").
	SetTerm(dataTerm uint64)
}

// Membership is what a runner needs of the gossip layer: *Gossip is the
// real one; internal/torture simulates one over its fake network.
type Membership interface {
	Members() []Member
	Changed() <-chan struct{}
	Messages() <-chan Message
	Send(node string, payload []byte) error
	SetMeta(m NodeMeta) error
}

// RunnerVolume is one volume a runner decides for.
type RunnerVolume struct {
	Decider DeciderConfig
	// Replica is nil on a witness.
	Replica ReplicaControl
	// StatePath is the volume's failover state file (LoadState/SaveState).
	StatePath string
}

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	Cluster string
	Node    string
	Witness bool
	Gossip  Membership
	Volumes []RunnerVolume
	// Tick is how often the decisions re-run (default 50 ms). Decider
	// ticks are milliseconds since the runner started.
	Tick time.Duration
	Log  *slog.Logger
	// Handler runs a configured handler ("after-promote", ...) for a
	// volume; called on its own goroutine. Nil: handlers are logged only.
	Handler func(volume, name, reason string)
	// Fence runs the fence-peer handler of volume against peer (two-node
	// mode) and reports whether it proved the peer outdated or powered
	// off; called on its own goroutine. Nil: fencing always fails.
	Fence func(volume, peer string) bool
	// Notify, when set, is called from the loop with a volume's status
	// whenever its term, primary, role, write mode, quorum, outdated set
	// or explanation changes (events). It must not block.
	Notify func(VolumeStatus)
}

// Runner drives the Deciders of one node: it feeds them membership,
// messages, the replicas' state and time, and carries out their Actions
// (docs/failover.md).
type Runner struct {
	cfg   RunnerConfig
	log   *slog.Logger
	start time.Time
	vols  map[string]*runVol
	quit  chan struct{}
	done  chan struct{}
	calls chan func() // run on the loop (the deciders are not concurrent)

	mu     sync.Mutex
	status map[string]VolumeStatus
}

type runVol struct {
	rv      RunnerVolume
	d       *Decider
	st      State
	why     string
	lastTry time.Time // of the last promotion retry
	termSet uint64    // the data term last given to the replica
	// electing: what the replica was last told by SetElecting.
	electing bool
}

// VolumeStatus is a volume's failover state for status and logs.
type VolumeStatus struct {
	Volume    string
	Term      uint64
	Primary   string // of the newest term known to have had one
	IsPrimary bool
	Accepting bool
	DataTerm  uint64
	// Quorum: this node sees a majority of the voters that count; Seen
	// lists the voters it sees alive (itself included).
	Quorum bool
	Seen   []string
	// Counted: the voters that count for quorum (not those that left
	// gracefully, nor a fenced peer).
	Counted []string
	// Outdated: on a primary, the peers it declared out of sync (they
	// miss acknowledged writes and cannot be promoted); Confirmed, those
	// a majority of voters has recorded.
	Outdated, Confirmed []string
	// Fenced: two-node mode, the peer the fence-peer handler fenced (it
	// does not count for quorum until it is back).
	Fenced []string
	Why    string // the last decision's explanation
}

// StartRunner loads every volume's state file, builds the deciders and
// starts the loop.
func StartRunner(cfg RunnerConfig) (*Runner, error) {
	if cfg.Gossip == nil {
		return nil, fmt.Errorf("failover: runner without gossip")
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 50 * time.Millisecond
	}
	r := &Runner{cfg: cfg, log: cfg.Log, start: time.Now(), vols: map[string]*runVol{},
		quit: make(chan struct{}), done: make(chan struct{}), calls: make(chan func()), status: map[string]VolumeStatus{}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	for _, v := range cfg.Volumes {
		name := v.Decider.Volume
		if _, dup := r.vols[name]; dup {
			return nil, fmt.Errorf("failover: volume %q given twice", name)
		}
		if (v.Replica == nil) != cfg.Witness {
			return nil, fmt.Errorf("failover: volume %q: a witness has no replica, a data node has one", name)
		}
		st, _, err := LoadState(v.StatePath, cfg.Cluster, name, cfg.Node)
		if err != nil {
			return nil, err
		}
		dc := v.Decider
		dc.Self = cfg.Node
		d, err := NewDecider(dc, st.Voter, st.DataTerm, 0)
		if err != nil {
			return nil, fmt.Errorf("failover: volume %q: %w", name, err)
		}
		r.vols[name] = &runVol{rv: v, d: d, st: st}
		if v.Replica != nil {
			v.Replica.SetTerm(st.DataTerm)
			r.vols[name].termSet = st.DataTerm
		}
	}
	r.publish()
	go r.loop()
	return r, nil
}

// Close stops the loop (the gossip is the caller's).
func (r *Runner) Close() {
	select {
	case <-r.quit:
	default:
		close(r.quit)
	}
	<-r.done
}

// HandoverTarget checks, changing nothing, that this node could hand
// volume over to to now (Decider.HandoverTarget).
func (r *Runner) HandoverTarget(volume, to string) (string, error) {
	var got string
	err := r.onVolume(volume, func(rv *runVol) (a Actions, err error) {
		got, err = rv.d.HandoverTarget(to)
		return a, err
	})
	return got, err
}

// call runs f on the loop and returns its error.
func (r *Runner) call(f func() error) error {
	res := make(chan error, 1)
	select {
	case r.calls <- func() { res <- f() }:
	case <-r.quit:
		return fmt.Errorf("failover: stopping")
	}
	return <-res
}

// onVolume runs f on the loop for a volume this node holds a replica of,
// with the decider told the replica's state first, and carries out the
// actions f returns (unless it fails).
func (r *Runner) onVolume(volume string, f func(rv *runVol) (Actions, error)) error {
	return r.call(func() error {
		rv := r.vols[volume]
		if rv == nil || rv.rv.Replica == nil {
			return fmt.Errorf("failover: this node holds no replica of %q", volume)
		}
		r.apply(rv, rv.d.SetLocal(r.now(), rv.rv.Replica.Local()))
		a, err := f(rv)
		if err != nil {
			return err
		}
		defer r.publish()
		if !r.apply(rv, a) {
			return fmt.Errorf("failover: the failover state of %q could not be stored", volume)
		}
		return nil
	})
}

// Handover starts a planned switchover of volume from this node, its
// primary, to node to ("" picks the first voter in sync): see
// Decider.Handover for what the caller must ensure first. It returns the
// node asked to take over once this node has stepped down.
func (r *Runner) Handover(volume, to string) (string, error) {
	var got string
	err := r.onVolume(volume, func(rv *runVol) (a Actions, err error) {
		got, a, err = rv.d.Handover(r.now(), to)
		return a, err
	})
	return got, err
}

// RequestPrimary is 'blkrep primary' under failover
// (Decider.RequestPrimary): an election for this node starts now.
func (r *Runner) RequestPrimary(volume string) error {
	return r.onVolume(volume, func(rv *runVol) (Actions, error) { return rv.d.RequestPrimary(r.now()) })
}

// RequestSecondary is 'blkrep secondary' under failover
// (Decider.RequestSecondary): this primary steps down.
func (r *Runner) RequestSecondary(volume string) error {
	return r.onVolume(volume, func(rv *runVol) (Actions, error) { return rv.d.RequestSecondary(r.now()) })
}

// ObserveTerm hands the runner a peer's data term from the replication
// handshake: a newer term than this node knows ends its primacy. It
// blocks until the loop took it; call it from its own goroutine.
func (r *Runner) ObserveTerm(volume, peer string, term uint64) {
	_ = r.call(func() error {
		if rv := r.vols[volume]; rv != nil {
			r.apply(rv, rv.d.ObserveTerm(r.now(), peer, term))
		}
		return nil
	})
}

// Status returns every volume's failover state, sorted by volume.
func (r *Runner) Status() []VolumeStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []VolumeStatus
	for _, s := range r.status {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b VolumeStatus) int { return strings.Compare(a.Volume, b.Volume) })
	return out
}

func (r *Runner) now() int64 { return time.Since(r.start).Milliseconds() }

func (r *Runner) loop() {
	defer close(r.done)
	t := time.NewTicker(r.cfg.Tick)
	defer t.Stop()
	g := r.cfg.Gossip
	r.members()
	for {
		select {
		case <-r.quit:
			return
		case <-t.C:
			for _, v := range r.names() {
				rv := r.vols[v]
				if rv.rv.Replica != nil {
					r.apply(rv, rv.d.SetLocal(r.now(), rv.rv.Replica.Local()))
					r.reconcile(rv)
				}
				r.apply(rv, rv.d.Tick(r.now()))
			}
		case _, ok := <-g.Changed():
			if !ok {
				return
			}
			r.members()
		case m, ok := <-g.Messages():
			if !ok {
				return
			}
			r.message(m)
		case f := <-r.calls:
			f()
		}
		r.publish()
	}
}

func (r *Runner) names() []string {
	var out []string
	for n := range r.vols {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// members feeds the membership to every decider and gossips this node's
// state.
func (r *Runner) members() {
	ms := r.cfg.Gossip.Members()
	for _, name := range r.names() {
		rv := r.vols[name]
		var view []MemberView
		for _, m := range ms {
			if m.Name == r.cfg.Node {
				continue
			}
			mv := MemberView{Name: m.Name, State: m.State}
			if m.MetaErr == nil {
				for i := range m.Meta.Volumes {
					if m.Meta.Volumes[i].Name == name {
						vm := m.Meta.Volumes[i]
						mv.Vol = &vm
					}
				}
			}
			view = append(view, mv)
		}
		r.apply(rv, rv.d.Members(r.now(), view))
	}
}

// message handles one gossip user message.
func (r *Runner) message(in Message) {
	m, err := DecodeMsg(in.Payload)
	if err != nil {
		r.log.Warn("ignoring a malformed failover message", "from", in.From, "err", err)
		return
	}
	rv := r.vols[m.Volume]
	if rv == nil {
		r.log.Warn("ignoring a failover message for a volume this node does not vote for", "from", in.From, "volume", m.Volume)
		return
	}
	now := r.now()
	switch m.Kind {
	case MsgVote:
		a, acts := rv.d.HandleVote(now, m.Vote)
		if r.apply(rv, acts) {
			r.send(in.From, Msg{Kind: MsgVoteAnswer, Volume: m.Volume, Vote: m.Vote, Answer: a})
		}
	case MsgLease:
		a, acts := rv.d.HandleLease(now, m.Lease)
		if r.apply(rv, acts) {
			lr := m.Lease
			lr.Outdated = nil
			r.send(in.From, Msg{Kind: MsgLeaseAnswer, Volume: m.Volume, Lease: lr, Answer: a})
		}
	case MsgVoteAnswer:
		if rv.rv.Replica != nil {
			// The answer may complete the election: decide it on the
			// replica's state now, not as of the last tick.
			r.apply(rv, rv.d.SetLocal(now, rv.rv.Replica.Local()))
		}
		if !m.Answer.Granted {
			r.log.Info("vote refused", "volume", m.Volume, "voter", in.From, "term", m.Vote.Term, "reason", m.Answer.Reason)
		}
		r.apply(rv, rv.d.VoteAnswer(now, in.From, m.Vote, m.Answer))
	case MsgLeaseAnswer:
		r.apply(rv, rv.d.LeaseAnswer(now, in.From, m.Lease, m.Answer))
	case MsgRelease:
		r.apply(rv, rv.d.HandleRelease(now, in.From, m.Lease))
	case MsgHandover:
		r.log.Info("asked to take over (planned switchover)", "volume", m.Volume, "from", in.From, "term", m.Vote.Term)
		r.apply(rv, rv.d.HandleHandover(now, in.From, m.Vote))
	}
}

// send encodes and sends a message without blocking the loop (a Send to
// an unreachable node can take memberlist's TCP timeout).
func (r *Runner) send(to string, m Msg) {
	b, err := EncodeMsg(m)
	if err != nil {
		r.log.Error("cannot encode a failover message", "to", to, "kind", m.Kind, "err", err)
		return
	}
	go func() {
		if err := r.cfg.Gossip.Send(to, b); err != nil {
			r.log.Debug("failover message not sent", "to", to, "kind", m.Kind, "err", err)
		}
	}()
}

// apply carries out a decider's actions in the documented order. It
// returns false when the state could not be stored: the answer that
// depends on it must then not be sent.
func (r *Runner) apply(rv *runVol, a Actions) bool {
	name := rv.rv.Decider.Volume
	if a.Persist != nil || rv.d.DataTerm() != rv.st.DataTerm {
		st := rv.st
		if a.Persist != nil {
			st.Voter = *a.Persist
		}
		st.DataTerm = rv.d.DataTerm()
		if err := SaveState(rv.rv.StatePath, st); err != nil {
			r.log.Error("cannot store the failover state: not answering", "volume", name, "path", rv.rv.StatePath, "err", err)
			return false
		}
		rv.st = st
	}
	rep := rv.rv.Replica
	if rep != nil && rv.d.DataTerm() != rv.termSet {
		// Before a promotion is carried out: a handshake must never see
		// the new primary with its old term.
		rv.termSet = rv.d.DataTerm()
		rep.SetTerm(rv.termSet)
	}
	if rep != nil {
		for _, p := range a.OutdateCleared {
			rep.SetOutdated(p, false)
		}
		// Before the vote requests go out: no resync may start on this
		// replica while it is a candidate.
		if e := rv.d.Electing(); e != rv.electing {
			rv.electing = e
			rep.SetElecting(e)
		}
	}
	for _, s := range a.Sends {
		m := Msg{Volume: name}
		switch {
		case s.Vote != nil:
			m.Kind, m.Vote = MsgVote, *s.Vote
		case s.Lease != nil:
			m.Kind, m.Lease = MsgLease, *s.Lease
		case s.Release != nil:
			m.Kind, m.Lease = MsgRelease, *s.Release
		case s.Handover != nil:
			m.Kind, m.Vote = MsgHandover, *s.Handover
		}
		r.send(s.To, m)
	}
	if rep != nil {
		if a.HoldWrites || a.Demote {
			rep.SetWrites(WritesHold)
		}
		if a.FailWrites {
			rep.SetWrites(WritesFail)
		}
		if a.Demote {
			if err := rep.Demote(); err != nil {
				r.log.Error("cannot demote", "volume", name, "err", err)
			}
		}
		if a.Promote != 0 {
			rv.lastTry = time.Now()
			if err := rep.Promote(a.Promote); err != nil {
				r.log.Warn("the replica refuses the promotion the failover decided; retrying", "volume", name, "term", a.Promote, "err", err)
			} else {
				r.log.Warn("promoted by automatic failover", "volume", name, "term", a.Promote, "why", a.Why)
			}
		}
		for _, p := range a.OutdateConfirmed {
			rep.SetOutdated(p, true)
		}
		if a.AcceptWrites {
			rep.SetWrites(WritesAccept)
		}
	}
	if a.Why != "" && a.Why != rv.why {
		rv.why = a.Why
		r.log.Info("failover", "volume", name, "decision", a.Why)
	}
	if a.Fence != "" {
		peer := a.Fence
		r.log.Warn("running the fence-peer handler", "volume", name, "peer", peer)
		go func() {
			ok := r.cfg.Fence != nil && r.cfg.Fence(name, peer)
			_ = r.call(func() error {
				r.apply(rv, rv.d.FenceDone(r.now(), peer, ok))
				return nil
			})
		}()
	}
	for _, h := range a.Handlers {
		if r.cfg.Handler != nil {
			go r.cfg.Handler(name, h, a.Why)
		} else {
			r.log.Info("failover handler (none configured)", "volume", name, "handler", h)
		}
	}
	return true
}

// reconcile retries a promotion the replica refused (say, its link still
// believed the dead primary alive): the decision stands, the replica
// follows once it can. At most one attempt per second.
func (r *Runner) reconcile(rv *runVol) {
	isP, _ := rv.d.Primary()
	if !isP || rv.rv.Replica.Local().Role == RolePrimary || time.Since(rv.lastTry) < time.Second {
		return
	}
	rv.lastTry = time.Now()
	term, _ := rv.d.Term()
	if err := rv.rv.Replica.Promote(term); err != nil {
		r.log.Warn("the replica refuses the promotion the failover decided; retrying", "volume", rv.rv.Decider.Volume, "term", term, "err", err)
		return
	}
	r.log.Warn("promoted by automatic failover (retry)", "volume", rv.rv.Decider.Volume, "term", term)
}

// publish refreshes the status snapshot and gossips this node's state.
func (r *Runner) publish() {
	meta := NodeMeta{Witness: r.cfg.Witness}
	r.mu.Lock()
	for _, name := range r.names() {
		rv := r.vols[name]
		term, prim := rv.d.Term()
		isP, acc := rv.d.Primary()
		q, seen := rv.d.Quorum()
		out, conf := rv.d.Outdated()
		st := VolumeStatus{Volume: name, Term: term, Primary: prim, IsPrimary: isP,
			Accepting: acc, DataTerm: rv.d.DataTerm(), Quorum: q, Seen: seen, Outdated: out, Confirmed: conf, Fenced: rv.d.Fenced(), Counted: rv.d.Counted(), Why: rv.why}
		if old, ok := r.status[name]; (!ok || !reflect.DeepEqual(old, st)) && r.cfg.Notify != nil {
			r.cfg.Notify(st)
		}
		r.status[name] = st
		if rv.rv.Replica != nil {
			l := rv.rv.Replica.Local()
			role := RoleSecondary
			if isP {
				role = RolePrimary
			}
			dt := rv.d.DataTerm()
			meta.Volumes = append(meta.Volumes, VolumeMeta{Name: name, Role: role, Disk: l.Disk,
				Term: max(term, dt), DataTerm: dt, InSync: len(l.InSyncWith) > 0})
		}
	}
	r.mu.Unlock()
	if err := r.cfg.Gossip.SetMeta(meta); err != nil {
		r.log.Error("cannot gossip this node's state", "err", err)
	}
}
