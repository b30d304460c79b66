// Package testnet hands tests loopback addresses they can bind later.
//
// A port taken from the kernel with ":0" and closed again lies in the
// ephemeral range, where any outgoing connection on the machine may be
// given it before the test binds it again (CI saw exactly that: a node
// restarted in a fault test found its port used by a peer's dial). The
// ports handed out here lie below the ephemeral range, which the kernel
// never assigns on its own, so only another listener can take them.
package testnet

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
)

// Below Linux's default ephemeral range (32768-60999) and above the
// well-known and commonly configured service ports.
const (
	lowPort  = 20000
	highPort = 32000
)

var (
	mu    sync.Mutex
	given = map[int]bool{}
	rng   = rand.New(rand.NewPCG(uint64(os.Getpid()), 0x626c6b726570))
)

// Addr returns "127.0.0.1:PORT" for a port nobody listened on when it was
// chosen and that this process has not handed out before. Parallel test
// binaries pick from the same range with different seeds; a clash needs
// two of them to draw the same port and is caught by the bind check.
func Addr() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < 1000; i++ {
		p := lowPort + rng.IntN(highPort-lowPort)
		if given[p] {
			continue
		}
		a := fmt.Sprintf("127.0.0.1:%d", p)
		l, err := net.Listen("tcp", a)
		if err != nil {
			continue
		}
		l.Close()
		given[p] = true
		return a, nil
	}
	return "", fmt.Errorf("testnet: no free loopback port in %d-%d", lowPort, highPort)
}

// Release lets Addr hand out addr's port again: for harnesses that run
// thousands of clusters in one process (internal/torture), once nothing
// listens there any more.
func Release(addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return
	}
	mu.Lock()
	delete(given, p)
	mu.Unlock()
}

// TB is the part of testing.TB that MustAddr uses.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// MustAddr is Addr for tests: it fails the test when no port is free.
func MustAddr(t TB) string {
	t.Helper()
	a, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}
