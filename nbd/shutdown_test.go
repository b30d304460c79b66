package nbd

import (
	"testing"
	"time"
)

// A client stuck in the handshake must not hold up Shutdown.
func TestShutdownCutsHandshakes(t *testing.T) {
	s, path := startServer(t, newMem(t, 1<<20), 1<<20, nil)
	cl := dial(t, path) // greeted, never answers
	start := time.Now()
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second { // the handshake timeout is 5s
		t.Fatalf("Shutdown took %v with a client in the handshake", d)
	}
	if !cl.closed() {
		t.Fatal("handshaking client not disconnected")
	}
}
