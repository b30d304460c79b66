package kernel

import (
	"context"
	"errors"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func nbdLoaded() bool {
	_, err := os.Stat("/sys/module/nbd")
	return err == nil
}

func TestOpenWithoutModule(t *testing.T) {
	if nbdLoaded() {
		t.Skip("nbd is loaded on this host")
	}
	c, err := Open()
	if err == nil {
		c.Close()
		t.Skip("the family lookup auto-loaded nbd")
	}
	if !errors.Is(err, ErrNoFamily) {
		t.Fatalf("Open: %v, want ErrNoFamily", err)
	}
	if !errors.Is(err, unix.ENOENT) {
		t.Errorf("Open: %v does not wrap ENOENT", err)
	}
	t.Logf("Open: %v", err)
	if _, err := WatchLinkDead(context.Background()); !errors.Is(err, ErrNoFamily) {
		t.Errorf("WatchLinkDead: %v, want ErrNoFamily", err)
	}
}

// The watcher joins a group by id with NETLINK_ADD_MEMBERSHIP and stops on
// cancel. The nbd group is not available here; nlctrl's "notify" group is.
func TestWatchJoinAndCancel(t *testing.T) {
	fam, err := netlink.GenlFamilyGet("nlctrl")
	if err != nil {
		t.Skipf("nlctrl: %v", err)
	}
	var group uint32
	for _, g := range fam.Groups {
		if g.Name == "notify" {
			group = g.ID
		}
	}
	if group == 0 {
		t.Skip("no nlctrl notify group")
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := watchLinkDead(ctx, fam.ID, group)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("unexpected notification")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("channel not closed after cancel")
	}
}

func TestSetIOFlusher(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := SetIOFlusher(); err != nil {
		if errors.Is(err, unix.EINVAL) {
			t.Skipf("kernel without PR_SET_IO_FLUSHER: %v", err)
		}
		if errors.Is(err, unix.EPERM) {
			t.Skipf("no CAP_SYS_RESOURCE here (containers often drop it): %v", err)
		}
		t.Fatal(err)
	}
	on, err := ioFlusher()
	if err != nil || !on {
		t.Fatalf("PR_GET_IO_FLUSHER = %v, %v after SetIOFlusher", on, err)
	}
	// A thread started afterwards inherits the flag.
	got := make(chan bool)
	go func() {
		runtime.LockOSThread() // exits the thread with the goroutine
		on, _ := ioFlusher()
		got <- on
	}()
	if !<-got {
		t.Error("a goroutine's thread lacks the IO_FLUSHER flag")
	}
}

func TestLockMemory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs CAP_IPC_LOCK")
	}
	if err := LockMemory(); err != nil {
		t.Fatal(err)
	}
	defer unix.Munlockall()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range splitLines(string(b)) {
		if len(line) > 7 && line[:7] == "VmLck:\t" {
			t.Log(line)
			if line == "VmLck:\t       0 kB" {
				t.Error("nothing locked")
			}
			return
		}
	}
	t.Error("no VmLck in /proc/self/status")
}

func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}
