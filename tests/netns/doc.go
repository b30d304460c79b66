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
// The package has no non-test code.
package netns
