package qemu

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/testnet"
)

// Image is a guest kernel and initramfs built by scripts/vm-image.sh.
type Image struct {
	Series, Version string
	Kernel, Initrd  string
}

var (
	imagesOnce sync.Once
	images     map[string]Image
	imagesErr  error
)

// image returns the guest image of a kernel series ("6.1" or "6.12"),
// building both the first time (the script skips what is up to date).
func image(t *testing.T, series string) Image {
	t.Helper()
	imagesOnce.Do(func() {
		images, imagesErr = buildImages()
	})
	if imagesErr != nil {
		t.Fatalf("building the guest images: %v", imagesErr)
	}
	img, ok := images[series]
	if !ok {
		t.Fatalf("no guest image for kernel %s", series)
	}
	return img
}

func buildImages() (map[string]Image, error) {
	root, err := filepath.Abs("../..")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("bash", filepath.Join(root, "scripts/vm-image.sh"), "6.1", "6.12")
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("scripts/vm-image.sh: %w", err)
	}
	m := map[string]Image{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 5 && f[0] == "image" {
			m[f[1]] = Image{Series: f[1], Version: f[2], Kernel: f[3], Initrd: f[4]}
		}
	}
	return m, nil
}

// Cluster is a set of guests on one virtual Ethernet segment: a hub in
// this process forwards every frame a guest sends (a UDP datagram from its
// QEMU) to all the others. Nothing leaves 127.0.0.1.
type Cluster struct {
	t     *testing.T
	img   Image
	dir   string
	hub   *hub
	nodes []*Node
	// sizeMiB is the replicated volume's size (see replicated).
	sizeMiB int
}

// NodeOptions size a guest.
type NodeOptions struct {
	MemoryMiB int // default 384
	// DataMiB is the size of /dev/vdb, the raw disk blkrepd replicates (0:
	// none, e.g. a witness).
	DataMiB int
}

// Node is one guest. IP is its address on the segment (192.0.2.N/24, a
// documentation range). /dev/vda is its state disk: an ext4 file system
// mounted at /var/lib/blkrep that survives power loss, like a root disk.
type Node struct {
	c        *Cluster
	Name, IP string
	opts     NodeOptions
	mac      string
	port     int // the UDP port of its NIC
	Data     string
	state    string
	serial   string
	qmpPath  string
	agentSoc string

	mu      sync.Mutex
	qemu    *exec.Cmd
	exited  chan struct{}
	agent   *agentConn
	boots   int
	stopped bool
}

// NewCluster makes an empty cluster booting img; everything is torn down
// when the test ends, and if it failed the serial log of every guest is
// printed.
func NewCluster(t *testing.T, img Image) *Cluster {
	t.Helper()
	h, err := newHub()
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, img: img, dir: t.TempDir(), hub: h}
	t.Cleanup(c.close)
	return c
}

// AddNode declares a guest; Start boots it.
func (c *Cluster) AddNode(name string, o NodeOptions) *Node {
	c.t.Helper()
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 384
	}
	if o.MemoryMiB > 512 {
		c.t.Fatalf("%s: %d MiB: guests have at most 512 MiB", name, o.MemoryMiB)
	}
	i := len(c.nodes) + 1
	n := &Node{
		c: c, Name: name, opts: o,
		IP:       fmt.Sprintf("192.0.2.%d", i),
		mac:      fmt.Sprintf("52:54:00:b1:00:%02x", i),
		state:    filepath.Join(c.dir, name+"-state.raw"),
		serial:   filepath.Join(c.dir, name+"-serial.log"),
		qmpPath:  filepath.Join(c.dir, name+".qmp"),
		agentSoc: filepath.Join(c.dir, name+".agent"),
	}
	if o.DataMiB > 0 {
		n.Data = filepath.Join(c.dir, name+"-data.raw")
		mustTruncate(c.t, n.Data, int64(o.DataMiB)<<20)
	}
	mustTruncate(c.t, n.state, 16<<20)
	port, err := c.hub.add(n)
	if err != nil {
		c.t.Fatal(err)
	}
	n.port = port
	c.nodes = append(c.nodes, n)
	return n
}

func mustTruncate(t *testing.T, path string, size int64) {
	f, err := os.Create(path)
	if err == nil {
		err = f.Truncate(size)
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// Node returns the guest called name.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.nodes {
		if n.Name == name {
			return n
		}
	}
	c.t.Fatalf("no node %q", name)
	return nil
}

// Start boots every guest that is not running, in parallel, and waits for
// their agents.
func (c *Cluster) Start() {
	c.t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(c.nodes))
	for i, n := range c.nodes {
		if n.running() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.boot()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			c.t.Fatal(err)
		}
	}
}

// Start boots the guest (again, after a power-off) and waits for its agent.
func (n *Node) Start() {
	n.c.t.Helper()
	if err := n.boot(); err != nil {
		n.c.t.Fatal(err)
	}
}

func (n *Node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.qemu != nil
}

func (n *Node) boot() error {
	n.mu.Lock()
	if n.qemu != nil {
		n.mu.Unlock()
		return fmt.Errorf("%s is already running", n.Name)
	}
	n.boots++
	boot := n.boots
	n.mu.Unlock()
	os.Remove(n.qmpPath)
	os.Remove(n.agentSoc)
	args := []string{
		"-accel", accel(), "-m", fmt.Sprint(n.opts.MemoryMiB), "-smp", "1",
		"-nodefaults", "-display", "none", "-no-reboot",
		"-kernel", n.c.img.Kernel, "-initrd", n.c.img.Initrd,
		"-append", fmt.Sprintf("console=ttyS0 quiet panic=-1 blkrep.name=%s blkrep.ip=%s/24", n.Name, n.IP),
		"-chardev", "file,id=ser0,append=on,path=" + n.serial,
		"-serial", "chardev:ser0",
		"-qmp", "unix:" + n.qmpPath + ",server=on,wait=off",
		"-chardev", "socket,id=agent,server=on,wait=off,path=" + n.agentSoc,
		"-device", "virtio-serial-pci",
		"-device", "virtserialport,chardev=agent,name=blkrep.agent",
		"-netdev", fmt.Sprintf("socket,id=net0,udp=127.0.0.1:%d,localaddr=127.0.0.1:%d", n.c.hub.port, n.port),
		"-device", "virtio-net-pci,netdev=net0,mac=" + n.mac,
	}
	args = append(args, "-drive", "file="+n.state+",format=raw,if=virtio,cache=writeback")
	if n.Data != "" {
		args = append(args, "-drive", "file="+n.Data+",format=raw,if=virtio,cache=writeback")
	}
	if f, err := os.OpenFile(n.serial, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
		fmt.Fprintf(f, "\n==== host: boot %d of %s at %s\n", boot, n.Name, time.Now().Format("15:04:05.000"))
		f.Close()
	}
	cmd := exec.Command("qemu-system-x86_64", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: qemu: %w", n.Name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		if stderr.Len() > 0 {
			if f, err := os.OpenFile(n.serial, os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
				fmt.Fprintf(f, "\n==== host: qemu's stderr: %s\n", stderr.String())
				f.Close()
			}
		}
		close(exited)
	}()
	n.mu.Lock()
	n.qemu, n.exited = cmd, exited
	n.mu.Unlock()
	a, err := dialAgent(n.agentSoc)
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	select {
	case <-a.hello:
	case <-exited:
		return fmt.Errorf("%s: qemu exited during boot", n.Name)
	case <-time.After(bootTimeout):
		return fmt.Errorf("%s: the guest agent did not answer within %s of boot", n.Name, bootTimeout)
	}
	n.mu.Lock()
	n.agent = a
	n.mu.Unlock()
	if boot == 1 {
		// The state disk gets its file system on the first boot only.
		if out, code := n.RunCode(mke2fs+" -F /dev/vda", time.Minute); code != 0 {
			return fmt.Errorf("%s: mke2fs /dev/vda: exit %d: %s", n.Name, code, out)
		}
	}
	out, code := n.RunCode("mkdir -p /var/lib/blkrep /run/blkrep && mount -t ext4 /dev/vda /var/lib/blkrep", time.Minute)
	if code != 0 {
		return fmt.Errorf("%s: cannot mount the state disk: exit %d: %s", n.Name, code, out)
	}
	return nil
}

const bootTimeout = 90 * time.Second

func accel() string {
	if a := os.Getenv("BLKREP_VM_ACCEL"); a != "" {
		return a
	}
	return "tcg"
}

// PowerOff pulls the plug: QEMU is killed, the guest's memory (its page
// cache, the daemon) is gone; what QEMU had written to the disk files
// stays, as on a disk with a battery-backed cache.
func (n *Node) PowerOff() time.Time {
	n.mu.Lock()
	cmd, exited, a := n.qemu, n.exited, n.agent
	n.mu.Unlock()
	if cmd == nil {
		n.c.t.Fatalf("%s is not running", n.Name)
	}
	cmd.Process.Kill()
	at := time.Now()
	<-exited
	if a != nil {
		a.close()
	}
	n.mu.Lock()
	n.qemu, n.agent = nil, nil
	n.mu.Unlock()
	n.c.logf("%s powered off", n.Name)
	return at
}

// PowerOffIfRunning is PowerOff for cleanups.
func (n *Node) PowerOffIfRunning() {
	if n.running() {
		n.PowerOff()
	}
}

// Freeze stops the guest's CPU (QMP stop): it neither runs nor answers.
func (n *Node) Freeze() { n.mustQMP("stop") }

// Thaw resumes a frozen guest (QMP cont).
func (n *Node) Thaw() { n.mustQMP("cont") }

// CutLink unplugs the guest's network cable (QMP set_link off): the guest
// sees no carrier, nothing goes in or out.
func (n *Node) CutLink() {
	n.mustQMP("set_link", "name", "net0", "up", false)
	n.c.logf("%s: cable cut", n.Name)
}

// HealLink plugs the cable back in.
func (n *Node) HealLink() {
	n.mustQMP("set_link", "name", "net0", "up", true)
	n.c.logf("%s: cable back", n.Name)
}

func (n *Node) mustQMP(cmd string, args ...any) {
	n.c.t.Helper()
	if err := n.qmp(cmd, args...); err != nil {
		n.c.t.Fatalf("%s: QMP %s: %v", n.Name, cmd, err)
	}
}

// qmp runs one QMP command on a connection of its own.
func (n *Node) qmp(cmd string, kv ...any) error {
	c, err := net.DialTimeout("unix", n.qmpPath, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadBytes('\n'); err != nil { // the greeting
		return err
	}
	send := func(v any) error {
		b, _ := json.Marshal(v)
		_, err := c.Write(append(b, '\n'))
		return err
	}
	// reply skips events up to the command's answer.
	reply := func() error {
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				if cmd == "quit" {
					return nil
				}
				return err
			}
			var m map[string]json.RawMessage
			if json.Unmarshal(line, &m) != nil {
				continue
			}
			if e, ok := m["error"]; ok {
				return fmt.Errorf("%s", e)
			}
			if _, ok := m["return"]; ok {
				return nil
			}
		}
	}
	if err := send(map[string]any{"execute": "qmp_capabilities"}); err != nil {
		return err
	}
	if err := reply(); err != nil {
		return err
	}
	args := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		args[kv[i].(string)] = kv[i+1]
	}
	req := map[string]any{"execute": cmd}
	if len(args) > 0 {
		req["arguments"] = args
	}
	if err := send(req); err != nil {
		return err
	}
	return reply()
}

func (n *Node) agentConn() *agentConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.agent
}

// RunCode runs a shell command in the guest and returns its output and
// exit status (-1: it timed out or the guest died).
func (n *Node) RunCode(cmd string, timeout time.Duration) (string, int) {
	a := n.agentConn()
	if a == nil {
		return n.Name + " is not running", -1
	}
	r, err := a.call(agentRequest{Cmd: cmd, TimeoutMS: timeout.Milliseconds()}, nil, timeout+10*time.Second)
	if err != nil {
		return err.Error(), -1
	}
	if r.Error != "" {
		return r.Out + "\n" + r.Error, -1
	}
	return r.Out, r.Code
}

// Run runs a shell command in the guest; a non-zero exit fails the test.
func (n *Node) Run(cmd string) string {
	n.c.t.Helper()
	out, code := n.RunCode(cmd, 2*time.Minute)
	if code != 0 {
		n.c.t.Fatalf("%s: %q: exit %d:\n%s", n.Name, cmd, code, out)
	}
	return out
}

// WriteFile writes data to a file in the guest, durably.
func (n *Node) WriteFile(path string, data []byte) {
	n.c.t.Helper()
	a := n.agentConn()
	if a == nil {
		n.c.t.Fatalf("%s is not running", n.Name)
	}
	// Synced: a file written just before a power loss must survive it.
	r, err := a.call(agentRequest{Cmd: "cat >" + shellQuote(path) + " && sync", Stdin: data, TimeoutMS: 30000}, nil, 40*time.Second)
	if err != nil || r.Code != 0 {
		n.c.t.Fatalf("%s: writing %s: %v %s %s", n.Name, path, err, r.Out, r.Error)
	}
}

// ReadAt reads length bytes at off of a file or device in the guest.
func (n *Node) ReadAt(path string, off, length int64) []byte {
	n.c.t.Helper()
	a := n.agentConn()
	if a == nil {
		n.c.t.Fatalf("%s is not running", n.Name)
	}
	r, err := a.call(agentRequest{Read: path, Offset: off, Length: length}, nil, 2*time.Minute)
	if err != nil || r.Error != "" {
		n.c.t.Fatalf("%s: reading %s: %v %s", n.Name, path, err, r.Error)
	}
	return r.Data
}

// Proc is a command running in a guest, its output streamed to the host.
type Proc struct {
	n    *Node
	name string
	id   uint64
	done chan agentReply

	mu     sync.Mutex
	lines  []Line
	result *agentReply
}

// Spawn starts a command in the guest and collects its output lines as
// they come, stamped with the host's time.
func (n *Node) Spawn(name, cmd string) *Proc {
	n.c.t.Helper()
	a := n.agentConn()
	if a == nil {
		n.c.t.Fatalf("%s is not running", n.Name)
	}
	p := &Proc{n: n, name: name}
	id, done, err := a.start(agentRequest{Cmd: cmd, Stream: true}, func(l Line) {
		p.mu.Lock()
		p.lines = append(p.lines, l)
		p.mu.Unlock()
	})
	if err != nil {
		n.c.t.Fatalf("%s: %s: %v", n.Name, name, err)
	}
	p.id, p.done = id, done
	return p
}

// Lines returns the output so far.
func (p *Proc) Lines() []Line {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Line(nil), p.lines...)
}

// Wait waits for the command to end; ok is false on timeout. code is -1
// when the guest died or the command was killed.
func (p *Proc) Wait(timeout time.Duration) (code int, ok bool) {
	p.mu.Lock()
	if p.result != nil {
		defer p.mu.Unlock()
		return p.result.Code, true
	}
	p.mu.Unlock()
	select {
	case r := <-p.done:
		p.mu.Lock()
		p.result = &r
		p.mu.Unlock()
		return r.Code, true
	case <-time.After(timeout):
		return 0, false
	}
}

// Signal sends sig to the command's process group in the guest.
func (p *Proc) Signal(sig syscall.Signal) {
	a := p.n.agentConn()
	if a == nil {
		return
	}
	a.call(agentRequest{Signal: p.id, Sig: int(sig)}, nil, 10*time.Second)
}

func (c *Cluster) logf(format string, args ...any) {
	c.t.Logf("%s "+format, append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// close powers every guest off and, if the test failed, prints their
// serial logs.
func (c *Cluster) close() {
	for _, n := range c.nodes {
		if n.running() && c.t.Failed() {
			// The daemon's log is in the guest's tmpfs: save it.
			if out, code := n.RunCode("tail -n 80 /var/lib/blkrep/*.log 2>&1; dmesg | tail -n 40", 20*time.Second); code >= 0 {
				c.t.Logf("---- %s: daemon logs and kernel messages:\n%s", n.Name, out)
			}
		}
		n.PowerOffIfRunning()
	}
	c.hub.close()
	if !c.t.Failed() {
		return
	}
	for _, n := range c.nodes {
		b, err := os.ReadFile(n.serial)
		if err != nil {
			c.t.Logf("---- serial log of %s: %v", n.Name, err)
			continue
		}
		c.t.Logf("---- serial log of %s (%s):\n%s\n---- end of the serial log of %s", n.Name, n.serial,
			strings.ReplaceAll(string(b), "\r", ""), n.Name)
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// hub is the Ethernet segment: every frame from one guest goes to all the
// others.
type hub struct {
	conn *net.UDPConn
	port int

	mu    sync.Mutex
	ports map[int]bool // the guests' NIC ports
}

func newHub() (*hub, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	h := &hub{conn: c, port: c.LocalAddr().(*net.UDPAddr).Port, ports: map[int]bool{}}
	go h.run()
	return h, nil
}

// add picks a UDP port for a guest's NIC that stays the guest's across
// reboots: from testnet's range, below the ephemeral ports the kernel
// hands to other sockets meanwhile.
func (h *hub) add(n *Node) (int, error) {
	for i := 0; i < 100; i++ {
		a, err := testnet.Addr()
		if err != nil {
			return 0, err
		}
		ua, err := net.ResolveUDPAddr("udp", a)
		if err != nil {
			return 0, err
		}
		c, err := net.ListenUDP("udp", ua)
		if err != nil {
			continue
		}
		c.Close()
		h.mu.Lock()
		h.ports[ua.Port] = true
		h.mu.Unlock()
		return ua.Port, nil
	}
	return 0, fmt.Errorf("no free UDP port for %s", n.Name)
}

func (h *hub) run() {
	buf := make([]byte, 65536)
	for {
		k, from, err := h.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		h.mu.Lock()
		for p := range h.ports {
			if p != from.Port {
				// A guest that is down refuses it: no matter.
				h.conn.WriteToUDP(buf[:k], &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
			}
		}
		h.mu.Unlock()
	}
}

func (h *hub) close() { h.conn.Close() }
