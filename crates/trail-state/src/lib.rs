//! Trail's derived state: per resource, the JSON state its events' changes
//! produce (event sourcing), with field-level history, queries as of any LSN
//! or time, compensation (undo by appending, planned by
//! [`StateStore::plan_compensation`]) and verifiable snapshots.
//!
//! A follower store (DESIGN.md "Followers"): everything in it is rebuilt from
//! the log, so it trusts nothing it cannot decode. A store that fails to
//! decode is [`StateError::Damaged`]; the driver deletes it and rebuilds from
//! the newest good snapshot plus the log. The driver reads the log, checks
//! the chain, and calls [`StateStore::apply`] with the records that carry a
//! state change or a compensation and the watermark they reach; each call is one atomic sled
//! batch, entries and watermark together.
//!
//! Files: `change.rs` decides what a change does, `fields.rs` field-level
//! diffs and their replay, `layout.rs` the sled keys and values, `store.rs`
//! the store and its queries, `history.rs` history rows, `plan.rs`
//! compensation planning, `snapshot.rs` snapshot files. Byte layouts: docs/FORMAT.md, "Derived state store".

mod change;
mod error;
mod fields;
mod history;
mod input;
mod layout;
mod plan;
mod snapshot;
mod store;

pub use error::{ReplayError, ReplayProblem, Result, SnapshotDefect, StateError};
pub use fields::{field_changes, invert, replay, Direction, FieldChange};
pub use history::{ChangeResult, HistoryEntry};
pub use input::{
    ChangeInput, ChangeKind, CompensationInput, FieldChangeText, StateInput, Watermark,
};
pub use plan::{LaterChange, Plan, PlanError, UndoMode, UndoStep};
pub use snapshot::{
    list_snapshots, load_newest_snapshot, prune_snapshots, verify_snapshot, SkippedSnapshot,
    SnapshotFile, SnapshotInfo, SNAPSHOT_FORMAT_VERSION, SNAPSHOT_MAGIC,
};
pub use store::{ApplyReport, Rejection, StateAnswer, StateStore, StoreOptions, StoreStats};

/// The sled layout version this build writes and reads (docs/FORMAT.md).
pub const LAYOUT_VERSION: u32 = layout::LAYOUT_VERSION;
