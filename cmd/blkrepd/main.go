package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	logrusslog "github.com/sirupsen/logrus/hooks/slog"

	"github.com/blkrep/blkrep/internal/config"
	"github.com/blkrep/blkrep/internal/daemon"
	"github.com/blkrep/blkrep/nbd/kernel"
)

func init() {
	// PR_SET_IO_FLUSHER marks the task as one that writeback depends on;
	// threads cloned later inherit it, so set it as early as possible.
	// Failure (old kernel, no CAP_SYS_RESOURCE) is reported after flags
	// are parsed.
	ioFlusherErr = kernel.SetIOFlusher()
}

var ioFlusherErr error

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("blkrepd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "cluster configuration file (TOML)")
	node := fs.String("node", "", "name of this node in the configuration")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	noDevices := fs.Bool("no-devices", false, "do not attach kernel /dev/nbdX devices (serve NBD sockets only)")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "how long SIGTERM waits for in-flight requests")
	version := fs.Bool("version", false, "print the version and exit")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this loopback address (e.g. 127.0.0.1:6060), for profiling")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: blkrepd --config FILE --node NAME [flags]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *version {
		fmt.Fprintln(os.Stdout, "blkrepd", daemon.Version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "blkrepd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *cfgPath == "" || *node == "" {
		fmt.Fprintln(stderr, "blkrepd: --config and --node are required")
		fs.Usage()
		return 2
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "blkrepd:", err)
		return 2
	}
	if *pprofAddr != "" {
		if err := servePprof(*pprofAddr, log); err != nil {
			fmt.Fprintln(stderr, "blkrepd: --pprof:", err)
			return 2
		}
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "blkrepd:", err)
		return 1
	}
	d, err := daemon.New(cfg, *node, daemon.Options{Log: log, NoDevices: *noDevices, IOFlusherErr: ioFlusherErr})
	if err != nil {
		fmt.Fprintln(stderr, "blkrepd:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := d.Start(); err != nil {
		log.Error("start failed", "err", err)
		fmt.Fprintln(stderr, "blkrepd:", err)
		return 1
	}
	<-ctx.Done()
	stop()
	log.Info("shutting down", "timeout", *shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Shutdown(sctx) }()
	select {
	case err := <-done:
		if err != nil {
			return 1
		}
		return 0
	case <-time.After(*shutdownTimeout + shutdownGrace):
		// A stop must end: exit as a crash would (the next start
		// recovers from the activity log), with every goroutine's stack
		// for the report (the netns torture test saw a stop hang).
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		log.Error("shutdown did not finish in time: exiting without it; the next start recovers as after a crash",
			"waited", *shutdownTimeout+shutdownGrace, "goroutines", string(buf[:n]))
		return 1
	}
}

// shutdownGrace is how long past --shutdown-timeout a stop may still
// take before the daemon exits without finishing it.
const shutdownGrace = 5 * time.Second

// newLogger builds the daemon's *slog.Logger on logrus, as the design card
// asks: only this package imports logrus.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	lr := logrus.New()
	lr.SetOutput(w)
	switch format {
	case "text":
		lr.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano})
	case "json":
		lr.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	var lv logrus.Level
	switch level {
	case "debug":
		lv = logrus.DebugLevel
	case "info":
		lv = logrus.InfoLevel
	case "warn", "warning":
		lv = logrus.WarnLevel
	case "error":
		lv = logrus.ErrorLevel
	default:
		return nil, errors.New("--log-level " + level + ": want debug, info, warn or error")
	}
	lr.SetLevel(lv)
	return slog.New(logrusslog.NewHandler(lr, nil)), nil
}
