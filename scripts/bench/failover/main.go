// Command failover measures automatic failover (make bench-failover): per
// failover profile, three real daemons on loopback (alpha, beta, a
// witness) under a load writer; each round SIGKILLs the primary and times
// the kill to the first write acknowledged by the node that took over,
// then restarts the killed node and waits until it is back in sync. At the
// end the writer's history is checked (internal/clustertest): one
// acknowledging node at a time, no acknowledged write lost, both disks
// identical.
//
//	go run ./scripts/bench/failover [-rounds 7] [-profiles default,fast] [-bin bin] [-dir DIR] [-v]
//
// The breakdown comes from the new primary's log: "suspect" is its gossip
// suspecting the killed node, "dead" declaring it dead ("-": not before
// the election), "election" its decision to start an election,
// "promoted" its promotion, "first ack" the writer's first
// acknowledgement from it; all from the kill. "resync" is from the
// restart of the killed node to both nodes in sync again (with random
// writes all over the volume, a crashed primary's activity log covers
// all of it: the whole volume is resynced, at resync_rate_min under the
// writer's load).
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/blkrep/blkrep/internal/clustertest"
	"github.com/blkrep/blkrep/internal/config"
)

type round struct {
	killed, took string
	takeover     time.Duration
	suspect      time.Duration // -1 when not found in the log
	dead         time.Duration
	election     time.Duration
	promoted     time.Duration
	resync       time.Duration // restart to in sync
}

type result struct {
	profile  string
	settings string
	rounds   []round
	summary  string
	checks   []string
	failed   bool
}

func main() {
	rounds := flag.Int("rounds", 7, "rounds (kills) per profile")
	profiles := flag.String("profiles", "default,fast", "failover profiles, comma separated")
	bin := flag.String("bin", "bin", "directory holding blkrepd and blkrep (make build)")
	dir := flag.String("dir", "", "working directory (kept); default: a temporary one, removed unless a round fails")
	workers := flag.Int("workers", 4, "writer connections")
	interval := flag.Duration("interval", 5*time.Millisecond, "pause of each writer connection between writes")
	verbose := flag.Bool("v", false, "log progress")
	flag.Parse()
	logw := io.Discard
	if *verbose {
		logw = os.Stderr
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(logw, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
	}
	absBin, err := filepath.Abs(*bin)
	if err != nil {
		fatal(err)
	}
	keep := *dir != ""
	work := *dir
	if work == "" {
		if work, err = os.MkdirTemp("", "blkrep-bench-failover-"); err != nil {
			fatal(err)
		}
	}
	host, _ := os.Hostname()
	fmt.Printf("bench-failover: %d rounds per profile, loopback, %d writer connections (one 4 KiB write each, then %s pause), protocol C, %d MiB volume\n",
		*rounds, *workers, *interval, clustertest.DefaultSize>>20)
	fmt.Printf("host %s, %d CPUs, %s; work dir %s\n\n", host, runtime.NumCPU(), time.Now().Format("2006-01-02 15:04"), work)
	var results []result
	failed := false
	for _, p := range strings.Split(*profiles, ",") {
		p = strings.TrimSpace(p)
		r := runProfile(p, filepath.Join(work, p), absBin, *rounds, *workers, *interval, logf)
		results = append(results, r)
		failed = failed || r.failed
		printRounds(r)
	}
	printTable(results)
	if failed {
		fmt.Printf("\nFAILED: logs kept in %s\n", work)
		os.Exit(1)
	}
	if !keep {
		os.RemoveAll(work)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench-failover:", err)
	os.Exit(1)
}

func runProfile(profile, dir, bin string, rounds, workers int, interval time.Duration, logf func(string, ...any)) (res result) {
	res.profile = profile
	fail := func(format string, args ...any) result {
		res.failed = true
		res.checks = append(res.checks, "FAILED: "+fmt.Sprintf(format, args...))
		return res
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail("%v", err)
	}
	c, err := clustertest.New(clustertest.Options{Dir: dir, Bin: bin, Profile: profile, Logf: logf})
	if err != nil {
		return fail("%v", err)
	}
	defer c.Close()
	if cfg, err := config.Load(c.Config); err == nil {
		cl := cfg.Cluster
		res.settings = fmt.Sprintf("probe %s/%s, suspicion x%d, lease %s", cl.FailoverProbeInterval, cl.FailoverProbeTimeout, cl.FailoverSuspicionMult, cl.FailoverLease)
	} else {
		return fail("%v", err)
	}
	if err := c.StartAll(); err != nil {
		return fail("%v", err)
	}
	if err := c.WaitInSync(90 * time.Second); err != nil {
		return fail("initial sync: %v", err)
	}
	w, err := clustertest.StartWriter(clustertest.WriterOptions{Endpoints: c.Endpoints(), Blocks: c.Blocks(),
		Workers: workers, Interval: interval, Logf: logf})
	if err != nil {
		return fail("%v", err)
	}
	stopped := false
	defer func() {
		if !stopped {
			w.Stop(time.Second)
		}
	}()
	for i := 1; i <= rounds; i++ {
		prim, err := c.Primary()
		if err != nil || prim == "" {
			return fail("round %d: no primary (%v)", i, err)
		}
		other := clustertest.Alpha
		if prim == clustertest.Alpha {
			other = clustertest.Beta
		}
		if _, err := w.WaitAckBy(prim, time.Now(), 30*time.Second); err != nil {
			return fail("round %d: %v", i, err)
		}
		// Steady load, then a crash at a random moment: the round starts
		// right after a lease renewal (in sync means the voters recorded
		// one), and a kill a fixed time later would always land at the
		// same point of the renewal cycle, the worst one for a 1 s cycle.
		time.Sleep(time.Second + time.Duration(rand.Int64N(int64(time.Second))))
		killed, err := c.Kill(prim)
		if err != nil {
			return fail("round %d: %v", i, err)
		}
		first, err := w.WaitAckBy(other, killed, 90*time.Second)
		if err != nil {
			return fail("round %d: after killing %s: %v", i, prim, err)
		}
		rd := round{killed: prim, took: other, takeover: first.Acked.Sub(killed)}
		rd.suspect = since(c, other, killed, func(l clustertest.LogLine) bool {
			return (l.Msg == "member suspect" && l.Str("node") == prim) || strings.HasPrefix(l.Msg, "Suspect "+prim+" ")
		})
		rd.dead = since(c, other, killed, func(l clustertest.LogLine) bool {
			return l.Msg == "member dead" && l.Str("node") == prim
		})
		rd.election = since(c, other, killed, func(l clustertest.LogLine) bool {
			return l.Msg == "failover" && strings.Contains(l.Str("decision"), "election for term")
		})
		rd.promoted = since(c, other, killed, func(l clustertest.LogLine) bool {
			return strings.HasPrefix(l.Msg, "promoted by automatic failover")
		})
		logf("round %d: %s killed, %s acknowledged after %s", i, prim, other, rd.takeover.Round(time.Millisecond))
		time.Sleep(time.Second)
		restarted := time.Now()
		if err := c.Restart(prim); err != nil {
			return fail("round %d: %v", i, err)
		}
		if err := c.WaitInSync(120 * time.Second); err != nil {
			return fail("round %d: %s back in sync: %v", i, prim, err)
		}
		rd.resync = time.Since(restarted)
		res.rounds = append(res.rounds, rd)
	}
	h := w.Stop(5 * time.Second)
	stopped = true
	res.summary = h.Summary()
	promos, err := c.Promotions()
	if err != nil {
		return fail("%v", err)
	}
	if _, err := clustertest.CheckSingleWriter(h, promos); err != nil {
		return fail("%v", err)
	}
	res.checks = append(res.checks, fmt.Sprintf("one acknowledging node at a time: ok (%d promotions)", len(promos)))
	if err := c.WaitInSync(120 * time.Second); err != nil {
		return fail("final sync: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node, data, err := c.ReadVolume(ctx)
	if err != nil {
		return fail("%v", err)
	}
	rep, err := clustertest.CheckDurable(h, data)
	if err != nil {
		return fail("%v", err)
	}
	res.checks = append(res.checks, fmt.Sprintf("writes lost: %d (%d blocks with acknowledged writes, read back from %s)", rep.Lost, rep.Acked, node))
	if err := c.CompareDisks(); err != nil {
		return fail("%v", err)
	}
	res.checks = append(res.checks, "disks identical after resync: ok")
	return res
}

// since is the time from t0 to the first matching line of node's log, or
// -1.
func since(c *clustertest.Cluster, node string, t0 time.Time, match func(clustertest.LogLine) bool) time.Duration {
	l, ok := c.FirstLog(node, t0, match)
	if !ok {
		return -1
	}
	return l.Time.Sub(t0)
}

func ms(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func printRounds(r result) {
	fmt.Printf("profile %s (%s)\n", r.profile, r.settings)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tkilled\ttook over\tsuspect\tdead\telection\tpromoted\tfirst ack\tresync\t")
	for i, rd := range r.rounds {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", i+1, rd.killed, rd.took, ms(rd.suspect), ms(rd.dead), ms(rd.election), ms(rd.promoted), ms(rd.takeover), ms(rd.resync))
	}
	tw.Flush()
	if r.summary != "" {
		fmt.Println("writer:", r.summary)
	}
	for _, c := range r.checks {
		fmt.Println(c)
	}
	fmt.Println()
}

func quantile(ds []time.Duration, q float64) time.Duration {
	// Nearest rank.
	s := slices.Clone(ds)
	slices.SortFunc(s, func(a, b time.Duration) int { return cmp.Compare(a, b) })
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func printTable(rs []result) {
	fmt.Println("takeover time: SIGKILL of the primary to the first write acknowledged by the new primary")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "profile\tsettings\truns\tmin\tmedian\tp90\tmax\tmedian suspect / dead / election / promoted")
	for _, r := range rs {
		if len(r.rounds) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t0\t-\t-\t-\t-\t-\n", r.profile, r.settings)
			continue
		}
		var t, su, d, e, p []time.Duration
		for _, rd := range r.rounds {
			t = append(t, rd.takeover)
			if rd.suspect >= 0 {
				su = append(su, rd.suspect)
			}
			if rd.dead >= 0 {
				d = append(d, rd.dead)
			}
			if rd.election >= 0 {
				e = append(e, rd.election)
			}
			if rd.promoted >= 0 {
				p = append(p, rd.promoted)
			}
		}
		med := func(x []time.Duration) string {
			if len(x) == 0 {
				return "-"
			}
			return ms(quantile(x, 0.5))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s / %s / %s / %s\n", r.profile, r.settings, len(r.rounds),
			ms(quantile(t, 0)), ms(quantile(t, 0.5)), ms(quantile(t, 0.9)), ms(quantile(t, 1)), med(su), med(d), med(e), med(p))
	}
	tw.Flush()
	for _, r := range rs {
		lost := "writes lost: not checked"
		for _, c := range r.checks {
			if strings.HasPrefix(c, "writes lost:") {
				lost = c
			}
		}
		fmt.Printf("%s: %s\n", r.profile, lost)
	}
}
