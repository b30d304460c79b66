package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

const fakeFamily = 0x1d

// sentReq is one request as the fake kernel decoded it from the wire bytes.
type sentReq struct {
	typ, flags uint16
	cmd, ver   uint8
	attrs      []byte
}

type fakeDev struct {
	connected bool
	backend   string // written to sysfs when connected
}

// fakeKernel stands in for drivers/block/nbd.c behind Conn.exec. Like the
// kernel it looks the socket fd up in this process's fd table and keeps its
// own reference (a dup).
type fakeKernel struct {
	t        *testing.T
	sysBlock string

	mu          sync.Mutex
	devices     map[int]*fakeDev
	reqs        []sentReq
	connectErrs []error // returned by successive CONNECTs before one succeeds
	reconfTakes bool    // RECONFIGURE replaces a dead socket (else: silently drops ours)
	probe       bool    // on CONNECT, read sector 0 like the partition scan
	held        []net.Conn
}

func newFakeKernel(t *testing.T) (*fakeKernel, *Conn) {
	fk := &fakeKernel{t: t, sysBlock: t.TempDir(), devices: map[int]*fakeDev{}}
	c := newConn(&netlink.GenlFamily{ID: fakeFamily, Version: 1,
		Groups: []netlink.GenlMulticastGroup{{ID: 40, Name: mcastGroupName}}}, nil)
	c.sysBlock = fk.sysBlock
	c.exec = fk.exec
	c.sleep = func(time.Duration) {}
	t.Cleanup(fk.dropAll)
	return fk, c
}

func (fk *fakeKernel) setDevice(index int, d *fakeDev) {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	fk.devices[index] = d
	dir := filepath.Join(fk.sysBlock, "nbd"+strconv.Itoa(index))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fk.t.Fatal(err)
	}
	if d.connected && d.backend != "" {
		if err := os.WriteFile(filepath.Join(dir, "backend"), []byte(d.backend+"\n"), 0o644); err != nil {
			fk.t.Fatal(err)
		}
	}
}

// dropAll closes the kernel's socket references, as DISCONNECT would.
func (fk *fakeKernel) dropAll() {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	for _, c := range fk.held {
		c.Close()
	}
	fk.held = nil
}

func (fk *fakeKernel) requests() []sentReq {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	return append([]sentReq(nil), fk.reqs...)
}

func (fk *fakeKernel) exec(req *nl.NetlinkRequest) ([][]byte, error) {
	b := req.Serialize()
	if len(b) < unix.SizeofNlMsghdr+genlHeaderLen || int(binary.NativeEndian.Uint32(b)) != len(b) {
		return nil, fmt.Errorf("fake: bad request length")
	}
	r := sentReq{
		typ:   binary.NativeEndian.Uint16(b[4:6]),
		flags: binary.NativeEndian.Uint16(b[6:8]),
		cmd:   b[16],
		ver:   b[17],
		attrs: b[unix.SizeofNlMsghdr+genlHeaderLen:],
	}
	fk.mu.Lock()
	fk.reqs = append(fk.reqs, r)
	fk.mu.Unlock()
	attrs, err := parseAttrs(r.attrs)
	if err != nil {
		return nil, err
	}
	index, fd := -1, -1
	for _, a := range attrs {
		switch a.typ {
		case attrIndex:
			v, _ := attrU32(a)
			index = int(v)
		case attrSockets:
			items, _ := parseAttrs(a.data)
			inner, _ := parseAttrs(items[0].data)
			v, _ := attrU32(inner[0])
			fd = int(v)
		}
	}
	switch r.cmd {
	case cmdStatus:
		fk.mu.Lock()
		d := fk.devices[index]
		fk.mu.Unlock()
		msg := []byte{cmdStatus, 1, 0, 0}
		list := nl.NewRtAttr(attrDeviceList, nil)
		if d != nil {
			item := list.AddRtAttr(deviceItem, nil)
			item.AddRtAttr(deviceIndex, nl.Uint32Attr(uint32(index)))
			conn := uint8(0)
			if d.connected {
				conn = 1
			}
			item.AddRtAttr(deviceConnected, nl.Uint8Attr(conn))
		}
		return [][]byte{append(msg, list.Serialize()...)}, nil
	case cmdConnect:
		fk.mu.Lock()
		if len(fk.connectErrs) > 0 {
			err := fk.connectErrs[0]
			fk.connectErrs = fk.connectErrs[1:]
			fk.mu.Unlock()
			return nil, err
		}
		fk.mu.Unlock()
		if index < 0 {
			index = 0
		}
		conn, err := fk.take(fd)
		if err != nil {
			return nil, err
		}
		if fk.probe {
			if err := probeRead(conn); err != nil {
				return nil, fmt.Errorf("fake: partition scan read: %w", err)
			}
		}
		fk.setDevice(index, &fakeDev{connected: true})
		reply := append([]byte{cmdConnect, 1, 0, 0}, nl.NewRtAttr(attrIndex, nl.Uint32Attr(uint32(index))).Serialize()...)
		return [][]byte{reply}, nil
	case cmdReconfigure:
		if fk.reconfTakes {
			if _, err := fk.take(fd); err != nil {
				return nil, err
			}
		}
		return nil, nil // ACK only
	case cmdDisconnect:
		fk.dropAll()
		return nil, nil
	}
	return nil, unix.EOPNOTSUPP
}

// take dups fd like sockfd_lookup takes a reference.
func (fk *fakeKernel) take(fd int) (net.Conn, error) {
	nfd, err := unix.Dup(fd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(nfd), "fake-kernel")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	fk.mu.Lock()
	fk.held = append(fk.held, c)
	fk.mu.Unlock()
	return c, nil
}

// NBD transmission phase, the subset the kernel client uses.
const (
	nbdRequestMagic = 0x25609513
	nbdReplyMagic   = 0x67446698
	nbdCmdRead      = 0
	nbdCmdWrite     = 1
	nbdCmdDisc      = 2
	nbdCmdFlush     = 3
)

func probeRead(c net.Conn) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	req := make([]byte, 28)
	binary.BigEndian.PutUint32(req[0:], nbdRequestMagic)
	binary.BigEndian.PutUint16(req[6:], nbdCmdRead)
	binary.BigEndian.PutUint64(req[8:], 0xc0ffee)
	binary.BigEndian.PutUint32(req[24:], 512)
	if _, err := c.Write(req); err != nil {
		return err
	}
	rep := make([]byte, 16+512)
	if _, err := io.ReadFull(c, rep); err != nil {
		return err
	}
	if binary.BigEndian.Uint32(rep) != nbdReplyMagic || binary.BigEndian.Uint64(rep[8:]) != 0xc0ffee {
		return errors.New("bad reply")
	}
	return nil
}

// zeroServer answers READ with zeroes and everything else with success
// until DISC or EOF; done is closed when it returns.
func zeroServer(done chan<- struct{}) func(net.Conn) {
	return func(c net.Conn) {
		defer close(done)
		defer c.Close()
		hdr := make([]byte, 28)
		for {
			if _, err := io.ReadFull(c, hdr); err != nil {
				return
			}
			typ := binary.BigEndian.Uint16(hdr[6:])
			n := binary.BigEndian.Uint32(hdr[24:])
			if typ == nbdCmdDisc {
				return
			}
			if typ == nbdCmdWrite {
				if _, err := io.CopyN(io.Discard, c, int64(n)); err != nil {
					return
				}
			}
			rep := make([]byte, 16)
			binary.BigEndian.PutUint32(rep, nbdReplyMagic)
			copy(rep[8:], hdr[8:16])
			if typ == nbdCmdRead {
				rep = append(rep, make([]byte, n)...)
			}
			if _, err := c.Write(rep); err != nil {
				return
			}
		}
	}
}
