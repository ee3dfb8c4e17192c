#!/usr/bin/env bash
# The archive benchmark (docs/BENCHMARKS.md, "Tiered storage"), one run:
# archive throughput beside raw object_store puts of the same segments, the
# compression ratio, a cold and a warm read-through, restore time per GiB,
# and appends with an archive upload running beside them against none
# (crates/trail-archive/examples/archive_bench.rs; the tests' s3s-fs server
# on 127.0.0.1, SigV4 checked). CPU steal printed.
#
# Usage: scripts/bench-archive.sh [LOG_MIB] [APPEND_SECONDS]  (defaults 512, 10)
#   TRAIL_BENCH_DIR  where the data goes (default: target/bench-archive)
set -euo pipefail
cd "$(dirname "$0")/.."

log_mib="${1:-512}"
seconds="${2:-10}"
root="${TRAIL_BENCH_DIR:-$PWD/target/bench-archive}"

cargo build --release --locked -p trail-archive --example archive_bench >&2
rm -rf "$root" && mkdir -p "$root"

steal_mark() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $9}' /proc/stat; }
read -r total0 steal0 <<<"$(steal_mark)"
TMPDIR="$root" target/release/examples/archive_bench "$log_mib" "$seconds"
read -r total1 steal1 <<<"$(steal_mark)"
awk -v t="$((total1 - total0))" -v s="$((steal1 - steal0))" \
  'BEGIN{ if (t > 0) printf "steal: %.1f%%\n", 100*s/t; else print "steal: n/a" }'
rm -rf "$root"
