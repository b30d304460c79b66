package failover

import (
	"fmt"
	"slices"
)

// VoterRecord is what a voter keeps for one volume. The caller makes it
// durable before it sends the answer that changed it (docs/failover.md).
type VoterRecord struct {
	// Term is the highest term this voter has seen.
	Term uint64 `json:"term"`
	// VotedFor is the candidate granted in Term ("" if none).
	VotedFor string `json:"voted_for"`
	// Primary is the node last granted a lease, in PrimaryTerm: the
	// newest term known to have had a primary.
	Primary     string `json:"primary"`
	PrimaryTerm uint64 `json:"primary_term"`
	// LeaseSeq is the sequence number of the newest lease request granted
	// to Primary in PrimaryTerm: an older one arriving late is refused, so
	// it cannot undo a later Outdated set.
	LeaseSeq uint64 `json:"lease_seq"`
	// Outdated lists the data nodes Primary declared out of sync in
	// PrimaryTerm (sorted): they miss acknowledged writes.
	Outdated []string `json:"outdated,omitempty"`
}

// LeaseReq asks a voter for (or to renew) the lease of the primary of a
// term, and records which data nodes that primary has outdated.
type LeaseReq struct {
	Term     uint64
	Primary  string
	Seq      uint64   // increases with every request of this primary in this term
	Outdated []string // the primary's full, current outdated set
}

// VoteReq asks a voter to elect Candidate for Term. DataTerm is the term
// whose acknowledged writes the candidate holds in full.
type VoteReq struct {
	Term      uint64
	Candidate string
	DataTerm  uint64
}

// Answer is a voter's reply. Term and Primary tell a refused node what
// the voter knows (the newest term, and the primary of PrimaryTerm).
type Answer struct {
	Granted     bool
	Term        uint64
	Primary     string
	PrimaryTerm uint64
	Reason      string // why it was refused ("" when granted)
	// Retry: for a vote refused because a lease runs, the ticks until it
	// expires on the voter's clock (a candidate retries then rather than
	// after a fixed backoff); 0 otherwise.
	Retry int64
}

// Voter applies the voting and lease rules of docs/failover.md for one
// volume. It is pure: time is a tick the caller passes (the same unit as
// the lease length), nothing is sent or stored here. Not safe for
// concurrent use.
type Voter struct {
	rec        VoterRecord
	lease      int64 // lease length in ticks
	leaseUntil int64 // the lease granted to rec.Primary runs until this tick
}

// NewVoter starts a voter from its stored record at tick now. A voter
// cannot know what lease it promised before it stopped, so one that
// has ever granted a lease treats it as running for a full lease length.
func NewVoter(rec VoterRecord, lease int64, now int64) *Voter {
	if lease <= 0 {
		panic("failover: NewVoter with a lease length <= 0")
	}
	v := &Voter{rec: rec, lease: lease}
	v.rec.Outdated = slices.Clone(rec.Outdated)
	if rec.Primary != "" {
		v.leaseUntil = now + lease
	}
	return v
}

// Record returns a copy of the voter's record.
func (v *Voter) Record() VoterRecord {
	r := v.rec
	r.Outdated = slices.Clone(v.rec.Outdated)
	return r
}

// LeaseRunning reports whether the lease granted to the primary is still
// running at now, and for whom.
func (v *Voter) LeaseRunning(now int64) (string, bool) {
	if v.rec.Primary == "" || now >= v.leaseUntil {
		return "", false
	}
	return v.rec.Primary, true
}

// LeaseLeft returns how long the lease granted to the primary still runs
// at now (0 when none runs).
func (v *Voter) LeaseLeft(now int64) int64 {
	if _, ok := v.LeaseRunning(now); !ok {
		return 0
	}
	return v.leaseUntil - now
}

func (v *Voter) refuse(format string, args ...any) Answer {
	return Answer{Term: v.rec.Term, Primary: v.rec.Primary, PrimaryTerm: v.rec.PrimaryTerm,
		Reason: fmt.Sprintf(format, args...)}
}

func (v *Voter) grant() Answer {
	return Answer{Granted: true, Term: v.rec.Term, Primary: v.rec.Primary, PrimaryTerm: v.rec.PrimaryTerm}
}

// Lease handles a primary's lease request at now. changed reports that
// the record changed: the caller stores Record() before sending the
// answer.
func (v *Voter) Lease(req LeaseReq, now int64) (a Answer, changed bool) {
	r := &v.rec
	switch {
	case req.Primary == "" || req.Term == 0:
		return v.refuse("malformed lease request (primary %q, term %d)", req.Primary, req.Term), false
	case req.Term < r.Term:
		return v.refuse("term %d is over: this voter is at term %d", req.Term, r.Term), false
	case req.Term == r.Term && r.VotedFor != "" && r.VotedFor != req.Primary:
		return v.refuse("term %d elected %s, not %s", r.Term, r.VotedFor, req.Primary), false
	case req.Term == r.PrimaryTerm && r.Primary != req.Primary:
		return v.refuse("term %d has primary %s, not %s", r.Term, r.Primary, req.Primary), false
	case req.Term == r.PrimaryTerm && req.Seq <= r.LeaseSeq:
		return v.refuse("stale lease request %d (granted %d already)", req.Seq, r.LeaseSeq), false
	}
	out := slices.Clone(req.Outdated)
	slices.Sort(out)
	out = slices.Compact(out)
	if slices.Contains(out, req.Primary) {
		return v.refuse("primary %s cannot outdate itself", req.Primary), false
	}
	if req.Term > r.Term {
		r.VotedFor = ""
	}
	r.Term = req.Term
	r.Primary, r.PrimaryTerm, r.LeaseSeq, r.Outdated = req.Primary, req.Term, req.Seq, out
	v.leaseUntil = now + v.lease
	return v.grant(), true
}

// Release ends the lease of req.Primary in req.Term at now, when that is
// the lease this voter granted (a primary that stepped down for a planned
// switchover; the caller checks the message came from req.Primary). It
// reports whether a running lease ended. Nothing durable changes.
func (v *Voter) Release(req LeaseReq, now int64) bool {
	if req.Primary == "" || v.rec.Primary != req.Primary || v.rec.PrimaryTerm != req.Term {
		return false
	}
	_, running := v.LeaseRunning(now)
	v.leaseUntil = min(v.leaseUntil, now)
	return running
}

// Vote handles a candidate's vote request at now. changed as for Lease.
func (v *Voter) Vote(req VoteReq, now int64) (a Answer, changed bool) {
	r := &v.rec
	switch {
	case req.Candidate == "" || req.Term == 0:
		return v.refuse("malformed vote request (candidate %q, term %d)", req.Candidate, req.Term), false
	case req.Term < r.Term:
		return v.refuse("term %d is over: this voter is at term %d", req.Term, r.Term), false
	case req.Term == r.Term && r.VotedFor != "" && r.VotedFor != req.Candidate:
		return v.refuse("already voted for %s in term %d", r.VotedFor, r.Term), false
	case req.Term == r.PrimaryTerm && r.Primary != req.Candidate:
		return v.refuse("term %d has primary %s", r.Term, r.Primary), false
	}
	if p, ok := v.LeaseRunning(now); ok && p != req.Candidate {
		a := v.refuse("the lease of primary %s (term %d) is still running (%d ms more)", p, r.PrimaryTerm, v.leaseUntil-now)
		a.Retry = v.leaseUntil - now
		return a, false
	}
	if slices.Contains(r.Outdated, req.Candidate) {
		return v.refuse("%s was outdated by primary %s in term %d: it misses acknowledged writes",
			req.Candidate, r.Primary, r.PrimaryTerm), false
	}
	if req.DataTerm < r.PrimaryTerm {
		return v.refuse("%s holds the data of term %d, older than term %d of primary %s",
			req.Candidate, req.DataTerm, r.PrimaryTerm, r.Primary), false
	}
	if req.Term == r.Term && r.VotedFor == req.Candidate {
		return v.grant(), false // a repeated request: same answer
	}
	r.Term, r.VotedFor = req.Term, req.Candidate
	return v.grant(), true
}
