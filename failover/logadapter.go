package failover

import (
	"context"
	"log/slog"
	"strings"
)

// memberlistLog is the io.Writer behind the *log.Logger memberlist logs
// through (log.New(w, "", 0): one Write per line). Its lines look like
//
//	[DEBUG] memberlist: Stream connection from=127.0.0.1:40412
//	[ERR] memberlist: Failed to send UDP ping: ...
//
// It turns each into one slog record on log: the level from the tag
// ([DEBUG], [INFO], [WARN], [ERR]; anything else is Info and keeps the
// whole line), the text after the tag and "memberlist: " as the message,
// and the attribute component=memberlist. line, when set, also sees every
// line's message (the gossip layer reads suspicions from it).
type memberlistLog struct {
	log  *slog.Logger
	line func(msg string)
}

// memberlistLevels maps memberlist's tags to slog levels.
var memberlistLevels = map[string]slog.Level{
	"DEBUG": slog.LevelDebug,
	"INFO":  slog.LevelInfo,
	"WARN":  slog.LevelWarn,
	"ERR":   slog.LevelError,
	"ERROR": slog.LevelError,
}

// parseMemberlistLine splits one memberlist log line into level and
// message. Text before the tag (a timestamp, when the logger has flags)
// is dropped.
func parseMemberlistLine(s string) (slog.Level, string) {
	s = strings.TrimRight(s, "\r\n")
	level, msg := slog.LevelInfo, strings.TrimSpace(s)
	if i := strings.IndexByte(s, '['); i >= 0 {
		if j := strings.IndexByte(s[i:], ']'); j > 0 {
			if lv, ok := memberlistLevels[s[i+1:i+j]]; ok {
				level, msg = lv, strings.TrimSpace(s[i+j+1:])
			}
		}
	}
	if rest, ok := strings.CutPrefix(msg, "memberlist: "); ok {
		msg = rest
	}
	return level, msg
}

// Write logs p as one record. It never fails: memberlist ignores errors.
func (w *memberlistLog) Write(p []byte) (int, error) {
	level, msg := parseMemberlistLine(string(p))
	if w.line != nil {
		w.line(msg)
	}
	if w.log.Enabled(context.Background(), level) {
		w.log.LogAttrs(context.Background(), level, msg, slog.String("component", "memberlist"))
	}
	return len(p), nil
}
