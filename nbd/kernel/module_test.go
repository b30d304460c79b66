package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pmorjan/kmod"
	"golang.org/x/sys/unix"
)

type fakeKmod struct {
	newErr, loadErr error
	loads           []string
}

func (f *fakeKmod) Load(name, params string, flags int) error {
	f.loads = append(f.loads, fmt.Sprintf("%s %s %d", name, params, flags))
	return f.loadErr
}

func TestModuleLoaderOrder(t *testing.T) {
	present := t.TempDir()
	absent := filepath.Join(present, "nope")
	errNoDep := &os.PathError{Op: "stat", Path: "/lib/modules/X/modules.dep", Err: os.ErrNotExist}
	tests := []struct {
		name      string
		sysModule string
		newErr    error
		loadErr   error
		familyErr error
		wantLoads int
		wantErr   string // substring; "" means success
	}{
		{"already loaded", present, nil, nil, nil, 0, ""},
		{"kmod loads", absent, nil, nil, nil, 1, ""},
		{"no modules.dep, family lookup loads", absent, errNoDep, nil, nil, 0, ""},
		{"nothing works", absent, errNoDep, nil, ErrNoFamily, 0,
			`nbd module not available: kmod: stat /lib/modules/X/modules.dep: file does not exist; generic netlink lookup: nbd/kernel: generic netlink family "nbd" not found`},
		{"not in modules.dep", absent, nil, kmod.ErrModuleNotFound, ErrNoFamily, 1,
			"nbd module not available: kmod: nbd is not in modules.dep: module not found"},
		{"finit_module refused", absent, nil, unix.EPERM, ErrNoFamily, 1,
			"nbd module not available: kmod: operation not permitted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fk := &fakeKmod{loadErr: tt.loadErr}
			families := 0
			err := moduleLoader{
				sysModule: tt.sysModule,
				newKmod: func() (modLoader, error) {
					if tt.newErr != nil {
						return nil, tt.newErr
					}
					return fk, nil
				},
				lookupFamily: func() error { families++; return tt.familyErr },
			}.load()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
			} else {
				if !errors.Is(err, ErrModuleUnavailable) {
					t.Fatalf("err = %v, want ErrModuleUnavailable", err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q\nwant it to contain %q", err, tt.wantErr)
				}
				if tt.loadErr != nil && !errors.Is(err, tt.loadErr) {
					t.Errorf("error %v does not wrap %v", err, tt.loadErr)
				}
			}
			if len(fk.loads) != tt.wantLoads {
				t.Errorf("kmod loads %v, want %d", fk.loads, tt.wantLoads)
			}
			if len(fk.loads) > 0 && fk.loads[0] != "nbd nbds_max=0 0" {
				t.Errorf("kmod load %q, want %q", fk.loads[0], "nbd nbds_max=0 0")
			}
			if tt.sysModule == present && families != 0 {
				t.Error("looked up the family although the module is present")
			}
		})
	}
}

func TestModuleInitFlags(t *testing.T) {
	for path, want := range map[string]int{
		"/lib/modules/6.1.0-x/kernel/drivers/block/nbd.ko":    0,
		"/lib/modules/6.12.x/kernel/drivers/block/nbd.ko.xz":  unix.MODULE_INIT_COMPRESSED_FILE,
		"/lib/modules/6.12.x/kernel/drivers/block/nbd.ko.zst": unix.MODULE_INIT_COMPRESSED_FILE,
		"/lib/modules/6.12.x/kernel/drivers/block/nbd.ko.gz":  unix.MODULE_INIT_COMPRESSED_FILE,
		"/lib/modules/6.12.x/kernel/drivers/block/nbd.ko.bak": 0,
	} {
		if got := moduleInitFlags(path, 0); got != want {
			t.Errorf("moduleInitFlags(%q) = %d, want %d", path, got, want)
		}
	}
}

// On this project's hosts the kernel has no nbd module and no
// modules.dep: LoadModule must fail cleanly. Elsewhere it would really load
// nbd, so it only runs where it cannot succeed, or when asked to.
func TestLoadModuleHost(t *testing.T) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	_, depErr := os.Stat(filepath.Join("/lib/modules", release, "modules.dep"))
	_, sysErr := os.Stat("/sys/module/nbd")
	if depErr == nil && os.Getenv("BLKREP_TEST_LOAD_NBD") == "" {
		t.Skip("modules.dep present: LoadModule could load nbd into this kernel; set BLKREP_TEST_LOAD_NBD=1 to run")
	}
	err := LoadModule(nil)
	t.Logf("LoadModule: %v", err)
	if sysErr == nil || depErr == nil {
		return // may legitimately succeed
	}
	if err == nil {
		// No modules.dep, yet the family lookup auto-loaded nbd.
		if _, serr := os.Stat("/sys/module/nbd"); serr != nil {
			t.Fatal("LoadModule succeeded but /sys/module/nbd is absent")
		}
		return
	}
	if !errors.Is(err, ErrModuleUnavailable) {
		t.Fatalf("err = %v, want ErrModuleUnavailable", err)
	}
	if !strings.HasPrefix(err.Error(), "nbd module not available: ") || !strings.Contains(err.Error(), "modules.dep") {
		t.Errorf("unclear error: %q", err)
	}
}
