package torture

import (
	"strings"
	"sync"
)

// ring keeps the last lines the nodes logged (slog.NewTextHandler writes
// one record per Write), for the report of a failed schedule.
type ring struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

func newRing(n int) *ring { return &ring{lines: make([]string, n)} }

func (r *ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines[r.next] = strings.TrimRight(string(p), "\n")
	r.next = (r.next + 1) % len(r.lines)
	r.full = r.full || r.next == 0
	return len(p), nil
}

// String returns the lines kept, oldest first, indented.
func (r *ring) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	if r.full {
		out = append(out, r.lines[r.next:]...)
	}
	out = append(out, r.lines[:r.next]...)
	return "  " + strings.Join(out, "\n  ")
}
