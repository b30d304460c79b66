package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/blkrep/blkrep/internal/control"
)

// printGossip prints the node's failover gossip for `blkrep status`:
// "gossip   10.0.0.1:7946: alpha alive (this node), beta DEAD, witness
// alive (witness)". States that cost quorum are in capitals.
func printGossip(w io.Writer, st *control.Status) {
	g := st.Gossip
	if g == nil {
		return
	}
	var ms []string
	for _, m := range g.Members {
		s := m.Name + " " + memberState(m.State)
		var notes []string
		if m.Name == st.Node {
			notes = append(notes, "this node")
		}
		if m.Witness {
			notes = append(notes, "witness")
		}
		if m.Error != "" {
			notes = append(notes, "unreadable state: "+m.Error)
		}
		if len(notes) > 0 {
			s += " (" + strings.Join(notes, ", ") + ")"
		}
		ms = append(ms, s)
	}
	if len(ms) == 0 {
		ms = append(ms, "no members yet")
	}
	fmt.Fprintf(w, "gossip   %s: %s\n", g.Address, strings.Join(ms, ", "))
	if g.Witness {
		fmt.Fprintf(w, "witness  this node votes in failover elections and holds no data\n")
	}
}

func memberState(s string) string {
	switch s {
	case "suspect", "dead":
		return strings.ToUpper(s)
	}
	return s
}

// printWitnessVolumes prints the volumes a witness votes for.
func printWitnessVolumes(w io.Writer, st *control.Status) {
	for _, v := range st.WitnessVolumes {
		fmt.Fprintf(w, "\n%s  witness: votes, no replica on this node\n", v.Name)
		printFailover(w, st, &v.Failover)
	}
}

// printFailover prints a volume's failover state:
//
//	failover term 3, primary beta (this node), accepting writes, quorum 3/3 (alpha beta witness)
//	         data term 3, outdated peers: alpha (confirmed)
//	         why: primary of term 3 with a majority lease
func printFailover(w io.Writer, st *control.Status, f *control.Failover) {
	if f == nil {
		return
	}
	const indent = "             "
	fmt.Fprintf(w, "    failover %s\n", failoverSummary(st, f))
	var more []string
	if f.Writes != "" {
		more = append(more, fmt.Sprintf("data term %d", f.DataTerm))
	}
	if len(f.OutdatedPeers) > 0 {
		var o []string
		for _, p := range f.OutdatedPeers {
			if slices.Contains(f.OutdatedConfirmed, p) {
				o = append(o, p+" (confirmed: cannot be promoted until resynced)")
			} else {
				o = append(o, p+" (NOT YET CONFIRMED by a majority: writes it misses wait)")
			}
		}
		more = append(more, "outdated peers: "+strings.Join(o, ", "))
	}
	if len(f.Fenced) > 0 {
		more = append(more, "fenced by the fence-peer handler (not counted until back): "+strings.Join(f.Fenced, ", "))
	}
	if len(more) > 0 {
		fmt.Fprintf(w, "%s%s\n", indent, strings.Join(more, ", "))
	}
	if f.Why != "" {
		fmt.Fprintf(w, "%swhy: %s\n", indent, f.Why)
	}
}

// failoverSummary is the first line: "term 3, primary beta (this node),
// accepting writes, quorum 3/3 (alpha beta witness)".
func failoverSummary(st *control.Status, f *control.Failover) string {
	parts := []string{fmt.Sprintf("term %d", f.Term)}
	switch {
	case f.Primary == "":
		parts = append(parts, "no primary known")
	case f.IsPrimary:
		parts = append(parts, "primary "+f.Primary+" (this node)")
	case f.Primary == st.Node:
		parts = append(parts, "primary "+f.Primary+" (this node, stepped down)")
	default:
		parts = append(parts, "primary "+f.Primary)
	}
	if f.IsPrimary {
		var s string
		switch {
		case f.Writes == "fail":
			s = "FAILING writes (EIO)"
		case f.Writes == "hold", f.Writes == "" && !f.Accepting:
			s = "HOLDING writes"
		default:
			s = "accepting writes"
		}
		if f.WritesWaiting > 0 {
			s += fmt.Sprintf(" (%d waiting)", f.WritesWaiting)
		}
		parts = append(parts, s)
	}
	q := "quorum"
	if !f.Quorum {
		q = "NO QUORUM"
	}
	q += fmt.Sprintf(" %d/%d", len(f.VotersSeen), len(f.VotersCounted))
	in := []string{strings.Join(f.VotersSeen, " ")}
	if in[0] == "" {
		in[0] = "none seen"
	}
	for _, v := range f.VotersCounted {
		if !slices.Contains(f.VotersSeen, v) {
			in = append(in, v+" "+missingState(st, v))
		}
	}
	for _, v := range f.Voters {
		if !slices.Contains(f.VotersCounted, v) {
			in = append(in, v+" left")
		}
	}
	parts = append(parts, q+" ("+strings.Join(in, "; ")+")")
	return strings.Join(parts, ", ")
}

// missingState says why a counted voter is not seen, from the gossip.
func missingState(st *control.Status, node string) string {
	if st.Gossip != nil {
		for _, m := range st.Gossip.Members {
			if m.Name == node {
				return memberState(m.State)
			}
		}
	}
	return "UNREACHABLE"
}
