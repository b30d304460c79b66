package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/blkrep/blkrep/internal/config"
	"github.com/blkrep/blkrep/internal/control"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: blkrep [--config FILE] [--node NAME] [--socket PATH] COMMAND [flags]

Commands:
  status [--json]            volumes, roles, disks, peers, resync/verify progress, metadata,
                             exports, devices and I/O counters; with automatic failover the
                             term, primary, write gate, quorum and gossip members
  events [--json]            follow what happens (roles, connections, resyncs, split brain,
                             failover...), one line per event, until Ctrl-C or blkrepd stops

Operator actions (blkrepd must be running; each prints what blkrepd did, or
why it refused: exit 1):
  primary VOLUME [--force]   serve I/O on this node; --force promotes even though this node's
                             data is not known to be the newest (it becomes the reference copy)
  secondary VOLUME           stop serving I/O on this node
                             (under automatic failover: primary asks the voters to elect this
                             node, secondary steps down; the same rules as automatic decisions)
  connect VOLUME             connect to the peers (leave StandAlone)
  disconnect VOLUME          drop the peer connections (StandAlone); writes are tracked for
                             the next resync
  resync VOLUME [--full | --discard-my-data] [--wait]
                             resync what is out of sync; --full: every block;
                             --discard-my-data: end a split brain by dropping THIS node's changes
  invalidate VOLUME          discard this node's data and fetch all of it from a peer
  verify VOLUME [--wait]     compare every block with the peer; differences are marked out of
                             sync (then run resync)
  failover VOLUME [--to NODE]
                             planned switchover, run on the primary: its before-demote handler
                             runs, it steps down once nothing is in flight, and NODE (default:
                             a node in sync) is elected at once; no acknowledged write is lost
      --wait                 show progress until it finishes (Ctrl-C stops waiting, not the work)

Metadata (read from the disks, not from blkrepd):
  create-md VOLUME [--force] write fresh metadata for this node's replica (offline)
  dump-md VOLUME [--json]    print this node's metadata for VOLUME: identifiers, flags,
                             geometry, out-of-sync bytes per peer, hot extents (offline)

Global flags:
  --config FILE     cluster configuration (default $BLKREP_CONFIG)
  --node NAME       this node's name (default $BLKREP_NODE, or the only node)
  --socket PATH     control socket, instead of reading it from the config
`

// run is the CLI; ctx ends on Ctrl-C.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("blkrep", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("config", os.Getenv("BLKREP_CONFIG"), "")
	node := fs.String("node", os.Getenv("BLKREP_NODE"), "")
	sock := fs.String("socket", "", "")
	help := fs.Bool("help", false, "")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "blkrep: %v\n\n%s", err, usage)
		return 2
	}
	if *help || fs.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		if *help {
			return 0
		}
		return 2
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "status":
		return status(ctx, rest, *cfgPath, *node, *sock, stdout, stderr)
	case "events":
		return events(ctx, rest, *cfgPath, *node, *sock, stdout, stderr)
	case control.ActionPrimary, control.ActionSecondary, control.ActionConnect, control.ActionDisconnect,
		control.ActionResync, control.ActionInvalidate, control.ActionVerify, control.ActionFailover:
		return action(ctx, cmd, rest, *cfgPath, *node, *sock, stdout, stderr)
	case "create-md":
		return createMD(rest, *cfgPath, *node, stdout, stderr)
	case "dump-md":
		return dumpMD(rest, *cfgPath, *node, stdout, stderr)
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "blkrep: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}

// loadNode reads the configuration and picks this node.
func loadNode(cfgPath, node string) (*config.Config, *config.Node, error) {
	if cfgPath == "" {
		return nil, nil, errors.New("no configuration: pass --config FILE (or set BLKREP_CONFIG)")
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	if node == "" {
		names := cfg.NodeNames()
		if len(names) != 1 {
			return nil, nil, fmt.Errorf("--node is required: %s has nodes %s", cfgPath, strings.Join(names, ", "))
		}
		node = names[0]
	}
	n, ok := cfg.Node(node)
	if !ok {
		return nil, nil, fmt.Errorf("node %q is not in %s (nodes: %s)", node, cfgPath, strings.Join(cfg.NodeNames(), ", "))
	}
	return cfg, n, nil
}

// controlSocket finds the control socket from the flags.
func controlSocket(cfgPath, node, sock string) (string, error) {
	if sock != "" {
		return sock, nil
	}
	if cfgPath == "" {
		return "", errors.New("no configuration: pass --config FILE (or set BLKREP_CONFIG), or --socket PATH")
	}
	_, n, err := loadNode(cfgPath, node)
	if err != nil {
		return "", err
	}
	return n.ControlSocket, nil
}

func status(ctx context.Context, args []string, cfgPath, node, sock string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the status document as JSON (schema blkrep.status/v1)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	path, err := controlSocket(cfgPath, node, sock)
	if err != nil {
		fmt.Fprintln(stderr, "blkrep:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := control.NewClient(path).Status(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "blkrep:", err)
		return 1
	}
	if *asJSON {
		return printJSON(stdout, stderr, st)
	}
	printStatus(stdout, st)
	return 0
}

// printJSON writes v indented, the form every --json output takes.
func printJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintln(stderr, "blkrep:", err)
		return 1
	}
	return 0
}

func printStatus(w io.Writer, st *control.Status) {
	fmt.Fprintf(w, "node %s  cluster %s  blkrepd %s  pid %d  up %s\n",
		st.Node, st.Cluster, st.Version, st.PID, (time.Duration(st.UptimeSeconds) * time.Second).String())
	printGossip(w, st) // failover.go
	for _, v := range st.Volumes {
		fmt.Fprintf(w, "\n%s  role:%s  disk:%s  connection:%s", v.Name, v.Role, v.Disk.State, v.Connection)
		if v.Protocol != "" {
			fmt.Fprintf(w, "  protocol:%s", v.Protocol)
		}
		for _, p := range v.Peers {
			if p.SplitBrain {
				fmt.Fprintf(w, "  SPLIT BRAIN with %s", p.Node)
			}
		}
		fmt.Fprintln(w)
		printFailover(w, st, v.Failover)
		printReplication(w, &v)
		fmt.Fprintf(w, "    size     %s (%d bytes), block size %d\n", human(uint64(v.SizeBytes)), v.SizeBytes, v.BlockSize)
		fmt.Fprintf(w, "    disk     %s (%s)\n", v.Disk.Path, v.Disk.Kind)
		if v.Disk.Error != "" {
			fmt.Fprintf(w, "             FAILED: %s\n", v.Disk.Error)
		}
		for _, a := range v.Exports {
			fmt.Fprintf(w, "    export   %s\n", a.URI)
		}
		switch v.Device.State {
		case "none":
			fmt.Fprintf(w, "    device   none configured\n")
		default:
			fmt.Fprintf(w, "    device   %s %s", v.Device.Path, v.Device.State)
			if v.Device.Error != "" {
				fmt.Fprintf(w, ": %s", v.Device.Error)
			}
			fmt.Fprintln(w)
		}
		if m := v.Metadata; m != nil {
			printMetadata(w, v.SizeBytes, m)
		} else {
			fmt.Fprintf(w, "    metadata none (meta_disk = \"none\": writes are not tracked, the volume cannot be replicated)\n")
		}
		io := v.IO
		fmt.Fprintf(w, "    clients  %d now, %d since start\n", io.Clients, io.TotalClients)
		fmt.Fprintf(w, "    io       reads %d (%s)  writes %d (%s)  flushes %d  trims %d  zeroes %d  errors %d\n",
			io.Reads, human(io.BytesRead), io.Writes, human(io.BytesWritten), io.Flushes, io.Trims, io.WriteZeroes, io.Errors)
	}
	printWitnessVolumes(w, st)
}

func human(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
