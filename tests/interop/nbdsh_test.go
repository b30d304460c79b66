package interop

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runNbdsh runs a script from testdata in nbdsh (Debian's python3 first on
// PATH: python3-libnbd lives there) connected to uri, and returns the JSON
// object the script prints last.
func runNbdsh(t *testing.T, uri, script string, env ...string) result {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join("testdata", script))
	if err != nil {
		t.Fatal(err)
	}
	env = append(env, "PATH=/usr/bin:/bin:"+os.Getenv("PATH"), "INTEROP_URI="+uri)
	r := runCmd(t, 60*time.Second, env, "nbdsh", "--base-allocation", "-u", uri, "-c", "exec(open("+strconv.Quote(abs)+").read())")
	if r.code != 0 {
		t.Fatalf("nbdsh script failed:\n%s", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var out result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &out); err != nil {
		t.Fatalf("nbdsh output is not JSON: %v\n%s", err, r)
	}
	return out
}

// result is a typed view of the script's JSON.
type result map[string]json.RawMessage

func (r result) get(t *testing.T, key string, v any) {
	t.Helper()
	raw, ok := r[key]
	if !ok {
		t.Fatalf("nbdsh result lacks %q", key)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("nbdsh result %q = %s: %v", key, raw, err)
	}
}

func (r result) errno(t *testing.T, key string) uint32 {
	t.Helper()
	var v int64
	r.get(t, key, &v)
	return uint32(v)
}

func (r result) boolean(t *testing.T, key string) bool {
	t.Helper()
	var v bool
	r.get(t, key, &v)
	return v
}

// TestNbdsh drives libnbd through nbdsh with strict mode off, so that the
// server (not libnbd) judges bounds, alignment, flags and sizes; then FUA
// on trim and zero, block status, and NBD_CMD_DISC with requests in flight.
func TestNbdsh(t *testing.T) {
	requireTools(t, "nbdsh")
	d := startDaemon(t, daemonOpts{})
	before := d.stats(t)
	const base = 64 << 20
	r := runNbdsh(t, d.unixURI(), "nbdsh_semantics.py", "INTEROP_BASE="+strconv.Itoa(base))

	var bs []uint32
	r.get(t, "block_size", &bs)
	if len(bs) != 3 || bs[0] != 512 || bs[1] != 4096 || bs[2] != 32<<20 {
		t.Errorf("libnbd block sizes %v, want [512 4096 %d]", bs, 32<<20)
	}
	if !r.boolean(t, "structured") || !r.boolean(t, "can_meta") || !r.boolean(t, "can_fua") {
		t.Errorf("libnbd negotiated structured=%s base:allocation=%s fua=%s", r["structured"], r["can_meta"], r["can_fua"])
	}

	serverErrors := 0
	for _, c := range []struct {
		key  string
		want uint32
	}{
		{"oob_pread_at_end", errnoEINVAL},
		{"oob_pread_across_end", errnoEINVAL},
		{"oob_pwrite_at_end", errnoENOSPC},
		{"oob_pwrite_across_end", errnoENOSPC},
		{"oob_trim", errnoENOSPC},
		{"oob_zero", errnoENOSPC},
		{"misaligned_pread_offset", errnoEINVAL},
		{"misaligned_pread_length", errnoEINVAL},
		{"misaligned_pwrite", errnoEINVAL},
		{"pread_no_hole", errnoEINVAL},
		{"pwrite_req_one", errnoEINVAL},
		{"flush_fast_zero", errnoEINVAL},
		{"zero_len_pread", 0},
		{"zero_len_pread_at_end", 0},
		{"zero_len_pwrite", 0},
		{"zero_len_trim", 0},
		{"zero_len_zero", 0},
		{"zero_len_cache", 0},
		{"trim_fua", 0},
		{"zero_fua", 0},
		{"zero_no_hole", 0},
		{"zero_fast", 0},
		{"cache", 0},
	} {
		expectErrno(t, "nbdsh "+c.key, r.errno(t, c.key), c.want)
		if c.want != 0 {
			serverErrors++
		}
	}
	for _, k := range []string{"bad_flags_left_disk_alone", "in_sync_after_errors", "zero_fua_reads_zero", "zero_no_hole_reads_zero", "zero_fast_reads_zero"} {
		if !r.boolean(t, k) {
			t.Errorf("nbdsh %s: false", k)
		}
	}
	// The errors came from the server, not from libnbd's own checks.
	after := d.stats(t)
	if got := after.Errors - before.Errors; got != uint64(serverErrors) {
		t.Errorf("daemon counted %d refused requests, want %d (did libnbd refuse some itself?)", got, serverErrors)
	}

	// Block status over [B, B+4M) with data only at [B+1M, B+1M+256K).
	var ents, one []uint32
	r.get(t, "block_status", &ents)
	r.get(t, "block_status_req_one", &one)
	var ext []mapExtent
	pos := int64(0)
	for i := 0; i+1 < len(ents); i += 2 {
		ext = append(ext, mapExtent{Offset: pos, Length: int64(ents[i]), Type: ents[i+1] & 3})
		pos += int64(ents[i])
	}
	ext = mergeExtents(ext)
	want := []mapExtent{{0, 1 << 20, 3, ""}, {1 << 20, 256 << 10, 0, ""}, {1<<20 + 256<<10, 4<<20 - (1<<20 + 256<<10), 3, ""}}
	if len(ext) != len(want) {
		t.Errorf("block status of [B,B+4M): %+v, want %+v", ext, want)
	} else {
		for i := range ext {
			if ext[i] != want[i] {
				t.Errorf("block status of [B,B+4M): %+v, want %+v", ext, want)
				break
			}
		}
	}
	if len(one) != 2 || one[0] == 0 || one[0] > 1<<20 || one[1]&3 != 3 {
		t.Errorf("block status with REQ_ONE: %v, want one hole,zero extent of at most 1 MiB", one)
	}

	// DISC with requests in flight.
	var inFlight, completed int
	var discErrs, missing []int
	r.get(t, "disc_in_flight_at_shutdown", &inFlight)
	r.get(t, "disc_completed", &completed)
	r.get(t, "disc_errors", &discErrs)
	r.get(t, "disc_missing_writes", &missing)
	t.Logf("%d requests in flight when h.shutdown() sent NBD_CMD_DISC", inFlight)
	if inFlight == 0 {
		t.Errorf("no request was in flight at NBD_CMD_DISC: the test proves nothing")
	}
	if completed != 96 || len(discErrs) != 0 {
		t.Errorf("after NBD_CMD_DISC: %d of 96 writes completed, errors %v", completed, discErrs)
	}
	if len(missing) != 0 {
		t.Errorf("writes %v acknowledged before NBD_CMD_DISC are not visible to a new client", missing)
	}
	d.waitClients(t, 0)
	d.checkServing(t)
}
