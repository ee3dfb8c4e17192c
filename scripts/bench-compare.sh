#!/usr/bin/env bash
# Before and after in one run: a baseline `traild` (an older build, by
# default the one in /work/baseline) against the current one (built here),
# both driven by the current `trail bench` (the wire protocol is the same),
# rounds interleaved baseline, current, baseline, current, each run on a
# fresh data directory and a fresh server in sync mode. Cases:
#   unary    64 unary clients, 1 event per request, 512-byte events
#   stream   AppendStream, 4 streams, batch 100, 512-byte events
#   stalled  the unary case with 1,000 stalled Subscribe streams open on the
#            log (trail bench --stalled-subscribers); the baseline runs it
#            under a time limit and an RSS cap (killed past it)
#   unary100 64 unary clients, 100 events per request (BENCH_CASES only)
#   single   1 unary client, 1 event per request (BENCH_CASES only)
# Every run records CPU steal (from /proc/stat) and the server's peak RSS
# and threads (trail bench --server-pid). Then (when the stalled case ran)
# it runs once more on the current build (and once on the baseline) under mimalloc
# settings (MIMALLOC_ARENA_EAGER_COMMIT=0, MIMALLOC_PURGE_DELAY=0). Prints
# Markdown tables (medians, current/baseline ratios) for docs/BENCHMARKS.md.
# Everything listens on 127.0.0.1.
#
# Usage: scripts/bench-compare.sh [SECONDS_PER_RUN]   (default 15)
#   BASELINE_TRAILD       the baseline binary (default /work/baseline/target/release/traild)
#   BENCH_ROUNDS          rounds per case and build (default 2)
#   BENCH_CASES           the cases, in order (default "unary stream stalled")
#   CURRENT_TRAILD, CURRENT_TRAIL  run these binaries as "current" instead of
#                         building this tree (both set: nothing is built)
#   BENCH_STALLED         stalled subscribers in the stalled case (default 1000)
#   BENCH_ALLOCATOR       0 skips the mimalloc runs (default 1)
#   BASELINE_RSS_CAP_MIB  a server past this RSS is killed (default 8192)
#   TRAIL_BENCH_DIR       where data and results go (default target/bench-compare)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-15}"
rounds="${BENCH_ROUNDS:-2}"
stalled="${BENCH_STALLED:-1000}"
allocator="${BENCH_ALLOCATOR:-1}"
rss_cap_mib="${BASELINE_RSS_CAP_MIB:-8192}"
baseline="${BASELINE_TRAILD:-/work/baseline/target/release/traild}"
cases="${BENCH_CASES:-unary stream stalled}"
current="${CURRENT_TRAILD:-$PWD/target/release/traild}"
client="${CURRENT_TRAIL:-$PWD/target/release/trail}"
root="${TRAIL_BENCH_DIR:-$PWD/target/bench-compare}"
results="$root/results.jsonl"

case "$seconds" in '' | *[!0-9]*) echo "SECONDS_PER_RUN must be a whole number" >&2; exit 2 ;; esac
case "$rounds" in '' | *[!0-9]* | 0) echo "BENCH_ROUNDS must be at least 1" >&2; exit 2 ;; esac
if [ "$seconds" -lt 1 ] || [ "$seconds" -gt 600 ] || [ "$rounds" -gt 10 ]; then
  echo "runs are bounded: 1..600 seconds, at most 10 rounds" >&2
  exit 2
fi
if [ ! -x "$baseline" ]; then
  echo "no baseline traild at $baseline (set BASELINE_TRAILD)" >&2
  exit 2
fi
for case_name in $cases; do
  case "$case_name" in
    unary | stream | stalled | unary100 | single) ;;
    *) echo "unknown case '$case_name' in BENCH_CASES (unary stream stalled unary100 single)" >&2; exit 2 ;;
  esac
done

if [ -z "${CURRENT_TRAILD:-}" ] || [ -z "${CURRENT_TRAIL:-}" ]; then
  cargo build --release --locked --bins >&2
fi
rm -rf "$root" && mkdir -p "$root"
: >"$results"

# cpu steal since the last call, as a percentage of all CPU time
steal_mark() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $9}' /proc/stat; }
steal_since() {
  read -r total0 steal0 <<<"$1"
  read -r total1 steal1 <<<"$(steal_mark)"
  awk -v t="$((total1 - total0))" -v s="$((steal1 - steal0))" 'BEGIN{ if (t > 0) printf "%.1f", 100*s/t; else print "null" }'
}

server_pid=""
watchdog_pid=""

# start_server BINARY DIR [VAR=VALUE...]: a fresh traild over DIR/data on a
# free loopback port; sets server_pid and server_addr.
start_server() {
  local binary="$1" dir="$2"; shift 2
  mkdir -p "$dir"
  env "$@" "$binary" --data-dir "$dir/data" --listen 127.0.0.1:0 --metrics-listen off \
    --durability sync >"$dir/traild.out" 2>"$dir/traild.log" &
  server_pid=$!
  server_addr=""
  for _ in $(seq 100); do
    server_addr="$(awk '/^listening on /{print "http://" $3; exit}' "$dir/traild.out")"
    [ -n "$server_addr" ] && break
    sleep 0.1
  done
  if [ -z "$server_addr" ]; then
    echo "traild ($binary) did not start; its log:" >&2
    cat "$dir/traild.log" >&2
    exit 1
  fi
  # The RSS cap: kill the server past it (checked every 200 ms while it lives).
  (
    for _ in $(seq 5000); do
      rss="$(awk '/^VmRSS:/{print $2}' "/proc/$server_pid/status" 2>/dev/null || true)"
      [ -z "$rss" ] && exit 0
      if [ "$rss" -gt $((rss_cap_mib * 1024)) ]; then
        echo "$rss" >"$dir/killed-at-rss-kib"
        kill -KILL "$server_pid" 2>/dev/null || true
        exit 0
      fi
      sleep 0.2
    done
  ) &
  watchdog_pid=$!
}

stop_server() {
  [ -n "$server_pid" ] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq 300); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  if [ -n "$watchdog_pid" ]; then
    kill "$watchdog_pid" 2>/dev/null || true
    wait "$watchdog_pid" 2>/dev/null || true
  fi
  server_pid=""
  watchdog_pid=""
}
trap stop_server EXIT

run_number=0
# run BUILD CASE ROUND [VAR=VALUE...]: one bench run on a fresh server;
# appends one JSON line to $results.
run() {
  local build="$1" case_name="$2" round="$3"; shift 3
  local binary
  if [ "$build" = baseline ]; then binary="$baseline"; else binary="$current"; fi
  run_number=$((run_number + 1))
  local dir="$root/run-$run_number"
  local args=(--log bench --duration "${seconds}s" --event-bytes 512)
  case "$case_name" in
    unary) args+=(--clients 64) ;;
    stream) args+=(--clients 4 --stream --batch 100) ;;
    stalled) args+=(--clients 64 --stalled-subscribers "$stalled") ;;
    unary100) args+=(--clients 64 --batch 100) ;;
    single) args+=(--clients 1) ;;
  esac
  echo "run $run_number: $build $case_name round $round ${*:-}" >&2
  start_server "$binary" "$dir" "$@"
  local mark; mark="$(steal_mark)"
  local out status=0
  out="$(timeout --kill-after=10 $((seconds + 150)) "$client" --addr "$server_addr" --json bench \
    "${args[@]}" --server-pid "$server_pid" 2>"$dir/bench.err" | tail -1)" || status=$?
  local steal; steal="$(steal_since "$mark")"
  stop_server
  local killed=null
  [ -f "$dir/killed-at-rss-kib" ] && killed="$(cat "$dir/killed-at-rss-kib")"
  python3 - "$build" "$case_name" "$round" "$steal" "$status" "$killed" "$out" "$dir/bench.err" "$*" >>"$results" <<'PY'
import json, sys
build, case, rnd, steal, status, killed, out, err_file, env = sys.argv[1:10]
try:
    bench = json.loads(out)
except ValueError:
    bench = None
err = open(err_file, errors="replace").read().strip()[-500:]
print(json.dumps({
    "build": build, "case": case, "round": int(rnd), "env": env,
    "steal_pct": None if steal == "null" else float(steal),
    "exit": int(status), "killed_at_rss_kib": None if killed == "null" else int(killed),
    "bench": bench, "stderr": err,
}))
PY
  rm -rf "$dir/data"
}

started="$(date -u '+%Y-%m-%d %H:%M UTC')"
for round in $(seq "$rounds"); do
  for case_name in $cases; do
    run baseline "$case_name" "$round"
    run current "$case_name" "$round"
  done
done
if [ "$allocator" != 0 ] && [[ " $cases " == *" stalled "* ]]; then
  run current stalled 1 MIMALLOC_ARENA_EAGER_COMMIT=0
  run current stalled 1 MIMALLOC_PURGE_DELAY=0
  run current stalled 1 MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=0
  run baseline stalled 1 MIMALLOC_ARENA_EAGER_COMMIT=0
fi

dirty="$(git status --porcelain --untracked-files=no | wc -l)"
python3 - "$results" "$started" "$seconds" "$rounds" "$stalled" "$baseline" \
  "$(git rev-parse --short HEAD)" "$dirty" "$(nproc)" \
  "$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)" "$cases" "$current" <<'PY'
import json, statistics, sys
path, started, seconds, rounds, stalled, baseline, head, dirty, nproc, model, cases, current = sys.argv[1:13]
cases = cases.split()
runs = [json.loads(line) for line in open(path)]

def ok(run):
    b = run["bench"]
    return b is not None and run["killed_at_rss_kib"] is None and b["errors"] == 0

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def pick(build, case, env=""):
    return [r for r in runs if r["build"] == build and r["case"] == case and r["env"] == env]

def metrics(rs):
    good = [r for r in rs if ok(r)]
    server = lambda r, key: (r["bench"].get("server") or {}).get(key)
    return {
        "runs": len(rs), "good": len(good),
        "rate": median([r["bench"]["events_per_second"] for r in good]),
        "p50": median([r["bench"]["p50_ms"] for r in good]),
        "p99": median([r["bench"]["p99_ms"] for r in good]),
        "p999": median([r["bench"]["p999_ms"] for r in good]),
        # RSS and threads count for every run that has them, good or not.
        "rss": median([server(r, "peak_rss_mib") for r in rs if r["bench"]]),
        "hwm": median([server(r, "hwm_mib") for r in rs if r["bench"]]),
        "threads": median([server(r, "peak_threads") for r in rs if r["bench"]]),
        "steal": [r["steal_pct"] for r in rs],
    }

def num(v, fmt):
    return "n/a" if v is None else format(v, fmt)

def ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"

names = {
    "unary": "unary, 64 clients",
    "stream": "AppendStream, 4 x batch 100",
    "stalled": f"unary, 64 clients + {stalled} stalled subscribers",
    "unary100": "unary, 64 clients x 100 events",
    "single": "unary, 1 client",
}
print(f"Started {started}; {nproc} x {model}; {seconds} s per run, {rounds} rounds per case "
      f"and build, interleaved baseline/current; current = {head}"
      + (f" plus {dirty} uncommitted file(s)" if dirty != "0" else "")
      + ("" if current.endswith("/target/release/traild") else f" (binary {current})")
      + f"; baseline = {baseline}")
print()
print("| case | build | runs ok | events/s | p50 | p99 | p999 | peak RSS | peak threads | steal per run |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
summary = {}
for case in cases:
    for build in ["baseline", "current"]:
        m = summary[(build, case)] = metrics(pick(build, case))
        steal = ", ".join("n/a" if s is None else f"{s:.1f}%" for s in m["steal"])
        print(f"| {names[case]} | {build} | {m['good']}/{m['runs']} | {num(m['rate'], ',.0f')} | "
              f"{num(m['p50'], '.2f')} ms | {num(m['p99'], '.2f')} ms | {num(m['p999'], '.2f')} ms | "
              f"{num(m['rss'], '.0f')} MiB | {num(m['threads'], '.0f')} | {steal} |")
    b, c = summary[("baseline", case)], summary[("current", case)]
    print(f"| {names[case]} | current/baseline | | {ratio(c['rate'], b['rate'])} | "
          f"{ratio(c['p50'], b['p50'])} | {ratio(c['p99'], b['p99'])} | {ratio(c['p999'], b['p999'])} | "
          f"{ratio(c['rss'], b['rss'])} | {ratio(c['threads'], b['threads'])} | |")

print()
print("Every run:")
print()
print("| case | round | build | events/s | p50 | p99 | p999 | steal |")
print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
for r in runs:
    b = r["bench"] or {}
    label = names[r["case"]] + (f" ({r['env']})" if r["env"] else "")
    print(f"| {label} | {r['round']} | {r['build']} | {num(b.get('events_per_second'), ',.0f')} | "
          f"{num(b.get('p50_ms'), '.2f')} ms | {num(b.get('p99_ms'), '.2f')} ms | "
          f"{num(b.get('p999_ms'), '.2f')} ms | {num(r['steal_pct'], '.1f')}% |")

if "unary" not in cases or "stalled" not in cases:
    sys.exit(0)
print()
print(f"Stalled subscribers ({stalled}): append p99 with them against the unary case without them")
print()
print("| build | p99 without | p99 with | with/without | within 20% | events/s without | events/s with | peak RSS with | peak threads with |")
print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
for build in ["baseline", "current"]:
    without, with_ = summary[(build, "unary")], summary[(build, "stalled")]
    within = "n/a"
    if with_["p99"] is not None and without["p99"]:
        within = "yes" if with_["p99"] <= 1.2 * without["p99"] else "no"
    print(f"| {build} | {num(without['p99'], '.2f')} ms | {num(with_['p99'], '.2f')} ms | "
          f"{ratio(with_['p99'], without['p99'])} | {within} | {num(without['rate'], ',.0f')} | "
          f"{num(with_['rate'], ',.0f')} | {num(with_['rss'], '.0f')} MiB | {num(with_['threads'], '.0f')} |")

print()
print("Every stalled run:")
print()
print("| build | env | round | outcome | stalled open | events/s | p99 | peak RSS | VmHWM | peak threads | steal |")
print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in runs:
    if r["case"] != "stalled":
        continue
    b = r["bench"] or {}
    s = b.get("server") or {}
    if r["killed_at_rss_kib"] is not None:
        outcome = f"killed at RSS {r['killed_at_rss_kib'] // 1024} MiB"
    elif not r["bench"]:
        outcome = f"no result (exit {r['exit']}): {r['stderr'][-160:]}"
    elif b["errors"]:
        outcome = f"{b['errors']} client errors: {b['first_error']}"
    else:
        outcome = "ok"
    print(f"| {r['build']} | {r['env'] or 'default'} | {r['round']} | {outcome} | "
          f"{b.get('stalled_established', 'n/a')} | {num(b.get('events_per_second'), ',.0f')} | "
          f"{num(b.get('p99_ms'), '.2f')} ms | {num(s.get('peak_rss_mib'), '.0f')} MiB | "
          f"{num(s.get('hwm_mib'), '.0f')} MiB | {num(s.get('peak_threads'), '.0f')} | "
          f"{num(r['steal_pct'], '.1f')}% |")
PY
echo
echo "raw results: $results"
