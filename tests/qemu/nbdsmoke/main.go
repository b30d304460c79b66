package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blkrep/blkrep/nbd/kernel"
)

const (
	sizeBytes = 64 << 20
	backend   = "blkrep:smoke"

	// NBD transmission flags (protocol constants).
	flagHasFlags  = 1 << 0
	flagSendFlush = 1 << 2
	flagSendFUA   = 1 << 3
	flagSendTrim  = 1 << 5

	requestMagic = 0x25609513
	replyMagic   = 0x67446698

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6
	cmdFlagFUA     = 1 << 0

	errIO    = 5
	errInval = 22

	maxRequest = 32 << 20
)

var failed bool

func check(name string, err error) bool {
	if err != nil {
		failed = true
		fmt.Printf("CHECK %s: FAIL %v\n", name, err)
		return false
	}
	fmt.Printf("CHECK %s: ok\n", name)
	return true
}

func must(name string, err error) {
	if !check(name, err) {
		fmt.Println("SMOKE: FAIL")
		os.Exit(1)
	}
}

// memDisk is a trivial NBD transmission-phase responder over a byte slice:
// one request at a time, simple replies only.
type memDisk struct {
	mu   sync.Mutex
	data []byte
	cur  net.Conn

	counts [8]atomic.Int64 // by command type
	fua    atomic.Int64
}

func (d *memDisk) serve(c net.Conn) {
	d.mu.Lock()
	d.cur = c
	d.mu.Unlock()
	defer c.Close()
	hdr := make([]byte, 28)
	for {
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		if binary.BigEndian.Uint32(hdr[0:]) != requestMagic {
			fmt.Println("serve: bad request magic")
			return
		}
		flags := binary.BigEndian.Uint16(hdr[4:])
		typ := binary.BigEndian.Uint16(hdr[6:])
		off := binary.BigEndian.Uint64(hdr[16:])
		n := binary.BigEndian.Uint32(hdr[24:])
		if int(typ) < len(d.counts) {
			d.counts[typ].Add(1)
		}
		if flags&cmdFlagFUA != 0 {
			d.fua.Add(1)
		}
		var payload []byte
		var errno uint32
		inRange := off <= sizeBytes && uint64(n) <= sizeBytes-off && n <= maxRequest
		switch typ {
		case cmdDisc:
			return
		case cmdWrite:
			if n > maxRequest {
				return // cannot skip an unbounded payload
			}
			buf := make([]byte, n)
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if !inRange {
				errno = errInval
				break
			}
			d.mu.Lock()
			copy(d.data[off:], buf)
			d.mu.Unlock()
		case cmdRead:
			if !inRange {
				errno = errInval
				break
			}
			payload = make([]byte, n)
			d.mu.Lock()
			copy(payload, d.data[off:])
			d.mu.Unlock()
		case cmdFlush:
		case cmdTrim, cmdWriteZeroes:
			if !inRange {
				errno = errInval
				break
			}
			d.mu.Lock()
			clear(d.data[off : off+uint64(n)])
			d.mu.Unlock()
		default:
			errno = errInval
		}
		rep := make([]byte, 16, 16+len(payload))
		binary.BigEndian.PutUint32(rep[0:], replyMagic)
		binary.BigEndian.PutUint32(rep[4:], errno)
		copy(rep[8:], hdr[8:16])
		if errno == 0 {
			rep = append(rep, payload...)
		}
		if _, err := c.Write(rep); err != nil {
			return
		}
	}
}

func (d *memDisk) kill() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur != nil {
		d.cur.Close()
	}
}

func (d *memDisk) stats() string {
	return fmt.Sprintf("read=%d write=%d flush=%d trim=%d write_zeroes=%d disc=%d fua=%d",
		d.counts[cmdRead].Load(), d.counts[cmdWrite].Load(), d.counts[cmdFlush].Load(),
		d.counts[cmdTrim].Load(), d.counts[cmdWriteZeroes].Load(), d.counts[cmdDisc].Load(), d.fua.Load())
}

func (d *memDisk) region(off, n int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.data[off:off+n]...)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if len(out) > 0 {
		fmt.Printf("  $ %s %v\n%s", name, args, indent(out))
	}
	return err
}

func indent(b []byte) string {
	var out bytes.Buffer
	for _, l := range bytes.SplitAfter(b, []byte("\n")) {
		if len(l) > 0 {
			out.WriteString("    ")
			out.Write(l)
		}
	}
	if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
		out.WriteByte('\n')
	}
	return out.String()
}

func dropCaches() error {
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}

// readBack reads n bytes at offset 0 of /dev/nbd0 with dd (after dropping
// the page cache, so they come from the server) and compares with want.
func readBack(name string, want []byte) {
	if err := dropCaches(); err != nil {
		check(name, err)
		return
	}
	err := run("/bin/dd", "if=/dev/nbd0", "of=/tmp/readback", "bs=4096",
		fmt.Sprint("count=", len(want)/4096), "iflag=direct")
	if err != nil {
		check(name, fmt.Errorf("dd read: %w", err))
		return
	}
	got, err := os.ReadFile("/tmp/readback")
	if err == nil && !bytes.Equal(got, want) {
		err = fmt.Errorf("read back %d bytes differ from what was written", len(got))
	}
	check(name, err)
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))

	check("set_io_flusher", kernel.SetIOFlusher())
	check("lock_memory", kernel.LockMemory())
	must("load_module", kernel.LoadModule(log))
	if b, err := os.ReadFile("/sys/module/nbd/parameters/nbds_max"); err == nil {
		fmt.Printf("  nbds_max=%s", b)
	}

	c, err := kernel.OpenWithLogger(log)
	must("open", err)
	defer c.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dead, err := kernel.WatchLinkDead(ctx)
	check("watch_link_dead", err)

	index, err := kernel.ParseDevice("/dev/nbd0")
	must("parse_device", err)
	exists, connected, err := c.Status(index)
	fmt.Printf("  status before attach: exists=%v connected=%v err=%v\n", exists, connected, err)

	disk := &memDisk{data: make([]byte, sizeBytes)}
	o := kernel.Options{
		Index:           index,
		SizeBytes:       sizeBytes,
		Timeout:         30 * time.Second,
		DeadConnTimeout: 60 * time.Second,
		ServerFlags:     flagHasFlags | flagSendFlush | flagSendFUA | flagSendTrim,
		Backend:         backend,
	}
	index, err = kernel.Attach(c, o, disk.serve)
	must("attach_connect", err)
	exists, connected, err = c.Status(index)
	fmt.Printf("  status after attach: exists=%v connected=%v err=%v\n", exists, connected, err)
	if err == nil && !(exists && connected) {
		err = errors.New("device not connected after CONNECT")
	}
	check("status_connected", err)
	b, err := kernel.Backend(index)
	if err == nil && b != backend {
		err = fmt.Errorf("backend %q, want %q", b, backend)
	}
	check("sysfs_backend", err)
	for _, f := range []string{"size", "queue/logical_block_size", "queue/write_cache", "queue/fua", "queue/max_sectors_kb"} {
		if v, err := os.ReadFile("/sys/block/nbd0/" + f); err == nil {
			fmt.Printf("  /sys/block/nbd0/%s = %s", f, v)
		}
	}
	fmt.Printf("  after CONNECT (partition scan): %s\n", disk.stats())

	// Write 1 MiB of random data with dd, fsync, compare with the server's memory.
	pattern := make([]byte, 1<<20)
	rand.Read(pattern)
	must("write_pattern_file", os.WriteFile("/tmp/pattern", pattern, 0o644))
	err = run("/bin/dd", "if=/tmp/pattern", "of=/dev/nbd0", "bs=4096", "count=256", "conv=fsync")
	if err == nil && !bytes.Equal(disk.region(0, len(pattern)), pattern) {
		err = errors.New("server memory differs from the pattern after dd+fsync")
	}
	check("dd_write_fsync", err)
	fmt.Printf("  after dd write: %s\n", disk.stats())
	readBack("dd_read_direct", pattern)

	// Refusals while attached and live.
	other := o
	other.Backend = "blkrep:other"
	_, err = kernel.Attach(c, other, disk.serve)
	fmt.Printf("  attach other backend: %v\n", err)
	var be *kernel.BusyError
	if !errors.As(err, &be) {
		err = fmt.Errorf("want *BusyError, got %v", err)
	} else {
		err = nil
	}
	check("refuse_other_backend", err)

	spare := &memDisk{data: make([]byte, sizeBytes)}
	_, err = kernel.Attach(c, o, spare.serve)
	fmt.Printf("  attach same backend while live: %v\n", err)
	if !errors.Is(err, kernel.ErrLinkAlive) {
		err = fmt.Errorf("want ErrLinkAlive, got %v", err)
	} else {
		err = nil
	}
	check("refuse_live_link", err)
	readBack("still_served_after_refusals", pattern)

	// Daemon restart: the serving side dies, the kernel reports LINK_DEAD,
	// a new Attach with the same backend resumes the device by RECONFIGURE.
	disk.kill()
	select {
	case i, ok := <-dead:
		if !ok {
			err = errors.New("watch channel closed")
		} else if i != index {
			err = fmt.Errorf("LINK_DEAD for index %d, want %d", i, index)
		} else {
			err = nil
			fmt.Printf("  LINK_DEAD index=%d\n", i)
		}
	case <-time.After(15 * time.Second):
		err = errors.New("no LINK_DEAD within 15s")
	}
	check("link_dead_notification", err)
	exists, connected, err = c.Status(index)
	fmt.Printf("  status with dead link: exists=%v connected=%v err=%v\n", exists, connected, err)

	// I/O issued while the link is dead waits for the reconnect.
	pattern2 := make([]byte, 64<<10)
	rand.Read(pattern2)
	must("write_pattern2_file", os.WriteFile("/tmp/pattern2", pattern2, 0o644))
	blocked := exec.Command("/bin/dd", "if=/tmp/pattern2", "of=/dev/nbd0", "bs=4096", "count=16", "seek=512", "oflag=direct")
	blockedDone := make(chan error, 1)
	if err := blocked.Start(); err != nil {
		check("start_blocked_write", err)
	} else {
		go func() { blockedDone <- blocked.Wait() }()
	}
	time.Sleep(time.Second)
	select {
	case err := <-blockedDone:
		check("write_waits_for_reconnect", fmt.Errorf("dd finished while the link was dead: %v", err))
	default:
		check("write_waits_for_reconnect", nil)
	}

	restarted := &memDisk{data: disk.region(0, sizeBytes)} // "the same disk" after restart
	_, err = kernel.Attach(c, o, restarted.serve)
	check("attach_reconfigure", err)
	select {
	case err = <-blockedDone:
		if err == nil && !bytes.Equal(restarted.region(512*4096, len(pattern2)), pattern2) {
			err = errors.New("blocked write did not reach the new server")
		}
	case <-time.After(20 * time.Second):
		err = errors.New("blocked write still pending 20s after RECONFIGURE")
	}
	check("blocked_write_completes_after_reconfigure", err)
	fmt.Printf("  restarted server after blocked write: %s\n", restarted.stats())
	readBack("read_after_reconfigure", pattern)
	fmt.Printf("  restarted server: %s\n", restarted.stats())
	if restarted.counts[cmdRead].Load() == 0 {
		check("reads_reach_new_socket", errors.New("no READ on the new socket"))
	} else {
		check("reads_reach_new_socket", nil)
	}

	// Disconnect: the server gets DISC, the device stays, unconfigured.
	must("disconnect", c.Disconnect(index))
	time.Sleep(500 * time.Millisecond)
	fmt.Printf("  after DISCONNECT: %s\n", restarted.stats())
	exists, connected, err = c.Status(index)
	fmt.Printf("  status after disconnect: exists=%v connected=%v err=%v\n", exists, connected, err)
	if err == nil && connected {
		err = errors.New("still connected after DISCONNECT")
	}
	check("status_disconnected", err)
	b, err = kernel.Backend(index)
	fmt.Printf("  backend after disconnect: %q err=%v\n", b, err)

	// Attach to the existing, unconfigured device: CONNECT again.
	again := &memDisk{data: restarted.region(0, sizeBytes)}
	_, err = kernel.Attach(c, o, again.serve)
	check("attach_connect_existing", err)
	readBack("read_after_reconnect", pattern)
	check("disconnect_again", c.Disconnect(index))

	cancel()
	if failed {
		fmt.Println("SMOKE: FAIL")
		os.Exit(1)
	}
	fmt.Println("SMOKE: PASS")
}
