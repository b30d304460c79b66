package kernel

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func waitDone(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: serve did not return", what)
	}
}

func opts() Options {
	return Options{Index: 0, SizeBytes: 1 << 20, Timeout: 30 * time.Second,
		DeadConnTimeout: time.Minute, ServerFlags: 1 | 4 | 8, Backend: "blkrep:r0"}
}

func cmds(reqs []sentReq) string {
	names := map[uint8]string{cmdConnect: "CONNECT", cmdDisconnect: "DISCONNECT",
		cmdReconfigure: "RECONFIGURE", cmdStatus: "STATUS"}
	var s []string
	for _, r := range reqs {
		s = append(s, names[r.cmd])
	}
	return strings.Join(s, ",")
}

func TestAttachConnectServesFirst(t *testing.T) {
	fk, c := newFakeKernel(t)
	fk.probe = true // CONNECT reads sector 0 before returning, like the kernel
	done := make(chan struct{})
	index, err := Attach(c, opts(), zeroServer(done))
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if index != 0 {
		t.Errorf("index = %d, want 0", index)
	}
	if got := cmds(fk.requests()); got != "STATUS,CONNECT" {
		t.Errorf("commands = %s, want STATUS,CONNECT", got)
	}
	// The kernel's reference keeps the socket up after Attach closed its copy.
	select {
	case <-done:
		t.Fatal("serve returned while the kernel still holds the socket")
	default:
	}
	if err := c.Disconnect(0); err != nil {
		t.Fatal(err)
	}
	waitDone(t, done, "after DISCONNECT")
}

func TestAttachKernelPicksIndex(t *testing.T) {
	fk, c := newFakeKernel(t)
	o := opts()
	o.Index = -1
	done := make(chan struct{})
	if _, err := Attach(c, o, zeroServer(done)); err != nil {
		t.Fatal(err)
	}
	if got := cmds(fk.requests()); got != "CONNECT" {
		t.Errorf("commands = %s, want CONNECT (no STATUS without an index)", got)
	}
	fk.dropAll()
	waitDone(t, done, "after drop")
}

func TestAttachUnconfiguredDeviceConnects(t *testing.T) {
	fk, c := newFakeKernel(t)
	fk.setDevice(0, &fakeDev{connected: false})
	done := make(chan struct{})
	if _, err := Attach(c, opts(), zeroServer(done)); err != nil {
		t.Fatal(err)
	}
	if got := cmds(fk.requests()); got != "STATUS,CONNECT" {
		t.Errorf("commands = %s", got)
	}
	fk.dropAll()
	waitDone(t, done, "after drop")
}

func TestAttachReconfiguresOwnDevice(t *testing.T) {
	fk, c := newFakeKernel(t)
	fk.setDevice(4, &fakeDev{connected: true, backend: "blkrep:r0"})
	fk.reconfTakes = true
	o := opts()
	o.Index = 4
	done := make(chan struct{})
	index, err := Attach(c, o, zeroServer(done))
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if index != 4 {
		t.Errorf("index = %d, want 4", index)
	}
	if got := cmds(fk.requests()); got != "STATUS,RECONFIGURE" {
		t.Errorf("commands = %s, want STATUS,RECONFIGURE", got)
	}
	fk.dropAll()
	waitDone(t, done, "after drop")
}

func TestAttachReconfigureLinkAlive(t *testing.T) {
	fk, c := newFakeKernel(t)
	fk.setDevice(1, &fakeDev{connected: true, backend: "blkrep:r0"})
	fk.reconfTakes = false // the old socket is alive: the kernel drops ours and says OK
	o := opts()
	o.Index = 1
	done := make(chan struct{})
	_, err := Attach(c, o, zeroServer(done))
	if !errors.Is(err, ErrLinkAlive) {
		t.Fatalf("err = %v, want ErrLinkAlive", err)
	}
	if !strings.Contains(err.Error(), "/dev/nbd1") {
		t.Errorf("error %q does not name the device", err)
	}
	waitDone(t, done, "Attach returned") // Attach waits for serve on error
}

func TestAttachBusyOtherBackend(t *testing.T) {
	for _, tt := range []struct{ backend, want string }{
		{"blkrep:r1", `/dev/nbd2 is attached to backend "blkrep:r1", want backend "blkrep:r0"`},
		{"", `/dev/nbd2 is in use without a backend identifier`},
	} {
		fk, c := newFakeKernel(t)
		fk.setDevice(2, &fakeDev{connected: true, backend: tt.backend})
		o := opts()
		o.Index = 2
		_, err := Attach(c, o, func(net.Conn) { t.Error("serve called") })
		var be *BusyError
		if !errors.As(err, &be) || !errors.Is(err, ErrDeviceBusy) {
			t.Fatalf("err = %v, want *BusyError", err)
		}
		if be.Index != 2 || be.Backend != tt.backend {
			t.Errorf("BusyError = %+v", be)
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("error %q, want it to contain %q", err, tt.want)
		}
		if got := cmds(fk.requests()); got != "STATUS" {
			t.Errorf("commands = %s, want STATUS only", got)
		}
	}
}

func TestAttachRetriesTransientBusy(t *testing.T) {
	fk, c := newFakeKernel(t)
	fk.connectErrs = []error{unix.EBUSY, unix.EBUSY}
	var slept []time.Duration
	c.sleep = func(d time.Duration) { slept = append(slept, d) }
	done := make(chan struct{})
	if _, err := Attach(c, opts(), zeroServer(done)); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if len(slept) != 2 {
		t.Errorf("slept %v, want 2 backoffs", slept)
	}
	if got := cmds(fk.requests()); got != "STATUS,CONNECT,CONNECT,CONNECT" {
		t.Errorf("commands = %s", got)
	}
	fk.dropAll()
	waitDone(t, done, "after drop")
}

func TestAttachConnectFails(t *testing.T) {
	fk, c := newFakeKernel(t)
	fk.connectErrs = []error{unix.EINVAL}
	done := make(chan struct{})
	_, err := Attach(c, opts(), zeroServer(done))
	var oe *OpError
	if !errors.As(err, &oe) || oe.Op != "connect" || !errors.Is(err, unix.EINVAL) {
		t.Fatalf("err = %v, want *OpError connect EINVAL", err)
	}
	if want := "nbd/kernel: connect /dev/nbd0: invalid argument"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	waitDone(t, done, "Attach returned")
}

func TestAttachRejectsBadOptions(t *testing.T) {
	_, c := newFakeKernel(t)
	o := opts()
	o.BlockSize = 1000
	if _, err := Attach(c, o, func(net.Conn) {}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("err = %v, want ErrInvalidOptions", err)
	}
	if _, err := Attach(c, opts(), nil); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("nil serve: err = %v, want ErrInvalidOptions", err)
	}
}

// Every command must carry NLM_F_ACK: DISCONNECT and RECONFIGURE send no
// reply, so without an ACK the caller would wait for the socket timeout.
func TestRequestsAskForAck(t *testing.T) {
	fk, c := newFakeKernel(t)
	fk.setDevice(0, &fakeDev{connected: true, backend: "blkrep:r0"})
	fk.reconfTakes = true
	f, srv, probe, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	defer probe.Close()
	defer srv.Close()
	if _, err := c.Connect(opts(), f); err != nil {
		t.Fatal(err)
	}
	if err := c.Reconfigure(opts(), f); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Status(0); err != nil {
		t.Fatal(err)
	}
	if err := c.Disconnect(0); err != nil {
		t.Fatal(err)
	}
	reqs := fk.requests()
	if got := cmds(reqs); got != "CONNECT,RECONFIGURE,STATUS,DISCONNECT" {
		t.Fatalf("commands = %s", got)
	}
	for _, r := range reqs {
		if r.flags&(unix.NLM_F_REQUEST|unix.NLM_F_ACK) != unix.NLM_F_REQUEST|unix.NLM_F_ACK {
			t.Errorf("cmd %d flags %#x lack NLM_F_REQUEST|NLM_F_ACK", r.cmd, r.flags)
		}
		if r.typ != fakeFamily || r.ver != 1 {
			t.Errorf("cmd %d: type %#x version %d, want family %#x version 1", r.cmd, r.typ, r.ver, fakeFamily)
		}
	}
	if got, want := reqs[3].attrs, encodeIndex(0); string(got) != string(want) {
		t.Errorf("DISCONNECT attrs %x, want %x", got, want)
	}
}

func TestStatus(t *testing.T) {
	fk, c := newFakeKernel(t)
	fk.setDevice(3, &fakeDev{connected: false})
	for _, tt := range []struct {
		index             int
		exists, connected bool
	}{{3, true, false}, {5, false, false}} {
		exists, connected, err := c.Status(tt.index)
		if err != nil || exists != tt.exists || connected != tt.connected {
			t.Errorf("Status(%d) = %v, %v, %v", tt.index, exists, connected, err)
		}
	}
	if _, _, err := c.Status(-1); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("Status(-1) err = %v", err)
	}
}

func TestClosedConn(t *testing.T) {
	_, c := newFakeKernel(t)
	c.Close()
	if err := c.Disconnect(0); !errors.Is(err, ErrClosed) {
		t.Errorf("err = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestDecideAttach(t *testing.T) {
	tests := []struct {
		name              string
		exists, connected bool
		backend           string
		want              attachAction
		busy              bool
	}{
		{"no device", false, false, "", actionConnect, false},
		{"unconfigured device", true, false, "", actionConnect, false},
		{"ours, restart", true, true, "blkrep:r0", actionReconfigure, false},
		{"someone else's", true, true, "other", actionConnect, true},
		{"configured without identifier", true, true, "", actionConnect, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decideAttach(0, tt.exists, tt.connected, tt.backend, "blkrep:r0")
			if (err != nil) != tt.busy || (err != nil && !errors.Is(err, ErrDeviceBusy)) {
				t.Fatalf("err = %v, busy %v", err, tt.busy)
			}
			if err == nil && got != tt.want {
				t.Errorf("action = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseDevice(t *testing.T) {
	tests := []struct {
		path string
		want int
		ok   bool
	}{
		{"/dev/nbd0", 0, true},
		{"/dev/nbd3", 3, true},
		{"/dev/nbd1048575", MaxIndex, true},
		{"/dev/nbd1048576", 0, false},
		{"/dev/nbd", 0, false},
		{"/dev/nbd03", 0, false},
		{"/dev/nbd0p1", 0, false},
		{"/dev/nbd-1", 0, false},
		{"/dev/sda", 0, false},
		{"nbd3", 0, false},
		{"/dev/nbd3/", 0, false},
		{"/dev/nbd99999999999999999999", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseDevice(tt.path)
		if tt.ok {
			if err != nil || got != tt.want {
				t.Errorf("ParseDevice(%q) = %d, %v; want %d", tt.path, got, err, tt.want)
			}
			continue
		}
		if !errors.Is(err, ErrInvalidDevice) {
			t.Errorf("ParseDevice(%q) = %d, %v; want ErrInvalidDevice", tt.path, got, err)
		} else if !strings.Contains(err.Error(), tt.path) {
			t.Errorf("error %q does not quote the path", err)
		}
	}
	_, err := ParseDevice("/dev/nbd0p1")
	if want := `nbd/kernel: not an nbd device path: "/dev/nbd0p1": a partition, not a whole device (want /dev/nbdN)`; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestBackendAt(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "nbd0"), 0o755)
	os.MkdirAll(filepath.Join(root, "nbd1"), 0o755)
	os.WriteFile(filepath.Join(root, "nbd1", "backend"), []byte("blkrep:r0\n"), 0o644)
	if b, err := backendAt(root, 0); err != nil || b != "" {
		t.Errorf("unconfigured: %q, %v", b, err)
	}
	if b, err := backendAt(root, 1); err != nil || b != "blkrep:r0" {
		t.Errorf("configured: %q, %v", b, err)
	}
	if _, err := backendAt(root, 2); !errors.Is(err, ErrNoDevice) {
		t.Errorf("absent: %v, want ErrNoDevice", err)
	}
}
