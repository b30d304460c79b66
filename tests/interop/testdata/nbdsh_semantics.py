# Run by TestNbdsh as: nbdsh --base-allocation -u URI -c 'exec(open(THIS).read())'
# nbdsh has connected `h` (libnbd asks for block sizes and structured replies
# by default; --base-allocation adds the meta context). This script only
# observes: it prints one JSON object, and the Go test asserts on it.
import json
import os

uri = os.environ["INTEROP_URI"]
base = int(os.environ["INTEROP_BASE"])  # a region of the volume nobody else uses
out = {}


def errnum(fn):
    """Run fn; return 0 on success or the errno the server (or libnbd) gave."""
    try:
        fn()
        return 0
    except nbd.Error as e:
        return e.errnum if e.errnum is not None else -1


size = h.get_size()
out["size"] = size
out["block_size"] = [h.get_block_size(nbd.SIZE_MINIMUM),
                     h.get_block_size(nbd.SIZE_PREFERRED),
                     h.get_block_size(nbd.SIZE_MAXIMUM)]
out["structured"] = h.get_structured_replies_negotiated()
out["can_meta"] = h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
out["can_fua"] = h.can_fua()

# Let the server, not libnbd, judge bounds, alignment, flags and sizes.
h.set_strict_mode(0)

# Out of range.
out["oob_pread_at_end"] = errnum(lambda: h.pread(512, size))
out["oob_pread_across_end"] = errnum(lambda: h.pread(1024, size - 512))
out["oob_pwrite_at_end"] = errnum(lambda: h.pwrite(b"x" * 512, size))
out["oob_pwrite_across_end"] = errnum(lambda: h.pwrite(b"x" * 1024, size - 512))
out["oob_trim"] = errnum(lambda: h.trim(8192, size - 4096))
out["oob_zero"] = errnum(lambda: h.zero(8192, size - 4096))

# Misaligned after block-size negotiation (minimum 512).
out["misaligned_pread_offset"] = errnum(lambda: h.pread(512, base + 1))
out["misaligned_pread_length"] = errnum(lambda: h.pread(100, base))
out["misaligned_pwrite"] = errnum(lambda: h.pwrite(b"y" * 100, base))

# Invalid flags for the command.
out["pread_no_hole"] = errnum(lambda: h.pread(4096, base, nbd.CMD_FLAG_NO_HOLE))
out["pwrite_req_one"] = errnum(lambda: h.pwrite(b"z" * 4096, base, nbd.CMD_FLAG_REQ_ONE))
out["flush_fast_zero"] = errnum(lambda: h.flush(nbd.CMD_FLAG_FAST_ZERO))
out["bad_flags_left_disk_alone"] = bytes(h.pread(4096, base)) == bytes(4096)

# Zero-length requests: libnbd calls them undefined; blkrepd answers them
# as no-ops. Either way the connection must stay in sync.
out["zero_len_pread"] = errnum(lambda: h.pread(0, base))
out["zero_len_pread_at_end"] = errnum(lambda: h.pread(0, size))
out["zero_len_pwrite"] = errnum(lambda: h.pwrite(b"", base))
out["zero_len_trim"] = errnum(lambda: h.trim(0, base))
out["zero_len_zero"] = errnum(lambda: h.zero(0, base))
out["zero_len_cache"] = errnum(lambda: h.cache(0, base))
h.pwrite(b"\x42" * 4096, base)
out["in_sync_after_errors"] = bytes(h.pread(4096, base)) == b"\x42" * 4096

# FUA on trim and write-zeroes, and fast zero.
h.set_strict_mode(nbd.STRICT_MASK)
r = base + (1 << 20)
h.pwrite(b"\x99" * 65536, r)
out["trim_fua"] = errnum(lambda: h.trim(65536, r, nbd.CMD_FLAG_FUA))
h.pwrite(b"\x99" * 65536, r)
out["zero_fua"] = errnum(lambda: h.zero(65536, r, nbd.CMD_FLAG_FUA))
out["zero_fua_reads_zero"] = bytes(h.pread(65536, r)) == bytes(65536)
h.pwrite(b"\x99" * 65536, r)
out["zero_no_hole"] = errnum(lambda: h.zero(65536, r, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA))
out["zero_no_hole_reads_zero"] = bytes(h.pread(65536, r)) == bytes(65536)
h.pwrite(b"\x99" * 65536, r)
out["zero_fast"] = errnum(lambda: h.zero(65536, r, nbd.CMD_FLAG_FAST_ZERO))
out["zero_fast_reads_zero"] = bytes(h.pread(65536, r)) == bytes(65536)
out["cache"] = errnum(lambda: h.cache(1 << 20, base))

# Block status over a region: [B, B+4M) never written except 256 KiB at
# B+1M; then with REQ_ONE.
B = base + (8 << 20)
h.pwrite(b"\x17" * (256 << 10), B + (1 << 20))
h.flush()


def collect(length, offset, flags=0):
    entries = []

    def cb(metacontext, off, ents, err):
        assert metacontext == nbd.CONTEXT_BASE_ALLOCATION, metacontext
        assert off == offset, (off, offset)
        entries.extend(ents)
        return 0
    h.block_status(length, offset, cb, flags)
    return entries


out["block_status"] = collect(4 << 20, B)
out["block_status_req_one"] = collect(4 << 20, B, nbd.CMD_FLAG_REQ_ONE)
out["block_status_base"] = B

# NBD_CMD_DISC with many requests in flight: all of them complete
# successfully before the server closes, and the daemon then serves a new
# client that sees every write.
D = base + (16 << 20)
N, L = 96, 64 << 10
done = []


def completed(err):
    done.append(err.value)
    return 1


bufs = [nbd.Buffer.from_bytearray(bytearray([i + 1]) * L) for i in range(N)]
for i in range(N):
    h.aio_pwrite(bufs[i], D + i * L, completion=completed)
out["disc_in_flight_at_shutdown"] = h.aio_in_flight()
h.shutdown()
out["disc_completed"] = len(done)
out["disc_errors"] = [e for e in done if e != 0]
out["disc_in_flight_after"] = h.aio_in_flight()

h2 = nbd.NBD()
h2.connect_uri(uri)
bad = [i for i in range(N) if bytes(h2.pread(L, D + i * L)) != bytes([i + 1]) * L]
out["disc_missing_writes"] = bad
h2.shutdown()

print(json.dumps(out))
