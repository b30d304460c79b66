package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blkrep/blkrep/internal/clustertest"
)

// writerCmd is the block workload; stop delivers SIGTERM/SIGINT.
func writerCmd(args []string, stdout, stderr io.Writer, stop <-chan os.Signal) int {
	fs := newFlags("writer")
	node := fs.String("node", "", "")
	blocks := fs.Int64("blocks", 0, "")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "")
	count := fs.Uint64("count", 0, "")
	first := fs.Uint64("first-seq", 1, "")
	duration := fs.Duration("duration", 0, "")
	noDirect := fs.Bool("no-direct", false, "")
	pos, err := parseArgs(fs, args)
	switch {
	case err != nil:
		return usageErr(stderr, "writer", "%v", err)
	case len(pos) != 1:
		return usageErr(stderr, "writer", "want exactly one DEV, got %d arguments", len(pos))
	case *node == "" || len(*node) > 16 || strings.ContainsAny(*node, " \t\n\x00"):
		return usageErr(stderr, "writer", "--node %q: want 1 to 16 bytes without blanks (it goes into every block)", *node)
	case *blocks <= 0:
		return usageErr(stderr, "writer", "--blocks %d: want a number of blocks > 0", *blocks)
	case *first == 0:
		return usageErr(stderr, "writer", "--first-seq 0: sequence numbers start at 1 or more")
	case *duration < 0:
		return usageErr(stderr, "writer", "--duration %v is negative", *duration)
	}

	flags := os.O_RDWR | unix.O_DSYNC // every ack means the block is on the device
	if !*noDirect {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(pos[0], flags, 0)
	if err != nil {
		fmt.Fprintf(stderr, "blkrep-agent writer: %v\n", err)
		return 1
	}
	defer f.Close()
	if size, isDev := deviceSize(f); isDev && *blocks*clustertest.BlockSize > size {
		return usageErr(stderr, "writer", "--blocks %d: %s has only %d blocks", *blocks, pos[0], size/clustertest.BlockSize)
	}
	buf, err := alignedBlock()
	if err != nil {
		fmt.Fprintf(stderr, "blkrep-agent writer: %v\n", err)
		return 1
	}
	defer unix.Munmap(buf)

	w := writer{f: f, buf: buf, node: *node, blocks: *blocks, rng: rand.New(rand.NewPCG(*seed, 0x626c6b72)), out: stdout}
	var deadline time.Time
	if *duration > 0 {
		deadline = time.Now().Add(*duration)
	}
	// Writers on different nodes start at different numbers, so that the
	// host can check their histories together.
	for seq := *first; ; seq++ {
		stopped := (*count > 0 && seq-*first >= *count) || (!deadline.IsZero() && !time.Now().Before(deadline))
		select {
		case <-stop:
			stopped = true // the previous write has finished
		default:
		}
		if stopped {
			fmt.Fprintf(stdout, "stopped %d\n", seq-1) // the last one written
			return 0
		}
		if err := w.write(seq); err != nil {
			fmt.Fprintf(stdout, "error %d %s\n", seq, strings.ReplaceAll(err.Error(), "\n", " "))
			return 3
		}
	}
}

// deviceSize is the size of a block device (isDev false for other files,
// whose size does not bound the writes).
func deviceSize(f *os.File) (size int64, isDev bool) {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeDevice == 0 {
		return 0, false
	}
	size, err = f.Seek(0, io.SeekEnd)
	return size, err == nil
}

type writer struct {
	f      *os.File
	buf    []byte // aligned, BlockSize
	node   string
	blocks int64
	rng    *rand.Rand
	out    io.Writer // unbuffered: every line is out before the next step
}

// write issues write seq to a random block and waits for it.
func (w *writer) write(seq uint64) error {
	off := w.rng.Int64N(w.blocks) * clustertest.BlockSize
	issued := time.Now()
	clustertest.Tag{Seq: seq, Offset: off, Issued: issued, Node: w.node}.Encode(w.buf)
	fmt.Fprintf(w.out, "issue %d %d %d\n", seq, off, issued.UnixNano())
	if _, err := w.f.WriteAt(w.buf, off); err != nil {
		return err
	}
	fmt.Fprintf(w.out, "ack %d\n", seq)
	return nil
}
