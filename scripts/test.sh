#!/usr/bin/env bash
# Runs every check and test the project has, as CI does (.ci/run calls this):
# formatting, lints, the whole test suite (unit, property, simulation, fault
# injection, end-to-end with real processes killed mid-load) and a short
# fuzzing smoke run of every fuzz target. Installs what it needs (cargo-fuzz)
# by itself. Set TRAIL_FUZZ_SECONDS to change the per-target fuzz time
# (default 30; 0 skips fuzzing, for quick local runs only).
set -euo pipefail
cd "$(dirname "$0")/.."

fuzz_seconds="${TRAIL_FUZZ_SECONDS:-30}"

# Each step says when it starts (seconds since the suite began), so a CI log
# shows where the time goes.
started_at=$SECONDS
step() { printf '\n==> [%4ds] %s\n' "$((SECONDS - started_at))" "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build binaries (the end-to-end tests run them as processes)"
cargo build --workspace --bins --locked

step "cargo test (every crate, every test)"
test_log="$(mktemp)"
trap 'rm -f "$test_log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$test_log"

if [ "$fuzz_seconds" != "0" ]; then
    step "fuzz smoke run: ${fuzz_seconds}s per target"
    scripts/fuzz.sh "$fuzz_seconds"
else
    echo "TRAIL_FUZZ_SECONDS=0: fuzz smoke run not done (CI always runs it)"
fi

step "done"
# One closing line for the whole suite (cargo prints one per test binary,
# the last of which may be a crate with no doc-tests).
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "\ntests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$test_log"
