package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	sysPorts     = "/sys/class/virtio-ports"
	portWait     = 30 * time.Second       // for the port to appear at start
	portPoll     = 100 * time.Millisecond // how often to look meanwhile
	reopenPause  = 200 * time.Millisecond // after the host side went away
	reopenRetry  = time.Second            // when reopening fails
	maxReadBytes = 64 << 20
)

func serveCmd(args []string, stderr io.Writer) int {
	fs := newFlags("serve")
	name := fs.String("port", "blkrep.agent", "")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return usageErr(stderr, "serve", "%v", err)
	}
	if len(pos) > 0 {
		return usageErr(stderr, "serve", "unexpected argument %q", pos[0])
	}
	logf := log.New(stderr, "blkrep-agent: ", log.Lmicroseconds).Printf
	port, err := openPort(sysPorts, *name, portWait)
	if err != nil {
		logf("%v", err)
		return 1
	}
	s := newServer(logf)
	s.serve(port, func() io.ReadWriteCloser { return reopenPort(*name, logf) })
	return 0 // not reached: serve never returns
}

// openPort opens the virtio-serial port called name, waiting up to wait
// for it to show up in sysDir.
func openPort(sysDir, name string, wait time.Duration) (*os.File, error) {
	deadline := time.Now().Add(wait)
	for {
		dir, err := findPort(sysDir, name)
		if err == nil {
			dev := "/dev/" + dir
			if err := ensureDevNode(dev, filepath.Join(sysDir, dir, "dev")); err != nil {
				return nil, err
			}
			return os.OpenFile(dev, os.O_RDWR, 0)
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(portPoll)
	}
}

// findPort returns the sysfs directory name (also the device name, e.g.
// vport1p1) of the port whose name file says name.
func findPort(sysDir, name string) (string, error) {
	files, _ := filepath.Glob(filepath.Join(sysDir, "*", "name"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return filepath.Base(filepath.Dir(f)), nil
		}
	}
	return "", fmt.Errorf("no virtio-serial port named %q in %s", name, sysDir)
}

// ensureDevNode creates the device node from sysfs' MAJ:MIN when /dev has
// none: the guests have no udev, and /dev may not be a devtmpfs.
func ensureDevNode(dev, sysDev string) error {
	if _, err := os.Stat(dev); err == nil {
		return nil
	}
	b, err := os.ReadFile(sysDev)
	if err != nil {
		return fmt.Errorf("%s missing and %v", dev, err)
	}
	maj, min, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("%s: bad device number %q", sysDev, b)
	}
	if err := unix.Mknod(dev, unix.S_IFCHR|0o600, int(unix.Mkdev(uint32(ma), uint32(mi)))); err != nil {
		return fmt.Errorf("mknod %s: %w", dev, err)
	}
	return nil
}

// reopenPort opens the port again, retrying until it succeeds: the agent
// never gives up on its host.
func reopenPort(name string, logf func(string, ...any)) io.ReadWriteCloser {
	last := ""
	for {
		f, err := openPort(sysPorts, name, 0)
		if err == nil {
			return f
		}
		if err.Error() != last { // once per distinct problem, not every second
			logf("reopen: %v (retrying)", err)
			last = err.Error()
		}
		time.Sleep(reopenRetry)
	}
}

// server answers requests. Requests outlive the connection they came on:
// a reply goes to whichever port is open when it is ready.
type server struct {
	logf func(string, ...any)

	mu   sync.Mutex // held while writing a line, so lines are whole
	cond *sync.Cond // signalled when port changes
	port io.Writer  // nil while reopening
	gen  uint64     // counts the ports opened

	jobsMu sync.Mutex
	jobs   map[uint64]*job // running commands by request id
}

// job is a running command, for signal requests.
type job struct {
	started chan struct{} // closed once pgid is set, or the start failed
	pgid    int           // 0 if the command did not start
}

func newServer(logf func(string, ...any)) *server {
	s := &server{logf: logf, jobs: map[uint64]*job{}}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// serve reads requests from port; when the host side goes away it
// reopens the port with reopen. It never returns.
func (s *server) serve(port io.ReadWriteCloser, reopen func() io.ReadWriteCloser) {
	for {
		s.attach(port)
		s.readRequests(port)
		// A virtio port reads EOF at once while no host is connected:
		// pause rather than spin.
		time.Sleep(reopenPause)
		port.Close() // also fails a reply blocked on it, which then waits for the next port
		s.mu.Lock()
		s.port = nil
		s.mu.Unlock()
		port = reopen()
	}
}

type hello struct {
	Hello  string  `json:"hello"`
	Kernel string  `json:"kernel"`
	Uptime float64 `json:"uptime"`
}

// attach makes port the reply port and greets the host first on it. (On
// a virtio port the write blocks until the host connects.)
func (s *server) attach(port io.Writer) {
	line := encode(hello{Hello: "blkrep-agent", Kernel: kernelRelease(), Uptime: uptime()})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.port = port
	s.gen++
	s.cond.Broadcast()
	if _, err := port.Write(line); err != nil {
		s.logf("hello: %v", err)
	}
}

func kernelRelease() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func uptime() float64 {
	b, _ := os.ReadFile("/proc/uptime")
	f, _ := strconv.ParseFloat(strings.Fields(string(b) + " 0")[0], 64)
	return f
}

func (s *server) readRequests(r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n') // a partial line at the end is dropped
		if err == io.EOF {
			s.logf("port: host disconnected")
			return
		}
		if err != nil {
			s.logf("port: %v", err)
			return
		}
		if line = bytes.TrimSpace(line); len(line) > 0 {
			s.dispatch(line)
		}
	}
}

// request is any of the three requests; exactly one of Cmd, Signal and
// Read is set.
type request struct {
	ID uint64 `json:"id"`

	Cmd       *string `json:"cmd"`
	Stdin     []byte  `json:"stdin"` // base64 in JSON
	TimeoutMS uint64  `json:"timeout_ms"`
	Stream    bool    `json:"stream"`

	Signal *uint64 `json:"signal"`
	Sig    int     `json:"sig"`

	Read   *string `json:"read"`
	Offset int64   `json:"offset"`
	Length int64   `json:"length"`
}

// done is the final reply to a request.
type done struct {
	ID    uint64  `json:"id"`
	Done  bool    `json:"done"`
	Code  int     `json:"code"`
	Out   *string `json:"out,omitempty"`
	Error string  `json:"error,omitempty"`
	Data  []byte  `json:"data,omitempty"`
}

// dispatch parses a request and starts it. A command is registered before
// the next line is read, so a signal request sent after it finds it.
func (s *server) dispatch(line []byte) {
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		// Answer the request that failed if its id is readable at all.
		var id struct {
			ID uint64 `json:"id"`
		}
		_ = json.Unmarshal(line, &id)
		go s.fail(id.ID, "bad request: %v", err)
		return
	}
	n := 0
	for _, set := range []bool{req.Cmd != nil, req.Signal != nil, req.Read != nil} {
		if set {
			n++
		}
	}
	switch {
	case n != 1:
		go s.fail(req.ID, "bad request: want exactly one of cmd, signal and read")
	case req.Cmd != nil:
		j, err := s.register(req.ID)
		if err != nil {
			go s.fail(req.ID, "%v", err)
			return
		}
		go s.runCmd(req, j)
	case req.Signal != nil:
		go s.signal(req.ID, *req.Signal, req.Sig)
	default:
		go s.read(req.ID, *req.Read, req.Offset, req.Length)
	}
}

func (s *server) register(id uint64) (*job, error) {
	s.jobsMu.Lock()
	defer s.jobsMu.Unlock()
	if s.jobs[id] != nil {
		return nil, fmt.Errorf("request %d is already running", id)
	}
	j := &job{started: make(chan struct{})}
	s.jobs[id] = j
	return j, nil
}

func (s *server) unregister(id uint64) {
	s.jobsMu.Lock()
	delete(s.jobs, id)
	s.jobsMu.Unlock()
}

func (s *server) signal(id, target uint64, sig int) {
	s.jobsMu.Lock()
	j := s.jobs[target]
	s.jobsMu.Unlock()
	if j == nil {
		s.fail(id, "no running request %d", target)
		return
	}
	<-j.started
	if j.pgid == 0 {
		s.fail(id, "request %d did not start", target)
		return
	}
	if err := syscall.Kill(-j.pgid, syscall.Signal(sig)); err != nil {
		s.fail(id, "signal %d to request %d: %v", sig, target, err)
		return
	}
	s.send(done{ID: id, Done: true})
}

func (s *server) read(id uint64, path string, off, n int64) {
	data, err := readAt(path, off, n)
	if err != nil {
		s.fail(id, "%v", err)
		return
	}
	s.send(done{ID: id, Done: true, Data: data})
}

// readAt reads n bytes at off of path, fewer at its end. It goes through
// the page cache.
func readAt(path string, off, n int64) ([]byte, error) {
	if off < 0 || n < 0 {
		return nil, fmt.Errorf("read %s: negative offset or length", path)
	}
	if n > maxReadBytes {
		return nil, fmt.Errorf("read %s: length %d over the limit of %d", path, n, maxReadBytes)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, n)
	got, err := f.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return nil, err
	}
	return buf[:got], nil
}

func (s *server) fail(id uint64, format string, args ...any) {
	s.send(done{ID: id, Done: true, Code: -1, Error: fmt.Sprintf(format, args...)})
}

// send writes one message as one line. If the port fails, the line is
// written again, whole, on the next port: the host drops a partial line
// when it disconnects.
func (s *server) send(msg any) {
	line := encode(msg)
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		for s.port == nil {
			s.cond.Wait()
		}
		gen := s.gen
		_, err := s.port.Write(line)
		if err == nil {
			return
		}
		s.logf("reply: %v (sent again on the next connection)", err)
		for s.gen == gen {
			s.cond.Wait()
		}
	}
}

// encode is one JSON line; HTML characters are left alone, shell output
// is full of them.
func encode(msg any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(msg); err != nil {
		panic(err) // only our own types are encoded
	}
	return b.Bytes()
}
