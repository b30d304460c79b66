package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blkrep/blkrep/internal/config"
	"github.com/blkrep/blkrep/internal/control"
	"github.com/blkrep/blkrep/internal/daemon"
)

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestStatus(t *testing.T) {
	dir := t.TempDir()
	example, err := os.ReadFile("../../examples/standalone.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "standalone.toml")
	os.WriteFile(cfgPath, example, 0o600)

	// Not running yet: a clear error, exit 1.
	code, _, stderr := runCLI("--config", cfgPath, "status")
	if code != 1 || !strings.Contains(stderr, "not running") {
		t.Fatalf("before start: %d %q", code, stderr)
	}

	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(cfg, "alpha", daemon.Options{NoDevices: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(context.Background())

	code, out, stderr := runCLI("--config", cfgPath, "--node", "alpha", "status")
	if code != 0 {
		t.Fatalf("status: %d %s", code, stderr)
	}
	for _, want := range []string{"node alpha", "r0  role:Primary  disk:UpToDate  connection:StandAlone",
		"256.0 MiB (268435456 bytes)", "nbd+unix:///r0?socket=" + filepath.Join(dir, "alpha-r0.sock"), "device   none configured"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	// --node may be left out with a single node; --json is the schema.
	code, out, _ = runCLI("--config", cfgPath, "status", "--json")
	var st control.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Schema != control.SchemaStatus || st.Volumes[0].Name != "r0" {
		t.Fatalf("json status: %d %s", code, out)
	}
	code, out, _ = runCLI("--socket", filepath.Join(dir, "alpha.ctl"), "status")
	if code != 0 || !strings.Contains(out, "r0") {
		t.Fatalf("--socket: %d %s", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"status"}, 2, "no configuration"},
		{[]string{"--config", "/nonexistent/x.toml", "status"}, 2, "x.toml"},
		{[]string{"--bogus"}, 2, "flag provided but not defined"},
	}
	for _, tc := range cases {
		t.Setenv("BLKREP_CONFIG", "")
		code, _, stderr := runCLI(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}
