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
// set, when the directory that will hold it must exist) and be either a regular
// file of exactly the volume size or a block device of at least that size.
// Anything already at a socket path must be a socket (one left by an earlier
// run is fine).
//
// CheckNode only looks: it creates, opens for writing and removes nothing. The
// error is ErrUnknownNode, or every problem found joined; each is an *Error
// wrapping ErrDisk or ErrNoDir and the underlying cause (such as fs.ErrNotExist).
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
	add(checkSocket(fmt.Sprintf("node %q", n.Name), "control_socket", n.ControlSocket))
	for _, lr := range c.LocalReplicas(node) {
		sec := fmt.Sprintf("volume %q replica for node %q", lr.Volume.Name, node)
		if lr.Replica.NBDSocket != "" {
			add(checkSocket(sec, "nbd_socket", lr.Replica.NBDSocket))
		}
		add(checkDisk(sec, lr))
	}
	return errors.Join(errs...)
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
	path, want := lr.Replica.Disk, lr.Volume.SizeBytes
	fi, err := os.Stat(path)
	// ENOTDIR: a parent is not a directory, so the disk is not there either.
	missing := errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
	switch {
	case missing && lr.Replica.Create:
		return checkDir(section, key, path, ErrDisk)
	case missing:
		return checkErr(section, key, []error{ErrDisk, err}, "%s does not exist (set create = true to create it sparse)", path)
	case err != nil:
		return checkErr(section, key, []error{ErrDisk, err}, "%v", err)
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
		if fi.Size() != want {
			return checkErr(section, key, []error{ErrDisk}, "%s is %d bytes but the volume size is %d bytes; they must be equal", path, fi.Size(), want)
		}
	case m.Type() == fs.ModeDevice:
		got, err := blockDeviceSize(path)
		if err != nil {
			return checkErr(section, key, []error{ErrDisk, err}, "block device %s: reading its size: %v", path, err)
		}
		if got < want {
			return checkErr(section, key, []error{ErrDisk}, "block device %s is %d bytes, smaller than the volume size of %d bytes", path, got, want)
		}
	default:
		return checkErr(section, key, []error{ErrDisk}, "%s is %s, not a regular file or a block device", path, fileKind(m))
	}
	return nil
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
