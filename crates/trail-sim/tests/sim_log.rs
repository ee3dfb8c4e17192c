//! The crash-simulation property test: many seeds, each a few hundred random
//! operations (appends, atomic batches, crashes at syncs and writes, crashes
//! during recovery, process restarts, IO failures, reads, retries) against
//! the real log on the simulated disk, checked against the reference model
//! after every recovery (see `trail_sim::scenario`).
//!
//! Environment:
//! - `TRAIL_SIM_SEED=N`: replay exactly seed N (prints its trace on failure);
//! - `TRAIL_SIM_SEEDS=N`: how many seeds (default 16);
//! - `TRAIL_SIM_FIRST_SEED=N`: the first seed (default 0), to explore further;
//! - `TRAIL_SIM_OPS=N`: operations per seed (default 150);
//! - `TRAIL_SIM_NO_TEARING=1`, `TRAIL_SIM_NO_RESTARTS=1`: leave out torn
//!   writes or process restarts (to tell one bug from another);
//! - `TRAIL_SIM_FAILED_SYNC_FORGETS=0`: a failed sync leaves its bytes to
//!   the next sync, instead of as Linux's page cache treats them (readable,
//!   marked clean, no later sync writes them: the default).

use std::time::Instant;

use trail_sim::scenario::{run_seed_with, Trouble};

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

#[test]
fn acknowledged_appends_survive_every_simulated_crash() {
    let ops = usize::try_from(env_number("TRAIL_SIM_OPS", 150)).unwrap_or(150);
    let seeds: Vec<u64> = match std::env::var("TRAIL_SIM_SEED") {
        Ok(_) => vec![env_number("TRAIL_SIM_SEED", 0)],
        Err(_) => {
            let first = env_number("TRAIL_SIM_FIRST_SEED", 0);
            (first..first + env_number("TRAIL_SIM_SEEDS", 16)).collect()
        }
    };
    let trouble = Trouble {
        tearing: std::env::var_os("TRAIL_SIM_NO_TEARING").is_none(),
        process_restarts: std::env::var_os("TRAIL_SIM_NO_RESTARTS").is_none(),
        failed_sync_forgets: std::env::var("TRAIL_SIM_FAILED_SYNC_FORGETS").as_deref() != Ok("0"),
    };
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut totals = trail_sim::scenario::Summary::default();
    for &seed in &seeds {
        match run_seed_with(seed, ops, trouble) {
            Ok(summary) => {
                totals.acknowledged += summary.acknowledged;
                totals.crashes += summary.crashes;
                totals.reopens += summary.reopens;
                totals.failed_appends += summary.failed_appends;
            }
            Err(failure) => {
                eprintln!(
                    "\n=== seed {seed} FAILED (replay: TRAIL_SIM_SEED={seed} TRAIL_SIM_OPS={ops} cargo test -p trail-sim --test sim_log) ===\n{failure}\n"
                );
                failed.push(seed);
            }
        }
    }
    eprintln!(
        "{} seeds x {ops} ops in {:.1?}: {} records acknowledged, {} crashes, {} reopens, {} failed appends",
        seeds.len(),
        started.elapsed(),
        totals.acknowledged,
        totals.crashes,
        totals.reopens,
        totals.failed_appends
    );
    assert!(
        failed.is_empty(),
        "failing seeds: {failed:?} (each replays with TRAIL_SIM_SEED=<seed>)"
    );
}

/// Runs each seed with its trouble for `ops` operations; panics with the
/// first failure's trace.
fn assert_seeds_pass(ops: usize, seeds: &[(u64, Trouble)]) {
    for &(seed, trouble) in seeds {
        if let Err(failure) = run_seed_with(seed, ops, trouble) {
            panic!("seed {seed} ({trouble:?}):\n{failure}");
        }
    }
}

/// Seeds that found bugs, fixed since (trail-log e6e52c2): a seal finished
/// at recovery was then read with the pre-trim file length (false DATA_LOSS),
/// and records recovered from the page cache were counted as durable.
#[test]
fn seeds_that_found_fixed_bugs_pass() {
    let all = Trouble::default();
    let no_restarts = Trouble {
        process_restarts: false,
        ..Trouble::default()
    };
    assert_seeds_pass(
        150,
        &[
            (0, all),
            (14, no_restarts),
            (31, all),
            (33, all),
            (35, all),
            (49, no_restarts),
        ],
    );
}

/// Seeds that found a bug, fixed since (trail-log, recovery's
/// `SyncSealedTail`): a process stops when the sync of a seal fails, the
/// restarted process finds the seal readable in the page cache, trusts it
/// without syncing it, and creates the next segment durably; at the next
/// machine crash the seal (or its footer and trimmed length) is lost, and
/// the log no longer opens ("segment is not sealed but a later segment
/// exists", "sealed segment does not end with its footer"). Found by a
/// 3,000-seed run of 400 operations (63 seeds failed); all three failed
/// without the fix on the gentler disk (a failed sync's bytes left to the
/// next sync), and 300040 still does with the default trouble.
#[test]
fn seeds_that_found_the_unsynced_seal_bug_pass() {
    let all = Trouble::default();
    assert_seeds_pass(400, &[(300_003, all), (300_040, all), (300_127, all)]);
}

/// Seeds that found a bug, fixed since (recovery's `SyncActive` writes the
/// active segment's records after the last durable watermark again before
/// its sync): with failed syncs as Linux treats them, a group whose
/// fdatasync failed was adopted from the page cache at the next open and
/// synced, which wrote nothing; groups acknowledged after it were durable,
/// and the next machine crash brought back the old bytes under the adopted
/// records: a log that did not open, or acknowledged records lost. 509 of
/// 1,000 seeds of 400 operations failed before the fix (these three among
/// them), none after.
#[test]
fn seeds_that_found_the_adopted_tail_bug_pass() {
    let all = Trouble::default();
    assert_seeds_pass(400, &[(300_000, all), (300_001, all), (300_113, all)]);
}

/// Seeds that found a bug, fixed since (open syncs `wal/`, the log
/// directory and the root before taking writes; TESTING.md): the wal
/// directory's `sync_dir` failed (or the process died) after a new segment
/// was created; the restarted process adopted the segment from the page
/// cache and acknowledged appends into it without ever syncing the
/// directory, so a machine crash removed the segment and every acknowledged
/// record in it.
#[test]
fn seeds_that_find_the_unsynced_segment_entry_bug() {
    let all = Trouble::default();
    assert_seeds_pass(150, &[(36, all), (51, all)]);
}
