//! Opening a log, in two steps as raft-engine's pipe builder does: [`plan`]
//! reads every file it needs and decides what the log is (pure: it never
//! writes, so a refused log is left exactly as it was, and offline
//! verification runs the same code on a read-only copy), then [`repair`]
//! carries out the few writes the plan lists (finish an interrupted seal,
//! cut a torn tail, rewrite a missing sidecar) before the writer starts.

mod plan;
mod repair;

use std::path::PathBuf;

pub(crate) use plan::{analyze, Depth};
pub(crate) use repair::repair;

use crate::types::Lsn;

/// A torn tail found at the end of the active segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub file: PathBuf,
    /// Where the kept log ends.
    pub offset: u64,
    /// Bytes after it that were not zero.
    pub bytes: u64,
    /// Records of an incomplete atomic batch dropped with it.
    pub dropped_batch_records: u64,
    /// Records the cut drops: frames in the cut bytes that still pass their
    /// CRC, the frame the damage hit, and the dropped batch's records. A
    /// torn write was never acknowledged; only damage inside the last group
    /// synced before a crash (FORMAT.md §8) can make some of them
    /// acknowledged ones.
    pub cut_records: u64,
    /// The last LSN kept.
    pub kept_lsn: Lsn,
}
