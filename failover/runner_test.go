package failover

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/testnet"
)

// world models the replication between fake replicas: a data node is in
// sync with the primary while both run.
type world struct {
	mu    sync.Mutex
	alive map[string]bool
	reps  map[string]*fakeReplica
}

type fakeReplica struct {
	w        *world
	name     string
	role     Role
	term     uint64
	writes   WriteMode
	outdated map[string]bool
	log      []string
	dataTerm uint64 // from SetTerm
}

func (f *fakeReplica) Local() Local {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	l := Local{Role: f.role, Disk: DiskUpToDate}
	for n, o := range f.w.reps {
		if n == f.name || !f.w.alive[n] {
			continue
		}
		if f.role == RolePrimary && o.role == RoleSecondary || f.role == RoleSecondary && o.role == RolePrimary {
			l.InSyncWith = append(l.InSyncWith, n)
		}
	}
	return l
}

func (f *fakeReplica) Promote(term uint64) error {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	f.role, f.term = RolePrimary, term
	f.log = append(f.log, fmt.Sprintf("promote %d", term))
	if f.dataTerm != term {
		f.log = append(f.log, fmt.Sprintf("BUG: promoted for term %d with data term %d in the handshakes", term, f.dataTerm))
	}
	return nil
}

func (f *fakeReplica) Demote() error {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	f.role = RoleSecondary
	f.log = append(f.log, "demote")
	return nil
}

func (f *fakeReplica) SetWrites(m WriteMode) {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	f.writes = m
}

func (f *fakeReplica) SetTerm(t uint64) {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	f.dataTerm = t
}

func (f *fakeReplica) SetElecting(bool) {}

func (f *fakeReplica) SetOutdated(peer string, c bool) {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	f.outdated[peer] = c
}

func (f *fakeReplica) accepting() bool {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	return f.role == RolePrimary && f.writes == WritesAccept
}

type runNode struct {
	g *Gossip
	r *Runner
}

// Three runners over real gossip on loopback: alpha (preferred) becomes
// primary at start; when its process dies, beta takes over, and alpha
// never accepted writes at the same time.
func TestRunnerFailover(t *testing.T) {
	dir := t.TempDir()
	names := []string{"alpha", "beta", "witness"}
	addrs := map[string]string{}
	for _, n := range names {
		addrs[n] = testnet.MustAddr(t)
	}
	w := &world{alive: map[string]bool{}, reps: map[string]*fakeReplica{}}
	nodes := map[string]*runNode{}
	for _, n := range names {
		var seeds []string
		for _, m := range names {
			if m != n {
				seeds = append(seeds, addrs[m])
			}
		}
		g, _ := start(t, fastConfig(n, addrs[n], seeds...), NodeMeta{Witness: n == "witness"})
		var rep ReplicaControl
		w.mu.Lock() // the runners started already read the world
		if n != "witness" {
			f := &fakeReplica{w: w, name: n, outdated: map[string]bool{}}
			w.reps[n] = f
			rep = f
		}
		w.alive[n] = true
		w.mu.Unlock()
		r, err := StartRunner(RunnerConfig{Cluster: testCluster, Node: n, Witness: n == "witness", Gossip: g,
			Tick: 20 * time.Millisecond, Log: testLogger(t, n),
			Volumes: []RunnerVolume{{Replica: rep, StatePath: filepath.Join(dir, n+"-r0.json"),
				Decider: DeciderConfig{Volume: "r0", Voters: names, Witnesses: []string{"witness"},
					Preferred: "alpha", AutoPromote: true, Lease: 500}}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		nodes[n] = &runNode{g: g, r: r}
	}
	alpha, beta := w.reps["alpha"], w.reps["beta"]
	deadline := time.Now().Add(15 * time.Second)
	for !alpha.accepting() {
		if time.Now().After(deadline) {
			t.Fatalf("alpha did not become an accepting primary: %+v", nodes["alpha"].r.Status())
		}
		if beta.accepting() {
			t.Fatal("beta accepts writes at start; alpha is the preferred node")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if role := beta.Local().Role; beta.accepting() || role != RoleSecondary {
		t.Fatalf("beta is %s", role)
	}

	// alpha's process dies.
	killed := time.Now()
	nodes["alpha"].r.Close()
	nodes["alpha"].g.Shutdown()
	w.mu.Lock()
	w.alive["alpha"] = false
	w.mu.Unlock()
	deadline = time.Now().Add(20 * time.Second)
	for !beta.accepting() {
		if time.Now().After(deadline) {
			t.Fatalf("beta did not take over: %+v", nodes["beta"].r.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("beta accepts writes %v after alpha died (probe 100ms, suspicion 2, lease 500ms)", time.Since(killed).Round(10*time.Millisecond))
	st, found, err := LoadState(filepath.Join(dir, "witness-r0.json"), testCluster, "r0", "witness")
	if err != nil || !found || st.Voter.Primary != "beta" || st.Voter.Term < 2 {
		t.Fatalf("witness state: %+v found %v err %v", st, found, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range w.reps {
		for _, l := range f.log {
			if strings.HasPrefix(l, "BUG") {
				t.Errorf("%s: %s", f.name, l)
			}
		}
	}
}

func testLogger(t *testing.T, node string) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", node)
	}
	return slog.New(slog.DiscardHandler)
}
