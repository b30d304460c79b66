package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/clustertest"
)

// msg is any message of the agent.
type msg struct {
	ID     uint64
	Hello  string
	Kernel string
	Uptime float64
	Line   *string
	T      int64
	Done   bool
	Code   int
	Out    *string
	Error  string
	Data   []byte
}

// host is the test's side of the port: it reads the agent's messages and
// files them by request id.
type host struct {
	t    *testing.T
	conn net.Conn

	mu     sync.Mutex
	cond   *sync.Cond
	byID   map[uint64][]msg
	hellos []msg
	closed bool
}

func newHost(t *testing.T, conn net.Conn) *host {
	h := &host{t: t, conn: conn, byID: map[uint64][]msg{}}
	h.cond = sync.NewCond(&h.mu)
	go h.readLoop()
	return h
}

func (h *host) readLoop() {
	sc := bufio.NewScanner(h.conn)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var m msg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			h.t.Errorf("agent sent %q: %v", sc.Text(), err)
			continue
		}
		h.mu.Lock()
		if m.Hello != "" {
			h.hellos = append(h.hellos, m)
		} else {
			h.byID[m.ID] = append(h.byID[m.ID], m)
		}
		h.cond.Broadcast()
		h.mu.Unlock()
	}
	h.mu.Lock()
	h.closed = true
	h.cond.Broadcast()
	h.mu.Unlock()
}

func (h *host) send(line string) {
	h.t.Helper()
	if _, err := io.WriteString(h.conn, line+"\n"); err != nil {
		h.t.Fatalf("send: %v", err)
	}
}

// wait returns the messages of id up to its final reply.
func (h *host) wait(id uint64, timeout time.Duration) []msg {
	h.t.Helper()
	timer := time.AfterFunc(timeout, func() {
		h.mu.Lock()
		h.cond.Broadcast()
		h.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		if ms := h.byID[id]; len(ms) > 0 && ms[len(ms)-1].Done {
			return ms
		}
		if h.closed || time.Now().After(deadline) {
			h.t.Fatalf("no reply to request %d (have %+v)", id, h.byID[id])
		}
		h.cond.Wait()
	}
}

// done waits for the final reply of id.
func (h *host) done(id uint64, timeout time.Duration) msg {
	ms := h.wait(id, timeout)
	return ms[len(ms)-1]
}

// waitHello waits for the agent's hello and checks it.
func (h *host) waitHello(n int) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		got := len(h.hellos)
		var m msg
		if got > 0 {
			m = h.hellos[got-1]
		}
		h.mu.Unlock()
		if got >= n {
			if m.Hello != "blkrep-agent" || m.Kernel == "" || m.Uptime <= 0 {
				h.t.Errorf("hello %+v", m)
			}
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%d hello messages, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startServer runs a server on a pipe; reconnect hands it further pipes.
// The server outlives the test (it never returns); its logging stops with
// the test.
func startServer(t *testing.T) (h *host, reconnect func() *host) {
	var mu sync.Mutex
	live := true
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if live {
			t.Logf(format, args...)
		}
	}
	// connect starts the host on its end of a pipe.
	connect := func(hostEnd net.Conn) *host {
		t.Cleanup(func() {
			mu.Lock()
			live = false
			mu.Unlock()
			hostEnd.Close()
		})
		return newHost(t, hostEnd)
	}
	ports := make(chan net.Conn)
	agentEnd, hostEnd := net.Pipe()
	go newServer(logf).serve(agentEnd, func() io.ReadWriteCloser { return <-ports })
	h = connect(hostEnd)
	h.waitHello(1)
	reconnect = func() *host {
		agentEnd, hostEnd := net.Pipe()
		ports <- agentEnd
		h := connect(hostEnd)
		h.waitHello(1)
		return h
	}
	return h, reconnect
}

func TestServeCommands(t *testing.T) {
	h, _ := startServer(t)
	stdin := []byte("from stdin\n")
	h.send(`{"id":1,"cmd":"echo out; echo err >&2; exit 3"}`)
	h.send(fmt.Sprintf(`{"id":2,"cmd":"cat; pwd; echo $PATH","stdin":%q}`, stdinB64(stdin)))
	h.send(`{"id":3,"cmd":"echo a; echo b; printf c","stream":true}`)
	h.send(`{"id":4,"cmd":"sleep 10","timeout_ms":200}`)
	h.send(`{"id":5,"cmd":"/nonexistent/x"}`)

	if m := h.done(1, 5*time.Second); m.Code != 3 || m.Out == nil || *m.Out != "out\nerr\n" || m.Error != "" {
		t.Errorf("exit 3: %+v", m)
	}
	want := "from stdin\n/\n/usr/sbin:/usr/bin:/sbin:/bin\n"
	if m := h.done(2, 5*time.Second); m.Code != 0 || m.Out == nil || *m.Out != want {
		t.Errorf("stdin, cwd, PATH: got %+v, want out %q", m, want)
	}
	ms := h.wait(3, 5*time.Second)
	var lines []string
	for _, m := range ms[:len(ms)-1] {
		if m.Line == nil || m.T == 0 {
			t.Errorf("stream message %+v", m)
			continue
		}
		lines = append(lines, *m.Line)
	}
	if strings.Join(lines, "|") != "a|b|c" || ms[len(ms)-1].Out != nil || ms[len(ms)-1].Code != 0 {
		t.Errorf("stream: lines %q, final %+v", lines, ms[len(ms)-1])
	}
	if m := h.done(4, 5*time.Second); m.Code != -1 || m.Error != "timeout after 200ms" {
		t.Errorf("timeout: %+v", m)
	}
	if m := h.done(5, 5*time.Second); m.Code != 127 {
		t.Errorf("missing program: %+v", m)
	}
}

func stdinB64(b []byte) string {
	j, _ := json.Marshal(b)
	return strings.Trim(string(j), `"`)
}

// A background process that redirected its output does not hold the
// command; one that did not holds it for waitDelay only.
func TestServeBackground(t *testing.T) {
	h, _ := startServer(t)
	start := time.Now()
	h.send(`{"id":1,"cmd":"sleep 3 >/dev/null 2>&1 & echo started"}`)
	m := h.done(1, 5*time.Second)
	if m.Code != 0 || *m.Out != "started\n" || time.Since(start) > time.Second {
		t.Errorf("redirected background child: %+v after %v", m, time.Since(start))
	}
	start = time.Now()
	h.send(`{"id":2,"cmd":"sleep 4 & echo started"}`)
	m = h.done(2, 5*time.Second)
	if d := time.Since(start); m.Code != 0 || *m.Out != "started\n" || d < waitDelay || d > waitDelay+time.Second {
		t.Errorf("background child holding the pipe: %+v after %v", m, d)
	}
}

func TestServeSignal(t *testing.T) {
	h, _ := startServer(t)
	h.send(`{"id":1,"cmd":"sleep 10; echo not reached","stream":true}`)
	h.send(`{"id":2,"signal":1,"sig":15}`)
	if m := h.done(2, 5*time.Second); m.Code != 0 || m.Error != "" {
		t.Errorf("signal reply: %+v", m)
	}
	if m := h.done(1, 5*time.Second); m.Code != -1 || !strings.Contains(m.Error, "signal 15") {
		t.Errorf("signalled command: %+v", m)
	}
	h.send(`{"id":3,"signal":1,"sig":9}`)
	if m := h.done(3, 5*time.Second); m.Code != -1 || m.Error != "no running request 1" {
		t.Errorf("signal to a finished request: %+v", m)
	}
}

func TestServeRead(t *testing.T) {
	h, _ := startServer(t)
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.send(fmt.Sprintf(`{"id":1,"read":%q,"offset":2,"length":3}`, path))
	h.send(fmt.Sprintf(`{"id":2,"read":%q,"offset":8,"length":100}`, path))
	h.send(fmt.Sprintf(`{"id":3,"read":%q,"offset":0,"length":%d}`, path, maxReadBytes+1))
	h.send(`{"id":4,"read":"/nonexistent","length":1}`)
	if m := h.done(1, 5*time.Second); m.Code != 0 || string(m.Data) != "234" {
		t.Errorf("read: %+v", m)
	}
	if m := h.done(2, 5*time.Second); m.Code != 0 || string(m.Data) != "89" {
		t.Errorf("short read at the end: %+v", m)
	}
	for _, id := range []uint64{3, 4} {
		if m := h.done(id, 5*time.Second); m.Code != -1 || m.Error == "" {
			t.Errorf("request %d: %+v, want an error", id, m)
		}
	}
}

func TestServeBadRequests(t *testing.T) {
	h, _ := startServer(t)
	h.send(`{"id":`)
	if m := h.done(0, 5*time.Second); m.Code != -1 || !strings.HasPrefix(m.Error, "bad request: ") {
		t.Errorf("malformed JSON: %+v", m)
	}
	h.send(`{"id":7,"timeout_ms":-1,"cmd":"true"}`)
	h.send(`{"id":8,"cmd":"true","read":"/x"}`)
	h.send(`{"id":9}`)
	for _, id := range []uint64{7, 8, 9} {
		if m := h.done(id, 5*time.Second); m.Code != -1 || !strings.HasPrefix(m.Error, "bad request: ") {
			t.Errorf("request %d: %+v", id, m)
		}
	}
	h.send(`{"id":10,"cmd":"sleep 1"}`)
	h.send(`{"id":10,"cmd":"true"}`)
	if m := h.done(10, 5*time.Second); m.Code != -1 || !strings.Contains(m.Error, "already running") {
		t.Errorf("duplicate id: %+v", m)
	}
}

// A command outlives the connection it came on: its reply goes to the
// next one, after the hello.
func TestServeReconnect(t *testing.T) {
	h, reconnect := startServer(t)
	h.send(`{"id":1,"cmd":"sleep 0.5; echo late"}`)
	h.send(`{"id":2,"cmd":"echo a; sleep 0.5; echo b","stream":true}`)
	// Ready while the agent pauses before reopening: its write fails.
	h.send(`{"id":4,"cmd":"sleep 0.2; echo mid"}`)
	time.Sleep(100 * time.Millisecond)
	h.conn.Close()
	h2 := reconnect()
	if m := h2.done(4, 5*time.Second); m.Code != 0 || *m.Out != "mid\n" {
		t.Errorf("reply sent again after reconnecting: %+v", m)
	}
	if m := h2.done(1, 5*time.Second); m.Code != 0 || *m.Out != "late\n" {
		t.Errorf("reply after reconnecting: %+v", m)
	}
	if ms := h2.wait(2, 5*time.Second); len(ms) != 2 || *ms[0].Line != "b" {
		t.Errorf("stream after reconnecting: %+v", ms)
	}
	h2.send(`{"id":3,"cmd":"echo again"}`)
	if m := h2.done(3, 5*time.Second); *m.Out != "again\n" {
		t.Errorf("request on the new connection: %+v", m)
	}
}

func TestCappedOutput(t *testing.T) {
	var c capped
	c.Write(bytes.Repeat([]byte("x"), maxOut-1))
	c.Write([]byte("yz"))
	if s := c.String(); len(s) != maxOut+len("\n[output truncated]") || !strings.HasSuffix(s, "y\n[output truncated]") {
		t.Errorf("capped output ends %q", s[len(s)-30:])
	}
}

func TestFindPort(t *testing.T) {
	dir := t.TempDir()
	for name, port := range map[string]string{"vport1p1": "org.qemu.guest_agent.0", "vport1p2": "blkrep.agent"} {
		os.MkdirAll(filepath.Join(dir, name), 0o755)
		os.WriteFile(filepath.Join(dir, name, "name"), []byte(port+"\n"), 0o644)
	}
	if got, err := findPort(dir, "blkrep.agent"); got != "vport1p2" || err != nil {
		t.Errorf("findPort = %q, %v", got, err)
	}
	if _, err := findPort(dir, "other"); err == nil {
		t.Error("findPort found a port that does not exist")
	}
}

func TestWriteFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sub")
	var out, errOut bytes.Buffer
	if code := writeFilesCmd([]string{dir, "3", "10000", "--seed", "7"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("output %q", out.String())
	}
	for i, line := range lines {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "file" || f[1] != fmt.Sprintf("f%04d", i) {
			t.Fatalf("line %q", line)
		}
		b, err := os.ReadFile(filepath.Join(dir, f[1]))
		sum := sha256.Sum256(b)
		if err != nil || len(b) != 10000 || hex.EncodeToString(sum[:]) != f[2] {
			t.Errorf("%s: %d bytes, %v, sum %x, printed %s", f[1], len(b), err, sum, f[2])
		}
	}
	// The same seed gives the same files.
	var again bytes.Buffer
	writeFilesCmd([]string{"--seed", "7", filepath.Join(t.TempDir(), "x"), "3", "10000"}, &again, io.Discard)
	if again.String() != out.String() || lines[0] == lines[1] {
		t.Errorf("seed 7 twice:\n%s\n%s", out.String(), again.String())
	}
}

// ackWatcher sends stop on the line "ack N".
type ackWatcher struct {
	bytes.Buffer
	stopAt string
	stop   chan os.Signal
}

func (w *ackWatcher) Write(p []byte) (int, error) {
	if string(p) == w.stopAt {
		w.stop <- syscall.SIGTERM
	}
	return w.Buffer.Write(p)
}

func TestWriterAndReadBlocks(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "disk")
	const blocks = 16
	if err := os.WriteFile(dev, make([]byte, blocks*clustertest.BlockSize), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(stopAt string, args ...string) *ackWatcher {
		t.Helper()
		w := &ackWatcher{stopAt: stopAt, stop: make(chan os.Signal, 1)}
		var errOut bytes.Buffer
		args = append([]string{dev, "--node", "alpha", "--blocks", strconv.Itoa(blocks), "--no-direct"}, args...)
		if code := writerCmd(args, w, &errOut, w.stop); code != 0 {
			t.Fatalf("writer %q: exit %d: %s", args, code, errOut.String())
		}
		return w
	}

	out := run("", "--seed", "1", "--count", "40").String()
	// Per offset, the last acknowledged write.
	last := map[int64][2]int64{}
	var seq uint64
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		switch {
		case f[0] == "issue" && len(f) == 4:
			seq++
			off, _ := strconv.ParseInt(f[2], 10, 64)
			at, _ := strconv.ParseInt(f[3], 10, 64)
			if f[1] != strconv.FormatUint(seq, 10) || off%clustertest.BlockSize != 0 || off >= blocks*clustertest.BlockSize {
				t.Fatalf("line %q after seq %d", line, seq-1)
			}
			last[off] = [2]int64{int64(seq), at}
		case line == fmt.Sprintf("ack %d", seq):
		case line == "stopped 40" && seq == 40:
		default:
			t.Fatalf("unexpected line %q (seq %d)", line, seq)
		}
	}

	var blockOut, errOut bytes.Buffer
	if code := readBlocksCmd([]string{dev, strconv.Itoa(blocks + 1)}, &blockOut, &errOut); code != 0 {
		t.Fatalf("readblocks: exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(blockOut.String()), "\n")
	if len(lines) != blocks+1 {
		t.Fatalf("readblocks printed %d lines", len(lines))
	}
	for i, line := range lines[:blocks] {
		want := fmt.Sprintf("%d zero", i)
		if w, ok := last[int64(i)*clustertest.BlockSize]; ok {
			want = fmt.Sprintf("%d tag %d %d %d alpha", i, w[0], i*clustertest.BlockSize, w[1])
		}
		if line != want {
			t.Errorf("block %d: %q, want %q", i, line, want)
		}
	}
	if !strings.HasPrefix(lines[blocks], fmt.Sprintf("%d bad short read", blocks)) {
		t.Errorf("past the end: %q", lines[blocks])
	}

	// A damaged block is reported, and readblocks still succeeds.
	f, _ := os.OpenFile(dev, os.O_RDWR, 0)
	f.WriteAt([]byte("garbage"), 3*clustertest.BlockSize)
	f.Close()
	blockOut.Reset()
	readBlocksCmd([]string{dev, "4"}, &blockOut, io.Discard)
	if l := strings.Split(blockOut.String(), "\n")[3]; !strings.HasPrefix(l, "3 bad ") {
		t.Errorf("damaged block: %q", l)
	}

	// SIGTERM: the write in progress finishes, then "stopped".
	if out := run("ack 3\n").String(); !strings.HasSuffix(out, "ack 3\nstopped 3\n") {
		t.Errorf("stopped by a signal:\n%s", out)
	}
	if out := run("", "--duration", "50ms").String(); !strings.Contains(out, "\nstopped ") {
		t.Errorf("--duration:\n%s", out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"writer", "/dev/null", "--blocks", "4"},
		{"writer", "/dev/null", "--node", "a"},
		{"writer", "--node", "a", "--blocks", "4"},
		{"writer", "/dev/null", "--node", "a b", "--blocks", "4"},
		{"writer", "/dev/null", "--node", "a", "--blocks", "4", "--bogus"},
		{"writefiles", "/tmp/x", "3"},
		{"writefiles", "/tmp/x", "three", "10"},
		{"readblocks", "/dev/null"},
		{"readblocks", "/dev/null", "-1"},
		{"serve", "extra"},
	} {
		var code int
		var errOut bytes.Buffer
		switch args[0] {
		case "writer":
			code = writerCmd(args[1:], io.Discard, &errOut, nil)
		case "writefiles":
			code = writeFilesCmd(args[1:], io.Discard, &errOut)
		case "readblocks":
			code = readBlocksCmd(args[1:], io.Discard, &errOut)
		case "serve":
			code = serveCmd(args[1:], &errOut)
		}
		if code != 2 || !strings.HasPrefix(errOut.String(), "blkrep-agent "+args[0]+": ") {
			t.Errorf("%q: exit %d, %q", args, code, errOut.String())
		}
	}
}
