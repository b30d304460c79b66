package failover

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestVoterRules(t *testing.T) {
	const L = 100
	type step struct {
		at    int64
		lease *LeaseReq
		vote  *VoteReq
		want  string // "granted" or a fragment of the refusal
	}
	for _, tc := range []struct {
		name  string
		start VoterRecord
		steps []step
	}{
		{"first election and lease", VoterRecord{}, []step{
			{0, nil, &VoteReq{1, "alpha", 0}, "granted"},
			{1, nil, &VoteReq{1, "beta", 0}, "already voted for alpha in term 1"},
			{1, nil, &VoteReq{1, "alpha", 0}, "granted"}, // repeated
			{2, &LeaseReq{1, "beta", 1, nil}, nil, "term 1 elected alpha, not beta"},
			{2, &LeaseReq{1, "alpha", 1, nil}, nil, "granted"},
			{3, &LeaseReq{1, "alpha", 1, nil}, nil, "stale lease request 1"},
		}},
		{"no vote while the lease runs", VoterRecord{}, []step{
			{0, &LeaseReq{1, "alpha", 1, nil}, nil, "granted"},
			{50, nil, &VoteReq{2, "beta", 1}, "lease of primary alpha (term 1) is still running"},
			{99, nil, &VoteReq{2, "beta", 1}, "still running"},
			{100, nil, &VoteReq{2, "beta", 1}, "granted"},
			{101, &LeaseReq{1, "alpha", 2, nil}, nil, "term 1 is over: this voter is at term 2"},
		}},
		{"renewal extends the lease", VoterRecord{}, []step{
			{0, &LeaseReq{1, "alpha", 1, nil}, nil, "granted"},
			{60, &LeaseReq{1, "alpha", 2, nil}, nil, "granted"},
			{120, nil, &VoteReq{2, "beta", 1}, "still running"},
			{160, nil, &VoteReq{2, "beta", 1}, "granted"},
		}},
		{"outdated peer is refused, then resynced", VoterRecord{}, []step{
			{0, &LeaseReq{1, "alpha", 1, []string{"beta"}}, nil, "granted"},
			{200, nil, &VoteReq{2, "beta", 1}, "beta was outdated by primary alpha in term 1"},
			{201, &LeaseReq{1, "alpha", 3, nil}, nil, "granted"},                            // beta back in sync
			{202, &LeaseReq{1, "alpha", 2, []string{"beta"}}, nil, "stale lease request 2"}, // late, must not re-outdate... nor un-outdate
			{400, nil, &VoteReq{2, "beta", 1}, "granted"},
		}},
		{"older data is refused", VoterRecord{Term: 3, Primary: "alpha", PrimaryTerm: 3, LeaseSeq: 9}, []step{
			{0, nil, &VoteReq{4, "beta", 2}, "still running"}, // restarted voter: lease assumed running
			{100, nil, &VoteReq{4, "beta", 2}, "holds the data of term 2, older than term 3"},
			{100, nil, &VoteReq{4, "gamma", 3}, "granted"},
		}},
		{"terms only grow", VoterRecord{Term: 5}, []step{
			{0, nil, &VoteReq{4, "beta", 9}, "term 4 is over"},
			{0, &LeaseReq{4, "beta", 1, nil}, nil, "term 4 is over"},
			{0, &LeaseReq{6, "beta", 1, []string{"beta"}}, nil, "cannot outdate itself"},
			{0, nil, &VoteReq{0, "beta", 0}, "malformed"},
			{0, &LeaseReq{6, "", 1, nil}, nil, "malformed"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVoter(tc.start, L, 0)
			for i, s := range tc.steps {
				var a Answer
				var what string
				before := v.Record()
				var changed bool
				if s.lease != nil {
					a, changed = v.Lease(*s.lease, s.at)
					what = fmt.Sprintf("Lease%+v", *s.lease)
				} else {
					a, changed = v.Vote(*s.vote, s.at)
					what = fmt.Sprintf("Vote%+v", *s.vote)
				}
				got := "granted"
				if !a.Granted {
					got = a.Reason
				}
				if !strings.Contains(got, s.want) {
					t.Fatalf("step %d at %d: %s: %q, want %q", i, s.at, what, got, s.want)
				}
				if !a.Granted && changed {
					t.Fatalf("step %d: refused but changed the record", i)
				}
				if !a.Granted && fmt.Sprint(before) != fmt.Sprint(v.Record()) {
					t.Fatalf("step %d: refused but the record went from %+v to %+v", i, before, v.Record())
				}
				if a.Term != v.Record().Term {
					t.Fatalf("step %d: answer term %d, record term %d", i, a.Term, v.Record().Term)
				}
			}
		})
	}
}

// simulation of voters and nodes exchanging Vote and Lease over a network
// that delays, reorders and drops, with nodes that start elections and
// renew leases at random. The invariants checked at every tick:
//   - no term elects two nodes (a majority of grants for each);
//   - at no tick do two nodes both hold a majority of unexpired leases
//     (counted as a primary must: from when it sent the request), which
//     is what lets a primary acknowledge writes.
type simMsg struct {
	at        int64
	from, to  int
	vote      *VoteReq
	lease     *LeaseReq
	answer    *Answer
	forVote   bool
	sentAt    int64 // of the request an answer answers
	reqTerm   uint64
	answering int
}

type simNode struct {
	name     string
	term     uint64 // highest term known
	elected  uint64 // term this node won, 0 if none
	votes    map[uint64]map[int]bool
	seq      uint64
	grantsAt map[int]int64 // voter -> send time of the newest granted lease request in term elected
	dataTerm uint64
}

// simSeeds returns the first seed and how many schedules to run: n (n/5
// with -short), or the one FAILOVER_SIM_SEED names.
func simSeeds(t *testing.T, n int) (base uint64, count int) {
	t.Helper()
	if s := os.Getenv("FAILOVER_SIM_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FAILOVER_SIM_SEED=%q: %v", s, err)
		}
		return v, 1
	}
	if testing.Short() {
		n /= 5
	}
	return 1, n
}

func TestVoterSimulation(t *testing.T) {
	base, seeds := simSeeds(t, 300)
	elections := 0
	for i := 0; i < seeds; i++ {
		seed := base + uint64(i)
		terms, err := simulate(seed, 3+2*int(seed%2), 3000)
		if err != nil {
			t.Fatalf("seed %d (FAILOVER_SIM_SEED=%d replays it): %v", seed, seed, err)
		}
		elections += terms
	}
	// Each schedule must see successions (a primary replaced while it
	// may still believe in its lease), or the invariants are untested.
	if elections < 3*seeds {
		t.Fatalf("%d elections in %d schedules: too few to test anything", elections, seeds)
	}
	t.Logf("%d schedules, %d elections", seeds, elections)
}

func simulate(seed uint64, n int, ticks int64) (int, error) {
	const lease, margin = 50, 2
	rng := rand.New(rand.NewPCG(seed, 7))
	voters := make([]*Voter, n)
	nodes := make([]*simNode, n)
	for i := range n {
		voters[i] = NewVoter(VoterRecord{}, lease, 0)
		nodes[i] = &simNode{name: fmt.Sprintf("n%d", i), votes: map[uint64]map[int]bool{}, grantsAt: map[int]int64{}}
	}
	var inflight []simMsg
	isolated := make([]int64, n) // node i is cut off from every other until this tick
	send := func(m simMsg, now int64) {
		cut := m.from != m.to && (isolated[m.from] > now || isolated[m.to] > now)
		if cut || rng.IntN(10) == 0 {
			return // dropped
		}
		m.at = now + 1 + rng.Int64N(15)
		inflight = append(inflight, m)
	}
	elected := map[uint64]int{}
	for now := int64(0); now < ticks; now++ {
		// Deliver what is due, in random order (a partition also drops
		// what was in flight when it began).
		rng.Shuffle(len(inflight), func(i, j int) { inflight[i], inflight[j] = inflight[j], inflight[i] })
		keep := inflight[:0]
		var due []simMsg
		for _, m := range inflight {
			if m.at <= now {
				if m.from != m.to && (isolated[m.from] > now || isolated[m.to] > now) {
					continue
				}
				due = append(due, m)
			} else {
				keep = append(keep, m)
			}
		}
		inflight = keep
		for _, m := range due {
			switch {
			case m.vote != nil:
				a, _ := voters[m.to].Vote(*m.vote, now)
				send(simMsg{from: m.to, to: m.from, answer: &a, forVote: true, reqTerm: m.vote.Term, sentAt: m.sentAt, answering: m.to}, now)
			case m.lease != nil:
				a, _ := voters[m.to].Lease(*m.lease, now)
				send(simMsg{from: m.to, to: m.from, answer: &a, reqTerm: m.lease.Term, sentAt: m.sentAt, answering: m.to}, now)
			default:
				nd := nodes[m.to]
				nd.term = max(nd.term, m.answer.Term)
				// Every node is a secondary in sync with the newest primary
				// it hears of (data safety is not what this checks).
				nd.dataTerm = max(nd.dataTerm, m.answer.PrimaryTerm)
				if !m.answer.Granted {
					continue
				}
				if m.forVote {
					if nd.votes[m.reqTerm] == nil {
						nd.votes[m.reqTerm] = map[int]bool{}
					}
					nd.votes[m.reqTerm][m.answering] = true
					if len(nd.votes[m.reqTerm]) > n/2 && nd.elected < m.reqTerm && nd.term == m.reqTerm {
						if w, ok := elected[m.reqTerm]; ok && w != m.to {
							return 0, fmt.Errorf("tick %d: term %d elected both %s and %s", now, m.reqTerm, nodes[w].name, nd.name)
						}
						elected[m.reqTerm] = m.to
						nd.elected, nd.grantsAt, nd.dataTerm = m.reqTerm, map[int]int64{}, m.reqTerm
					}
				} else if m.reqTerm == nd.elected {
					if m.sentAt > nd.grantsAt[m.answering] {
						nd.grantsAt[m.answering] = m.sentAt
					}
				}
			}
		}
		// Random actions.
		if rng.IntN(200) == 0 {
			isolated[rng.IntN(n)] = now + 20 + rng.Int64N(200) // a partition
		}
		for i, nd := range nodes {
			if nd.elected != 0 && nd.term > nd.elected {
				nd.elected = 0 // learned a newer term: demote
			}
			switch r := rng.IntN(1000); {
			case r < 4 && nd.elected == 0: // start an election
				nd.term++
				for j := range n {
					send(simMsg{from: i, to: j, vote: &VoteReq{nd.term, nd.name, nd.dataTerm}, sentAt: now}, now)
				}
			case r >= 900 && nd.elected != 0: // renew the lease (every 10 ticks on average)
				nd.seq++
				for j := range n {
					send(simMsg{from: i, to: j, lease: &LeaseReq{nd.elected, nd.name, nd.seq, nil}, sentAt: now}, now)
				}
			}
		}
		// Who may acknowledge writes now?
		var ackers []string
		for _, nd := range nodes {
			if nd.elected == 0 {
				continue
			}
			valid := 0
			for _, at := range nd.grantsAt {
				if at+lease-margin > now {
					valid++
				}
			}
			if valid > n/2 {
				ackers = append(ackers, nd.name)
			}
		}
		if len(ackers) > 1 {
			return 0, fmt.Errorf("tick %d: %v all hold a majority lease", now, ackers)
		}
	}
	return len(elected), nil
}
