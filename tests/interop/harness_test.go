package interop

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/testnet"
)

// Binaries built once by TestMain.
var (
	daemonBin string
	cliBin    string
	moduleDir string
)

// Environment switches (see doc.go).
const (
	envRequire = "BLKREP_REQUIRE_INTEROP"
	envRace    = "BLKREP_INTEROP_RACE"
)

const (
	volumeName  = "r0"
	nodeName    = "alpha"
	defaultSize = 256 << 20

	startTimeout = 15 * time.Second
	// stopTimeout is how long SIGTERM may take with no client in the middle
	// of anything: well under the daemon's own --shutdown-timeout (30s).
	stopTimeout = 10 * time.Second
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	goBin, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop: go not found in PATH:", err)
		return 1
	}
	out, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		fmt.Fprintf(os.Stderr, "interop: cannot find the module root (go env GOMOD: %q, %v)\n", out, err)
		return 1
	}
	moduleDir = filepath.Dir(strings.TrimSpace(string(out)))
	binDir, err := os.MkdirTemp("", "blkrep-interop-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	args := []string{"build", "-o", binDir + string(filepath.Separator)}
	if os.Getenv(envRace) == "1" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/blkrepd", "./cmd/blkrep")
	build := exec.Command(goBin, args...)
	build.Dir = moduleDir
	if os.Getenv(envRace) == "1" {
		build.Env = append(os.Environ(), "CGO_ENABLED=1") // -race needs cgo; the Makefile exports 0
	}
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "interop: go %s failed: %v\n%s", strings.Join(args, " "), err, out)
		return 1
	}
	daemonBin = filepath.Join(binDir, "blkrepd")
	cliBin = filepath.Join(binDir, "blkrep")
	return m.Run()
}

// ---------------------------------------------------------------------------
// Client tools

// tool describes an external client and how to check it is usable.
type tool struct {
	name  string // executable
	pkg   string // Debian package providing it
	probe func() error
}

var tools = map[string]tool{
	"qemu-io": {name: "qemu-io", pkg: "qemu-utils"},
	"nbdinfo": {name: "nbdinfo", pkg: "libnbd-bin"},
	"nbdcopy": {name: "nbdcopy", pkg: "libnbd-bin"},
	"nbdsh": {name: "nbdsh", pkg: "libnbd-bin python3-libnbd", probe: func() error {
		// nbdsh runs on Debian's python3, where python3-libnbd installs
		// the nbd module; a python3 earlier on PATH (pyenv) lacks it.
		out, err := exec.Command("/usr/bin/python3", "-c", "import nbd").CombinedOutput()
		if err != nil {
			return fmt.Errorf("/usr/bin/python3 cannot import nbd: %v: %s", err, bytes.TrimSpace(out))
		}
		return nil
	}},
	"fio": {name: "fio", pkg: "fio", probe: func() error {
		out, err := exec.Command("fio", "--enghelp=nbd").CombinedOutput()
		if err != nil {
			return fmt.Errorf("fio has no nbd ioengine: %v: %s", err, bytes.TrimSpace(out))
		}
		return nil
	}},
}

var (
	toolMu    sync.Mutex
	toolCache = map[string]error{}
)

// requireTools skips the test when a client is missing, or fails it when
// BLKREP_REQUIRE_INTEROP=1.
func requireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		tl, ok := tools[n]
		if !ok {
			t.Fatalf("requireTools: unknown tool %q", n)
		}
		toolMu.Lock()
		err, done := toolCache[n]
		if !done {
			if _, err = exec.LookPath(tl.name); err == nil && tl.probe != nil {
				err = tl.probe()
			}
			toolCache[n] = err
		}
		toolMu.Unlock()
		if err == nil {
			continue
		}
		msg := fmt.Sprintf("%s unusable (Debian package %s; scripts/install-deps.sh test installs it): %v", n, tl.pkg, err)
		if os.Getenv(envRequire) == "1" {
			t.Fatalf("%s=1 but %s", envRequire, msg)
		}
		t.Skip("SKIP: " + msg + " (set " + envRequire + "=1 to make this a failure)")
	}
}

// cmdResult is the outcome of an external command.
type cmdResult struct {
	cmdline        string
	stdout, stderr string
	code           int
	took           time.Duration
}

func (r cmdResult) String() string {
	return fmt.Sprintf("$ %s\nexit %d after %v\n--- stdout\n%s--- stderr\n%s", r.cmdline, r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
}

// runCmd runs a client with a timeout. It fails the test when the command
// cannot start or times out; the exit code is for the caller to judge.
func runCmd(t testing.TB, timeout time.Duration, env []string, name string, args ...string) cmdResult {
	t.Helper()
	return runCmdIn(t, "", timeout, env, name, args...)
}

// runCmdIn is runCmd in directory dir.
func runCmdIn(t testing.TB, dir string, timeout time.Duration, env []string, name string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	start := time.Now()
	err := cmd.Run()
	r := cmdResult{
		cmdline: strings.Join(append(env, shellQuote(append([]string{name}, args...))...), " "),
		stdout:  so.String(), stderr: se.String(), took: time.Since(start),
	}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("timed out after %v:\n%s", timeout, r)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("cannot run %s: %v", name, err)
	}
	return r
}

// mustRun is runCmd asserting exit status 0.
func mustRun(t testing.TB, timeout time.Duration, env []string, name string, args ...string) cmdResult {
	t.Helper()
	r := runCmd(t, timeout, env, name, args...)
	if r.code != 0 {
		t.Fatalf("command failed:\n%s", r)
	}
	return r
}

func shellQuote(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r == '-' || r == '_' || r == '.' || r == '/' || r == '=' || r == ':' || r == ',' ||
				r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
		}) < 0 {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return out
}

// ---------------------------------------------------------------------------
// The daemon under test

// daemonOpts configures startDaemon.
type daemonOpts struct {
	sizeBytes int64 // volume size; 0 means defaultSize
	tcp       bool  // add a node-level nbd_tcp listener on a free 127.0.0.1 port
	// configFrom, when set, is a config file copied verbatim instead of
	// the generated one; it must use the generated one's names (node
	// alpha, volume r0, alpha-r0.img, alpha-r0.sock, alpha.ctl).
	configFrom string
}

// daemon is one blkrepd process with its own directory, config and disk.
type daemon struct {
	dir      string
	cfgPath  string
	sockPath string // the volume's unix socket
	ctlPath  string
	diskPath string
	logPath  string
	tcpAddr  string // 127.0.0.1:PORT, or ""
	size     int64
	opts     daemonOpts

	cmd    *exec.Cmd
	exited chan struct{}
	state  *os.ProcessState
	starts int

	healthSeq int // checkServing's rotating slot
}

// startDaemon starts a fresh blkrepd for the test and stops it (asserting a
// clean exit) when the test ends.
func startDaemon(t testing.TB, o daemonOpts) *daemon {
	t.Helper()
	if o.sizeBytes == 0 {
		o.sizeBytes = defaultSize
	}
	dir := t.TempDir()
	// sun_path holds 107 bytes; long test names make long temp dirs.
	if len(dir)+len("/alpha-r0.sock") > 100 {
		var err error
		if dir, err = os.MkdirTemp("", "blkrep-interop-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	d := &daemon{
		dir: dir, opts: o, size: o.sizeBytes,
		cfgPath:  filepath.Join(dir, "blkrep.toml"),
		sockPath: filepath.Join(dir, "alpha-r0.sock"),
		ctlPath:  filepath.Join(dir, "alpha.ctl"),
		diskPath: filepath.Join(dir, "alpha-r0.img"),
		logPath:  filepath.Join(dir, "blkrepd.log"),
	}
	t.Cleanup(func() {
		// Deferred: stop may end the cleanup with t.Fatal.
		defer func() {
			if t.Failed() {
				d.dumpLog(t)
			}
		}()
		if d.running() {
			d.stop(t)
		}
	})
	d.start(t)
	return d
}

func (d *daemon) writeConfig(t testing.TB) {
	t.Helper()
	if d.opts.configFrom != "" {
		b, err := os.ReadFile(d.opts.configFrom)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(d.cfgPath, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	tcp := ""
	if d.opts.tcp {
		d.tcpAddr = freeTCPAddr(t)
		tcp = fmt.Sprintf("nbd_tcp = %q\n", d.tcpAddr)
	}
	// Relative paths resolve against the config's directory, as in
	// examples/standalone.toml.
	cfg := fmt.Sprintf(`# written by tests/interop
[cluster]
name = "interop"

[[node]]
name = %q
control_socket = "alpha.ctl"
%s
[[volume]]
name = %q
size = "%d"
description = "blkrep interop test volume"

  [[volume.replica]]
  node = %q
  disk = "alpha-r0.img"
  create = true
  nbd_socket = "alpha-r0.sock"
`, nodeName, tcp, volumeName, d.size, nodeName)
	if err := os.WriteFile(d.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

func freeTCPAddr(t testing.TB) string {
	t.Helper()
	return testnet.MustAddr(t)
}

// start launches the daemon (again, after stop: same disk) and waits until
// every socket answers.
func (d *daemon) start(t testing.TB) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		if d.starts == 0 || d.opts.tcp && attempt > 1 {
			d.writeConfig(t)
		}
		err := d.launch(t)
		if err == nil {
			return
		}
		// A free port may be taken between probing and binding.
		if d.opts.tcp && attempt < 5 && strings.Contains(d.log(), "address already in use") {
			t.Logf("TCP port %s taken, retrying with another: %v", d.tcpAddr, err)
			continue
		}
		d.dumpLog(t)
		t.Fatalf("blkrepd did not start: %v", err)
	}
}

func (d *daemon) launch(t testing.TB) error {
	t.Helper()
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.starts++
	fmt.Fprintf(logf, "=== interop: start #%d\n", d.starts)
	cmd := exec.Command(daemonBin, "--config", d.cfgPath, "--node", nodeName, "--log-level", "debug", "--no-devices")
	cmd.Dir = d.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", daemonBin, err)
	}
	d.cmd = cmd
	d.state = nil
	exited := make(chan struct{})
	d.exited = exited
	go func() {
		cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			d.state = cmd.ProcessState
			return fmt.Errorf("blkrepd exited during start: %v", cmd.ProcessState)
		default:
		}
		err := d.probe()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			d.state = cmd.ProcessState
			return fmt.Errorf("sockets not answering after %v: %v", startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// probe checks that the NBD sockets greet and the control socket accepts.
func (d *daemon) probe() error {
	eps := [][2]string{{"unix", d.sockPath}}
	if d.tcpAddr != "" {
		eps = append(eps, [2]string{"tcp", d.tcpAddr})
	}
	for _, ep := range eps {
		if err := probeNBD(ep[0], ep[1]); err != nil {
			return fmt.Errorf("%s %s: %w", ep[0], ep[1], err)
		}
	}
	c, err := net.DialTimeout("unix", d.ctlPath, time.Second)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	c.Close()
	return nil
}

// probeNBD reads the greeting and leaves politely with NBD_OPT_ABORT.
func probeNBD(network, addr string) error {
	c, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	var g [18]byte
	if _, err := io.ReadFull(c, g[:]); err != nil {
		return fmt.Errorf("reading greeting: %w", err)
	}
	if binary.BigEndian.Uint64(g[0:]) != nbdMagic || binary.BigEndian.Uint64(g[8:]) != ihaveOpt {
		return fmt.Errorf("bad greeting % x", g)
	}
	b := binary.BigEndian.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes)
	b = appendOption(b, optAbort, nil)
	if _, err := c.Write(b); err != nil {
		return err
	}
	io.Copy(io.Discard, c) // ACK, then the server closes
	return nil
}

func (d *daemon) running() bool {
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// stop sends SIGTERM and asserts a clean exit: status 0 within stopTimeout,
// sockets removed, no panic or data race in the log.
func (d *daemon) stop(t testing.TB) {
	t.Helper()
	if !d.running() {
		t.Fatalf("blkrepd (pid %d) is not running any more: %v", d.pid(), d.cmd.ProcessState)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	d.waitExit(t, stopTimeout)
	d.assertCleanExit(t)
}

// waitExit waits for the process to end; after timeout it kills it and
// fails the test.
func (d *daemon) waitExit(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-d.exited:
		d.state = d.cmd.ProcessState
		return time.Since(start)
	case <-time.After(timeout):
		d.cmd.Process.Signal(syscall.SIGQUIT) // goroutine dump into the log
		select {
		case <-d.exited:
		case <-time.After(3 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
		d.state = d.cmd.ProcessState
		t.Fatalf("blkrepd did not exit within %v of SIGTERM (sent SIGQUIT; goroutine dump in the log below)", timeout)
		return 0
	}
}

func (d *daemon) assertCleanExit(t testing.TB) {
	t.Helper()
	if d.state == nil || !d.state.Exited() || d.state.ExitCode() != 0 {
		t.Errorf("blkrepd exit status: %v, want exit 0", d.state)
	}
	for _, p := range []string{d.sockPath, d.ctlPath} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("socket %s still exists after shutdown", p)
		}
	}
	log := d.log()
	for _, bad := range []string{"panic:", "WARNING: DATA RACE", "fatal error:"} {
		if strings.Contains(log, bad) {
			t.Errorf("daemon log contains %q", bad)
		}
	}
	// A clean exit leaves clean metadata: the activity log's clean marker,
	// al-clean, not primary; the image is the volume plus the metadata area.
	md, err := d.dumpMD()
	if err != nil {
		t.Errorf("blkrep dump-md after shutdown: %v", err)
		return
	}
	if md.InUse || !md.ActivityLog.Clean || !slices.Contains(md.Flags, "al-clean") || slices.Contains(md.Flags, "primary") {
		t.Errorf("metadata after a clean shutdown: in_use %v, activity log clean %v, flags %v", md.InUse, md.ActivityLog.Clean, md.Flags)
	}
	if st, err := os.Stat(d.diskPath); err != nil || md.Superblock.SizeBytes != d.size || st.Size() != md.Superblock.DeviceBytes {
		t.Errorf("disk %s after shutdown: %v, size %d; metadata for %d exported bytes on %d; want %d exported",
			d.diskPath, err, sizeOf(st), md.Superblock.SizeBytes, md.Superblock.DeviceBytes, d.size)
	}
}

// mdDump mirrors the parts of blkrep.dump-md/v1 the tests read.
type mdDump struct {
	InUse      bool     `json:"in_use"`
	Flags      []string `json:"flags"`
	Superblock struct {
		SizeBytes   int64 `json:"size_bytes"`
		DeviceBytes int64 `json:"device_bytes"`
	} `json:"superblock"`
	ActivityLog struct {
		Clean bool `json:"clean"`
	} `json:"activity_log"`
}

// dumpMD reads the volume's metadata with `blkrep dump-md --json`.
func (d *daemon) dumpMD() (mdDump, error) {
	var md mdDump
	out, err := exec.Command(cliBin, "--config", d.cfgPath, "dump-md", volumeName, "--json").Output()
	if err != nil {
		return md, err
	}
	if err := json.Unmarshal(out, &md); err != nil {
		return md, fmt.Errorf("%v in %s", err, out)
	}
	return md, nil
}

func sizeOf(st os.FileInfo) int64 {
	if st == nil {
		return -1
	}
	return st.Size()
}

// restart stops (asserting a clean exit) and starts again on the same disk.
func (d *daemon) restart(t testing.TB) {
	t.Helper()
	d.stop(t)
	d.start(t)
}

func (d *daemon) log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

func (d *daemon) dumpLog(t testing.TB) {
	t.Helper()
	log := d.log()
	const max = 64 << 10
	if len(log) > max {
		log = "...(truncated)...\n" + log[len(log)-max:]
	}
	t.Logf("blkrepd log (%s):\n%s", d.logPath, log)
}

// alive fails the test if the daemon died.
func (d *daemon) alive(t testing.TB) {
	t.Helper()
	if !d.running() {
		t.Fatalf("blkrepd died: %v", d.cmd.ProcessState)
	}
}

func (d *daemon) unixURI() string {
	return "nbd+unix:///" + volumeName + "?socket=" + d.sockPath
}

// tcpURI is the volume's URI on the node's TCP listener (daemonOpts.tcp).
func (d *daemon) tcpURI() string {
	return "nbd://" + d.tcpAddr + "/" + volumeName
}

// ioStats mirrors the io object of blkrep.status/v1.
type ioStats struct {
	Clients      int64  `json:"clients"`
	TotalClients uint64 `json:"total_clients"`
	Reads        uint64 `json:"reads"`
	Writes       uint64 `json:"writes"`
	Flushes      uint64 `json:"flushes"`
	Trims        uint64 `json:"trims"`
	WriteZeroes  uint64 `json:"write_zeroes"`
	Caches       uint64 `json:"caches"`
	BlockStatus  uint64 `json:"block_status"`
	BytesRead    uint64 `json:"bytes_read"`
	BytesWritten uint64 `json:"bytes_written"`
	Errors       uint64 `json:"errors"`
}

// stats reads the volume's counters through `blkrep status --json`.
func (d *daemon) stats(t testing.TB) ioStats {
	t.Helper()
	r := mustRun(t, 15*time.Second, nil, cliBin, "--config", d.cfgPath, "--node", nodeName, "status", "--json")
	var st struct {
		Schema  string `json:"schema"`
		PID     int    `json:"pid"`
		Volumes []struct {
			Name      string  `json:"name"`
			SizeBytes int64   `json:"size_bytes"`
			IO        ioStats `json:"io"`
		} `json:"volumes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r)
	}
	if st.Schema != "blkrep.status/v1" {
		t.Fatalf("status schema %q, want blkrep.status/v1", st.Schema)
	}
	if st.PID != d.pid() {
		t.Fatalf("status pid %d, want %d", st.PID, d.pid())
	}
	for _, v := range st.Volumes {
		if v.Name == volumeName {
			if v.SizeBytes != d.size {
				t.Fatalf("status size_bytes %d, want %d", v.SizeBytes, d.size)
			}
			return v.IO
		}
	}
	t.Fatalf("status has no volume %q:\n%s", volumeName, r.stdout)
	return ioStats{}
}

// waitClients waits until the daemon counts n connected clients (clients
// disconnect asynchronously from the server's point of view).
func (d *daemon) waitClients(t testing.TB, n int64) ioStats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := d.stats(t)
		if st.Clients == n {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon reports %d connected clients, want %d", st.Clients, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procStatus returns a field (in kB) of /proc/PID/status.
func (d *daemon) procStatus(t testing.TB, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("/proc status %s: %q", field, v)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/status has no %s", d.pid(), field)
	return 0
}

// fdCount is the number of open file descriptors of the daemon.
func (d *daemon) fdCount(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.pid()))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitFDs waits until the daemon has at most n descriptors open: a
// connection the client abandoned must be closed by the server too.
func (d *daemon) waitFDs(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := d.fdCount(t)
		if got <= n {
			return
		}
		if time.Now().After(deadline) {
			ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.pid()))
			var links []string
			for _, e := range ents {
				l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", d.pid(), e.Name()))
				links = append(links, e.Name()+"->"+l)
			}
			t.Fatalf("daemon holds %d file descriptors, want <= %d (leaked connections?): %v", got, n, links)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkServing connects a fresh client, writes 64 KiB of random data with
// FUA, reads it back and disconnects: the daemon still serves correctly.
func (d *daemon) checkServing(t testing.TB) {
	t.Helper()
	d.alive(t)
	const slot = 64 << 10
	off := uint64(d.size) - 8<<20 + uint64(d.healthSeq%128)*slot
	d.healthSeq++
	s := d.connect(t, sessionOpts{structured: true, blockSize: true})
	defer s.close()
	want := randBytes(t, slot)
	if e := s.pwrite(off, want, cmdFlagFUA); e != 0 {
		t.Fatalf("health check: write at %d: errno %d", off, e)
	}
	got, e := s.pread(off, slot, 0)
	if e != 0 {
		t.Fatalf("health check: read at %d: errno %d", off, e)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("health check: read back differs at offset %d", off+uint64(firstDiff(got, want)))
	}
	s.disconnect()
}

// readDisk reads the backing file directly (through the page cache, so it
// sees every write the daemon has made).
func (d *daemon) readDisk(t testing.TB, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(d.diskPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("reading %s at %d: %v", d.diskPath, off, err)
	}
	return b
}

func (d *daemon) diskSize(t testing.TB) int64 {
	t.Helper()
	st, err := os.Stat(d.diskPath)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// diskFileSize is what the image file must stay: the volume plus its
// internal metadata area, as the daemon created it.
func (d *daemon) diskFileSize(t testing.TB) int64 {
	t.Helper()
	md, err := d.dumpMD()
	if err != nil || md.Superblock.DeviceBytes <= d.size {
		t.Fatalf("blkrep dump-md: %v (device bytes %d)", err, md.Superblock.DeviceBytes)
	}
	return md.Superblock.DeviceBytes
}

// ---------------------------------------------------------------------------
// Small helpers

func randBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func fill(n int, v byte) []byte {
	return bytes.Repeat([]byte{v}, n)
}

// firstDiff returns the index of the first differing byte, or -1.
func firstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return n
	}
	return -1
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
