package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/blkrep/blkrep/internal/control"
	"github.com/blkrep/blkrep/nbd/kernel"
)

// device is a volume's /dev/nbdX on this node. The kernel talks to the
// daemon over one end of a socketpair served in-process; when the kernel
// drops that socket while we are not shutting down (a request timed out),
// the device is re-attached with RECONFIGURE within dead_conn_timeout.
type device struct {
	d   *Daemon
	v   *replica
	log *slog.Logger

	mu      sync.Mutex
	kc      *kernel.Conn
	index   int
	state   string // attached, detached, unavailable
	err     string
	closing bool
	served  sync.WaitGroup
}

var hardenOnce sync.Once

func (d *Daemon) attach(v *replica) *device {
	dev := &device{d: d, v: v, index: -1, log: d.log.With("volume", v.cfg.Name, "device", v.replica.Device)}
	if d.opts.NoDevices {
		dev.setUnavailable(errors.New("kernel devices disabled by --no-devices"))
		return dev
	}
	if err := kernel.LoadModule(dev.log); err != nil {
		// One clear line; NBD clients keep being served.
		dev.setUnavailable(err)
		return dev
	}
	hardenOnce.Do(func() {
		if d.opts.IOFlusherErr != nil {
			d.log.Warn("could not set PR_SET_IO_FLUSHER; under memory pressure, writeback to our own device could deadlock",
				"err", d.opts.IOFlusherErr)
		}
		// The daemon serves a device that memory reclaim may write back
		// to: its memory must never need that device to be paged in.
		if err := kernel.LockMemory(); err != nil {
			d.log.Warn("could not lock daemon memory (mlockall); a memory shortage could deadlock writeback to the device", "err", err)
		}
	})
	kc, err := kernel.OpenWithLogger(dev.log)
	if err != nil {
		dev.setUnavailable(err)
		return dev
	}
	dev.kc = kc
	if err := dev.connect(); err != nil {
		dev.setUnavailable(err)
		kc.Close()
		dev.kc = nil
	}
	return dev
}

func (dev *device) setUnavailable(err error) {
	dev.mu.Lock()
	dev.state, dev.err = "unavailable", err.Error()
	dev.mu.Unlock()
	dev.log.Error(fmt.Sprintf("cannot attach %s, serving NBD clients only: %v", dev.v.replica.Device, err))
}

func (dev *device) options() (kernel.Options, error) {
	idx, err := kernel.ParseDevice(dev.v.replica.Device)
	if err != nil {
		return kernel.Options{}, err
	}
	flags, ok := dev.d.srv.TransmissionFlags(dev.v.cfg.Name)
	if !ok {
		return kernel.Options{}, fmt.Errorf("export %q not registered", dev.v.cfg.Name)
	}
	return kernel.Options{
		Index:           idx,
		SizeBytes:       uint64(dev.v.cfg.SizeBytes),
		BlockSize:       uint64(dev.v.cfg.BlockSize),
		Timeout:         dev.v.cfg.DeviceTimeout,
		DeadConnTimeout: dev.v.cfg.DeadConnTimeout,
		ServerFlags:     uint64(flags),
		Backend:         "blkrep:" + dev.d.cfg.Cluster.Name + ":" + dev.v.cfg.Name,
	}, nil
}

func (dev *device) connect() error {
	o, err := dev.options()
	if err != nil {
		return err
	}
	// Register the serving goroutine under the lock that detach takes to
	// set closing, so detach's Wait never races a late Add.
	dev.mu.Lock()
	if dev.closing {
		dev.mu.Unlock()
		return errors.New("device is being detached")
	}
	dev.served.Add(1)
	dev.mu.Unlock()
	// attempt links this Attach with its serving goroutine: the kernel may
	// drop the socket before Attach has even returned.
	var attached, ended bool
	started := false
	index, err := kernel.Attach(dev.kc, o, func(nc net.Conn) {
		started = true
		defer dev.served.Done()
		dev.d.srv.ServeTransmission(nc, dev.v.cfg.Name)
		dev.mu.Lock()
		ended = true
		was := attached
		dev.mu.Unlock()
		if was {
			dev.lost()
		}
	})
	if err != nil {
		if !started {
			dev.served.Done()
		}
		return err
	}
	dev.mu.Lock()
	attached = true
	dev.index, dev.state, dev.err = index, "attached", ""
	gone, closing := ended, dev.closing
	dev.mu.Unlock()
	switch {
	case closing:
		// detach ran while we attached: do not leave the device behind.
		dev.kc.Disconnect(index)
	case gone:
		dev.lost()
	}
	return nil
}

// lost runs when the kernel's socket closed. Unless we are shutting down,
// hand the kernel a fresh socket.
func (dev *device) lost() {
	dev.mu.Lock()
	if dev.closing || dev.state != "attached" {
		// Shutting down, or this socket never got attached (Attach failed
		// and is reporting that itself).
		if dev.closing {
			dev.state = "detached"
		}
		dev.mu.Unlock()
		return
	}
	dev.state, dev.err = "detached", "kernel dropped the connection; re-attaching"
	dev.mu.Unlock()
	dev.log.Warn("kernel dropped the device connection, re-attaching")
	go func() {
		delay := 100 * time.Millisecond
		deadline := time.Now().Add(max(dev.v.cfg.DeadConnTimeout, 5*time.Second))
		for time.Now().Before(deadline) {
			time.Sleep(delay)
			dev.mu.Lock()
			closing := dev.closing
			dev.mu.Unlock()
			if closing {
				return
			}
			err := dev.connect()
			if err == nil {
				return
			}
			dev.log.Warn("re-attach failed", "err", err)
			delay = min(2*delay, 2*time.Second)
		}
		dev.setUnavailable(errors.New("could not re-attach within dead_conn_timeout"))
	}()
}

// detach disconnects the device (the kernel fails nothing that is already
// answered; in-flight requests finish first) and waits for the serving
// goroutine.
func (dev *device) detach() error {
	dev.mu.Lock()
	dev.closing = true
	kc, index := dev.kc, dev.index
	dev.mu.Unlock()
	if kc == nil {
		return nil
	}
	var err error
	if index >= 0 {
		// Also when the link is dead ("detached"): a device left configured
		// would hold its users until dead_conn_timeout.
		err = kc.Disconnect(index)
		if err == nil {
			dev.log.Info("device detached")
		}
	}
	done := make(chan struct{})
	go func() { dev.served.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		err = errors.Join(err, errors.New("kernel did not release the device socket within 30s"))
	}
	kc.Close()
	dev.mu.Lock()
	dev.state = "detached"
	dev.mu.Unlock()
	return err
}

func (dev *device) status(path string) control.Device {
	if dev == nil {
		return control.Device{Path: path, State: "detached"}
	}
	dev.mu.Lock()
	defer dev.mu.Unlock()
	return control.Device{Path: path, State: dev.state, Error: dev.err}
}
