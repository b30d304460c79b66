package interop

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNbdinfo checks what libnbd's nbdinfo learns from the handshake: size,
// block sizes, every capability, read-only, the export list, and the
// allocation map of a freshly created (sparse) volume.
func TestNbdinfo(t *testing.T) {
	requireTools(t, "nbdinfo")
	d := startDaemon(t, daemonOpts{tcp: true})
	nbdinfo := func(args ...string) cmdResult {
		t.Helper()
		return runCmd(t, 30*time.Second, nil, "nbdinfo", args...)
	}

	for _, uri := range []string{d.unixURI(), d.tcpURI()} {
		r := nbdinfo("--size", uri)
		if r.code != 0 || strings.TrimSpace(r.stdout) != strconv.FormatInt(d.size, 10) {
			t.Errorf("nbdinfo --size %s: want %d\n%s", uri, d.size, r)
		}
	}

	r := nbdinfo("--json", d.unixURI())
	var info struct {
		Protocol   string `json:"protocol"`
		Structured bool   `json:"structured"`
		Exports    []struct {
			Name        string   `json:"export-name"`
			Description string   `json:"description"`
			Size        int64    `json:"export-size"`
			Contexts    []string `json:"contexts"`
			ReadOnly    bool     `json:"is_read_only"`
			MinBS       uint32   `json:"block_size_minimum"`
			PrefBS      uint32   `json:"block_size_preferred"`
			MaxBS       uint32   `json:"block_size_maximum"`
		} `json:"exports"`
	}
	if r.code != 0 {
		t.Fatalf("nbdinfo --json:\n%s", r)
	}
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil {
		t.Fatalf("nbdinfo --json output: %v\n%s", err, r)
	}
	if info.Protocol != "newstyle-fixed" || !info.Structured || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo --json: protocol %q structured %v, %d exports\n%s", info.Protocol, info.Structured, len(info.Exports), r.stdout)
	}
	e := info.Exports[0]
	if e.Name != volumeName || e.Size != d.size || e.ReadOnly || e.Description != "blkrep interop test volume" {
		t.Errorf("nbdinfo --json export: %+v", e)
	}
	if e.MinBS != 512 || e.PrefBS != 4096 || e.MaxBS != 32<<20 {
		t.Errorf("block sizes %d/%d/%d, want 512/4096/%d", e.MinBS, e.PrefBS, e.MaxBS, 32<<20)
	}
	if len(e.Contexts) != 1 || e.Contexts[0] != metaContextAllocation {
		t.Errorf("meta contexts %q, want [base:allocation]", e.Contexts)
	}

	// --can exits 0 for yes, 2 for no.
	for _, c := range []string{"flush", "fua", "trim", "zero", "fast-zero", "multi-conn", "cache", "structured-reply", "df"} {
		for _, uri := range []string{d.unixURI(), d.tcpURI()} {
			if r := nbdinfo("--can", c, uri); r.code != 0 {
				t.Errorf("nbdinfo --can %s %s: exit %d, want 0 (yes)\n%s", c, uri, r.code, r)
			}
		}
	}
	if r := nbdinfo("--is", "read-only", d.unixURI()); r.code != 2 {
		t.Errorf("nbdinfo --is read-only: exit %d, want 2 (no)\n%s", r.code, r)
	}
	if r := nbdinfo("--is", "rotational", d.unixURI()); r.code != 2 {
		t.Errorf("nbdinfo --is rotational: exit %d, want 2 (no)\n%s", r.code, r)
	}

	// --list through the socket.
	r = nbdinfo("--list", "--json", d.unixURI())
	var list struct {
		Exports []struct {
			Name string `json:"export-name"`
		} `json:"exports"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); r.code != 0 || err != nil {
		t.Fatalf("nbdinfo --list --json: %v\n%s", err, r)
	}
	if len(list.Exports) != 1 || list.Exports[0].Name != volumeName {
		t.Errorf("nbdinfo --list: %+v, want exactly %q", list.Exports, volumeName)
	}
	if r := nbdinfo("--list", d.unixURI()); r.code != 0 || !strings.Contains(r.stdout, `export="r0"`) {
		t.Errorf("nbdinfo --list does not show r0:\n%s", r)
	}

	// An unknown export is refused with an error, not a hang.
	bad := "nbd+unix:///no-such-volume?socket=" + d.sockPath
	if r := nbdinfo("--size", bad); r.code == 0 {
		t.Errorf("nbdinfo on an unknown export succeeded:\n%s", r)
	}

	// --map: a fresh volume is one hole; after writing the first MiB it is
	// data, then hole,zero to the end.
	checkMap := func(want []mapExtent) {
		t.Helper()
		r := nbdinfo("--map", "--json", d.unixURI())
		if r.code != 0 {
			t.Fatalf("nbdinfo --map:\n%s", r)
		}
		var got []mapExtent
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("nbdinfo --map --json: %v\n%s", err, r)
		}
		got = mergeExtents(got)
		if len(got) != len(want) {
			t.Fatalf("nbdinfo --map: %+v, want %+v", got, want)
		}
		for i := range got {
			if got[i].Offset != want[i].Offset || got[i].Length != want[i].Length || got[i].Type != want[i].Type {
				t.Fatalf("nbdinfo --map: %+v, want %+v", got, want)
			}
		}
	}
	checkMap([]mapExtent{{0, d.size, 3, "hole,zero"}})
	s := d.connect(t, sessionOpts{})
	s.mustWrite(0, randBytes(t, 1<<20))
	s.disconnect()
	checkMap([]mapExtent{{0, 1 << 20, 0, "data"}, {1 << 20, d.size - 1<<20, 3, "hole,zero"}})
	r = nbdinfo("--map", d.unixURI())
	if !strings.Contains(r.stdout, "data") || !strings.Contains(r.stdout, "hole,zero") {
		t.Errorf("nbdinfo --map text output:\n%s", r)
	}
	if st := d.stats(t); st.BlockStatus == 0 {
		t.Errorf("nbdinfo --map sent no NBD_CMD_BLOCK_STATUS (counters %+v)", st)
	}
}

type mapExtent struct {
	Offset      int64  `json:"offset"`
	Length      int64  `json:"length"`
	Type        uint32 `json:"type"`
	Description string `json:"description"`
}

// mergeExtents joins adjacent extents of the same type (a server may split
// them anywhere).
func mergeExtents(in []mapExtent) []mapExtent {
	var out []mapExtent
	for _, e := range in {
		if n := len(out); n > 0 && out[n-1].Type == e.Type && out[n-1].Offset+out[n-1].Length == e.Offset {
			out[n-1].Length += e.Length
			continue
		}
		out = append(out, e)
	}
	return out
}
