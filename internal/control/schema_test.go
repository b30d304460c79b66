package control

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestPeerStatusRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	fin := at.Add(time.Minute)
	in := Status{Schema: SchemaStatus, Volumes: []Volume{{Name: "r0", Protocol: "C", Peers: []Peer{{
		Node: "beta", Address: "10.0.0.2:7789", Connection: "Connected", Replication: "SyncSource",
		Role: "Secondary", Disk: "Inconsistent", OutOfSyncBytes: 1 << 20, UnackedBytes: 4096, InFlightWrites: 1,
		Handshake:  &Handshake{At: at, Rule: "peer-current-in-local-history", Action: "source-bitmap", LocalCurrent: "00000000000000AB", PeerCurrent: "00000000000000AA"},
		Resync:     &Progress{Running: true, Checksum: true, TotalBytes: 2 << 20, DoneBytes: 1 << 20, SkippedBytes: 4096, RateBytesPerSec: 1.5e6, ETASeconds: 0.7, StartedAt: at},
		Verify:     &Progress{TotalBytes: 8192, DoneBytes: 8192, MismatchBytes: 4096, StartedAt: at, FinishedAt: &fin},
		SplitBrain: true, LastError: "x", SentBytes: 1, ReceivedBytes: 2, Reconnects: 3,
	}}}}}
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
	// A volume without peers keeps its v1 form.
	b, _ = json.Marshal(Volume{Name: "r0"})
	if strings.Contains(string(b), "peers") || strings.Contains(string(b), "protocol") {
		t.Errorf("peerless volume: %s", b)
	}
}

// jsonNames lists the JSON field names of t and the structs it holds.
func jsonNames(t reflect.Type, seen map[reflect.Type]bool, names map[string]string) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] || t == reflect.TypeFor[time.Time]() {
		return
	}
	seen[t] = true
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		names[name] = t.Name()
		jsonNames(f.Type, seen, names)
	}
}

// TestDocsCoverSchema: every field of the documents the control API sends
// is in docs/control-api.md, as `name`, `parent.name`, `name[]` or `name.child`.
func TestDocsCoverSchema(t *testing.T) {
	doc, err := os.ReadFile("../../docs/control-api.md")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	seen := map[reflect.Type]bool{}
	for _, v := range []any{Status{}, Event{}, Request{}, Reply{}} {
		jsonNames(reflect.TypeOf(v), seen, names)
	}
	for name, typ := range names {
		if !regexp.MustCompile("[`.]" + regexp.QuoteMeta(name) + "(`|\\[\\]`|\\.)").Match(doc) {
			t.Errorf("docs/control-api.md does not document %s field %q", typ, name)
		}
	}
	for _, a := range actions {
		if !strings.Contains(string(doc), "`"+a+"`") {
			t.Errorf("docs/control-api.md does not document action %q", a)
		}
	}
	for _, k := range []string{EventRole, EventConnection, EventReplication, EventDisk, EventSplitBrain, EventResyncDone, EventVerifyDone, EventHandshake, EventError, EventFailover, EventFailoverHandler} {
		if !strings.Contains(string(doc), "`"+k+"`") {
			t.Errorf("docs/control-api.md does not document event kind %q", k)
		}
	}
}
