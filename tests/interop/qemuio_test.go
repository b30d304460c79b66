package interop

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// runQemuIO runs qemu-io commands on one connection and asserts that all
// succeeded: exit status 0 (qemu-io exits 1 when any command failed) and
// no failure in the output.
func runQemuIO(t *testing.T, uri string, cmds ...string) cmdResult {
	t.Helper()
	args := []string{"-f", "raw", uri}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	r := runCmd(t, 60*time.Second, nil, "qemu-io", args...)
	out := r.stdout + r.stderr
	if r.code != 0 || strings.Contains(out, "verification failed") || strings.Contains(out, "failed:") ||
		strings.Contains(out, "error") || strings.Contains(out, "Parsing error") {
		t.Fatalf("qemu-io reported a failure:\n%s", r)
	}
	return r
}

// TestQemuIO drives blkrepd with qemu's NBD client over the unix socket and
// over TCP: pattern writes and reads, write-zeroes with and without unmap,
// FUA writes, discard, flush and overlapping asynchronous writes.
func TestQemuIO(t *testing.T) {
	requireTools(t, "qemu-io")
	d := startDaemon(t, daemonOpts{tcp: true})
	for _, tr := range []struct {
		name, uri string
		base      int64
	}{
		{"unix", d.unixURI(), 0},
		{"tcp", d.tcpURI(), 64 << 20},
	} {
		t.Run(tr.name, func(t *testing.T) {
			before := d.stats(t)
			b := tr.base
			at := func(off int64) string { return fmt.Sprint(b + off) }
			runQemuIO(t, tr.uri,
				// Patterns, including unaligned I/O that qemu turns into
				// read-modify-write.
				"write -P 0xab "+at(0)+" 1M",
				"read -P 0xab "+at(0)+" 1M",
				"write -P 0x5c "+at(1<<20+1000)+" 3000",
				"read -P 0 "+at(1<<20)+" 1000",
				"read -P 0x5c "+at(1<<20+1000)+" 3000",
				"read -P 0 "+at(1<<20+4000)+" 96",
				"read -P 0xab "+at(1<<20-512)+" 512",
				// Write-zeroes over data: -z (NO_HOLE), -z -u (may unmap), -z -f (FUA).
				"write -z "+at(0)+" 64k",
				"read -P 0 "+at(0)+" 64k",
				"read -P 0xab "+at(64<<10)+" 64k",
				"write -z -u "+at(128<<10)+" 128k",
				"read -P 0 "+at(128<<10)+" 128k",
				"write -z -f "+at(512<<10)+" 64k",
				"read -P 0 "+at(512<<10)+" 64k",
				"read -P 0xab "+at(576<<10)+" 448k",
				// FUA writes.
				"write -f -P 0xcd "+at(2<<20)+" 256k",
				"read -P 0xcd "+at(2<<20)+" 256k",
				// Discard (contents afterwards are unspecified) and flush.
				"write -P 0x77 "+at(3<<20)+" 1M",
				"discard "+at(3<<20)+" 1M",
				"flush",
				// A 32 MiB write, the largest single request.
				"write -P 0x3a "+at(8<<20)+" 32M",
				"read -P 0x3a "+at(8<<20)+" 32M",
			)
			// Everything above reached the server as the command it is.
			after := d.stats(t)
			if after.WriteZeroes-before.WriteZeroes < 3 || after.Trims-before.Trims < 1 ||
				after.Flushes-before.Flushes < 1 || after.Errors != before.Errors {
				t.Errorf("server counters moved %+v -> %+v: want >= 3 write-zeroes, >= 1 trim, >= 1 flush, no errors", before, after)
			}

			// Overlapping asynchronous writes: eight 64 KiB writes, each
			// overlapping the next by 16 KiB, all in flight at once. The
			// order of overlapping in-flight writes is undefined, but each
			// byte must come from one of the writes that covered it, never
			// a torn mix inside a 512-byte sector, and nothing else may
			// change.
			const n, step, l = 8, 48 << 10, 64 << 10
			base := b + 48<<20
			cmds := []string{"write -P 0x11 " + fmt.Sprint(base-4096) + " " + fmt.Sprint(n*step+16<<10+8192)}
			for i := 0; i < n; i++ {
				cmds = append(cmds, fmt.Sprintf("aio_write -P %#x %d %d", 0x20+i, base+int64(i*step), l))
			}
			cmds = append(cmds, "aio_flush")
			runQemuIO(t, tr.uri, cmds...)

			s := d.connect(t, sessionOpts{structured: true})
			got := s.mustRead(uint64(base-4096), uint32(n*step+16<<10+8192))
			s.disconnect()
			for i, c := range got {
				off := int64(i) - 4096 // relative to base
				var allowed []byte
				for w := 0; w < n; w++ {
					if off >= int64(w*step) && off < int64(w*step+l) {
						allowed = append(allowed, byte(0x20+w))
					}
				}
				if len(allowed) == 0 {
					allowed = []byte{0x11}
				}
				if !bytes.Contains(allowed, []byte{c}) {
					t.Fatalf("byte at base%+d is %#x, want one of % x", off, c, allowed)
				}
				// Within a sector all bytes come from the same write.
				if i%512 != 0 && c != got[i-i%512] && i >= 4096 {
					t.Fatalf("sector at base%+d is torn: %#x and %#x", off-off%512, got[i-i%512], c)
				}
			}
			// Read back through qemu-io too: the parts no other write overlaps.
			var reads []string
			for i := 0; i < n; i++ {
				lo, hi := int64(i*step), int64(i*step+l)
				if i > 0 {
					lo = int64((i-1)*step + l)
				}
				if i < n-1 {
					hi = int64((i + 1) * step)
				}
				reads = append(reads, fmt.Sprintf("read -P %#x %d %d", 0x20+i, base+lo, hi-lo))
			}
			runQemuIO(t, tr.uri, reads...)
		})
	}
	d.checkServing(t)
}
