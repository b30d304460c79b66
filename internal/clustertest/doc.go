// Package clustertest runs a real three-node blkrep cluster (data nodes
// alpha and beta, a witness) with automatic failover, for tests and for
// the failover benchmark: it writes the configuration, starts bin/blkrepd
// processes, kills (SIGKILL) and restarts them, and partitions them, and
// it drives a load writer over NBD whose history it checks afterwards.
//
// Two network modes:
//
//   - loopback: every node listens on 127.0.0.1, ports from
//     internal/testnet. No privileges needed; no partitions.
//   - namespaces (Options.Netns): every node runs in a network namespace
//     of its own, connected by a veth pair to a bridge in a further
//     namespace, with addresses from 10.213.0.0/24 that exist only inside
//     those namespaces. Needs root, ip (iproute2) and nft (nftables).
//     Partitions are nftables rules in a node's namespace. The NBD and
//     control sockets are unix sockets, reachable from the test's own
//     namespace (they live in the file system).
//
// Namespaces are named "blkrepct-PID-N-NODE": a run that crashed leaves
// namespaces whose PID is gone, and the next New removes them
// (RemoveStale). Daemons get SIGKILL when the process that started them
// dies (Pdeathsig).
//
// The checks (Check*) are the failover guarantee of docs/failover.md:
//
//	(a) at most one node acknowledges writes at any moment: every
//	    acknowledgement of a primary precedes the first one of the node
//	    promoted after it (promotions are read from the daemons' logs);
//	(b) every write acknowledged under protocol C is on the final primary
//	    (per block, the last acknowledged version, or a later write that
//	    was sent but never acknowledged);
//	(c) once both data nodes say they are in sync, their disks hold the
//	    same bytes (the exported area; the metadata at the end differs).
package clustertest
