package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// CheckNode checks what node needs from its machine before it starts: node must
// be declared; the directories of its control socket and of its replicas' NBD
// sockets must exist; each of its replicas' disks must exist (unless create is
// set, when the directory that will hold it must exist) and be a regular file or
// a block device: with internal metadata, of at least LocalReplica.DiskBytes
// (the volume size plus the metadata area); with external or no metadata, a
// regular file of exactly the volume size or a block device of at least that
// size. An external metadata file must exist likewise (or its directory, with
// create) and be a regular file or block device of at least
// LocalReplica.MetaFileBytes. Anything already at a socket path must be a socket
// (one left by an earlier run is fine). If node holds a replica of a replicated
// volume, or is a witness while a volume fails over (the gossip is keyed with the
// secret), and the secret is in secret_file, LoadSecret must succeed.
//
// CheckNode only looks: it creates, opens for writing and removes nothing. The
// error is ErrUnknownNode, or every problem found joined; each is an *Error
// wrapping ErrDisk, ErrNoDir or ErrSecret and the underlying cause (such as
// fs.ErrNotExist).
func (c *Config) CheckNode(node string) error {
	n, ok := c.Node(node)
	if !ok {
		return fmt.Errorf("%w %q (known nodes: %s)", ErrUnknownNode, node, quoteNames(c.Nodes))
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if c.Cluster.SecretFile != "" {
		if why := secretUser(c, n); why != "" {
			add(checkSecret(c, node, why))
		}
	}
	add(checkSocket(fmt.Sprintf("node %q", n.Name), "control_socket", n.ControlSocket))
	for _, lr := range c.LocalReplicas(node) {
		sec := fmt.Sprintf("volume %q replica for node %q", lr.Volume.Name, node)
		if lr.Replica.NBDSocket != "" {
			add(checkSocket(sec, "nbd_socket", lr.Replica.NBDSocket))
		}
		add(checkDisk(sec, lr))
		if lr.Replica.MetaExternal() {
			add(checkMetaFile(sec, lr))
		}
	}
	return errors.Join(errs...)
}

// secretUser says why node n needs the secret ("" if it does not): it holds a
// replica of a replicated volume, or it is a witness voting for a volume with
// failover.
func secretUser(c *Config, n *Node) string {
	for _, lr := range c.LocalReplicas(n.Name) {
		if lr.Volume.Replicated() {
			return fmt.Sprintf("it holds a replica of replicated volume %q", lr.Volume.Name)
		}
	}
	if n.Witness {
		for i := range c.Volumes {
			if c.Volumes[i].Failover {
				return fmt.Sprintf("it is a witness of replicated volume %q", c.Volumes[i].Name)
			}
		}
	}
	return ""
}

// checkSecret checks that node, which needs the secret for the reason why, can
// read the secret file.
func checkSecret(c *Config, node, why string) error {
	_, err := c.LoadSecret()
	e, ok := err.(*Error)
	if !ok {
		return err
	}
	return checkErr(e.Section, e.Key, []error{e}, "node %q needs it (%s): %s", node, why, e.Problem)
}

func checkErr(section, key string, errs []error, format string, args ...any) error {
	return &Error{Section: section, Key: key, Problem: fmt.Sprintf(format, args...), errs: errs}
}

// checkDir checks that dir, which must hold path, is an existing directory.
func checkDir(section, key, path string, kind error) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return checkErr(section, key, []error{kind, ErrNoDir, err}, "directory %s for %s does not exist", dir, path)
	case err != nil:
		return checkErr(section, key, []error{kind, err}, "directory for %s: %v", path, err)
	case !fi.IsDir():
		return checkErr(section, key, []error{kind, ErrNoDir}, "%s (for %s) is not a directory", dir, path)
	}
	return nil
}

func checkSocket(section, key, path string) error {
	if err := checkDir(section, key, path, ErrNoDir); err != nil {
		return err
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return checkErr(section, key, []error{ErrNoDir, err}, "%v", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return checkErr(section, key, []error{fs.ErrExist}, "%s exists and is %s, not a unix socket", path, fileKind(fi.Mode()))
	}
	return nil
}

func checkDisk(section string, lr LocalReplica) error {
	const key = "disk"
	path, size := lr.Replica.Disk, lr.Volume.SizeBytes
	got, isDev, err := statDisk(section, key, path, lr.Replica.Create, "create it sparse")
	if err != nil || got < 0 {
		return err
	}
	name := path
	if isDev {
		name = "block device " + path
	}
	if !lr.Replica.MetaInternal() {
		switch {
		case !isDev && got != size:
			return checkErr(section, key, []error{ErrDisk}, "%s is %d bytes but the volume size is %d bytes; they must be equal", path, got, size)
		case isDev && got < size:
			return checkErr(section, key, []error{ErrDisk}, "%s is %d bytes, smaller than the volume size of %d bytes", name, got, size)
		}
		return nil
	}
	want, err := lr.DiskBytes()
	if err != nil {
		return checkErr(section, key, []error{ErrDisk, err}, "%v", err)
	}
	if got >= want {
		return nil
	}
	fit := "it is too small for any volume with internal metadata"
	if n := maxInternalSize(lr.Volume, lr.Replica, got); n > 0 {
		fit = fmt.Sprintf("with internal metadata it holds at most size = %d", n)
	}
	return checkErr(section, key, []error{ErrDisk},
		"%s is %d bytes, smaller than the %d bytes needed (the volume size of %d bytes plus %d bytes of internal metadata); "+
			"%s; use a larger disk, a smaller size or external metadata (meta_disk = \"<path>\")",
		name, got, want, size, want-size, fit)
}

// checkMetaFile checks a replica's external metadata file.
func checkMetaFile(section string, lr LocalReplica) error {
	const key = "meta_disk"
	path, want := lr.Replica.MetaDisk, lr.MetaFileBytes()
	got, isDev, err := statDisk(section, key, path, lr.Replica.Create, "create it")
	if err != nil || got < 0 {
		return err
	}
	name := path
	if isDev {
		name = "block device " + path
	}
	if got < want {
		return checkErr(section, key, []error{ErrDisk}, "%s is %d bytes, smaller than the %d bytes of metadata of a volume of %d bytes", name, got, want, lr.Volume.SizeBytes)
	}
	return nil
}

// statDisk looks at a disk or metadata file: it returns its size and whether it
// is a block device, or size -1 if it is missing but may be created (create, and
// its directory exists). what says what create = true would do, for messages.
func statDisk(section, key, path string, create bool, what string) (size int64, isDev bool, err error) {
	fi, err := os.Stat(path)
	// ENOTDIR: a parent is not a directory, so the file is not there either.
	missing := errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
	switch {
	case missing && create:
		return -1, false, checkDir(section, key, path, ErrDisk)
	case missing:
		return 0, false, checkErr(section, key, []error{ErrDisk, err}, "%s does not exist (set create = true to %s)", path, what)
	case err != nil:
		return 0, false, checkErr(section, key, []error{ErrDisk, err}, "%v", err)
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
		return fi.Size(), false, nil
	case m.Type() == fs.ModeDevice:
		got, err := blockDeviceSize(path)
		if err != nil {
			return 0, true, checkErr(section, key, []error{ErrDisk, err}, "block device %s: reading its size: %v", path, err)
		}
		return got, true, nil
	default:
		return 0, false, checkErr(section, key, []error{ErrDisk}, "%s is %s, not a regular file or a block device", path, fileKind(m))
	}
}

// fileKind describes a file type for messages, with an article.
func fileKind(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "a regular file"
	case fs.ModeDir:
		return "a directory"
	case fs.ModeDevice:
		return "a block device"
	case fs.ModeDevice | fs.ModeCharDevice:
		return "a character device"
	case fs.ModeSocket:
		return "a unix socket"
	case fs.ModeNamedPipe:
		return "a named pipe"
	case fs.ModeSymlink:
		return "a symbolic link"
	default:
		return "a special file"
	}
}
