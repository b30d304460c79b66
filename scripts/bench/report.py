#!/usr/bin/env python3
"""Helpers for scripts/bench.sh: extract one figure from a fio JSON file, and build the report.

  report.py value WORKLOAD FIO.json      print the run's figure (IOPS, GiB/s or pairs/s)
  report.py table RESULTS.tsv BASE SERVERS... [--detail]
                                          print the Markdown table (stdout)

RESULTS.tsv columns: round, workload, server, value ("nan" for a failed run).
Per row the table shows each server's median figure over the rounds, and BASE's ratio to each
peer as the median of the per-round ratios BASE/peer (only rounds where both have a figure).
Standard library only: runs on Debian's python3.
"""
import json
import math
import statistics
import sys

# name -> (label, unit, kind); kind selects how the figure is read from fio's JSON.
WORKLOADS = {
    "randwrite-4k-qd1": ("4k randwrite QD1", "IOPS", "write_iops"),
    "randwrite-4k-qd32": ("4k randwrite QD32", "IOPS", "write_iops"),
    "seqwrite-1m-qd8": ("1M seq write QD8", "GiB/s", "write_gibs"),
    "randread-4k-qd32": ("4k randread QD32", "IOPS", "read_iops"),
    "writeflush-4k-qd1": ("4k write+flush QD1", "pairs/s", "pairs"),
}
ORDER = list(WORKLOADS)


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


def table(results, base, servers, detail=False):
    data = {}  # (workload, server) -> {round: value}
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
            b, q = data.get((wl, base), {}), data.get((wl, p), {})
            ratios = [b[r] / q[r] for r in sorted(b) if r in q
                      and not math.isnan(b[r]) and not math.isnan(q[r]) and q[r] > 0]
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
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
