package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

func writeFilesCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("writefiles")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return usageErr(stderr, "writefiles", "%v", err)
	}
	if len(pos) != 3 {
		return usageErr(stderr, "writefiles", "want DIR COUNT SIZE_BYTES, got %d arguments", len(pos))
	}
	count, err := strconv.Atoi(pos[1])
	if err != nil || count < 0 {
		return usageErr(stderr, "writefiles", "COUNT %q is not a number >= 0", pos[1])
	}
	size, err := strconv.ParseInt(pos[2], 10, 64)
	if err != nil || size < 0 {
		return usageErr(stderr, "writefiles", "SIZE_BYTES %q is not a number >= 0", pos[2])
	}
	if err := writeFiles(pos[0], count, size, *seed, stdout); err != nil {
		fmt.Fprintf(stderr, "blkrep-agent writefiles: %v\n", err)
		return 1
	}
	return 0
}

// writeFiles writes the files one after the other and reports each once
// it is durable: its data synced, and its name (the directory synced).
func writeFiles(dir string, count int, size int64, seed uint64, stdout io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	for i := range count {
		name := fmt.Sprintf("f%04d", i)
		sum, err := writeFile(filepath.Join(dir, name), size, fileSeed(seed, i))
		if err != nil {
			return err
		}
		if err := d.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", dir, err)
		}
		fmt.Fprintf(stdout, "file %s %x\n", name, sum)
	}
	return nil
}

// fileSeed: the same seed and index give the same content.
func fileSeed(seed uint64, i int) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[0:], seed)
	binary.LittleEndian.PutUint64(s[8:], uint64(i))
	copy(s[16:], "blkrep-agent")
	return s
}

// writeFile writes size bytes of the stream of seed to path, synced, and
// returns their SHA-256.
func writeFile(path string, size int64, seed [32]byte) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	_, err = io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8(seed), size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return h.Sum(nil), err
}
