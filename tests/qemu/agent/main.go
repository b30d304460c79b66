package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/blkrep/blkrep/internal/clustertest"
)

const usage = `usage: blkrep-agent COMMAND [ARGS]

Commands:
  serve [--port NAME]          answer the host's requests on the virtio-serial port NAME
                               (default blkrep.agent); see the package documentation
  writefiles DIR COUNT SIZE_BYTES [--seed S]
                               write COUNT files of SIZE_BYTES pseudo-random bytes, each made
                               durable, printing "file NAME SHA256HEX" per file
  writer DEV --node NAME --blocks N [--seed S] [--first-seq F] [--count C] [--duration D] [--no-direct]
                               write tagged blocks to DEV, printing issue/ack lines
  readblocks DEV N             print what each of the first N blocks of DEV holds
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, "blkrep-agent: no command given\n"+usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serveCmd(args[1:], os.Stderr)
	case "writefiles":
		return writeFilesCmd(args[1:], os.Stdout, os.Stderr)
	case "writer":
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		return writerCmd(args[1:], os.Stdout, os.Stderr, stop)
	case "readblocks":
		return readBlocksCmd(args[1:], os.Stdout, os.Stderr)
	case "help", "-h", "-help", "--help":
		fmt.Print(usage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "blkrep-agent: unknown command %q\n%s", args[0], usage)
	return 2
}

// usageErr reports a bad command line of command cmd; exit status 2.
func usageErr(stderr io.Writer, cmd, format string, args ...any) int {
	fmt.Fprintf(stderr, "blkrep-agent %s: %s\n%s", cmd, fmt.Sprintf(format, args...), usage)
	return 2
}

func newFlags(cmd string) *flag.FlagSet {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by usageErr
	return fs
}

// parseArgs parses fs's flags wherever they appear among the positional
// arguments ("writer DEV --node a" as well as "writer --node a DEV"), and
// returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// alignedBlock returns a BlockSize buffer aligned to 4096, as O_DIRECT
// needs: an anonymous mapping is page aligned.
func alignedBlock() ([]byte, error) {
	b, err := unix.Mmap(-1, 0, clustertest.BlockSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("aligned buffer: %w", err)
	}
	return b, nil
}

// isEINVAL: O_DIRECT refused (a file system without direct I/O).
func isEINVAL(err error) bool { return errors.Is(err, unix.EINVAL) }
