package control

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func serve(t *testing.T, st func() Status) (*Client, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl")
	s, err := Listen(path, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Shutdown(t.Context()) })
	return NewClient(path), path
}

func TestStatusRoundTrip(t *testing.T) {
	cl, path := serve(t, func() Status {
		return Status{Schema: SchemaStatus, Node: "alpha", Volumes: []Volume{{Name: "r0", SizeBytes: 42}}}
	})
	st, err := cl.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Node != "alpha" || st.Volumes[0].SizeBytes != 42 {
		t.Fatalf("%+v", st)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v %v", fi.Mode(), err)
	}
}

func TestSchemaMismatchRefused(t *testing.T) {
	cl, _ := serve(t, func() Status { return Status{Schema: "blkrep.status/v999"} })
	if _, err := cl.Status(t.Context()); err == nil || !strings.Contains(err.Error(), "v999") {
		t.Fatalf("schema mismatch: %v", err)
	}
}

func TestUnknownEndpoint(t *testing.T) {
	cl, _ := serve(t, func() Status { return Status{Schema: SchemaStatus} })
	var v map[string]any
	err := cl.get(t.Context(), "/v1/nope", &v)
	if err == nil || !strings.Contains(err.Error(), "no such endpoint") {
		t.Fatalf("unknown endpoint: %v", err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://blkrepd/v1/status", nil)
	resp, err := cl.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatal("POST /v1/status accepted")
	}
}

func TestNotRunning(t *testing.T) {
	cl := NewClient(filepath.Join(t.TempDir(), "absent.ctl"))
	if _, err := cl.Status(t.Context()); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("absent socket: %v", err)
	}
}

func TestListenUnixRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	os.WriteFile(path, []byte("precious"), 0o600)
	if _, err := ListenUnix(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Fatal("file was replaced")
	}
}
