package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/config"
	"github.com/blkrep/blkrep/internal/control"
	"github.com/blkrep/blkrep/internal/testnet"
)

// foOptions shapes the in-process failover cluster of the daemon tests:
// alpha and beta hold volume r0 (4 MiB, protocol C), with a witness unless
// NoWitness.
type foOptions struct {
	NoWitness  bool
	Metrics    bool   // a metrics endpoint per node
	VolumeKeys string // extra [[volume]] lines; {dir} stands for the cluster's directory
}

// foCluster is that cluster, started: ds by node name; events subscribed
// before each daemon started.
type foCluster struct {
	dir    string
	ds     map[string]*Daemon
	events map[string]<-chan control.Event
	// metrics: each node's metrics address (Metrics).
	metrics map[string]string
}

func startFailoverCluster(t *testing.T, o foOptions) *foCluster {
	t.Helper()
	c := &foCluster{dir: t.TempDir(), ds: map[string]*Daemon{}, events: map[string]<-chan control.Event{}, metrics: map[string]string{}}
	names := []string{"alpha", "beta"}
	if !o.NoWitness {
		names = append(names, "witness")
	}
	var b strings.Builder
	b.WriteString("[cluster]\nname = \"t\"\nsecret = \"failover-test-secret-0123456789\"\nfailover = true\n")
	for _, n := range names {
		fmt.Fprintf(&b, "\n[[node]]\nname = %q\ncontrol_socket = \"%s.ctl\"\ngossip = %q\n", n, n, testnet.MustAddr(t))
		if n == "witness" {
			b.WriteString("witness = true\n")
		} else {
			fmt.Fprintf(&b, "address = %q\n", testnet.MustAddr(t))
		}
		if o.Metrics {
			c.metrics[n] = testnet.MustAddr(t)
			fmt.Fprintf(&b, "metrics = %q\n", c.metrics[n])
		}
	}
	fmt.Fprintf(&b, "\n[[volume]]\nname = \"r0\"\nsize = \"4MiB\"\nconnect_interval = \"1s\"\n%s\n", strings.ReplaceAll(o.VolumeKeys, "{dir}", c.dir))
	for _, n := range []string{"alpha", "beta"} {
		fmt.Fprintf(&b, "  [[volume.replica]]\n  node = %q\n  disk = \"%s-r0.img\"\n  create = true\n\n", n, n)
	}
	path := filepath.Join(c.dir, "c.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	for _, n := range names {
		d, err := New(cfg, n, Options{NoDevices: true, Log: testDaemonLog(n)})
		if err != nil {
			t.Fatal(err)
		}
		ch, stop := d.Subscribe() // before Start: the first failover event comes from it
		t.Cleanup(stop)
		c.events[n] = ch
		if err := d.Start(); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		c.ds[n] = d
		t.Cleanup(func() { d.Shutdown(context.Background()) })
	}
	return c
}

// kill stops node's daemon as a crash would look to the others: its
// gossip stops without leaving, then its replication.
func (c *foCluster) kill(node string) time.Time {
	at := time.Now()
	d := c.ds[node]
	d.runner.Close()
	d.gossip.Shutdown()
	d.Shutdown(context.Background())
	return at
}

// waitUntil polls cond every 20 ms for at most d.
func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// accepting: v is Primary and its failover gate lets writes through.
func accepting(v *replica) bool { return v.vol.Primary() && v.gate.Mode().String() == "accept" }

// peerInSync: v's first peer is connected, Established and UpToDate.
func peerInSync(v *replica) bool {
	p := v.rep.Peers()[0]
	return p.Replication == "Established" && p.Disk == "UpToDate"
}
