package interop

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExampleConfig starts blkrepd on examples/standalone.toml exactly as
// shipped and checks that the export it documents serves I/O and that
// `blkrep status` shows it.
func TestExampleConfig(t *testing.T) {
	d := startDaemon(t, daemonOpts{configFrom: filepath.Join(moduleDir, "examples", "standalone.toml")})
	r := mustRun(t, 15*time.Second, nil, cliBin, "--config", d.cfgPath, "status")
	if !strings.Contains(r.stdout, d.unixURI()) {
		t.Errorf("blkrep status does not show the export %s:\n%s", d.unixURI(), r)
	}
	s := d.connect(t, sessionOpts{structured: true, blockSize: true})
	if s.info.size != uint64(d.size) {
		t.Errorf("example volume size %d, want %d", s.info.size, d.size)
	}
	want := randBytes(t, 1<<20)
	s.mustWrite(0, want)
	if e := s.flush(); e != 0 {
		t.Fatalf("flush: errno %d", e)
	}
	if got := s.mustRead(0, 1<<20); !bytes.Equal(got, want) {
		t.Fatalf("read back differs")
	}
	s.disconnect()
}
