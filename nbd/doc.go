// Package nbd is blkrep's NBD protocol server. It knows nothing about
// replication: it serves Backends (io.ReaderAt + io.WriterAt + Flush, with
// optional FUA, trim, write-zeroes, cache and extent extensions discovered
// by type assertion) to any NBD client: the Linux kernel through a
// socketpair (ServeTransmission), qemu, libnbd tools, nbd-client (Serve).
//
// Handshake: fixed newstyle only. EXPORT_NAME, ABORT, LIST, INFO and GO
// (EXPORT, NAME, DESCRIPTION, BLOCK_SIZE), STRUCTURED_REPLY and
// LIST/SET_META_CONTEXT with base:allocation. Unknown options get
// NBD_REP_ERR_UNSUP and the session goes on. Every option is bounded
// (64 KiB) and the whole negotiation has a deadline.
//
// Transmission: READ, WRITE, FLUSH, TRIM, WRITE_ZEROES (NO_HOLE,
// FAST_ZERO), CACHE, BLOCK_STATUS, DISC; FUA on any command. Requests are
// served concurrently and answered out of order. Overlapping requests are
// ordered by arrival (a per-export range tracker), so overlapping writes
// reach the backend in the order the client sent them. Payload memory per
// connection is bounded (Server.MaxInFlightBytes).
//
// Durability contract, relied upon by /dev/nbdX users: a write is replied
// to only after Backend.WriteAt returned; a FLUSH reply follows a
// Backend.Flush started after the FLUSH arrived, so it covers every write
// replied to before it; a FUA write returns after WriteAtFUA (or WriteAt
// then Flush). CAN_MULTI_CONN is advertised only when the export says its
// Flush covers all connections.
//
// Bad input never crashes the server nor reaches the backend outside the
// export: framing errors (bad magic, a client vanishing mid-payload) close
// that connection; everything else gets the protocol's errno (EINVAL,
// ENOSPC, EOVERFLOW, ENOTSUP, EPERM, EIO) and the connection continues.
//
// It must not: know about peers, roles or bitmaps; log per request (only
// failures, rate limited); allocate wire-supplied lengths before checking
// them.
//
// Example:
//
//	s := nbd.NewServer(log)
//	s.AddExport(nbd.Export{Name: "r0", Size: size, Backend: store, MultiConn: true})
//	l, _ := net.Listen("unix", "/run/blkrep/r0.sock")
//	go s.Serve(l, "r0")
//	...
//	s.Shutdown(ctx)
package nbd
