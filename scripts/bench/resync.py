#!/usr/bin/env python3
"""Helpers for scripts/bench-resync.sh.

  resync.py meta-area SIZE              print the bytes of internal metadata blkrepd adds to a
                                        disk exporting SIZE bytes with the defaults (3 peer slots,
                                        4 KiB per bit, 8 activity-log records): meta/layout.go
  resync.py wait --blkrep BIN --config FILE --volume V --timeout S [--since T]
                                        poll both nodes' status (alpha, beta) every 20 ms until
                                        both are Connected, Established, with nothing out of
                                        sync or unacknowledged; with --since T (Unix seconds),
                                        also until beta's last resync started at or after T and
                                        has finished. Prints beta's `report.py peer` line and the
                                        seconds from T (or from the start) to that moment;
                                        exit 1 on timeout (the last states on stderr)
  resync.py copy SRC DST IOLOG           copy the ranges fio wrote (the "write OFFSET LENGTH" lines
                                        of its --write_iolog file) from file SRC into file DST at
                                        the same offsets with pread/pwrite, then fdatasync DST;
                                        print "SECONDS BYTES" (timed in-process: what dd would
                                        take, without process start-ups)
  resync.py tables OUTDIR [--detail] --resync-size B --sparse-size B --sparse-percent P
                                        --mem-size B
                                        print the Markdown tables from OUTDIR/resync-*.tsv

Input files (tab-separated, header line first), written by bench-resync.sh:
  resync-throughput.tsv  volume round dirty total done skipped seconds wall src_sent tgt_sent
                         checksum rule
  resync-sparse.tsv      round chunks bytes copy_seconds resync_seconds resync_wall total done
                         src_sent rule
  resync-checksum.tsv    round size total done skipped seconds wall src_sent tgt_sent checksum rule
  resync-memory.tsv      setup node phase vmrss_kib vmhwm_kib
  resync-memory-extra.tsv  setup node key value (no header)
  resync-skipped.tsv     Markdown rows "| part | reason |" (no header)
"seconds" is the SyncTarget's finished_at - started_at from `blkrep status --json`; "wall" is
from `blkrep connect` (or invalidate) until both nodes were seen in sync (polled every 50 ms).
Standard library only: runs on Debian's python3.
"""
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import peer_fields  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30

# Targets of the issue (docs/benchmarks.md, "Resync and memory").
TARGET_RESYNC_MIBS = 500.0
TARGET_SPARSE_RATIO = 2.0
TARGET_CSUM_PERCENT = 1.0
TARGET_RSS_MIB = 100.0


def meta_area(size, slots=3, bytes_per_bit=4096, al_records=8):
    """Internal metadata area for a disk exporting size bytes (meta.ComputeLayout: the bitmaps
    cover the whole disk, so grow the disk until what is left is at least size)."""
    def area(dev):
        bits = -(-dev // bytes_per_bit)
        pages = -(-bits // (4096 * 8))
        crc = -(-(pages * 4) // 4096) * 4096
        return 2 * 4096 + al_records * 4096 + slots * (crc + pages * 4096)
    dev = size + area(size)
    while dev - area(dev) < size:
        dev += 4096
    return dev - size


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def med(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def size_str(b):
    if math.isnan(b):
        return "n/a"
    if b >= 1 << 40 and b % (1 << 40) == 0:
        return f"{b / (1 << 40):.0f} TiB"
    if b >= GiB and b % GiB == 0:
        return f"{b / GiB:.0f} GiB"
    if b >= GiB:
        return f"{b / GiB:.2f} GiB"
    if b >= MiB:
        return f"{b / MiB:.1f} MiB" if b % MiB else f"{b / MiB:.0f} MiB"
    if b >= 1024:
        return f"{b / 1024:.1f} KiB"
    return f"{b:.0f} B"


def f2(x, fmt="{:.2f}"):
    return "n/a" if math.isnan(x) else fmt.format(x)


def throughput(rows, detail):
    out = ["| resync | checksums | dirty per round | resynced | time (s) | MiB/s | source sent "
           "| target sent | in sync after connect (s) | target | verdict |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    per = []
    for vol, label in (("plain", 'after a disconnection, `resync_checksums` default ("after-crash")'),
                       ("csum", 'the same, `resync_checksums = "always"` (data differs)')):
        rs = [r for r in rows if r["volume"] == vol]
        if not rs:
            continue
        rates = [num(r["done"]) / num(r["seconds"]) / MiB for r in rs if num(r["seconds"]) > 0]
        m = med(rates)
        csum = "yes" if all(r["checksum"] == "1" for r in rs) else (
            "no" if all(r["checksum"] == "0" for r in rs) else "mixed")
        if vol == "plain":
            target = f">= {TARGET_RESYNC_MIBS:.0f} MiB/s"
            verdict = "n/a" if math.isnan(m) else ("met" if m >= TARGET_RESYNC_MIBS else "MISSED")
        else:
            target, verdict = "none", ""
        out.append(f"| {label} | {csum} | {size_str(med([num(r['dirty']) for r in rs]))} "
                   f"| {size_str(med([num(r['done']) for r in rs]))} "
                   f"| {f2(med([num(r['seconds']) for r in rs]))} | {f2(m, '{:.0f}')} "
                   f"| {size_str(med([num(r['src_sent']) for r in rs]))} "
                   f"| {size_str(med([num(r['tgt_sent']) for r in rs]))} "
                   f"| {f2(med([num(r['wall']) for r in rs]))} | {target} | {verdict} |")
        per.append((vol, rs))
    if len(out) == 2:
        return ""
    if detail:
        out += ["", "Per round:", "", "| volume | round | rule | resynced | time (s) | MiB/s | source sent |",
                "|---|---:|---|---:|---:|---:|---:|"]
        for vol, rs in per:
            for r in rs:
                rate = num(r["done"]) / num(r["seconds"]) / MiB if num(r["seconds"]) > 0 else float("nan")
                out.append(f"| {vol} | {r['round']} | {r['rule']} | {r['done']} | {r['seconds']} "
                           f"| {f2(rate, '{:.0f}')} | {r['src_sent']} |")
    return "\n".join(out)


def sparse(rows, size, percent, detail):
    if not rows:
        return ""
    ratios = [num(r["resync_seconds"]) / num(r["copy_seconds"]) for r in rows
              if num(r["copy_seconds"]) > 0]
    m = med(ratios)
    verdict = "n/a" if math.isnan(m) else ("met" if m <= TARGET_SPARSE_RATIO else "MISSED")
    out = ["| volume | written per round | copy (s) | resync (s) "
           "| resync / copy | resynced | source sent | in sync after connect (s) | target | verdict |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
           f"| {size_str(size)} sparse, {percent} % written in scattered 1 MiB chunks "
           f"| {size_str(med([num(r['bytes']) for r in rows]))} "
           f"| {f2(med([num(r['copy_seconds']) for r in rows]), '{:.3f}')} "
           f"| {f2(med([num(r['resync_seconds']) for r in rows]), '{:.3f}')} | {f2(m)} "
           f"| {size_str(med([num(r['done']) for r in rows]))} "
           f"| {size_str(med([num(r['src_sent']) for r in rows]))} "
           f"| {f2(med([num(r['resync_wall']) for r in rows]), '{:.3f}')} "
           f"| <= {TARGET_SPARSE_RATIO:.0f}x | {verdict} |"]
    if detail:
        out += ["", "Per round:", "", "| round | copy (s) | resync (s) | ratio | resynced bytes | rule |",
                "|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            c, s = num(r["copy_seconds"]), num(r["resync_seconds"])
            out.append(f"| {r['round']} | {c:.3f} | {s:.3f} | {f2(s / c if c > 0 else float('nan'))} "
                       f"| {r['done']} | {r['rule']} |")
    return "\n".join(out)


def checksum(rows, detail):
    if not rows:
        return ""
    pct = [100 * num(r["src_sent"]) / num(r["size"]) for r in rows if num(r["size"]) > 0]
    m = med(pct)
    verdict = "n/a" if math.isnan(m) else ("met" if m < TARGET_CSUM_PERCENT else "MISSED")
    size = med([num(r["size"]) for r in rows])
    out = ["| range | resynced with checksums | found identical | source sent | of the range "
           "| target sent | time (s) | MiB/s compared | target | verdict |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
           f"| {size_str(size)} identical, `blkrep invalidate` on the secondary "
           f"| {size_str(med([num(r['done']) for r in rows]))} "
           f"| {size_str(med([num(r['skipped']) for r in rows]))} "
           f"| {size_str(med([num(r['src_sent']) for r in rows]))} | {f2(m, '{:.3f} %')} "
           f"| {size_str(med([num(r['tgt_sent']) for r in rows]))} "
           f"| {f2(med([num(r['seconds']) for r in rows]))} "
           f"| {f2(med([num(r['done']) / num(r['seconds']) / MiB for r in rows if num(r['seconds']) > 0]), '{:.0f}')} "
           f"| < {TARGET_CSUM_PERCENT:.0f} % | {verdict} |"]
    if detail:
        out += ["", "Per round:", "", "| round | rule | checksums | resynced | identical | source sent | target sent | time (s) |",
                "|---:|---|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            out.append(f"| {r['round']} | {r['rule']} | {r['checksum']} | {r['done']} | {r['skipped']} "
                       f"| {r['src_sent']} | {r['tgt_sent']} | {r['seconds']} |")
    return "\n".join(out)


def memory(rows, extra, mem_size):
    if not rows:
        return ""
    out = [f"| setup ({size_str(mem_size)} sparse volume) | node | when | VmRSS | VmHWM (peak) | target | verdict |",
           "|---|---|---|---:|---:|---|---|"]
    for r in rows:
        hwm = num(r["vmhwm_kib"]) / 1024
        verdict = "n/a" if math.isnan(hwm) else ("met" if hwm < TARGET_RSS_MIB else "MISSED")
        out.append(f"| {r['setup']} | {r['node']} | {r['phase']} | {num(r['vmrss_kib']) / 1024:.1f} MiB "
                   f"| {hwm:.1f} MiB | peak < {TARGET_RSS_MIB:.0f} MiB | {verdict} |")
    notes = []
    ex = {(e[0], e[1], e[2]): e[3] for e in extra if len(e) >= 4}
    if ("standalone", "alpha", "area_bytes") in ex:
        notes.append(f"internal metadata {size_str(num(ex[('standalone', 'alpha', 'area_bytes')]))} per image")
    for setup in ("standalone", "pair"):
        k = (setup, "alpha", "start_seconds")
        if k in ex:
            notes.append(f"{setup}: alpha answered {ex[k]} s after start")
    if ("pair", "beta", "resync_bytes") in ex:
        notes.append(f"pair: the resync of {size_str(num(ex[('pair', 'beta', 'resync_bytes')]))} written while "
                     f"disconnected took {f2(num(ex[('pair', 'beta', 'resync_seconds')]), '{:.2f}')} s")
    if notes:
        out += ["", "; ".join(notes) + "."]
    return "\n".join(out)


def tables(outdir, detail, resync_size, sparse_size, sparse_percent, mem_size):
    parts = []
    t = throughput(read_tsv(os.path.join(outdir, "resync-throughput.tsv")), detail)
    if t:
        parts.append(f"Resync throughput ({size_str(resync_size)} volume, data written sequentially "
                     "in 1 MiB requests while disconnected; MiB/s = resynced bytes / (finished_at - "
                     "started_at) of the SyncTarget, median over the rounds):\n\n" + t)
    t = sparse(read_tsv(os.path.join(outdir, "resync-sparse.tsv")), sparse_size, sparse_percent, detail)
    if t:
        parts.append("Resync of a small part of a large sparse volume (written in scattered 1 MiB "
                     "chunks while disconnected, then resynced; copy = the same chunks read from "
                     "alpha's image and written into a fresh sparse file on the same filesystem, "
                     "then fdatasync, timed in-process; resync / copy = median of the per-round "
                     "ratios):\n\n" + t)
    t = checksum(read_tsv(os.path.join(outdir, "resync-checksum.tsv")), detail)
    if t:
        parts.append('Checksum resync of identical data (`resync_checksums = "always"`; source sent '
                     "= the replication bytes alpha sent during the resync, headers included):\n\n" + t)
    extra = []
    p = os.path.join(outdir, "resync-memory-extra.tsv")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            extra = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    t = memory(read_tsv(os.path.join(outdir, "resync-memory.tsv")), extra, mem_size)
    if t:
        parts.append("Memory of blkrepd (VmRSS and VmHWM from /proc/PID/status; writes: scattered "
                     "1 MiB chunks over the whole volume, then 4096 scattered 4 KiB writes):\n\n" + t)
    p = os.path.join(outdir, "resync-skipped.tsv")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            rows = [line.rstrip("\n") for line in f if line.strip()]
        parts.append("Skipped:\n\n| part | why |\n|---|---|\n" + "\n".join(rows))
    return "\n\n".join(parts)


def node_peer(blkrep, config, node, volume):
    """The peer fields of VOLUME on NODE, or None if the status cannot be read."""
    try:
        r = subprocess.run([blkrep, "--config", config, "--node", node, "status", "--json"],
                           capture_output=True, timeout=30, check=False)
        if r.returncode != 0:
            return None
        return peer_fields(json.loads(r.stdout), volume).split()
    except (subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        return None


def in_sync(f):
    # connection replication disk out_of_sync unacked ...
    return f is not None and f[0] == "Connected" and f[1] == "Established" and f[3] == "0" and f[4] == "0"


def wait(blkrep, config, volume, timeout, since=None):
    t0 = time.time() if since is None else since
    deadline = time.monotonic() + timeout
    a = b = None
    while time.monotonic() < deadline:
        b = node_peer(blkrep, config, "beta", volume)
        a = node_peer(blkrep, config, "alpha", volume)
        now = time.time()
        done = in_sync(a) and in_sync(b)
        if done and since is not None:
            # rs_running (11) and rs_started (17) of beta's last resync
            done = b[17] != "-" and b[11] == "0" and float(b[17]) >= since
        if done:
            print(" ".join(b), f"{now - t0:.3f}")
            return 0
        time.sleep(0.02)
    print(f"resync.py: volume {volume}: alpha: {' '.join(a) if a else 'no status'}; "
          f"beta: {' '.join(b) if b else 'no status'}", file=sys.stderr)
    return 1


def iolog_writes(path):
    """(offset, length) of every write in a fio iolog (versions 2 and 3)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            p = line.split()
            # v3: TIME FILE write OFF LEN; v2: FILE write OFF LEN
            for i in range(len(p) - 2):
                if p[i] == "write" and p[i + 1].isdigit() and p[i + 2].isdigit():
                    out.append((int(p[i + 1]), int(p[i + 2])))
                    break
    return out


def copy(src, dst, iolog):
    ranges = iolog_writes(iolog)
    if not ranges:
        raise ValueError(f"{iolog}: no writes")
    s = os.open(src, os.O_RDONLY)
    d = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o600)
    total = 0
    try:
        t0 = time.perf_counter()
        for off, n in ranges:
            buf = os.pread(s, n, off)
            if len(buf) != n:
                raise ValueError(f"{src}: short read at {off}")
            os.pwrite(d, buf, off)
            total += n
        os.fdatasync(d)
        secs = time.perf_counter() - t0
    finally:
        os.close(s)
        os.close(d)
    return secs, total


def main(argv):
    if len(argv) == 4 and argv[0] == "copy":
        secs, total = copy(argv[1], argv[2], argv[3])
        print(f"{secs:.6f} {total}")
        return 0
    if argv and argv[0] == "wait":
        opts = {"--blkrep": None, "--config": None, "--volume": None, "--timeout": "300", "--since": None}
        i = 1
        while i + 1 < len(argv) and argv[i] in opts:
            opts[argv[i]] = argv[i + 1]
            i += 2
        if i != len(argv) or None in (opts["--blkrep"], opts["--config"], opts["--volume"]):
            print(__doc__, file=sys.stderr)
            return 2
        since = float(opts["--since"]) if opts["--since"] is not None else None
        return wait(opts["--blkrep"], opts["--config"], opts["--volume"], float(opts["--timeout"]), since)
    if len(argv) == 2 and argv[0] == "meta-area":
        print(meta_area(int(argv[1])))
        return 0
    if len(argv) >= 2 and argv[0] == "tables":
        opts = {"--resync-size": 0, "--sparse-size": 0, "--sparse-percent": 0, "--mem-size": 0}
        detail = False
        i = 2
        while i < len(argv):
            a = argv[i]
            if a == "--detail":
                detail = True
                i += 1
            elif a in opts and i + 1 < len(argv):
                opts[a] = int(argv[i + 1])
                i += 2
            else:
                print(f"resync.py: unknown argument {a}", file=sys.stderr)
                return 2
        print(tables(argv[1], detail, opts["--resync-size"], opts["--sparse-size"],
                     opts["--sparse-percent"], opts["--mem-size"]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
