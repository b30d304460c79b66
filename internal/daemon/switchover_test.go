package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/control"
)

// blkrep failover: alpha, the primary, hands over to beta (its
// before-demote handler runs first, beta's after-promote after), beta has
// alpha's acknowledged write and accepts writes within a second or two;
// refusals name the problem and change nothing; then back to alpha.
func TestDaemonSwitchover(t *testing.T) {
	c := startFailoverCluster(t, foOptions{VolumeKeys: "before_demote = \"echo $BLKREP_NODE >> {dir}/before-demote\"\n" +
		"after_promote = \"echo $BLKREP_NODE >> {dir}/after-promote\"\n"})
	ds, dir := c.ds, c.dir
	wait := func(what string, d time.Duration, cond func() bool) { t.Helper(); waitUntil(t, what, d, cond) }
	a, b := ds["alpha"].volumes[0], ds["beta"].volumes[0]
	inSync := peerInSync
	wait("alpha Primary and accepting", 20*time.Second, func() bool { return accepting(a) })
	wait("beta in sync", 20*time.Second, func() bool { return inSync(a) })
	block := make([]byte, 4096)
	copy(block, "acknowledged by alpha")
	if _, err := a.rep.WriteAt(block, 8192); err != nil {
		t.Fatal(err)
	}
	do := func(node string, req control.Request) (control.Reply, error) {
		return ds[node].Do(context.Background(), req)
	}
	refused := func(node string, req control.Request, want string) {
		t.Helper()
		_, err := do(node, req)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s %+v: %v, want a refusal with %q", node, req, err, want)
		}
	}
	failover := control.Request{Volume: "r0", Action: control.ActionFailover}
	refused("beta", failover, "run it on alpha")
	refused("alpha", control.Request{Volume: "r0", Action: control.ActionFailover, To: "witness"}, "holds no replica")
	refused("alpha", control.Request{Volume: "r0", Action: control.ActionFailover, To: "alpha"}, "already the primary")
	if !accepting(a) {
		t.Fatal("a refused switchover left alpha not accepting writes")
	}

	start := time.Now()
	rep, err := do("alpha", failover)
	if err != nil {
		t.Fatalf("failover: %v", err)
	}
	t.Logf("%s (the command took %v)", rep.Message, time.Since(start).Round(time.Millisecond))
	wait("beta accepting", 5*time.Second, func() bool { return accepting(b) })
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the switchover took %v: it must not wait for a lease", took)
	}
	if a.vol.Primary() {
		t.Fatal("alpha is still Primary")
	}
	got := make([]byte, 4096)
	if _, err := b.rep.ReadAt(got, 8192); err != nil || string(got[:21]) != "acknowledged by alpha" {
		t.Fatalf("beta lacks alpha's acknowledged write: %q, %v", got[:21], err)
	}
	copy(block, "acknowledged by beta")
	if _, err := b.rep.WriteAt(block, 12288); err != nil {
		t.Fatal(err)
	}
	wait("the handlers", 5*time.Second, func() bool {
		bd, _ := os.ReadFile(filepath.Join(dir, "before-demote"))
		ap, _ := os.ReadFile(filepath.Join(dir, "after-promote"))
		return string(bd) == "alpha\n" && strings.Contains(string(ap), "beta\n")
	})

	// And back: alpha must be in sync again first.
	wait("alpha in sync", 20*time.Second, func() bool { return inSync(b) })
	if _, err := do("beta", control.Request{Volume: "r0", Action: control.ActionFailover, To: "alpha"}); err != nil {
		t.Fatalf("failover back: %v", err)
	}
	wait("alpha accepting again", 5*time.Second, func() bool { return accepting(a) })
	if _, err := a.rep.ReadAt(got, 12288); err != nil || string(got[:20]) != "acknowledged by beta" {
		t.Fatalf("alpha lacks beta's acknowledged write: %q, %v", got[:20], err)
	}

	// blkrep secondary on alpha: nobody is primary while alpha lives;
	// blkrep primary on beta: beta is elected at once.
	wait("beta in sync", 20*time.Second, func() bool { return inSync(a) })
	if _, err := do("alpha", control.Request{Volume: "r0", Action: control.ActionSecondary}); err != nil {
		t.Fatalf("secondary: %v", err)
	}
	time.Sleep(2 * time.Second)
	if a.vol.Primary() || b.vol.Primary() {
		t.Fatalf("a primary after the operator's step down: alpha %v, beta %v", a.vol.Primary(), b.vol.Primary())
	}
	rep, err = do("beta", control.Request{Volume: "r0", Action: control.ActionPrimary})
	if err != nil {
		t.Fatalf("primary on beta: %v", err)
	}
	t.Log(rep.Message)
	if !accepting(b) {
		t.Fatal("beta does not accept writes after blkrep primary said so")
	}
}
