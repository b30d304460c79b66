package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/config"
	"github.com/blkrep/blkrep/internal/control"
)

const testConfig = `
[cluster]
name = "t"

[[node]]
name = "alpha"
control_socket = "alpha.ctl"

[[volume]]
name = "r0"
size = "4MiB"

  [[volume.replica]]
  node = "alpha"
  disk = "alpha-r0.img"
  create = true
  nbd_socket = "alpha-r0.sock"
  device = "/dev/nbd7"
`

// newDaemon writes text as the configuration in a new directory and
// makes node alpha's daemon from it (not started, no kernel devices).
func newDaemon(t *testing.T, text string) (*Daemon, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, "alpha", Options{NoDevices: true})
	if err != nil {
		t.Fatal(err)
	}
	return d, dir
}

func startDaemon(t *testing.T, text string) (*Daemon, string) {
	t.Helper()
	d, dir := newDaemon(t, text)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	return d, dir
}

// nbdHello checks a socket answers with the NBD greeting.
func nbdHello(t *testing.T, sock string) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b [18]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint64(b[:]) != 0x4e42444d41474943 {
		t.Fatalf("not an NBD greeting: % x", b)
	}
}

func TestStartStatusShutdown(t *testing.T) {
	d, dir := startDaemon(t, testConfig)
	sock := filepath.Join(dir, "alpha-r0.sock")
	nbdHello(t, sock)
	st, err := control.NewClient(filepath.Join(dir, "alpha.ctl")).Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Node != "alpha" || st.Cluster != "t" || len(st.Volumes) != 1 {
		t.Fatalf("status %+v", st)
	}
	v := st.Volumes[0]
	if v.Name != "r0" || v.SizeBytes != 4<<20 || v.Disk.State != "UpToDate" || v.Disk.Kind != "file" ||
		v.Role != "Primary" || v.Connection != "StandAlone" {
		t.Fatalf("volume %+v", v)
	}
	if len(v.Exports) != 1 || v.Exports[0].URI != "nbd+unix:///r0?socket="+sock {
		t.Fatalf("exports %+v", v.Exports)
	}
	if v.Device.Path != "/dev/nbd7" || v.Device.State != "unavailable" || !strings.Contains(v.Device.Error, "--no-devices") {
		t.Fatalf("device %+v", v.Device)
	}
	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{sock, filepath.Join(dir, "alpha.ctl")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s left behind: %v", p, err)
		}
	}
	// Internal metadata: the image is the volume plus the metadata area.
	if m := v.Metadata; m == nil || m.Placement != "internal" || m.DiskBytes != 4<<20+m.AreaBytes ||
		m.LastShutdown != "clean" || m.ActivityLog.Extents != 1237 || len(m.Peers) != 3 {
		t.Fatalf("metadata %+v", v.Metadata)
	}
	if fi, err := os.Stat(filepath.Join(dir, "alpha-r0.img")); err != nil || fi.Size() != v.Metadata.DiskBytes {
		t.Fatalf("disk: %v", err)
	}
}

func TestRefusesDiskWithoutMetadata(t *testing.T) {
	dir := t.TempDir()
	text := strings.Replace(testConfig, "create = true", "create = false", 1)
	path := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "alpha-r0.img")
	if err := os.WriteFile(img, make([]byte, 5<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, "alpha", Options{NoDevices: true})
	if err != nil {
		t.Fatal(err)
	}
	err = d.Start()
	if err == nil || !strings.Contains(err.Error(), "blkrep create-md r0") {
		t.Fatalf("start on a disk without metadata: %v", err)
	}
	if b, _ := os.ReadFile(img); !bytes.Equal(b, make([]byte, 5<<20)) {
		t.Fatal("the refused disk was written to")
	}
}

func TestStaleSocketReplacedLiveOneRefused(t *testing.T) {
	d, dir := startDaemon(t, testConfig)
	// A second daemon on the same config must refuse: the sockets are live.
	cfg, _ := config.Load(filepath.Join(dir, "c.toml"))
	d2, err := New(cfg, "alpha", Options{NoDevices: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := d2.Start(); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second daemon: %v", err)
	}
	nbdHello(t, filepath.Join(dir, "alpha-r0.sock")) // the first one is unharmed
	d.Shutdown(context.Background())

	// A stale socket file (nobody listening) is replaced.
	l, err := net.Listen("unix", filepath.Join(dir, "alpha-r0.sock"))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	d3, err := New(cfg, "alpha", Options{NoDevices: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := d3.Start(); err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	nbdHello(t, filepath.Join(dir, "alpha-r0.sock"))
	d3.Shutdown(context.Background())
}

// On a host without the nbd module (like CI's), a configured device is
// reported unavailable with the reason, and NBD clients are still served.
func TestDeviceUnavailableKeepsServing(t *testing.T) {
	if _, err := os.Stat("/sys/module/nbd"); err == nil {
		t.Skip("nbd is loaded here; this test is about hosts without it")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	os.WriteFile(path, []byte(testConfig), 0o600)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, "alpha", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(context.Background())
	v := d.Status().Volumes[0]
	if v.Device.State != "unavailable" || !strings.Contains(v.Device.Error, "nbd") {
		t.Fatalf("device %+v", v.Device)
	}
	nbdHello(t, filepath.Join(dir, "alpha-r0.sock"))
}

func TestNewRejectsBadNode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	os.WriteFile(path, []byte(strings.Replace(testConfig, "create = true", "create = false", 1)), 0o600)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, "beta", Options{}); err == nil || !strings.Contains(err.Error(), `"beta"`) {
		t.Fatalf("unknown node: %v", err)
	}
	if _, err := New(cfg, "alpha", Options{}); err == nil || !strings.Contains(err.Error(), "disk") {
		t.Fatalf("missing disk: %v", err)
	}
}
