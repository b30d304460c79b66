package check

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Protocol is the replication protocol the history ran under: 'A', 'B'
// or 'C'.
type Protocol byte

// The protocols.
const (
	ProtocolA Protocol = 'A' // asynchronous: acked once written locally
	ProtocolB Protocol = 'B' // memory synchronous: acked once the peer received it
	ProtocolC Protocol = 'C' // synchronous: acked once the peer wrote it
)

func (p Protocol) String() string { return string(rune(p)) }

// The kinds of violation.
const (
	KindNeverWritten = "never written" // content no recorded write put there
	KindLost         = "lost"          // a required write is missing, or an older version is there
	KindCut          = "cut"           // a write is present, an earlier flushed one of its tenure is not
	KindShort        = "short image"   // the image ends before a required write does
)

// kindRank orders violations of one sector.
var kindRank = map[string]int{KindNeverWritten: 0, KindLost: 1, KindCut: 2, KindShort: 3}

// Violation is one finding against the image: a run of consecutive
// sectors with the same kind, found and wanted write.
type Violation struct {
	Kind  string
	Off   int64  // byte offset of the first sector
	Len   int64  // bytes: the sectors of the run
	Found uint64 // the write the sector holds (0: zero, or not a stamp)
	Want  uint64 // the write that must be there at least (0: none)
	Msg   string // about the first sector of the run
	// History is the lines of the history relevant to it: the involved
	// writes and flushes and the events from the first of them on,
	// merged by time, at most about 30 lines. Only the first 100
	// violations of a report get one (maxDetailed).
	History []string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s [%d+%d): %s", v.Kind, v.Off, v.Len, v.Msg)
}

// Report is the judgement of an image against a history.
type Report struct {
	Protocol Protocol

	Writes, Acked, Failed, InFlight int // recorded writes by outcome
	Flushes, FlushesAcked           int

	Sectors        int // in the image
	SectorsWritten int // covered by some recorded write
	Required       int // writes that must be present (flushed, or by the strong rule)
	Strong         int // of those, writes required only by the strong rule (B, C)
	Excused        int // acked writes of B or C not required: a power loss came after them
	Torn           int // sectors showing an older version while their write shows elsewhere

	Violations []Violation // by offset
}

// OK reports whether the image passed.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

// String is a short summary table.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "protocol    %s\n", r.Protocol)
	fmt.Fprintf(&b, "writes      %-8d acked %d, failed %d, in flight %d\n", r.Writes, r.Acked, r.Failed, r.InFlight)
	fmt.Fprintf(&b, "flushes     %-8d acked %d\n", r.Flushes, r.FlushesAcked)
	fmt.Fprintf(&b, "sectors     %-8d written %d, torn %d\n", r.Sectors, r.SectorsWritten, r.Torn)
	fmt.Fprintf(&b, "required    %-8d strong %d, excused by a power loss %d\n", r.Required, r.Strong, r.Excused)
	fmt.Fprintf(&b, "violations  %d\n", len(r.Violations))
	return b.String()
}

// maxListed is how many violations Err lists.
const maxListed = 10

// Err returns nil if the image passed, else an error listing the first
// violations with their history lines.
func (r *Report) Err() error {
	if r.OK() {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "protocol %s: %d violations", r.Protocol, len(r.Violations))
	for i, v := range r.Violations {
		if i == maxListed {
			fmt.Fprintf(&b, "\n... and %d more", len(r.Violations)-maxListed)
			break
		}
		fmt.Fprintf(&b, "\n%s", v)
		for _, l := range v.History {
			fmt.Fprintf(&b, "\n    %s", l)
		}
	}
	return errors.New(b.String())
}

// Why a write is required.
const (
	notRequired = iota
	byFlush     // an acked flush of its tenure was issued after it was acked
	byFUA       // acked with FUA (B, C)
	byStrong    // acked under B or C with no power loss after it
)

// tenure holds one tenure's acknowledged flushes.
type tenure struct {
	byIssued []int  // indices into flushes, by Issued (which is by ID)
	byDone   []int  // the same, by Done
	best     []int  // best[k]: the flush of byDone[:k+1] issued last
	cut      int64  // the cut: writes acked before this tick must be present; 0: none
	cutV     uint64 // the present write that set cut
	cutF     int    // the flush that set cut
	// maxReq: Issued of the last acked flush that makes writes required
	// (rule 2: under A and B only a flush the peers acknowledged).
	maxReq int64
}

type judge struct {
	p         Protocol
	writes    []Write
	flushes   []Flush
	events    []Event
	image     []byte
	n         int // sectors
	tenures   map[int]*tenure
	why       []uint8  // per write index: why required
	lastPower int64    // At of the last power loss event, 0: none
	want      []uint64 // per sector: the newest required write
	found     []uint64
	bad       []bool // sector judged never written
	out       []Violation
	open      map[string]openRun
}

type openRun struct {
	i     int // index into out
	end   int // sector after the run
	found uint64
	want  uint64
	key   string
}

// maxDetailed is how many violations get their history lines.
const maxDetailed = 100

// Judge judges image, the device as the final primary serves it from
// offset 0, against the history h of a workload run under protocol p.
// See the package documentation for the rules.
func Judge(p Protocol, h *History, image []byte) *Report {
	if p != ProtocolA && p != ProtocolB && p != ProtocolC {
		panic(fmt.Sprintf("check.Judge: unknown protocol %q", byte(p)))
	}
	writes, flushes, events := h.Snapshot()
	j := &judge{p: p, writes: writes, flushes: flushes, events: events, image: image,
		n: len(image) / SectorSize, tenures: map[int]*tenure{}, open: map[string]openRun{}}
	r := &Report{Protocol: p, Writes: len(writes), Flushes: len(flushes), Sectors: j.n}
	for _, w := range writes {
		switch {
		case w.Acked:
			r.Acked++
		case w.Done != 0:
			r.Failed++
		default:
			r.InFlight++
		}
	}
	for i, f := range flushes {
		if !f.Acked {
			continue
		}
		r.FlushesAcked++
		t := j.tenure(f.Tenure)
		t.byIssued = append(t.byIssued, i)
		if p == ProtocolC || f.PeerAcked {
			t.maxReq = max(t.maxReq, f.Issued)
		}
	}
	for _, t := range j.tenures {
		t.byDone = slices.Clone(t.byIssued)
		slices.SortFunc(t.byDone, func(a, b int) int { return cmp.Compare(flushes[a].Done, flushes[b].Done) })
		t.best = make([]int, len(t.byDone))
		for k, fi := range t.byDone {
			t.best[k] = fi
			if k > 0 && flushes[t.best[k-1]].Issued > flushes[fi].Issued {
				t.best[k] = t.best[k-1]
			}
		}
	}
	for _, e := range events {
		if e.PowerLoss {
			j.lastPower = max(j.lastPower, e.At)
		}
	}

	// Rules 2 and 3: which writes are required.
	j.why = make([]uint8, len(writes))
	short := -1
	for i, w := range writes {
		if !w.Acked {
			continue
		}
		flushed := false
		if t := j.tenures[w.Tenure]; t != nil && t.maxReq > w.Done {
			flushed, j.why[i] = true, byFlush
		} else if w.FUA && p != ProtocolA {
			flushed, j.why[i] = true, byFUA
		}
		if !flushed && p != ProtocolA {
			if j.lastPower > w.Done {
				r.Excused++
				continue
			}
			j.why[i] = byStrong
			r.Strong++
		}
		if j.why[i] != notRequired {
			r.Required++
			if w.Off+w.Len > int64(j.n)*SectorSize && (short < 0 || w.Off+w.Len > writes[short].Off+writes[short].Len) {
				short = i
			}
		}
	}

	// Which sectors some write covers.
	cover := make([]int32, j.n+1)
	for _, w := range writes {
		lo, hi := j.span(w)
		if lo < hi {
			cover[lo]++
			cover[hi]--
		}
	}
	for s, c := 0, int32(0); s < j.n; s++ {
		c += cover[s]
		cover[s] = c
		if c > 0 {
			r.SectorsWritten++
		}
	}

	// Rule 4: per sector, the newest required write (or a later one) must
	// be there.
	j.want = j.paint(func(i int) bool { return j.why[i] != notRequired })
	want := j.want

	// Rule 1: read every sector.
	j.found = make([]uint64, j.n)
	j.bad = make([]bool, j.n)
	present := make([]bool, len(writes)+1)
	for s := range j.n {
		off := int64(s) * SectorSize
		sec := image[off : off+SectorSize]
		if cover[s] == 0 {
			if !bytes.Equal(sec, zeroSector[:]) {
				id, _, _ := Decode(sec, off)
				j.neverWritten(s, id, "uncovered", "no recorded write covers this sector, but it is not zero: "+describe(sec, off))
			}
			continue
		}
		id, zero, bad, at := decode(sec, off)
		switch {
		case zero:
		case bad != stampOK:
			key := fmt.Sprint("bad", bad)
			if bad == badPlace {
				key = fmt.Sprint("place", at-off)
			}
			j.neverWritten(s, id, key, badError(sec, off, id, bad, at).Error())
		case id == 0 || id > uint64(len(writes)):
			j.neverWritten(s, id, "unknown", fmt.Sprintf("stamp of write #%d, which was never recorded", id))
		case !covers(writes[id-1], s):
			w := writes[id-1]
			j.neverWritten(s, id, "foreign", fmt.Sprintf("stamp of write #%d [%d+%d), which does not cover this sector", id, w.Off, w.Len))
		default:
			j.found[s] = id
			present[id] = true
		}
	}

	// Rule 5: per tenure, the cut the present writes imply.
	for id := 1; id < len(present); id++ {
		if !present[id] {
			continue
		}
		v := writes[id-1]
		t := j.tenures[v.Tenure]
		if t == nil {
			continue
		}
		k := sort.Search(len(t.byDone), func(k int) bool { return flushes[t.byDone[k]].Done >= v.Issued })
		if k == 0 {
			continue
		}
		if f := t.best[k-1]; flushes[f].Issued > t.cut {
			t.cut, t.cutV, t.cutF = flushes[f].Issued, v.ID, f
		}
	}
	cut := j.paint(func(i int) bool {
		w := writes[i]
		t := j.tenures[w.Tenure]
		return w.Acked && t != nil && w.Done < t.cut
	})
	// Rule 6: torn writes.
	newest := j.paint(func(i int) bool { return present[i+1] })

	for s := range j.n {
		if j.bad[s] {
			continue
		}
		f := j.found[s]
		if newest[s] > f {
			r.Torn++
		}
		if want[s] > f {
			j.add(KindLost, s, f, want[s], "", func() string { return j.lostMsg(f, want[s]) })
		}
		if cut[s] > f {
			j.add(KindCut, s, f, cut[s], "", func() string { return j.cutMsg(f, cut[s]) })
		}
	}
	if short >= 0 {
		w := writes[short]
		end := int64(j.n) * SectorSize
		j.out = append(j.out, Violation{Kind: KindShort, Off: end, Len: w.Off + w.Len - end, Want: w.ID,
			Msg: fmt.Sprintf("the image is %d bytes, required write #%d [%d+%d) ends at %d", len(image), w.ID, w.Off, w.Len, w.Off+w.Len)})
	}

	slices.SortStableFunc(j.out, func(a, b Violation) int {
		return cmp.Or(cmp.Compare(a.Off, b.Off), cmp.Compare(kindRank[a.Kind], kindRank[b.Kind]))
	})
	for i := range j.out[:min(len(j.out), maxDetailed)] {
		j.out[i].History = j.history(&j.out[i])
	}
	r.Violations = j.out
	return r
}

func (j *judge) tenure(n int) *tenure {
	t := j.tenures[n]
	if t == nil {
		t = &tenure{}
		j.tenures[n] = t
	}
	return t
}

// span returns the sectors of the image w covers: [lo, hi).
func (j *judge) span(w Write) (lo, hi int) {
	lo = int(min(w.Off/SectorSize, int64(j.n)))
	hi = int(min((w.Off+w.Len)/SectorSize, int64(j.n)))
	return lo, hi
}

func covers(w Write, s int) bool {
	off := int64(s) * SectorSize
	return w.Off <= off && off < w.Off+w.Len
}

// paint returns, per sector, the highest ID among the writes take accepts
// (by index) that cover it, 0 if none: the writes from the newest down,
// each filling the sectors no newer one filled, skipping filled ones with
// a union-find, so the cost is the number of sectors plus writes, not the
// sum of the writes' lengths.
func (j *judge) paint(take func(i int) bool) []uint64 {
	out := make([]uint64, j.n)
	next := make([]int32, j.n+1) // next[s]: a sector at or after s, the first unfilled after following links
	for s := range next {
		next[s] = int32(s)
	}
	find := func(s int) int {
		for int(next[s]) != s {
			next[s] = next[next[s]] // path halving
			s = int(next[s])
		}
		return s
	}
	for i := len(j.writes) - 1; i >= 0; i-- {
		if !take(i) {
			continue
		}
		lo, hi := j.span(j.writes[i])
		for s := find(lo); s < hi; s = find(s + 1) {
			out[s] = j.writes[i].ID
			next[s] = int32(s + 1)
		}
	}
	return out
}

// add records a finding at sector s, extending the open run of its kind
// if it continues it.
func (j *judge) add(kind string, s int, found, want uint64, key string, msg func() string) {
	if o, ok := j.open[kind]; ok && o.end == s && o.found == found && o.want == want && o.key == key {
		j.out[o.i].Len += SectorSize
		o.end++
		j.open[kind] = o
		return
	}
	j.out = append(j.out, Violation{Kind: kind, Off: int64(s) * SectorSize, Len: SectorSize, Found: found, Want: want, Msg: msg()})
	j.open[kind] = openRun{i: len(j.out) - 1, end: s + 1, found: found, want: want, key: key}
}

func (j *judge) neverWritten(s int, id uint64, key, msg string) {
	j.bad[s] = true
	want := j.want[s]
	if want != 0 {
		msg += fmt.Sprintf("; write #%d is required here", want)
	}
	j.add(KindNeverWritten, s, id, want, key, func() string { return msg })
}

func (j *judge) holds(found uint64) string {
	if found == 0 {
		return "the sector is zero"
	}
	return fmt.Sprintf("the sector holds write #%d", found)
}

func (j *judge) lostMsg(found, want uint64) string {
	w := j.writes[want-1]
	var why string
	switch j.why[want-1] {
	case byFlush:
		f := j.flushes[j.flushedBy(w)]
		why = fmt.Sprintf("acked t=%d, then flushed by flush #%d (issued t=%d, acked t=%d)", w.Done, f.ID, f.Issued, f.Done)
	case byFUA:
		why = fmt.Sprintf("acked with FUA t=%d", w.Done)
	default:
		why = fmt.Sprintf("acked t=%d under protocol %s, no power loss after it", w.Done, j.p)
	}
	return fmt.Sprintf("%s, but write #%d is required (%s)", j.holds(found), want, why)
}

func (j *judge) cutMsg(found, want uint64) string {
	w := j.writes[want-1]
	t := j.tenures[w.Tenure]
	f := j.flushes[t.cutF]
	return fmt.Sprintf("write #%d is present but #%d, acknowledged before flush #%d which completed before #%d was issued, is not (%s)",
		t.cutV, want, f.ID, t.cutV, j.holds(found))
}

// flushedBy returns the index of the first acked flush of w's tenure
// issued after w was acked (w must be flushed).
func (j *judge) flushedBy(w Write) int {
	t := j.tenures[w.Tenure]
	k := sort.Search(len(t.byIssued), func(k int) bool { return j.flushes[t.byIssued[k]].Issued > w.Done })
	return t.byIssued[k]
}

// maxLines caps a violation's history lines.
const maxLines = 30

// history returns the lines of the history relevant to v: the records of
// the writes and flushes involved, and the events from the first of them
// on, merged by time, events elided in the middle beyond maxLines.
func (j *judge) history(v *Violation) []string {
	type line struct {
		t int64
		s string
	}
	var recs []line
	seen := map[string]bool{}
	rec := func(t int64, s string) {
		if !seen[s] {
			seen[s] = true
			recs = append(recs, line{t, s})
		}
	}
	addWrite := func(id uint64) {
		if id != 0 && id <= uint64(len(j.writes)) {
			w := j.writes[id-1]
			rec(w.Issued, w.String())
		}
	}
	addWrite(v.Found)
	addWrite(v.Want)
	if v.Want != 0 && v.Kind != KindNeverWritten && j.why[v.Want-1] == byFlush {
		f := j.flushes[j.flushedBy(j.writes[v.Want-1])]
		rec(f.Issued, f.String())
	}
	if v.Kind == KindCut {
		t := j.tenures[j.writes[v.Want-1].Tenure]
		addWrite(t.cutV)
		f := j.flushes[t.cutF]
		rec(f.Issued, f.String())
	}
	from := int64(0)
	if len(recs) > 0 {
		from = slices.MinFunc(recs, func(a, b line) int { return cmp.Compare(a.t, b.t) }).t
	}
	first, _ := slices.BinarySearchFunc(j.events, from, func(e Event, t int64) int { return cmp.Compare(e.At, t) })
	evs := j.events[first:]
	budget := max(maxLines-len(recs), 3)
	var lines []line
	if len(evs) <= budget {
		for _, e := range evs {
			lines = append(lines, line{e.At, e.String()})
		}
	} else {
		head := (budget - 1) / 2
		tail := budget - 1 - head
		for _, e := range evs[:head] {
			lines = append(lines, line{e.At, e.String()})
		}
		lines = append(lines, line{evs[head].At, fmt.Sprintf("... %d events omitted", len(evs)-head-tail)})
		for _, e := range evs[len(evs)-tail:] {
			lines = append(lines, line{e.At, e.String()})
		}
	}
	lines = append(lines, recs...)
	slices.SortStableFunc(lines, func(a, b line) int { return cmp.Compare(a.t, b.t) })
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.s
	}
	return out
}

// Identical returns nil if a and b are byte-identical, else an error
// naming the first differing sector, what each side holds there (stamps
// decoded) and how many sectors differ: "after resync both replicas are
// byte-identical". names name the two images in the message ("a" and
// "b" by default).
func Identical(a, b []byte, names ...string) error {
	na, nb := "a", "b"
	if len(names) > 0 {
		na = names[0]
	}
	if len(names) > 1 {
		nb = names[1]
	}
	if len(a) != len(b) {
		return fmt.Errorf("%s is %d bytes, %s is %d", na, len(a), nb, len(b))
	}
	if bytes.Equal(a, b) {
		return nil
	}
	first, count := int64(-1), 0
	for off := int64(0); off < int64(len(a)); off += SectorSize {
		end := min(off+SectorSize, int64(len(a)))
		if !bytes.Equal(a[off:end], b[off:end]) {
			if first < 0 {
				first = off
			}
			count++
		}
	}
	end := min(first+SectorSize, int64(len(a)))
	return fmt.Errorf("%d sectors differ; the first at %d: %s has %s, %s has %s",
		count, first, na, describe(a[first:end], first), nb, describe(b[first:end], first))
}
