package config

import (
	"bytes"
	"io"
	"os"
)

// maxSecretFileBytes bounds what LoadSecret reads from secret_file: a secret of
// MaxSecretBytes with room for trailing whitespace.
const maxSecretFileBytes = 4096

// LoadSecret returns the cluster's shared secret: Cluster.Secret, or the content
// of Cluster.SecretFile without its trailing whitespace (a newline, spaces,
// tabs, carriage returns), which must be MinSecretBytes to MaxSecretBytes long.
// It refuses a secret file that other users may read (mode&0o004), or that is
// not a regular file (symbolic links are followed). It returns nil, nil when
// neither is set, as for a configuration without a replicated volume.
//
// A problem with the file is an *Error for key secret_file of section cluster,
// naming the file (never the secret), wrapping ErrSecret and the cause.
func (c *Config) LoadSecret() ([]byte, error) {
	switch {
	case c.Cluster.Secret != "":
		return []byte(c.Cluster.Secret), nil
	case c.Cluster.SecretFile == "":
		return nil, nil
	}
	path := c.Cluster.SecretFile
	fail := func(cause error, format string, args ...any) error {
		errs := []error{ErrSecret}
		if cause != nil {
			errs = append(errs, cause)
		}
		return checkErr("cluster", "secret_file", errs, format, args...)
	}
	// Stat first: opening a named pipe would block.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fail(err, "%v", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fail(nil, "%s is %s, not a regular file", path, fileKind(fi.Mode()))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fail(err, "%v", err)
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, fail(err, "%v", err)
	}
	if perm := fi.Mode().Perm(); perm&0o004 != 0 {
		return nil, fail(nil, "%s is readable by other users (mode %04o); restrict it with: chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFileBytes+1))
	if err != nil {
		return nil, fail(err, "reading %s: %v", path, err)
	}
	if len(data) > maxSecretFileBytes {
		return nil, fail(nil, "%s is larger than %d bytes; a secret is %d to %d bytes", path, maxSecretFileBytes, MinSecretBytes, MaxSecretBytes)
	}
	secret := bytes.TrimRight(data, " \t\r\n")
	if n := len(secret); n < MinSecretBytes || n > MaxSecretBytes {
		return nil, fail(nil, "the secret in %s is %d bytes long (without trailing whitespace); it must be %d to %d bytes (generate one with: head -c 32 /dev/urandom | base64 > %s)",
			path, n, MinSecretBytes, MaxSecretBytes, path)
	}
	return secret, nil
}
