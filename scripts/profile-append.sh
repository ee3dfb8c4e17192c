#!/usr/bin/env bash
# Where an append load's time goes inside traild, per thread (issue 11;
# docs/BENCHMARKS.md, "Profile of the 64 x 100 unary tail"). Starts traild
# (--durability sync, fresh data dir, 127.0.0.1 only), runs `trail bench`
# against it, and over a window in the middle of the load records:
#   - per thread group (threads named alike, e.g. every tokio worker): time
#     on a CPU and time waiting on a run queue for one (the scheduler's own
#     accounting, /proc/PID/task/TID/schedstat), before and after; the same
#     for the kernel's own threads (kworker by workqueue, e.g. the writeback
#     of dirty pages, jbd2, ksoftirqd, kswapd), which do work for traild
#     outside its threads;
#   - `perf trace -s`: every syscall's count and total/max time per thread;
#   - `perf trace --duration MS`: each syscall that took longer than MS,
#     with its thread and time, so stalls can be laid beside the load.
# Not part of CI; needs perf (Debian linux-perf) and root or
# kernel.perf_event_paranoid <= 1 for `perf trace`.
#
# Usage: scripts/profile-append.sh [CLIENTS] [BATCH] [SECONDS]   (64 100 15)
#   PROFILE_DERIVED=0   run with the derived stores off ([derived] enabled = false)
#   PROFILE_CONFIG=FILE run traild with this TOML config (e.g. [derived] idle = false)
#   PROFILE_STREAM=1    load with AppendStream instead of unary Append
#   PROFILE_SLOW_MS     threshold of the slow-syscall list (default 5)
#   PROFILE_TRACE=0     no `perf trace` (it slows a syscall-heavy process):
#                       only the per-thread times, at the load's own speed
#   PROFILE_TRAILD, PROFILE_TRAIL  binaries (default target/release/*)
set -euo pipefail
cd "$(dirname "$0")/.."

clients="${1:-64}" batch="${2:-100}" seconds="${3:-15}"
slow_ms="${PROFILE_SLOW_MS:-5}"
traild="${PROFILE_TRAILD:-$PWD/target/release/traild}"
trail="${PROFILE_TRAIL:-$PWD/target/release/trail}"
port=50697
out="$PWD/target/profile-append/$(date -u +%Y%m%dT%H%M%SZ)-${clients}x${batch}"
[ "${PROFILE_DERIVED:-1}" = 0 ] && out="$out-bare"
[ "${PROFILE_STREAM:-0}" = 1 ] && out="$out-stream"
[ -n "${PROFILE_CONFIG:-}" ] && out="$out-$(basename "$PROFILE_CONFIG" .toml)"
mkdir -p "$out"
for binary in "$traild" "$trail"; do
  [ -x "$binary" ] || { echo "profile-append: $binary missing; cargo build --release --bins" >&2; exit 2; }
done
command -v perf >/dev/null || { echo "profile-append: perf missing (apt-get install linux-perf)" >&2; exit 2; }

pid=""
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$out/data"
}
trap cleanup EXIT

config=()
if [ "${PROFILE_DERIVED:-1}" = 0 ]; then
  printf '[derived]\nenabled = false\n' >"$out/bare.toml"
  config=(--config "$out/bare.toml")
elif [ -n "${PROFILE_CONFIG:-}" ]; then
  cp "$PROFILE_CONFIG" "$out/config.toml"
  config=(--config "$out/config.toml")
fi
"$traild" "${config[@]}" --data-dir "$out/data" --listen "127.0.0.1:$port" --durability sync \
  >"$out/traild.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

# Thread group of each thread: its name without a trailing number or log name.
schedstat() {
  for task in /proc/"$pid"/task/*; do
    local comm; comm="$(cat "$task/comm" 2>/dev/null)" || continue
    local stat; stat="$(cat "$task/schedstat" 2>/dev/null)" || continue
    echo "${task##*/} $comm $stat"
  done
}
# Kernel threads (children of kthreadd, pid 2), each prefixed "kernel:".
kernel_schedstat() {
  for process in /proc/[0-9]*; do
    [ "$(awk '{print $4}' "$process/stat" 2>/dev/null)" = 2 ] || continue
    local comm; comm="$(cat "$process/comm" 2>/dev/null)" || continue
    local stat; stat="$(cat "$process/schedstat" 2>/dev/null)" || continue
    echo "${process##*/} kernel:$comm $stat"
  done
}

stream=(); [ "${PROFILE_STREAM:-0}" = 1 ] && stream=(--stream)
timeout --kill-after=10 $((seconds * 3 + 60)) "$trail" --addr "http://127.0.0.1:$port" --json bench \
  --log bench --duration "${seconds}s" --clients "$clients" --batch "$batch" --event-bytes 512 \
  "${stream[@]}" >"$out/bench.json" 2>"$out/bench.err" &
bench=$!
# The window: the middle of the load, past its start-up.
lead=$((seconds / 5)); window=$((seconds - 2 * lead))
sleep "$lead"
schedstat >"$out/schedstat.before"
kernel_schedstat >>"$out/schedstat.before"
t0="$(date +%s%N)"
if [ "${PROFILE_TRACE:-1}" = 0 ]; then
  sleep "$window"
else
  perf trace -s -p "$pid" -o "$out/trace-summary.txt" -- sleep "$window" >/dev/null 2>&1 &
  summary=$!
  perf trace --duration "$slow_ms" -p "$pid" -o "$out/trace-slow.txt" -- sleep "$window" >/dev/null 2>&1 || true
  wait "$summary" || true
fi
t1="$(date +%s%N)"
schedstat >"$out/schedstat.after"
kernel_schedstat >>"$out/schedstat.after"
wait "$bench"

python3 - "$out" "$t0" "$t1" <<'PY'
import collections, json, os, re, sys
out, t0, t1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
window = (t1 - t0) / 1e9
def read(name):
    rows = {}
    for line in open(f"{out}/{name}"):
        parts = line.split()  # tid, comm (may hold spaces), on-cpu ns, wait ns, slices
        tid, on_cpu, waiting = parts[0], int(parts[-3]), int(parts[-2])
        comm = " ".join(parts[1:-3])
        rows[tid] = (comm, on_cpu, waiting)
    return rows
before, after = read("schedstat.before"), read("schedstat.after")
groups = collections.defaultdict(lambda: [0, 0, 0])
for tid, (comm, on_cpu, waiting) in after.items():
    if comm.startswith("kernel:") and tid not in before:
        continue  # a kernel thread born in the window: no baseline to subtract
    b = before.get(tid, (comm, 0, 0))
    if comm.startswith("kernel:"):
        # kworker/u4:2-flush-254:0 -> kernel:kworker flush; jbd2/vda1-8 -> kernel:jbd2
        name, _, queue = comm.partition("-")
        name = re.sub(r"/.*$", "", name)
        queue = re.sub(r"[-:\d]+$", "", queue)
        group = f"{name} {queue}".strip()
    else:
        group = re.sub(r"[-_ ]?\d+$", "", comm)
    g = groups[group]
    g[0] += on_cpu - b[1]; g[1] += waiting - b[2]; g[2] += 1
bench = json.load(open(f"{out}/bench.json"))
print(f"# {out}")
print(f"load: {json.dumps({k: bench[k] for k in bench if not isinstance(bench[k], (dict, list))})}")
print(f"window: {window:.1f} s")
print("| thread group | threads | on a CPU | waiting for a CPU |")
print("| --- | ---: | ---: | ---: |")
for group, (on_cpu, waiting, threads) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
    if on_cpu + (0 if group.startswith("kernel:") else waiting) < 1e6:
        continue
    # A kernel thread's run-queue wait is not what this is for (and some
    # report nonsense: khungtaskd, 120 s in a 9 s window): its CPU only.
    waited = "-" if group.startswith("kernel:") else f"{waiting / 1e9 / window * 100:.1f}%"
    print(f"| {group} | {threads} | {on_cpu / 1e9 / window * 100:.1f}% | {waited} |")
# The append path's longest syscalls (waits for work, futex and epoll_wait,
# left out): what stalled a request.
slow = []
traced = os.path.exists(f"{out}/trace-slow.txt")
for line in (open(f"{out}/trace-slow.txt", errors="replace") if traced else []):
    m = re.match(r"\s*([\d.]+) \(\s*([\d.]+) ms\): (\S+)/\d+ (\w+)\(", line)
    if m and re.match(r"(tokio-rt-worke|trail-writer|trail-prep)", m.group(3)) \
            and m.group(4) not in ("futex", "epoll_wait"):
        slow.append((float(m.group(2)), float(m.group(1)), m.group(3), m.group(4)))
if not traced:
    sys.exit(0)
print()
print("| longest append-path syscalls | at (ms into the trace) | thread | ms |")
print("| --- | ---: | --- | ---: |")
for ms, at, thread, call in sorted(slow, reverse=True)[:10]:
    print(f"| {call} | {at:.0f} | {thread} | {ms:.1f} |")
PY
[ "${PROFILE_TRACE:-1}" = 0 ] ||
  echo "perf trace summary: $out/trace-summary.txt; syscalls over ${slow_ms} ms: $out/trace-slow.txt"
