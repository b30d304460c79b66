// Package netns runs the automatic failover of three real blkrepd
// processes (alpha, beta, a witness), each in a network namespace of its
// own (internal/clustertest), under a load writer, and breaks them: the
// primary SIGKILLed, the primary cut off from everyone, the secondary cut
// off, the witness cut off, the primary cut off from the secondary only;
// then heals. Every scenario checks the expected roles and the three
// checks of clustertest: one node acknowledging writes at a time, no
// acknowledged write lost, identical disks after the resync.
//
// They run only when asked (make test-netns, part of make test, sets
// BLKREP_REQUIRE_NETNS=1; BLKREP_NETNS=1 also enables them), not inside a
// plain 'go test ./...' where every package runs at once on the same
// cores. They need root, ip (iproute2) and nft (nftables): without them
// the tests skip, saying so, or fail with BLKREP_REQUIRE_NETNS=1. The binaries are built once in TestMain (BLKREP_BIN=DIR
// uses prebuilt ones). When a scenario fails, the daemons' logs and the
// configuration are kept in a directory named in the failure.
//
//	BLKREP_REQUIRE_NETNS=1 go test -count=1 -timeout 10m ./tests/netns/ -v
//
// TestTorture (torture_test.go) runs under the same conditions and
// breaks the cluster at random, in rounds, under the load writer: each
// round picks one fault (the primary, the secondary or the witness
// SIGKILLed or the primary stopped with SIGTERM, then restarted after
// 1-5 s; one node isolated with nftables; alpha and beta cut from each
// other only; a data node's link taken down), holds it 1-6 s, in one
// round of four adds a second fault on another node (one the cluster
// can still recover from), undoes everything and waits, at most 60 s,
// until there is a primary, the cluster is in sync and writes are
// acknowledged again. At the end it heals everything and runs the three
// checks, and prints a table of figures (faults by kind, writes issued,
// acknowledged and in doubt, promotions, violations, longest recovery).
// BLKREP_TORTURE_DURATION (a Go duration, default 75s: the short run of
// make test) is how long rounds are started; the final heal and checks
// take at most 90 s more. BLKREP_TORTURE_SEED (an unsigned integer,
// default from the clock) seeds every random choice; the seed is logged
// first, and a failure prints the command that replays it, with the
// fault history. As time is real, a replay repeats the fault schedule,
// not the daemons' interleaving with it. BLKREP_TORTURE_REPORT=FILE
// appends the figures as Markdown to FILE (a relative path is relative
// to tests/netns, where go test runs).
//
//	BLKREP_NETNS=1 BLKREP_TORTURE_DURATION=10m go test -count=1 -timeout 20m -run TestTorture ./tests/netns/ -v
//
// The package has no non-test code.
package netns
