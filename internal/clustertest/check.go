package clustertest

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// LogLine is one JSON line of a daemon's log.
type LogLine struct {
	Node   string // whose log
	Time   time.Time
	Msg    string
	Fields map[string]any
}

// Str returns a field as a string ("" if absent).
func (l LogLine) Str(key string) string {
	switch v := l.Fields[key].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

// Logs parses a node's log (lines that are not JSON are skipped).
func (c *Cluster) Logs(name string) ([]LogLine, error) {
	n, err := c.mustNode(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(n.Log)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []LogLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		l := LogLine{Node: name, Fields: m}
		l.Msg, _ = m["msg"].(string)
		if ts, ok := m["time"].(string); ok {
			l.Time, _ = time.Parse(time.RFC3339Nano, ts)
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// FirstLog returns the first line of a node's log at or after after that
// match accepts.
func (c *Cluster) FirstLog(name string, after time.Time, match func(LogLine) bool) (LogLine, bool) {
	ls, err := c.Logs(name)
	if err != nil {
		return LogLine{}, false
	}
	for _, l := range ls {
		if !l.Time.Before(after) && match(l) {
			return l, true
		}
	}
	return LogLine{}, false
}

// GossipConverged reports whether every running node's gossip sees every
// other node alive: in each node's log since its last start, the last
// "member STATE" line about each other node says alive. After a healed
// partition this is what lets the old primary hear of the newer term.
func (c *Cluster) GossipConverged() (bool, string) {
	for _, n := range c.Nodes {
		if !n.Running() {
			return false, n.Name + " is not running"
		}
		ls, err := c.Logs(n.Name)
		if err != nil {
			return false, err.Error()
		}
		state := map[string]string{}
		for _, l := range ls {
			if l.Msg == startMark {
				clear(state)
			}
			if st, ok := strings.CutPrefix(l.Msg, "member "); ok && !strings.Contains(st, " ") {
				state[l.Str("node")] = st
			}
		}
		for _, o := range c.Nodes {
			if o != n && state[o.Name] != "alive" {
				return false, fmt.Sprintf("%s's gossip sees %s as %q", n.Name, o.Name, state[o.Name])
			}
		}
	}
	return true, ""
}

// WaitGossipConverged waits for GossipConverged.
func (c *Cluster) WaitGossipConverged(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, why := c.GossipConverged()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gossip not converged after %s: %s", timeout, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Promotion is a node's promotion by automatic failover, from its log.
type Promotion struct {
	Node string
	Term uint64
	Time time.Time
}

// promotedMsg starts the log message of a promotion (failover/runner.go).
const promotedMsg = "promoted by automatic failover"

// Promotions lists the promotions the data nodes logged, by time.
func (c *Cluster) Promotions() ([]Promotion, error) {
	var out []Promotion
	for _, name := range DataNodes {
		ls, err := c.Logs(name)
		if err != nil {
			return nil, err
		}
		for _, l := range ls {
			if strings.HasPrefix(l.Msg, promotedMsg) {
				p := Promotion{Node: name, Time: l.Time}
				if t, ok := l.Fields["term"].(float64); ok {
					p.Term = uint64(t)
				}
				out = append(out, p)
			}
		}
	}
	slices.SortFunc(out, func(a, b Promotion) int { return a.Time.Compare(b.Time) })
	return out, nil
}

// Tenure is one promotion's time as primary, as the writer saw it.
type Tenure struct {
	Promotion
	Acks        int
	First, Last time.Time // first and last acknowledgement
}

// CheckSingleWriter is check (a): each acknowledged write is attributed to
// its node's latest promotion before it; every acknowledgement of a
// tenure must precede the first one of every later tenure. It returns the
// tenures (for reports) and an error listing the violations.
func CheckSingleWriter(h *History, promos []Promotion) ([]Tenure, error) {
	ts := make([]Tenure, len(promos))
	for i, p := range promos {
		ts[i].Promotion = p
	}
	var errs []error
	orphans := 0
	for _, w := range h.Writes {
		if w.Acked.IsZero() {
			continue
		}
		idx := -1
		for i := range ts {
			if ts[i].Node == w.Node && !ts[i].Time.After(w.Acked) {
				idx = i
			}
		}
		if idx < 0 {
			if orphans++; orphans <= 5 {
				errs = append(errs, fmt.Errorf("write %v acknowledged at %s by %s, which had not been promoted (no %q line in its log before)",
					w.Tag, w.Acked.Format("15:04:05.000000"), w.Node, promotedMsg))
			}
			continue
		}
		t := &ts[idx]
		if t.Acks == 0 || w.Acked.Before(t.First) {
			t.First = w.Acked
		}
		if w.Acked.After(t.Last) {
			t.Last = w.Acked
		}
		t.Acks++
	}
	if orphans > 5 {
		errs = append(errs, fmt.Errorf("... %d acknowledgements without a promotion in all", orphans))
	}
	var prev *Tenure
	for i := range ts {
		t := &ts[i]
		if t.Acks == 0 {
			continue
		}
		if prev != nil && !t.First.After(prev.Last) {
			errs = append(errs, fmt.Errorf("two primaries acknowledged writes at once: %s (term %d) acknowledged until %s, %s (term %d, promoted %s) from %s",
				prev.Node, prev.Term, prev.Last.Format("15:04:05.000000"), t.Node, t.Term, t.Time.Format("15:04:05.000000"), t.First.Format("15:04:05.000000")))
		}
		if prev == nil || t.Last.After(prev.Last) {
			prev = t
		}
	}
	if len(errs) > 0 {
		return ts, fmt.Errorf("check (a): %w", errors.Join(errs...))
	}
	return ts, nil
}

// DurableReport sums up check (b).
type DurableReport struct {
	Blocks  int64 // blocks checked
	Written int   // blocks written at least once
	Acked   int   // blocks with at least one acknowledged write
	// InDoubt counts blocks holding a write that was never acknowledged
	// (sent after the block's last acknowledged write): allowed.
	InDoubt int
	// Lost counts blocks whose last acknowledged write is missing.
	Lost int
}

// CheckDurable is check (b): data is the volume as the final primary
// serves it. For every block, the content must be the block's last
// acknowledged write, or a later write that was sent (and not
// acknowledged); a block without an acknowledged write may also be
// zero. Anything else (an older write, a corrupt block) is a lost write.
func CheckDurable(h *History, data []byte) (DurableReport, error) {
	rep := DurableReport{Blocks: h.Blocks}
	if int64(len(data)) < h.Blocks*BlockSize {
		return rep, fmt.Errorf("check (b): %d bytes read, the writer used %d blocks", len(data), h.Blocks)
	}
	bySeq := make(map[uint64]*Write, len(h.Writes))
	latest := make(map[int64]uint64) // block -> last acknowledged seq
	written := make(map[int64]bool)
	for i := range h.Writes {
		w := &h.Writes[i]
		bySeq[w.Seq] = w
		b := w.Offset / BlockSize
		written[b] = true
		if !w.Acked.IsZero() && w.Seq > latest[b] {
			latest[b] = w.Seq
		}
	}
	rep.Written, rep.Acked = len(written), len(latest)
	var errs []error
	report := func(err error) {
		rep.Lost++
		if rep.Lost <= 10 {
			errs = append(errs, err)
		}
	}
	for b := int64(0); b < h.Blocks; b++ {
		off := b * BlockSize
		want := latest[b]
		t, zero, err := DecodeTag(data[off : off+BlockSize])
		switch {
		case err != nil:
			report(fmt.Errorf("block at %d: %v (last acknowledged write: %s)", off, err, describe(bySeq[want])))
		case zero:
			if want != 0 {
				report(fmt.Errorf("block at %d is zero; its last acknowledged write was %s", off, describe(bySeq[want])))
			}
		default:
			w := bySeq[t.Seq]
			switch {
			case w == nil || w.Offset != off || w.Node != t.Node || !w.Issued.Equal(t.Issued):
				report(fmt.Errorf("block at %d holds %v, which the writer never sent there", off, t))
			case t.Seq < want:
				report(fmt.Errorf("block at %d holds the older write %s; the last acknowledged one was %s", off, describe(w), describe(bySeq[want])))
			case t.Seq > want:
				rep.InDoubt++
			}
		}
	}
	if rep.Lost > 10 {
		errs = append(errs, fmt.Errorf("... %d blocks in all", rep.Lost))
	}
	if len(errs) > 0 {
		return rep, fmt.Errorf("check (b): %d acknowledged writes lost: %w", rep.Lost, errors.Join(errs...))
	}
	return rep, nil
}

func describe(w *Write) string {
	if w == nil {
		return "none"
	}
	s := w.Tag.String()
	if !w.Acked.IsZero() {
		s += ", acknowledged at " + w.Acked.Format("15:04:05.000000")
		if w.Late {
			s += " (late)"
		}
	} else {
		s += ", not acknowledged: " + w.Err
	}
	return s
}

// Summary counts a history's writes.
func (h *History) Summary() string {
	var acked, late, failed int
	byNode := map[string]int{}
	for _, w := range h.Writes {
		switch {
		case !w.Acked.IsZero():
			acked++
			byNode[w.Node]++
			if w.Late {
				late++
			}
		default:
			failed++
		}
	}
	var nodes []string
	for n, k := range byNode {
		nodes = append(nodes, fmt.Sprintf("%s %d", n, k))
	}
	slices.Sort(nodes)
	return fmt.Sprintf("%d writes: %d acknowledged (%s; %d late), %d not acknowledged", len(h.Writes), acked, strings.Join(nodes, ", "), late, failed)
}

// Switches lists the times the acknowledging node changed, in ack order
// (for reports).
func (h *History) Switches() []string {
	acks := slices.DeleteFunc(slices.Clone(h.Writes), func(w Write) bool { return w.Acked.IsZero() })
	slices.SortFunc(acks, func(a, b Write) int { return cmp.Compare(a.Acked.UnixNano(), b.Acked.UnixNano()) })
	var out []string
	for i := 1; i < len(acks); i++ {
		if acks[i].Node != acks[i-1].Node {
			out = append(out, fmt.Sprintf("%s last %s -> %s first %s (gap %s)", acks[i-1].Node, acks[i-1].Acked.Format("15:04:05.000"),
				acks[i].Node, acks[i].Acked.Format("15:04:05.000"), acks[i].Acked.Sub(acks[i-1].Acked).Round(time.Millisecond)))
		}
	}
	return out
}
