package failover

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
)

// record is one log record a recorder kept.
type record struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

func (r record) String() string { return fmt.Sprintf("%s %q %v", r.Level, r.Msg, r.Attrs) }

// recorder is a slog.Handler that keeps every record (at every level).
type recorder struct {
	mu    *sync.Mutex
	recs  *[]record
	attrs []slog.Attr
}

func newRecorder() *recorder { return &recorder{mu: new(sync.Mutex), recs: new([]record)} }

func (h *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	rec := record{Level: r.Level, Msg: r.Message, Attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.Attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	*h.recs = append(*h.recs, rec)
	h.mu.Unlock()
	return nil
}

func (h *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorder{mu: h.mu, recs: h.recs, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h *recorder) WithGroup(string) slog.Handler { return h }

// records returns the records kept so far whose message contains sub.
func (h *recorder) records(sub string) []record {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []record
	for _, r := range *h.recs {
		if strings.Contains(r.Msg, sub) {
			out = append(out, r)
		}
	}
	return out
}

func TestMemberlistLogLevels(t *testing.T) {
	for _, tc := range []struct {
		line  string
		level slog.Level
		msg   string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:40412\n", slog.LevelDebug, "Stream connection from=127.0.0.1:40412"},
		{"[INFO] memberlist: Suspect beta has failed, no acks received\n", slog.LevelInfo, "Suspect beta has failed, no acks received"},
		{"[WARN] memberlist: Refuting a suspect message (from: alpha)\n", slog.LevelWarn, "Refuting a suspect message (from: alpha)"},
		{"[ERR] memberlist: Failed to send UDP ping: boom\n", slog.LevelError, "Failed to send UDP ping: boom"},
		{"[ERROR] memberlist: x\n", slog.LevelError, "x"},
		// The memberlist transport logs one line without the prefix.
		{"[ERR] Failed to shutdown transport: closed\n", slog.LevelError, "Failed to shutdown transport: closed"},
		// With log.LstdFlags a timestamp precedes the tag.
		{"2026/01/01 00:00:00 [DEBUG] memberlist: Stream connection from=[::1]:7946\n", slog.LevelDebug, "Stream connection from=[::1]:7946"},
		{"no tag at all\n", slog.LevelInfo, "no tag at all"},
		{"[TRACE] memberlist: odd tag\n", slog.LevelInfo, "[TRACE] memberlist: odd tag"},
		{"[", slog.LevelInfo, "["},
		{"", slog.LevelInfo, ""},
	} {
		h := newRecorder()
		var lines []string
		w := &memberlistLog{log: slog.New(h), line: func(m string) { lines = append(lines, m) }}
		n, err := w.Write([]byte(tc.line))
		if n != len(tc.line) || err != nil {
			t.Fatalf("%q: Write returned %d, %v", tc.line, n, err)
		}
		recs := h.records("")
		want := record{Level: tc.level, Msg: tc.msg, Attrs: map[string]string{"component": "memberlist"}}
		if len(recs) != 1 || recs[0].String() != want.String() {
			t.Fatalf("%q logged %v, want [%v]", tc.line, recs, want)
		}
		if !slices.Equal(lines, []string{tc.msg}) {
			t.Fatalf("%q: line hook saw %q, want [%q]", tc.line, lines, tc.msg)
		}
	}
}

// Through a *log.Logger as memberlist uses it, and with debug lines
// filtered out by the handler's level.
func TestMemberlistLogThroughLogger(t *testing.T) {
	var sb strings.Builder
	h := slog.NewTextHandler(&sb, &slog.HandlerOptions{Level: slog.LevelInfo,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}})
	l := log.New(&memberlistLog{log: slog.New(h)}, "", 0)
	l.Printf("[DEBUG] memberlist: hidden %d", 1)
	l.Printf("[WARN] memberlist: Was able to connect to %s over TCP but UDP probes failed", "beta")
	l.Printf("[ERR] memberlist: discarding packet with unacceptable label %q: from=%s", "other", "127.0.0.1:1")
	want := `level=WARN msg="Was able to connect to beta over TCP but UDP probes failed" component=memberlist
level=ERROR msg="discarding packet with unacceptable label \"other\": from=127.0.0.1:1" component=memberlist
`
	if sb.String() != want {
		t.Fatalf("logged\n%s\nwant\n%s", sb.String(), want)
	}
}
