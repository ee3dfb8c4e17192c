//! Opening a log, in two steps as raft-engine's pipe builder does: [`plan`]
//! reads every file it needs and decides what the log is (pure: it never
//! writes, so a refused log is left exactly as it was, and offline
//! verification runs the same code on a read-only copy), then [`repair`]
//! carries out the few writes the plan lists (finish an interrupted seal,
//! cut a torn tail, rewrite a missing sidecar) before the writer starts.

mod plan;
mod repair;

pub(crate) use plan::{analyze, Depth};
pub(crate) use repair::repair;

pub use crate::segment::TornTail;
