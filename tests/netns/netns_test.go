package netns

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/clustertest"
)

const (
	envRequire = "BLKREP_REQUIRE_NETNS"
	envBin     = "BLKREP_BIN"

	alpha, beta, witness = clustertest.Alpha, clustertest.Beta, clustertest.Witness

	// writerBlocks: the writer uses the first 8 MiB of the volume (two
	// activity-log extents), so the resync after a crash stays short.
	writerBlocks = 2048
	// lease of the default profile (docs/config.md), for the bound on
	// how long a cut-off primary may still acknowledge.
	lease = 3 * time.Second
)

var (
	binDir   string
	buildErr error
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

// enabled: these tests start real daemons in namespaces for about 90 s
// and measure takeover times, so they do not run inside 'go test ./...'
// next to every other package: make test-netns (part of make test) runs
// them alone with BLKREP_REQUIRE_NETNS=1; BLKREP_NETNS=1 runs them when
// the machine can.
func enabled() bool { return os.Getenv(envRequire) == "1" || os.Getenv("BLKREP_NETNS") == "1" }

func testMain(m *testing.M) int {
	// Build only when the tests can run: a skipped run stays cheap.
	if enabled() && clustertest.RequireNetns() == nil {
		if binDir = os.Getenv(envBin); binDir == "" {
			dir, err := os.MkdirTemp("", "blkrep-netns-bin-")
			if err != nil {
				fmt.Fprintln(os.Stderr, "netns:", err)
				return 1
			}
			defer os.RemoveAll(dir)
			mod, err := clustertest.ModuleDir()
			if err == nil {
				err = clustertest.BuildBinaries(mod, dir)
			}
			binDir, buildErr = dir, err
		}
	}
	return m.Run()
}

type scenario struct {
	t *testing.T
	c *clustertest.Cluster
	w *clustertest.Writer
	h *clustertest.History
}

// start brings up the cluster in namespaces, with alpha primary, beta in
// sync and the writer acknowledged by alpha.
func start(t *testing.T) *scenario { t.Helper(); return startWith(t, 0, nil) }

// startWith is start with the writer's seed (0: from the clock) and a
// function run at the end, before the logs are kept on failure.
func startWith(t *testing.T, writerSeed uint64, atEnd func(*scenario)) *scenario {
	t.Helper()
	if !enabled() {
		t.Skipf("namespace tests run with make test-netns (or BLKREP_NETNS=1)")
	}
	if err := clustertest.RequireNetns(); err != nil {
		if os.Getenv(envRequire) == "1" {
			t.Fatalf("%v (%s=1: not skipping)", err, envRequire)
		}
		t.Skipf("%v; skipping (%s=1 makes this a failure)", err, envRequire)
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	c, err := clustertest.New(clustertest.Options{Dir: t.TempDir(), Bin: binDir, Netns: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	s := &scenario{t: t, c: c}
	t.Cleanup(func() {
		if s.w != nil && s.h == nil {
			s.h = s.w.Stop(time.Second)
		}
		if atEnd != nil {
			atEnd(s)
		}
		if t.Failed() {
			s.keepLogs()
		}
		c.Close()
	})
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitInSync(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if p, _ := c.Primary(); p != alpha {
		t.Fatalf("the primary at start is %q, want alpha (the preferred node)", p)
	}
	s.w, err = clustertest.StartWriter(clustertest.WriterOptions{Endpoints: c.Endpoints(), Blocks: writerBlocks, Seed: writerSeed, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.WaitAckBy(alpha, time.Time{}, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // steady load
	return s
}

// keepLogs copies the logs, configuration and failover state files out
// of the test's directory, which is removed.
func (s *scenario) keepLogs() {
	dst, err := os.MkdirTemp("", "blkrep-netns-"+strings.ReplaceAll(s.t.Name(), "/", "-")+"-")
	if err != nil {
		return
	}
	files, _ := filepath.Glob(filepath.Join(s.c.Opts.Dir, "*"))
	for _, f := range files {
		if ext := filepath.Ext(f); ext == ".log" || ext == ".toml" || ext == ".json" {
			if b, err := os.ReadFile(f); err == nil {
				os.WriteFile(filepath.Join(dst, filepath.Base(f)), b, 0o644)
			}
		}
	}
	if s.h != nil {
		var b strings.Builder
		fmt.Fprintln(&b, s.h.Summary())
		for _, sw := range s.h.Switches() {
			fmt.Fprintln(&b, sw)
		}
		for _, e := range s.h.Conns {
			fmt.Fprintf(&b, "%s worker %d node %q %s\n", e.Time.Format("15:04:05.000000"), e.Worker, e.Node, e.Err)
		}
		for _, w := range s.h.Writes {
			fmt.Fprintf(&b, "%d %d %s issued %s acked %s late %v err %q\n", w.Seq, w.Offset, w.Node,
				w.Issued.Format("15:04:05.000000"), w.Acked.Format("15:04:05.000000"), w.Late, w.Err)
		}
		os.WriteFile(filepath.Join(dst, "writer.txt"), []byte(b.String()), 0o644)
	}
	s.t.Logf("logs kept in %s", dst)
}

// finish stops the writer once the cluster is in sync again and runs the
// three checks; the primary must be wantPrimary, after wantPromotions
// promotions in all.
func (s *scenario) finish(wantPrimary string, wantPromotions int) {
	t, c := s.t, s.c
	t.Helper()
	if err := c.WaitGossipConverged(30 * time.Second); err != nil {
		t.Error(err) // the rest shows what follows from it
	}
	if err := c.WaitInSync(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	// Some writes after the healing, then stop.
	if _, err := s.w.WaitAckBy(wantPrimary, time.Now(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	s.h = s.w.Stop(3 * time.Second)
	t.Log(s.h.Summary())
	for _, sw := range s.h.Switches() {
		t.Log("acknowledging node changed:", sw)
	}
	promos, err := c.Promotions()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range promos {
		t.Logf("promotion: %s term %d at %s", p.Node, p.Term, p.Time.Format("15:04:05.000"))
	}
	if len(promos) != wantPromotions {
		t.Errorf("%d promotions, want %d", len(promos), wantPromotions)
	}
	if _, err := clustertest.CheckSingleWriter(s.h, promos); err != nil {
		t.Error(err)
	}
	if err := c.WaitInSync(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if p, err := c.Primary(); err != nil || p != wantPrimary {
		t.Errorf("primary %q (%v), want %s", p, err, wantPrimary)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node, data, err := c.ReadVolume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if node != wantPrimary {
		t.Errorf("%s admitted the reader, want %s", node, wantPrimary)
	}
	if rep, err := clustertest.CheckDurable(s.h, data); err != nil {
		t.Error(err)
	} else {
		t.Logf("check (b): no acknowledged write lost: %+v", rep)
	}
	if err := c.CompareDisks(); err != nil {
		t.Error(err)
	} else {
		t.Log("check (c): disks identical")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The primary's process dies: beta takes over with every acknowledged
// write; alpha comes back as the secondary and resyncs.
func TestKillPrimary(t *testing.T) {
	s := start(t)
	killed, err := s.c.Kill(alpha)
	must(t, err)
	first, err := s.w.WaitAckBy(beta, killed, 60*time.Second)
	must(t, err)
	t.Logf("beta acknowledged %s after alpha's SIGKILL", first.Acked.Sub(killed).Round(time.Millisecond))
	time.Sleep(time.Second)
	must(t, s.c.Restart(alpha))
	s.finish(beta, 2)
}

// The primary is cut off from beta and the witness: it stops
// acknowledging (its lease runs out), beta takes over; after healing,
// alpha learns the newer term, demotes and resyncs from beta.
func TestPartitionPrimary(t *testing.T) {
	s := start(t)
	must(t, s.c.Isolate(alpha))
	cut := time.Now() // the rules are in place
	first, err := s.w.WaitAckBy(beta, cut, 45*time.Second)
	must(t, err)
	t.Logf("beta acknowledged %s after alpha was cut off", first.Acked.Sub(cut).Round(time.Millisecond))
	// alpha must have stopped before its lease could have run out.
	time.Sleep(2 * time.Second)
	s.checkSilent(alpha, cut.Add(lease+500*time.Millisecond))
	must(t, s.c.HealAll())
	s.finish(beta, 2)
}

// The primary is cut off, so the writes it has in flight wait in its
// failover gate for a majority that does not come, and is then stopped
// (SIGTERM). The stop must end by itself: the held writes fail once the
// shutdown timeout is up. It once hung (tests/netns TestTorture,
// stop-primary): nbd's drain waited for the held writes, and the gate was
// closed only after the drain. beta takes over meanwhile.
func TestStopIsolatedPrimary(t *testing.T) {
	s := start(t)
	must(t, s.c.Isolate(alpha))
	cut := time.Now()
	_, err := s.w.WaitAckBy(beta, cut, 45*time.Second)
	must(t, err)
	stop := time.Now()
	must(t, s.c.Stop(alpha))
	t.Logf("alpha stopped %s after its SIGTERM", time.Since(stop).Round(time.Millisecond))
	if l, ok := s.c.FirstLog(alpha, stop, func(l clustertest.LogLine) bool {
		return strings.HasPrefix(l.Msg, "shutdown did not finish")
	}); ok {
		t.Errorf("alpha's stop did not finish by itself (%s): the watchdog ended it", l.Time.Format(time.RFC3339Nano))
	}
	if _, ok := s.c.FirstLog(alpha, stop, func(l clustertest.LogLine) bool { return l.Msg == "shutting down" }); !ok {
		t.Error("alpha did not log its shutdown")
	}
	must(t, s.c.HealAll())
	must(t, s.c.Restart(alpha))
	s.finish(beta, 2)
}

// checkSilent fails if node acknowledged a write after t.
func (s *scenario) checkSilent(node string, after time.Time) {
	s.t.Helper()
	if w, err := s.w.WaitAckBy(node, after, time.Millisecond); err == nil {
		s.t.Errorf("%s acknowledged write %v at %s, after it could hold a lease", node, w.Tag, w.Acked.Format("15:04:05.000"))
	}
}

// The secondary is cut off: alpha declares it outdated at the witness and
// goes on acknowledging; beta is never promoted; after healing, beta
// resyncs.
func TestPartitionSecondary(t *testing.T) {
	s := start(t)
	must(t, s.c.Isolate(beta))
	cut := time.Now() // the rules are in place
	w, err := s.w.WaitAck(cut, func(w clustertest.Write) bool { return w.Node == alpha && w.Issued.After(cut) }, 60*time.Second)
	must(t, err)
	t.Logf("alpha acknowledged a write sent %s after beta was cut off, %s after the cut",
		w.Issued.Sub(cut).Round(time.Millisecond), w.Acked.Sub(cut).Round(time.Millisecond))
	// Long enough for the others to declare beta dead.
	time.Sleep(time.Until(cut.Add(12 * time.Second)))
	if p, _ := s.c.Primary(); p != alpha {
		t.Errorf("primary %q while beta is cut off, want alpha", p)
	}
	must(t, s.c.HealAll())
	s.finish(alpha, 1)
}

// The witness is cut off: alpha and beta are a majority, writes go on
// without a pause. Once it is back it votes again: beta takes over when
// alpha is killed afterwards.
func TestIsolateWitness(t *testing.T) {
	s := start(t)
	must(t, s.c.Isolate(witness))
	cut := time.Now() // the rules are in place
	window := 15 * time.Second
	time.Sleep(window)
	must(t, s.c.HealAll())
	// The largest gap between acknowledgements while the witness was away.
	gap, last := time.Duration(0), cut
	n := 0
	for {
		w, err := s.w.WaitAck(last, nil, time.Millisecond)
		if err != nil || w.Acked.After(cut.Add(window)) {
			break
		}
		if w.Node != alpha {
			t.Errorf("write %v acknowledged by %s while the witness was away", w.Tag, w.Node)
		}
		gap = max(gap, w.Acked.Sub(last))
		last = w.Acked
		n++
	}
	t.Logf("%d writes acknowledged in the %s without the witness; largest pause %s", n, window, gap.Round(time.Millisecond))
	if n == 0 || gap > 2*time.Second {
		t.Errorf("writes paused for %s while only the witness was cut off", gap)
	}
	// The witness is back: it must count again. Kill the primary; beta
	// needs the witness's vote to take over.
	if err := s.c.WaitGossipConverged(30 * time.Second); err != nil {
		t.Error(err)
	}
	must(t, s.c.WaitInSync(60*time.Second))
	killed, err := s.c.Kill(alpha)
	must(t, err)
	first, err := s.w.WaitAckBy(beta, killed, 30*time.Second)
	must(t, err)
	t.Logf("after the witness came back, alpha was killed: beta acknowledged %s later", first.Acked.Sub(killed).Round(time.Millisecond))
	must(t, s.c.Restart(alpha))
	s.finish(beta, 2)
}

// alpha and beta cannot reach each other but both reach the witness:
// alpha keeps the lease (with the witness), outdates beta and goes on;
// beta, outdated, is not promoted.
func TestPartitionPair(t *testing.T) {
	s := start(t)
	must(t, s.c.Partition(alpha, beta))
	cut := time.Now()
	w, err := s.w.WaitAck(cut, func(w clustertest.Write) bool { return w.Node == alpha && w.Issued.After(cut) }, 60*time.Second)
	must(t, err)
	t.Logf("alpha acknowledged a write sent after the cut, %s after it", w.Acked.Sub(cut).Round(time.Millisecond))
	time.Sleep(10 * time.Second) // time enough for beta to try an election
	s.checkSilent(beta, cut)
	if p, _ := s.c.Primary(); p != alpha {
		t.Errorf("primary %q, want alpha", p)
	}
	must(t, s.c.HealAll())
	s.finish(alpha, 1)
}
