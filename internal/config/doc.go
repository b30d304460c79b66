// Package config reads the blkrep cluster configuration: one TOML file that
// describes every node and volume, is identical on every node, and from which a
// daemon started as `blkrepd --config FILE --node NAME` takes its own part.
//
// Loading happens in two steps. Load (or Parse, for bytes in hand) checks the file
// statically, without touching the filesystem: syntax, types, unknown keys (a
// typo is an error, never ignored), values, references from replicas to nodes,
// and clashes between names, unix socket paths, TCP listen addresses, disks and
// devices. Relative paths are resolved against the file's directory, so every
// path in a Config is absolute. Then CheckNode checks one node's machine: disks
// and external metadata files exist with the right size (or may be created),
// socket directories exist, and the secret file can be read if the node
// replicates. LocalReplica.DiskBytes and MetaFileBytes give those sizes, and
// Volume.MetaGeometry the metadata geometry of a replica.
//
// A volume with more than one replica is replicated (Volume.Replicated, and
// Volume.Peers for the other replicas' nodes): the file must then give the
// cluster a shared secret, which LoadSecret returns, and every node holding one
// of its replicas an address its peers dial.
//
// With [cluster] failover = true, every replicated volume fails over
// automatically (Volume.Failover; the timings are in Cluster, from
// failover_profile). Its voters (Volume.Voters) are the nodes holding its
// replicas plus the witnesses (Config.Witnesses: nodes that hold no data and
// only vote); there must be at least MinFailoverVoters, each with a gossip
// address. See docs/failover.md.
//
// Every problem found is reported, joined with errors.Join; each is an *Error
// naming the table and key, e.g.
//
//	config: volume "r0": size: "100000B" (100000 bytes) is not a multiple of 4096
//	config: unknown key "volume.replica.dsk" (did you mean "volume.replica.disk"?)
//
// and wraps a sentinel (ErrInvalid, ErrUnknownKey, ErrUnknownNode, ErrDisk,
// ErrNoDir, ErrSecret) for errors.Is. No message repeats the secret.
//
// The package only reads configuration: it creates no file, opens no socket,
// starts no goroutine and does not log. The schema, with defaults and limits, is
// in docs/config.md; examples/standalone.toml is a working file.
//
// Example:
//
//	cfg, err := config.Load(*configPath)
//	if err != nil {
//		return err // every problem, one per line
//	}
//	if err := cfg.CheckNode(*nodeName); err != nil {
//		return err
//	}
//	for _, lr := range cfg.LocalReplicas(*nodeName) {
//		fmt.Println(lr.Volume.Name, lr.Volume.SizeBytes, lr.Replica.Disk)
//	}
package config
