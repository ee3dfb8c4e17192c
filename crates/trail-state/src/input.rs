//! What the driver hands the store, decoded from log records.

use serde::{Deserialize, Serialize};

/// One log record that carries a state change for a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateInput {
    pub lsn: u64,
    /// The record's server time; non-decreasing with LSN in the log.
    pub recorded_at_unix_nanos: i64,
    pub actor: String,
    pub action: String,
    /// The event's outcome as text, e.g. `"success"`; kept for history only.
    pub outcome: String,
    pub resource: String,
    pub change: ChangeInput,
}

/// The change an event asks for, as the producer sent it (JSON as text, so an
/// invalid document is recorded as a rejection rather than refused upstream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeInput {
    /// Replace the state with this JSON document.
    Set(String),
    /// RFC 7396 merge patch, applied to the state (absent = `null`).
    MergePatch(String),
    /// RFC 6902 JSON patch (an array of operations), applied to the state
    /// (absent = `null`).
    JsonPatch(String),
    /// Make the state absent.
    Delete,
}

impl ChangeInput {
    pub fn kind(&self) -> ChangeKind {
        match self {
            ChangeInput::Set(_) => ChangeKind::Set,
            ChangeInput::MergePatch(_) => ChangeKind::MergePatch,
            ChangeInput::JsonPatch(_) => ChangeKind::JsonPatch,
            ChangeInput::Delete => ChangeKind::Delete,
        }
    }
}

/// Which kind of change a history row records. Stored as its variant index
/// (FORMAT.md), so the order is part of the layout: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    Set,
    MergePatch,
    JsonPatch,
    Delete,
}

/// The last log record a store has applied, and its chain hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Watermark {
    pub lsn: u64,
    pub hash: [u8; 32],
}
