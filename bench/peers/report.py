#!/usr/bin/env python3
"""Helpers of scripts/bench-peers.sh (docs/BENCHMARKS.md, "Beside peers").

  report.py record RESULTS --system S --workload W --round R --kind K \
      --out FILE --wall SECONDS --steal PCT --server-cpu SECONDS \
      --client-cpu SECONDS [--events-per-tx N] [--pglog-prefix PREFIX] \
      [--lag-max RECORDS --catch-up-seconds S]
      Normalises one run's client output (K: json for `trail --json bench`
      and `peer-load umadb`, redis for `redis-benchmark --csv`, pgbench for
      pgbench's stdout and its per-transaction logs) into one JSON line
      appended to RESULTS, and prints that line.

  report.py table RESULTS --fsync-rate R --fsync-p50-ms P --rtt-us U \
      --versions JSON
      Prints the Markdown tables: medians over the rounds with ratios, then
      every run.

  report.py fsync-p50 DIR [COUNT]
      p50 and rate of "write 512 bytes at the next offset of a
      preallocated file, then fdatasync", one after the other (the log's
      own pattern), printed as JSON.

  report.py rtt
      Loopback TCP round trip (1-byte ping-pong), median, microseconds.
"""

import csv
import glob
import json
import os
import socket
import statistics
import sys
import time

WORKLOADS = [
    ("w64x1", "64 clients, 1 event per request"),
    ("w64x100", "64 clients, 100 events per unary request"),
    ("s4x100", "AppendStream, 4 streams, 100 per request"),
    ("w1x1", "1 client, 1 event per request"),
]
PEERS = ["umadb", "redis", "postgres"]
SYSTEMS = ["trail", "trail-base", "trail-bare"] + PEERS + ["ceiling"]


def args_dict(argv):
    out, key = {}, None
    for item in argv:
        if item.startswith("--"):
            key = item[2:].replace("-", "_")
            out[key] = True
        elif key is not None:
            out[key] = item
            key = None
    return out


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


def record(results, argv):
    a = args_dict(argv)
    wall = float(a["wall"])
    row = {
        "system": a["system"],
        "workload": a["workload"],
        "round": int(a["round"]),
        "wall_seconds": wall,
        "steal_pct": float(a["steal"]),
        "server_cpu_pct": 100.0 * float(a["server_cpu"]) / wall,
        "client_cpu_pct": 100.0 * float(a["client_cpu"]) / wall,
        # everything else that ran on the machine meanwhile (other work,
        # the script itself, the kernel's share not charged to a process)
        "other_cpu_pct": 100.0 * (float(a.get("busy_cpu", 0)) - float(a["server_cpu"]) - float(a["client_cpu"])) / wall,
        "events_per_second": None,
        "p50_ms": None,
        "p99_ms": None,
        "p999_ms": None,
        "errors": 0,
        "first_error": None,
        # the derived stores (trail only): the most records they were
        # behind during the run, and how long they took to catch up after
        "lag_max": int(a["lag_max"]) if str(a.get("lag_max", "")).isdigit() else None,
        "catch_up_seconds": a.get("catch_up_seconds") if a.get("catch_up_seconds") not in (None, True) else None,
    }
    text = open(a["out"]).read() if os.path.exists(a["out"]) else ""
    err_path = a["out"] + ".err"
    client_err = open(err_path).read().strip().splitlines()[-1:] if os.path.exists(err_path) else []
    kind = a["kind"]
    try:
        if kind == "json":
            line = [l for l in text.splitlines() if l.startswith("{")][-1]
            r = json.loads(line)
            for key in ("events_per_second", "p50_ms", "p99_ms", "p999_ms", "errors", "first_error"):
                row[key] = r.get(key)
        elif kind == "redis":
            rows = list(csv.reader(l for l in text.splitlines() if l.strip()))
            header, last = rows[0], rows[-1]
            r = dict(zip(header, last))
            row["events_per_second"] = float(r["rps"])
            row["p50_ms"] = float(r["p50_latency_ms"])
            row["p99_ms"] = float(r["p99_latency_ms"])
        elif kind == "pgbench":
            per_tx = int(a.get("events_per_tx", 1))
            tps = None
            for l in text.splitlines():
                if l.startswith("tps = "):
                    tps = float(l.split()[2])
                if l.startswith("number of failed transactions"):
                    row["errors"] = int(l.split(":")[1].split()[0])
            latencies = []
            for path in glob.glob(a["pglog_prefix"] + ".*"):
                with open(path) as f:
                    for l in f:
                        parts = l.split()
                        if len(parts) >= 3 and parts[2].isdigit():
                            latencies.append(int(parts[2]))
            latencies.sort()
            row["events_per_second"] = tps * per_tx if tps is not None else None
            for key, q in (("p50_ms", 0.5), ("p99_ms", 0.99), ("p999_ms", 0.999)):
                v = percentile(latencies, q)
                row[key] = v / 1000.0 if v is not None else None
        else:
            raise ValueError(f"unknown kind {kind}")
    except Exception as error:  # a failed run is recorded as failed, not dropped
        row["errors"] = row["errors"] or 1
        row["first_error"] = f"could not read the client's output: {error!r}" + (
            f"; client: {client_err[0][:200]}" if client_err else "")
    if row["events_per_second"] is None:
        row["errors"] = row["errors"] or 1
        row["first_error"] = row["first_error"] or "no rate in the client's output"
    with open(results, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_rate(v):
    return f"{v:,.0f}/s" if v is not None else "?"


def fmt_ms(v):
    if v is None:
        return "?"
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms"


def table(results, argv):
    a = args_dict(argv)
    versions = json.loads(a.get("versions", "{}"))
    rows = [json.loads(l) for l in open(results) if l.strip()]
    ok = [r for r in rows if not r["errors"]]
    cells = {}
    for w, _ in WORKLOADS:
        for s in SYSTEMS:
            runs = [r for r in ok if r["workload"] == w and r["system"] == s]
            if runs:
                cells[(w, s)] = {
                    "rate": med([r["events_per_second"] for r in runs]),
                    "p50": med([r["p50_ms"] for r in runs]),
                    "p99": med([r["p99_ms"] for r in runs]),
                    "runs": len(runs),
                }
    names = {
        "trail": "Trail (traild, sync)",
        "trail-base": "Trail, baseline (older build or other config)",
        "trail-bare": "Trail, derived stores off",
        "umadb": f"UmaDB {versions.get('umadb', '')}".strip(),
        "redis": f"Redis {versions.get('redis', '')} always".strip(),
        "postgres": f"PostgreSQL {versions.get('postgres', '')}".strip(),
        "ceiling": "gRPC ceiling (no work)",
    }
    shown = [s for s in SYSTEMS if any((w, s) in cells for w, _ in WORKLOADS)]
    print("| workload | " + " | ".join(names[s] for s in shown) + " | Trail / best peer | Trail / ceiling |")
    print("| --- |" + " ---: |" * (len(shown) + 2))
    for w, label in WORKLOADS:
        line = [label]
        for s in shown:
            c = cells.get((w, s))
            if c is None:
                # AppendStream has no UmaDB/Redis/PostgreSQL counterpart: its
                # peers are their 100-event requests.
                line.append("(100-event row)" if w == "s4x100" and (("w64x100", s) in cells) else "")
                continue
            if w == "w1x1":
                line.append(f"{fmt_rate(c['rate'])}, p50 {fmt_ms(c['p50'])}, p99 {fmt_ms(c['p99'])}")
            else:
                line.append(f"{fmt_rate(c['rate'])}, p99 {fmt_ms(c['p99'])}")
        trail = cells.get((w, "trail"))
        peer_w = "w64x100" if w == "s4x100" else w
        peers = [(s, cells[(peer_w, s)]) for s in PEERS if (peer_w, s) in cells]
        if trail and peers:
            best_s, best = max(peers, key=lambda p: p[1]["rate"])
            line.append(f"{trail['rate'] / best['rate']:.2f} ({names[best_s].split()[0]})")
        else:
            line.append("")
        ceiling = cells.get((w, "ceiling"))
        line.append(f"{trail['rate'] / ceiling['rate']:.2f}" if trail and ceiling else "")
        print("| " + " | ".join(line) + " |")
    print()
    fsync_rate = float(a["fsync_rate"])
    fsync_p50 = float(a["fsync_p50_ms"])
    rtt_ms = float(a["rtt_us"]) / 1000.0
    print(
        f"Disk, serial: {fsync_rate:,.0f} fdatasyncs/s (scripts/fsync-rate.sh, 4 KiB); "
        f"write 512 B + fdatasync p50 {fsync_p50:.3f} ms; loopback round trip {rtt_ms * 1000:.0f} us."
    )
    print()
    # The targets, as the numbers put them (medians).
    def get(w, s, k):
        c = cells.get((w, s))
        return c[k] if c else None

    t, r, u = get("w64x1", "trail", "rate"), get("w64x1", "redis", "rate"), get("w64x1", "umadb", "rate")
    tp99 = get("w64x1", "trail", "p99")
    if t and r and u:
        print(
            f"- 64 x 1: Trail/Redis {t / r:.2f} (>= 1), Trail/UmaDB {t / u:.2f} (>= 2), "
            f"p99 {fmt_ms(tp99)} (< 5 ms)"
        )
    u100, u100p99 = get("w64x100", "umadb", "rate"), get("w64x100", "umadb", "p99")
    for w in ("w64x100", "s4x100"):
        t100, t100p99 = get(w, "trail", "rate"), get(w, "trail", "p99")
        if t100 and u100:
            print(
                f"- {dict(WORKLOADS)[w]}: Trail/UmaDB-100 {t100 / u100:.2f} (>= 1.5), "
                f"p99 {fmt_ms(t100p99)} vs UmaDB's {fmt_ms(u100p99)} (below)"
            )
    t1p50 = get("w1x1", "trail", "p50")
    if t1p50:
        bound = 1.5 * (fsync_p50 + rtt_ms)
        print(
            f"- 1 client: p50 {fmt_ms(t1p50)} vs 1.5 x (fdatasync p50 {fsync_p50:.3f} ms + "
            f"round trip {rtt_ms:.3f} ms) = {bound:.3f} ms: {t1p50 / bound:.2f}x of the bound"
        )
    for (w, label), system in [(wl, s) for s in ("trail", "trail-base") for wl in WORKLOADS]:
        runs = [r for r in ok if r["workload"] == w and r["system"] == system]
        lags = [r["lag_max"] for r in runs if r.get("lag_max") is not None]
        ups = [r["catch_up_seconds"] for r in runs if r.get("catch_up_seconds") is not None]
        bare = get(w, "trail-bare", "rate") if system == "trail" else None
        t = get(w, system, "rate")
        if lags or bare:
            parts = []
            if lags:
                parts.append(f"derived stores behind by at most {med(lags):,.0f} records during the run "
                             f"(per run: {', '.join(f'{x:,}' for x in lags)}), caught up "
                             f"{', '.join(str(x) + ' s' for x in ups)} after it")
            if bare and t:
                parts.append(f"with them / without them {t / bare:.2f}")
            base = get(w, "trail-base", "rate") if system == "trail" else None
            if base and t:
                parts.append(f"Trail / baseline {t / base:.2f}")
            print(f"- {label} ({names[system]}): " + "; ".join(parts))
    print()
    print(
        "Every run: CPU as a share of one core over the run (the machine has "
        f"{os.cpu_count()}: 100% = one core busy); other CPU is what else ran "
        "meanwhile (busy time in /proc/stat minus server and client). Latency is per request."
    )
    print()
    print("| round | workload | system | events/s | p50 | p99 | p999 | steal | server CPU | client CPU | other CPU | derived lag max | catch-up |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        err = f" ({row['errors']} errors: {row['first_error']})" if row["errors"] else ""
        rate = f"{row['events_per_second']:,.0f}" if row["events_per_second"] is not None else "?"
        print(
            f"| {row['round']} | {row['workload']} | {row['system']}{err} | {rate} | "
            f"{fmt_ms(row['p50_ms'])} | {fmt_ms(row['p99_ms'])} | "
            f"{fmt_ms(row['p999_ms']) if row['p999_ms'] is not None else '-'} | "
            f"{row['steal_pct']:.1f}% | {row['server_cpu_pct']:.0f}% | {row['client_cpu_pct']:.0f}% | "
            f"{row.get('other_cpu_pct', 0):.0f}% | "
            f"{'' if row.get('lag_max') is None else format(row['lag_max'], ',')} | "
            f"{'' if row.get('catch_up_seconds') is None else str(row['catch_up_seconds']) + ' s'} |"
        )


def fsync_p50(argv):
    directory = argv[0]
    count = int(argv[1]) if len(argv) > 1 else 2000
    path = os.path.join(directory, f"fsync-p50.{os.getpid()}")
    block = b"x" * 512
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"\0" * (512 * count))
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
        samples = []
        start = time.perf_counter()
        for _ in range(count):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            samples.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)
    samples.sort()
    print(json.dumps({
        "count": count,
        "p50_ms": percentile(samples, 0.5) * 1000,
        "p99_ms": percentile(samples, 0.99) * 1000,
        "per_second": count / elapsed,
    }))


def rtt(_argv):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples = []
    for _ in range(2000):
        t0 = time.perf_counter()
        client.sendall(b"x")
        conn.recv(1)
        conn.sendall(b"y")
        client.recv(1)
        samples.append(time.perf_counter() - t0)
    for s in (client, conn, server):
        s.close()
    print(f"{statistics.median(samples) * 1e6:.0f}")


def main():
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "record":
        record(rest[0], rest[1:])
    elif command == "table":
        table(rest[0], rest[1:])
    elif command == "fsync-p50":
        fsync_p50(rest)
    elif command == "rtt":
        rtt(rest)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
