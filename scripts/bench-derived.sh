#!/usr/bin/env bash
# The derived-state benchmark (docs/BENCHMARKS.md, "Derived state"), in one
# run:
#
# 1. In process (crates/trail-index/examples/derived_bench.rs): the writer's
#    peak, each store catching up from nothing, lag under an in-process
#    load, selective queries and GetState on a log of EVENTS events, size
#    per event.
# 2. Against a release `traild` (fsync before ack), rounds interleaved
#    A B A B: `trail bench` at 64 unary clients and AppendStream (4 x 100)
#    with the derived stores following (A) and turned off (B), sampling
#    `trail head` every 200 ms for the stores' lag, and timing how long the
#    lag takes to drain after each loaded run. CPU steal per run.
#
# Usage: scripts/bench-derived.sh [EVENTS] [SECONDS_PER_RUN]  (defaults 1000000, 15)
#   TRAIL_BENCH_DIR  where the data goes (default: target/bench-derived)
# Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

events="${1:-1000000}"
seconds="${2:-15}"
root="${TRAIL_BENCH_DIR:-$PWD/target/bench-derived}"
port=50592
addr="http://127.0.0.1:$port"

cargo build --release --locked --bin traild --bin trail >&2
cargo build --release --locked -p trail-index --example derived_bench >&2
rm -rf "$root" && mkdir -p "$root"

steal_mark() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $9}' /proc/stat; }
steal_since() {
  read -r total0 steal0 <<<"$1"
  read -r total1 steal1 <<<"$(steal_mark)"
  awk -v t="$((total1 - total0))" -v s="$((steal1 - steal0))" 'BEGIN{ if (t > 0) printf "%.1f%%", 100*s/t; else print "n/a" }'
}

echo "## in process, $events events"
mark="$(steal_mark)"
TMPDIR="$root" target/release/examples/derived_bench "$events"
echo "steal: $(steal_since "$mark")"

printf '[derived]\nenabled = false\n' >"$root/off.toml"
printf '[derived]\nenabled = true\n' >"$root/on.toml"

# Runs one `trail bench` against a fresh server with config $1; with the
# derived stores on, samples their lag while it runs and times the drain.
round() {
  local mode="$1" name="$2"; shift 2
  local data="$root/data-$mode-$RANDOM"
  target/release/traild --config "$root/$mode.toml" --data-dir "$data" --listen "127.0.0.1:$port" \
    --metrics-listen off --durability sync >"$root/traild.log" 2>&1 &
  local server=$!
  for _ in $(seq 100); do grep -q "listening on" "$root/traild.log" && break; sleep 0.1; done
  local mark; mark="$(steal_mark)"
  local lagfile="$root/lag.txt"; : >"$lagfile"
  target/release/trail --addr "$addr" --json bench --log b --duration "${seconds}s" "$@" >"$root/bench.json" 2>/dev/null &
  local bench=$!
  if [ "$mode" = on ]; then
    while kill -0 "$bench" 2>/dev/null; do
      target/release/trail --addr "$addr" --json head --log b 2>/dev/null >>"$lagfile" || true
      sleep 0.2
    done
  fi
  wait "$bench"
  local steal; steal="$(steal_since "$mark")"
  local drain="-"
  if [ "$mode" = on ]; then
    local start; start="$(date +%s.%N)"
    for _ in $(seq 600); do
      local lags; lags="$(target/release/trail --addr "$addr" --json head --log b | python3 -c 'import json,sys; h=json.load(sys.stdin); print(h["index_lag"], h["state_lag"])')"
      [ "$lags" = "0 0" ] && break
      sleep 0.1
    done
    drain="$(python3 -c "import time; print(f'{time.time() - $start:.2f} s')")"
  fi
  kill -TERM "$server"; wait "$server" || true
  python3 - "$name" "$mode" "$steal" "$drain" "$root/bench.json" "$lagfile" <<'PY'
import json, sys
name, mode, steal, drain, bench, lagfile = sys.argv[1:7]
r = json.loads(open(bench).read().strip().splitlines()[-1])
lags = [json.loads(line) for line in open(lagfile) if line.strip().startswith("{")]
if lags:
    rate = r["events_per_second"]
    index = max(h["index_lag"] for h in lags)
    state = max(h["state_lag"] for h in lags)
    lag = f"{index:,} ({index / rate:.2f} s) / {state:,} ({state / rate:.2f} s)"
else:
    lag = "-"
print(f"| {name} | derived {mode} | {r['events_per_second']:,.0f} | {r['p99_ms']:.2f} ms | {lag} | {drain} | {steal} |")
PY
}

echo
echo "## against traild, ${seconds}s per run, rounds interleaved"
echo "| load | stores | events/s | p99 | largest lag: query index / state store (records, s of appends) | drained after | steal |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
for pass in 1 2; do
  round on "unary, 64 clients, 1 event (round $pass)" --clients 64 --event-bytes 512
  round off "unary, 64 clients, 1 event (round $pass)" --clients 64 --event-bytes 512
  round on "AppendStream, 4 x 100 (round $pass)" --clients 4 --stream --batch 100 --event-bytes 512
  round off "AppendStream, 4 x 100 (round $pass)" --clients 4 --stream --batch 100 --event-bytes 512
done
