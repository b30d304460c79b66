package failover

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Policy is what a primary does with writes while it has no quorum.
type Policy uint8

const (
	// PolicySuspend holds writes until quorum returns (DRBD's default).
	PolicySuspend Policy = iota
	// PolicyFail fails them with EIO.
	PolicyFail
)

// DeciderConfig configures the decision for one volume on one node.
type DeciderConfig struct {
	Self   string
	Volume string
	// Voters: every data node of the volume and every witness (sorted or
	// not; names unique). Self is one of them.
	Voters []string
	// Witnesses: the voters that hold no data.
	Witnesses []string
	// Preferred is the node that promotes at cluster start ("" none).
	Preferred string
	// AutoPromote allows automatic promotion of this node.
	AutoPromote bool
	// Lease is the lease length; Renew how often a primary renews
	// (default Lease/3); Margin how much earlier than the voters a primary
	// counts its lease as over (default Lease/10, at least 1);
	// ElectionTimeout how long a candidate waits for votes (default
	// Lease). All in ticks.
	Lease, Renew, Margin, ElectionTimeout int64
	Policy                                Policy
	// TwoNode: two voters and no witness (config two_node = true). A node
	// that lost the other asks for the fence-peer handler (Actions.Fence)
	// and, once it succeeded (FenceDone), counts the other as gone.
	TwoNode bool
}

// MemberView is one node as the gossip layer sees it, reduced to the
// volume the decider is for.
type MemberView struct {
	Name  string
	State MemberState
	// Vol is the node's gossiped state of this volume (nil: none, e.g. a
	// witness or a node that does not report it).
	Vol *VolumeMeta
}

// Local is the local replica's state as the replication layer knows it.
type Local struct {
	Role Role
	Disk Disk
	// InSyncWith lists the peers connected and in sync right now (for a
	// secondary: the primary, when connected and Established).
	InSyncWith []string
	// PeerTerms is, for the peers of InSyncWith, the data term each one
	// announced on the current replication session (handshake or state
	// update). A secondary takes on the primary's term only once the
	// primary announced it on a live session: a session that went stale
	// in a partition still looks in sync, but the data it carried ended
	// before the new term began. nil: not reported (the terms are then
	// taken from the voters and the gossip alone, as in simulations).
	PeerTerms map[string]uint64
}

// Send is one request to send to a voter (never to Self: the decider
// asks its own voter directly).
type Send struct {
	To    string
	Vote  *VoteReq
	Lease *LeaseReq
	// Release and Handover: a planned switchover (Decider.Handover).
	Release  *LeaseReq
	Handover *VoteReq
}

// Actions is what one call asks the caller to do, in this order: store
// Persist (if set) durably, apply OutdateCleared, send Sends, then apply
// the role and I/O changes and OutdateConfirmed, then run Handlers.
type Actions struct {
	Persist *VoterRecord
	Sends   []Send
	// Promote: become primary for this term (attach the device). Writes
	// stay held until AcceptWrites.
	Promote uint64
	// Demote: stop being primary at once (a newer term exists).
	Demote bool
	// AcceptWrites / HoldWrites / FailWrites change whether the primary
	// acknowledges writes (HoldWrites: suspend, FailWrites: EIO).
	AcceptWrites, HoldWrites, FailWrites bool
	// OutdateConfirmed lists peers a majority now records as outdated:
	// the primary may acknowledge writes those peers lack.
	OutdateConfirmed []string
	// OutdateCleared lists peers back in sync: from now on a write they
	// miss needs a new confirmation. Apply it before Sends (the lease
	// request that un-outdates them at the voters is among them).
	OutdateCleared []string
	// Handlers to run ("after-promote", "before-demote", "quorum-lost").
	Handlers []string
	// Fence: run the fence-peer handler against this peer and report the
	// outcome with FenceDone (TwoNode only).
	Fence string
	// Why explains the decision in one line for status and logs.
	Why string
}

func (a *Actions) merge(b Actions) {
	if b.Persist != nil {
		a.Persist = b.Persist
	}
	a.Sends = append(a.Sends, b.Sends...)
	a.Promote = max(a.Promote, b.Promote)
	a.Demote = a.Demote || b.Demote
	a.AcceptWrites = a.AcceptWrites || b.AcceptWrites
	a.HoldWrites = a.HoldWrites || b.HoldWrites
	a.FailWrites = a.FailWrites || b.FailWrites
	a.OutdateConfirmed = append(a.OutdateConfirmed, b.OutdateConfirmed...)
	a.OutdateCleared = append(a.OutdateCleared, b.OutdateCleared...)
	a.Handlers = append(a.Handlers, b.Handlers...)
	if b.Fence != "" {
		a.Fence = b.Fence
	}
	if b.Why != "" {
		a.Why = b.Why
	}
}

type phase uint8

const (
	phaseSecondary phase = iota
	phaseCandidate
	phasePrimary
)

// Decider is the promotion decision of docs/failover.md for one volume on
// one node: pure (no clock, no I/O, no goroutine), driven by the calls
// below, each returning Actions. Not safe for concurrent use.
type Decider struct {
	cfg   DeciderConfig
	voter *Voter

	members map[string]MemberView
	local   Local

	phase    phase
	term     uint64 // highest term known
	dataTerm uint64 // the term whose acknowledged writes this replica holds
	lastPrim string // primary of the newest term known to have had one

	// candidate
	electTerm  uint64
	electStart int64
	grants     map[string]bool
	refused    map[string]int64  // voter -> its retry hint (0 none)
	reasons    map[string]string // voter -> why it refused
	backoff    int64

	// planned switchover: the node this one handed over to, and until
	// when it does not elect itself; on the node asked to take over, who
	// asked and until when the request holds.
	handoverTo    string
	quietUntil    int64
	handoverFrom  string
	handoverUntil int64

	// operator requests: blkrep primary (an election may start here
	// until manualUntil, regardless of auto_promote and preferred) and
	// blkrep secondary (no election here until the next request or a
	// new primary).
	manualUntil int64
	stepDown    bool

	// two nodes: peers the fence-peer handler fenced (they do not count
	// until they are back), the one being fenced, no new attempt before
	// fenceAfter.
	fenced     map[string]bool
	fencing    string
	fenceAfter int64

	// primary
	pterm      uint64 // term this node is primary in
	seq        uint64
	granted    map[string]int64  // voter -> send tick of the newest granted lease request
	seqSent    map[uint64]int64  // lease seq -> tick it was handed out (the last 64)
	outdated   []string          // sorted
	outdateSeq map[string]uint64 // peer -> first lease seq that carried it
	confirmed  map[string]bool   // outdate confirmed by a majority
	grantSeq   map[string]uint64 // voter -> newest granted seq
	lastRenew  int64
	accepting  bool
	lostQuorum bool // held writes for lack of quorum since the last time it accepted
	now        int64
}

// NewDecider starts the decision at tick now from the stored voter
// record and the data term this replica holds (stored with its
// metadata; 0 when unknown: such a node never promotes automatically
// until it has been in sync with a primary).
func NewDecider(cfg DeciderConfig, rec VoterRecord, dataTerm uint64, now int64) (*Decider, error) {
	if cfg.Self == "" || !slices.Contains(cfg.Voters, cfg.Self) {
		return nil, fmt.Errorf("failover: node %q is not one of the voters %v", cfg.Self, cfg.Voters)
	}
	if cfg.Lease <= 0 {
		return nil, fmt.Errorf("failover: lease must be > 0")
	}
	if cfg.Renew <= 0 {
		cfg.Renew = max(cfg.Lease/3, 1)
	}
	if cfg.Margin <= 0 {
		cfg.Margin = max(cfg.Lease/10, 1)
	}
	if cfg.ElectionTimeout <= 0 {
		cfg.ElectionTimeout = cfg.Lease
	}
	if cfg.Renew >= cfg.Lease-cfg.Margin {
		return nil, fmt.Errorf("failover: renew interval %d must be shorter than the lease %d minus its margin %d", cfg.Renew, cfg.Lease, cfg.Margin)
	}
	if cfg.TwoNode && (len(cfg.Voters) != 2 || len(cfg.Witnesses) != 0) {
		return nil, fmt.Errorf("failover: two-node mode needs exactly two voters and no witness, not %v", cfg.Voters)
	}
	d := &Decider{cfg: cfg, voter: NewVoter(rec, cfg.Lease, now), members: map[string]MemberView{}, fenced: map[string]bool{},
		term: rec.Term, dataTerm: dataTerm, lastPrim: rec.Primary, now: now}
	return d, nil
}

func (d *Decider) witness(n string) bool { return slices.Contains(d.cfg.Witnesses, n) }

// counted: the voters that count for quorum (not the ones that left
// gracefully).
func (d *Decider) counted() []string {
	var out []string
	for _, v := range d.cfg.Voters {
		if m, ok := d.members[v]; ok && m.State == StateLeft && v != d.cfg.Self {
			continue
		}
		if d.fenced[v] {
			continue
		}
		out = append(out, v)
	}
	return out
}

func (d *Decider) majority(set func(string) bool) (ok bool, withData bool) {
	vs := d.counted()
	n := 0
	for _, v := range vs {
		if set(v) {
			n++
			if v != d.cfg.Self && !d.witness(v) {
				withData = true
			}
		}
	}
	return 2*n > len(vs), withData
}

func (d *Decider) alive(n string) bool {
	if n == d.cfg.Self {
		return true
	}
	m, ok := d.members[n]
	return ok && m.State == StateAlive
}

// Term returns the highest term known and the primary of the newest term
// known to have had one.
func (d *Decider) Term() (uint64, string) { return d.term, d.lastPrim }

// Electing reports whether this node runs an election now (a candidate
// waiting for votes).
func (d *Decider) Electing() bool { return d.phase == phaseCandidate }

// Primary reports whether this node is primary, and whether it may
// acknowledge writes now.
func (d *Decider) Primary() (primary, accepting bool) {
	return d.phase == phasePrimary, d.phase == phasePrimary && d.accepting
}

// Quorum reports whether this node sees a majority of the voters that
// count (itself included), and which voters it sees alive.
func (d *Decider) Quorum() (bool, []string) {
	var seen []string
	for _, v := range d.counted() {
		if d.alive(v) {
			seen = append(seen, v)
		}
	}
	ok, _ := d.majority(d.alive)
	return ok, seen
}

// Counted returns the voters that count for quorum now: all but those
// that left gracefully and those fenced (two-node mode).
func (d *Decider) Counted() []string { return d.counted() }

// Outdated returns, on a primary, the peers it declared out of sync and
// which of them a majority has recorded so far.
func (d *Decider) Outdated() (all, confirmed []string) {
	if d.phase != phasePrimary {
		return nil, nil
	}
	for _, p := range d.outdated {
		all = append(all, p)
		if d.confirmed[p] {
			confirmed = append(confirmed, p)
		}
	}
	return all, confirmed
}

// DataTerm returns the term whose acknowledged writes this replica holds
// (store it with the replica's metadata when it changes).
func (d *Decider) DataTerm() uint64 { return d.dataTerm }

// Members replaces the membership view.
func (d *Decider) Members(now int64, view []MemberView) Actions {
	d.members = map[string]MemberView{}
	for _, m := range view {
		d.members[m.Name] = m
		if m.Vol != nil {
			d.learn(m.Vol.Term, "")
			if m.Vol.Role == RolePrimary && m.Vol.Term >= d.term {
				d.lastPrim = m.Name
				d.stepDown = d.stepDown && m.Name == d.cfg.Self // another primary ends an operator's step down
			}
		}
	}
	return d.step(now)
}

// SetLocal reports the local replica's state.
func (d *Decider) SetLocal(now int64, l Local) Actions {
	d.local = l
	d.local.InSyncWith = slices.Clone(l.InSyncWith)
	d.local.PeerTerms = maps.Clone(l.PeerTerms)
	return d.step(now)
}

// Tick is the passage of time.
func (d *Decider) Tick(now int64) Actions { return d.step(now) }

// learn records a term heard of; a newer term than this node's own
// primary term ends its primacy.
func (d *Decider) learn(term uint64, primary string) {
	if term > d.term {
		d.term = term
	}
	if primary != "" {
		d.lastPrim = primary
		d.stepDown = d.stepDown && primary == d.cfg.Self
	}
}

// stored is the voter record to persist when changed (nil otherwise).
func (d *Decider) stored(changed bool) *VoterRecord {
	if !changed {
		return nil
	}
	r := d.voter.Record()
	return &r
}

// HandleVote answers a vote request from another node (the caller
// stores Actions.Persist before sending the answer).
func (d *Decider) HandleVote(now int64, req VoteReq) (Answer, Actions) {
	a, changed := d.voter.Vote(req, now)
	var acts Actions
	acts.Persist = d.stored(changed)
	if a.Granted {
		// A refused election leaves every term as it was: a primary whose
		// voter refused a candidate must not step down for its term
		// (found by the netns torture test: a node cut off for a few
		// seconds, whose vote request arrived after the heal, demoted the
		// healthy primary).
		d.learn(req.Term, "")
	}
	acts.merge(d.step(now))
	return a, acts
}

// HandleLease answers a lease request from a primary.
func (d *Decider) HandleLease(now int64, req LeaseReq) (Answer, Actions) {
	a, changed := d.voter.Lease(req, now)
	var acts Actions
	acts.Persist = d.stored(changed)
	if a.Granted {
		d.learn(req.Term, req.Primary)
	}
	acts.merge(d.step(now))
	return a, acts
}

// VoteAnswer handles a voter's answer to this node's vote request.
func (d *Decider) VoteAnswer(now int64, from string, req VoteReq, a Answer) Actions {
	d.learn(a.Term, "")
	if d.phase == phaseCandidate && req.Term == d.electTerm && req.Candidate == d.cfg.Self {
		if a.Granted {
			d.grants[from] = true
		} else {
			d.refused[from] = a.Retry
			d.reasons[from] = a.Reason
		}
	}
	return d.step(now)
}

// LeaseAnswer handles a voter's answer to this node's lease request. The
// lease counts from when the decider handed the request out (it keeps
// the tick of its recent requests), never from the answer's arrival.
func (d *Decider) LeaseAnswer(now int64, from string, req LeaseReq, a Answer) Actions {
	d.learn(a.Term, "")
	sentAt, known := d.seqSent[req.Seq]
	if a.Granted && known && d.phase == phasePrimary && req.Term == d.pterm && req.Primary == d.cfg.Self {
		if sentAt > d.granted[from] {
			d.granted[from] = sentAt
		}
		if req.Seq > d.grantSeq[from] {
			d.grantSeq[from] = req.Seq
		}
	}
	return d.step(now)
}

// step re-evaluates everything at now.
func (d *Decider) step(now int64) Actions {
	if now > d.now {
		d.now = now
	}
	var a Actions
	d.unfence()
	switch d.phase {
	case phaseSecondary:
		d.trackData()
		a.merge(d.maybeElect())
	case phaseCandidate:
		a.merge(d.candidate())
	case phasePrimary:
		a.merge(d.primary())
	}
	return a
}

// trackData: a secondary in sync with the primary of the newest term
// holds that term's data.
func (d *Decider) trackData() {
	p := d.lastPrim
	if p == "" || p == d.cfg.Self || !slices.Contains(d.local.InSyncWith, p) || d.local.Disk != DiskUpToDate {
		return
	}
	// The primary's term: from its own lease request to this node's voter
	// (authoritative, and there before gossip spreads its metadata), or
	// from its gossiped state.
	t := uint64(0)
	if rec := d.voter.Record(); rec.Primary == p {
		t = rec.PrimaryTerm
	}
	if m, ok := d.members[p]; ok && m.Vol != nil && m.Vol.Role == RolePrimary {
		t = max(t, m.Vol.Term)
	}
	if d.local.PeerTerms != nil {
		t = min(t, d.local.PeerTerms[p])
	}
	if t > d.dataTerm {
		d.dataTerm = t
	}
}

// why a secondary does not start an election now ("" when it may).
func (d *Decider) blocked() string {
	switch {
	case d.stepDown:
		return "demoted by the operator (blkrep secondary): 'blkrep primary' or 'blkrep failover' ends it"
	case !d.cfg.AutoPromote && !d.manualNow():
		return "automatic promotion is off"
	case d.witness(d.cfg.Self):
		return "a witness never promotes"
	case d.local.Role == RolePrimary:
		return "already primary"
	case d.local.Disk != DiskUpToDate:
		return fmt.Sprintf("the local disk is %s, not UpToDate", d.local.Disk)
	}
	if d.now < d.quietUntil {
		return fmt.Sprintf("handed over to %s: not electing itself", d.handoverTo)
	}
	handover := d.handoverFrom != "" && d.now < d.handoverUntil && d.lastPrim == d.handoverFrom
	for _, m := range d.members {
		if m.Name != d.cfg.Self && m.State == StateAlive && m.Vol != nil && m.Vol.Role == RolePrimary &&
			!(handover && m.Name == d.handoverFrom) {
			return fmt.Sprintf("%s is primary", m.Name)
		}
	}
	if ok, _ := d.majority(d.alive); !ok {
		return "no quorum: this node sees no majority of the voters"
	}
	p := d.lastPrim
	if p == "" || p == d.cfg.Self {
		// Cluster start: no primary known anywhere, or this node was the
		// last primary (it restarted, or stepped down for a newer term).
		// The last primary need not wait for the preferred node: that
		// one may be waiting for it (found by internal/torture).
		wasPrimary := p == d.cfg.Self || p == "" && d.voter.Record().Primary == d.cfg.Self
		if d.cfg.Preferred != d.cfg.Self && !d.manualNow() && !wasPrimary && !d.outranksPreferred() {
			return "no primary yet and this node is not the preferred one"
		}
		// A higher term without a primary (an election that found no
		// majority) does not make this node's data old: the voters refuse
		// a candidate whose data is older than the last primary's (found
		// by internal/torture: a primary back from a crash after such an
		// election waited for ever, and the others waited for it).
		if d.dataTerm < d.term && d.dataTerm < d.voter.Record().PrimaryTerm {
			return fmt.Sprintf("the data here is of term %d, the cluster is at term %d", d.dataTerm, d.term)
		}
		return ""
	}
	// The primary is gone when the gossip declares it dead (or it left),
	// or when it is suspect and has not renewed its lease at this node's
	// voter for a whole lease: it stopped acknowledging writes by then
	// unless a majority without this node still renews it, and then the
	// others refuse the vote (docs/failover.md, "When the primary is gone").
	leasePrim, leaseRuns := d.voter.LeaseRunning(d.now)
	// Asked by the operator (blkrep primary): a primary that stepped down
	// (alive, no longer claiming the role, its lease released) is no
	// obstacle; the voters still decide.
	stepped := d.manualNow() && p != d.cfg.Self
	if m, ok := d.members[p]; ok && stepped {
		stepped = m.State == StateAlive && m.Vol != nil && m.Vol.Role != RolePrimary
	}
	if m, ok := d.members[p]; ok && m.State != StateDead && m.State != StateLeft && !handover && !stepped {
		if m.State != StateSuspect || (leaseRuns && leasePrim == p) {
			return fmt.Sprintf("primary %s is %s, not dead", p, m.State)
		}
	}
	if leaseRuns {
		return fmt.Sprintf("the lease this node granted to %s runs %d ms more", leasePrim, d.voter.LeaseLeft(d.now))
	}
	if d.dataTerm < d.term && d.dataTerm < d.voter.Record().PrimaryTerm {
		return fmt.Sprintf("this node was not in sync with the primary of term %d", d.term)
	}
	return ""
}

// outranksPreferred: after a primary existed (a term above 0), a node
// that is not the preferred one need not wait for it when the preferred
// node cannot promote: it is not alive, or it gossips data of an older
// term than this node's. Without it, a cluster whose last primary (not
// the preferred node) restarts after the others stays without a primary
// for ever (found by internal/torture). The voters still decide.
func (d *Decider) outranksPreferred() bool {
	if d.dataTerm == 0 {
		return false // a first start: the preferred node promotes
	}
	m, ok := d.members[d.cfg.Preferred]
	if !ok || m.State != StateAlive || m.Vol == nil {
		return true
	}
	return m.Vol.DataTerm < d.dataTerm
}

func (d *Decider) maybeElect() Actions {
	why := d.blocked()
	if why != "" && d.cfg.TwoNode && d.fencing == "" && d.now >= d.fenceAfter && !d.witness(d.cfg.Self) {
		// Would this node elect itself if the other one were fenced?
		o := d.other()
		if o != "" && !d.fenced[o] && !d.alive(o) {
			d.fenced[o] = true
			hyp := d.blocked()
			delete(d.fenced, o)
			if hyp == "" {
				d.fencing = o
				return Actions{Fence: o, Why: fmt.Sprintf("two nodes: %s is gone; running the fence-peer handler against it", o)}
			}
		}
	}
	if d.fencing != "" {
		return Actions{Why: fmt.Sprintf("waiting for the fence-peer handler against %s", d.fencing)}
	}
	if why != "" {
		return Actions{Why: why}
	}
	if d.backoff > d.now {
		return Actions{Why: "waiting before the next election"}
	}
	// The candidate's term is not adopted (nor gossiped) until a voter
	// records it: a refused election leaves every term as it was, so a
	// node that wrongly believes the primary gone cannot depose it
	// (Raft's pre-vote, obtained here from the leases).
	d.phase = phaseCandidate
	d.electTerm = d.term + 1
	d.electStart = d.now
	d.grants, d.refused, d.reasons = map[string]bool{}, map[string]int64{}, map[string]string{}
	req := VoteReq{Term: d.electTerm, Candidate: d.cfg.Self, DataTerm: d.dataTerm}
	var a Actions
	for _, v := range d.cfg.Voters {
		if v != d.cfg.Self {
			a.Sends = append(a.Sends, Send{To: v, Vote: &req})
		}
	}
	a.Why = fmt.Sprintf("the primary is gone: election for term %d", d.electTerm)
	if d.handoverFrom != "" && d.now < d.handoverUntil {
		a.Why = fmt.Sprintf("%s hands over: election for term %d", d.handoverFrom, d.electTerm)
	}
	a.merge(d.candidate())
	return a
}

func (d *Decider) candidate() Actions {
	if d.term > d.electTerm {
		d.phase = phaseSecondary
		return Actions{Why: fmt.Sprintf("term %d is newer than the election's term %d", d.term, d.electTerm)}
	}
	self := d.cfg.Self
	if ok, _ := d.majority(func(v string) bool { return d.grants[v] || v == self }); ok {
		if d.local.Disk != DiskUpToDate {
			// The replica stopped being UpToDate during the election (a
			// returning peer made it a resync target): winning now would
			// record a data term its data does not hold, and the replica
			// would refuse the promotion anyway. Nothing is stored; the
			// voters hold no lease for it (found by internal/torture).
			d.phase = phaseSecondary
			d.backoff = d.now + d.retryAfter(0)
			return Actions{Why: fmt.Sprintf("election for term %d won, but the local disk became %s meanwhile: not promoting", d.electTerm, d.local.Disk)}
		}
		// A majority with this node's own vote: record that vote (it is
		// stored before the promotion is carried out) and promote.
		var a Actions
		ans, changed := d.voter.Vote(VoteReq{Term: d.electTerm, Candidate: self, DataTerm: d.dataTerm}, d.now)
		a.Persist = d.stored(changed)
		if !ans.Granted {
			d.phase = phaseSecondary
			d.backoff = d.now + d.retryAfter(ans.Retry)
			a.Why = fmt.Sprintf("election for term %d: this node's own voter refuses: %s", d.electTerm, ans.Reason)
			return a
		}
		d.learn(d.electTerm, "")
		d.handoverFrom, d.handoverTo, d.quietUntil, d.manualUntil, d.stepDown = "", "", 0, 0, false
		d.phase = phasePrimary
		d.pterm, d.dataTerm, d.lastPrim = d.electTerm, d.electTerm, self
		d.seq, d.granted, d.seqSent, d.grantSeq = 0, map[string]int64{}, map[uint64]int64{}, map[string]uint64{}
		d.outdated, d.outdateSeq, d.confirmed = nil, map[string]uint64{}, map[string]bool{}
		d.accepting, d.lostQuorum = false, false
		a.merge(Actions{Promote: d.electTerm, HoldWrites: true, Handlers: []string{"after-promote"},
			Why: fmt.Sprintf("elected for term %d", d.electTerm)})
		a.merge(d.renew())
		a.merge(d.primary())
		return a
	}
	// Every voter that could still grant, this node included: when they
	// are no majority, the election is over now rather than at its
	// timeout.
	possible, _ := d.majority(func(v string) bool { _, no := d.refused[v]; return !no })
	if !possible || d.now-d.electStart >= d.cfg.ElectionTimeout {
		d.phase = phaseSecondary
		var wait int64
		for _, r := range d.refused {
			wait = max(wait, r)
		}
		d.backoff = d.now + d.retryAfter(wait)
		if wait > 0 && d.handoverFrom != "" && d.now < d.handoverUntil {
			// Taking over on request: the old primary's release of its
			// lease is on its way to the voters that refused (messages
			// may overtake each other); ask again soon.
			d.backoff = d.now + max(d.cfg.ElectionTimeout/30, 1)
		}
		why := fmt.Sprintf("election for term %d got no majority", d.electTerm)
		var rs []string
		for _, v := range d.cfg.Voters {
			if r, ok := d.reasons[v]; ok {
				rs = append(rs, v+": "+r)
			}
		}
		if len(rs) > 0 {
			why += " (" + strings.Join(rs, "; ") + ")"
		}
		return Actions{Why: why}
	}
	return Actions{}
}

// retryAfter is how long a candidate waits before its next election:
// just past the longest lease a refusing voter reported still running,
// or (no such hint) half an election timeout, longer for nodes later in
// the voter list so that two candidates do not keep splitting the vote.
func (d *Decider) retryAfter(lease int64) int64 {
	idx := int64(slices.Index(d.cfg.Voters, d.cfg.Self) % 4)
	if lease > 0 {
		return lease + 1 + idx*max(d.cfg.Margin/4, 1)
	}
	return d.cfg.ElectionTimeout / 2 * (1 + idx)
}

func (d *Decider) renew() Actions {
	d.seq++
	d.lastRenew = d.now
	d.seqSent[d.seq] = d.now
	delete(d.seqSent, d.seq-64) // answers this late no longer matter
	req := LeaseReq{Term: d.pterm, Primary: d.cfg.Self, Seq: d.seq, Outdated: slices.Clone(d.outdated)}
	var a Actions
	ans, changed := d.voter.Lease(req, d.now)
	a.Persist = d.stored(changed)
	if ans.Granted {
		d.granted[d.cfg.Self] = d.now
		d.grantSeq[d.cfg.Self] = d.seq
	} else {
		d.learn(ans.Term, "")
	}
	for _, v := range d.cfg.Voters {
		if v != d.cfg.Self {
			a.Sends = append(a.Sends, Send{To: v, Lease: &req})
		}
	}
	return a
}

func (d *Decider) primary() Actions {
	var a Actions
	if d.term > d.pterm {
		d.phase = phaseSecondary
		d.accepting = false
		return Actions{Demote: true, HoldWrites: true, Handlers: []string{"before-demote"},
			Why: fmt.Sprintf("term %d is newer than this primary's term %d: demoting", d.term, d.pterm)}
	}
	// Peers no longer in sync are outdated at the next renewal (now).
	changed := false
	for _, v := range d.cfg.Voters {
		if v == d.cfg.Self || d.witness(v) {
			continue
		}
		in := slices.Contains(d.local.InSyncWith, v)
		has := slices.Contains(d.outdated, v)
		if !in && !has {
			d.outdated = append(d.outdated, v)
			slices.Sort(d.outdated)
			d.outdateSeq[v] = d.seq + 1
			changed = true
			a.Why = fmt.Sprintf("%s is not in sync: outdating it at the voters", v)
		} else if in && has {
			d.outdated = slices.DeleteFunc(d.outdated, func(s string) bool { return s == v })
			delete(d.outdateSeq, v)
			if d.confirmed[v] {
				a.OutdateCleared = append(a.OutdateCleared, v)
			}
			delete(d.confirmed, v)
			changed = true
			a.Why = fmt.Sprintf("%s is in sync again", v)
		}
	}
	if changed || d.now-d.lastRenew >= d.cfg.Renew {
		a.merge(d.renew())
	}
	valid := func(v string) bool {
		t, ok := d.granted[v]
		return ok && t+d.cfg.Lease-d.cfg.Margin > d.now
	}
	for _, p := range d.outdated {
		if d.confirmed[p] {
			continue
		}
		s := d.outdateSeq[p]
		if ok, _ := d.majority(func(v string) bool { return valid(v) && d.grantSeq[v] >= s }); ok {
			d.confirmed[p] = true
			a.OutdateConfirmed = append(a.OutdateConfirmed, p)
		}
	}
	ok, withData := d.majority(valid)
	if !ok && d.cfg.TwoNode && d.fencing == "" && d.now >= d.fenceAfter {
		if o := d.other(); o != "" && !d.fenced[o] && !d.alive(o) && !valid(o) {
			d.fencing = o
			a.Fence = o
			a.Why = fmt.Sprintf("two nodes: %s is gone and this primary has no majority lease; running the fence-peer handler against it", o)
		}
	}
	switch {
	case ok && !d.accepting && (!d.lostQuorum || withData || len(d.fenced) > 0):
		d.accepting, d.lostQuorum = true, false
		a.AcceptWrites = true
		a.Why = fmt.Sprintf("primary of term %d with a majority lease", d.pterm)
	case ok && !d.accepting:
		a.Why = "quorum lost earlier: waiting for another data node, not only witnesses"
	case !ok && d.accepting:
		d.accepting, d.lostQuorum = false, true
		if d.cfg.Policy == PolicyFail {
			a.FailWrites = true
		} else {
			a.HoldWrites = true
		}
		a.Handlers = append(a.Handlers, "quorum-lost")
		a.Why = fmt.Sprintf("primary of term %d lost its majority lease: writes %s", d.pterm,
			map[Policy]string{PolicySuspend: "held", PolicyFail: "failed"}[d.cfg.Policy])
	}
	return a
}

// Handover starts a planned switchover on the primary: it stops
// acknowledging writes and steps down at once, ends its lease at every
// voter and asks to (or, when to is "", the first voter in sync with it)
// to start an election now. The caller makes sure, before, that no write
// is in flight and that to holds every write this primary acknowledged
// (docs/failover.md, "Planned switchover"). It returns the node asked.
func (d *Decider) Handover(now int64, to string) (string, Actions, error) {
	d.now = max(d.now, now)
	to, err := d.HandoverTarget(to)
	if err != nil {
		return "", Actions{}, err
	}
	rel := LeaseReq{Term: d.pterm, Primary: d.cfg.Self, Seq: d.seq}
	d.voter.Release(rel, d.now)
	d.phase, d.accepting = phaseSecondary, false
	d.handoverTo, d.quietUntil = to, d.now+2*d.cfg.ElectionTimeout
	a := Actions{Demote: true, HoldWrites: true,
		Why: fmt.Sprintf("planned switchover: handing term %d over to %s", d.pterm, to)}
	for _, v := range d.cfg.Voters {
		if v != d.cfg.Self {
			a.Sends = append(a.Sends, Send{To: v, Release: &rel})
		}
	}
	a.Sends = append(a.Sends, Send{To: to, Handover: &VoteReq{Term: d.pterm, Candidate: to, DataTerm: d.pterm}})
	return to, a, nil
}

// HandoverTarget checks that this node, the primary, could hand over to
// to now ("" picks the first voter in sync) and returns that node; it
// changes nothing.
func (d *Decider) HandoverTarget(to string) (string, error) {
	if d.phase != phasePrimary {
		return "", fmt.Errorf("failover: %s is not the primary of %s", d.cfg.Self, d.cfg.Volume)
	}
	if to == "" {
		for _, v := range d.cfg.Voters {
			if v != d.cfg.Self && !d.witness(v) && d.alive(v) && slices.Contains(d.local.InSyncWith, v) {
				to = v
				break
			}
		}
		if to == "" {
			return "", fmt.Errorf("failover: no data node of %s is alive and in sync with %s", d.cfg.Volume, d.cfg.Self)
		}
	}
	switch {
	case to == d.cfg.Self:
		return "", fmt.Errorf("failover: %s is already the primary of %s", to, d.cfg.Volume)
	case !slices.Contains(d.cfg.Voters, to) || d.witness(to):
		return "", fmt.Errorf("failover: %s holds no replica of %s", to, d.cfg.Volume)
	case !d.alive(to):
		return "", fmt.Errorf("failover: %s is not alive", to)
	case !slices.Contains(d.local.InSyncWith, to) || slices.Contains(d.outdated, to):
		return "", fmt.Errorf("failover: %s is not connected and in sync with %s", to, d.cfg.Self)
	}
	if ok, _ := d.majority(d.alive); !ok {
		return "", fmt.Errorf("failover: %s sees no majority of the voters: the switchover could not elect %s", d.cfg.Self, to)
	}
	return to, nil
}

func (d *Decider) manualNow() bool { return d.now < d.manualUntil }

// RequestPrimary is 'blkrep primary' under failover: an election for this
// node starts now, whatever auto_promote and preferred say, but only when
// no live node is primary, and the voters decide as for any election
// (quorum, data in sync, nobody outdated). The request holds for one
// election timeout; Status' Why tells the outcome.
func (d *Decider) RequestPrimary(now int64) (Actions, error) {
	d.now = max(d.now, now)
	switch {
	case d.phase == phasePrimary:
		return Actions{}, fmt.Errorf("failover: %s is already the primary of %s (term %d)", d.cfg.Self, d.cfg.Volume, d.pterm)
	case d.witness(d.cfg.Self):
		return Actions{}, fmt.Errorf("failover: %s is a witness: it holds no data", d.cfg.Self)
	}
	for _, m := range d.members {
		if m.Name != d.cfg.Self && m.State == StateAlive && m.Vol != nil && m.Vol.Role == RolePrimary {
			return Actions{}, fmt.Errorf("failover: %s is the primary of %s: run 'blkrep failover %s --to %s' on %s", m.Name, d.cfg.Volume, d.cfg.Volume, d.cfg.Self, m.Name)
		}
	}
	if p, runs := d.voter.LeaseRunning(d.now); runs && p != d.cfg.Self && d.alive(p) {
		return Actions{}, fmt.Errorf("failover: %s is the primary of %s (term %d; its lease runs here): run 'blkrep failover %s --to %s' on %s",
			p, d.cfg.Volume, d.voter.Record().PrimaryTerm, d.cfg.Volume, d.cfg.Self, p)
	}
	manualUntil, stepDown, quietUntil := d.manualUntil, d.stepDown, d.quietUntil
	d.manualUntil, d.stepDown, d.quietUntil = d.now+d.cfg.ElectionTimeout, false, 0
	if why := d.blocked(); why != "" && !strings.HasPrefix(why, "the lease this node granted") {
		// Refused now, with the reason, rather than after a wait.
		d.manualUntil, d.stepDown, d.quietUntil = manualUntil, stepDown, quietUntil
		return Actions{}, fmt.Errorf("failover: %s cannot be elected now: %s", d.cfg.Self, why)
	}
	d.backoff = 0
	return d.step(now), nil
}

// RequestSecondary is 'blkrep secondary' under failover, on the primary:
// it stops acknowledging, steps down and ends its lease at every voter;
// no node is promoted while this one stays alive (it is still the
// primary the others last knew), and this node does not elect itself
// until 'blkrep primary' or 'blkrep failover'. The caller makes sure no
// client still writes.
func (d *Decider) RequestSecondary(now int64) (Actions, error) {
	d.now = max(d.now, now)
	if d.phase != phasePrimary {
		return Actions{}, fmt.Errorf("failover: %s is not the primary of %s", d.cfg.Self, d.cfg.Volume)
	}
	rel := LeaseReq{Term: d.pterm, Primary: d.cfg.Self, Seq: d.seq}
	d.voter.Release(rel, d.now)
	d.phase, d.accepting, d.stepDown, d.manualUntil = phaseSecondary, false, true, 0
	a := Actions{Demote: true, HoldWrites: true,
		Why: fmt.Sprintf("stepped down by the operator (term %d): no primary until 'blkrep primary' or 'blkrep failover'", d.pterm)}
	for _, v := range d.cfg.Voters {
		if v != d.cfg.Self {
			a.Sends = append(a.Sends, Send{To: v, Release: &rel})
		}
	}
	return a, nil
}

// ObserveTerm reports the data term a peer announced in the replication
// handshake: a term newer than this node knows is learned (a primary of
// an older term then demotes at once).
func (d *Decider) ObserveTerm(now int64, peer string, term uint64) Actions {
	if term > d.term {
		d.learn(term, "")
	}
	a := d.step(now)
	return a
}

// HandleRelease ends the lease the primary of req.Term holds at this
// node's voter (from: the sender, which must be that primary).
func (d *Decider) HandleRelease(now int64, from string, req LeaseReq) Actions {
	if from == req.Primary && from != d.cfg.Self {
		d.voter.Release(req, now)
	}
	return d.step(now)
}

// HandleHandover handles a primary's request that this node take over
// (planned switchover): it starts an election at once, without waiting
// for the primary to be gone, as long as the usual conditions hold.
func (d *Decider) HandleHandover(now int64, from string, req VoteReq) Actions {
	d.now = max(d.now, now)
	if d.phase == phaseSecondary && req.Candidate == d.cfg.Self && from != d.cfg.Self && from == d.lastPrim && req.Term >= d.term {
		d.handoverFrom, d.handoverUntil, d.backoff, d.stepDown, d.quietUntil = from, d.now+2*d.cfg.ElectionTimeout, 0, false, 0
		// The request comes from the lease holder, which stepped down
		// before sending it: it ends its lease here as its release would
		// (that message may still be on its way).
		d.voter.Release(LeaseReq{Term: req.Term, Primary: from}, d.now)
	}
	return d.step(now)
}

// other is, with two nodes, the other voter.
func (d *Decider) other() string {
	for _, v := range d.cfg.Voters {
		if v != d.cfg.Self {
			return v
		}
	}
	return ""
}

// unfence counts a fenced peer again once it is back: alive, and on a
// primary also granting its lease again (so that quorum never blinks).
func (d *Decider) unfence() {
	for p := range d.fenced {
		if !d.alive(p) {
			continue
		}
		if d.phase == phasePrimary {
			t, ok := d.granted[p]
			if !ok || t+d.cfg.Lease-d.cfg.Margin <= d.now {
				continue
			}
		}
		delete(d.fenced, p)
	}
}

// FenceDone reports the outcome of the fence-peer handler run for
// Actions.Fence: ok when it proved the peer outdated or powered off
// (exit 3, 4 or 7). A failure is retried after an election timeout.
func (d *Decider) FenceDone(now int64, peer string, ok bool) Actions {
	d.now = max(d.now, now)
	if d.fencing != peer {
		return d.step(now)
	}
	d.fencing = ""
	if ok {
		d.fenced[peer] = true
	} else {
		d.fenceAfter = d.now + d.cfg.ElectionTimeout
	}
	a := d.step(now)
	if a.Why == "" {
		a.Why = map[bool]string{true: "the fence-peer handler fenced " + peer, false: "the fence-peer handler failed against " + peer}[ok]
	}
	return a
}

// Fenced returns the peers fenced by the fence-peer handler that do not
// count for quorum until they are back.
func (d *Decider) Fenced() []string {
	var out []string
	for p := range d.fenced {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// OutdateConfirmed reports whether a majority records peer as outdated
// by this primary: the replication layer may then acknowledge writes that
// peer lacks (docs/failover.md, "The outdate step").
func (d *Decider) OutdateConfirmed(peer string) bool {
	return d.phase == phasePrimary && d.confirmed[peer]
}
