//! Field-level history per resource: one row per change, applied or rejected.

use crate::error::Result;
use crate::fields::FieldChange;
use crate::input::ChangeKind;
use crate::layout::{lsn_key, lsn_suffix, StoredResult, HISTORY};
use crate::store::{read_lock, StateStore};

/// One change of a resource, as auditors read it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub lsn: u64,
    pub recorded_at_unix_nanos: i64,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub kind: ChangeKind,
    pub result: ChangeResult,
    /// Set on a compensation record's row: the LSN it undoes.
    pub compensates: Option<u64>,
    /// The compensation's reason (with `compensates`).
    pub reason: Option<String>,
    /// The compensation that undid this row, if the store has applied one.
    pub compensated_by: Option<u64>,
}

/// What the change did to the state.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeResult {
    /// Applied; `fields` turn the state before into the state after (empty if
    /// they are equal). Exact, so [`crate::replay`] with
    /// [`crate::Direction::Inverse`] undoes the change.
    Applied { fields: Vec<FieldChange> },
    /// Did not apply; the state stayed as it was.
    Rejected { reason: String },
}

impl StateStore {
    /// History rows of `resource` with `from_lsn <= lsn <= to_lsn`, in LSN
    /// order, at most `limit` of them. Page on by asking again from the last
    /// row's LSN + 1.
    pub fn history(
        &self,
        resource: &str,
        from_lsn: u64,
        to_lsn: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>> {
        let _read = read_lock(&self.commit);
        if from_lsn > to_lsn || limit == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .db
            .range(lsn_key(HISTORY, resource, from_lsn)..=lsn_key(HISTORY, resource, to_lsn));
        let mut out = Vec::new();
        for row in rows.take(limit) {
            let (key, value) = row.map_err(|e| self.sled_error("read history", e))?;
            let lsn = lsn_suffix(&key).unwrap_or(0);
            let entry = self.decode_entry(resource, lsn, &value)?;
            let result = match entry.result {
                StoredResult::Applied { fields } => ChangeResult::Applied {
                    fields: self.load_fields(resource, lsn, fields)?,
                },
                StoredResult::Rejected { reason } => ChangeResult::Rejected { reason },
            };
            // Under the same read lock as the rows, so the page is one cut: a
            // compensation shows here exactly when its own row would.
            let compensated_by = self.read_compensator(lsn)?;
            let (compensates, reason) = match entry.compensation {
                Some(c) => (Some(c.compensates), Some(c.reason)),
                None => (None, None),
            };
            out.push(HistoryEntry {
                lsn,
                recorded_at_unix_nanos: entry.recorded_at,
                actor: entry.actor,
                action: entry.action,
                outcome: entry.outcome,
                kind: entry.kind,
                result,
                compensates,
                reason,
                compensated_by,
            });
        }
        Ok(out)
    }
}
