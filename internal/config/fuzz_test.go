package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/blkrep/blkrep/activelog"
	"github.com/blkrep/blkrep/meta"
)

// FuzzParse: Parse never panics; it returns either an error made of *Error values
// wrapping ErrInvalid, or a Config that keeps the documented invariants.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("../../examples/standalone.toml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(example))
	f.Add(minimal)
	for _, tc := range parseErrorCases {
		f.Add(tc.toml)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse([]byte(in), testDir)
		if err != nil {
			if c != nil {
				t.Fatal("config returned with an error")
			}
			checkErrors(t, err)
			return
		}
		checkInvariants(t, c)
	})
}

func checkErrors(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("error does not wrap ErrInvalid: %v", err)
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok && !isError(err) {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		if !isError(e) {
			t.Fatalf("%T is not a *config.Error: %v", e, e)
		}
	}
}

func isError(err error) bool {
	_, ok := err.(*Error)
	return ok
}

func checkInvariants(t *testing.T, c *Config) {
	t.Helper()
	abs := func(what, p string) {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			t.Fatalf("%s %q is not absolute and clean", what, p)
		}
	}
	if c.Dir != testDir || len(c.Nodes) == 0 || len(c.Volumes) == 0 || !clusterNameRE.MatchString(c.Cluster.Name) {
		t.Fatalf("config %+v", c)
	}
	sockets := map[string]bool{}
	socket := func(p string) {
		abs("socket", p)
		if sockets[p] || len(p) > MaxUnixSocketPathBytes {
			t.Fatalf("socket %q repeated or too long", p)
		}
		sockets[p] = true
	}
	for _, n := range c.Nodes {
		if !nameRE.MatchString(n.Name) {
			t.Fatalf("node name %q", n.Name)
		}
		if got, _ := c.Node(n.Name); got.Name != n.Name {
			t.Fatalf("Node(%q) = %+v", n.Name, got)
		}
		socket(n.ControlSocket)
	}
	held := 0
	for _, v := range c.Volumes {
		if !nameRE.MatchString(v.Name) || v.SizeBytes <= 0 || v.SizeBytes%SizeAlignBytes != 0 ||
			v.BlockSize < MinBlockSize || v.BlockSize > MaxBlockSize || v.BlockSize&(v.BlockSize-1) != 0 ||
			v.DeviceTimeout < 0 || v.DeadConnTimeout < 0 || len(v.Description) > MaxDescriptionBytes || len(v.Replicas) == 0 {
			t.Fatalf("volume %+v", v)
		}
		if v.BytesPerBit < meta.MinBytesPerBit || v.BytesPerBit > meta.MaxBytesPerBit || v.BytesPerBit&(v.BytesPerBit-1) != 0 ||
			v.ALExtents < 1 || v.ALExtents > activelog.MaxExtents ||
			v.PeerSlots < meta.MinPeerSlots || v.PeerSlots > meta.MaxPeerSlots || v.PeerSlots < len(v.Replicas)-1 {
			t.Fatalf("volume metadata %+v", v)
		}
		for i := range v.Replicas {
			r := &v.Replicas[i]
			if _, ok := c.Node(r.Node); !ok {
				t.Fatalf("replica on unknown node %q", r.Node)
			}
			abs("disk", r.Disk)
			switch {
			case r.MetaInternal() == r.MetaNone():
				abs("meta_disk", r.MetaDisk)
				if r.MetaDisk == r.Disk || !r.MetaExternal() {
					t.Fatalf("meta_disk %q", r.MetaDisk)
				}
			case r.MetaNone() && len(v.Replicas) != 1:
				t.Fatalf("replicated volume without metadata")
			}
			lr := LocalReplica{&v, r}
			if n, err := lr.DiskBytes(); err != nil || n < v.SizeBytes {
				t.Fatalf("DiskBytes = %d, %v", n, err)
			}
			if n := lr.MetaFileBytes(); (n > 0) != r.MetaExternal() {
				t.Fatalf("MetaFileBytes = %d for meta_disk %q", n, r.MetaDisk)
			}
			if r.NBDSocket != "" {
				socket(r.NBDSocket)
			}
			if r.Device != "" && !deviceRE.MatchString(r.Device) {
				t.Fatalf("device %q", r.Device)
			}
		}
		held += len(v.Replicas)
	}
	for _, n := range c.Nodes {
		held -= len(c.LocalReplicas(n.Name))
	}
	if held != 0 {
		t.Fatalf("LocalReplicas over all nodes misses or repeats %d replicas", held)
	}
}
