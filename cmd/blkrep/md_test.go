package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blkrep/blkrep/internal/config"
	"github.com/blkrep/blkrep/internal/volume"
)

// mdConfig writes the standalone example with create = false and a disk
// image of the size internal metadata needs, holding data at its start.
func mdConfig(t *testing.T) (cfgPath, img string, size int64) {
	t.Helper()
	dir := t.TempDir()
	example, err := os.ReadFile("../../examples/standalone.toml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(example), "create = true", "create = false", 1)
	cfgPath = filepath.Join(dir, "standalone.toml")
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	size, err = cfg.LocalReplicas("alpha")[0].DiskBytes()
	if err != nil {
		t.Fatal(err)
	}
	img = filepath.Join(dir, "alpha-r0.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("a filesystem"), 0)
	f.Truncate(size)
	f.Close()
	return cfgPath, img, size
}

func TestCreateAndDumpMD(t *testing.T) {
	cfgPath, img, size := mdConfig(t)

	code, _, stderr := runCLI("--config", cfgPath, "dump-md", "r0")
	if code != 1 || !strings.Contains(stderr, "create-md r0") {
		t.Fatalf("dump-md before create-md: %d %q", code, stderr)
	}
	code, out, stderr := runCLI("--config", cfgPath, "create-md", "r0")
	if code != 0 || !strings.Contains(out, "internal: the last 90112 bytes") || !strings.Contains(out, "from offset 268435456") {
		t.Fatalf("create-md: %d %q %q", code, out, stderr)
	}
	if b, _ := os.ReadFile(img); string(b[:12]) != "a filesystem" || int64(len(b)) != size {
		t.Fatal("create-md touched the data or the size")
	}
	code, _, stderr = runCLI("--config", cfgPath, "create-md", "r0")
	if code != 1 || !strings.Contains(stderr, "already holds blkrep metadata") || !strings.Contains(stderr, "--force") {
		t.Fatalf("second create-md: %d %q", code, stderr)
	}
	code, out, _ = runCLI("--config", cfgPath, "create-md", "--force", "r0")
	if code != 0 || !strings.Contains(out, "replaced") {
		t.Fatalf("create-md --force: %d %q", code, out)
	}

	code, out, stderr = runCLI("--config", cfgPath, "dump-md", "r0")
	for _, want := range []string{"flags        al-clean, just-created", "slot 0  (unused)", "activity log 1237 extents", "clean (shut down cleanly)", "hot        0 extents"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("dump-md: %d, want %q in\n%s%s", code, want, out, stderr)
		}
	}
	code, out, _ = runCLI("--config", cfgPath, "dump-md", "r0", "--json")
	var d volume.Dump
	if code != 0 || json.Unmarshal([]byte(out), &d) != nil || d.Schema != volume.SchemaDump || d.Superblock.SizeBytes != 256<<20 ||
		len(d.Peers) != 3 || !d.ActivityLog.Clean || d.InUse {
		t.Fatalf("dump-md --json: %d %+v", code, d)
	}
}

func TestCreateMDRefusesDataInTheArea(t *testing.T) {
	cfgPath, img, size := mdConfig(t)
	f, _ := os.OpenFile(img, os.O_WRONLY, 0)
	f.WriteAt([]byte("end of a filesystem"), size-4096)
	f.Close()
	code, _, stderr := runCLI("--config", cfgPath, "create-md", "r0")
	if code != 1 || !strings.Contains(stderr, "holds data") || !strings.Contains(stderr, "last 90112 bytes") {
		t.Fatalf("create-md over data: %d %q", code, stderr)
	}
	if b, _ := os.ReadFile(img); !strings.HasPrefix(string(b[size-4096:]), "end of a filesystem") {
		t.Fatal("refused create-md wrote anyway")
	}
}

func TestMDCommandErrors(t *testing.T) {
	cfgPath, _, _ := mdConfig(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"create-md"}, "missing VOLUME"},
		{[]string{"dump-md", "nope"}, `holds no volume "nope" (it holds: r0)`},
		{[]string{"dump-md", "r0", "extra"}, "unexpected arguments"},
	} {
		code, _, stderr := runCLI(append([]string{"--config", cfgPath}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: %d %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
}
