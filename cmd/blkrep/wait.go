package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blkrep/blkrep/internal/control"
)

// waitPoll is how often --wait polls the status; waitReport how often it
// prints a progress line when stderr is not a terminal. Tests shorten them.
var (
	waitPoll   = 200 * time.Millisecond
	waitReport = 2 * time.Second
)

// startSkew tolerates a StartedAt a little before the action was sent
// (the daemon and the CLI share a clock, but not a rounding).
const startSkew = time.Second

// waitFor follows the resync or verify (what) of vol that an action sent
// at since started, until no peer runs one any more, then prints a
// summary. 0: every one finished; 1: one stopped before the end or
// blkrepd went away; 130: interrupted (the work goes on in blkrepd).
func waitFor(ctx context.Context, cl *control.Client, vol, what string, since time.Time, stdout, stderr io.Writer) int {
	get := func(p *control.Peer) *control.Progress {
		if what == control.ActionVerify {
			return p.Verify
		}
		return p.Resync
	}
	live := isTerminal(stderr)
	clear := func() {
		if live {
			fmt.Fprint(stderr, "\r\x1b[K")
		}
	}
	show := func(line string, every bool, last *time.Time, lastLine *string) {
		switch {
		case live:
			if w := termWidth(stderr); w > 1 && len(line) >= w {
				line = line[:w-1] // a wrapped line could not be redrawn
			}
			fmt.Fprintf(stderr, "\r%s\x1b[K", line)
		case every && time.Since(*last) >= waitReport, !every && line != *lastLine:
			fmt.Fprintln(stderr, line)
			*last = time.Now()
		}
		*lastLine = line
	}
	seen := map[string]bool{} // peers seen running
	var lastReport time.Time
	var lastLine string
	tick := time.NewTicker(waitPoll)
	defer tick.Stop()
	for {
		st, err := cl.Status(ctx)
		if ctx.Err() != nil {
			break
		}
		var v *control.Volume
		if err == nil {
			for i := range st.Volumes {
				if st.Volumes[i].Name == vol {
					v = &st.Volumes[i]
				}
			}
			if v == nil {
				err = fmt.Errorf("blkrepd no longer lists volume %s", vol)
			}
		}
		if err != nil {
			clear()
			fmt.Fprintf(stderr, "blkrep: %v; the %s may still be running in blkrepd\n", err, what)
			return 1
		}
		var running []*control.Peer
		for i := range v.Peers {
			if pr := get(&v.Peers[i]); pr != nil && pr.Running {
				running = append(running, &v.Peers[i])
				seen[v.Peers[i].Node] = true
			}
		}
		if len(running) > 0 {
			var sum control.Progress
			var names []string
			for _, p := range running {
				pr := get(p)
				names = append(names, p.Node)
				sum.TotalBytes += pr.TotalBytes
				sum.DoneBytes += pr.DoneBytes
				sum.RateBytesPerSec += pr.RateBytesPerSec
				sum.ETASeconds = max(sum.ETASeconds, pr.ETASeconds)
			}
			show(fmt.Sprintf("%s %s with %s  %s", what, vol, strings.Join(names, ","), progressBar(&sum)), true, &lastReport, &lastLine)
		} else {
			var ended []*control.Peer
			for i := range v.Peers {
				p := &v.Peers[i]
				if pr := get(p); pr != nil && (seen[p.Node] || !pr.StartedAt.Before(since.Add(-startSkew))) {
					ended = append(ended, p)
				}
			}
			if len(ended) > 0 || len(seen) > 0 {
				clear()
				return summary(stdout, stderr, vol, what, ended)
			}
			// Accepted but not started (e.g. waiting for the peer): say so,
			// and keep waiting.
			var states []string
			for _, p := range v.Peers {
				states = append(states, fmt.Sprintf("%s: %s, %s", p.Node, p.Connection, p.Replication))
			}
			show(fmt.Sprintf("waiting for the %s of %s to start (%s)", what, vol, orNone(strings.Join(states, "; "))), false, &lastReport, &lastLine)
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
		if ctx.Err() != nil {
			break
		}
	}
	clear()
	fmt.Fprintf(stderr, "blkrep: stopped waiting; the %s of %s goes on in blkrepd ('blkrep status' shows it)\n", what, vol)
	return 130
}

// summary prints how each peer's resync or verify ended.
func summary(stdout, stderr io.Writer, vol, what string, peers []*control.Peer) int {
	code := 0
	for _, p := range peers {
		pr := control.Progress{}
		if what == control.ActionVerify {
			pr = *p.Verify
		} else {
			pr = *p.Resync
		}
		if pr.DoneBytes < pr.TotalBytes {
			fmt.Fprintf(stderr, "blkrep: %s of %s with %s stopped at %.1f%% (%s of %s)", what, vol, p.Node,
				percent(pr.DoneBytes, pr.TotalBytes), human(uint64(pr.DoneBytes)), human(uint64(pr.TotalBytes)))
			if p.LastError != "" {
				fmt.Fprintf(stderr, ": %s", p.LastError)
			}
			fmt.Fprintf(stderr, "; connection %s, replication %s\n", p.Connection, p.Replication)
			code = 1
			continue
		}
		took := ""
		if pr.FinishedAt != nil {
			d := pr.FinishedAt.Sub(pr.StartedAt).Round(time.Second)
			took = " in " + d.String()
			if s := pr.FinishedAt.Sub(pr.StartedAt).Seconds(); s > 0 {
				took += fmt.Sprintf(" (%s/s)", human(uint64(float64(pr.DoneBytes)/s)))
			}
		}
		if what == control.ActionVerify {
			fmt.Fprintf(stdout, "verify of %s with %s done: %s compared%s; ", vol, p.Node, human(uint64(pr.DoneBytes)), took)
			if pr.MismatchBytes == 0 {
				fmt.Fprintln(stdout, "no differences")
			} else {
				fmt.Fprintf(stdout, "%s (%d bytes) differ, marked out of sync; run `blkrep resync %s`\n", human(uint64(pr.MismatchBytes)), pr.MismatchBytes, vol)
			}
			continue
		}
		fmt.Fprintf(stdout, "resync of %s with %s done: %s%s", vol, p.Node, human(uint64(pr.DoneBytes)), took)
		if pr.SkippedBytes > 0 {
			fmt.Fprintf(stdout, "; %s found identical by checksum, not sent", human(uint64(pr.SkippedBytes)))
		}
		fmt.Fprintln(stdout)
	}
	return code
}

// isTerminal reports whether w is a terminal (live progress bar) rather
// than a file or pipe (a line every waitReport).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// termWidth is the terminal's width in columns, 0 if unknown.
func termWidth(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}

func percent(done, total int64) float64 {
	if total <= 0 {
		return 0
	}
	return min(100, max(0, 100*float64(done)/float64(total)))
}

// progressBar draws "[########............] 42.0%  105.0 MiB / 250.0 MiB  180.2 MiB/s  ETA 0:01".
func progressBar(p *control.Progress) string {
	const width = 20
	pct := percent(p.DoneBytes, p.TotalBytes)
	n := int(pct / 100 * width)
	eta := "--:--"
	switch {
	case p.DoneBytes >= p.TotalBytes && p.TotalBytes > 0:
		eta = "0:00"
	case p.ETASeconds > 0:
		eta = clock(p.ETASeconds)
	}
	return fmt.Sprintf("[%s%s] %.1f%%  %s / %s  %s/s  ETA %s", strings.Repeat("#", n), strings.Repeat(".", width-n),
		pct, human(uint64(max(p.DoneBytes, 0))), human(uint64(max(p.TotalBytes, 0))), human(uint64(max(p.RateBytesPerSec, 0))), eta)
}

// clock prints seconds as m:ss or h:mm:ss.
func clock(sec float64) string {
	s := int64(sec + 0.5)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
