#!/usr/bin/env bash
# Trail beside its peers, in one run (issue 11; docs/BENCHMARKS.md, "Beside
# peers"): the same durable-append workloads against
#   - traild --durability sync (fsync before every ack; every other setting at
#     its default, so the derived stores follow), loaded by `trail bench`;
#     their lag is sampled from traild's metrics during the run (the most
#     records they were behind) and after it (how long they took to catch
#     up with the head);
#   - "trail-bare": the same traild with the derived stores turned off
#     ([derived] enabled = false), to show what following costs;
#   - "trail-base" (only with BENCH_BASELINE_TRAILD or BENCH_BASELINE_CONFIG):
#     an older traild binary, or the same one with a config file, run
#     otherwise exactly like "trail", so a tuning step shows before/after
#     in the same run;
#   - UmaDB 0.7.8 (`cargo install umadb`), loaded by `peer-load umadb`, a
#     client on its own `umadb-client` crate (bench/peers);
#   - Redis from Debian, appendonly yes, appendfsync always, no RDB, loaded
#     by `redis-benchmark` with XADD of a 512-byte field;
#   - PostgreSQL from Debian, synchronous_commit=on, one table, loaded by
#     pgbench inserting 512-byte rows (one per transaction, or 100);
#   - a gRPC ceiling: `peer-load grpc-ceiling`, trail.v1.Log with an Append
#     that stores nothing, loaded by `trail bench` like traild.
# Workloads: 64 clients x 1 event per request; 64 clients x 100 events per
# request; AppendStream 4 streams x 100 per request (Trail and the ceiling);
# 1 client. Rounds are interleaved (every system once per workload, then the
# next round), each run on a freshly started server with a fresh data dir
# under target/bench-peers/run, 512-byte events, each client waiting for its
# durable ack. Records CPU steal (/proc/stat) and the server's and the
# client's CPU (/proc/PID/stat, times) per run, the disk's serial fdatasync
# rate and p50, and the loopback round trip; prints Markdown tables (medians
# over rounds, ratios Trail / best peer) for docs/BENCHMARKS.md.
#
# Every server listens on 127.0.0.1 only; every client run is bounded in
# time; the script stops every server it started and removes their data
# dirs when it exits, however it exits.
#
# Installs what is missing (Debian, as root or with sudo): redis-server,
# postgresql, protobuf-compiler (apt-get); umadb 0.7.8 (cargo install, into
# target/peer-tools/umadb). PostgreSQL runs as the system user
# `trailbench` (created when missing) because it refuses to run as root.
#
# Usage: scripts/bench-peers.sh [SECONDS_PER_RUN]   (default 15)
#   BENCH_ROUNDS   rounds (default 2)
#   BENCH_JOBS     cargo build jobs (default 1: the machine has two cores)
#   BENCH_SYSTEMS  systems to run (default "trail trail-bare umadb redis postgres ceiling")
#   BENCH_BASELINE_TRAILD  an older traild to run as "trail-base" (added to
#                  the systems when set)
#   BENCH_BASELINE_CONFIG  a traild TOML config file "trail-base" runs with
#                  (added to the systems when set; the binary is
#                  BENCH_BASELINE_TRAILD, else the one "trail" runs), e.g.
#                  to compare a setting's two values in one run
#                  (paths relative to the checkout's root, or absolute)
#   BENCH_WORKLOADS  workloads to run (default "w64x1 w64x100 s4x100 w1x1")
#   BENCH_TRAILD, BENCH_TRAIL  use these traild and trail binaries instead
#                  of building them from this tree
#   BENCH_WAIT_IDLE_SECONDS  before measuring, wait at most this long for the
#                  machine to be idle (under 20% of a core busy over 5 s);
#                  default 0. Other work running meanwhile shows per run as
#                  "other CPU".
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-15}"
rounds="${BENCH_ROUNDS:-2}"
jobs="${BENCH_JOBS:-1}"
systems="${BENCH_SYSTEMS:-trail trail-bare umadb redis postgres ceiling}"
workloads="${BENCH_WORKLOADS:-w64x1 w64x100 s4x100 w1x1}"
for workload in $workloads; do
  case "$workload" in
    w64x1|w64x100|s4x100|w1x1) ;;
    *) echo "BENCH_WORKLOADS: unknown workload $workload (w64x1 w64x100 s4x100 w1x1)" >&2; exit 2 ;;
  esac
done
baseline_traild="${BENCH_BASELINE_TRAILD:-}"
baseline_config="${BENCH_BASELINE_CONFIG:-}"
if [ -n "$baseline_traild" ]; then
  [ -x "$baseline_traild" ] || { echo "BENCH_BASELINE_TRAILD=$baseline_traild is not an executable" >&2; exit 2; }
fi
if [ -n "$baseline_config" ]; then
  [ -r "$baseline_config" ] || { echo "BENCH_BASELINE_CONFIG=$baseline_config is not a readable file" >&2; exit 2; }
  baseline_config="$(cd "$(dirname "$baseline_config")" && pwd)/$(basename "$baseline_config")"
fi
if [ -n "$baseline_traild$baseline_config" ]; then
  [[ " $systems " == *" trail-base "* ]] || systems="$systems trail-base"
fi
root="$PWD/target/bench-peers"
tools="$PWD/target/peer-tools"
run_dir="$root/run"
results="$root/results.jsonl"
report="$PWD/bench/peers/report.py"
pg_user=trailbench
port_trail=50691 port_umadb=50692 port_ceiling=50693 port_redis=50694 port_pg=50695 port_metrics=50696
clk_tck="$(getconf CLK_TCK)"

log() { echo "bench-peers: $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# ------------------------------------------------------------------ install
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null \
  || ! command -v protoc >/dev/null || ! command -v curl >/dev/null || [ -z "$pg_bin" ] || [ ! -x "$pg_bin/pgbench" ]; then
  log "installing redis-server postgresql protobuf-compiler curl (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server postgresql protobuf-compiler curl >&2
  pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi
umadb="$tools/umadb/bin/umadb"
if [ ! -x "$umadb" ]; then
  log "installing umadb 0.7.8 into $tools/umadb (cargo install, -j $jobs)"
  cargo install umadb --version =0.7.8 --locked --root "$tools/umadb" -j "$jobs" >&2
fi
if [ "$(id -u)" -eq 0 ] && ! id "$pg_user" >/dev/null 2>&1; then
  log "creating system user $pg_user for PostgreSQL"
  useradd --system --no-create-home --shell /usr/sbin/nologin "$pg_user"
fi
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u "$pg_user" -- "$@"; else "$@"; fi; }

# -------------------------------------------------------------------- build
if [ -z "${BENCH_TRAILD:-}" ] || [ -z "${BENCH_TRAIL:-}" ]; then
  log "building traild, trail (release, -j $jobs)"
  cargo build --release --locked -j "$jobs" --bin traild --bin trail >&2
fi
log "building bench/peers (release, -j $jobs)"
peers_locked=(); [ -f bench/peers/Cargo.lock ] && peers_locked=(--locked)
cargo build --release "${peers_locked[@]}" -j "$jobs" --manifest-path bench/peers/Cargo.toml >&2
trail="${BENCH_TRAIL:-$PWD/target/release/trail}"
traild="${BENCH_TRAILD:-$PWD/target/release/traild}"
peer_load="$PWD/bench/peers/target/release/peer-load"

# ---------------------------------------------------------------- servers
server_pid=""      # the running server's pid (postmaster for PostgreSQL)
server_kind=""
server_dir=""
stop_server() {
  [ -n "$server_pid" ] || return 0
  if [ "$server_kind" = postgres ]; then
    as_pg "$pg_bin/pg_ctl" -D "$server_dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
      || kill -KILL "$server_pid" 2>/dev/null || true
  else
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
  if [ -n "$server_dir" ]; then
    mkdir -p "$root/logs"
    cp "$server_dir"/*.log "$root/logs/" 2>/dev/null || true
    rm -rf "$server_dir"
  fi
  server_dir=""
}
cleanup() { stop_server; rm -rf "$run_dir"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$server_pid" 2>/dev/null || { log "server died; see $server_dir"; cat "$server_dir"/*.log >&2 || true; return 1; }
    sleep 0.1
  done
  log "port $1 did not open within 30 s"; return 1
}

start_server() {  # SYSTEM RUN_NAME
  local system="$1" name="$2"
  server_kind="$system"
  server_dir="$run_dir/$name"
  rm -rf "$server_dir" && mkdir -p "$server_dir"
  case "$system" in
    trail|trail-base)
      port_free $port_trail || { log "port $port_trail busy"; return 1; }
      local binary="$traild" config=()
      if [ "$system" = trail-base ]; then
        binary="${baseline_traild:-$traild}"
        [ -n "$baseline_config" ] && config=(--config "$baseline_config")
      fi
      "$binary" "${config[@]}" --data-dir "$server_dir/data" --listen "127.0.0.1:$port_trail" --durability sync \
        --metrics-listen "127.0.0.1:$port_metrics" >"$server_dir/$name.traild.log" 2>&1 &
      server_pid=$!; wait_port $port_trail ;;
    trail-bare)
      port_free $port_trail || { log "port $port_trail busy"; return 1; }
      printf '[derived]\nenabled = false\n' >"$server_dir/bare.toml"
      "$traild" --config "$server_dir/bare.toml" --data-dir "$server_dir/data" --listen "127.0.0.1:$port_trail" \
        --durability sync >"$server_dir/$name.traild.log" 2>&1 &
      server_pid=$!; wait_port $port_trail ;;
    ceiling)
      port_free $port_ceiling || { log "port $port_ceiling busy"; return 1; }
      "$peer_load" grpc-ceiling --listen "127.0.0.1:$port_ceiling" >"$server_dir/$name.ceiling.log" 2>&1 &
      server_pid=$!; wait_port $port_ceiling ;;
    umadb)
      port_free $port_umadb || { log "port $port_umadb busy"; return 1; }
      mkdir -p "$server_dir/data"
      "$umadb" --listen "127.0.0.1:$port_umadb" --db-path "$server_dir/data/uma.db" >"$server_dir/$name.umadb.log" 2>&1 &
      server_pid=$!; wait_port $port_umadb ;;
    redis)
      port_free $port_redis || { log "port $port_redis busy"; return 1; }
      redis-server --bind 127.0.0.1 --port $port_redis --protected-mode yes --dir "$server_dir" \
        --appendonly yes --appendfsync always --save '' --daemonize no \
        --logfile "$server_dir/$name.redis.log" >/dev/null 2>&1 &
      server_pid=$!; wait_port $port_redis ;;
    postgres)
      port_free $port_pg || { log "port $port_pg busy"; return 1; }
      [ "$(id -u)" -eq 0 ] && chown "$pg_user" "$server_dir"
      as_pg "$pg_bin/initdb" -D "$server_dir/data" -U "$pg_user" --auth=trust --no-sync \
        -E UTF8 --locale=C >"$server_dir/$name.initdb.log" 2>&1
      cat >>"$server_dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port_pg
unix_socket_directories = '$server_dir'
max_connections = 100
fsync = on
synchronous_commit = on
full_page_writes = on
EOF
      as_pg "$pg_bin/pg_ctl" -D "$server_dir/data" -l "$server_dir/$name.postgres.log" -w -t 60 start >/dev/null
      server_pid="$(head -1 "$server_dir/data/postmaster.pid")"
      "$pg_bin/psql" -q -h 127.0.0.1 -p $port_pg -U "$pg_user" -d postgres -v ON_ERROR_STOP=1 -c \
        "CREATE TABLE events (id bigserial PRIMARY KEY, event_id uuid NOT NULL UNIQUE, body text NOT NULL)" >&2 ;;
  esac
}

# CPU ticks of a server: its own and its reaped children's, plus its live
# children's (PostgreSQL's backends).
proc_ticks() {
  python3 - "$1" <<'PY'
import os, sys
pid = sys.argv[1]
def fields(p):
    with open(f"/proc/{p}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()  # [0] is field 3 (state)
total = 0
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        f = fields(p)
    except OSError:
        continue
    if p == pid:
        total += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    elif f[1] == pid:
        total += int(f[11]) + int(f[12])  # a live child: utime stime
print(total)
PY
}
# /proc/stat: all ticks, steal ticks, busy ticks (user nice system irq softirq)
steal_mark() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $9, $2+$3+$4+$7+$8}' /proc/stat; }
steal_pct() {  # MARK [MARK_AFTER (default: now)]
  local t0 s0 t1 s1 _
  read -r t0 s0 _ <<<"$1"; read -r t1 s1 _ <<<"${2:-$(steal_mark)}"
  awk -v t="$((t1 - t0))" -v s="$((s1 - s0))" 'BEGIN{ if (t > 0) printf "%.2f", 100*s/t; else print 0 }'
}
# Runs a client; its CPU (user + system of it and its children, seconds)
# goes to OUT.cpu, its stdout to OUT, bounded in time.
client_run() {  # OUT COMMAND...
  local out="$1"; shift
  (
    rc=0
    timeout --kill-after=10 "$client_timeout" "$@" >"$out" 2>"$out.err" || rc=$?
    [ "$rc" -eq 124 ] && echo "killed: no result within ${client_timeout}s" >>"$out.err"
    times >"$out.times"  # not in a pipe: a piped `times` runs in a subshell without children
    awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' \
      "$out.times" >"$out.cpu"
    exit $rc
  )
}

payload_512="$(head -c 512 /dev/zero | tr '\0' x)"

# The derived stores' lag, from traild's metrics (records behind the head;
# the larger of the query index's and the state store's). curl and awk,
# not python: the sampler runs beside the measured load and must cost
# next to nothing.
derived_lag() {
  curl -s --max-time 2 "http://127.0.0.1:$port_metrics/metrics" 2>/dev/null \
    | awk '/^trail_(query_index|state_store)_lag_records/ { v = $NF + 0; if (!seen || v > m) m = v; seen = 1 }
           END { if (seen) printf "%d\n", m }'
}
# Samples the lag every second into FILE until killed (the server updates
# the gauges once a second).
lag_sampler() {  # FILE
  : >"$1"
  while true; do derived_lag >>"$1"; sleep 1; done
}
# Seconds from the client's end until both stores are at the head (the
# metrics are sampled once a second), at most 120.
catch_up_seconds() {
  local start lag; start="$(date +%s%N)"
  for _ in $(seq 240); do
    lag="$(derived_lag)"
    if [ "$lag" = 0 ]; then
      awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN{printf "%.1f", (b-a)/1e9}'; return
    fi
    sleep 0.5
  done
  echo ">120"
}
pg_row_body=496   # + the 16-byte uuid: 512 bytes of data per row

# One run: SYSTEM WORKLOAD ROUND
run_one() {
  local system="$1" workload="$2" round="$3"
  local name="r$round-$workload-$system"
  local clients batch stream=()
  case "$workload" in
    w64x1) clients=64 batch=1 ;;
    w64x100) clients=64 batch=100 ;;
    s4x100) clients=4 batch=100 stream=(--stream) ;;
    w1x1) clients=1 batch=1 ;;
  esac
  start_server "$system" "$name" || { log "$name: server did not start"; stop_server; return 0; }
  local out="$server_dir/$name.out" kind=json extra=()
  client_timeout=$((seconds * 3 + 60))
  local cmd=()
  case "$system" in
    trail|trail-base|trail-bare|ceiling)
      local port=$port_trail; [ "$system" = ceiling ] && port=$port_ceiling
      cmd=("$trail" --addr "http://127.0.0.1:$port" --json bench --log bench --duration "${seconds}s"
           --clients "$clients" --batch "$batch" --event-bytes 512 "${stream[@]}") ;;
    umadb)
      cmd=("$peer_load" umadb --addr "http://127.0.0.1:$port_umadb" --clients "$clients"
           --batch "$batch" --duration "$seconds" --event-bytes 512) ;;
    redis)
      kind=redis
      # redis-benchmark counts requests, not seconds: calibrate the count on
      # a warm-up against the same server (at least 1,000 requests), and
      # allow the run 8x its planned length, since the rate can fall when
      # other work shares the disk.
      local warm=$((clients * 100)); [ "$warm" -lt 1000 ] && warm=1000
      timeout 120 redis-benchmark -h 127.0.0.1 -p $port_redis -c "$clients" -P 1 -n "$warm" --csv \
        XADD warmup '*' f "$payload_512" >"$out.warmup" 2>/dev/null || true
      local rps; rps="$(awk -F'"' 'NR == 2 {print int($4)}' "$out.warmup")"
      local n=$(( ${rps:-0} * seconds )); [ "$n" -lt 1000 ] && n=1000
      client_timeout=$((seconds * 8 + 60))
      cmd=(redis-benchmark -h 127.0.0.1 -p $port_redis -c "$clients" -P 1 -n "$n" --csv
           XADD stream '*' f "$payload_512") ;;
    postgres)
      kind=pgbench
      local rows_per_tx="$batch"
      if [ "$batch" -eq 1 ]; then
        echo "INSERT INTO events (event_id, body) VALUES (gen_random_uuid(), repeat('x', $pg_row_body));" >"$server_dir/insert.sql"
      else
        echo "INSERT INTO events (event_id, body) SELECT gen_random_uuid(), repeat('x', $pg_row_body) FROM generate_series(1, $batch);" >"$server_dir/insert.sql"
      fi
      local threads=2; [ "$clients" -lt 2 ] && threads=1
      extra=(--events-per-tx "$rows_per_tx" --pglog-prefix "$server_dir/pgbench_log")
      cmd=("$pg_bin/pgbench" -h 127.0.0.1 -p $port_pg -U "$pg_user" -n -c "$clients" -j "$threads"
           -T "$seconds" -f "$server_dir/insert.sql" -l --log-prefix "$server_dir/pgbench_log" postgres) ;;
  esac
  local mark ticks0 ticks1 t0 t1
  local mark1 sampler="" lag_args=()
  ticks0="$(proc_ticks "$server_pid")"; mark="$(steal_mark)"; t0="$(date +%s%N)"
  if [ "$system" = trail ] || [ "$system" = trail-base ]; then
    lag_sampler "$out.lag" & sampler=$!
  fi
  client_run "$out" "${cmd[@]}" || log "$name: client exited non-zero ($(head -c 300 "$out.err" | tr '\n' ' '))"
  t1="$(date +%s%N)"; mark1="$(steal_mark)"
  if [ -n "$sampler" ]; then
    kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
    lag_args=(--lag-max "$(sort -n "$out.lag" 2>/dev/null | tail -1)" --catch-up-seconds "$(catch_up_seconds)")
  fi
  [ "$system" = postgres ] && sleep 0.5  # let the postmaster reap its backends
  ticks1="$(proc_ticks "$server_pid")"
  local steal; steal="$(steal_pct "$mark" "$mark1")"
  local busy; busy="$(awk -v a="$(echo "$mark" | cut -d' ' -f3)" -v b="$(echo "$mark1" | cut -d' ' -f3)" -v hz="$clk_tck" 'BEGIN{printf "%.3f", (b-a)/hz}')"
  local wall; wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b-a)/1e9}')"
  local server_cpu; server_cpu="$(awk -v a="$ticks0" -v b="$ticks1" -v hz="$clk_tck" 'BEGIN{printf "%.3f", (b-a)/hz}')"
  python3 "$report" record "$results" --system "$system" --workload "$workload" --round "$round" \
    --kind "$kind" --out "$out" --wall "$wall" --steal "$steal" --server-cpu "$server_cpu" \
    --client-cpu "$(cat "$out.cpu" 2>/dev/null || echo 0)" --busy-cpu "$busy" "${extra[@]}" "${lag_args[@]}" >&2
  stop_server
}

# ---------------------------------------------------------------- measure
rm -rf "$run_dir" "$root/logs" && mkdir -p "$run_dir"
: >"$results"
busy_pct_5s() {
  local a b
  a="$(steal_mark)"; sleep 5; b="$(steal_mark)"
  awk -v a="$(echo "$a" | cut -d' ' -f3)" -v b="$(echo "$b" | cut -d' ' -f3)" -v hz="$clk_tck" \
    'BEGIN{printf "%.0f", 100*(b-a)/hz/5}'
}
wait_idle="${BENCH_WAIT_IDLE_SECONDS:-0}"
if [ "$wait_idle" -gt 0 ]; then
  waited=0
  while busy="$(busy_pct_5s)" && [ "$busy" -ge 20 ] && [ "$waited" -lt "$wait_idle" ]; do
    log "machine busy ($busy% of a core over 5 s); waiting for it to be idle"
    waited=$((waited + 5))
  done
  log "starting with $busy% of a core busy over the last 5 s"
fi
log "disk and loopback"
fsync_rate="$(scripts/fsync-rate.sh "$run_dir" 3000 | awk -F': ' '/fdatasync_ops_per_second/{print $2}')"
fsync_json="$(python3 "$report" fsync-p50 "$run_dir" 3000)"
fsync_p50="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["p50_ms"])' "$fsync_json")"
rtt_us="$(python3 "$report" rtt)"
steal_all="$(steal_mark)"
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

has() { [[ " $systems " == *" $1 "* ]]; }
for round in $(seq "$rounds"); do
  for workload in $workloads; do
    for system in trail trail-base trail-bare umadb redis postgres ceiling; do
      has "$system" || continue
      case "$workload:$system" in
        w64x100:redis|s4x100:umadb|s4x100:redis|s4x100:postgres) continue ;;
      esac
      log "round $round: $workload on $system"
      run_one "$system" "$workload" "$round"
    done
  done
done

versions="$(python3 -c 'import json,sys; print(json.dumps({"umadb": sys.argv[1], "redis": sys.argv[2], "postgres": sys.argv[3]}))' \
  "$("$umadb" --version 2>/dev/null | awk '{print $NF}')" \
  "$(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')" \
  "$("$pg_bin/postgres" --version | awk '{print $3}')")"
echo "started $started, ${seconds}s per run, $rounds rounds; nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); CPU steal over the whole run: $(steal_pct "$steal_all")%"
echo "fdatasync p50 (512 B): $fsync_json"
echo
python3 "$report" table "$results" --fsync-rate "$fsync_rate" --fsync-p50-ms "$fsync_p50" \
  --rtt-us "$rtt_us" --versions "$versions"
