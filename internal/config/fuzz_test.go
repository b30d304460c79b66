package config

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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
	f.Add(allKeys)
	f.Add(peers(threeVoters, ""))
	f.Add(peers(strings.Replace(threeVoters, "failover = true", "failover = true\nfailover_profile = \"fast\"", 1),
		"auto_promote = false\npreferred = \"beta\"\nquorum_loss = \"fail\"\nfence_peer = \"/bin/true\"\nhandler_timeout = \"1m\""))
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
	if c.Cluster.Secret != "" && c.Cluster.SecretFile != "" ||
		c.Cluster.Secret != "" && (len(c.Cluster.Secret) < MinSecretBytes || len(c.Cluster.Secret) > MaxSecretBytes) {
		t.Fatalf("cluster %+v", c.Cluster)
	}
	if c.Cluster.SecretFile != "" {
		abs("secret_file", c.Cluster.SecretFile)
	}
	for _, n := range c.Nodes {
		if !nameRE.MatchString(n.Name) {
			t.Fatalf("node name %q", n.Name)
		}
		if got, _ := c.Node(n.Name); got.Name != n.Name {
			t.Fatalf("Node(%q) = %+v", n.Name, got)
		}
		socket(n.ControlSocket)
		if n.Address != "" {
			if l, err := parseListen(n.Address); err != nil || l.wildcard {
				t.Fatalf("address %q: %v", n.Address, err)
			}
		}
		if _, err := parseListen(n.Metrics); n.Metrics != "" && err != nil {
			t.Fatalf("metrics %q: %v", n.Metrics, err)
		}
		if n.Gossip != "" {
			host, _, _ := net.SplitHostPort(n.Gossip)
			if l, err := parseListen(n.Gossip); err != nil || l.wildcard {
				t.Fatalf("gossip %q: %v", n.Gossip, err)
			} else if ip, err := netip.ParseAddr(host); err != nil || ip.Zone() != "" {
				t.Fatalf("gossip %q: host not a literal IP", n.Gossip)
			}
		}
		if n.Witness && (!c.Cluster.Failover || c.LocalReplicas(n.Name) != nil) {
			t.Fatalf("witness %q: failover %v, replicas %+v", n.Name, c.Cluster.Failover, c.LocalReplicas(n.Name))
		}
	}
	checkFailoverCluster(t, &c.Cluster)
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
		checkReplication(t, &v)
		checkFailover(t, c, &v)
		if v.Replicated() && c.Cluster.Secret == "" && c.Cluster.SecretFile == "" {
			t.Fatalf("replicated volume %q without a secret", v.Name)
		}
		for i := range v.Replicas {
			r := &v.Replicas[i]
			n, ok := c.Node(r.Node)
			if !ok {
				t.Fatalf("replica on unknown node %q", r.Node)
			}
			if v.Replicated() && n.Address == "" {
				t.Fatalf("node %q holds a replica of replicated volume %q without an address", n.Name, v.Name)
			}
			if len(v.Peers(r.Node)) != len(v.Replicas)-1 {
				t.Fatalf("Peers(%q) = %q", r.Node, v.Peers(r.Node))
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

func checkReplication(t *testing.T, v *Volume) {
	t.Helper()
	in := func(d, lo, hi time.Duration) bool { return d >= lo && d <= hi }
	if !slices.Contains([]string{ProtocolA, ProtocolB, ProtocolC}, v.Protocol) ||
		!in(v.PingInterval, MinPingInterval, MaxPingInterval) || !in(v.PingTimeout, MinPingTimeout, MaxPingTimeout) ||
		v.PingTimeout >= v.PingInterval || !in(v.Timeout, MinTimeout, MaxTimeout) ||
		!in(v.ConnectInterval, MinConnectInterval, MaxConnectInterval) ||
		v.MaxEpochWrites < 1 || v.MaxEpochWrites > MaxEpochWritesLimit ||
		v.ResyncRateMax < 0 || v.ResyncRateMin <= 0 || v.ResyncRateMax != 0 && v.ResyncRateMin > v.ResyncRateMax ||
		v.ResyncInFlight < MinResyncInFlight || v.ResyncInFlight > MaxResyncInFlight ||
		!slices.Contains([]string{ResyncChecksumsAfterCrash, ResyncChecksumsAlways, ResyncChecksumsNever}, v.ResyncChecksums) ||
		!slices.Contains([]string{AfterSplitBrainDisconnect, AfterSplitBrainDiscardZeroChanges, AfterSplitBrainDiscardLeastChanges,
			AfterSplitBrainDiscardYoungerPrimary, AfterSplitBrainDiscardSecondary}, v.AfterSplitBrain) ||
		strings.IndexByte(v.SplitBrainHandler, 0) >= 0 {
		t.Fatalf("volume replication %+v", v)
	}
}

func checkFailoverCluster(t *testing.T, cl *Cluster) {
	t.Helper()
	want := Cluster{FailoverProfile: FailoverProfileDefault, FailoverProbeInterval: DefaultFailoverProbeInterval, FailoverProbeTimeout: DefaultFailoverProbeTimeout,
		FailoverSuspicionMult: DefaultFailoverSuspicionMult, FailoverLease: DefaultFailoverLease}
	if cl.FailoverProfile == FailoverProfileFast {
		want = Cluster{FailoverProfile: FailoverProfileFast, FailoverProbeInterval: FastFailoverProbeInterval, FailoverProbeTimeout: FastFailoverProbeTimeout,
			FailoverSuspicionMult: FastFailoverSuspicionMult, FailoverLease: FastFailoverLease}
	}
	got := Cluster{FailoverProfile: cl.FailoverProfile, FailoverProbeInterval: cl.FailoverProbeInterval, FailoverProbeTimeout: cl.FailoverProbeTimeout,
		FailoverSuspicionMult: cl.FailoverSuspicionMult, FailoverLease: cl.FailoverLease}
	if got != want || cl.FailoverProbeTimeout >= cl.FailoverProbeInterval {
		t.Fatalf("cluster failover %+v", cl)
	}
}

func checkFailover(t *testing.T, c *Config, v *Volume) {
	t.Helper()
	if v.Failover != (c.Cluster.Failover && v.Replicated()) ||
		!slices.Contains([]string{QuorumLossSuspend, QuorumLossFail}, v.QuorumLoss) ||
		v.HandlerTimeout < MinHandlerTimeout || v.HandlerTimeout > MaxHandlerTimeout {
		t.Fatalf("volume failover %+v", v)
	}
	if _, ok := v.Replica(v.Preferred); !ok {
		t.Fatalf("preferred %q holds no replica of %q", v.Preferred, v.Name)
	}
	for _, h := range []string{v.AfterPromote, v.BeforeDemote, v.FencePeer, v.QuorumLost} {
		if strings.IndexByte(h, 0) >= 0 {
			t.Fatalf("handler %q", h)
		}
	}
	voters := v.Voters(c)
	if !slices.IsSorted(voters) || len(slices.Compact(slices.Clone(voters))) != len(voters) {
		t.Fatalf("Voters = %q", voters)
	}
	if !v.Failover {
		if !v.AutoPromote || v.Preferred != v.Replicas[0].Node || v.QuorumLoss != DefaultQuorumLoss || v.HandlerTimeout != DefaultHandlerTimeout ||
			v.AfterPromote != "" || v.BeforeDemote != "" || v.FencePeer != "" || v.QuorumLost != "" {
			t.Fatalf("failover keys set on volume %+v", v)
		}
		return
	}
	if len(voters) < MinFailoverVoters {
		t.Fatalf("volume %q fails over with voters %q", v.Name, voters)
	}
	for _, name := range voters {
		if n, ok := c.Node(name); !ok || n.Gossip == "" {
			t.Fatalf("voter %q of %q has no gossip address", name, v.Name)
		}
	}
}
