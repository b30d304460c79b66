package kernel

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/pmorjan/kmod"
	"golang.org/x/sys/unix"
)

// moduleParams: no devices at load time; netlink CONNECT creates them on
// demand, so /dev/nbdN exists only while blkrep (or someone) uses it.
const moduleParams = "nbds_max=0"

// moduleLoader holds LoadModule's dependencies so tests can replace them.
type moduleLoader struct {
	sysModule    string                    // "/sys/module/nbd"
	newKmod      func() (modLoader, error) // kmod.New
	lookupFamily func() error              // genl family lookup
	log          *slog.Logger
}

type modLoader interface {
	Load(name, params string, flags int) error
}

// LoadModule makes sure the nbd driver is in the kernel, trying in order:
//
//  1. /sys/module/nbd exists (loaded or built in): done, parameters as they are.
//  2. Load "nbd" with nbds_max=0 through github.com/pmorjan/kmod, which reads
//     /lib/modules/$(uname -r)/modules.dep (and /etc/modprobe.conf only).
//     Compressed modules (.ko.xz/.ko.zst/.ko.gz, Debian's 6.12) are handed to
//     finit_module with MODULE_INIT_COMPRESSED_FILE for the kernel to unpack.
//  3. Look up the generic netlink family "nbd": kernels whose module carries
//     the family alias (6.12) load it then, with default parameters.
//
// Otherwise it returns an error wrapping ErrModuleUnavailable that names
// what each step found ("nbd module not available: ..."). log may be nil.
func LoadModule(log *slog.Logger) error {
	return moduleLoader{
		sysModule: "/sys/module/nbd",
		newKmod: func() (modLoader, error) {
			return kmod.New(kmod.SetInitFunc(initModule))
		},
		lookupFamily: func() error {
			_, err := lookupFamily()
			return err
		},
		log: log,
	}.load()
}

func (m moduleLoader) load() error {
	log := m.log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if _, err := os.Stat(m.sysModule); err == nil {
		log.Debug("nbd module already present", "path", m.sysModule)
		return nil
	}

	kerr := func() error {
		k, err := m.newKmod()
		if err != nil {
			return err
		}
		return k.Load("nbd", moduleParams, 0)
	}()
	if kerr == nil {
		log.Info("nbd module loaded", "params", moduleParams)
		return nil
	}
	log.Debug("kmod could not load nbd, trying the genl family lookup", "err", kerr)

	ferr := m.lookupFamily()
	if ferr == nil {
		log.Info("nbd module loaded by the generic netlink family lookup")
		return nil
	}
	if errors.Is(kerr, kmod.ErrModuleNotFound) {
		kerr = fmt.Errorf("nbd is not in modules.dep: %w", kerr)
	}
	return fmt.Errorf("%w: kmod: %w; generic netlink lookup: %w", ErrModuleUnavailable, kerr, ferr)
}

// moduleInitFlags returns the finit_module flags for a module file: the
// kernel decompresses (CONFIG_MODULE_DECOMPRESS) when told to.
func moduleInitFlags(path string, flags int) int {
	for _, ext := range []string{".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(path, ext) {
			return flags | unix.MODULE_INIT_COMPRESSED_FILE
		}
	}
	return flags
}

// initModule is kmod's InitFunc: finit_module with the compression flag.
func initModule(path, params string, flags int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags = moduleInitFlags(path, flags)
	err = unix.FinitModule(int(f.Fd()), params, flags)
	if errors.Is(err, unix.ENOSYS) && flags == 0 {
		b, rerr := io.ReadAll(f)
		if rerr != nil {
			return rerr
		}
		err = unix.InitModule(b, params)
	}
	if err != nil {
		return fmt.Errorf("finit_module %s: %w", path, err)
	}
	return nil
}
