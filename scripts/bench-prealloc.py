#!/usr/bin/env python3
"""How to preallocate a segment (issue 11, docs/BENCHMARKS.md "Preallocation").

Trail zero-fills each new segment (on the preparer thread) so that the
writer's fdatasyncs flush data only. This measures that choice against
fallocate(2) on the same disk, rounds interleaved: for each way, the time
and CPU to prepare a segment of SEGMENT_MIB, then COUNT times "write one
group of GROUP_BYTES at the next offset, fdatasync" (the writer's pattern;
the default is about 15 records of 620 bytes, a group at 64 clients).

Usage: scripts/bench-prealloc.py [DIR] [ROUNDS] [COUNT]
  (defaults: target/bench-prealloc, 3, 4000; SEGMENT_MIB=64, GROUP_BYTES=9300)
Not part of CI.
"""

import os
import resource
import sys
import time

directory = sys.argv[1] if len(sys.argv) > 1 else "target/bench-prealloc"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
count = int(sys.argv[3]) if len(sys.argv) > 3 else 4000
segment_bytes = int(os.environ.get("SEGMENT_MIB", "64")) << 20
group_bytes = int(os.environ.get("GROUP_BYTES", "9300"))
os.makedirs(directory, exist_ok=True)


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def prepare(way, path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    if way == "zero-fill":  # what the preparer does: 1 MiB writes of zeros, fsync
        zeros = b"\0" * (1 << 20)
        for offset in range(0, segment_bytes, len(zeros)):
            os.pwrite(fd, zeros, offset)
    else:
        os.posix_fallocate(fd, 0, segment_bytes)
    os.fsync(fd)
    return fd, time.perf_counter() - t0, cpu_seconds() - cpu0


def run(way):
    path = os.path.join(directory, f"segment.{way}")
    fd, wall, cpu = prepare(way, path)
    group = b"x" * group_bytes
    latencies = []
    offset = 0
    started = time.perf_counter()
    for _ in range(count):
        if offset + group_bytes > segment_bytes:
            break
        t = time.perf_counter()
        os.pwrite(fd, group, offset)
        os.fdatasync(fd)
        latencies.append(time.perf_counter() - t)
        offset += group_bytes
    elapsed = time.perf_counter() - started
    os.close(fd)
    os.unlink(path)
    latencies.sort()
    n = len(latencies)
    return {
        "way": way,
        "prepare_ms": wall * 1e3,
        "prepare_cpu_ms": cpu * 1e3,
        "syncs_per_second": n / elapsed,
        "p50_ms": latencies[n // 2] * 1e3,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1e3,
    }


print(f"segment {segment_bytes >> 20} MiB, group {group_bytes} bytes, {count} groups per run, {rounds} rounds")
print()
print("| round | way | prepare (wall) | prepare (CPU) | group write + fdatasync | p50 | p99 |")
print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
for round_number in range(1, rounds + 1):
    for way in ("zero-fill", "fallocate"):
        r = run(way)
        print(
            f"| {round_number} | {way} | {r['prepare_ms']:.1f} ms | {r['prepare_cpu_ms']:.1f} ms | "
            f"{r['syncs_per_second']:,.0f}/s | {r['p50_ms']:.3f} ms | {r['p99_ms']:.3f} ms |"
        )
