package main

import (
	"fmt"
	"io"
	"time"

	"github.com/blkrep/blkrep/internal/control"
)

// printReplication prints a volume's peers for `blkrep status`: what is
// wrong first (split brain), then state, backlog, handshake, progress.
func printReplication(w io.Writer, v *control.Volume) {
	const indent = "             "
	for _, p := range v.Peers {
		fmt.Fprintf(w, "    peer     %s (%s)  connection:%s  replication:%s", p.Node, p.Address, p.Connection, p.Replication)
		if v.Protocol != "" {
			fmt.Fprintf(w, "  protocol:%s", v.Protocol)
		}
		fmt.Fprintf(w, "  role:%s  disk:%s\n", p.Role, p.Disk)
		if p.SplitBrain {
			fmt.Fprintf(w, "%sSPLIT BRAIN: run 'blkrep resync %s --discard-my-data' on the node whose changes to drop\n", indent, v.Name)
		}
		fmt.Fprintf(w, "%sout of sync %s (%d bytes)  unacked %s, %d writes in flight\n", indent,
			human(uint64(max(p.OutOfSyncBytes, 0))), p.OutOfSyncBytes, human(uint64(max(p.UnackedBytes, 0))), p.InFlightWrites)
		fmt.Fprintf(w, "%ssent %s  received %s  reconnects %d\n", indent, human(p.SentBytes), human(p.ReceivedBytes), p.Reconnects)
		if h := p.Handshake; h != nil {
			fmt.Fprintf(w, "%shandshake %s: rule %s -> %s (generation here %s, peer %s)\n", indent,
				h.At.Format(time.RFC3339), h.Rule, h.Action, h.LocalCurrent, h.PeerCurrent)
		}
		printProgress(w, indent, v.Name, "resync", p.Resync)
		printProgress(w, indent, v.Name, "verify", p.Verify)
		if p.LastError != "" {
			fmt.Fprintf(w, "%slast error: %s\n", indent, p.LastError)
		}
	}
}

// printProgress prints a running resync or verify as a progress bar, a
// finished one as its outcome.
func printProgress(w io.Writer, indent, vol, what string, p *control.Progress) {
	if p == nil {
		return
	}
	fmt.Fprintf(w, "%s%s ", indent, what)
	if p.Running {
		fmt.Fprint(w, progressBar(p))
		if p.Checksum && p.SkippedBytes > 0 {
			fmt.Fprintf(w, "  (%s identical, not sent)", human(uint64(p.SkippedBytes)))
		}
		if p.MismatchBytes > 0 {
			fmt.Fprintf(w, "  (%s differ so far)", human(uint64(p.MismatchBytes)))
		}
		fmt.Fprintln(w)
		return
	}
	when := ""
	if p.FinishedAt != nil {
		when = " " + p.FinishedAt.Format(time.RFC3339)
	}
	if p.DoneBytes < p.TotalBytes {
		fmt.Fprintf(w, "stopped%s at %.1f%% (%s of %s)\n", when, percent(p.DoneBytes, p.TotalBytes), human(uint64(p.DoneBytes)), human(uint64(p.TotalBytes)))
		return
	}
	fmt.Fprintf(w, "done%s: %s", when, human(uint64(p.DoneBytes)))
	if p.FinishedAt != nil {
		fmt.Fprintf(w, " in %s", p.FinishedAt.Sub(p.StartedAt).Round(time.Second))
	}
	switch {
	case what == "verify" && p.MismatchBytes > 0:
		fmt.Fprintf(w, "; %s (%d bytes) DIFFER, marked out of sync: run 'blkrep resync %s'", human(uint64(p.MismatchBytes)), p.MismatchBytes, vol)
	case what == "verify":
		fmt.Fprint(w, "; no differences")
	case p.SkippedBytes > 0:
		fmt.Fprintf(w, "; %s found identical by checksum, not sent", human(uint64(p.SkippedBytes)))
	}
	fmt.Fprintln(w)
}
