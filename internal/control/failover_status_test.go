package control

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestFailoverStatusJSON(t *testing.T) {
	f := Failover{Term: 3, Primary: "beta", IsPrimary: true, Accepting: true, Writes: "accept", WritesWaiting: 2,
		Quorum: true, Voters: []string{"alpha", "beta", "witness"}, VotersCounted: []string{"alpha", "beta", "witness"},
		VotersSeen: []string{"beta", "witness"}, OutdatedPeers: []string{"alpha"}, OutdatedConfirmed: []string{"alpha"}, Fenced: []string{},
		DataTerm: 3, Why: "primary of term 3 with a majority lease"}
	in := Status{Schema: SchemaStatus, Volumes: []Volume{{Name: "r0", Failover: &f}},
		WitnessVolumes: []WitnessVolume{{Name: "r1", Failover: f}},
		Gossip: &Gossip{Address: "10.0.0.2:7946", Witness: true, Members: []Member{
			{Name: "alpha", Address: "10.0.0.1:7946", State: "dead", Error: "bad meta"},
			{Name: "witness", Address: "10.0.0.9:7946", State: "alive", Witness: true}}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Status
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n%+v\n%+v", in, out)
	}
	for _, k := range []string{`"failover":{"term":3,"primary":"beta","is_primary":true,"accepting":true,"writes":"accept",` +
		`"writes_waiting":2,"quorum":true,"voters":["alpha","beta","witness"],"voters_counted":["alpha","beta","witness"],` +
		`"voters_seen":["beta","witness"],"outdated_peers":["alpha"],"outdated_confirmed":["alpha"],"fenced":[],"data_term":3,` +
		`"why":"primary of term 3 with a majority lease"}`,
		`"witness_volumes":[{"name":"r1","failover":{`,
		`"gossip":{"address":"10.0.0.2:7946","witness":true,"members":[{"name":"alpha","address":"10.0.0.1:7946","state":"dead","witness":false,"error":"bad meta"}`,
	} {
		if !strings.Contains(string(b), k) {
			t.Errorf("JSON lacks %s:\n%s", k, b)
		}
	}
	// Without failover, the document keeps its earlier form; a witness's
	// failover has no gate.
	b, _ = json.Marshal(Status{Volumes: []Volume{{Name: "r0"}}})
	for _, k := range []string{"failover", "gossip", "witness_volumes"} {
		if strings.Contains(string(b), k) {
			t.Errorf("status without failover has %q: %s", k, b)
		}
	}
	b, _ = json.Marshal(Failover{})
	if strings.Contains(string(b), `"writes"`) {
		t.Errorf("a witness's failover: %s", b)
	}
}
