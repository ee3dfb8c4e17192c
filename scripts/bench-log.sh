#!/usr/bin/env bash
# The log engine's benchmarks in one run (criterion): per-record codec costs,
# the disk's serial fdatasync rate, durable appends from 1, 16 and 64
# concurrent appenders, and the engine's CPU ceiling without fsync. Prints a
# Markdown table with each append rate as a multiple of the serial fdatasync
# rate measured in the same run, and the CPU steal during the run.
#
# Usage: scripts/bench-log.sh
#   TRAIL_BENCH_DIR   where the benchmark files go (default: cargo's target tmp dir)
set -euo pipefail
cd "$(dirname "$0")/.."

steal_mark() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $9}' /proc/stat; }
before="$(steal_mark)"
cargo bench --locked -p trail-log --bench codec --bench append >&2
after="$(steal_mark)"

python3 - "$before" "$after" <<'PY'
import json, pathlib, sys
(t0, s0), (t1, s1) = (map(int, x.split()) for x in sys.argv[1:3])
root = pathlib.Path("target/criterion")
def mean_ns(group, bench):
    estimates = json.loads((root / group / bench / "new" / "estimates.json").read_text())
    return estimates["mean"]["point_estimate"]
fsync_per_second = 1e9 / mean_ns("disk", "serial_fdatasync_512B")
print("| benchmark | per event | events/s | vs serial fdatasync |")
print("| --- | ---: | ---: | ---: |")
print(f"| disk: serial write 512 B + fdatasync | {1e3 / fsync_per_second * 1e3:.1f} us | {fsync_per_second:,.0f} | 1.0x |")
for appenders in (1, 16, 64):
    ns = mean_ns("durable_append_512B", f"{appenders}_appenders")
    print(f"| durable append, {appenders} appender(s), 512 B | {ns / 1e3:.2f} us | {1e9 / ns:,.0f} | {1e9 / ns / fsync_per_second:.1f}x |")
ns = mean_ns("engine_cpu_512B", "4_appenders_batch_100_no_fsync")
print(f"| engine CPU ceiling: 4 appenders x 100-event requests, no fsync | {ns / 1e3:.2f} us | {1e9 / ns:,.0f} | |")
for bench in ("encode_frame_crc_hash", "appender_side_prepare_head", "writer_side_finish_prepared_frame", "split_frame_and_decode", "crc32_only", "blake3_chain_hash_only"):
    print(f"| codec: {bench.replace('_', ' ')} (512 B event) | {mean_ns('record_512B', bench):.0f} ns | | |")
print()
print(f"CPU steal during the run: {100 * (s1 - s0) / max(t1 - t0, 1):.1f}%")
PY
