package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/blkrep/blkrep/internal/control"
)

func events(ctx context.Context, args []string, cfgPath, node, sock string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the events as blkrepd sends them: one JSON object a line")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "blkrep events: unexpected arguments: %s\nusage: blkrep events [--json]\n", strings.Join(fs.Args(), " "))
		return 2
	}
	path, err := controlSocket(cfgPath, node, sock)
	if err != nil {
		fmt.Fprintln(stderr, "blkrep:", err)
		return 2
	}
	cl := control.NewClient(path)
	var last uint64
	gap := func(seq uint64) {
		if last != 0 && seq > last+1 {
			fmt.Fprintf(stderr, "blkrep: missed %d events (seq %d to %d): this reader was too slow\n", seq-last-1, last+1, seq-1)
		}
		last = seq
	}
	if *asJSON {
		err = cl.EventLines(ctx, func(line []byte) error {
			var e struct {
				Seq uint64 `json:"seq"`
			}
			json.Unmarshal(line, &e)
			gap(e.Seq)
			_, err := fmt.Fprintf(stdout, "%s\n", line)
			return err
		})
	} else {
		err = cl.Events(ctx, func(e control.Event) error {
			gap(e.Seq)
			_, err := fmt.Fprintln(stdout, formatEvent(e))
			return err
		})
	}
	switch {
	case ctx.Err() != nil:
		return 0 // Ctrl-C: the normal way to stop
	case err == nil:
		fmt.Fprintln(stderr, "blkrep: blkrepd ended the event stream (it is stopping)")
		return 0
	default:
		fmt.Fprintln(stderr, "blkrep:", err)
		return 1
	}
}

// formatEvent prints "2026-11-21T10:00:00Z r0 beta connection Connecting -> Connected: message".
func formatEvent(e control.Event) string {
	parts := []string{e.Time.Format(time.RFC3339)}
	for _, s := range []string{e.Volume, e.Peer, e.Kind} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	switch {
	case e.Old != "" && e.New != "":
		parts = append(parts, e.Old, "->", e.New)
	case e.New != "":
		parts = append(parts, e.New)
	case e.Old != "":
		parts = append(parts, e.Old, "->", "(none)")
	}
	line := strings.Join(parts, " ")
	if e.Message != "" {
		line += ": " + e.Message
	}
	return line
}
