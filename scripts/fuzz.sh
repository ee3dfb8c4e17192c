#!/usr/bin/env bash
# Runs every cargo-fuzz target under fuzz/ for N seconds each (default 30),
# one after another, on the stable toolchain (no sanitizer: see STACK.md,
# "Fuzzing on stable"). Installs cargo-fuzz if it is missing. Fails on the
# first target that crashes; the crashing input is left in
# fuzz/artifacts/<target>/ and the command to replay it is printed.
#
#   scripts/fuzz.sh            # 30 s per target (the CI smoke run)
#   scripts/fuzz.sh 600        # 10 min per target
#   TARGETS="log_model" scripts/fuzz.sh 600
#   TRAIL_FUZZ_NARROW=1 ...    # log_model without torn writes / restarts
set -euo pipefail

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi

cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (about a minute)..."
    cargo install cargo-fuzz --locked
fi

targets="${TARGETS:-$(cargo fuzz list)}"
summary=()
for target in $targets; do
    mkdir -p "corpus/$target"
    log="$(mktemp -t "fuzz-$target.XXXXXX.log")"
    echo "== $target: ${seconds}s (log: $log)"
    # -s none: the sanitizer flag needs nightly. The corpus directory is
    # passed first so that new inputs are kept there (git ignores all but seed-*).
    if ! cargo fuzz run -s none "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=60 >"$log" 2>&1; then
        echo "!! $target FAILED; last lines of $log:" >&2
        grep -v '^#[0-9]' "$log" | tail -40 >&2
        exit 1
    fi
    runs="$(grep -Eo '^Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' || echo '?')"
    summary+=("$target: $runs runs in ${seconds}s")
    echo "   ok: $runs runs"
done
echo "== all fuzz targets clean:"
printf '   %s\n' "${summary[@]}"
