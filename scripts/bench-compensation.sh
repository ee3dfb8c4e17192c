#!/usr/bin/env bash
# The compensation benchmark (docs/BENCHMARKS.md, "Compensation"): latency of
# Compensate (dry run and real) on a resource with CHANGES changes, of a
# refused one (the conflict check over every later change), and of a
# Rollback over ROLLBACK changes (dry run and real), through the gRPC
# server in process on 127.0.0.1 with fsync before every ack
# (crates/trail-server/examples/compensation_bench.rs). CPU steal printed.
#
# Usage: scripts/bench-compensation.sh [CHANGES] [ROLLBACK] [ROUNDS]  (defaults 10000, 1000, 200)
#   TRAIL_BENCH_DIR  where the data goes (default: target/bench-compensation)
set -euo pipefail
cd "$(dirname "$0")/.."

changes="${1:-10000}"
rollback="${2:-1000}"
rounds="${3:-200}"
root="${TRAIL_BENCH_DIR:-$PWD/target/bench-compensation}"

cargo build --release --locked -p trail-server --example compensation_bench >&2
rm -rf "$root" && mkdir -p "$root"

steal_mark() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $9}' /proc/stat; }
read -r total0 steal0 <<<"$(steal_mark)"
TMPDIR="$root" target/release/examples/compensation_bench "$changes" "$rollback" "$rounds"
read -r total1 steal1 <<<"$(steal_mark)"
awk -v t="$((total1 - total0))" -v s="$((steal1 - steal0))" \
  'BEGIN{ if (t > 0) printf "steal: %.1f%%\n", 100*s/t; else print "steal: n/a" }'
rm -rf "$root"
