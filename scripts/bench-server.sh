#!/usr/bin/env bash
# Side-by-side server benchmark in one run: the disk's serial fdatasync rate,
# then `trail bench` against a release `traild` in sync mode (fsync before
# every ack), unary at 1, 16 and 64 clients and AppendStream with batches,
# recording CPU steal for each step and the server's peak RSS. Prints a
# Markdown table for docs/BENCHMARKS.md. Everything listens on 127.0.0.1.
#
# Usage: scripts/bench-server.sh [SECONDS_PER_STEP]   (default 15)
#   TRAIL_BENCH_DIR    where the data goes (default: target/bench-server)
#   TRAIL_BENCH_STREAM_CLIENTS  streaming clients (default 4)
#   TRAIL_BENCH_RSS_SECONDS     length of the last streaming run, whose job is
#                               to append about 10 million events while the
#                               server's peak RSS is watched (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-15}"
stream_clients="${TRAIL_BENCH_STREAM_CLIENTS:-4}"
rss_seconds="${TRAIL_BENCH_RSS_SECONDS:-60}"
root="${TRAIL_BENCH_DIR:-$PWD/target/bench-server}"
port=50591
addr="http://127.0.0.1:$port"

cargo build --release --locked --bin traild --bin trail >&2
rm -rf "$root" && mkdir -p "$root"

# cpu steal since the last call, as a percentage of all CPU time
steal_mark() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $9}' /proc/stat; }
steal_since() {
  read -r total0 steal0 <<<"$1"
  read -r total1 steal1 <<<"$(steal_mark)"
  awk -v t="$((total1 - total0))" -v s="$((steal1 - steal0))" 'BEGIN{ if (t > 0) printf "%.1f%%", 100*s/t; else print "n/a" }'
}

fsync="$(scripts/fsync-rate.sh "$root" 3000 | awk -F': ' '/fdatasync_ops_per_second/{print $2}')"
rtt_us="$(python3 - <<'PY'
import socket, time
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
client = socket.create_connection(server.getsockname()); conn, _ = server.accept()
n = 2000; start = time.perf_counter()
for _ in range(n):
    client.sendall(b"x"); conn.recv(1); conn.sendall(b"y"); client.recv(1)
print(f"{(time.perf_counter() - start) / n * 1e6:.0f}")
PY
)"

target/release/traild --data-dir "$root/data" --listen "127.0.0.1:$port" --durability sync >"$root/traild.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "listening on" "$root/traild.log" && break
  sleep 0.1
done

echo "| run | events/s | p50 | p99 | p999 | steal | vs serial fdatasync |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
echo "| disk: serial fdatasync (4 KiB overwrite) | $fsync | | | | | 1.0x |"
echo "| loopback TCP round trip | | ${rtt_us} us | | | | |"

run() {
  local name="$1"; shift
  local mark; mark="$(steal_mark)"
  local out
  out="$(target/release/trail --addr "$addr" --json bench --duration "${seconds}s" "$@" 2>/dev/null | tail -1)"
  local steal; steal="$(steal_since "$mark")"
  python3 - "$name" "$steal" "$fsync" "$out" <<'PY'
import json, sys
name, steal, fsync, line = sys.argv[1:5]
r = json.loads(line)
rate = r["events_per_second"]
ms = lambda key: f'{r[key]:.2f} ms'
errors = f" ({r['errors']} errors: {r['first_error']})" if r["errors"] else ""
print(f"| {name}{errors} | {rate:,.0f} | {ms('p50_ms')} | {ms('p99_ms')} | {ms('p999_ms')} | {steal} | {rate / float(fsync):.1f}x |")
PY
}

run "unary, 1 client" --log b1 --clients 1 --event-bytes 512
run "unary, 16 clients" --log b16 --clients 16 --event-bytes 512
run "unary, 64 clients" --log b64 --clients 64 --event-bytes 512
run "AppendStream, ${stream_clients} clients x batch 100" --log bs --clients "$stream_clients" --stream --batch 100 --event-bytes 512

seconds="$rss_seconds" run "AppendStream, ${stream_clients} clients x batch 100, ${rss_seconds}s (RSS run)" --log rss --clients "$stream_clients" --stream --batch 100 --event-bytes 512

rss_kib="$(awk '/VmHWM/{print $2}' /proc/$server/status)"
total=0
for log in b1 b16 b64 bs rss; do
  lsn="$(target/release/trail --addr "$addr" --json head --log "$log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["lsn"])')"
  total=$((total + lsn))
done
echo
echo "traild peak RSS (VmHWM) over the whole run: $((rss_kib / 1024)) MiB, with $total events appended in all (log rss alone: $lsn)"
du -sh "$root/data" | awk '{print "data on disk: " $1}'
