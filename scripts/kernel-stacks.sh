#!/usr/bin/env bash
# Where traild's threads wait inside the kernel under an append load (issue
# 11; docs/BENCHMARKS.md, "Profile of the 64 x 100 unary tail"). Starts
# traild (--durability sync, fresh data dir, 127.0.0.1 only), runs `trail
# bench` against it and, over the middle of the load, reads every thread's
# kernel stack (/proc/PID/task/TID/stack) as fast as it can, keeping the
# samples that are not an idle wait (epoll, futex, sleep). Prints how often
# each thread group was found in each kind of kernel wait (an fdatasync
# waiting for writeback, the inode written by ext4's fsync, a cache flush,
# a discard, a page fault, ...). Sampling, so counts are proportions, not
# times. Not part of CI; needs root (kernel stacks are root-only).
#
# Usage: scripts/kernel-stacks.sh [CLIENTS] [BATCH] [SECONDS]   (64 100 15)
#   STACKS_TRAILD, STACKS_TRAIL  binaries (default target/release/*)
#   STACKS_CONFIG=FILE           a TOML config for traild
#   STACKS_DATA_PARENT=DIR       where the data dir goes (default: the output dir),
#                                e.g. a mount of another file system
set -euo pipefail
cd "$(dirname "$0")/.."

clients="${1:-64}" batch="${2:-100}" seconds="${3:-15}"
traild="${STACKS_TRAILD:-$PWD/target/release/traild}"
trail="${STACKS_TRAIL:-$PWD/target/release/trail}"
port=50698
out="$PWD/target/kernel-stacks/$(date -u +%Y%m%dT%H%M%SZ)-${clients}x${batch}"
mkdir -p "$out"
for binary in "$traild" "$trail"; do
  [ -x "$binary" ] || { echo "kernel-stacks: $binary missing; cargo build --release --bins" >&2; exit 2; }
done
[ -r /proc/self/stack ] || { echo "kernel-stacks: /proc/PID/stack is not readable (needs root)" >&2; exit 2; }

data="${STACKS_DATA_PARENT:-$out}/kernel-stacks-data"
rm -rf "$data"
pid=""
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

config=(); [ -n "${STACKS_CONFIG:-}" ] && config=(--config "$STACKS_CONFIG")
"$traild" "${config[@]}" --data-dir "$data" --listen "127.0.0.1:$port" --durability sync \
  --metrics-listen off >"$out/traild.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

names() { for task in /proc/"$pid"/task/*; do echo "${task##*/} $(cat "$task/comm" 2>/dev/null)"; done; }
timeout --kill-after=10 $((seconds * 3 + 60)) "$trail" --addr "http://127.0.0.1:$port" --json bench \
  --log bench --duration "${seconds}s" --clients "$clients" --batch "$batch" --event-bytes 512 \
  >"$out/bench.json" 2>"$out/bench.err" &
bench=$!
lead=$((seconds / 5)); window=$((seconds - 2 * lead))
sleep "$lead"
names >"$out/threads.txt"
end=$((SECONDS + window))
# One grep reads every thread's stack per sweep: "<tid> <frames...>" per line.
while [ "$SECONDS" -lt "$end" ]; do
  grep -H . /proc/"$pid"/task/*/stack 2>/dev/null |
    awk -F'[/:]' '{tid = $5; sub(/^[^ ]* /, "", $0); stack[tid] = stack[tid] " " $0}
                  END {for (tid in stack) print tid, stack[tid]}'
done | grep -v 'ep_poll\|futex_wait\|do_nanosleep\|hrtimer_nanosleep\|do_sys_poll\|sk_wait_data' \
  >"$out/stacks.txt" || true
names >>"$out/threads.txt"
wait "$bench"

python3 - "$out" <<'PY'
import collections, json, re, sys
out = sys.argv[1]
names = {}
for line in open(f"{out}/threads.txt"):
    parts = line.split(None, 1)
    if len(parts) == 2:
        names[parts[0]] = re.sub(r"[-_ ]?\d+$", "", parts[1].strip())
# First match wins: the innermost kind of wait named in the stack.
kinds = [
    ("blkdev_issue_discard", "discard (freed blocks, fs mounted with discard)"),
    ("ext4_write_inode", "fsync writing the inode (ext4 without a journal)"),
    ("jbd2_log_wait_commit", "fsync waiting for a journal commit"),
    ("blkdev_issue_flush", "cache flush of an fsync"),
    ("folio_wait_writeback", "fsync waiting for data writeback"),
    ("do_huge_pmd_anonymous_page", "page fault zeroing a huge page"),
    ("exc_page_fault", "page fault"),
    ("rwsem_down", "a kernel rw-semaphore (e.g. the memory-map lock)"),
    ("mutex_lock", "a kernel mutex"),
    ("generic_perform_write", "buffered write"),
    ("filemap_read", "buffered read"),
    ("madvise", "madvise (allocator returning memory)"),
    ("irqentry_exit_to_user_mode", "preempted in user space"),
]
counts = collections.Counter()
sweeps = 0
for line in open(f"{out}/stacks.txt"):
    tid, _, stack = line.partition(" ")
    kind = next((label for key, label in kinds if key in stack), None)
    if kind:
        counts[(names.get(tid, "exited thread"), kind)] += 1
bench = json.load(open(f"{out}/bench.json"))
print(f"# {out}")
print(f"load: {bench['events_per_second']:,.0f} events/s, p50 {bench['p50_ms']} ms, "
      f"p99 {bench['p99_ms']} ms, p999 {bench['p999_ms']} ms")
print("| thread group | kernel wait | samples |")
print("| --- | --- | ---: |")
for (group, kind), samples in sorted(counts.items(), key=lambda kv: -kv[1]):
    if samples >= 2:
        print(f"| {group} | {kind} | {samples} |")
PY
echo "raw stacks: $out/stacks.txt"
