//! What the driver hands the store, decoded from log records.

use serde::{Deserialize, Serialize};

use crate::fields::FieldChange;

/// One log record that carries a state change for a resource, or that
/// compensates an earlier record (or both).
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
    /// `None` only together with `compensation`: a compensation that marks a
    /// change-less (or rejected) record as reverted and changes no state.
    /// `apply` refuses an input with neither ([`crate::StateError::NoChange`]):
    /// the driver passes only records that carry one of them, so such an
    /// input is a driver bug, not a fact of the log.
    pub change: Option<ChangeInput>,
    /// The record undoes an earlier one (FORMAT.md 12.7).
    pub compensation: Option<CompensationInput>,
}

/// What a compensation record says it undoes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompensationInput {
    /// The LSN undone; always below the compensation record's own LSN.
    pub compensates: u64,
    /// Required by the API that appends compensations; kept for history.
    pub reason: String,
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
    /// Field changes replayed strictly forward ([`crate::replay`]): every
    /// change must find its `before` (`None` = absent) or the whole change is
    /// rejected. A compensation record carries its inverse this way (the
    /// planner's [`crate::UndoStep::change`]); producers may use it for a
    /// conditional field-level change.
    Fields(Vec<FieldChangeText>),
}

/// A [`FieldChange`] with its values as JSON text, as a record carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChangeText {
    /// JSON pointer (RFC 6901); `""` is the whole state.
    pub path: String,
    /// `None`: absent.
    pub before: Option<String>,
    pub after: Option<String>,
}

impl FieldChangeText {
    pub fn from_change(f: &FieldChange) -> FieldChangeText {
        // `Value`'s Display is its compact JSON text and cannot fail.
        FieldChangeText {
            path: f.path.clone(),
            before: f.before.as_ref().map(ToString::to_string),
            after: f.after.as_ref().map(ToString::to_string),
        }
    }
}

impl ChangeInput {
    pub fn kind(&self) -> ChangeKind {
        match self {
            ChangeInput::Set(_) => ChangeKind::Set,
            ChangeInput::MergePatch(_) => ChangeKind::MergePatch,
            ChangeInput::JsonPatch(_) => ChangeKind::JsonPatch,
            ChangeInput::Delete => ChangeKind::Delete,
            ChangeInput::Fields(_) => ChangeKind::Fields,
        }
    }

    /// `Fields` carrying `fields` as text.
    pub fn from_fields(fields: &[FieldChange]) -> ChangeInput {
        ChangeInput::Fields(fields.iter().map(FieldChangeText::from_change).collect())
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
    /// [`ChangeInput::Fields`].
    Fields,
    /// No state change: a compensation record with `change: None`.
    None,
}

/// The last log record a store has applied, and its chain hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Watermark {
    pub lsn: u64,
    pub hash: [u8; 32],
}
