package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestExampleStandalone: examples/standalone.toml copied into an empty directory
// loads and passes CheckNode("alpha") as it is, and with its commented keys enabled.
func TestExampleStandalone(t *testing.T) {
	example, err := os.ReadFile("../../examples/standalone.toml")
	if err != nil {
		t.Fatal(err)
	}
	uncommented := strings.NewReplacer(`# nbd_tcp =`, `nbd_tcp =`, `# device =`, `device =`, `# meta_disk =`, `meta_disk =`).Replace(string(example))
	if uncommented == string(example) || strings.Count(uncommented, "\n# ") == 0 || strings.Count(uncommented, "\n  meta_disk = ") != 1 {
		t.Fatal("example lacks the commented nbd_tcp, device and meta_disk lines")
	}
	for _, tc := range []struct {
		name, data     string
		nbdTCP, device string
	}{
		{"as is", string(example), "", ""},
		{"uncommented", uncommented, "127.0.0.1:10809", "/dev/nbd0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "standalone.toml")
			if err := os.WriteFile(path, []byte(tc.data), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := Load(path)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if err := c.CheckNode("alpha"); err != nil {
				t.Fatalf("CheckNode(alpha): %v", err)
			}
			want := Node{Name: "alpha", ControlSocket: filepath.Join(dir, "alpha.ctl"), NBDTCP: tc.nbdTCP}
			if c.Cluster.Name != "standalone" || len(c.Nodes) != 1 || c.Nodes[0] != want {
				t.Errorf("cluster %+v nodes %+v; want node %+v", c.Cluster, c.Nodes, want)
			}
			lr := c.LocalReplicas("alpha")
			if len(lr) != 1 {
				t.Fatalf("LocalReplicas(alpha) = %+v", lr)
			}
			v, r := lr[0].Volume, lr[0].Replica
			if v.Name != "r0" || v.SizeBytes != 256<<20 || v.BlockSize != 4096 {
				t.Errorf("volume %+v", v)
			}
			wantRep := Replica{Node: "alpha", Disk: filepath.Join(dir, "alpha-r0.img"), Create: true, NBDSocket: filepath.Join(dir, "alpha-r0.sock"), Device: tc.device, MetaDisk: "internal"}
			if *r != wantRep {
				t.Errorf("replica %+v, want %+v", *r, wantRep)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Errorf("Load and CheckNode changed the directory: %v", ents)
			}
		})
	}
}

// checkConfig writes a file with volume r0 (size 1 MiB) on node alpha, with the
// given replica keys, and on node beta, loads it and returns it with its
// directory.
func checkConfig(t *testing.T, replicaKeys string) (*Config, string) {
	t.Helper()
	dir := t.TempDir()
	in := `
[cluster]
secret = "0123456789abcdef"
[[node]]
name = "alpha"
address = "10.0.0.1:7789"
[[node]]
name = "beta"
address = "10.0.0.2:7789"
[[volume]]
name = "r0"
size = "1MiB"
  [[volume.replica]]
  node = "alpha"
` + replicaKeys + `
  [[volume.replica]]
  node = "beta"
  disk = "does-not-exist-but-not-local.img"
`
	path := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(path, []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return c, dir
}

// diskBytes is DiskBytes for the 1 MiB volume of checkConfig with internal
// metadata (64 KiB of metadata), metaBytes MetaFileBytes with external metadata.
const (
	diskBytes = 1<<20 + 64<<10
	metaBytes = 64 << 10
)

func writeFile(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCheckNode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		keys    string
		setup   func(t *testing.T, dir string)
		want    string // "" for success; %s is the directory
		is      []error
		skipDir bool
	}{
		{
			name:  "file of the right size",
			keys:  `disk = "a.img"`,
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "a.img"), diskBytes) },
		},
		{
			name:  "create with file present",
			keys:  "disk = \"a.img\"\ncreate = true",
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "a.img"), diskBytes) },
		},
		{
			name: "create with file missing",
			keys: "disk = \"a.img\"\ncreate = true\nnbd_socket = \"a.sock\"",
		},
		{
			name: "disk missing",
			keys: `disk = "a.img"`,
			want: `config: volume "r0" replica for node "alpha": disk: %s/a.img does not exist (set create = true to create it sparse)`,
			is:   []error{ErrDisk, fs.ErrNotExist},
		},
		{
			name: "disk directory missing",
			keys: `disk = "sub/a.img"`,
			want: `config: volume "r0" replica for node "alpha": disk: %s/sub/a.img does not exist (set create = true to create it sparse)`,
			is:   []error{ErrDisk, fs.ErrNotExist},
		},
		{
			name: "create with directory missing",
			keys: "disk = \"sub/a.img\"\ncreate = true",
			want: `config: volume "r0" replica for node "alpha": disk: directory %s/sub for %s/sub/a.img does not exist`,
			is:   []error{ErrDisk, ErrNoDir, fs.ErrNotExist},
		},
		{
			name:  "create with a file as directory",
			keys:  "disk = \"sub/a.img\"\ncreate = true",
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "sub"), 0) },
			want:  `config: volume "r0" replica for node "alpha": disk: %s/sub (for %s/sub/a.img) is not a directory`,
			is:    []error{ErrDisk, ErrNoDir},
		},
		{
			name:  "internal metadata, file of the volume size",
			keys:  `disk = "a.img"`,
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "a.img"), 1<<20) },
			want: `config: volume "r0" replica for node "alpha": disk: %s/a.img is 1048576 bytes, smaller than the 1114112 bytes needed ` +
				`(the volume size of 1048576 bytes plus 65536 bytes of internal metadata); with internal metadata it holds at most size = 983040; ` +
				`use a larger disk, a smaller size or external metadata (meta_disk = "<path>")`,
			is: []error{ErrDisk},
		},
		{
			name:  "internal metadata, file one block short, create does not resize",
			keys:  "disk = \"a.img\"\ncreate = true",
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "a.img"), diskBytes-4096) },
			want: `config: volume "r0" replica for node "alpha": disk: %s/a.img is 1110016 bytes, smaller than the 1114112 bytes needed ` +
				`(the volume size of 1048576 bytes plus 65536 bytes of internal metadata); with internal metadata it holds at most size = 1044480; ` +
				`use a larger disk, a smaller size or external metadata (meta_disk = "<path>")`,
			is: []error{ErrDisk},
		},
		{
			name:  "internal metadata, file one byte short",
			keys:  `disk = "a.img"`,
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "a.img"), diskBytes-1) },
			want: `config: volume "r0" replica for node "alpha": disk: %s/a.img is 1114111 bytes, smaller than the 1114112 bytes needed ` +
				`(the volume size of 1048576 bytes plus 65536 bytes of internal metadata); with internal metadata it holds at most size = 1044480; ` +
				`use a larger disk, a smaller size or external metadata (meta_disk = "<path>")`,
			is: []error{ErrDisk},
		},
		{
			name:  "internal metadata, file too small for any volume",
			keys:  `disk = "a.img"`,
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "a.img"), 64<<10) },
			want: `config: volume "r0" replica for node "alpha": disk: %s/a.img is 65536 bytes, smaller than the 1114112 bytes needed ` +
				`(the volume size of 1048576 bytes plus 65536 bytes of internal metadata); it is too small for any volume with internal metadata; ` +
				`use a larger disk, a smaller size or external metadata (meta_disk = "<path>")`,
			is: []error{ErrDisk},
		},
		{
			name:  "internal metadata, larger file",
			keys:  "disk = \"a.img\"\ncreate = true",
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "a.img"), 2<<20) },
		},
		{
			name:  "internal metadata, larger file of an odd size",
			keys:  `disk = "a.img"`,
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "a.img"), diskBytes+1) },
		},
		{
			name:  "external metadata, file too small",
			keys:  "disk = \"a.img\"\nmeta_disk = \"a.meta\"\ncreate = true",
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "a.img"), 1<<20-4096) },
			want:  `config: volume "r0" replica for node "alpha": disk: %s/a.img is 1044480 bytes but the volume size is 1048576 bytes; they must be equal`,
			is:    []error{ErrDisk},
		},
		{
			name:  "external metadata, file too big, create does not resize",
			keys:  "disk = \"a.img\"\nmeta_disk = \"a.meta\"\ncreate = true",
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "a.img"), diskBytes) },
			want:  `config: volume "r0" replica for node "alpha": disk: %s/a.img is 1114112 bytes but the volume size is 1048576 bytes; they must be equal`,
			is:    []error{ErrDisk},
		},
		{
			name: "external metadata, both of the right size",
			keys: "disk = \"a.img\"\nmeta_disk = \"meta/a.meta\"",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "a.img"), 1<<20)
				mkdir(t, filepath.Join(dir, "meta"))
				writeFile(t, filepath.Join(dir, "meta/a.meta"), metaBytes)
			},
		},
		{
			name: "external metadata, larger metadata file",
			keys: "disk = \"a.img\"\nmeta_disk = \"a.meta\"",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "a.img"), 1<<20)
				writeFile(t, filepath.Join(dir, "a.meta"), 1<<20)
			},
		},
		{
			name:  "external metadata missing",
			keys:  "disk = \"a.img\"\nmeta_disk = \"a.meta\"",
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "a.img"), 1<<20) },
			want:  `config: volume "r0" replica for node "alpha": meta_disk: %s/a.meta does not exist (set create = true to create it)`,
			is:    []error{ErrDisk, fs.ErrNotExist},
		},
		{
			name:  "external metadata missing, with create",
			keys:  "disk = \"a.img\"\nmeta_disk = \"a.meta\"\ncreate = true",
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "a.img"), 1<<20) },
		},
		{
			name: "external metadata and disk missing, with create",
			keys: "disk = \"a.img\"\nmeta_disk = \"a.meta\"\ncreate = true",
		},
		{
			name: "external metadata directory missing, with create",
			keys: "disk = \"a.img\"\nmeta_disk = \"meta/a.meta\"\ncreate = true",
			want: `config: volume "r0" replica for node "alpha": meta_disk: directory %s/meta for %s/meta/a.meta does not exist`,
			is:   []error{ErrDisk, ErrNoDir, fs.ErrNotExist},
		},
		{
			name: "external metadata too small",
			keys: "disk = \"a.img\"\nmeta_disk = \"a.meta\"\ncreate = true",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "a.img"), 1<<20)
				writeFile(t, filepath.Join(dir, "a.meta"), metaBytes-4096)
			},
			want: `config: volume "r0" replica for node "alpha": meta_disk: %s/a.meta is 61440 bytes, smaller than the 65536 bytes of metadata of a volume of 1048576 bytes`,
			is:   []error{ErrDisk},
		},
		{
			name: "external metadata is a directory",
			keys: "disk = \"a.img\"\nmeta_disk = \"a.meta\"",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "a.img"), 1<<20)
				mkdir(t, filepath.Join(dir, "a.meta"))
			},
			want: `config: volume "r0" replica for node "alpha": meta_disk: %s/a.meta is a directory, not a regular file or a block device`,
			is:   []error{ErrDisk},
		},
		{
			name: "disk and external metadata both wrong",
			keys: "disk = \"a.img\"\nmeta_disk = \"a.meta\"",
			want: `config: volume "r0" replica for node "alpha": disk: %s/a.img does not exist (set create = true to create it sparse)` + "\n" +
				`config: volume "r0" replica for node "alpha": meta_disk: %s/a.meta does not exist (set create = true to create it)`,
			is: []error{ErrDisk, fs.ErrNotExist},
		},
		{
			name: "symlink to a file",
			keys: `disk = "link.img"`,
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "a.img"), diskBytes)
				symlink(t, "a.img", filepath.Join(dir, "link.img"))
			},
		},
		{
			name:  "disk is a directory",
			keys:  `disk = "d"`,
			setup: func(t *testing.T, dir string) { mkdir(t, filepath.Join(dir, "d")) },
			want:  `config: volume "r0" replica for node "alpha": disk: %s/d is a directory, not a regular file or a block device`,
			is:    []error{ErrDisk},
		},
		{
			name: "disk is a character device",
			keys: `disk = "/dev/null"`,
			want: `config: volume "r0" replica for node "alpha": disk: /dev/null is a character device, not a regular file or a block device`,
			is:   []error{ErrDisk},
		},
		{
			name: "nbd_socket directory missing",
			keys: "disk = \"a.img\"\ncreate = true\nnbd_socket = \"run/a.sock\"",
			want: `config: volume "r0" replica for node "alpha": nbd_socket: directory %s/run for %s/run/a.sock does not exist`,
			is:   []error{ErrNoDir, fs.ErrNotExist},
		},
		{
			name:  "nbd_socket path is a file",
			keys:  "disk = \"a.img\"\ncreate = true\nnbd_socket = \"a.sock\"",
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "a.sock"), 0) },
			want:  `config: volume "r0" replica for node "alpha": nbd_socket: %s/a.sock exists and is a regular file, not a unix socket`,
			is:    []error{fs.ErrExist},
		},
		{
			name:  "stale nbd_socket",
			keys:  "disk = \"a.img\"\ncreate = true\nnbd_socket = \"a.sock\"",
			setup: func(t *testing.T, dir string) { staleSocket(t, filepath.Join(dir, "a.sock")) },
		},
		{
			name: "several problems",
			keys: "disk = \"a.img\"\nnbd_socket = \"run/a.sock\"",
			setup: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, "c.toml")); err != nil {
					t.Fatal(err)
				}
				mkdir(t, filepath.Join(dir, "alpha.ctl"))
			},
			want: `config: node "alpha": control_socket: %s/alpha.ctl exists and is a directory, not a unix socket` + "\n" +
				`config: volume "r0" replica for node "alpha": nbd_socket: directory %s/run for %s/run/a.sock does not exist` + "\n" +
				`config: volume "r0" replica for node "alpha": disk: %s/a.img does not exist (set create = true to create it sparse)`,
			is: []error{ErrDisk, ErrNoDir, fs.ErrExist},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, dir := checkConfig(t, tc.keys)
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			err := c.CheckNode("alpha")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckNode: %v", err)
				}
				return
			}
			want := strings.ReplaceAll(tc.want, "%s", dir)
			if err == nil || err.Error() != want {
				t.Fatalf("CheckNode: %v\nwant: %s", err, want)
			}
			for _, s := range tc.is {
				if !errors.Is(err, s) {
					t.Errorf("errors.Is(err, %v) = false", s)
				}
			}
			if errors.Is(err, ErrInvalid) {
				t.Errorf("CheckNode error wraps ErrInvalid")
			}
		})
	}
}

func TestCheckNodeUnknown(t *testing.T) {
	c, _ := checkConfig(t, `disk = "a.img"`)
	err := c.CheckNode("gamma")
	if want := `config: unknown node "gamma" (known nodes: "alpha", "beta")`; err == nil || err.Error() != want || !errors.Is(err, ErrUnknownNode) {
		t.Errorf("CheckNode(gamma) = %v, want %s", err, want)
	}
	// beta's disk is missing, but that is beta's business.
	c, dir := checkConfig(t, `disk = "a.img"`)
	writeFile(t, filepath.Join(dir, "a.img"), diskBytes)
	if err := c.CheckNode("alpha"); err != nil {
		t.Errorf("CheckNode(alpha): %v", err)
	}
	if err := c.CheckNode("beta"); !errors.Is(err, ErrDisk) || !strings.Contains(err.Error(), `volume "r0" replica for node "beta": disk:`) {
		t.Errorf("CheckNode(beta): %v", err)
	}
}

// TestCheckNodeBlockDevice compares BLKGETSIZE64 with sysfs for the block devices
// of this machine (opened read-only, never written).
func TestCheckNodeBlockDevice(t *testing.T) {
	ents, _ := os.ReadDir("/sys/block")
	tested := 0
	for _, e := range ents {
		dev := "/dev/" + e.Name()
		if fi, err := os.Stat(dev); err != nil || fi.Mode().Type() != fs.ModeDevice {
			continue
		}
		sectors, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "size"))
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(sectors)), 10, 64)
		if err != nil {
			continue
		}
		size := n * 512
		got, err := blockDeviceSize(dev)
		if err != nil {
			t.Logf("%s: %v", dev, err) // e.g. not permitted, or no medium
			continue
		}
		if got != size {
			t.Errorf("blockDeviceSize(%s) = %d, sysfs says %d", dev, got, size)
		}
		tested++

		// External metadata (created on start): the device holds the volume.
		c, _ := checkConfig(t, fmt.Sprintf("disk = %q\nmeta_disk = \"a.meta\"\ncreate = true", dev))
		err = c.CheckNode("alpha")
		if size >= 1<<20 && err != nil {
			t.Errorf("%s (%d bytes) for 1 MiB: %v", dev, size, err)
		}
		want := fmt.Sprintf(`config: volume "r0" replica for node "alpha": disk: block device %s is %d bytes, smaller than the volume size of 1048576 bytes`, dev, size)
		if size < 1<<20 && (err == nil || err.Error() != want || !errors.Is(err, ErrDisk)) {
			t.Errorf("%s (%d bytes) for 1 MiB: %v\nwant %s", dev, size, err, want)
		}
		// Internal metadata: the device also holds the metadata.
		c, _ = checkConfig(t, fmt.Sprintf("disk = %q", dev))
		err = c.CheckNode("alpha")
		if size >= diskBytes && err != nil {
			t.Errorf("%s (%d bytes) for 1 MiB with internal metadata: %v", dev, size, err)
		}
		want = fmt.Sprintf(`config: volume "r0" replica for node "alpha": disk: block device %s is %d bytes, smaller than the 1114112 bytes needed (the volume size of 1048576 bytes plus 65536 bytes of internal metadata); `, dev, size)
		if size < diskBytes && (err == nil || !strings.HasPrefix(err.Error(), want) || !errors.Is(err, ErrDisk)) {
			t.Errorf("%s (%d bytes) for 1 MiB with internal metadata: %v\nwant %s...", dev, size, err, want)
		}
	}
	if tested == 0 {
		t.Skip("no readable block device")
	}
}

func mkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, old, new string) {
	t.Helper()
	if err := os.Symlink(old, new); err != nil {
		t.Fatal(err)
	}
}

// staleSocket leaves a unix socket file at path with nobody listening.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
