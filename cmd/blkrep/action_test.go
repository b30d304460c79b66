package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/control"
)

// fakeDaemon is a control.Handler: it records actions, refuses on
// demand, and lets a test script the status it reports, poll by poll.
type fakeDaemon struct {
	bus        *control.Bus
	subscribed chan struct{}

	mu     sync.Mutex
	reqs   []control.Request
	refuse error
	block  bool // Do waits for its context
	st     control.Status
	// onDo and onStatus change st (under mu) when an action runs / at
	// each status poll.
	onDo     func(st *control.Status, r control.Request)
	onStatus func(st *control.Status)
}

func newFakeDaemon() *fakeDaemon {
	return &fakeDaemon{
		bus:        control.NewBus(16),
		subscribed: make(chan struct{}, 4),
		st: control.Status{Schema: control.SchemaStatus, Node: "alpha", Volumes: []control.Volume{{
			Name: "r0", Role: "Secondary", Connection: "Connected", Protocol: "C",
			Disk:  control.Disk{State: "UpToDate"},
			Peers: []control.Peer{{Node: "beta", Address: "10.0.0.2:7789", Connection: "Connected", Replication: "Established", Role: "Primary", Disk: "UpToDate"}},
		}}},
	}
}

func (f *fakeDaemon) Status() control.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.onStatus != nil {
		f.onStatus(&f.st)
	}
	// A deep enough copy: the progress pointers change under mu.
	st := f.st
	st.Volumes = append([]control.Volume(nil), f.st.Volumes...)
	for i := range st.Volumes {
		st.Volumes[i].Peers = append([]control.Peer(nil), st.Volumes[i].Peers...)
		for j := range st.Volumes[i].Peers {
			p := &st.Volumes[i].Peers[j]
			if p.Resync != nil {
				c := *p.Resync
				p.Resync = &c
			}
			if p.Verify != nil {
				c := *p.Verify
				p.Verify = &c
			}
		}
	}
	return st
}

func (f *fakeDaemon) Do(ctx context.Context, r control.Request) (control.Reply, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	block, refuse := f.block, f.refuse
	if refuse == nil && f.onDo != nil {
		f.onDo(&f.st, r)
	}
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return control.Reply{}, ctx.Err()
	}
	if refuse != nil {
		return control.Reply{}, refuse
	}
	return control.Reply{Message: r.Action + " " + r.Volume + ": done"}, nil
}

func (f *fakeDaemon) Subscribe() (<-chan control.Event, func()) {
	ch, cancel := f.bus.Subscribe()
	f.subscribed <- struct{}{}
	return ch, cancel
}

func (f *fakeDaemon) last() control.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		return control.Request{}
	}
	return f.reqs[len(f.reqs)-1]
}

// serveFake serves f on a socket in a temporary directory.
func serveFake(t *testing.T, f *fakeDaemon) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "alpha.ctl")
	s, err := control.ListenHandler(path, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return path
}

func TestActions(t *testing.T) {
	f := newFakeDaemon()
	sock := serveFake(t, f)
	for _, tc := range []struct {
		args []string
		want control.Request
	}{
		{[]string{"primary", "r0"}, control.Request{Volume: "r0", Action: "primary"}},
		{[]string{"primary", "r0", "--force"}, control.Request{Volume: "r0", Action: "primary", Force: true}},
		{[]string{"secondary", "r0"}, control.Request{Volume: "r0", Action: "secondary"}},
		{[]string{"connect", "r0"}, control.Request{Volume: "r0", Action: "connect"}},
		{[]string{"disconnect", "r0"}, control.Request{Volume: "r0", Action: "disconnect"}},
		{[]string{"resync", "r0"}, control.Request{Volume: "r0", Action: "resync"}},
		{[]string{"resync", "--full", "r0"}, control.Request{Volume: "r0", Action: "resync", Full: true}},
		{[]string{"resync", "r0", "--discard-my-data"}, control.Request{Volume: "r0", Action: "resync", DiscardMyData: true}},
		{[]string{"invalidate", "r0"}, control.Request{Volume: "r0", Action: "invalidate"}},
		{[]string{"verify", "r0"}, control.Request{Volume: "r0", Action: "verify"}},
	} {
		code, out, errs := runCLI(append([]string{"--socket", sock}, tc.args...)...)
		if code != 0 || out != tc.want.Action+" r0: done\n" || errs != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", tc.args, code, out, errs)
		}
		if got := f.last(); got != tc.want {
			t.Errorf("%v: daemon got %+v, want %+v", tc.args, got, tc.want)
		}
	}
}

func TestActionErrors(t *testing.T) {
	f := newFakeDaemon()
	sock := serveFake(t, f)
	const msg = "peer beta is Primary: run 'blkrep secondary r0' on beta first, or disconnect"
	f.refuse = &control.ActionError{Code: http.StatusConflict, Message: msg}
	code, out, errs := runCLI("--socket", sock, "primary", "r0")
	if code != 1 || out != "" || errs != "blkrep: "+msg+"\n" {
		t.Errorf("refusal: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	f.refuse = &control.ActionError{Code: http.StatusServiceUnavailable, Message: "not connected: run 'blkrep connect r0' first"}
	if code, _, errs := runCLI("--socket", sock, "verify", "r0", "--wait"); code != 1 || errs != "blkrep: not connected: run 'blkrep connect r0' first\n" {
		t.Errorf("503 with --wait: exit %d, stderr %q", code, errs)
	}
	f.refuse = errors.New("disk on fire")
	if code, _, errs := runCLI("--socket", sock, "connect", "r0"); code != 1 || errs != "blkrep: disk on fire\n" {
		t.Errorf("500: exit %d, stderr %q", code, errs)
	}
	f.refuse = nil

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"connect", "r9"}, 2, `blkrep: no volume "r9" on this node (it holds r0)`},
		{[]string{"primary"}, 2, "blkrep primary: missing VOLUME\nusage: blkrep primary VOLUME [--force]"},
		{[]string{"secondary", "r0", "--force"}, 2, "flag provided but not defined: -force"},
		{[]string{"resync", "r0", "--full", "--discard-my-data"}, 2, "exclude each other"},
		{[]string{"verify", "r0", "r1"}, 2, "unexpected arguments: r1"},
	} {
		code, _, errs := runCLI(append([]string{"--socket", sock}, tc.args...)...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errs, tc.code, tc.want)
		}
	}
	code, _, errs = runCLI("--socket", filepath.Join(t.TempDir(), "absent.ctl"), "primary", "r0")
	if code != 1 || !strings.Contains(errs, "not running") {
		t.Errorf("no daemon: exit %d, stderr %q", code, errs)
	}
	t.Setenv("BLKREP_CONFIG", "")
	if code, _, errs := runCLI("connect", "r0"); code != 2 || !strings.Contains(errs, "no configuration") {
		t.Errorf("no config: exit %d, stderr %q", code, errs)
	}
}

func TestActionNoAnswer(t *testing.T) {
	f := newFakeDaemon()
	sock := serveFake(t, f)
	f.block = true
	defer func(d time.Duration) { actionTimeout = d }(actionTimeout)
	actionTimeout = 50 * time.Millisecond
	code, _, errs := runCLI("--socket", sock, "primary", "r0")
	if code != 1 || !strings.Contains(errs, "the primary of r0 may or may not have happened") {
		t.Errorf("timeout: exit %d, stderr %q", code, errs)
	}
}

// fastWait makes --wait poll and report at every status.
func fastWait(t *testing.T) {
	p, r := waitPoll, waitReport
	waitPoll, waitReport = time.Millisecond, 0
	t.Cleanup(func() { waitPoll, waitReport = p, r })
}

// progressing makes an action start a resync or verify of total bytes
// that advances a quarter at each status poll, finding mismatch bytes.
func progressing(f *fakeDaemon, total, mismatch int64, stopAt int64) {
	var pr *control.Progress
	f.onDo = func(st *control.Status, r control.Request) {
		pr = &control.Progress{Running: true, TotalBytes: total, StartedAt: time.Now(), RateBytesPerSec: 100 << 20, ETASeconds: 3}
		p := &st.Volumes[0].Peers[0]
		if r.Action == "verify" {
			p.Verify, p.Replication = pr, "VerifySource"
		} else {
			p.Resync, p.Replication = pr, "SyncSource"
		}
	}
	f.onStatus = func(st *control.Status) {
		if pr == nil || !pr.Running {
			return
		}
		pr.DoneBytes += total / 4
		if pr.DoneBytes >= total || pr.DoneBytes >= stopAt {
			pr.DoneBytes = min(pr.DoneBytes, total)
			pr.Running, pr.MismatchBytes, pr.ETASeconds = false, mismatch, 0
			fin := pr.StartedAt.Add(2 * time.Second)
			pr.FinishedAt = &fin
			st.Volumes[0].Peers[0].Replication = "Established"
		}
	}
}

func TestWaitResync(t *testing.T) {
	fastWait(t)
	f := newFakeDaemon()
	sock := serveFake(t, f)
	progressing(f, 100<<20, 0, 1<<62)
	code, out, errs := runCLI("--socket", sock, "resync", "r0", "--wait")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if want := "resync r0: done\nresync of r0 with beta done: 100.0 MiB in 2s (50.0 MiB/s)\n"; out != want {
		t.Errorf("stdout %q\nwant %q", out, want)
	}
	if want := "resync r0 with beta  [##########..........] 50.0%  50.0 MiB / 100.0 MiB  100.0 MiB/s  ETA 0:03\n"; !strings.Contains(errs, want) {
		t.Errorf("stderr lacks %q:\n%s", want, errs)
	}
}

func TestWaitVerifyMismatch(t *testing.T) {
	fastWait(t)
	f := newFakeDaemon()
	sock := serveFake(t, f)
	progressing(f, 1<<20, 4096, 1<<62)
	code, out, errs := runCLI("--socket", sock, "verify", "--wait", "r0")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if want := "4.0 KiB (4096 bytes) differ, marked out of sync; run `blkrep resync r0`\n"; !strings.HasSuffix(out, want) {
		t.Errorf("stdout %q lacks %q", out, want)
	}
}

func TestWaitStopped(t *testing.T) {
	fastWait(t)
	f := newFakeDaemon()
	sock := serveFake(t, f)
	progressing(f, 100<<20, 0, 50<<20)
	f.onStatus = func(next func(*control.Status)) func(*control.Status) {
		return func(st *control.Status) {
			next(st)
			if st.Volumes[0].Peers[0].Replication == "Established" {
				st.Volumes[0].Peers[0].Connection, st.Volumes[0].Peers[0].LastError = "Connecting", "connection reset by peer"
			}
		}
	}(f.onStatus)
	code, _, errs := runCLI("--socket", sock, "resync", "r0", "--wait")
	if want := "blkrep: resync of r0 with beta stopped at 50.0% (50.0 MiB of 100.0 MiB): connection reset by peer; connection Connecting"; code != 1 || !strings.Contains(errs, want) {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, errs, want)
	}
}

func TestWaitNotStartedThenInterrupted(t *testing.T) {
	fastWait(t)
	f := newFakeDaemon()
	sock := serveFake(t, f)
	polls := make(chan struct{}, 100)
	f.onStatus = func(*control.Status) {
		select {
		case polls <- struct{}{}:
		default:
		}
	}
	// A resync from an earlier run does not count as this one's end.
	f.st.Volumes[0].Peers[0].Resync = &control.Progress{TotalBytes: 1, DoneBytes: 1, StartedAt: time.Now().Add(-time.Hour)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for range 3 {
			<-polls
		}
		cancel()
	}()
	var out, errb bytes.Buffer
	code := run(ctx, []string{"--socket", sock, "resync", "r0", "--wait"}, &out, &errb)
	errs := errb.String()
	if code != 130 || strings.Count(errs, "waiting for the resync of r0 to start (beta: Connected, Established)\n") != 1 ||
		!strings.Contains(errs, "stopped waiting; the resync of r0 goes on in blkrepd") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}

// syncBuffer is a bytes.Buffer a test may read while run writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// follow runs `blkrep events args...` against f until the returned
// cancel (Ctrl-C) or the stream's end; done gets the exit code.
func follow(t *testing.T, f *fakeDaemon, args ...string) (done chan int, out, errb *syncBuffer, cancel context.CancelFunc) {
	t.Helper()
	sock := serveFake(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	out, errb = &syncBuffer{}, &syncBuffer{}
	done = make(chan int, 1)
	go func() { done <- run(ctx, append([]string{"--socket", sock, "events"}, args...), out, errb) }()
	select {
	case <-f.subscribed:
	case <-time.After(5 * time.Second):
		t.Fatal("blkrep events did not subscribe")
	}
	return done, out, errb, cancel
}

func exitCode(t *testing.T, done chan int) int {
	t.Helper()
	select {
	case code := <-done:
		return code
	case <-time.After(5 * time.Second):
		t.Fatal("blkrep events did not exit")
	}
	return -1
}

func TestEvents(t *testing.T) {
	at := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	f := newFakeDaemon()
	done, out, errb, _ := follow(t, f)
	f.bus.Publish(control.Event{Time: at, Volume: "r0", Peer: "beta", Kind: control.EventConnection, Old: "Connecting", New: "Connected", Message: "handshake ok"})
	f.bus.Publish(control.Event{Seq: 5, Time: at, Volume: "r0", Kind: control.EventSplitBrain, Message: "both sides changed"})
	f.bus.Close() // the daemon stops
	if code := exitCode(t, done); code != 0 {
		t.Fatalf("events: exit %d: %s", code, errb)
	}
	want := "2026-11-21T10:00:00Z r0 beta connection Connecting -> Connected: handshake ok\n" +
		"2026-11-21T10:00:00Z r0 split-brain: both sides changed\n"
	if out.String() != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	if e := errb.String(); !strings.Contains(e, "missed 3 events (seq 2 to 4)") || !strings.Contains(e, "ended the event stream") {
		t.Errorf("stderr: %s", e)
	}
}

func TestEventsJSONUntilCtrlC(t *testing.T) {
	f := newFakeDaemon()
	done, out, errb, cancel := follow(t, f, "--json")
	f.bus.Publish(control.Event{Time: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC), Volume: "r0", Kind: control.EventRole, Old: "Secondary", New: "Primary"})
	want := `{"seq":1,"time":"2026-11-21T10:00:00Z","volume":"r0","kind":"role","old":"Secondary","new":"Primary"}` + "\n"
	for deadline := time.Now().Add(5 * time.Second); out.String() != want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("--json stdout %q, want %q", out, want)
		}
	}
	cancel() // Ctrl-C
	if code := exitCode(t, done); code != 0 {
		t.Fatalf("events --json after Ctrl-C: exit %d: %s", code, errb)
	}
	if e := errb.String(); e != "" {
		t.Errorf("stderr after Ctrl-C: %q", e)
	}
	if code, _, errs := runCLI("--socket", "/nonexistent", "events", "extra"); code != 2 || !strings.Contains(errs, "unexpected arguments") {
		t.Errorf("events extra: %d %q", code, errs)
	}
}

func TestFormatEvent(t *testing.T) {
	at := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		e    control.Event
		want string
	}{
		{control.Event{Time: at, Volume: "r0", Peer: "beta", Kind: "connection", Old: "Connecting", New: "Connected", Message: "message"},
			"2026-11-21T10:00:00Z r0 beta connection Connecting -> Connected: message"},
		{control.Event{Time: at, Volume: "r0", Kind: "resync-done", Message: "250.0 MiB in 1m23s"}, "2026-11-21T10:00:00Z r0 resync-done: 250.0 MiB in 1m23s"},
		{control.Event{Time: at, Kind: "handshake", New: "source-bitmap"}, "2026-11-21T10:00:00Z handshake source-bitmap"},
		{control.Event{Time: at, Kind: "disk", Old: "UpToDate"}, "2026-11-21T10:00:00Z disk UpToDate -> (none)"},
	} {
		if got := formatEvent(tc.e); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
	}
}

func TestStatusPeers(t *testing.T) {
	f := newFakeDaemon()
	sock := serveFake(t, f)
	at := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	fin := at.Add(83 * time.Second)
	v := &f.st.Volumes[0]
	v.Role, v.Disk.State = "Primary", "UpToDate"
	v.Peers = []control.Peer{{
		Node: "beta", Address: "10.0.0.2:7789", Connection: "Connected", Replication: "SyncSource", Role: "Secondary", Disk: "Inconsistent",
		OutOfSyncBytes: 145 << 20, UnackedBytes: 64 << 10, InFlightWrites: 3, SentBytes: 3 << 30, ReceivedBytes: 12 << 10, Reconnects: 2,
		Handshake: &control.Handshake{At: at, Rule: "peer-current-in-local-history", Action: "source-bitmap", LocalCurrent: "484F88C3E17B551C", PeerCurrent: "1D2C3B4A59687706"},
		Resync: &control.Progress{Running: true, Checksum: true, TotalBytes: 250 << 20, DoneBytes: 105 << 20, SkippedBytes: 12 << 20,
			RateBytesPerSec: 180.2 * (1 << 20), ETASeconds: 0.8, StartedAt: at},
		Verify: &control.Progress{TotalBytes: 250 << 20, DoneBytes: 250 << 20, MismatchBytes: 8192, StartedAt: at, FinishedAt: &fin},
	}, {
		Node: "gamma", Address: "10.0.0.3:7789", Connection: "StandAlone", Replication: "Off", Role: "Unknown", Disk: "DUnknown",
		SplitBrain: true, LastError: "split brain detected, disconnected",
		Resync: &control.Progress{TotalBytes: 10 << 20, DoneBytes: 5 << 20, StartedAt: at, FinishedAt: &fin},
	}}
	code, out, errs := runCLI("--socket", sock, "status")
	if code != 0 {
		t.Fatalf("status: %d %s", code, errs)
	}
	for _, want := range []string{
		"r0  role:Primary  disk:UpToDate  connection:Connected  protocol:C  SPLIT BRAIN with gamma\n",
		"    peer     beta (10.0.0.2:7789)  connection:Connected  replication:SyncSource  protocol:C  role:Secondary  disk:Inconsistent\n",
		"             out of sync 145.0 MiB (152043520 bytes)  unacked 64.0 KiB, 3 writes in flight\n",
		"             sent 3.0 GiB  received 12.0 KiB  reconnects 2\n",
		"             handshake 2026-11-21T10:00:00Z: rule peer-current-in-local-history -> source-bitmap (generation here 484F88C3E17B551C, peer 1D2C3B4A59687706)\n",
		"             resync [########............] 42.0%  105.0 MiB / 250.0 MiB  180.2 MiB/s  ETA 0:01  (12.0 MiB identical, not sent)\n",
		"             verify done 2026-11-21T10:01:23Z: 250.0 MiB in 1m23s; 8.0 KiB (8192 bytes) DIFFER, marked out of sync: run 'blkrep resync r0'\n",
		"    peer     gamma (10.0.0.3:7789)  connection:StandAlone  replication:Off  protocol:C  role:Unknown  disk:DUnknown\n" +
			"             SPLIT BRAIN: run 'blkrep resync r0 --discard-my-data' on the node whose changes to drop\n",
		"             resync stopped 2026-11-21T10:01:23Z at 50.0% (5.0 MiB of 10.0 MiB)\n",
		"             last error: split brain detected, disconnected\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

func TestProgressBar(t *testing.T) {
	for _, tc := range []struct {
		p    control.Progress
		want string
	}{
		{control.Progress{}, "[....................] 0.0%  0 B / 0 B  0 B/s  ETA --:--"},
		{control.Progress{TotalBytes: 4096, DoneBytes: 4096}, "[####################] 100.0%  4.0 KiB / 4.0 KiB  0 B/s  ETA 0:00"},
		{control.Progress{TotalBytes: 100 << 30, DoneBytes: 1 << 30, RateBytesPerSec: 1 << 20, ETASeconds: 101376},
			"[....................] 1.0%  1.0 GiB / 100.0 GiB  1.0 MiB/s  ETA 28:09:36"},
	} {
		if got := progressBar(&tc.p); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
	}
}
