package clustertest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestTag(t *testing.T) {
	tag := Tag{Seq: 42, Offset: 8192, Issued: time.Unix(1700000000, 123456789), Node: "beta"}
	b := tag.Block()
	got, zero, err := DecodeTag(b)
	if err != nil || zero {
		t.Fatalf("decode: %v zero %v", err, zero)
	}
	if got.Seq != tag.Seq || got.Offset != tag.Offset || !got.Issued.Equal(tag.Issued) || got.Node != tag.Node {
		t.Fatalf("decoded %+v, want %+v", got, tag)
	}
	if _, zero, err := DecodeTag(make([]byte, BlockSize)); err != nil || !zero {
		t.Fatalf("zero block: %v %v", zero, err)
	}
	b[100] ^= 1
	if _, _, err := DecodeTag(b); err == nil {
		t.Fatal("a flipped bit went unnoticed")
	}
	other := Tag{Seq: 43, Offset: 8192, Issued: tag.Issued, Node: "beta"}.Block()
	if string(other[48:100]) == string(tag.Block()[48:100]) {
		t.Fatal("two writes have the same filler")
	}
}

func write(seq uint64, block int64, node string, acked bool, at time.Time) Write {
	w := Write{Tag: Tag{Seq: seq, Offset: block * BlockSize, Issued: at.Add(-time.Millisecond), Node: node}}
	if acked {
		w.Acked = at
	} else {
		w.Err = "connection closed"
	}
	return w
}

func volume(blocks int64, ws ...Write) []byte {
	data := make([]byte, blocks*BlockSize)
	for _, w := range ws {
		w.Encode(data[w.Offset : w.Offset+BlockSize])
	}
	return data
}

func TestCheckDurable(t *testing.T) {
	t0 := time.Now()
	h := &History{Blocks: 4, Writes: []Write{
		write(1, 0, "alpha", true, t0),
		write(2, 1, "alpha", true, t0.Add(time.Millisecond)),
		write(3, 1, "alpha", false, t0.Add(2*time.Millisecond)), // in doubt
		write(4, 2, "alpha", false, t0.Add(3*time.Millisecond)), // in doubt, never acked block
		write(5, 0, "beta", true, t0.Add(time.Second)),
	}}
	// The good outcomes: the in-doubt writes landed or did not.
	for _, data := range [][]byte{
		volume(4, h.Writes[4], h.Writes[1]),
		volume(4, h.Writes[4], h.Writes[2], h.Writes[3]),
	} {
		if rep, err := CheckDurable(h, data); err != nil {
			t.Fatalf("%+v: %v", rep, err)
		}
	}
	// Lost: block 0 still holds seq 1; block 1 is zero.
	rep, err := CheckDurable(h, volume(4, h.Writes[0]))
	if err == nil || rep.Lost != 2 {
		t.Fatalf("lost writes not found: %+v %v", rep, err)
	}
	// A write the writer never sent there.
	stray := write(9, 3, "alpha", true, t0)
	if _, err := CheckDurable(h, volume(4, h.Writes[4], h.Writes[1], stray)); err == nil || !strings.Contains(err.Error(), "never sent") {
		t.Fatalf("stray block: %v", err)
	}
}

func TestCheckSingleWriter(t *testing.T) {
	t0 := time.Now()
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	promos := []Promotion{{Node: "alpha", Term: 1, Time: ms(0)}, {Node: "beta", Term: 2, Time: ms(1000)}, {Node: "alpha", Term: 3, Time: ms(5000)}}
	good := &History{Writes: []Write{
		write(1, 0, "alpha", true, ms(10)),
		write(2, 1, "alpha", true, ms(900)),
		write(3, 2, "alpha", false, ms(950)),
		write(4, 0, "beta", true, ms(1100)),
		write(5, 1, "beta", true, ms(4000)),
		write(6, 1, "alpha", true, ms(5100)),
	}}
	ts, err := CheckSingleWriter(good, promos)
	if err != nil {
		t.Fatal(err)
	}
	if ts[0].Acks != 2 || ts[1].Acks != 2 || ts[2].Acks != 1 {
		t.Fatalf("tenures %+v", ts)
	}
	// alpha acknowledges after beta's first acknowledgement.
	bad := &History{Writes: append(good.Writes[:5:5], write(7, 2, "alpha", true, ms(1200)))}
	if _, err := CheckSingleWriter(bad, promos); err == nil || !strings.Contains(err.Error(), "two primaries") {
		t.Fatalf("overlap not found: %v", err)
	}
	// beta acknowledges before its promotion.
	early := &History{Writes: []Write{write(1, 0, "beta", true, ms(500))}}
	if _, err := CheckSingleWriter(early, promos); err == nil || !strings.Contains(err.Error(), "not been promoted") {
		t.Fatalf("ack without promotion not found: %v", err)
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	bin := t.TempDir()
	for _, b := range []string{"blkrepd", "blkrep"} {
		os.WriteFile(bin+"/"+b, nil, 0o755)
	}
	c, err := New(Options{Dir: dir, Bin: bin, Profile: "fast", VolumeTOML: `ping_interval = "2s"`})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := os.ReadFile(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`failover_profile = "fast"`, `witness = true`, `nbd_socket = "beta-r0.sock"`, `ping_interval = "2s"`, `connect_interval = "1s"`, `size = 67108864`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("config lacks %s:\n%s", want, b)
		}
	}
	if len(c.Endpoints()) != 2 || c.Blocks() != 16384 {
		t.Fatalf("endpoints %v blocks %d", c.Endpoints(), c.Blocks())
	}
}

// TestLoopbackKill runs the real daemons on loopback: the primary is
// killed under load, the other takes over, the killed node comes back and
// resyncs, and the three checks pass. Opt-in (about 30 s):
// BLKREP_CLUSTERTEST=1 go test ./internal/clustertest/ -run Loopback -v
func TestLoopbackKill(t *testing.T) {
	if os.Getenv("BLKREP_CLUSTERTEST") != "1" {
		t.Skip("real daemons: set BLKREP_CLUSTERTEST=1 (tests/netns and make bench-failover run them too)")
	}
	mod, err := ModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if err := BuildBinaries(mod, bin); err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Dir: t.TempDir(), Bin: bin, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	defer func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("--- %s log:\n%s", n.Name, c.Tail(n.Name, 40))
			}
		}
	}()
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitInSync(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	prim, _ := c.Primary()
	w, err := StartWriter(WriterOptions{Endpoints: c.Endpoints(), Blocks: c.Blocks(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitAckBy(prim, time.Time{}, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	killed, err := c.Kill(prim)
	if err != nil {
		t.Fatal(err)
	}
	other := Alpha
	if prim == Alpha {
		other = Beta
	}
	first, err := w.WaitAckBy(other, killed, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s acknowledged its first write %s after %s was killed", other, first.Acked.Sub(killed).Round(time.Millisecond), prim)
	time.Sleep(time.Second)
	if err := c.Restart(prim); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitInSync(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	h := w.Stop(5 * time.Second)
	t.Log(h.Summary())
	checkAll(t, c, h)
}

func checkAll(t *testing.T, c *Cluster, h *History) {
	t.Helper()
	promos, err := c.Promotions()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckSingleWriter(h, promos); err != nil {
		t.Error(err)
	}
	if err := c.WaitInSync(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, data, err := c.ReadVolume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := CheckDurable(h, data); err != nil {
		t.Error(err)
	} else {
		t.Logf("check (b): %+v", rep)
	}
	if err := c.CompareDisks(); err != nil {
		t.Error(err)
	}
}
