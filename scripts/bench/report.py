#!/usr/bin/env python3
"""Helpers for scripts/bench.sh: extract one figure from a fio JSON file, and build the report.

  report.py value WORKLOAD FIO.json      print the run's figure (IOPS, GiB/s or pairs/s)
  report.py table RESULTS.tsv BASE SERVERS... [--detail]
                                          print the Markdown table (stdout)
  report.py status-counters STATUS.json  print "al_writes io_writes al_evictions" from a
                                          `blkrep status --json` document (summed over its
                                          volumes; 0 AL writes for a volume without metadata)
  report.py al-table RESULTS.tsv AL.tsv [--detail]
                                          print the "activity log cost" Markdown table
  report.py repl-table RESULTS.tsv RAWDIR RTT_US PWRITE_US [--detail]
                                          print the "replication cost" Markdown table
  report.py peer STATUS.json [VOLUME]     print one line of the first peer of VOLUME (default:
                                          the first volume) in a `blkrep status --json` document:
                                          connection replication disk out_of_sync unacked
                                          in_flight reconnects sent received rule action
                                          rs_running rs_checksum rs_total rs_done rs_skipped
                                          rs_seconds rs_started (rs_*: the last resync; "-"
                                          when none; rs_started in Unix seconds)
  report.py free-ports N                 print N distinct free TCP ports on 127.0.0.1
  report.py latency-budget DIR           print "rtt_us pwrite_us": the median round trip of
                                          a 64-byte ping-pong over TCP on 127.0.0.1, and the
                                          median 4 KiB pwrite into a page-cached file in DIR

RESULTS.tsv columns: round, workload, server, value ("nan" for a failed run).
Per row the table shows each server's median figure over the rounds, and BASE's ratio to each
peer as the median of the per-round ratios BASE/peer (only rounds where both have a figure).

AL.tsv columns: round, workload, server, al_writes, io_writes[, al_evictions]: the blkrepd
variants' activity-log records and NBD writes during one fio run (status before and after).
The activity-log table has, per write workload, a row for each of AL_SERVERS: its median
figure, its ratio to AL_BASELINE (median of the per-round ratios) and the activity-log
records written per 1000 NBD writes (median over the rounds).

The replication-cost table has, per write workload, a row for each of REPL_SERVERS (pairs of
daemons under protocol A, B, C): its median figure, standalone blkrepd's, the median of the
per-round ratios server/blkrepd, the median over the rounds of the difference of fio's mean
write latency (lat_ns.mean of RAWDIR/r<round>-<workload>-<server>.json) to blkrepd's, and the
target of docs/benchmarks.md with a verdict.
Standard library only: runs on Debian's python3.
"""
import json
import math
import os
import socket
import statistics
import sys
import threading
import time

# name -> (label, unit, kind); kind selects how the figure is read from fio's JSON.
WORKLOADS = {
    "randwrite-4k-qd1": ("4k randwrite QD1", "IOPS", "write_iops"),
    "randwrite-4k-qd32": ("4k randwrite QD32", "IOPS", "write_iops"),
    "seqwrite-1m-qd8": ("1M seq write QD8", "GiB/s", "write_gibs"),
    "randread-4k-qd32": ("4k randread QD32", "IOPS", "read_iops"),
    "writeflush-4k-qd1": ("4k write+flush QD1", "pairs/s", "pairs"),
}
ORDER = list(WORKLOADS)

# The activity-log table: blkrepd without metadata is the baseline; blkrepd has the default
# activity log (the working set fits), blkrepd-al4x one a quarter of the working set.
AL_BASELINE = "blkrepd-nomd"
AL_SERVERS = ("blkrepd", "blkrepd-al4x")

# The replication-cost table: pairs under protocols A, B, C against standalone blkrepd.
REPL_BASELINE = "blkrepd"
REPL_SERVERS = ("blkrepd-A", "blkrepd-B", "blkrepd-C")
# workload -> (minimum ratio to standalone, stretch); the QD1 row's target is the latency budget.
REPL_TARGETS = {
    "seqwrite-1m-qd8": (0.8, 0.9),
    "randwrite-4k-qd32": (0.6, 0.8),
}
REPL_BUDGET_EXTRA_US = 100.0


def load_fio(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    # fio's nbd engine may print "fio: connected to NBD server" before the JSON.
    start = text.find("{")
    if start < 0:
        raise ValueError(f"{path}: no JSON object")
    return json.loads(text[start:])


def figure(workload, path):
    d = load_fio(path)
    jobs = d.get("jobs") or []
    if len(jobs) != 1:
        raise ValueError(f"{path}: expected 1 job, got {len(jobs)}")
    j = jobs[0]
    if j.get("error"):
        raise ValueError(f"{path}: fio job error {j['error']}")
    kind = WORKLOADS[workload][2]
    w, r = j["write"], j["read"]
    if kind == "write_iops":
        if w["total_ios"] == 0:
            raise ValueError(f"{path}: no writes completed")
        return w["iops"]
    if kind == "read_iops":
        if r["total_ios"] == 0:
            raise ValueError(f"{path}: no reads completed")
        return r["iops"]
    if kind == "write_gibs":
        if w["total_ios"] == 0:
            raise ValueError(f"{path}: no writes completed")
        return w["bw_bytes"] / 2**30
    if kind == "pairs":
        # fio --fsync=1: after every write fio waits for it and issues a FLUSH (nbd engine:
        # nbd_aio_flush), so the write rate over the run *is* the rate of write+flush pairs.
        # Check that there was one flush per write.
        writes = w["total_ios"]
        flushes = j.get("sync", {}).get("total_ios", 0)
        if writes == 0:
            raise ValueError(f"{path}: no writes completed")
        if abs(flushes - writes) > max(2, 0.01 * writes):
            raise ValueError(f"{path}: {writes} writes but {flushes} flushes: not write+flush pairs")
        return w["iops"]
    raise ValueError(kind)


def fmt_value(v, unit):
    if v is None or math.isnan(v):
        return "n/a"
    if unit == "GiB/s":
        return f"{v:.2f} GiB/s"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def verdict(r):
    # NBD.md: two identical servers measured this way differ by up to ~15% on this machine.
    if r < 0.85:
        return "slower"
    if r > 1.15:
        return "faster"
    return "equal"


def median(xs):
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def read_results(results):
    """RESULTS.tsv -> ({(workload, server): {round: value}}, workloads in ORDER)."""
    data = {}
    workloads = []
    with open(results, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 4 or parts[0] == "round":
                continue
            rnd, wl, srv, val = parts[:4]
            if wl not in workloads:
                workloads.append(wl)
            data.setdefault((wl, srv), {})[int(rnd)] = float(val)
    workloads.sort(key=lambda w: ORDER.index(w) if w in ORDER else len(ORDER))
    return data, workloads


def round_ratios(a, b):
    """Per-round ratios a/b, in round order, of two {round: value} maps."""
    return [a[r] / b[r] for r in sorted(a) if r in b
            and not math.isnan(a[r]) and not math.isnan(b[r]) and b[r] > 0]


def table(results, base, servers, detail=False):
    data, workloads = read_results(results)
    peers = [s for s in servers if s != base] if base in servers else []

    head = ["workload"] + servers + [f"{base}/{p}" for p in peers]
    out = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    details = []
    for wl in workloads:
        label, unit, _ = WORKLOADS.get(wl, (wl, "", ""))
        row = [f"{label} ({unit})"]
        for s in servers:
            row.append(fmt_value(median(data.get((wl, s), {}).values()), unit))
        for p in peers:
            ratios = round_ratios(data.get((wl, base), {}), data.get((wl, p), {}))
            if ratios:
                m = statistics.median(ratios)
                row.append(f"{m:.2f} ({verdict(m)})")
                details.append((label, p, ratios))
            else:
                row.append("n/a")
        out.append("| " + " | ".join(row) + " |")
    if detail and details:
        out += ["", f"Per-round ratios {base}/peer (in round order):", "",
                "| workload | peer | ratios | min | max |", "|---|---|---|---:|---:|"]
        for label, p, ratios in details:
            out.append(f"| {label} | {p} | {' '.join(f'{x:.2f}' for x in ratios)} "
                       f"| {min(ratios):.2f} | {max(ratios):.2f} |")
    return "\n".join(out)


def status_counters(path):
    """(AL records written, NBD writes, AL evictions) of a `blkrep status --json` document,
    summed over its volumes. A volume with meta_disk = "none" has no "metadata": 0 AL writes."""
    with open(path, encoding="utf-8") as f:
        st = json.load(f)
    vols = st.get("volumes")
    if not isinstance(vols, list) or not vols:
        raise ValueError(f"{path}: no volumes in the status document")
    al = io = ev = 0
    for v in vols:
        io += int(v["io"]["writes"])
        md = v.get("metadata")
        if md:
            al += int(md["activity_log"]["writes"])
            ev += int(md["activity_log"].get("evictions", 0))
    return al, io, ev


def fmt_per1000(x):
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def al_table(results, al_tsv, detail=False):
    data, workloads = read_results(results)
    per1000 = {}  # (workload, server) -> {round: AL records per 1000 NBD writes}
    with open(al_tsv, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 5 or parts[0] == "round":
                continue
            rnd, wl, srv, al, io = parts[:5]
            try:
                al, io = float(al), float(io)
            except ValueError:
                continue
            v = 1000 * al / io if io > 0 and not math.isnan(al) else float("nan")
            per1000.setdefault((wl, srv), {})[int(rnd)] = v
    writes = [w for w in workloads if WORKLOADS.get(w, ("", "", ""))[2] != "read_iops"]
    rows, details = [], []
    for wl in writes:
        label, unit, _ = WORKLOADS.get(wl, (wl, "", ""))
        for s in AL_SERVERS:
            if (wl, s) not in data:
                continue
            vals = data[(wl, s)]
            ratios = round_ratios(vals, data.get((wl, AL_BASELINE), {}))
            pk = per1000.get((wl, s), {})
            ratio = rng = "n/a"
            if ratios:
                ratio = f"{statistics.median(ratios):.2f}"
                rng = f"{min(ratios):.2f}-{max(ratios):.2f}"
            rows.append(f"| {label} ({unit}) | {s} | {fmt_value(median(vals.values()), unit)} "
                        f"| {ratio} | {rng} | {fmt_per1000(median(pk.values()))} |")
            details.append((label, s, ratios, [pk[r] for r in sorted(pk)]))
    if not rows:
        return ""
    out = [f"| workload | server | figure | server/{AL_BASELINE} | per-round range "
           "| AL writes per 1000 writes |",
           "|---|---|---:|---:|---:|---:|"] + rows
    if detail:
        out += ["", f"Per-round figures (in round order): ratio server/{AL_BASELINE}, "
                "AL writes per 1000 writes:", "",
                "| workload | server | ratios | AL writes per 1000 writes |", "|---|---|---|---|"]
        for label, s, ratios, pk in details:
            out.append(f"| {label} | {s} | {' '.join(f'{x:.2f}' for x in ratios) or 'n/a'} "
                       f"| {' '.join(fmt_per1000(x) for x in pk) or 'n/a'} |")
    return "\n".join(out)


def mean_write_latency_us(rawdir, rnd, wl, srv):
    """fio's mean write latency (submission to completion) of one run, in us; nan if unknown."""
    try:
        d = load_fio(os.path.join(rawdir, f"r{rnd}-{wl}-{srv}.json"))
        return d["jobs"][0]["write"]["lat_ns"]["mean"] / 1000.0
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return float("nan")


def repl_table(results, rawdir, rtt_us, pwrite_us, detail=False):
    data, workloads = read_results(results)
    try:
        budget = float(rtt_us) + float(pwrite_us) + REPL_BUDGET_EXTRA_US
    except ValueError:
        budget = float("nan")
    writes = [w for w in workloads if WORKLOADS.get(w, ("", "", ""))[2] != "read_iops"]
    rows, details = [], []
    for wl in writes:
        label, unit, _ = WORKLOADS.get(wl, (wl, "", ""))
        base = data.get((wl, REPL_BASELINE), {})
        for s in REPL_SERVERS:
            if (wl, s) not in data:
                continue
            vals = data[(wl, s)]
            ratios = round_ratios(vals, base)
            added = []
            for r in sorted(vals):
                if r not in base or math.isnan(vals[r]) or math.isnan(base[r]):
                    continue
                a = mean_write_latency_us(rawdir, r, wl, s)
                b = mean_write_latency_us(rawdir, r, wl, REPL_BASELINE)
                if not math.isnan(a) and not math.isnan(b):
                    added.append(a - b)
            ratio = rng = "n/a"
            m = float("nan")
            if ratios:
                m = statistics.median(ratios)
                ratio = f"{m:.2f}"
                rng = f"{min(ratios):.2f}-{max(ratios):.2f}"
            lat = f"{statistics.median(added):+.0f}" if added else "n/a"
            if wl in REPL_TARGETS:
                lo, hi = REPL_TARGETS[wl]
                target = f">= {lo:.1f}x (stretch {hi:.1f}x)"
                if math.isnan(m):
                    verdict_s = "n/a"
                else:
                    verdict_s = "met, stretch too" if m >= hi else ("met" if m >= lo else "MISSED")
            elif wl == "randwrite-4k-qd1":
                target = f"added <= {budget:.0f} us" if not math.isnan(budget) else "added <= RTT + pwrite + 100 us"
                if not added or math.isnan(budget):
                    verdict_s = "n/a"
                else:
                    verdict_s = "met" if statistics.median(added) <= budget else "MISSED"
            else:
                target, verdict_s = "none", ""
            rows.append(f"| {label} ({unit}) | {s} | {fmt_value(median(vals.values()), unit)} "
                        f"| {fmt_value(median(base.values()), unit)} | {ratio} | {rng} | {lat} "
                        f"| {target} | {verdict_s} |")
            details.append((label, s, ratios, added))
    if not rows:
        return ""
    out = [f"| workload | server | figure | {REPL_BASELINE} | server/{REPL_BASELINE} | per-round range "
           "| added mean latency (us) | target | verdict |",
           "|---|---|---:|---:|---:|---:|---:|---|---|"] + rows
    if detail:
        out += ["", f"Per-round figures (in round order): ratio server/{REPL_BASELINE}, "
                "added mean write latency (us):", "",
                "| workload | server | ratios | added latency (us) |", "|---|---|---|---|"]
        for label, s, ratios, added in details:
            out.append(f"| {label} | {s} | {' '.join(f'{x:.2f}' for x in ratios) or 'n/a'} "
                       f"| {' '.join(f'{x:+.0f}' for x in added) or 'n/a'} |")
    return "\n".join(out)


def parse_time(s):
    """RFC 3339 with up to nanoseconds and Z -> Unix seconds (float, sub-microsecond kept)."""
    from datetime import datetime, timezone
    s = s.strip()
    frac = 0.0
    if s.endswith("Z"):
        s = s[:-1]
        tz = timezone.utc
    else:
        tz = None
    if "." in s:
        s, f = s.split(".", 1)
        frac = float("0." + f)
    dt = datetime.fromisoformat(s)
    if tz is not None:
        dt = dt.replace(tzinfo=tz)
    return dt.timestamp() + frac


def peer_line(path, volume=None):
    with open(path, encoding="utf-8") as f:
        return peer_fields(json.load(f), volume, path)


def peer_fields(st, volume=None, path="status"):
    """The `peer` line of a parsed status document."""
    vols = st.get("volumes") or []
    if volume is not None:
        vols = [v for v in vols if v.get("name") == volume]
    if not vols:
        raise ValueError(f"{path}: no volume {volume or ''} in the status document")
    peers = vols[0].get("peers") or []
    if not peers:
        raise ValueError(f"{path}: volume {vols[0].get('name')} has no peer")
    p = peers[0]
    hs = p.get("handshake") or {}
    out = [p["connection"], p["replication"], p.get("disk", "-"), p["out_of_sync_bytes"],
           p["unacked_bytes"], p["in_flight_writes"], p["reconnects"], p["sent_bytes"],
           p["received_bytes"], hs.get("rule") or "-", hs.get("action") or "-"]
    rs = p.get("resync")
    if rs:
        start = parse_time(rs["started_at"])
        secs = "-"
        if rs.get("finished_at"):
            secs = f"{parse_time(rs['finished_at']) - start:.6f}"
        out += [int(bool(rs["running"])), int(bool(rs["checksum"])), rs["total_bytes"],
                rs["done_bytes"], rs["skipped_bytes"], secs, f"{start:.6f}"]
    else:
        out += ["-"] * 7
    return " ".join(str(x) for x in out)


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def latency_budget(directory, rounds=2000):
    """(median TCP round trip on 127.0.0.1, median 4 KiB pwrite) in us."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def echo():
        c, _ = srv.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            b = c.recv(64)
            if not b:
                break
            c.sendall(b)
        c.close()

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    c = socket.create_connection(srv.getsockname())
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"x" * 64
    rtts = []
    for i in range(rounds + 100):
        t0 = time.perf_counter_ns()
        c.sendall(msg)
        got = 0
        while got < len(msg):
            got += len(c.recv(64))
        if i >= 100:
            rtts.append(time.perf_counter_ns() - t0)
    c.close()
    t.join(5)
    srv.close()

    path = os.path.join(directory, "pwrite-probe.img")
    size = 64 << 20
    buf = os.urandom(4096)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for off in range(0, size, 1 << 20):  # allocated, like the benchmark's filled images
            os.pwrite(fd, os.urandom(1 << 20), off)
        os.fdatasync(fd)
        rnd = int.from_bytes(os.urandom(4), "little")
        pws = []
        for i in range(rounds):
            rnd = (rnd * 1103515245 + 12345) & 0x7FFFFFFF
            off = (rnd % (size // 4096)) * 4096
            t0 = time.perf_counter_ns()
            os.pwrite(fd, buf, off)
            pws.append(time.perf_counter_ns() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(rtts) / 1000.0, statistics.median(pws) / 1000.0


def main(argv):
    if len(argv) >= 3 and argv[0] == "value":
        try:
            print(f"{figure(argv[1], argv[2]):.6g}")
        except (OSError, ValueError, KeyError) as e:
            print(f"report.py: {e}", file=sys.stderr)
            print("nan")
            return 1
        return 0
    if len(argv) >= 4 and argv[0] == "table":
        detail = "--detail" in argv
        args = [a for a in argv[1:] if a != "--detail"]
        print(table(args[0], args[1], args[2:], detail))
        return 0
    if len(argv) == 2 and argv[0] == "status-counters":
        try:
            print(*status_counters(argv[1]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"report.py: {e}", file=sys.stderr)
            return 1
        return 0
    if len(argv) >= 5 and argv[0] == "repl-table":
        detail = "--detail" in argv
        args = [a for a in argv[1:] if a != "--detail"]
        print(repl_table(args[0], args[1], args[2], args[3], detail))
        return 0
    if argv and argv[0] == "peer" and len(argv) in (2, 3):
        try:
            print(peer_line(argv[1], argv[2] if len(argv) == 3 else None))
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"report.py: {e}", file=sys.stderr)
            return 1
        return 0
    if len(argv) == 2 and argv[0] == "free-ports":
        print(*free_ports(int(argv[1])))
        return 0
    if len(argv) == 2 and argv[0] == "latency-budget":
        rtt, pw = latency_budget(argv[1])
        print(f"{rtt:.1f} {pw:.1f}")
        return 0
    if len(argv) >= 3 and argv[0] == "al-table":
        detail = "--detail" in argv
        args = [a for a in argv[1:] if a != "--detail"]
        print(al_table(args[0], args[1], detail))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
