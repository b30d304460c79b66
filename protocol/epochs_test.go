package protocol

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The Epochs tests: scenarios in testdata/epochs/*.txt, a seeded model
// test and a fuzz target checking the same invariants, and allocation
// checks of the write path.
//
// Scenario files are a line language. # starts a comment (to the end of
// the line); blank lines are skipped. Every other line is a command,
// optionally followed by "->" and the output it must produce; a command
// without "->" must produce no output. Several scenarios may share a
// file: each config starts a new one. Time is the scenario's clock, 0 at config, moved by
// time and tick; every command passes it as now.
//
//	config proto=A|B|C [max_writes=N] [max_age=T] [timeout=T]
//	                                 a new tracker (clock back to 0)
//	time T                           set the clock
//	write OFF LEN [fua]              -> seq=S epoch=E [await] [barrier=N]
//	flush | drain                    -> [barrier=N] [waiter=W]
//	tick T [al-waiters]              set the clock, Tick -> [barrier=N] [timed-out]
//	ack-write SEQ                    -> [error=malformed]
//	ack-barrier N                    -> [release=OFF+LEN,...] [wake=W,...] | error=malformed
//	lost                             -> [mark=OFF+LEN,...] [fail=S,...] [fail-waiters=W,...]
//	state                            -> open=E unacked=B awaiting=N outstanding=N progress=T
//
// go test ./protocol -run TestEpochScenarios -protocol.rewrite rewrites the
// expected outputs from what the tracker does; review the diff.

var rewriteEpochs = flag.Bool("protocol.rewrite", false, "rewrite the expected outputs in testdata/epochs/*.txt")

var epochSeed = flag.Uint64("protocol.epochseed", 0, "run only this seed of TestEpochsModel")

func TestEpochScenarios(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "epochs", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 12 {
		t.Fatalf("found %d scenario files in testdata/epochs, want at least 12", len(files))
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runEpochScenario(t, f) })
	}
}

func runEpochScenario(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	var sc epochScenario
	commands := 0
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		trimmed, comment, _ := strings.Cut(trimmed, "#")
		cmd, want, _ := strings.Cut(trimmed, "->")
		cmd = strings.Join(strings.Fields(cmd), " ")
		want = strings.Join(strings.Fields(want), " ")
		got, err := sc.run(strings.Fields(cmd))
		if err != nil {
			t.Errorf("%s:%d: %s: %v", path, i+1, cmd, err)
			continue
		}
		commands++
		if *rewriteEpochs {
			lines[i] = formatScenarioLine(cmd, got, strings.TrimSpace(comment))
		} else if got != want {
			t.Errorf("%s:%d: %s\n got: %s\nwant: %s", path, i+1, cmd, orNothing(got), orNothing(want))
		}
	}
	if commands == 0 {
		t.Errorf("%s: no commands", path)
	}
	if *rewriteEpochs && !t.Failed() {
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func orNothing(s string) string {
	if s == "" {
		return "(nothing)"
	}
	return s
}

func formatScenarioLine(cmd, out, comment string) string {
	line := cmd
	if out != "" {
		line = fmt.Sprintf("%-24s -> %s", cmd, out)
	}
	if comment != "" {
		line = fmt.Sprintf("%-40s # %s", line, comment)
	}
	return line
}

// epochScenario interprets one scenario file's commands.
type epochScenario struct {
	e          Epochs
	configured bool
	now        int64
}

// run executes one command and returns its output; an error is a mistake
// in the scenario (unknown command, bad argument), not a tracker error.
func (sc *epochScenario) run(args []string) (string, error) {
	cmd, args := args[0], args[1:]
	if cmd != "config" && !sc.configured {
		return "", errors.New("the scenario must start with config")
	}
	num := func(i int) (int64, error) {
		if i >= len(args) {
			return 0, fmt.Errorf("argument %d missing", i+1)
		}
		return strconv.ParseInt(args[i], 10, 64)
	}
	nargs := func(min, max int) error {
		if len(args) < min || len(args) > max {
			return fmt.Errorf("%s takes %d to %d arguments, got %d", cmd, min, max, len(args))
		}
		return nil
	}
	var o kvOut
	switch cmd {
	case "config":
		c := EpochConfig{}
		for _, a := range args {
			k, v, ok := strings.Cut(a, "=")
			if !ok {
				return "", fmt.Errorf("config: %q is not key=value", a)
			}
			if k == "proto" {
				if len(v) != 1 || !strings.Contains("ABC", v) {
					return "", fmt.Errorf("config: proto must be A, B or C, not %q", v)
				}
				c.Protocol = v[0]
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return "", fmt.Errorf("config: %s: %v", k, err)
			}
			switch k {
			case "max_writes":
				c.MaxWrites = int(n)
			case "max_age":
				c.MaxAge = n
			case "timeout":
				c.AckTimeout = n
			default:
				return "", fmt.Errorf("config: unknown key %q", k)
			}
		}
		if c.Protocol == 0 {
			return "", errors.New("config: proto= is required")
		}
		sc.e, sc.configured, sc.now = NewEpochs(c), true, 0
	case "time":
		if err := nargs(1, 1); err != nil {
			return "", err
		}
		t, err := num(0)
		if err != nil {
			return "", err
		}
		sc.now = t
	case "write":
		if err := nargs(2, 3); err != nil {
			return "", err
		}
		off, err := num(0)
		if err != nil {
			return "", err
		}
		n, err := num(1)
		if err != nil {
			return "", err
		}
		fua := false
		if len(args) == 3 {
			if args[2] != "fua" {
				return "", fmt.Errorf("write: unknown flag %q", args[2])
			}
			fua = true
		}
		s := sc.e.Write(off, n, fua, sc.now)
		o.u("seq", s.Seq)
		o.u("epoch", s.Epoch)
		o.flag("await", s.AwaitAck)
		o.nz("barrier", s.Barrier)
	case "flush", "drain":
		if err := nargs(0, 0); err != nil {
			return "", err
		}
		var a Actions
		if cmd == "flush" {
			a = sc.e.Flush(sc.now)
		} else {
			a = sc.e.Drain(sc.now)
		}
		o.actions(a)
	case "tick":
		if err := nargs(1, 2); err != nil {
			return "", err
		}
		t, err := num(0)
		if err != nil {
			return "", err
		}
		al := false
		if len(args) == 2 {
			if args[1] != "al-waiters" {
				return "", fmt.Errorf("tick: unknown flag %q", args[1])
			}
			al = true
		}
		sc.now = t
		o.actions(sc.e.Tick(sc.now, al))
	case "ack-write":
		if err := nargs(1, 1); err != nil {
			return "", err
		}
		seq, err := num(0)
		if err != nil {
			return "", err
		}
		o.err(sc.e.WriteAck(uint64(seq), sc.now))
	case "ack-barrier":
		if err := nargs(1, 1); err != nil {
			return "", err
		}
		n, err := num(0)
		if err != nil {
			return "", err
		}
		a, aerr := sc.e.BarrierAck(uint64(n), sc.now)
		if !o.err(aerr) {
			o.actions(a)
		}
	case "lost":
		if err := nargs(0, 0); err != nil {
			return "", err
		}
		o.actions(sc.e.Lost())
	case "state":
		if err := nargs(0, 0); err != nil {
			return "", err
		}
		o.u("open", sc.e.OpenEpoch())
		o.i("unacked", sc.e.UnackedBytes())
		o.i("awaiting", int64(sc.e.AwaitingAck()))
		o.i("outstanding", int64(sc.e.Outstanding()))
		o.i("progress", sc.e.LastProgress())
	default:
		return "", fmt.Errorf("unknown command %q", cmd)
	}
	return strings.Join(o, " "), nil
}

// kvOut builds a command's output: key=value words in a fixed order.
type kvOut []string

func (o *kvOut) u(k string, v uint64) { *o = append(*o, k+"="+strconv.FormatUint(v, 10)) }
func (o *kvOut) i(k string, v int64)  { *o = append(*o, k+"="+strconv.FormatInt(v, 10)) }

func (o *kvOut) nz(k string, v uint64) {
	if v != 0 {
		o.u(k, v)
	}
}

func (o *kvOut) flag(k string, v bool) {
	if v {
		*o = append(*o, k)
	}
}

func (o *kvOut) list(k string, n int, item func(int) string) {
	if n == 0 {
		return
	}
	s := make([]string, n)
	for i := range s {
		s[i] = item(i)
	}
	*o = append(*o, k+"="+strings.Join(s, ","))
}

func (o *kvOut) spans(k string, v []Span) {
	o.list(k, len(v), func(i int) string { return v[i].String() })
}
func (o *kvOut) ids(k string, v []uint64) {
	o.list(k, len(v), func(i int) string { return strconv.FormatUint(v[i], 10) })
}

// err prints a tracker error; only ErrMalformed is expected, and it is
// printed without its text (tests do not match error strings).
func (o *kvOut) err(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrMalformed):
		*o = append(*o, "error=malformed")
	default:
		*o = append(*o, "error="+strconv.Quote(err.Error()))
	}
	return true
}

func (o *kvOut) actions(a Actions) {
	o.nz("barrier", a.Barrier)
	o.nz("waiter", a.Waiter)
	o.spans("release", a.Release)
	o.ids("wake", a.Wake)
	o.spans("mark", a.Mark)
	o.ids("fail", a.Fail)
	o.ids("fail-waiters", a.FailWaiters)
	o.flag("timed-out", a.TimedOut)
}

// An error leaves the tracker as it was: the caller ends the connection
// and calls Lost, which must still see everything.
func TestEpochsErrorChangesNothing(t *testing.T) {
	e := NewEpochs(EpochConfig{Protocol: 'C', MaxWrites: 2})
	e.Write(0, 4096, false, 1)
	e.Write(4096, 4096, false, 2) // closes epoch 1
	e.Write(8192, 4096, true, 3)  // epoch 2, closed by FUA
	e.Write(12288, 4096, false, 4)
	before := epochSnapshot(&e)
	for _, num := range []uint64{0, 1, 3, 4, 99} {
		if _, err := e.BarrierAck(num, 10); !errors.Is(err, ErrMalformed) {
			t.Errorf("BarrierAck(%d) with writes unacknowledged: err %v, want ErrMalformed", num, err)
		}
	}
	for _, seq := range []uint64{0, 5, 99} {
		if err := e.WriteAck(seq, 10); !errors.Is(err, ErrMalformed) {
			t.Errorf("WriteAck(%d): err %v, want ErrMalformed", seq, err)
		}
	}
	if after := epochSnapshot(&e); after != before {
		t.Fatalf("errors changed the tracker: %s, was %s", after, before)
	}
	a := e.Lost()
	if len(a.Mark) != 4 || !slices.Equal(a.Fail, []uint64{1, 2, 3, 4}) {
		t.Fatalf("Lost after errors: %+v", a)
	}
}

// epochState is what the accessors report.
type epochState struct {
	open                  uint64
	unacked               int64
	awaiting, outstanding int
	progress              int64
}

func (s epochState) String() string {
	return fmt.Sprintf("open=%d unacked=%d awaiting=%d outstanding=%d progress=%d",
		s.open, s.unacked, s.awaiting, s.outstanding, s.progress)
}

func epochSnapshot(e *Epochs) epochState {
	return epochState{e.OpenEpoch(), e.UnackedBytes(), e.AwaitingAck(), e.Outstanding(), e.LastProgress()}
}

func TestNewEpochsRejectsUnknownProtocol(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("NewEpochs accepted protocol D")
		}
	}()
	NewEpochs(EpochConfig{Protocol: 'D'})
}

// The write path allocates nothing once the rings have grown.
func TestEpochsWriteAllocs(t *testing.T) {
	e := NewEpochs(EpochConfig{Protocol: 'C'})
	warm := func() {
		for i := range 512 {
			s := e.Write(int64(i)*4096, 4096, false, 0)
			if err := e.WriteAck(s.Seq, 0); err != nil {
				t.Fatal(err)
			}
		}
		a := e.Flush(0)
		if _, err := e.BarrierAck(a.Barrier, 0); err != nil {
			t.Fatal(err)
		}
	}
	warm()
	now := int64(0)
	allocs := testing.AllocsPerRun(200, func() {
		now++
		s := e.Write(now*4096, 4096, false, now)
		if err := e.WriteAck(s.Seq, now); err != nil {
			t.Fatal(err)
		}
		e.Tick(now, false)
	})
	if allocs != 0 {
		t.Errorf("Write+WriteAck+Tick: %v allocations per write, want 0", allocs)
	}
}

func BenchmarkEpochsWrite(b *testing.B) {
	e := NewEpochs(EpochConfig{Protocol: 'C', MaxWrites: 64})
	b.ReportAllocs()
	for i := range b.N {
		now := int64(i)
		s := e.Write(now%1024*4096, 4096, false, now)
		if err := e.WriteAck(s.Seq, now); err != nil {
			b.Fatal(err)
		}
		if s.Barrier != 0 {
			if _, err := e.BarrierAck(s.Barrier, now); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// The model: every write ever made, with its epoch and whether it was
// released (by BarrierAck or Lost); the closed, unacknowledged epochs; the
// pending flush waiters. It predicts every output of the tracker from
// those lists by scanning them, and checks after every step:
//   - every write is released exactly once, by BarrierAck of its own
//     epoch or by Lost, never earlier; Release and Mark list exactly the
//     predicted spans in sequence order;
//   - epochs are acknowledged in order (every acked epoch is newer than
//     every earlier acked one), and a flush waiter is woken exactly when
//     its epoch is acknowledged;
//   - UnackedBytes is the sum of the lengths of the unreleased writes;
//     AwaitingAck, Outstanding, OpenEpoch and LastProgress agree;
//   - an error wraps ErrMalformed and changes nothing.

type epochOpKind uint8

const (
	opWrite epochOpKind = iota
	opAckWrite
	opAckBarrier
	opFlush
	opDrain
	opTick
	opTime
	opLost
	nEpochOps
)

// epochOp is one step: a and b are the kind's arguments (write: offset
// and length, ack-write: seq, ack-barrier: epoch, tick and time: how far
// the clock moves, tick: al-waiters), flag is write's FUA or tick's
// al-waiters.
type epochOp struct {
	kind epochOpKind
	a, b int64
	flag bool
}

func (op epochOp) String() string {
	switch op.kind {
	case opWrite:
		s := fmt.Sprintf("write %d %d", op.a, op.b)
		if op.flag {
			s += " fua"
		}
		return s
	case opAckWrite:
		return fmt.Sprintf("ack-write %d", op.a)
	case opAckBarrier:
		return fmt.Sprintf("ack-barrier %d", op.a)
	case opFlush:
		return "flush"
	case opDrain:
		return "drain"
	case opTick:
		s := fmt.Sprintf("tick +%d", op.a)
		if op.flag {
			s += " al-waiters"
		}
		return s
	case opTime:
		return fmt.Sprintf("time +%d", op.a)
	case opLost:
		return "lost"
	}
	return fmt.Sprintf("op(%d)", op.kind)
}

type modelWrite struct {
	epoch    uint64
	span     Span
	awaiting bool
	released bool
}

type epochModel struct {
	cfg EpochConfig
	e   Epochs
	now int64

	writes     []modelWrite // index seq-1
	live       int          // writes before it are all released
	open       uint64
	openWrites int
	openedAt   int64
	lastEpoch  uint64
	closed     []uint64
	lastAcked  uint64
	waiters    [][2]uint64 // {id, epoch}
	lastWaiter uint64
	progress   int64

	trace []epochOp
	stats epochStats
}

// epochStats counts what a run exercised.
type epochStats struct {
	Acked, Released, Woken, Marked, Failed, TimedOut, Errors int
}

func (s *epochStats) add(o epochStats) {
	s.Acked += o.Acked
	s.Released += o.Released
	s.Woken += o.Woken
	s.Marked += o.Marked
	s.Failed += o.Failed
	s.TimedOut += o.TimedOut
	s.Errors += o.Errors
}

func (s epochStats) counts() []int {
	return []int{s.Acked, s.Released, s.Woken, s.Marked, s.Failed, s.TimedOut, s.Errors}
}

func newEpochModel(c EpochConfig) *epochModel {
	return &epochModel{cfg: c, e: NewEpochs(c)}
}

func (m *epochModel) maxWrites() int {
	if m.cfg.MaxWrites <= 0 {
		return DefaultMaxEpochWrites
	}
	return m.cfg.MaxWrites
}

func (m *epochModel) awaiting() int {
	n := 0
	for _, w := range m.writes[m.live:] {
		if w.awaiting {
			n++
		}
	}
	return n
}

func (m *epochModel) outstanding() int { return m.awaiting() + len(m.closed) }

func (m *epochModel) owe(now int64) {
	if m.outstanding() == 0 {
		m.progress = now
	}
}

func (m *epochModel) close() uint64 {
	if m.open == 0 {
		return 0
	}
	m.owe(m.now)
	m.closed = append(m.closed, m.open)
	n := m.open
	m.open = 0
	return n
}

func (m *epochModel) wait() uint64 {
	if len(m.closed) == 0 {
		return 0
	}
	m.lastWaiter++
	m.waiters = append(m.waiters, [2]uint64{m.lastWaiter, m.closed[len(m.closed)-1]})
	return m.lastWaiter
}

func (m *epochModel) fail(format string, args ...any) error {
	steps := make([]string, len(m.trace))
	for i, op := range m.trace {
		steps[i] = op.String()
	}
	return fmt.Errorf("%s\nconfig %+v, steps:\n  %s", fmt.Sprintf(format, args...), m.cfg, strings.Join(steps, "\n  "))
}

// step applies op to the tracker and the model and compares them.
func (m *epochModel) step(op epochOp) error {
	m.trace = append(m.trace, op)
	before := epochSnapshot(&m.e)
	var got, want Actions
	var gotErr error
	wantErr := false
	switch op.kind {
	case opWrite:
		s := m.e.Write(op.a, op.b, op.flag, m.now)
		if m.open == 0 {
			m.lastEpoch++
			m.open, m.openWrites, m.openedAt = m.lastEpoch, 0, m.now
		}
		aw := m.cfg.Protocol != 'A'
		if aw {
			m.owe(m.now)
		}
		m.writes = append(m.writes, modelWrite{epoch: m.open, span: Span{op.a, op.b}, awaiting: aw})
		ws := Shipped{Seq: uint64(len(m.writes)), Epoch: m.open, AwaitAck: aw}
		m.openWrites++
		if op.flag || m.openWrites >= m.maxWrites() {
			ws.Barrier = m.close()
		}
		if s != ws {
			return m.fail("Write returned %+v, want %+v", s, ws)
		}
	case opAckWrite:
		gotErr = m.e.WriteAck(uint64(op.a), m.now)
		if op.a >= 1 && op.a <= int64(len(m.writes)) && m.writes[op.a-1].awaiting {
			m.writes[op.a-1].awaiting = false
			m.progress = m.now
		} else {
			wantErr = true
		}
	case opAckBarrier:
		num := uint64(op.a)
		got, gotErr = m.e.BarrierAck(num, m.now)
		wantErr = len(m.closed) == 0 || num < m.closed[0] || num > m.closed[len(m.closed)-1]
		for _, w := range m.writes[m.live:] {
			if !w.released && w.epoch <= num && w.awaiting {
				wantErr = true
			}
		}
		if wantErr {
			break
		}
		if m.closed[0] <= m.lastAcked {
			return m.fail("epoch %d is closed but epoch %d was acknowledged before it", m.closed[0], m.lastAcked)
		}
		for i := m.live; i < len(m.writes); i++ {
			w := &m.writes[i]
			if w.released || w.epoch > num {
				continue
			}
			if !slices.Contains(m.closed, w.epoch) {
				return m.fail("write %d of epoch %d released by the ack of epoch %d but its epoch is not closed", i+1, w.epoch, num)
			}
			w.released = true
			want.Release = append(want.Release, w.span)
		}
		for len(m.closed) > 0 && m.closed[0] <= num {
			m.lastAcked = m.closed[0]
			m.closed = m.closed[1:]
		}
		for len(m.waiters) > 0 && m.waiters[0][1] <= num {
			want.Wake = append(want.Wake, m.waiters[0][0])
			m.waiters = m.waiters[1:]
		}
		m.progress = m.now
	case opFlush:
		got = m.e.Flush(m.now)
		want.Barrier = m.close()
		if m.cfg.Protocol == 'C' {
			want.Waiter = m.wait()
		}
	case opDrain:
		got = m.e.Drain(m.now)
		want.Barrier = m.close()
		want.Waiter = m.wait()
	case opTick:
		m.now += op.a
		got = m.e.Tick(m.now, op.flag)
		switch {
		case m.cfg.AckTimeout > 0 && m.outstanding() > 0 && m.now-m.progress > m.cfg.AckTimeout:
			want.TimedOut = true
		case m.open != 0 && (op.flag || m.cfg.MaxAge > 0 && m.now-m.openedAt >= m.cfg.MaxAge):
			want.Barrier = m.close()
		}
	case opTime:
		m.now += op.a
	case opLost:
		got = m.e.Lost()
		for i := m.live; i < len(m.writes); i++ {
			w := &m.writes[i]
			if w.released {
				continue
			}
			w.released = true
			want.Mark = append(want.Mark, w.span)
			if w.awaiting {
				want.Fail = append(want.Fail, uint64(i+1))
				w.awaiting = false
			}
		}
		for _, w := range m.waiters {
			want.FailWaiters = append(want.FailWaiters, w[0])
		}
		m.waiters, m.closed, m.open = nil, nil, 0
	}
	if wantErr {
		m.stats.Errors++
		if !errors.Is(gotErr, ErrMalformed) {
			return m.fail("%s: err %v, want ErrMalformed", op, gotErr)
		}
		if after := epochSnapshot(&m.e); after != before {
			return m.fail("%s failed but changed the tracker: %s, was %s", op, after, before)
		}
		return m.check()
	}
	if gotErr != nil {
		return m.fail("%s: unexpected error %v", op, gotErr)
	}
	if !actionsEqual(got, want) {
		return m.fail("%s: got %+v, want %+v", op, got, want)
	}
	for m.live < len(m.writes) && m.writes[m.live].released {
		m.live++
	}
	if op.kind == opAckBarrier {
		m.stats.Acked++
	}
	m.stats.Released += len(got.Release)
	m.stats.Woken += len(got.Wake)
	m.stats.Marked += len(got.Mark)
	m.stats.Failed += len(got.Fail)
	if got.TimedOut {
		m.stats.TimedOut++
	}
	return m.check()
}

func actionsEqual(a, b Actions) bool {
	return a.Barrier == b.Barrier && a.Waiter == b.Waiter && a.TimedOut == b.TimedOut &&
		slices.Equal(a.Release, b.Release) && slices.Equal(a.Wake, b.Wake) &&
		slices.Equal(a.Mark, b.Mark) && slices.Equal(a.Fail, b.Fail) && slices.Equal(a.FailWaiters, b.FailWaiters)
}

// check compares the accessors with the model.
func (m *epochModel) check() error {
	for i := m.live + 1; i < len(m.writes); i++ {
		if m.writes[i].released && !m.writes[i-1].released {
			return m.fail("write %d released before write %d", i+1, i)
		}
	}
	var unacked int64
	for _, w := range m.writes[m.live:] {
		if !w.released {
			unacked += w.span.Len
		}
	}
	want := epochState{m.open, unacked, m.awaiting(), m.outstanding(), m.progress}
	if got := epochSnapshot(&m.e); got != want {
		return m.fail("state %s, want %s", got, want)
	}
	return nil
}

// finish loses the connection and checks that every write was released.
func (m *epochModel) finish() error {
	if err := m.step(epochOp{kind: opLost}); err != nil {
		return err
	}
	for i, w := range m.writes {
		if !w.released {
			return m.fail("write %d never released", i+1)
		}
	}
	return nil
}

func TestEpochsModel(t *testing.T) {
	seeds := uint64(2000)
	if testing.Short() {
		seeds = 200
	}
	first := uint64(1)
	if *epochSeed != 0 {
		first, seeds = *epochSeed, 1
	}
	var total epochStats
	for seed := first; seed < first+seeds; seed++ {
		m, err := runEpochModel(seed)
		if err != nil {
			t.Fatalf("seed %d: %v\nreplay: go test ./protocol -run TestEpochsModel -protocol.epochseed=%d", seed, err, seed)
		}
		total.add(m.stats)
	}
	t.Logf("%d runs: %+v", seeds, total)
	if *epochSeed == 0 && slices.Contains(total.counts(), 0) {
		t.Errorf("the model explores too little: %+v", total)
	}
}

func runEpochModel(seed uint64) (*epochModel, error) {
	r := rand.New(rand.NewPCG(seed, 0xe90c))
	c := EpochConfig{Protocol: "ABC"[r.IntN(3)], MaxWrites: 1 + r.IntN(6)}
	if r.IntN(2) == 0 {
		c.MaxAge = 1 + r.Int64N(50)
	}
	if r.IntN(2) == 0 {
		c.AckTimeout = 1 + r.Int64N(100)
	}
	m := newEpochModel(c)
	for range 200 {
		var op epochOp
		switch x := r.IntN(100); {
		case x < 35:
			op = epochOp{kind: opWrite, a: r.Int64N(16) * 4096, b: (1 + r.Int64N(4)) * 4096, flag: r.IntN(7) == 0}
		case x < 52:
			op = epochOp{kind: opAckWrite, a: m.pickSeq(r)}
		case x < 68:
			op = epochOp{kind: opAckBarrier, a: m.pickEpoch(r)}
		case x < 76:
			op = epochOp{kind: opFlush}
		case x < 79:
			op = epochOp{kind: opDrain}
		case x < 90:
			op = epochOp{kind: opTick, a: r.Int64N(30), flag: r.IntN(5) == 0}
		case x < 96:
			op = epochOp{kind: opTime, a: r.Int64N(30)}
		default:
			op = epochOp{kind: opLost}
		}
		if err := m.step(op); err != nil {
			return m, err
		}
	}
	return m, m.finish()
}

// pickSeq mostly picks a write awaiting its ack, oldest first most often;
// sometimes any number near the written range.
func (m *epochModel) pickSeq(r *rand.Rand) int64 {
	if r.IntN(5) > 0 {
		for i := m.live; i < len(m.writes); i++ {
			if m.writes[i].awaiting && r.IntN(3) > 0 {
				return int64(i + 1)
			}
		}
	}
	return r.Int64N(int64(len(m.writes)) + 3)
}

// pickEpoch mostly picks an outstanding closed epoch; sometimes any
// number near the epochs made so far.
func (m *epochModel) pickEpoch(r *rand.Rand) int64 {
	if len(m.closed) > 0 && r.IntN(5) > 0 {
		return int64(m.closed[r.IntN(len(m.closed))])
	}
	return r.Int64N(int64(m.lastEpoch) + 3)
}

// FuzzEpochs reads a configuration and then operations from the input and
// checks the tracker against the model after every one (see epochModel).
func FuzzEpochs(f *testing.F) {
	f.Add([]byte{2, 3, 0, 0, 0, 1, 0, 1, 3, 1, 2, 2, 1, 3, 0, 0, 7})
	f.Add([]byte{0, 1, 5, 9, 0, 4, 1, 0, 2, 3, 5, 20, 1, 7, 0, 0, 0, 2, 0, 1})
	f.Add([]byte{1, 0, 3, 0, 0, 1, 1, 0, 1, 1, 1, 2, 1, 2, 4, 5, 1, 6, 5, 1, 2, 2, 7})
	f.Fuzz(runFuzzEpochs)
}

func runFuzzEpochs(t *testing.T, b []byte) {
	next := func() byte {
		if len(b) == 0 {
			return 0
		}
		v := b[0]
		b = b[1:]
		return v
	}
	c := EpochConfig{Protocol: "ABC"[next()%3], MaxWrites: int(next() % 8)}
	c.MaxAge = int64(next() % 64)
	c.AckTimeout = int64(next() % 128)
	m := newEpochModel(c)
	for steps := 0; len(b) > 0 && steps < 1000; steps++ {
		op := epochOp{kind: epochOpKind(next() % byte(nEpochOps))}
		switch op.kind {
		case opWrite:
			x := next()
			op.a, op.b, op.flag = int64(x&15)*4096, int64(x>>4&7)*4096, x&0x80 != 0
		case opAckWrite, opAckBarrier:
			op.a = int64(next())
		case opTick, opTime:
			x := next()
			op.a, op.flag = int64(x&0x7f), x&0x80 != 0
		}
		if err := m.step(op); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.finish(); err != nil {
		t.Fatal(err)
	}
}
