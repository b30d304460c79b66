package torture

import (
	"fmt"
	"strings"
	"testing"
)

func TestRingKeepsTheLastLines(t *testing.T) {
	r := newRing(3)
	for i := range 5 {
		fmt.Fprintf(r, "line %d\n", i)
	}
	if got, want := r.String(), "  line 2\n  line 3\n  line 4"; got != want {
		t.Fatalf("ring: %q, want %q", got, want)
	}
	r = newRing(3)
	fmt.Fprintf(r, "only\n")
	if got := r.String(); strings.Count(got, "only") != 1 || strings.Contains(got, "line") {
		t.Fatalf("ring: %q", got)
	}
}
