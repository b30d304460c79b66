package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/blkrep/blkrep/internal/clustertest"
)

func readBlocksCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("readblocks")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return usageErr(stderr, "readblocks", "%v", err)
	}
	if len(pos) != 2 {
		return usageErr(stderr, "readblocks", "want DEV N, got %d arguments", len(pos))
	}
	n, err := strconv.ParseInt(pos[1], 10, 64)
	if err != nil || n < 0 {
		return usageErr(stderr, "readblocks", "N %q is not a number of blocks >= 0", pos[1])
	}
	if err := readBlocks(pos[0], n, stdout); err != nil {
		fmt.Fprintf(stderr, "blkrep-agent readblocks: %v\n", err)
		return 1
	}
	return 0
}

// readBlocks prints one line per block. The blocks are read with O_DIRECT
// so that they come from the device, not from a page cache that may
// predate a failover; files that refuse it are read plainly.
func readBlocks(dev string, n int64, stdout io.Writer) error {
	buf, err := alignedBlock()
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	f, direct, err := openBlocks(dev, true)
	if err != nil {
		return err
	}
	defer func() { f.Close() }()
	out := bufio.NewWriter(stdout)
	for i := range n {
		got, err := f.ReadAt(buf, i*clustertest.BlockSize)
		if direct && isEINVAL(err) { // refused at the first read rather than at open
			f.Close()
			if f, direct, err = openBlocks(dev, false); err != nil {
				return err
			}
			got, err = f.ReadAt(buf, i*clustertest.BlockSize)
		}
		fmt.Fprintf(out, "%d %s\n", i, describe(buf, got, err))
	}
	return out.Flush()
}

func openBlocks(dev string, direct bool) (*os.File, bool, error) {
	if direct {
		f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_DIRECT, 0)
		if !isEINVAL(err) {
			return f, true, err
		}
	}
	f, err := os.Open(dev)
	return f, false, err
}

// describe is the rest of a block's line: zero, tag ..., or bad ....
func describe(buf []byte, got int, err error) string {
	if got < len(buf) {
		if err == io.EOF {
			return fmt.Sprintf("bad short read: %d of %d bytes", got, len(buf))
		}
		return fmt.Sprintf("bad %v", err)
	}
	t, zero, err := clustertest.DecodeTag(buf)
	switch {
	case err != nil:
		return fmt.Sprintf("bad %v", err)
	case zero:
		return "zero"
	}
	return fmt.Sprintf("tag %d %d %d %s", t.Seq, t.Offset, t.Issued.UnixNano(), t.Node)
}
