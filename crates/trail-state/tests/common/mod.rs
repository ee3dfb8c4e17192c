//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use trail_state::{ChangeInput, StateInput, Watermark};

/// A stand-in for the log's chain hash: any function of the LSN will do, as
/// long as the tests can recompute it.
pub fn hash_of(lsn: u64) -> [u8; 32] {
    *blake3::hash(&lsn.to_le_bytes()).as_bytes()
}

pub fn wm(lsn: u64) -> Watermark {
    Watermark {
        lsn,
        hash: hash_of(lsn),
    }
}

pub fn input(lsn: u64, t: i64, resource: &str, change: ChangeInput) -> StateInput {
    StateInput {
        lsn,
        recorded_at_unix_nanos: t,
        actor: format!("actor-{}", lsn % 3),
        action: format!("action-{}", lsn % 5),
        outcome: if lsn.is_multiple_of(7) {
            "failure"
        } else {
            "success"
        }
        .to_owned(),
        resource: resource.to_owned(),
        change: Some(change),
        compensation: None,
    }
}

pub fn merge(text: &str) -> ChangeInput {
    ChangeInput::MergePatch(text.to_owned())
}

pub fn set(text: &str) -> ChangeInput {
    ChangeInput::Set(text.to_owned())
}

pub fn patch(text: &str) -> ChangeInput {
    ChangeInput::JsonPatch(text.to_owned())
}
