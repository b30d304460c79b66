package testnet

import (
	"fmt"
	"net"
	"strconv"
	"testing"
)

// Addresses are distinct, bindable and below the ephemeral range.
func TestAddr(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		a := MustAddr(t)
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
		_, ps, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(ps)
		if p < lowPort || p >= highPort {
			t.Fatalf("port %d outside %d-%d", p, lowPort, highPort)
		}
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("cannot bind %s: %v", a, err)
		}
		l.Close()
	}
}

func TestRelease(t *testing.T) {
	a, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(a)
	var p int
	fmt.Sscan(port, &p)
	mu.Lock()
	held := given[p]
	mu.Unlock()
	Release(a)
	mu.Lock()
	after := given[p]
	mu.Unlock()
	if !held || after {
		t.Fatalf("port %d: handed out %v, still handed out after Release %v", p, held, after)
	}
}
