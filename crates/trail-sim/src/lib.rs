//! Deterministic simulation for Trail.
//!
//! - [`SimFileSystem`]: an in-memory disk behind the log's file seam that keeps
//!   written and durable bytes apart, crashes (dropping or tearing what was not
//!   durable), freezes at the Nth operation, fails single operations and runs
//!   out of space, all from one seed.
//! - [`SimRng`]: the seeded generator everything random uses.
//! - [`scenario`]: a model checker that drives the real log through appends,
//!   crashes, restarts and faults on a [`SimFileSystem`] and compares it with
//!   a reference model after every recovery.
//!
//! A failing seed replays exactly: see `docs/TESTING.md`.

pub mod damage;
pub mod fs;
pub mod rng;
pub mod scenario;

pub use fs::{CrashReport, OpClass, OpCounts, SimFileSystem, SimOptions};
pub use rng::SimRng;
