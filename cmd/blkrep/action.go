package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/blkrep/blkrep/internal/control"
)

// actionTimeout bounds how long an action waits for blkrepd's answer.
// Past it the outcome is unknown, and the message says so.
var actionTimeout = time.Minute

func action(ctx context.Context, name string, args []string, cfgPath, node, sock string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	req := control.Request{Action: name}
	wait := false
	use := "blkrep " + name + " VOLUME"
	switch name {
	case control.ActionPrimary:
		fs.BoolVar(&req.Force, "force", false, "promote even though this node's data is not known to be the newest")
		use += " [--force]"
	case control.ActionResync:
		fs.BoolVar(&req.Full, "full", false, "resync every block, not only those marked out of sync")
		fs.BoolVar(&req.DiscardMyData, "discard-my-data", false, "end a split brain: drop this node's changes, take the peer's data")
		fs.BoolVar(&wait, "wait", false, "show progress until the resync finishes")
		use += " [--full | --discard-my-data] [--wait]"
	case control.ActionVerify:
		fs.BoolVar(&wait, "wait", false, "show progress until the verify finishes")
		use += " [--wait]"
	case control.ActionFailover:
		fs.StringVar(&req.To, "to", "", "the node to hand over to (default: one in sync with the primary)")
		use += " [--to NODE]"
	}
	vol, err := parseVolumeCmd(fs, args)
	if err == nil && req.Full && req.DiscardMyData {
		err = errors.New("--full and --discard-my-data exclude each other")
	}
	if err != nil {
		fmt.Fprintf(stderr, "blkrep %s: %v\nusage: %s\n", name, err, use)
		return 2
	}
	req.Volume = vol
	path, err := controlSocket(cfgPath, node, sock)
	if err != nil {
		fmt.Fprintln(stderr, "blkrep:", err)
		return 2
	}
	cl := control.NewClient(path)
	since := time.Now()
	actx, cancel := context.WithTimeout(ctx, actionTimeout)
	defer cancel()
	rep, err := cl.Do(actx, req)
	var ae *control.ActionError
	switch {
	case errors.As(err, &ae):
		fmt.Fprintln(stderr, "blkrep:", ae.Message)
		if ae.Code == http.StatusBadRequest || ae.Code == http.StatusNotFound {
			return 2 // no such volume, or flags it does not take: a usage error
		}
		return 1
	case err != nil && actx.Err() != nil:
		why := fmt.Sprintf("within %v", actionTimeout)
		if ctx.Err() != nil {
			why = "before the interrupt"
		}
		fmt.Fprintf(stderr, "blkrep: no answer from blkrepd %s: the %s of %s may or may not have happened; check 'blkrep status'\n", why, name, vol)
		return 1
	case err != nil:
		fmt.Fprintln(stderr, "blkrep:", err)
		return 1
	}
	fmt.Fprintln(stdout, rep.Message)
	if !wait {
		return 0
	}
	return waitFor(ctx, cl, vol, name, since, stdout, stderr)
}
