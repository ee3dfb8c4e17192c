//! A sequence of operations (append, atomic batch, crash at a chosen sync or
//! write, crash during recovery, process restart, IO failure, reopen, read,
//! idempotent retry) against the real log on the simulated disk, compared
//! with the reference model in `trail_sim::scenario` after every recovery.
//!
//! `TRAIL_FUZZ_NARROW=1` leaves out torn writes and process restarts (to
//! search past bugs those already find).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use trail_sim::scenario::{run_ops_with, Op, Trouble};

/// Operations per input: enough for a few segments and crashes, bounded so
/// one input stays fast.
const OPS_MAX: usize = 48;

fn trouble() -> Trouble {
    static TROUBLE: OnceLock<Trouble> = OnceLock::new();
    *TROUBLE.get_or_init(|| {
        if std::env::var_os("TRAIL_FUZZ_NARROW").is_some() {
            Trouble { tearing: false, process_restarts: false, ..Trouble::default() }
        } else {
            Trouble::default()
        }
    })
}

fuzz_target!(|input: (u16, Vec<Op>)| {
    let (seed, mut ops) = input;
    ops.truncate(OPS_MAX);
    let trouble = trouble();
    if !trouble.process_restarts {
        for op in &mut ops {
            if *op == Op::Restart {
                *op = Op::Crash;
            }
        }
    }
    if let Err(failure) = run_ops_with(u64::from(seed), &ops, trouble) {
        panic!("{failure}");
    }
});
