#!/usr/bin/env bash
# Start-up time of a large log (issue "Log engine, second stage": a 10 GiB
# log opens in under 1 s): writes a log of GIB GiB once (default 10), then
# opens it after a clean stop (page cache warm, then dropped when allowed),
# with full verification at open for comparison, and after a kill -9 in the
# middle of appends. Not part of CI. Needs GIB + 1 GiB of free disk.
set -euo pipefail
cd "$(dirname "$0")/.."

gib="${1:-10}"
dir="${TRAIL_BENCH_DIR:-target/bench-open}"
cargo build --release --locked -p trail-log --example open_time
bin=target/release/examples/open_time

steal() { awk '/^cpu /{print $9}' /proc/stat; }
steal_before=$(steal)
if [ ! -d "$dir/big" ]; then
    "$bin" write "$dir" "$gib"
fi
sync
echo "== after a clean stop (page cache warm)"
"$bin" open "$dir"
if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then
    echo "== after a clean stop (page cache dropped)"
    "$bin" open "$dir"
else
    echo "== (cannot drop the page cache here: cold-cache run skipped)"
fi
echo "== verify_on_open = true (every record re-hashed before the log opens)"
"$bin" open "$dir" full
echo "== after kill -9 during appends"
child_log=$(mktemp)
"$bin" append "$dir" >"$child_log" 2>&1 &
pid=$!
for _ in $(seq 1 120); do
    grep -q "appending until killed" "$child_log" && break
    sleep 0.5
done
sleep 2
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
rm -f "$child_log"
"$bin" open "$dir"
echo "cpu steal during the run: $(( $(steal) - steal_before )) ticks"
