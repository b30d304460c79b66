package daemon

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/config"
	"github.com/blkrep/blkrep/internal/control"
)

// A handler that hangs (and leaves a child holding its output) is killed
// at handler_timeout and reported; one that fails is reported with its
// output; the fence-peer exit codes follow DRBD's contract.
func TestHandlers(t *testing.T) {
	dir := t.TempDir()
	vc := config.Volume{Name: "r0", HandlerTimeout: time.Second, Replicas: []config.Replica{{Node: "alpha"}, {Node: "beta"}},
		BeforeDemote: "sleep 30 & sleep 30", AfterPromote: "echo no mount point; exit 3",
		QuorumLost: `[ "$BLKREP_REASON $BLKREP_PEERS $BLKREP_NODE $BLKREP_HANDLER" = "test beta alpha quorum-lost" ]`}
	d := &Daemon{cfg: &config.Config{Volumes: []config.Volume{vc}}, node: &config.Node{Name: "alpha"},
		log: slog.New(slog.DiscardHandler), bus: control.NewBus(16)}
	events, stop := d.bus.Subscribe()
	defer stop()
	start := time.Now()
	err := d.runHandlerErr("r0", "before-demote", "test")
	if took := time.Since(start); err == nil || !strings.Contains(err.Error(), "timed out after 1s") || took > 4*time.Second {
		t.Fatalf("hanging handler: %v after %v", err, took)
	}
	if err := d.runHandlerErr("r0", "after-promote", "test"); err == nil || !strings.Contains(err.Error(), "no mount point") {
		t.Fatalf("failing handler: %v", err)
	}
	if err := d.runHandlerErr("r0", "quorum-lost", "test"); err != nil {
		t.Fatal(err)
	}
	var failures int
	for len(events) > 0 {
		if e := <-events; strings.Contains(e.Message, "handler") {
			failures++
		}
	}
	if failures != 2 {
		t.Fatalf("%d failure events, want 2", failures)
	}
	for code, want := range map[string]bool{"3": true, "4": true, "7": true, "0": false, "1": false, "5": false, "6": false} {
		d.cfg.Volumes[0].FencePeer = "exit " + code
		if got := d.runFence("r0", "beta"); got != want {
			t.Errorf("fence-peer exit %s: fenced %v, want %v", code, got, want)
		}
	}
	d.cfg.Volumes[0].FencePeer = "echo $BLKREP_PEER > " + filepath.Join(dir, "peer") + "; sleep 30"
	if d.runFence("r0", "beta") {
		t.Error("a fence-peer handler that timed out fenced")
	}
}
