package daemon

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/blkrep/blkrep/failover"
	"github.com/blkrep/blkrep/internal/control"
)

// What automatic failover shows the operator: its part of the status
// document (and so of the metrics, which are taken from it) and the
// "failover" events.

// addFailoverStatus fills in the failover state of st's volumes, the
// volumes this node only votes for (a witness) and the gossip members.
// It does nothing on a node without automatic failover.
func (d *Daemon) addFailoverStatus(st *control.Status) {
	if d.runner == nil {
		return
	}
	var members []failover.Member
	if d.gossip != nil {
		members = d.gossip.Members()
	}
	g := &control.Gossip{Address: d.node.Gossip, Witness: d.node.Witness, Members: []control.Member{}}
	for _, m := range members {
		cm := control.Member{Name: m.Name, Address: m.Addr, State: m.State.String(), Witness: m.Meta.Witness}
		if m.MetaErr != nil {
			cm.Error = m.MetaErr.Error()
		}
		g.Members = append(g.Members, cm)
	}
	st.Gossip = g
	for _, s := range d.runner.Status() {
		f := control.Failover{
			Term: s.Term, Primary: s.Primary, IsPrimary: s.IsPrimary, Accepting: s.Accepting,
			Quorum: s.Quorum, VotersSeen: nonNil(s.Seen), OutdatedPeers: nonNil(s.Outdated),
			OutdatedConfirmed: nonNil(s.Confirmed), DataTerm: s.DataTerm, Why: s.Why,
			Voters: []string{}, VotersCounted: []string{},
		}
		for i := range d.cfg.Volumes {
			if vc := &d.cfg.Volumes[i]; vc.Name == s.Volume {
				f.Voters = append(f.Voters, vc.Voters(d.cfg)...)
			}
		}
		f.VotersCounted = append(f.VotersCounted, s.Counted...)
		f.Fenced = nonNil(s.Fenced)
		var vol *control.Volume
		for i := range st.Volumes {
			if st.Volumes[i].Name == s.Volume {
				vol = &st.Volumes[i]
			}
		}
		for _, v := range d.volumes {
			if v.cfg.Name == s.Volume && v.gate != nil {
				f.Writes, f.WritesWaiting = v.gate.Mode().String(), v.gate.Waiting()
			}
		}
		if vol != nil {
			vol.Failover = &f
		} else {
			st.WitnessVolumes = append(st.WitnessVolumes, control.WitnessVolume{Name: s.Volume, Failover: f})
		}
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return slices.Clone(s)
}

// failoverNotify returns the runner's Notify hook: it publishes a
// "failover" event saying what changed in a volume's failover state. It
// is called from the runner's loop (and once per volume from
// StartRunner, before d.runner and d.gossip are set: it touches neither).
func (d *Daemon) failoverNotify() func(failover.VolumeStatus) {
	var mu sync.Mutex
	last := map[string]failover.VolumeStatus{}
	return func(s failover.VolumeStatus) {
		mu.Lock()
		old, had := last[s.Volume]
		last[s.Volume] = s
		mu.Unlock()
		if msg := failoverChange(d.node.Name, old, had, s); msg != "" {
			d.bus.Publish(control.Event{Volume: s.Volume, Kind: control.EventFailover, Message: msg})
		}
	}
}

// failoverChange describes for the operator what changed from old to s
// (the whole state when !had): "term 2 -> 3, primary alpha -> beta (this
// node), this node became primary; why: ...". "" when nothing did.
func failoverChange(self string, old failover.VolumeStatus, had bool, s failover.VolumeStatus) string {
	var parts []string
	add := func(format string, args ...any) { parts = append(parts, fmt.Sprintf(format, args...)) }
	who := func(n string) string {
		switch n {
		case "":
			return "none known"
		case self:
			return n + " (this node)"
		}
		return n
	}
	if !had {
		add("term %d", s.Term)
		add("primary %s", who(s.Primary))
	} else {
		if s.Term != old.Term {
			add("term %d -> %d", old.Term, s.Term)
		}
		if s.Primary != old.Primary {
			add("primary %s -> %s", who(old.Primary), who(s.Primary))
		}
	}
	switch {
	case s.IsPrimary && (!had || !old.IsPrimary):
		add("this node became primary")
	case !s.IsPrimary && had && old.IsPrimary:
		add("this node stepped down")
	}
	switch {
	case s.Accepting && (!had || !old.Accepting):
		add("accepting writes")
	case !s.Accepting && had && old.Accepting:
		add("STOPPED accepting writes")
	case s.IsPrimary && !s.Accepting && (!had || !old.IsPrimary):
		add("holding writes")
	}
	seen := strings.Join(s.Seen, " ")
	switch {
	case !had && s.Quorum, had && s.Quorum && !old.Quorum:
		add("quorum (sees %s)", seen)
	case !s.Quorum && (!had || old.Quorum):
		add("NO QUORUM (sees %s)", seen)
	case !slices.Equal(s.Seen, old.Seen):
		add("sees %s", seen)
	}
	if !slices.Equal(s.Outdated, old.Outdated) || !slices.Equal(s.Confirmed, old.Confirmed) {
		if len(s.Outdated) == 0 {
			if had && len(old.Outdated) > 0 {
				add("no outdated peers")
			}
		} else {
			var o []string
			for _, p := range s.Outdated {
				if slices.Contains(s.Confirmed, p) {
					o = append(o, p+" (confirmed)")
				} else {
					o = append(o, p+" (not yet confirmed)")
				}
			}
			add("outdated peers %s", strings.Join(o, ", "))
		}
	}
	if had && s.DataTerm != old.DataTerm {
		add("data term %d -> %d", old.DataTerm, s.DataTerm)
	} else if !had && s.DataTerm != 0 {
		add("data term %d", s.DataTerm)
	}
	msg := strings.Join(parts, ", ")
	if s.Why != "" && (!had || s.Why != old.Why) {
		if msg != "" {
			msg += "; "
		}
		msg += "why: " + s.Why
	}
	return msg
}
