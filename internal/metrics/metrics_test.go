package metrics

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/blkrep/blkrep/internal/control"
	"github.com/blkrep/blkrep/nbd"
)

// testStatus has a distinct value in every exported field.
func testStatus() control.Status {
	return control.Status{
		Schema: control.SchemaStatus, Node: "alpha", Cluster: "c1", Version: "1.2.3", PID: 42,
		StartedAt: time.Unix(1700000000, 500e6), UptimeSeconds: 12, ControlSocket: "/run/alpha.ctl",
		Volumes: []control.Volume{{
			Name: "r0", Role: "Primary", Connection: "Connecting", Protocol: "C",
			SizeBytes: 1 << 30, BlockSize: 4096,
			Disk:   control.Disk{Path: "/dev/sdb", Kind: "block", State: "UpToDate"},
			Device: control.Device{Path: "/dev/nbd0", State: "attached"},
			IO: control.IOStats{Clients: 2, TotalClients: 3, Reads: 4, Writes: 5, Flushes: 6, Trims: 7,
				WriteZeroes: 8, Caches: 9, BlockStatus: 10, BytesRead: 11, BytesWritten: 12, Errors: 13},
			Metadata: &control.Metadata{
				Placement: "internal", BadBitmapPages: 14, BitmapPageWrites: 15, SuperblockWrites: 16,
				Error: "metadata write failed",
				ActivityLog: control.ALStatus{Extents: 17, Hot: 18, InFlight: 19, Waiting: 20,
					Writes: 21, Evictions: 22, Starved: 23, Seq: 24},
			},
			Peers: []control.Peer{{
				Node: "beta", Address: "10.0.0.2:7789", Connection: "Connected", Replication: "SyncSource",
				Role: "Secondary", Disk: "Inconsistent", OutOfSyncBytes: 25, UnackedBytes: 26,
				InFlightWrites: 27, SplitBrain: true, SentBytes: 28, ReceivedBytes: 29, Reconnects: 30,
				Resync: &control.Progress{Running: true, TotalBytes: 31, DoneBytes: 32, SkippedBytes: 33,
					RateBytesPerSec: 34, ETASeconds: 35},
				Verify: &control.Progress{TotalBytes: 36, DoneBytes: 37, MismatchBytes: 38,
					RateBytesPerSec: 39, ETASeconds: 40},
			}},
			Failover: &control.Failover{Term: 41, Primary: "alpha", IsPrimary: true, Accepting: true,
				Writes: "hold", WritesWaiting: 43, Quorum: true,
				Voters:        []string{"alpha", "beta", "gamma", "witness"},
				VotersCounted: []string{"alpha", "beta", "witness"}, VotersSeen: []string{"alpha", "witness"},
				OutdatedPeers: []string{"beta"}, OutdatedConfirmed: []string{}, Fenced: []string{"beta"}, DataTerm: 42, Why: "primary of term 41"},
		}},
		// Not on a data node in practice: a witness has no volumes.
		WitnessVolumes: []control.WitnessVolume{{Name: "w1", Failover: control.Failover{Term: 44, Primary: "beta",
			Voters: []string{"alpha", "beta", "witness"}, VotersCounted: []string{"alpha", "beta", "witness"},
			VotersSeen: []string{"beta", "witness"}, OutdatedPeers: []string{}, OutdatedConfirmed: []string{}}}},
		Gossip: &control.Gossip{Address: "10.0.0.1:7946", Members: []control.Member{
			{Name: "alpha", Address: "10.0.0.1:7946", State: "alive"},
			{Name: "beta", Address: "10.0.0.2:7946", State: "dead"},
			{Name: "gamma", Address: "10.0.0.3:7946", State: "left"},
			{Name: "witness", Address: "10.0.0.9:7946", State: "alive", Witness: true},
		}},
	}
}

// exported maps every field of the status to the series that carries its
// value in testStatus ("" for a field carried only as a label, or not
// exported: text, paths, configuration).
var exported = map[string]string{
	"Status.Schema": "", "Status.Node": "", "Status.Version": "", "Status.PID": "",
	"Status.ControlSocket": "", "Status.UptimeSeconds": "", // start_time_seconds carries it
	"Status.Cluster":        `blkrep_info{cluster="c1",node="alpha",version="1.2.3"} 1`,
	"Status.StartedAt":      `blkrep_start_time_seconds{node="alpha"} 1.7000000005e+09`,
	"Status.Volumes":        "",
	"Status.WitnessVolumes": "", "Status.Gossip": "",
	"WitnessVolume.Name": "", "WitnessVolume.Failover": "",
	"Gossip.Address": "", "Gossip.Witness": "",
	"Gossip.Members": `blkrep_gossip_members{node="alpha",state="alive"} 2`,
	"Member.Name":    "", "Member.Address": "", "Member.Witness": "", "Member.Error": "",
	"Member.State": `blkrep_gossip_members{node="alpha",state="dead"} 1`,

	"Volume.Name": "", "Volume.Protocol": "", "Volume.BlockSize": "", "Volume.Exports": "",
	"Volume.Disk": "", "Volume.Device": "", "Volume.IO": "", "Volume.Metadata": "", "Volume.Peers": "",
	"Volume.Failover":   "",
	"Volume.Role":       `blkrep_volume_role{node="alpha",role="Primary",volume="r0"} 1`,
	"Volume.Connection": `blkrep_volume_connection_state{node="alpha",state="Connecting",volume="r0"} 1`,
	"Volume.SizeBytes":  `blkrep_volume_size_bytes{node="alpha",volume="r0"} 1.073741824e+09`,

	"Disk.Path": "", "Disk.Kind": "", "Disk.Error": "",
	"Disk.State":   `blkrep_volume_disk_state{node="alpha",state="UpToDate",volume="r0"} 1`,
	"Device.Path":  "",
	"Device.Error": "",
	"Device.State": `blkrep_volume_device_state{node="alpha",state="attached",volume="r0"} 1`,

	"IOStats.Clients":      `blkrep_nbd_clients{node="alpha",volume="r0"} 2`,
	"IOStats.TotalClients": `blkrep_nbd_connections_total{node="alpha",volume="r0"} 3`,
	"IOStats.Reads":        `blkrep_nbd_requests_total{node="alpha",op="read",volume="r0"} 4`,
	"IOStats.Writes":       `blkrep_nbd_requests_total{node="alpha",op="write",volume="r0"} 5`,
	"IOStats.Flushes":      `blkrep_nbd_requests_total{node="alpha",op="flush",volume="r0"} 6`,
	"IOStats.Trims":        `blkrep_nbd_requests_total{node="alpha",op="trim",volume="r0"} 7`,
	"IOStats.WriteZeroes":  `blkrep_nbd_requests_total{node="alpha",op="write_zeroes",volume="r0"} 8`,
	"IOStats.Caches":       `blkrep_nbd_requests_total{node="alpha",op="cache",volume="r0"} 9`,
	"IOStats.BlockStatus":  `blkrep_nbd_requests_total{node="alpha",op="block_status",volume="r0"} 10`,
	"IOStats.BytesRead":    `blkrep_nbd_read_bytes_total{node="alpha",volume="r0"} 11`,
	"IOStats.BytesWritten": `blkrep_nbd_written_bytes_total{node="alpha",volume="r0"} 12`,
	"IOStats.Errors":       `blkrep_nbd_errors_total{node="alpha",volume="r0"} 13`,

	"Metadata.Placement": "", "Metadata.Path": "", "Metadata.DiskBytes": "", "Metadata.AreaBytes": "",
	"Metadata.Flags": "", "Metadata.Current": "", "Metadata.LastShutdown": "", "Metadata.BytesPerBit": "",
	"Metadata.ActivityLog":      "",
	"Metadata.Peers":            "", // per-slot bitmaps: Peer.OutOfSyncBytes carries the figure
	"Metadata.BadBitmapPages":   `blkrep_metadata_bad_bitmap_pages{node="alpha",volume="r0"} 14`,
	"Metadata.BitmapPageWrites": `blkrep_bitmap_page_writes_total{node="alpha",volume="r0"} 15`,
	"Metadata.SuperblockWrites": `blkrep_superblock_writes_total{node="alpha",volume="r0"} 16`,
	"Metadata.Error":            `blkrep_metadata_failed{node="alpha",volume="r0"} 1`,
	"ALStatus.Extents":          `blkrep_al_extents{node="alpha",volume="r0"} 17`,
	"ALStatus.Hot":              `blkrep_al_hot_extents{node="alpha",volume="r0"} 18`,
	"ALStatus.InFlight":         `blkrep_al_in_flight_refs{node="alpha",volume="r0"} 19`,
	"ALStatus.Waiting":          `blkrep_al_waiting_writes{node="alpha",volume="r0"} 20`,
	"ALStatus.Writes":           `blkrep_al_writes_total{node="alpha",volume="r0"} 21`,
	"ALStatus.Evictions":        `blkrep_al_evictions_total{node="alpha",volume="r0"} 22`,
	"ALStatus.Starved":          `blkrep_al_starved_total{node="alpha",volume="r0"} 23`,
	"ALStatus.Seq":              "", // a sequence number, not a figure

	"Peer.Node": "", "Peer.Address": "", "Peer.Handshake": "", "Peer.LastError": "",
	"Peer.Resync": "", "Peer.Verify": "",
	"Peer.Term":           "", // the peer's data term as it last said; blkrep_failover_data_term on the peer carries it
	"Peer.Connection":     `blkrep_peer_connection_state{node="alpha",peer="beta",state="Connected",volume="r0"} 1`,
	"Peer.Replication":    `blkrep_peer_replication_state{node="alpha",peer="beta",state="SyncSource",volume="r0"} 1`,
	"Peer.Role":           `blkrep_peer_role{node="alpha",peer="beta",role="Secondary",volume="r0"} 1`,
	"Peer.Disk":           `blkrep_peer_disk_state{node="alpha",peer="beta",state="Inconsistent",volume="r0"} 1`,
	"Peer.OutOfSyncBytes": `blkrep_peer_out_of_sync_bytes{node="alpha",peer="beta",volume="r0"} 25`,
	"Peer.UnackedBytes":   `blkrep_peer_unacked_bytes{node="alpha",peer="beta",volume="r0"} 26`,
	"Peer.InFlightWrites": `blkrep_peer_in_flight_writes{node="alpha",peer="beta",volume="r0"} 27`,
	"Peer.SplitBrain":     `blkrep_peer_split_brain{node="alpha",peer="beta",volume="r0"} 1`,
	"Peer.SentBytes":      `blkrep_peer_sent_bytes_total{node="alpha",peer="beta",volume="r0"} 28`,
	"Peer.ReceivedBytes":  `blkrep_peer_received_bytes_total{node="alpha",peer="beta",volume="r0"} 29`,
	"Peer.Reconnects":     `blkrep_peer_reconnects_total{node="alpha",peer="beta",volume="r0"} 30`,

	"Failover.Primary": "", "Failover.Voters": "", "Failover.Why": "",
	"Failover.OutdatedConfirmed": "", // the gate's writes_waiting shows the unconfirmed ones' cost
	"Failover.Term":              `blkrep_failover_term{node="alpha",volume="r0"} 41`,
	"Failover.IsPrimary":         `blkrep_failover_primary{node="alpha",volume="r0"} 1`,
	"Failover.Accepting":         `blkrep_failover_accepting{node="alpha",volume="r0"} 1`,
	"Failover.Writes":            `blkrep_failover_write_gate{mode="hold",node="alpha",volume="r0"} 1`,
	"Failover.WritesWaiting":     `blkrep_failover_writes_waiting{node="alpha",volume="r0"} 43`,
	"Failover.Quorum":            `blkrep_failover_quorum{node="alpha",volume="r0"} 1`,
	"Failover.VotersCounted":     `blkrep_failover_voters_counted{node="alpha",volume="r0"} 3`,
	"Failover.VotersSeen":        `blkrep_failover_voters_seen{node="alpha",volume="r0"} 2`,
	"Failover.OutdatedPeers":     `blkrep_failover_outdated_peers{node="alpha",volume="r0"} 1`,
	"Failover.Fenced":            `blkrep_failover_fenced_peers{node="alpha",volume="r0"} 1`,
	"Failover.DataTerm":          `blkrep_failover_data_term{node="alpha",volume="r0"} 42`,

	"Progress.Checksum": "", "Progress.StartedAt": "", "Progress.FinishedAt": "",
	"Progress.Running":         `blkrep_peer_resync_running{node="alpha",peer="beta",volume="r0"} 1`,
	"Progress.TotalBytes":      `blkrep_peer_resync_total_bytes{node="alpha",peer="beta",volume="r0"} 31`,
	"Progress.DoneBytes":       `blkrep_peer_resync_done_bytes{node="alpha",peer="beta",volume="r0"} 32`,
	"Progress.SkippedBytes":    `blkrep_peer_resync_skipped_bytes{node="alpha",peer="beta",volume="r0"} 33`,
	"Progress.RateBytesPerSec": `blkrep_peer_resync_rate_bytes_per_second{node="alpha",peer="beta",volume="r0"} 34`,
	"Progress.ETASeconds":      `blkrep_peer_resync_eta_seconds{node="alpha",peer="beta",volume="r0"} 35`,
	"Progress.MismatchBytes":   `blkrep_peer_verify_mismatch_bytes{node="alpha",peer="beta",volume="r0"} 38`,
}

// Series checked beyond one per field: the verify side of Progress, the
// zeros of the state sets.
var alsoExported = []string{
	`blkrep_peer_verify_running{node="alpha",peer="beta",volume="r0"} 0`,
	`blkrep_peer_verify_total_bytes{node="alpha",peer="beta",volume="r0"} 36`,
	`blkrep_peer_verify_done_bytes{node="alpha",peer="beta",volume="r0"} 37`,
	`blkrep_peer_verify_rate_bytes_per_second{node="alpha",peer="beta",volume="r0"} 39`,
	`blkrep_peer_verify_eta_seconds{node="alpha",peer="beta",volume="r0"} 40`,
	`blkrep_volume_role{node="alpha",role="Secondary",volume="r0"} 0`,
	`blkrep_volume_disk_state{node="alpha",state="Failed",volume="r0"} 0`,
	`blkrep_peer_replication_state{node="alpha",peer="beta",state="PausedSyncTarget",volume="r0"} 0`,
	`blkrep_peer_role{node="alpha",peer="beta",role="Unknown",volume="r0"} 0`,
	`blkrep_failover_write_gate{mode="accept",node="alpha",volume="r0"} 0`,
	`blkrep_gossip_members{node="alpha",state="left"} 1`,
	`blkrep_gossip_members{node="alpha",state="suspect"} 0`,
	// A witness's volume: no gate, no data term.
	`blkrep_failover_term{node="alpha",volume="w1"} 44`,
	`blkrep_failover_primary{node="alpha",volume="w1"} 0`,
	`blkrep_failover_quorum{node="alpha",volume="w1"} 0`,
	`blkrep_failover_voters_seen{node="alpha",volume="w1"} 2`,
}

// gather renders every non-histogram sample of g as `name{labels} value`.
func gather(t *testing.T, g prometheus.Gatherer) map[string]bool {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]bool)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(ls)
			var v float64
			switch {
			case m.Gauge != nil:
				v = m.GetGauge().GetValue()
			case m.Counter != nil:
				v = m.GetCounter().GetValue()
			default:
				continue
			}
			out[fmt.Sprintf("%s{%s} %g", mf.GetName(), strings.Join(ls, ","), v)] = true
		}
	}
	return out
}

// Status parts carried by no metric: text (NBD endpoints, handshake
// decisions) and per-slot bitmaps (Peer.OutOfSyncBytes is the figure).
var notExportedTypes = map[string]bool{"Addr": true, "Handshake": true, "PeerSlot": true}

// fields lists "Type.Field" for every field of the status document.
func fields(t reflect.Type, seen map[string]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.PkgPath() != reflect.TypeFor[control.Status]().PkgPath() || notExportedTypes[t.Name()] {
		return
	}
	for f := range t.Fields() {
		k := t.Name() + "." + f.Name
		if seen[k] {
			continue
		}
		seen[k] = true
		fields(f.Type, seen)
	}
}

// Every field of the status is either exported with its value or listed
// as deliberately not exported: a field added to control.Status fails
// here until it is decided.
func TestEveryStatusFieldExported(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	st := testStatus()
	if _, err := New(reg, "alpha", func() control.Status { return st }); err != nil {
		t.Fatal(err)
	}
	got := gather(t, reg)
	all := make(map[string]bool)
	fields(reflect.TypeFor[control.Status](), all)
	for f := range all {
		series, ok := exported[f]
		if !ok {
			t.Errorf("status field %s: export it, or list it as not exported", f)
			continue
		}
		if series != "" && !got[series] {
			t.Errorf("status field %s: no series %s", f, series)
		}
	}
	for f := range exported {
		if !all[f] {
			t.Errorf("%s is not a status field", f)
		}
	}
	for _, s := range alsoExported {
		if !got[s] {
			t.Errorf("no series %s", s)
		}
	}
	if t.Failed() {
		var ss []string
		for s := range got {
			ss = append(ss, s)
		}
		sort.Strings(ss)
		t.Logf("gathered:\n%s", strings.Join(ss, "\n"))
	}
}

func TestExposition(t *testing.T) {
	st := testStatus()
	c := newCollector("alpha", func() control.Status { return st })
	want := `
# HELP blkrep_volume_role This node's role for the volume (1 for the current role): Primary serves I/O, Secondary does not.
# TYPE blkrep_volume_role gauge
blkrep_volume_role{node="alpha",role="Primary",volume="r0"} 1
blkrep_volume_role{node="alpha",role="Secondary",volume="r0"} 0
# HELP blkrep_peer_out_of_sync_bytes Bytes of the volume that may differ between this node and the peer.
# TYPE blkrep_peer_out_of_sync_bytes gauge
blkrep_peer_out_of_sync_bytes{node="alpha",peer="beta",volume="r0"} 25
# HELP blkrep_nbd_written_bytes_total Bytes written by NBD clients since the daemon started.
# TYPE blkrep_nbd_written_bytes_total counter
blkrep_nbd_written_bytes_total{node="alpha",volume="r0"} 12
# HELP blkrep_al_writes_total Activity-log transaction records written since the daemon started.
# TYPE blkrep_al_writes_total counter
blkrep_al_writes_total{node="alpha",volume="r0"} 21
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"blkrep_volume_role", "blkrep_peer_out_of_sync_bytes", "blkrep_nbd_written_bytes_total", "blkrep_al_writes_total"); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// A volume without metadata or peers (meta_disk = "none") has no
// metadata or peer series; a state not in the list is still reported.
func TestSparseVolume(t *testing.T) {
	st := control.Status{Node: "alpha", Volumes: []control.Volume{{
		Name: "plain", Role: "Primary", Connection: "StandAlone",
		Disk: control.Disk{State: "Weird"}, Device: control.Device{State: "none"},
	}}}
	reg := prometheus.NewPedanticRegistry()
	if _, err := New(reg, "alpha", func() control.Status { return st }); err != nil {
		t.Fatal(err)
	}
	got := gather(t, reg)
	for s := range got {
		if strings.HasPrefix(s, "blkrep_al_") || strings.HasPrefix(s, "blkrep_peer_") || strings.HasPrefix(s, "blkrep_metadata_") {
			t.Errorf("series for a volume without metadata or peers: %s", s)
		}
	}
	for _, s := range []string{
		`blkrep_volume_disk_state{node="alpha",state="Weird",volume="plain"} 1`,
		`blkrep_volume_disk_state{node="alpha",state="UpToDate",volume="plain"} 0`,
		`blkrep_nbd_requests_total{node="alpha",op="read",volume="plain"} 0`,
	} {
		if !got[s] {
			t.Errorf("no series %s", s)
		}
	}
	if got[`blkrep_start_time_seconds{node="alpha"} 0`] {
		t.Error("a zero start time is reported")
	}
}

func TestObserver(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := New(reg, "alpha", func() control.Status { return control.Status{} })
	if err != nil {
		t.Fatal(err)
	}
	obs := m.Observer("r0")
	obs(nbd.CmdWrite, 3*time.Millisecond)
	obs(nbd.CmdWrite, 20*time.Microsecond)
	obs(nbd.CmdFlush, 2*time.Second)
	obs(nbd.CmdDisc, time.Second) // not served: ignored
	obs(99, time.Second)          // unknown: ignored
	if n := testutil.CollectAndCount(m.latency); n != len(ops) {
		t.Fatalf("%d latency series, want one per command (%d)", n, len(ops))
	}
	if w, f, r := sampleCount(t, m, "write"), sampleCount(t, m, "flush"), sampleCount(t, m, "read"); w != 2 || f != 1 || r != 0 {
		t.Fatalf("observed writes %d flushes %d reads %d, want 2 1 0", w, f, r)
	}
	if allocs := testing.AllocsPerRun(100, func() { obs(nbd.CmdRead, time.Millisecond) }); allocs != 0 {
		t.Fatalf("Observe allocates %v times per request", allocs)
	}
	var nilM *Metrics
	if nilM.Observer("r0") != nil {
		t.Fatal("a nil *Metrics gives a hook")
	}
	if m, err := New(nil, "alpha", nil); m != nil || err != nil {
		t.Fatalf("New(nil) = %v, %v", m, err)
	}
	if _, err := New(reg, "alpha", func() control.Status { return control.Status{} }); err == nil {
		t.Fatal("registered twice")
	}
}

// sampleCount is how many requests op's latency histogram has seen.
func sampleCount(t *testing.T, m *Metrics, op string) uint64 {
	t.Helper()
	var d dto.Metric
	if err := m.latency.WithLabelValues("r0", op).(prometheus.Metric).Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetHistogram().GetSampleCount()
}

// docs/metrics.md names every metric.
func TestDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	st := testStatus()
	if _, err := New(reg, "alpha", func() control.Status { return st }); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"blkrep_nbd_request_duration_seconds"} // no series until a volume's Observer
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	for _, n := range names {
		if !bytes.Contains(doc, []byte("| `"+n+"` |")) {
			t.Errorf("docs/metrics.md: no table row for %s", n)
		}
	}
	if len(names) < 40 {
		t.Fatalf("only %d metrics gathered", len(names))
	}
	for _, m := range regexp.MustCompile("\\| `(blkrep_[a-z_]+)` \\|").FindAllSubmatch(doc, -1) {
		if !slices.Contains(names, string(m[1])) {
			t.Errorf("docs/metrics.md documents %s, which is not exported", m[1])
		}
	}
}
