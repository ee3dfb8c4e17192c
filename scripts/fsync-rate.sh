#!/usr/bin/env bash
# Measures the disk's serial fdatasync rate in a directory: how many
# "write 4 KiB, then wait until it is durable" operations per second one
# writer gets. This is the ceiling for a log that syncs before every ack
# without group commit, and the floor of a single client's ack latency.
#
# Usage: scripts/fsync-rate.sh [DIR] [COUNT]
#   DIR    where to write the scratch file (default: .); use the data dir's disk
#   COUNT  synced writes to time (default: 2000)
# Uses fio when installed (fdatasync=1 after every write), else dd with
# oflag=dsync (O_DSYNC: every write returns once durable). Overwrites a
# preallocated file, as the log does with its preallocated segments.
set -euo pipefail

dir="${1:-.}"
count="${2:-2000}"
file="$(mktemp "$dir/fsync-rate.XXXXXX")"
trap 'rm -f "$file"' EXIT

# Preallocate by writing zeros, so the timed writes overwrite in place.
dd if=/dev/zero of="$file" bs=4096 count="$count" conv=fsync status=none

if command -v fio >/dev/null 2>&1; then
  rate="$(fio --name=fsync-rate --filename="$file" --rw=write --bs=4k --size=$((count * 4096)) \
              --fdatasync=1 --ioengine=sync --numjobs=1 --overwrite=1 --output-format=terse \
              --terse-version=3 2>/dev/null | awk -F';' '{print $49}')"
  echo "tool: fio (write 4 KiB + fdatasync, serial)"
  echo "dir: $dir"
  echo "fdatasync_ops_per_second: $rate"
  exit 0
fi

start="$(date +%s%N)"
dd if=/dev/zero of="$file" bs=4096 count="$count" oflag=dsync conv=notrunc status=none
end="$(date +%s%N)"
elapsed_ns=$((end - start))
awk -v n="$count" -v ns="$elapsed_ns" -v dir="$dir" 'BEGIN {
  printf "tool: dd oflag=dsync (write 4 KiB, O_DSYNC, serial)\n"
  printf "dir: %s\n", dir
  printf "writes: %d in %.3f s\n", n, ns / 1e9
  printf "mean_latency_ms: %.3f\n", ns / 1e6 / n
  printf "fdatasync_ops_per_second: %.0f\n", n / (ns / 1e9)
}'
