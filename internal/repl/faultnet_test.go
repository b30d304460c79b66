package repl

import (
	"os"
	"strconv"
	"testing"

	"github.com/blkrep/blkrep/internal/faultnet"
)

// The fault tests (fault_test.go) inject internal/faultnet through
// Config.Dial on the dialing node.

// faultSeed returns the seed of a scenario: REPL_FAULT_SEED overrides
// def, to replay a run whose log printed its seed.
func faultSeed(t testing.TB, def uint64) uint64 {
	t.Helper()
	seed := def
	if s := os.Getenv("REPL_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("REPL_FAULT_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (REPL_FAULT_SEED=%d replays it)", seed, seed)
	return seed
}

// newFakeNet returns a healed network without delay; the test's end cuts
// whatever is still connected.
func newFakeNet(t testing.TB, seed uint64) *faultnet.Net {
	var logf func(string, ...any)
	if testing.Verbose() || os.Getenv("REPL_LOG") != "" {
		logf = t.Logf
	}
	n := faultnet.New(seed, logf)
	t.Cleanup(n.Close)
	return n
}
