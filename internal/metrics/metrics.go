package metrics

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/blkrep/blkrep/internal/control"
	"github.com/blkrep/blkrep/nbd"
)

// The states a state set reports, one series each (value 1 for the
// current state, 0 for the others), as control/status.go documents them.
// A state not listed here still appears, with value 1, while it is current.
var (
	volumeRoles      = []string{"Primary", "Secondary"}
	peerRoles        = []string{"Primary", "Secondary", "Unknown"}
	connectionStates = []string{"StandAlone", "Connecting", "Connected", "Disconnecting"}
	replStates       = []string{"Off", "Established", "SyncSource", "SyncTarget",
		"VerifySource", "VerifyTarget", "PausedSyncSource", "PausedSyncTarget"}
	diskStates   = []string{"UpToDate", "Consistent", "Outdated", "Inconsistent", "DUnknown", "Diskless", "Failed"}
	deviceStates = []string{"none", "attached", "detached", "unavailable"}
	gateModes    = []string{"accept", "hold", "fail"}
	memberStates = []string{"alive", "suspect", "dead", "left"}
)

// ops are the NBD commands served (all but DISC), labelled with
// nbd.CommandName: read, write, flush, trim, write_zeroes, cache,
// block_status.
var ops = []uint16{nbd.CmdRead, nbd.CmdWrite, nbd.CmdFlush, nbd.CmdTrim, nbd.CmdWriteZeroes, nbd.CmdCache, nbd.CmdBlockStatus}

// LatencyBuckets are the upper bounds of the request latency histogram,
// in seconds: 16 from 10 µs (a read from the page cache) to 10 s (a flush
// on a struggling disk), each about 2.5 times the one before.
var LatencyBuckets = prometheus.ExponentialBucketsRange(10e-6, 10, 16)

// Metrics is a node's metrics, registered with the registry given to New.
// A nil *Metrics is valid and measures nothing.
type Metrics struct {
	latency *prometheus.HistogramVec
}

// New registers with reg a collector that reports status() on each scrape,
// and the NBD request latency histograms fed by Observer. Every metric
// carries the label node. A nil reg gives a nil *Metrics (no metrics).
// status is called from the scraping goroutine, concurrently with anything
// else: it must be safe for that, as the control API's status is.
func New(reg prometheus.Registerer, node string, status func() control.Status) (*Metrics, error) {
	if reg == nil {
		return nil, nil
	}
	if status == nil {
		return nil, errors.New("metrics: no status function")
	}
	c := newCollector(node, status)
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "blkrep_nbd_request_duration_seconds",
		Help: "Time from an NBD request fully received (header and payload) to its reply " +
			"queued for the client, by command; failed requests included, refused ones not.",
		ConstLabels: prometheus.Labels{"node": node},
		Buckets:     LatencyBuckets,
	}, []string{"volume", "op"})
	if err := reg.Register(c); err != nil {
		return nil, fmt.Errorf("metrics: registering the status collector: %w", err)
	}
	if err := reg.Register(latency); err != nil {
		reg.Unregister(c)
		return nil, fmt.Errorf("metrics: registering the latency histograms: %w", err)
	}
	return &Metrics{latency: latency}, nil
}

// Observer returns the hook for volume's nbd.Export.Observe: it feeds the
// latency histograms, resolved here once so that a request costs an array
// index and one Observe, with no allocation. It returns nil (no hook, no
// clock read per request) on a nil *Metrics.
func (m *Metrics) Observer(volume string) func(cmd uint16, d time.Duration) {
	if m == nil {
		return nil
	}
	var obs [nbd.CmdBlockStatus + 1]prometheus.Observer
	for _, cmd := range ops {
		obs[cmd] = m.latency.WithLabelValues(volume, nbd.CommandName(cmd))
	}
	return func(cmd uint16, d time.Duration) {
		if int(cmd) < len(obs) && obs[cmd] != nil {
			obs[cmd].Observe(d.Seconds())
		}
	}
}

// collector turns a control.Status into constant metrics on each scrape.
type collector struct {
	status func() control.Status
	node   string
	all    []*prometheus.Desc

	info, startTime *prometheus.Desc

	// volume
	role, connection, disk, device, size *prometheus.Desc
	clients, connections, requests       *prometheus.Desc
	readBytes, writtenBytes, ioErrors    *prometheus.Desc

	// volume metadata
	mdFailed, badPages, bitmapWrites, sbWrites *prometheus.Desc
	alExtents, alHot, alInFlight, alWaiting    *prometheus.Desc
	alWrites, alEvictions, alStarved           *prometheus.Desc
	peerConn, peerRepl, peerRole, peerDisk     *prometheus.Desc
	outOfSync, unacked, inFlight, splitBrain   *prometheus.Desc
	sentBytes, receivedBytes, reconnects       *prometheus.Desc
	resync, verify                             progressDescs

	// automatic failover
	foTerm, foPrimary, foAccepting, foGate, foWaiting         *prometheus.Desc
	foQuorum, foSeen, foCounted, foOutdated, foData, foFenced *prometheus.Desc
	gossipMembers                                             *prometheus.Desc
}

// progressDescs describe a control.Progress; a nil Desc is not reported.
type progressDescs struct {
	running, total, done, skipped, mismatch, rate, eta *prometheus.Desc
}

func newCollector(node string, status func() control.Status) *collector {
	c := &collector{status: status, node: node}
	vol := []string{"volume"}
	peer := []string{"volume", "peer"}
	c.info = c.desc("info", "Always 1; the labels say which cluster the node is in and the daemon's version.", "cluster", "version")
	c.startTime = c.desc("start_time_seconds", "When the daemon started, in seconds since the Unix epoch.")

	c.role = c.desc("volume_role", "This node's role for the volume (1 for the current role): Primary serves I/O, Secondary does not.", append(vol, "role")...)
	c.connection = c.desc("volume_connection_state", "The volume's connection state summarised over its peers (1 for the current state): StandAlone without peers or disconnected, Connected when every peer is, else the least connected peer's.", append(vol, "state")...)
	c.disk = c.desc("volume_disk_state", "The local disk's state (1 for the current state); Failed: a write or sync failed and writes are refused until a restart.", append(vol, "state")...)
	c.device = c.desc("volume_device_state", "The kernel block device's state (1 for the current state): none when no device is configured.", append(vol, "state")...)
	c.size = c.desc("volume_size_bytes", "The volume's exported size.", vol...)
	c.clients = c.desc("nbd_clients", "NBD clients connected now (the kernel's /dev/nbdX counts as clients too).", vol...)
	c.connections = c.desc("nbd_connections_total", "NBD clients that entered the transmission phase since the daemon started.", vol...)
	c.requests = c.desc("nbd_requests_total", "NBD requests served, by command, since the daemon started.", append(vol, "op")...)
	c.readBytes = c.desc("nbd_read_bytes_total", "Bytes read by NBD clients since the daemon started.", vol...)
	c.writtenBytes = c.desc("nbd_written_bytes_total", "Bytes written by NBD clients since the daemon started.", vol...)
	c.ioErrors = c.desc("nbd_errors_total", "NBD requests answered with an error since the daemon started.", vol...)

	c.mdFailed = c.desc("metadata_failed", "1 when metadata could not be written: writes are refused.", vol...)
	c.badPages = c.desc("metadata_bad_bitmap_pages", "Bitmap pages that failed their checksum at start (marked all out of sync).", vol...)
	c.bitmapWrites = c.desc("bitmap_page_writes_total", "Bitmap pages written to the metadata since the daemon started.", vol...)
	c.sbWrites = c.desc("superblock_writes_total", "Superblock writes since the daemon started.", vol...)
	c.alExtents = c.desc("al_extents", "Activity-log capacity in extents (al_extents).", vol...)
	c.alHot = c.desc("al_hot_extents", "Activity-log extents hot now (resynced after a crash of this node).", vol...)
	c.alInFlight = c.desc("al_in_flight_refs", "Activity-log extent references held by writes in flight.", vol...)
	c.alWaiting = c.desc("al_waiting_writes", "Writes waiting for an activity-log transaction.", vol...)
	c.alWrites = c.desc("al_writes_total", "Activity-log transaction records written since the daemon started.", vol...)
	c.alEvictions = c.desc("al_evictions_total", "Activity-log extents made cold since the daemon started.", vol...)
	c.alStarved = c.desc("al_starved_total", "Times no activity-log extent could be evicted (writes waited) since the daemon started.", vol...)

	c.peerConn = c.desc("peer_connection_state", "The connection with the peer for the volume (1 for the current state).", append(peer, "state")...)
	c.peerRepl = c.desc("peer_replication_state", "Replication with the peer (1 for the current state).", append(peer, "state")...)
	c.peerRole = c.desc("peer_role", "The peer's role (1 for the current role); Unknown when not connected.", append(peer, "role")...)
	c.peerDisk = c.desc("peer_disk_state", "The peer's disk state (1 for the current state); DUnknown when not connected.", append(peer, "state")...)
	c.outOfSync = c.desc("peer_out_of_sync_bytes", "Bytes of the volume that may differ between this node and the peer.", peer...)
	c.unacked = c.desc("peer_unacked_bytes", "Bytes of writes whose epoch the peer has not acknowledged as durable: what a lost link would mark out of sync.", peer...)
	c.inFlight = c.desc("peer_in_flight_writes", "Writes awaiting their own ack from the peer (protocols B and C).", peer...)
	c.splitBrain = c.desc("peer_split_brain", "1 when this node and the peer changed the data independently: nothing is resynced until the operator discards one side's changes.", peer...)
	c.sentBytes = c.desc("peer_sent_bytes_total", "Replication bytes sent to the peer since the daemon started.", peer...)
	c.receivedBytes = c.desc("peer_received_bytes_total", "Replication bytes received from the peer since the daemon started.", peer...)
	c.reconnects = c.desc("peer_reconnects_total", "Connections with the peer established again after a loss, since the daemon started.", peer...)
	c.resync = c.progress("resync", "resync", true, false, peer)
	c.verify = c.progress("verify", "online verify", false, true, peer)

	c.foTerm = c.desc("failover_term", "The highest automatic failover term this node knows for the volume (it grows by one per promotion).", vol...)
	c.foPrimary = c.desc("failover_primary", "1 when this node is the failover primary of the volume's newest term.", vol...)
	c.foAccepting = c.desc("failover_accepting", "1 when the failover decision lets this node acknowledge writes (primary holding a majority lease).", vol...)
	c.foGate = c.desc("failover_write_gate", "The replica's failover write gate (1 for the current mode): accept acknowledges writes, hold makes them wait, fail fails them with EIO. Data nodes only.", append(vol, "mode")...)
	c.foWaiting = c.desc("failover_writes_waiting", "Writes the failover write gate holds now. Data nodes only.", vol...)
	c.foQuorum = c.desc("failover_quorum", "1 when this node sees a majority of the volume's voters that count (itself included).", vol...)
	c.foSeen = c.desc("failover_voters_seen", "The volume's counted voters this node sees alive, itself included.", vol...)
	c.foCounted = c.desc("failover_voters_counted", "The volume's voters that count for quorum: the configured ones but those that left gracefully.", vol...)
	c.foFenced = c.desc("failover_fenced_peers", "two_node: peers the fence_peer handler fenced; they do not count for quorum until they are back.", vol...)
	c.foOutdated = c.desc("failover_outdated_peers", "On the primary: peers declared out of sync (they miss acknowledged writes and cannot be promoted).", vol...)
	c.foData = c.desc("failover_data_term", "The failover term whose acknowledged writes this replica holds (0: none known). Data nodes only.", vol...)
	c.gossipMembers = c.desc("gossip_members", "Nodes of the failover gossip (this one included) by state, as this node sees them: alive, suspect, dead (counts against quorum), left (stopped gracefully).", "state")
	return c
}

func (c *collector) desc(name, help string, labels ...string) *prometheus.Desc {
	d := prometheus.NewDesc("blkrep_"+name, help, labels, prometheus.Labels{"node": c.node})
	c.all = append(c.all, d)
	return d
}

func (c *collector) progress(name, what string, skipped, mismatch bool, labels []string) progressDescs {
	p := progressDescs{
		running: c.desc("peer_"+name+"_running", "1 while a "+what+" with the peer runs.", labels...),
		total:   c.desc("peer_"+name+"_total_bytes", "The running or last "+what+"'s work in bytes (it may grow while it runs).", labels...),
		done:    c.desc("peer_"+name+"_done_bytes", "Bytes of the running or last "+what+"'s work done.", labels...),
		rate:    c.desc("peer_"+name+"_rate_bytes_per_second", "The running or last "+what+"'s rate.", labels...),
		eta:     c.desc("peer_"+name+"_eta_seconds", "Expected time for the running "+what+" to finish; 0 when unknown or done.", labels...),
	}
	if skipped {
		p.skipped = c.desc("peer_"+name+"_skipped_bytes", "Bytes of the done work found identical by checksum and not sent.", labels...)
	}
	if mismatch {
		p.mismatch = c.desc("peer_"+name+"_mismatch_bytes", "Bytes of the done work found different (marked out of sync).", labels...)
	}
	return p
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.all {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	gauge(ch, c.info, 1, st.Cluster, st.Version)
	if !st.StartedAt.IsZero() {
		gauge(ch, c.startTime, float64(st.StartedAt.UnixNano())/1e9)
	}
	for i := range st.Volumes {
		c.collectVolume(ch, &st.Volumes[i])
		if f := st.Volumes[i].Failover; f != nil {
			c.collectFailover(ch, st.Volumes[i].Name, f)
		}
	}
	for i := range st.WitnessVolumes {
		c.collectFailover(ch, st.WitnessVolumes[i].Name, &st.WitnessVolumes[i].Failover)
	}
	if g := st.Gossip; g != nil {
		n := map[string]int{}
		for _, m := range g.Members {
			n[m.State]++
		}
		for _, s := range memberStates {
			gauge(ch, c.gossipMembers, float64(n[s]), s)
			delete(n, s)
		}
		for s, k := range n { // a state this list does not know
			gauge(ch, c.gossipMembers, float64(k), s)
		}
	}
}

func (c *collector) collectFailover(ch chan<- prometheus.Metric, volume string, f *control.Failover) {
	gauge(ch, c.foTerm, float64(f.Term), volume)
	gauge(ch, c.foPrimary, boolValue(f.IsPrimary), volume)
	gauge(ch, c.foAccepting, boolValue(f.Accepting), volume)
	if f.Writes != "" {
		stateSet(ch, c.foGate, gateModes, f.Writes, volume)
		gauge(ch, c.foWaiting, float64(f.WritesWaiting), volume)
		gauge(ch, c.foData, float64(f.DataTerm), volume)
	}
	gauge(ch, c.foQuorum, boolValue(f.Quorum), volume)
	gauge(ch, c.foSeen, float64(len(f.VotersSeen)), volume)
	gauge(ch, c.foCounted, float64(len(f.VotersCounted)), volume)
	gauge(ch, c.foOutdated, float64(len(f.OutdatedPeers)), volume)
	gauge(ch, c.foFenced, float64(len(f.Fenced)), volume)
}

func (c *collector) collectVolume(ch chan<- prometheus.Metric, v *control.Volume) {
	stateSet(ch, c.role, volumeRoles, v.Role, v.Name)
	stateSet(ch, c.connection, connectionStates, v.Connection, v.Name)
	stateSet(ch, c.disk, diskStates, v.Disk.State, v.Name)
	stateSet(ch, c.device, deviceStates, v.Device.State, v.Name)
	gauge(ch, c.size, float64(v.SizeBytes), v.Name)

	io := &v.IO
	gauge(ch, c.clients, float64(io.Clients), v.Name)
	counter(ch, c.connections, io.TotalClients, v.Name)
	for _, op := range ops {
		var n uint64
		switch op {
		case nbd.CmdRead:
			n = io.Reads
		case nbd.CmdWrite:
			n = io.Writes
		case nbd.CmdFlush:
			n = io.Flushes
		case nbd.CmdTrim:
			n = io.Trims
		case nbd.CmdWriteZeroes:
			n = io.WriteZeroes
		case nbd.CmdCache:
			n = io.Caches
		case nbd.CmdBlockStatus:
			n = io.BlockStatus
		}
		counter(ch, c.requests, n, v.Name, nbd.CommandName(op))
	}
	counter(ch, c.readBytes, io.BytesRead, v.Name)
	counter(ch, c.writtenBytes, io.BytesWritten, v.Name)
	counter(ch, c.ioErrors, io.Errors, v.Name)

	if md := v.Metadata; md != nil {
		gauge(ch, c.mdFailed, boolValue(md.Error != ""), v.Name)
		gauge(ch, c.badPages, float64(md.BadBitmapPages), v.Name)
		counter(ch, c.bitmapWrites, md.BitmapPageWrites, v.Name)
		counter(ch, c.sbWrites, md.SuperblockWrites, v.Name)
		al := &md.ActivityLog
		gauge(ch, c.alExtents, float64(al.Extents), v.Name)
		gauge(ch, c.alHot, float64(al.Hot), v.Name)
		gauge(ch, c.alInFlight, float64(al.InFlight), v.Name)
		gauge(ch, c.alWaiting, float64(al.Waiting), v.Name)
		counter(ch, c.alWrites, al.Writes, v.Name)
		counter(ch, c.alEvictions, al.Evictions, v.Name)
		counter(ch, c.alStarved, al.Starved, v.Name)
	}
	for i := range v.Peers {
		c.collectPeer(ch, v.Name, &v.Peers[i])
	}
}

func (c *collector) collectPeer(ch chan<- prometheus.Metric, volume string, p *control.Peer) {
	stateSet(ch, c.peerConn, connectionStates, p.Connection, volume, p.Node)
	stateSet(ch, c.peerRepl, replStates, p.Replication, volume, p.Node)
	stateSet(ch, c.peerRole, peerRoles, p.Role, volume, p.Node)
	stateSet(ch, c.peerDisk, diskStates, p.Disk, volume, p.Node)
	gauge(ch, c.outOfSync, float64(p.OutOfSyncBytes), volume, p.Node)
	gauge(ch, c.unacked, float64(p.UnackedBytes), volume, p.Node)
	gauge(ch, c.inFlight, float64(p.InFlightWrites), volume, p.Node)
	gauge(ch, c.splitBrain, boolValue(p.SplitBrain), volume, p.Node)
	counter(ch, c.sentBytes, p.SentBytes, volume, p.Node)
	counter(ch, c.receivedBytes, p.ReceivedBytes, volume, p.Node)
	counter(ch, c.reconnects, p.Reconnects, volume, p.Node)
	progress(ch, &c.resync, p.Resync, volume, p.Node)
	progress(ch, &c.verify, p.Verify, volume, p.Node)
}

// progress reports pr, or zeros before the first run, so that the series
// exist from the start.
func progress(ch chan<- prometheus.Metric, d *progressDescs, pr *control.Progress, lv ...string) {
	var p control.Progress
	if pr != nil {
		p = *pr
	}
	gauge(ch, d.running, boolValue(p.Running), lv...)
	gauge(ch, d.total, float64(p.TotalBytes), lv...)
	gauge(ch, d.done, float64(p.DoneBytes), lv...)
	gauge(ch, d.rate, p.RateBytesPerSec, lv...)
	gauge(ch, d.eta, p.ETASeconds, lv...)
	if d.skipped != nil {
		gauge(ch, d.skipped, float64(p.SkippedBytes), lv...)
	}
	if d.mismatch != nil {
		gauge(ch, d.mismatch, float64(p.MismatchBytes), lv...)
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, lv ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, lv ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
}

// stateSet reports one series per state, 1 for cur and 0 for the others;
// the state is the last label. An unlisted cur is reported too, with 1.
func stateSet(ch chan<- prometheus.Metric, d *prometheus.Desc, states []string, cur string, lv ...string) {
	known := false
	for _, s := range states {
		v := 0.0
		if s == cur {
			v, known = 1, true
		}
		gauge(ch, d, v, append(lv[:len(lv):len(lv)], s)...)
	}
	if !known && cur != "" {
		gauge(ch, d, 1, append(lv[:len(lv):len(lv)], cur)...)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
