package torture

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Environment of TestSchedules (docs/reliability.md):
//
//	BLKREP_TORTURE_SEED=N          replay schedule N alone
//	BLKREP_TORTURE_LOG=1           with BLKREP_TORTURE_SEED: the nodes' debug logs on stderr
//	BLKREP_TORTURE_SCHEDULES=K     run K schedules (default 40, 10 with -short; make test-torture: 2000)
//	BLKREP_TORTURE_DURATION=D      run schedules until D has passed (overrides the count)
//	BLKREP_TORTURE_SEED_BASE=B     schedules B+1, B+2, ... (default 0; "random" draws B)
//	BLKREP_TORTURE_PARALLEL=P      schedules at once (default 6)
//	BLKREP_TORTURE_REPORT=FILE     append the figures as Markdown to FILE
//	BLKREP_TORTURE_THREE=1         let half the seeds have three data nodes (a known problem)
//
// Every failed schedule fails the test: a safety failure (a violation,
// replicas that differ, a harness error) or a stuck one (no primary, or
// no sync, 20 s after everything was healed); the figures count them
// apart.
const (
	envSeed      = "BLKREP_TORTURE_SEED"
	envSchedules = "BLKREP_TORTURE_SCHEDULES"
	envDuration  = "BLKREP_TORTURE_DURATION"
	envBase      = "BLKREP_TORTURE_SEED_BASE"
	envParallel  = "BLKREP_TORTURE_PARALLEL"
	envReport    = "BLKREP_TORTURE_REPORT"
	envLog       = "BLKREP_TORTURE_LOG"
	envThree     = "BLKREP_TORTURE_THREE"
)

func runOptions() RunOptions {
	return RunOptions{ThreeDataNodes: os.Getenv(envThree) != ""}
}

func envUint(t *testing.T, name string, def uint64) uint64 {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, s, err)
	}
	return v
}

func replayCommand(seed uint64) string {
	three := ""
	if os.Getenv(envThree) != "" {
		three = envThree + "=1 "
	}
	return fmt.Sprintf("%s%s=%d go test -count=1 -run TestSchedules ./internal/torture/ -v", three, envSeed, seed)
}

// The seeds that found bugs, run again every time (their fault schedule
// repeats; the interleaving of goroutines need not).
var regressions = []struct {
	seed  uint64
	three bool // RunOptions.ThreeDataNodes, as when it was found
	bug   string
}{
	{3, false, "failover: the last primary, not the preferred node, restarted after the others and nobody promoted (decide.go outranksPreferred)"},
	{20, true, "failover: the old primary restarted after an election without a majority and waited for ever for the higher term (decide.go blocked)"},
	{26, true, "the same as seed 20 with a single kill"},
	{61, false, "failover: the restarted last primary (not preferred) and the preferred node waited for each other (decide.go wasPrimary)"},
	{1394, false, "protocol: bits set before the first generation was durable were never resynced (syncdecide.go both-just-created)"},
	{1611, false, "failover/repl: a candidate became a resync target during its election and won Inconsistent (Replica.SetElecting)"},
	{1213, false, "the same as seed 1611, under protocol C"},
	{1684, false, "repl/volume: writes the failover gate refused after a resync were marked out of sync again on an Established link, for good (volume.Settled)"},
	{643753404775606, false, "volume: an interrupted bitmap resync the terms had turned around picked the Inconsistent target as the source again (StartSyncTarget takes the source's generation)"},
	{35, false, "harness: a tenure is one node from one start in one term (an idle writer kept alpha's across a term beta won)"},
}

func TestRegressions(t *testing.T) {
	for _, r := range regressions {
		t.Run(strconv.FormatUint(r.seed, 10), func(t *testing.T) {
			t.Parallel()
			res := Run(r.seed, RunOptions{ThreeDataNodes: r.three})
			if res.Err != nil {
				t.Fatalf("regression (%s):\n%v", r.bug, res.Err)
			}
		})
	}
}

func TestSchedules(t *testing.T) {
	if s := os.Getenv(envSeed); s != "" {
		seed := envUint(t, envSeed, 0)
		o := runOptions() // without a log: the last lines go with a failure
		if os.Getenv(envLog) != "" {
			o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		res := Run(seed, o)
		t.Logf("seed %d: protocol %c, %d data nodes, %s, faults %v", seed, res.Protocol, res.DataNodes, res.Duration.Round(time.Millisecond), res.Faults)
		if res.Report != nil {
			t.Logf("\n%s", res.Report)
		}
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		return
	}
	count := envUint(t, envSchedules, 40)
	if testing.Short() {
		count = envUint(t, envSchedules, 10)
	}
	var until time.Time
	if s := os.Getenv(envDuration); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("%s=%q: %v", envDuration, s, err)
		}
		until, count = time.Now().Add(d), 1<<62
	}
	var base uint64
	switch s := os.Getenv(envBase); s {
	case "random":
		base = uint64(time.Now().UnixNano()) % 1e12 * 1000
	default:
		base = envUint(t, envBase, 0)
	}
	par := int(envUint(t, envParallel, 6))
	t.Logf("schedules from seed %d (%s=%d replays one)", base+1, envSeed, base+1)

	var (
		mu    sync.Mutex
		fig   = newFigures()
		next  = base
		fails []Result
		wg    sync.WaitGroup
	)
	start := time.Now()
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next-base >= count || !until.IsZero() && time.Now().After(until) || len(fails) >= 3 {
					mu.Unlock()
					return
				}
				next++
				seed := next
				mu.Unlock()
				res := Run(seed, runOptions())
				mu.Lock()
				fig.add(res)
				if res.Err != nil {
					fails = append(fails, res)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	fig.elapsed = time.Since(start)
	table := fig.markdown(fmt.Sprintf("go test -count=1 -run TestSchedules ./internal/torture/ (seeds %d..%d, %d at once)", base+1, next, par))
	t.Logf("\n%s", table)
	if p := os.Getenv(envReport); p != "" {
		f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(f, "%s\n", table)
		f.Close()
	}
	for _, r := range fails {
		t.Errorf("schedule %d failed (replay: %s):\n%v", r.Seed, replayCommand(r.Seed), r.Err)
	}
}
