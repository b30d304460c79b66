package qemu

import (
	"fmt"
	"os"
	"testing"
)

// The VM suite boots QEMU guests (about 5 s each under TCG) and builds their
// images first: it runs only when asked, by `make test-vm` (in `make test`)
// or BLKREP_VM=1.
func TestMain(m *testing.M) {
	if os.Getenv("BLKREP_VM") != "1" {
		fmt.Println("tests/qemu: skipped (set BLKREP_VM=1 or run make test-vm)")
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		fmt.Println("tests/qemu: needs root (scripts/vm-image.sh installs packages; the guests' tools need it)")
		os.Exit(1)
	}
	os.Exit(m.Run())
}
