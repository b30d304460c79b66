package interop

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fioReport is the part of fio's JSON output the tests look at.
type fioReport struct {
	Jobs []struct {
		Name  string `json:"jobname"`
		Error int    `json:"error"`
		Read  struct {
			IOBytes  int64 `json:"io_bytes"`
			TotalIOs int64 `json:"total_ios"`
		} `json:"read"`
		Write struct {
			IOBytes  int64 `json:"io_bytes"`
			TotalIOs int64 `json:"total_ios"`
		} `json:"write"`
	} `json:"jobs"`
}

// runFio runs fio with the nbd ioengine in dir and returns its report; it
// fails the test on a non-zero exit or any job error.
func runFio(t *testing.T, dir string, args ...string) fioReport {
	t.Helper()
	out := filepath.Join(dir, "fio.json")
	args = append([]string{"--ioengine=nbd", "--output-format=json", "--output=" + out, "--verify_state_save=0"}, args...)
	r := runCmdIn(t, dir, 120*time.Second, nil, "fio", args...)
	b, _ := os.ReadFile(out)
	if r.code != 0 {
		t.Fatalf("fio failed:\n%s\n--- report\n%s", r, b)
	}
	var rep fioReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("fio report: %v\n%s", err, b)
	}
	if len(rep.Jobs) == 0 {
		t.Fatalf("fio report has no jobs:\n%s", b)
	}
	for _, j := range rep.Jobs {
		if j.Error != 0 {
			t.Fatalf("fio job %s: error %d\n%s", j.Name, j.Error, b)
		}
	}
	return rep
}

// TestFio runs fio's nbd engine (libnbd) against blkrepd: a mixed random
// workload, 4 KiB reads and 64 KiB writes at queue depth 32 from two jobs,
// verified with crc32c; a check that verification through this engine does
// catch corruption; and a write+flush workload over TCP.
func TestFio(t *testing.T) {
	requireTools(t, "fio")
	d := startDaemon(t, daemonOpts{tcp: true})
	dir := t.TempDir()

	t.Run("randrw-verify", func(t *testing.T) {
		before := d.stats(t)
		rep := runFio(t, dir, "--name=randrw", "--uri="+d.unixURI(),
			"--rw=randrw", "--bs=4k,64k", "--iodepth=32", "--numjobs=2",
			"--size=64m", "--offset_increment=64m", // job n works on [n*64m, n*64m+64m)
			"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--group_reporting")
		after := d.stats(t)
		j := rep.Jobs[0]
		t.Logf("fio randrw: read %d MiB in %d I/Os (verification included), wrote %d MiB in %d I/Os",
			j.Read.IOBytes>>20, j.Read.TotalIOs, j.Write.IOBytes>>20, j.Write.TotalIOs)
		if j.Write.IOBytes < 32<<20 || j.Read.IOBytes < j.Write.IOBytes {
			t.Errorf("fio wrote %d bytes and read %d: want >= 32 MiB written and all of it read back for verification", j.Write.IOBytes, j.Read.IOBytes)
		}
		if got := after.BytesWritten - before.BytesWritten; got != uint64(j.Write.IOBytes) {
			t.Errorf("daemon counted %d bytes written, fio %d", got, j.Write.IOBytes)
		}
		if after.Errors != before.Errors {
			t.Errorf("daemon counted %d refused or failed requests", after.Errors-before.Errors)
		}
	})

	t.Run("verify-catches-corruption", func(t *testing.T) {
		// The verification above is only worth something if it can fail:
		// write a verified region, check it, corrupt one block behind
		// fio's back, and expect fio to notice.
		const off = 200 << 20
		job := []string{"--name=catch", "--uri=" + d.unixURI(), "--rw=write", "--bs=64k", "--size=8m",
			"--offset=200m", "--verify=crc32c"}
		runFio(t, dir, append(job, "--do_verify=0")...)
		runFio(t, dir, append(job, "--verify_only")...)
		s := d.connect(t, sessionOpts{})
		s.mustWrite(off+64<<10, randBytes(t, 4096))
		s.disconnect()
		out := filepath.Join(dir, "catch.json")
		r := runCmdIn(t, dir, 60*time.Second, nil, "fio", append([]string{"--ioengine=nbd", "--verify_state_save=0",
			"--output=" + out, "--verify_fatal=1", "--verify_only"}, job...)...)
		b, _ := os.ReadFile(out)
		if r.code == 0 {
			t.Fatalf("fio --verify_only passed over a corrupted block: verification through the nbd engine is not effective\n%s\n%s", r, b)
		}
	})

	t.Run("write-flush-tcp", func(t *testing.T) {
		before := d.stats(t)
		rep := runFio(t, dir, "--name=wflush", "--uri="+d.tcpURI(),
			"--rw=randwrite", "--bs=4k", "--iodepth=1", "--fsync=1",
			"--offset=128m", "--size=16m", "--runtime=3", "--time_based")
		after := d.stats(t)
		writes, flushes := after.Writes-before.Writes, after.Flushes-before.Flushes
		t.Logf("fio write+flush over TCP: %d writes, %d flushes in 3s", writes, flushes)
		if w := uint64(rep.Jobs[0].Write.TotalIOs); writes != w || w < 100 {
			t.Errorf("daemon counted %d writes, fio %d (want at least 100 in 3s)", writes, w)
		}
		// --fsync=1: a flush after every write (the last one may be cut
		// off by the runtime).
		if flushes+1 < writes {
			t.Errorf("%d flushes for %d writes with --fsync=1", flushes, writes)
		}
		if after.Errors != before.Errors {
			t.Errorf("daemon counted %d refused or failed requests", after.Errors-before.Errors)
		}
	})
	d.checkServing(t)
}
