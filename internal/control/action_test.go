package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeHandler records actions, refuses on demand and publishes through a Bus.
type fakeHandler struct {
	bus *Bus
	// subscribed and cancelled get a value per Subscribe and per cancel.
	subscribed, cancelled chan struct{}

	mu     sync.Mutex
	reqs   []Request
	refuse error // returned by Do when set
}

func newFake() *fakeHandler {
	return &fakeHandler{bus: NewBus(16), subscribed: make(chan struct{}, 8), cancelled: make(chan struct{}, 8)}
}

func (f *fakeHandler) Status() Status {
	return Status{Schema: SchemaStatus, Node: "alpha", Volumes: []Volume{{Name: "r0"}, {Name: "r1"}}}
}

func (f *fakeHandler) Do(_ context.Context, r Request) (Reply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, r)
	if f.refuse != nil {
		return Reply{}, f.refuse
	}
	return Reply{Message: fmt.Sprintf("%s %s done", r.Action, r.Volume)}, nil
}

func (f *fakeHandler) Subscribe() (<-chan Event, func()) {
	ch, cancel := f.bus.Subscribe()
	f.subscribed <- struct{}{}
	return ch, func() { cancel(); f.cancelled <- struct{}{} }
}

func (f *fakeHandler) last() (Request, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		return Request{}, 0
	}
	return f.reqs[len(f.reqs)-1], len(f.reqs)
}

func serveHandler(t *testing.T, h Handler) (*Client, *Server) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl")
	s, err := ListenHandler(path, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return NewClient(path), s
}

func TestActionsRoundTrip(t *testing.T) {
	f := newFake()
	cl, _ := serveHandler(t, f)
	for _, req := range []Request{
		{Volume: "r0", Action: ActionPrimary},
		{Volume: "r0", Action: ActionPrimary, Force: true},
		{Volume: "r1", Action: ActionSecondary},
		{Volume: "r0", Action: ActionConnect},
		{Volume: "r0", Action: ActionDisconnect},
		{Volume: "r0", Action: ActionResync},
		{Volume: "r0", Action: ActionResync, Full: true},
		{Volume: "r0", Action: ActionResync, DiscardMyData: true},
		{Volume: "r0", Action: ActionInvalidate},
		{Volume: "r0", Action: ActionVerify},
	} {
		rep, err := cl.Do(t.Context(), req)
		if err != nil {
			t.Fatalf("%+v: %v", req, err)
		}
		if want := req.Action + " " + req.Volume + " done"; rep.Message != want {
			t.Errorf("%+v: reply %q, want %q", req, rep.Message, want)
		}
		if got, _ := f.last(); got != req {
			t.Errorf("handler got %+v, want %+v", got, req)
		}
	}
}

// post sends a raw action request, bypassing the client's validation.
func post(t *testing.T, cl *Client, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://blkrepd"+path, strings.NewReader(body))
	resp, err := cl.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestActionRefusals(t *testing.T) {
	f := newFake()
	cl, _ := serveHandler(t, f)

	f.refuse = &ActionError{Code: http.StatusConflict, Message: "peer beta is Primary: run 'blkrep secondary r0' on beta first"}
	_, err := cl.Do(t.Context(), Request{Volume: "r0", Action: ActionPrimary})
	var ae *ActionError
	if !errors.As(err, &ae) || ae.Code != 409 || ae.Message != f.refuse.Error() {
		t.Fatalf("refusal: %#v", err)
	}
	f.refuse = errors.New("disk on fire")
	if _, err := cl.Do(t.Context(), Request{Volume: "r0", Action: ActionVerify}); !errors.As(err, &ae) || ae.Code != 500 || ae.Message != "disk on fire" {
		t.Fatalf("plain error: %#v", err)
	}
	f.refuse = &ActionError{Code: 0, Message: "forgot the code"}
	if _, err := cl.Do(t.Context(), Request{Volume: "r0", Action: ActionVerify}); !errors.As(err, &ae) || ae.Code != 500 {
		t.Fatalf("code 0: %#v", err)
	}
	f.refuse = nil

	_, n := f.last()
	if _, err := cl.Do(t.Context(), Request{Volume: "r9", Action: ActionConnect}); !errors.As(err, &ae) || ae.Code != 404 || !strings.Contains(ae.Message, `no volume "r9" on this node (it holds r0, r1)`) {
		t.Fatalf("unknown volume: %#v", err)
	}
	// Refused by the client's Validate, without a request.
	if _, err := cl.Do(t.Context(), Request{Volume: "r0", Action: "frobnicate"}); !errors.As(err, &ae) || ae.Code != 400 {
		t.Fatalf("unknown action, client side: %#v", err)
	}
	// The server checks the same, and the body.
	for _, tc := range []struct{ path, body, want string }{
		{"/v1/volumes/r0/frobnicate", "", `unknown action \"frobnicate\"`},
		{"/v1/volumes/r0/secondary", `{"force": true}`, "force applies only to primary"},
		{"/v1/volumes/r0/verify", `{"full": true}`, "apply only to resync"},
		{"/v1/volumes/r0/resync", `{"full": true, "discard_my_data": true}`, "exclude each other"},
		{"/v1/volumes/r0/primary", `{"forse": true}`, "unknown field"},
		{"/v1/volumes/r0/primary", `{"force": true} {}`, "more than one JSON value"},
		{"/v1/volumes/r0/primary", `[`, "bad request body"},
		{"/v1/volumes/r0/primary", `{"volume": "r1"}`, "body names"},
	} {
		code, body := post(t, cl, tc.path, tc.body)
		if code != 400 || !strings.Contains(body, tc.want) {
			t.Errorf("POST %s %s: %d %s, want 400 %q", tc.path, tc.body, code, body, tc.want)
		}
	}
	if _, m := f.last(); m != n {
		t.Errorf("the handler saw %d bad requests", m-n)
	}
	// No body, and a body repeating the URL, are fine.
	if code, body := post(t, cl, "/v1/volumes/r0/primary", ""); code != 200 {
		t.Errorf("no body: %d %s", code, body)
	}
	if code, body := post(t, cl, "/v1/volumes/r0/primary", `{"volume":"r0","action":"primary","force":true}`); code != 200 {
		t.Errorf("full body: %d %s", code, body)
	} else if r, _ := f.last(); !r.Force {
		t.Errorf("force lost: %+v", r)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://blkrepd/v1/volumes/r0/primary", nil)
	resp, err := cl.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Error("GET runs an action")
	}
}

func TestListenWithoutActions(t *testing.T) {
	cl, _ := serve(t, func() Status { return Status{Schema: SchemaStatus, Volumes: []Volume{{Name: "r0"}}} })
	var ae *ActionError
	if _, err := cl.Do(t.Context(), Request{Volume: "r0", Action: ActionPrimary}); !errors.As(err, &ae) || ae.Code != 501 {
		t.Fatalf("action on a status-only server: %#v", err)
	}
	err := cl.Events(t.Context(), func(Event) error { return nil })
	if !errors.As(err, &ae) || ae.Code != 501 || !strings.Contains(err.Error(), "does not publish events") {
		t.Fatalf("events on a status-only server: %v", err)
	}
}

func recvEvent(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	panic("unreachable")
}

func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestEventsStream(t *testing.T) {
	f := newFake()
	cl, _ := serveHandler(t, f)
	got := make(chan Event, 8)
	done := make(chan error, 1)
	go func() {
		done <- cl.Events(context.Background(), func(e Event) error { got <- e; return nil })
	}()
	wait(t, f.subscribed, "subscription")
	at := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	f.bus.Publish(Event{Time: at, Volume: "r0", Peer: "beta", Kind: EventConnection, Old: "Connecting", New: "Connected"})
	f.bus.Publish(Event{Volume: "r0", Kind: EventRole, Old: "Secondary", New: "Primary", Message: "by operator"})
	e1, e2 := recvEvent(t, got), recvEvent(t, got)
	if e1.Seq != 1 || !e1.Time.Equal(at) || e1.Peer != "beta" || e1.New != "Connected" {
		t.Errorf("first event %+v", e1)
	}
	if e2.Seq != 2 || e2.Time.IsZero() || e2.Kind != EventRole || e2.Message != "by operator" {
		t.Errorf("second event %+v", e2)
	}
	f.bus.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stream end: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream did not end when the bus closed")
	}
	wait(t, f.cancelled, "cancel")
}

func TestEventsEndOnShutdownAndHangUp(t *testing.T) {
	f := newFake()
	cl, srv := serveHandler(t, f)

	// The client goes away: the server cancels its subscription.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cl.Events(ctx, func(Event) error { return nil }) }()
	wait(t, f.subscribed, "subscription")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Events: %v", err)
	}
	wait(t, f.cancelled, "server-side cancel after hang-up")

	// fn's error ends Events.
	go func() {
		done <- cl.Events(context.Background(), func(Event) error { return io.ErrShortWrite })
	}()
	wait(t, f.subscribed, "subscription")
	f.bus.Publish(Event{Kind: EventError})
	if err := <-done; err != io.ErrShortWrite {
		t.Fatalf("fn error: %v", err)
	}

	// Shutdown ends open streams instead of waiting for them.
	go func() { done <- cl.Events(context.Background(), func(Event) error { return nil }) }()
	wait(t, f.subscribed, "subscription")
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with a stream open: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("stream end at shutdown: %v", err)
	}
}

func TestEventLinesKeepUnknownFields(t *testing.T) {
	f := newFake()
	cl, _ := serveHandler(t, f)
	lines := make(chan string, 1)
	go cl.EventLines(t.Context(), func(l []byte) error { lines <- string(l); return nil })
	wait(t, f.subscribed, "subscription")
	f.bus.Publish(Event{Time: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC), Volume: "r0", Kind: EventDisk, New: "UpToDate"})
	select {
	case l := <-lines:
		if want := `{"seq":1,"time":"2026-11-21T10:00:00Z","volume":"r0","kind":"disk","new":"UpToDate"}`; l != want {
			t.Errorf("line %s\nwant %s", l, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no line")
	}
}

func TestBusNeverBlocks(t *testing.T) {
	b := NewBus(2)
	b.now = func() time.Time { return time.Unix(1, 0) }
	slow, cancelSlow := b.Subscribe()
	fast, cancelFast := b.Subscribe()
	var fastGot []Event
	for i := 0; i < 100; i++ {
		b.Publish(Event{Kind: EventError, Message: fmt.Sprint(i)})
		fastGot = append(fastGot, <-fast)
	}
	for i, e := range fastGot {
		if e.Seq != uint64(i+1) || !e.Time.Equal(time.Unix(1, 0)) {
			t.Fatalf("fast subscriber event %d: %+v", i, e)
		}
	}
	// The slow one kept the first two and missed the rest: the next one it
	// gets shows the gap.
	if a, b2 := <-slow, <-slow; a.Seq != 1 || b2.Seq != 2 {
		t.Fatalf("slow subscriber: %d %d", a.Seq, b2.Seq)
	}
	b.Publish(Event{Kind: EventError})
	if e := <-slow; e.Seq != 101 {
		t.Fatalf("after the gap: seq %d", e.Seq)
	}
	<-fast
	b.Publish(Event{Seq: 7, Kind: EventError}) // caller's Seq is kept
	if e := <-fast; e.Seq != 7 {
		t.Fatalf("caller's seq: %d", e.Seq)
	}
	cancelSlow()
	cancelSlow()
	if e := <-slow; e.Seq != 7 { // buffered before the cancel
		t.Fatalf("slow subscriber: %+v", e)
	}
	if _, ok := <-slow; ok {
		t.Fatal("cancelled channel open")
	}
	if n := b.subscribers(); n != 1 {
		t.Fatalf("%d subscribers after cancel", n)
	}
	b.Close()
	b.Close()
	if _, ok := <-fast; ok {
		t.Fatal("channel open after Close")
	}
	cancelFast()
	b.Publish(Event{Kind: EventError})
	late, cancelLate := b.Subscribe()
	if _, ok := <-late; ok {
		t.Fatal("subscription after Close open")
	}
	cancelLate()
}

func TestBusConcurrent(t *testing.T) {
	b := NewBus(1)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				b.Publish(Event{Kind: EventError})
			}
		}()
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				ch, cancel := b.Subscribe()
				select {
				case <-ch:
				default:
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	b.Close()
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{"", `{}`, `{"force":true}`, `{"full":true,"discard_my_data":true}`, `{"volume":"r0","action":"resync","full":true}`, `{"x":1}`, `[`, `{} {}`} {
		f.Add(s, "r0", "resync")
	}
	f.Fuzz(func(t *testing.T, body, volume, action string) {
		req, err := decodeRequest(bytes.NewReader([]byte(body)), volume, action)
		if err == nil {
			if req.Volume != volume || req.Action != action || req.Validate() != nil {
				t.Fatalf("accepted %+v from %q", req, body)
			}
			return
		}
		var ae *ActionError
		if !errors.As(err, &ae) || ae.Code != 400 {
			t.Fatalf("error %#v", err)
		}
	})
}
