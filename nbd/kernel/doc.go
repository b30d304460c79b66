// Package kernel attaches Linux /dev/nbdN devices to an in-process NBD
// server through the generic netlink family "nbd" (drivers/block/nbd.c).
//
// What it does:
//
//   - LoadModule gets the nbd driver into the kernel (already present,
//     kmod with nbds_max=0, or the genl family lookup that auto-loads it on
//     6.12), failing with a clear ErrModuleUnavailable otherwise.
//   - Conn speaks the family's commands: CONNECT (the kernel creates the
//     device and returns at once), RECONFIGURE (a new socket for a device
//     whose socket died), DISCONNECT and STATUS. Every command asks for an
//     ACK: DISCONNECT and RECONFIGURE send no reply and would otherwise
//     block until the socket timeout.
//   - Attach is what the daemon calls: a socketpair whose one end is served
//     in-process (started before CONNECT, as the kernel reads the partition
//     table at once) and whose other end goes to the kernel. It re-attaches
//     a device that survived a daemon restart (same backend identifier,
//     RECONFIGURE) and refuses a device that belongs to someone else.
//   - WatchLinkDead reports devices whose socket the kernel declared dead.
//   - LockMemory and SetIOFlusher: the process serving a block device must
//     not wait on reclaim that writes to that device.
//
// What it must not do: speak the NBD protocol (package nbd serves the
// socket; the kernel never negotiates, it expects the transmission phase
// and simple replies), use the NBD ioctls (they bind the device to the
// thread that set the socket and need a thread parked in NBD_DO_IT), keep
// state or log on a filesystem, or decide policy: which device, which
// backend, when to disconnect are the daemon's.
//
// The attribute payloads are built and parsed by pure functions
// (encodeConnect, decodeStatus...) tested byte for byte; only Conn and
// WatchLinkDead touch sockets. Attribute numbers are the kernel ABI
// (include/uapi/linux/nbd-netlink.h) and are frozen.
//
// Surviving a daemon restart needs Options.DeadConnTimeout > 0: with a
// single socket and no dead-connection timeout the kernel fails I/O as soon
// as the socket dies. It also needs the same Options.Backend and Index.
//
// Example:
//
//	if err := kernel.SetIOFlusher(); err != nil { ... } // early in main
//	if err := kernel.LockMemory(); err != nil { ... }
//	if err := kernel.LoadModule(log); err != nil { ... }
//	c, err := kernel.OpenWithLogger(log)
//	if err != nil { ... }
//	defer c.Close()
//	index, err := kernel.Attach(c, kernel.Options{
//		Index:           0,
//		SizeBytes:       1 << 30,
//		Timeout:         30 * time.Second,
//		DeadConnTimeout: 120 * time.Second,
//		ServerFlags:     flags, // HAS_FLAGS|SEND_FLUSH|SEND_FUA|...
//		Backend:         "blkrep:r0",
//	}, srv.ServeConn)
//	...
//	err = c.Disconnect(index)
package kernel
