// Package interop runs blkrepd against NBD clients that no one here wrote
// (qemu-io, nbdinfo, nbdsh, nbdcopy, fio) and against a minimal raw-socket
// client that sends what well-behaved clients never send.
//
// Every test starts its own blkrepd process from binaries built once in
// TestMain, with a configuration written into a temporary directory, talks to
// it over its unix socket or over TCP on 127.0.0.1, and stops it with SIGTERM,
// checking that it exits 0 within 10s, removes its sockets and logged no
// panic. When a test fails the daemon's log is printed.
//
// What is where:
//
//	harness_test.go      TestMain (go build), the daemon's lifecycle, tool lookup, status counters
//	wire_test.go         the raw NBD client, written from the protocol document
//	qemuio_test.go       qemu-io: patterns, write-zeroes, FUA, discard, flush, overlapping aio (unix, TCP)
//	nbdinfo_test.go      nbdinfo: size, block sizes, --can, --is, --list, --map
//	nbdsh_test.go        libnbd with strict mode off: errnos, zero-length, FUA trim/zero, block status, DISC
//	nbdcopy_test.go      64 MiB round trip with 4 connections, again after a restart
//	fio_test.go          fio's nbd engine: verified randrw, a corruption check, write+flush over TCP
//	handshake_test.go    garbage, truncated and oversized handshakes, unknown options and exports
//	transmission_test.go bad magic, unknown commands and flags, out-of-range and oversized requests,
//	                     clients vanishing mid-payload, deep pipelines with overlapping requests
//	multiconn_test.go    CAN_MULTI_CONN flush semantics, 200 clients, a client that never reads
//	shutdown_test.go     SIGTERM with requests in flight and with idle clients
//	example_test.go      examples/standalone.toml as shipped
//
// A test whose client binary (or Python module) is missing is skipped with a
// message naming the Debian package; with BLKREP_REQUIRE_INTEROP=1 it fails
// instead, so CI, which installs the packages with scripts/install-deps.sh,
// never skips silently. BLKREP_INTEROP_RACE=1 builds blkrepd with -race (cgo
// on) and fails a test whose daemon reported a data race.
//
//	go test -count=1 ./tests/interop/ -v
//	BLKREP_REQUIRE_INTEROP=1 go test -count=1 ./tests/interop/
//
// The package has no non-test code.
package interop
