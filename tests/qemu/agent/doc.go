// Command blkrep-agent runs as root inside the QEMU guests of tests/qemu
// (busybox initramfs, no udev, Linux 6.1 or 6.12) and does there what the
// host asks: run shell commands, signal them, read files and devices. It
// also carries the guest-side workloads, so that the guests need nothing
// but busybox and this static binary:
//
//	blkrep-agent serve [--port NAME]
//	blkrep-agent writefiles DIR COUNT SIZE_BYTES [--seed S]
//	blkrep-agent writer DEV --node NAME --blocks N [--seed S] [--first-seq F] [--count C] [--duration D] [--no-direct]
//	blkrep-agent readblocks DEV N
//
// A bad command line prints what is wrong and exits 2. Flags may come
// before, between or after the positional arguments.
//
// # serve: the request protocol
//
// serve opens /dev/<dir> where /sys/class/virtio-ports/<dir>/name is NAME
// (default "blkrep.agent"; the node is created from sysfs' dev file if
// /dev has none). It waits up to 30 s for the port to appear, then exits 1.
// Otherwise it never exits by itself; it logs its own problems to stderr.
//
// Both directions carry newline-delimited JSON, one object per line.
//
// On opening the port, and again every time it reopens it, the agent
// first sends
//
//	{"hello":"blkrep-agent","kernel":"6.1.0-31-amd64","uptime":12.34}
//
// (kernel: uname -r; uptime: the first field of /proc/uptime, seconds).
//
// The host sends requests, each with an id it chooses (a uint64, unique
// among the requests of the agent's life; ids should not be 0, which
// answers unreadable requests). Exactly one of "cmd", "signal" and "read"
// says the kind:
//
//	{"id":N,"cmd":"SCRIPT","stdin":"BASE64","timeout_ms":M,"stream":B}
//	{"id":N,"signal":ID,"sig":S}
//	{"id":N,"read":"/path","offset":O,"length":L}
//
// Every request runs concurrently with the others. Every request gets
// exactly one final reply:
//
//	{"id":N,"done":true,"code":C,"out":"...","error":"...","data":"BASE64"}
//
// where "error" is absent when empty, and present (with code -1 unless
// said otherwise below) when the agent could not do what was asked.
//
// cmd runs /bin/sh -c SCRIPT in / with the agent's environment and
// PATH=/usr/sbin:/usr/bin:/sbin:/bin (replacing the agent's PATH), in a
// process group of its own, stdout and stderr merged into one pipe. stdin
// (optional, base64) is its standard input; without it, /dev/null. The
// command is finished when the shell has exited and the pipe is closed,
// or 2 s after the shell exited if a background process still holds the
// pipe open: background processes must redirect their output (e.g.
// "setsid blkrepd ... >/run/x.log 2>&1 &"); one that does not loses its
// output after those 2 s (then SIGPIPE on its next write). Reply:
//
//   - code: the shell's exit status; -1 if it was killed by a signal
//     (error "killed by signal 15 (terminated)"), timed out (error
//     "timeout after 10s") or could not be started (error "cannot start:
//     ..."). timeout_ms 0 or absent means no timeout; on timeout the whole
//     process group gets SIGKILL (processes that left it, e.g. with
//     setsid, are not touched).
//   - out: present exactly when stream is false: the whole output, at most
//     8 MiB, then "\n[output truncated]" if there was more.
//
// With "stream":true, output is sent while the command runs, line by
// line, before the final reply (which then has no "out"):
//
//	{"id":N,"line":"TEXT","t":UNIXNANO}
//
// TEXT is without its newline; t is when the agent read the line's end. A
// last line without a newline is sent when the command ends; a line longer
// than 64 KiB is sent in 64 KiB pieces. Lines of one request come in
// order.
//
// signal sends signal S (e.g. 9, 15) to the process group of the running
// cmd request ID. Reply code 0, or an error: "no running request ID"
// (never started, or already finished), or the kill(2) error. A signal
// request sent after the cmd request always finds it unless it finished.
//
// read reads L bytes at offset O of a file or block device (through the
// page cache; readblocks bypasses it). Reply code 0 and "data": the bytes
// read, fewer at the end of the file, absent when none. L is limited to
// 64 MiB: a larger one is an error.
//
// A line that is not a valid request gets
//
//	{"id":N,"done":true,"code":-1,"error":"bad request: ..."}
//
// with the request's id if it could be read, else 0.
//
// Output text is JSON-encoded: bytes that are not valid UTF-8 arrive as
// U+FFFD. Stream lines and final replies of different requests interleave
// in any order; each message is one whole line.
//
// When reading the port reports end of file or an error (the host side
// disconnected), the agent waits 200 ms, closes and reopens the port and
// sends hello again. Running requests go on; their messages go to the port
// open when they are ready (on a virtio port a write waits until the host
// is connected). A message whose write failed is sent again, whole, after
// the next hello: the host must drop a partial line when it disconnects,
// and may receive after the hello the replies to requests of an earlier
// connection. The agent sees a disconnection only if the host stays away
// until its read returns: a host that reconnects at once (within a few
// milliseconds) may get no hello, and should send a request (e.g.
// {"id":N,"cmd":"true"}) rather than wait for one.
//
// # writefiles
//
// writefiles creates DIR if missing and writes the files f0000, f0001, ...
// (COUNT of them) of SIZE_BYTES pseudo-random bytes each (ChaCha8 seeded
// from S and the file's index; S defaults to the clock). Once a file is
// durable (the file synced, then DIR synced) it prints
//
//	file NAME SHA256HEX
//
// Exit 0, or the error on stderr and exit 1.
//
// # writer
//
// writer writes tagged blocks (internal/clustertest: BlockSize 4096,
// clustertest.Tag) to DEV, opened O_RDWR|O_DIRECT|O_DSYNC (without
// O_DIRECT with --no-direct, for files on tmpfs), one write at a time, to
// a block chosen uniformly in [0,N) (math/rand/v2 PCG seeded from S,
// default the clock). Write SEQ (from F, --first-seq, default 1: writers on
// different nodes use ranges apart) prints, each line written at once:
//
//	issue SEQ OFFSET ISSUED_UNIXNANO   before the write (the tag's fields)
//	ack SEQ                            once pwrite returned success
//	error SEQ MESSAGE                  pwrite failed: exit 3
//
// It stops after C writes (--count; 0 = no limit), once D has passed
// (--duration, a Go duration), or on SIGTERM/SIGINT after the write in
// progress, printing "stopped SEQ" (SEQ: the last write issued, F-1 if none)
// and exiting 0. NAME is 1 to 16 bytes without blanks. On a block device,
// N blocks must fit in it.
//
// # readblocks
//
// readblocks reads blocks 0..N-1 (4096 bytes each) of DEV with O_DIRECT
// (plainly if DEV refuses it) and prints, for block I:
//
//	I zero                                  all zero bytes
//	I tag SEQ OFFSET ISSUED_UNIXNANO NODE   a valid tag (clustertest.DecodeTag)
//	I bad TEXT                              anything else, or a read error
//
// and exits 0 whatever the blocks hold (1 if DEV cannot be opened).
package main
