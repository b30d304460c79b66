package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/testnet"
)

// freePort returns a loopback address nobody listens on (the config wants
// a real port, not 0).
func freePort(t *testing.T) string {
	t.Helper()
	return testnet.MustAddr(t)
}

func withMetrics(addr string) string {
	return strings.Replace(testConfig, `control_socket = "alpha.ctl"`,
		`control_socket = "alpha.ctl"`+"\nmetrics = \""+addr+`"`, 1)
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s %v\n%s", resp.Status, err, b)
	}
	return string(b)
}

// hasLine reports whether the exposition holds line exactly.
func hasLine(text, line string) bool {
	for l := range strings.SplitSeq(text, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

// nbdWrite writes data at off through the volume's unix socket
// (NBD_OPT_EXPORT_NAME negotiation, one simple-reply request) and
// disconnects, returning once the server has closed the connection.
func nbdWrite(t *testing.T, sock, export string, off uint64, data []byte) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var hello [18]byte
	if _, err := io.ReadFull(c, hello[:]); err != nil {
		t.Fatal(err)
	}
	b := binary.BigEndian.AppendUint32(nil, 3) // fixed newstyle, no zeroes
	b = binary.BigEndian.AppendUint64(b, 0x49484156454F5054)
	b = binary.BigEndian.AppendUint32(b, 1) // NBD_OPT_EXPORT_NAME
	b = binary.BigEndian.AppendUint32(b, uint32(len(export)))
	b = append(b, export...)
	// NBD_CMD_WRITE, then NBD_CMD_DISC.
	for _, typ := range []uint16{1, 2} {
		b = binary.BigEndian.AppendUint32(b, 0x25609513)
		b = binary.BigEndian.AppendUint16(b, 0)
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint64(b, 7) // cookie
		b = binary.BigEndian.AppendUint64(b, off)
		if typ == 1 {
			b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
			b = append(b, data...)
		} else {
			b = binary.BigEndian.AppendUint32(b, 0)
		}
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	var r [10 + 16]byte // export size and flags; the write's simple reply
	if _, err := io.ReadFull(c, r[:]); err != nil {
		t.Fatal(err)
	}
	if errno := binary.BigEndian.Uint32(r[14:]); binary.BigEndian.Uint32(r[10:]) != 0x67446698 || errno != 0 {
		t.Fatalf("write reply % x", r[10:])
	}
	// The server closes after DISC once every request has finished
	// (observed included).
	if n, err := io.Copy(io.Discard, c); n != 0 || err != nil {
		t.Fatalf("after DISC: %d bytes, %v", n, err)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	addr := freePort(t)
	d, dir := startDaemon(t, withMetrics(addr))
	defer d.Shutdown(context.Background())

	text := scrape(t, addr)
	for _, want := range []string{
		`blkrep_volume_role{node="alpha",role="Primary",volume="r0"} 1`,
		`blkrep_volume_role{node="alpha",role="Secondary",volume="r0"} 0`,
		`blkrep_volume_disk_state{node="alpha",state="UpToDate",volume="r0"} 1`,
		`blkrep_nbd_requests_total{node="alpha",op="write",volume="r0"} 0`,
		`blkrep_al_extents{node="alpha",volume="r0"} 1237`,
		`blkrep_info{cluster="t",node="alpha",version="` + Version + `"} 1`,
		`blkrep_nbd_request_duration_seconds_count{node="alpha",op="write",volume="r0"} 0`,
	} {
		if !hasLine(text, want) {
			t.Errorf("no line %s", want)
		}
	}
	for _, want := range []string{"go_goroutines ", "process_start_time_seconds "} {
		if !strings.Contains(text, "\n"+want) {
			t.Errorf("no %s: the runtime and process collectors are missing", want)
		}
	}
	if t.Failed() {
		t.Fatalf("scraped:\n%s", text)
	}

	nbdWrite(t, filepath.Join(dir, "alpha-r0.sock"), "r0", 8192, bytes.Repeat([]byte{0x5a}, 4096))
	text = scrape(t, addr)
	for _, want := range []string{
		`blkrep_nbd_requests_total{node="alpha",op="write",volume="r0"} 1`,
		`blkrep_nbd_written_bytes_total{node="alpha",volume="r0"} 4096`,
		`blkrep_nbd_connections_total{node="alpha",volume="r0"} 1`,
	} {
		if !hasLine(text, want) {
			t.Errorf("no line %s", want)
		}
	}
	if !hasLine(text, `blkrep_nbd_request_duration_seconds_count{node="alpha",op="write",volume="r0"} 1`) {
		t.Error("the write's latency was not observed")
	}
	if t.Failed() {
		t.Fatalf("scraped:\n%s", text)
	}

	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("the metrics endpoint still listens after Shutdown")
	}
}

// A metrics address that cannot be bound fails the start, naming the
// address, before any disk is created.
func TestMetricsAddressTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	d, dir := newDaemon(t, withMetrics(addr))
	err = d.Start()
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "metrics") {
		t.Fatalf("start with the metrics address taken: %v", err)
	}
	t.Log(err) // as blkrepd reports it
	for _, f := range []string{"alpha-r0.img", "alpha-r0.sock", "alpha.ctl"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s exists after the failed start (%v)", f, err)
		}
	}
}
