package failover

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStateRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "r0.failover.json")
	st, found, err := LoadState(p, "c", "r0", "alpha")
	if err != nil || found || st.Node != "alpha" || st.Voter.Term != 0 {
		t.Fatalf("missing file: %+v %v %v", st, found, err)
	}
	st.Voter = VoterRecord{Term: 4, VotedFor: "beta", Primary: "beta", PrimaryTerm: 4, LeaseSeq: 17, Outdated: []string{"alpha"}}
	st.DataTerm = 3
	if err := SaveState(p, st); err != nil {
		t.Fatal(err)
	}
	got, found, err := LoadState(p, "c", "r0", "alpha")
	if err != nil || !found {
		t.Fatalf("load: %v %v", found, err)
	}
	if got.Voter.Term != 4 || got.Voter.Primary != "beta" || got.DataTerm != 3 || len(got.Voter.Outdated) != 1 {
		t.Fatalf("got %+v", got)
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

func TestStateRejects(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, body, want string }{
		{"garbage", "{not json", "bad state file"},
		{"unknown field", `{"version":1,"cluster":"c","volume":"r0","node":"alpha","extra":1}`, "unknown field"},
		{"version", `{"version":2,"cluster":"c","volume":"r0","node":"alpha"}`, "version 2"},
		{"other node", `{"version":1,"cluster":"c","volume":"r0","node":"beta"}`, `node "beta", not`},
		{"other volume", `{"version":1,"cluster":"c","volume":"r1","node":"alpha"}`, `volume "r1"`},
		{"inconsistent", `{"version":1,"cluster":"c","volume":"r0","node":"alpha","voter":{"term":1,"primary":"x","primary_term":2}}`, "inconsistent voter record"},
		{"unsorted", `{"version":1,"cluster":"c","volume":"r0","node":"alpha","voter":{"term":1,"outdated":["b","a"]}}`, "inconsistent"},
	} {
		p := filepath.Join(dir, tc.name+".json")
		if err := os.WriteFile(p, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := LoadState(p, "c", "r0", "alpha")
		if err == nil || !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want ErrBadState naming the file and %q", tc.name, err, tc.want)
		}
	}
}
