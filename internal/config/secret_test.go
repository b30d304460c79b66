package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// secretConfig writes a cluster of alpha and beta replicating r0, a witness,
// and r1 on alpha alone, with the given [cluster] keys (%s is the directory),
// loads it and returns it with its directory.
func secretConfig(t *testing.T, clusterKeys string) (*Config, string) {
	t.Helper()
	dir := t.TempDir()
	in := `
[cluster]
` + strings.ReplaceAll(clusterKeys, "%s", dir) + `
[[node]]
name = "alpha"
address = "10.0.0.1:7789"
[[node]]
name = "beta"
address = "10.0.0.2:7789"
[[node]]
name = "witness"
[[volume]]
name = "r0"
size = "1MiB"
  [[volume.replica]]
  node = "alpha"
  disk = "alpha-r0.img"
  create = true
  [[volume.replica]]
  node = "beta"
  disk = "beta-r0.img"
  create = true
[[volume]]
name = "r1"
size = "1MiB"
  [[volume.replica]]
  node = "alpha"
  disk = "alpha-r1.img"
  create = true
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

func writeSecret(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
}

const secret32 = "q2Vx1f3Zl0cX9yJk7Rm4Tn8Wb6Hd5Ps2"

func TestLoadSecret(t *testing.T) {
	for _, tc := range []struct {
		name  string
		keys  string
		setup func(t *testing.T, dir string)
		want  string // the secret, or the error with %s for the directory
		is    []error
	}{
		{name: "inline", keys: `secret = "` + secret32 + `"`, want: secret32},
		{
			name:  "file",
			keys:  `secret_file = "secret"`,
			setup: func(t *testing.T, dir string) { writeSecret(t, filepath.Join(dir, "secret"), secret32, 0o600) },
			want:  secret32,
		},
		{
			name:  "file with a trailing newline",
			keys:  `secret_file = "secret"`,
			setup: func(t *testing.T, dir string) { writeSecret(t, filepath.Join(dir, "secret"), secret32+"\n", 0o400) },
			want:  secret32,
		},
		{
			name: "file with trailing whitespace",
			keys: `secret_file = "secret"`,
			setup: func(t *testing.T, dir string) {
				writeSecret(t, filepath.Join(dir, "secret"), secret32+" \t\r\n\n", 0o600)
			},
			want: secret32,
		},
		{
			name: "leading and inner whitespace kept",
			keys: `secret_file = "secret"`,
			setup: func(t *testing.T, dir string) {
				writeSecret(t, filepath.Join(dir, "secret"), " two words of secret\n", 0o600)
			},
			want: " two words of secret",
		},
		{
			name:  "readable by the group",
			keys:  `secret_file = "secret"`,
			setup: func(t *testing.T, dir string) { writeSecret(t, filepath.Join(dir, "secret"), secret32, 0o640) },
			want:  secret32,
		},
		{
			name: "shortest",
			keys: `secret_file = "secret"`,
			setup: func(t *testing.T, dir string) {
				writeSecret(t, filepath.Join(dir, "secret"), strings.Repeat("s", 16)+"\n", 0o600)
			},
			want: strings.Repeat("s", 16),
		},
		{
			name: "longest",
			keys: `secret_file = "secret"`,
			setup: func(t *testing.T, dir string) {
				writeSecret(t, filepath.Join(dir, "secret"), strings.Repeat("s", 1024)+"\n", 0o600)
			},
			want: strings.Repeat("s", 1024),
		},
		{
			name: "symbolic link",
			keys: `secret_file = "link"`,
			setup: func(t *testing.T, dir string) {
				writeSecret(t, filepath.Join(dir, "secret"), secret32, 0o600)
				symlink(t, "secret", filepath.Join(dir, "link"))
			},
			want: secret32,
		},
		{
			name:  "readable by others",
			keys:  `secret_file = "secret"`,
			setup: func(t *testing.T, dir string) { writeSecret(t, filepath.Join(dir, "secret"), secret32, 0o644) },
			want:  `config: cluster: secret_file: %s/secret is readable by other users (mode 0644); restrict it with: chmod 600 %s/secret`,
			is:    []error{ErrSecret},
		},
		{
			name:  "readable by others only",
			keys:  `secret_file = "secret"`,
			setup: func(t *testing.T, dir string) { writeSecret(t, filepath.Join(dir, "secret"), secret32, 0o604) },
			want:  `config: cluster: secret_file: %s/secret is readable by other users (mode 0604); restrict it with: chmod 600 %s/secret`,
			is:    []error{ErrSecret},
		},
		{
			name:  "too short",
			keys:  `secret_file = "secret"`,
			setup: func(t *testing.T, dir string) { writeSecret(t, filepath.Join(dir, "secret"), "hunter2\n", 0o600) },
			want:  `config: cluster: secret_file: the secret in %s/secret is 7 bytes long (without trailing whitespace); it must be 16 to 1024 bytes (generate one with: head -c 32 /dev/urandom | base64 > %s/secret)`,
			is:    []error{ErrSecret},
		},
		{
			name: "short once trimmed",
			keys: `secret_file = "secret"`,
			setup: func(t *testing.T, dir string) {
				writeSecret(t, filepath.Join(dir, "secret"), "123456789012345\n\n", 0o600)
			},
			want: `config: cluster: secret_file: the secret in %s/secret is 15 bytes long (without trailing whitespace); it must be 16 to 1024 bytes`,
			is:   []error{ErrSecret},
		},
		{
			name:  "empty",
			keys:  `secret_file = "secret"`,
			setup: func(t *testing.T, dir string) { writeSecret(t, filepath.Join(dir, "secret"), "", 0o600) },
			want:  `config: cluster: secret_file: the secret in %s/secret is 0 bytes long (without trailing whitespace)`,
			is:    []error{ErrSecret},
		},
		{
			name: "too long",
			keys: `secret_file = "secret"`,
			setup: func(t *testing.T, dir string) {
				writeSecret(t, filepath.Join(dir, "secret"), strings.Repeat("s", 1025), 0o600)
			},
			want: `config: cluster: secret_file: the secret in %s/secret is 1025 bytes long (without trailing whitespace); it must be 16 to 1024 bytes`,
			is:   []error{ErrSecret},
		},
		{
			name: "huge file",
			keys: `secret_file = "secret"`,
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "secret"), 1<<30) // sparse
				if err := os.Chmod(filepath.Join(dir, "secret"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			want: `config: cluster: secret_file: %s/secret is larger than 4096 bytes; a secret is 16 to 1024 bytes`,
			is:   []error{ErrSecret},
		},
		{
			name: "missing",
			keys: `secret_file = "secret"`,
			want: `config: cluster: secret_file: stat %s/secret: no such file or directory`,
			is:   []error{ErrSecret, fs.ErrNotExist},
		},
		{
			name:  "directory",
			keys:  `secret_file = "secret"`,
			setup: func(t *testing.T, dir string) { mkdir(t, filepath.Join(dir, "secret")) },
			want:  `config: cluster: secret_file: %s/secret is a directory, not a regular file`,
			is:    []error{ErrSecret},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, dir := secretConfig(t, tc.keys)
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			got, err := c.LoadSecret()
			if tc.is == nil {
				if err != nil || string(got) != tc.want {
					t.Fatalf("LoadSecret = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			want := strings.ReplaceAll(tc.want, "%s", dir)
			if err == nil || !strings.HasPrefix(err.Error(), want) || got != nil {
				t.Fatalf("LoadSecret = %q, %v\nwant error: %s", got, err, want)
			}
			for _, s := range tc.is {
				if !errors.Is(err, s) {
					t.Errorf("errors.Is(err, %v) = false", s)
				}
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Section != "cluster" || ce.Key != "secret_file" || errors.Is(err, ErrInvalid) {
				t.Errorf("error %#v", err)
			}
		})
	}
}

// TestLoadSecretCopies: the caller may overwrite the returned secret.
func TestLoadSecretCopies(t *testing.T) {
	c, _ := secretConfig(t, `secret = "`+secret32+`"`)
	s, _ := c.LoadSecret()
	s[0] = 'X'
	if s, _ := c.LoadSecret(); string(s) != secret32 {
		t.Errorf("LoadSecret = %q after a change to an earlier result", s)
	}
}

// TestCheckNodeSecret: CheckNode reads the secret file for a node holding a
// replica of a replicated volume, and only then.
func TestCheckNodeSecret(t *testing.T) {
	c, dir := secretConfig(t, `secret_file = "secret"`)
	// Missing: alpha and beta need it; the witness and a node holding only
	// single-replica volumes do not.
	for _, node := range []string{"alpha", "beta"} {
		err := c.CheckNode(node)
		want := `config: cluster: secret_file: node "` + node + `" needs it (it holds a replica of replicated volume "r0"): stat ` + dir + `/secret: no such file or directory`
		if err == nil || err.Error() != want || !errors.Is(err, ErrSecret) || !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrInvalid) {
			t.Errorf("CheckNode(%s) = %v\nwant %s", node, err, want)
		}
		var ce *Error
		if !errors.As(err, &ce) || ce.Section != "cluster" || ce.Key != "secret_file" {
			t.Errorf("CheckNode(%s): %#v", node, err)
		}
	}
	if err := c.CheckNode("witness"); err != nil {
		t.Errorf("CheckNode(witness) = %v", err)
	}

	path := filepath.Join(dir, "secret")
	writeSecret(t, path, secret32+"\n", 0o644)
	want := `config: cluster: secret_file: node "alpha" needs it (it holds a replica of replicated volume "r0"): ` + path + ` is readable by other users (mode 0644); restrict it with: chmod 600 ` + path
	if err := c.CheckNode("alpha"); err == nil || err.Error() != want || !errors.Is(err, ErrSecret) {
		t.Errorf("CheckNode(alpha) = %v\nwant %s", err, want)
	}

	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"alpha", "beta", "witness"} {
		if err := c.CheckNode(node); err != nil {
			t.Errorf("CheckNode(%s) = %v", node, err)
		}
	}

	// Together with the other node checks, first (cluster comes first).
	mkdir(t, filepath.Join(dir, "alpha.ctl"))
	writeSecret(t, path, "short", 0o600)
	err := c.CheckNode("alpha")
	want = `config: cluster: secret_file: node "alpha" needs it (it holds a replica of replicated volume "r0"): the secret in ` + path + ` is 5 bytes long` +
		` (without trailing whitespace); it must be 16 to 1024 bytes (generate one with: head -c 32 /dev/urandom | base64 > ` + path + `)` + "\n" +
		`config: node "alpha": control_socket: ` + dir + `/alpha.ctl exists and is a directory, not a unix socket`
	if err == nil || err.Error() != want {
		t.Errorf("CheckNode(alpha) = %v\nwant %s", err, want)
	}
}

// TestCheckNodeInlineSecret: an inline secret needs no node check.
func TestCheckNodeInlineSecret(t *testing.T) {
	c, _ := secretConfig(t, `secret = "`+secret32+`"`)
	for _, node := range []string{"alpha", "beta", "witness"} {
		if err := c.CheckNode(node); err != nil {
			t.Errorf("CheckNode(%s) = %v", node, err)
		}
	}
}

// TestCheckNodeSecretWitness: with failover, a witness reads the secret file too
// (the gossip is keyed with it); without a replicated volume it does not.
func TestCheckNodeSecretWitness(t *testing.T) {
	dir := t.TempDir()
	in := `
[cluster]
secret_file = "secret"
failover = true
[[node]]
name = "alpha"
address = "10.0.0.1:7789"
gossip = "10.0.0.1:7946"
[[node]]
name = "beta"
address = "10.0.0.2:7789"
gossip = "10.0.0.2:7946"
[[node]]
name = "witness"
witness = true
gossip = "10.0.0.3:7946"
`
	replicated := `
[[volume]]
name = "r0"
size = "1MiB"
  [[volume.replica]]
  node = "alpha"
  disk = "alpha-r0.img"
  create = true
  [[volume.replica]]
  node = "beta"
  disk = "beta-r0.img"
  create = true
`
	c, err := Parse([]byte(in+replicated), dir)
	if err != nil {
		t.Fatal(err)
	}
	want := `config: cluster: secret_file: node "witness" needs it (it is a witness of replicated volume "r0"): stat ` + dir + `/secret: no such file or directory`
	if err := c.CheckNode("witness"); err == nil || err.Error() != want || !errors.Is(err, ErrSecret) {
		t.Errorf("CheckNode(witness) = %v\nwant %s", err, want)
	}
	writeSecret(t, filepath.Join(dir, "secret"), secret32+"\n", 0o600)
	if err := c.CheckNode("witness"); err != nil {
		t.Errorf("CheckNode(witness) with the secret = %v", err)
	}

	// No replicated volume: nothing to vote on, no gossip, no secret.
	c, err = Parse([]byte(in+strings.Replace(replicated, "  [[volume.replica]]\n  node = \"beta\"\n  disk = \"beta-r0.img\"\n  create = true\n", "", 1)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckNode("witness"); err != nil {
		t.Errorf("CheckNode(witness) without a replicated volume = %v", err)
	}
}
