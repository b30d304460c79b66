package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/blkrep/blkrep/failover"
	"github.com/blkrep/blkrep/internal/config"
	"github.com/blkrep/blkrep/internal/control"
	"github.com/blkrep/blkrep/internal/repl"
	"github.com/blkrep/blkrep/internal/store"
	"github.com/blkrep/blkrep/internal/volume"
	"github.com/blkrep/blkrep/nbd"
)

// Version is the daemon's version, set at build time.
var Version = "0.1.0-dev"

// Options tune a Daemon.
type Options struct {
	Log *slog.Logger
	// NoDevices skips kernel attach even where the config names a device
	// (tests on hosts without nbd).
	NoDevices bool
	// IOFlusherErr is the result of kernel.SetIOFlusher, which main calls
	// before any thread starts; reported when a device gets attached.
	IOFlusherErr error
}

// Daemon is one running node.
type Daemon struct {
	cfg  *config.Config
	node *config.Node
	log  *slog.Logger
	opts Options

	srv     *nbd.Server
	ctl     *control.Server
	volumes []*replica
	started time.Time
	bus     *control.Bus
	rln     *repl.Listener // replication listener; nil without replicated volumes
	mx      metricsEndpoint
	gossip  *failover.Gossip // nil without automatic failover
	runner  *failover.Runner

	mu        sync.Mutex
	listeners []listener
	wg        sync.WaitGroup
}

type listener struct {
	l      net.Listener
	addr   control.Addr
	volume string // default export; "" on the node-wide TCP listener
}

type replica struct {
	cfg     *config.Volume
	replica *config.Replica
	disks   *volume.Disks
	store   *store.File        // disks.Data
	vol     *volume.Volume     // nil for meta_disk = "none"
	rep     *repl.Replica      // nil for a volume with a single replica
	gate    *repl.FailoverGate // automatic failover's write gate; nil without
	dev     *device            // nil when no device is configured
}

// New prepares a daemon for node from cfg. It checks the node's local
// part of the configuration (disks, sizes, socket directories).
func New(cfg *config.Config, nodeName string, o Options) (*Daemon, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	node, ok := cfg.Node(nodeName)
	if !ok {
		return nil, fmt.Errorf("node %q is not in %s (nodes: %v)", nodeName, cfg.Path, cfg.NodeNames())
	}
	if err := cfg.CheckNode(nodeName); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, node: node, log: o.Log.With("node", nodeName), opts: o, bus: control.NewBus(256)}
	d.srv = nbd.NewServer(d.log)
	return d, nil
}

// Start opens every local replica and begins serving. On error everything
// already started is undone.
func (d *Daemon) Start() (err error) {
	d.started = time.Now()
	defer func() {
		if err != nil {
			d.Shutdown(context.Background())
		}
	}()
	if err := d.startReplication(); err != nil {
		return err
	}
	if err := d.listenMetrics(); err != nil {
		return err
	}
	for _, lr := range d.cfg.LocalReplicas(d.node.Name) {
		v := &replica{cfg: lr.Volume, replica: lr.Replica}
		log := d.log.With("volume", v.cfg.Name)
		disks, err := volume.OpenDisks(lr, store.Options{
			OnFail: func(err error) {
				log.Error("BACKING STORE FAILED: durability lost, all further writes and flushes get EIO; "+
					"check the disk and restart blkrepd", "disk", v.replica.Disk, "err", err)
			},
		})
		if err != nil {
			return fmt.Errorf("volume %q: %w", v.cfg.Name, err)
		}
		v.disks, v.store = disks, disks.Data
		d.volumes = append(d.volumes, v)
		var backend nbd.Backend = disks.Data
		if !v.replica.MetaNone() {
			spec := disks.Spec(d.cfg, lr)
			if disks.Created {
				c, err := volume.Create(&spec, false)
				if err != nil {
					return fmt.Errorf("volume %q: creating metadata on the new disk: %w", v.cfg.Name, err)
				}
				log.Info("created metadata on the new disk", "meta", spec.MetaPath, "area_bytes", c.Layout.AreaBytes)
			}
			replicated := v.cfg.Replicated()
			// A replicated volume starts Secondary: the operator (or
			// failover) decides which node is Primary.
			v.vol, err = volume.Open(spec, volume.Options{Log: log, Secondary: replicated, Replicated: replicated})
			if err != nil {
				return fmt.Errorf("volume %q: %w", v.cfg.Name, err)
			}
			backend = v.vol
			if replicated {
				if v.rep, err = d.newReplica(v, log); err != nil {
					return fmt.Errorf("volume %q: %w", v.cfg.Name, err)
				}
				backend = v.rep
			}
		}
		exp := nbd.Export{
			Name:        v.cfg.Name,
			Description: v.cfg.Description,
			Size:        v.cfg.SizeBytes,
			BlockSize:   v.cfg.BlockSize,
			MultiConn:   true, // one fd: an fdatasync covers writes from every connection
			// Buffered pwrite into the page cache: serve on the reader
			// (writes into cold activity-log extents go to a worker).
			InlineWrites: v.rep == nil,
			Backend:      backend,
			Observe:      d.mx.m.Observer(v.cfg.Name), // nil without metrics
		}
		if v.rep != nil {
			exp.Admit = v.rep.Admit
		}
		if err := d.srv.AddExport(exp); err != nil {
			return err
		}
		if v.replica.NBDSocket != "" {
			if err := d.listen("unix", v.replica.NBDSocket, v.cfg.Name); err != nil {
				return fmt.Errorf("volume %q: nbd_socket: %w", v.cfg.Name, err)
			}
		}
		log.Info("volume ready", "disk", v.replica.Disk, "size", v.cfg.SizeBytes)
	}
	if d.node.NBDTCP != "" {
		if err := d.listen("tcp", d.node.NBDTCP, ""); err != nil {
			return fmt.Errorf("node %q: nbd_tcp: %w", d.node.Name, err)
		}
	}
	for _, v := range d.volumes {
		if v.rep != nil {
			v.rep.Start()
		}
	}
	if err := d.startFailover(); err != nil {
		return err
	}
	if d.rln != nil {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := d.rln.Serve(); err != nil {
				d.log.Error("replication listener stopped", "err", err)
			}
		}()
	}
	d.ctl, err = control.ListenHandler(d.node.ControlSocket, d, d.log)
	if err != nil {
		return fmt.Errorf("node %q: control_socket: %w", d.node.Name, err)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.ctl.Serve(); err != nil {
			d.log.Error("control socket stopped", "err", err)
		}
	}()
	d.serveMetrics()
	for _, v := range d.volumes {
		// A replicated volume's device is attached when it becomes Primary.
		if v.rep == nil || v.vol.Primary() {
			d.attachIfConfigured(v)
		}
	}
	d.log.Info("blkrepd running", "version", Version, "control_socket", d.node.ControlSocket)
	return nil
}

func (d *Daemon) listen(network, addr, volume string) error {
	var l net.Listener
	var err error
	if network == "unix" {
		l, err = control.ListenUnix(addr)
	} else {
		l, err = net.Listen(network, addr)
	}
	if err != nil {
		return err
	}
	a := control.Addr{Kind: network, Address: l.Addr().String()}
	if network == "unix" {
		a.URI = (&url.URL{Scheme: "nbd+unix", Path: "/" + volume, RawQuery: "socket=" + addr}).String()
	} else {
		a.URI = "nbd://" + a.Address + "/"
	}
	d.mu.Lock()
	d.listeners = append(d.listeners, listener{l: l, addr: a, volume: volume})
	d.mu.Unlock()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.srv.Serve(l, volume); err != nil && !errors.Is(err, nbd.ErrServerClosed) {
			d.log.Error("nbd listener stopped", "address", a.Address, "err", err)
		}
	}()
	d.log.Info("nbd listening", "address", a.Address, "uri", a.URI)
	return nil
}

// closeGates releases every write the failover gates hold, with an error.
func (d *Daemon) closeGates() {
	for _, v := range d.volumes {
		if v.gate != nil {
			v.gate.Close()
		}
	}
}

// Shutdown detaches devices, drains clients, flushes and closes stores and
// removes sockets. Safe to call on a partly started daemon.
func (d *Daemon) Shutdown(ctx context.Context) error {
	var errs []error
	for _, v := range d.volumes {
		if v.dev != nil {
			if err := v.dev.detach(); err != nil {
				errs = append(errs, fmt.Errorf("volume %q: detaching %s: %w", v.cfg.Name, v.replica.Device, err))
			}
		}
	}
	// Writes the failover gate holds (no majority) may wait until the
	// shutdown timeout for one; then they fail, so that the drain, which
	// waits for every request it started, can end (a stop of an isolated
	// primary hung on them: tests/netns TestStopIsolatedPrimary).
	release := context.AfterFunc(ctx, d.closeGates)
	if err := d.srv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("draining nbd clients: %w", err))
	}
	release()
	if d.ctl != nil {
		d.ctl.Shutdown(ctx)
	}
	d.stopFailover()
	d.stopMetrics(ctx)
	if d.rln != nil {
		d.rln.Close()
	}
	for _, v := range d.volumes {
		if v.rep != nil {
			// Clients are gone: make the last epoch durable on the peer,
			// then disconnect. Nothing is acknowledged to anybody now, so
			// the failover gate must not hold the flush.
			if v.gate != nil {
				v.gate.Close()
			}
			v.rep.Flush()
			v.rep.Close()
		}
	}
	d.bus.Close()
	d.wg.Wait()
	for _, v := range d.volumes {
		if v.vol != nil {
			// Clients are gone: persist the bitmaps and mark the
			// activity log clean, so the next start resyncs nothing.
			if err := v.vol.Close(); err != nil {
				errs = append(errs, fmt.Errorf("volume %q: closing metadata (the next start will treat this as a crash): %w", v.cfg.Name, err))
			}
		}
		if v.disks != nil {
			if err := v.disks.Close(); err != nil {
				errs = append(errs, fmt.Errorf("volume %q: closing disk: %w", v.cfg.Name, err))
			}
		}
	}
	// Unix listeners unlink their socket on close; make sure even after a
	// partial start.
	d.mu.Lock()
	for _, l := range d.listeners {
		if l.addr.Kind == "unix" {
			os.Remove(l.addr.Address)
		}
	}
	d.mu.Unlock()
	err := errors.Join(errs...)
	if err != nil {
		d.log.Error("shutdown finished with errors", "err", err)
	} else {
		d.log.Info("blkrepd stopped cleanly")
	}
	return err
}

// Status reports the node's state for the control API.
func (d *Daemon) Status() control.Status {
	st := control.Status{
		Schema:        control.SchemaStatus,
		Node:          d.node.Name,
		Cluster:       d.cfg.Cluster.Name,
		Version:       Version,
		PID:           os.Getpid(),
		StartedAt:     d.started.UTC(),
		UptimeSeconds: time.Since(d.started).Seconds(),
		ControlSocket: d.node.ControlSocket,
		Volumes:       []control.Volume{},
	}
	d.mu.Lock()
	lis := append([]listener(nil), d.listeners...)
	d.mu.Unlock()
	for _, v := range d.volumes {
		vs := control.Volume{
			Name:       v.cfg.Name,
			Role:       "Primary",
			Connection: repl.ConnStandAlone,
			SizeBytes:  v.cfg.SizeBytes,
			BlockSize:  v.cfg.BlockSize,
			Disk:       control.Disk{Path: v.replica.Disk, Kind: "file", State: "UpToDate"},
			Exports:    []control.Addr{},
			Device:     control.Device{State: "none"},
		}
		if v.store.IsBlockDevice() {
			vs.Disk.Kind = "block"
		}
		if v.vol != nil {
			vs.Metadata = v.vol.Status()
		}
		if v.rep != nil {
			vs.Role, vs.Connection, vs.Protocol = v.rep.Role(), v.rep.Connection(), v.rep.Protocol()
			vs.Disk.State = v.rep.DiskState()
			vs.Peers = v.rep.Peers()
		}
		if err := v.store.Failed(); err != nil {
			vs.Disk.State, vs.Disk.Error = "Failed", err.Error()
		}
		for _, l := range lis {
			if l.volume == v.cfg.Name || l.volume == "" {
				a := l.addr
				if l.volume == "" {
					a.URI += v.cfg.Name
				}
				vs.Exports = append(vs.Exports, a)
			}
		}
		if v.replica.Device != "" {
			d.mu.Lock()
			dev := v.dev
			d.mu.Unlock()
			vs.Device = dev.status(v.replica.Device)
		}
		if s, ok := d.srv.Stats(v.cfg.Name); ok {
			vs.IO = control.IOStats{
				Clients: s.Connections, TotalClients: s.TotalConnections,
				Reads: s.Reads, Writes: s.Writes, Flushes: s.Flushes, Trims: s.Trims,
				WriteZeroes: s.WriteZeroes, Caches: s.Caches, BlockStatus: s.BlockStatus,
				BytesRead: s.BytesRead, BytesWritten: s.BytesWritten, Errors: s.Errors,
			}
		}
		st.Volumes = append(st.Volumes, vs)
	}
	d.addFailoverStatus(&st) // failover_status.go
	return st
}
