//! Planning compensations (DESIGN.md "Compensation", FORMAT.md 12.7): which
//! records to append to undo a change, with the change each carries and the
//! state each leaves. A pure read of the store, under one read lock, so a
//! plan is one consistent cut at the store's watermark (`Plan::based_on`);
//! the server appends the records (one per step, in order) and the driver
//! applies them like any others.
//!
//! # Which later rows count
//!
//! Undoing target `T` has to reckon with the *later rows*: history rows of the
//! same resource with `T < lsn <= watermark`. One of them is *live* (its
//! effect is still in the state and was made after `T`) unless:
//!
//! - it was rejected: it changed nothing;
//! - it is compensated (a `50` key names its compensator): undone already;
//! - it is an (uncompensated, applied) compensation `C` whose chain has an
//!   even number of members after `T`. The chain: `C` undoes `X`, `X` undoes
//!   `Y`, ... down to the first member that is not an applied compensation
//!   (the origin `O`, which may have no row: an event without a change).
//!   Each member toggles the effect of the one it undoes, so the members
//!   after `T` net out when they are even: `O, C` (`O > T` made and undone),
//!   or `C, D` where `D` undid something at or before `T` and `C` redid it.
//!
//! Otherwise it is live: an ordinary applied row; a compensation of
//! something at or before `T` (one member after `T`: it undid an older
//! change, or redid one); an odd chain after `T` (`O, C, D`: `O`'s change is
//! in effect again through `D`). The members counted are those after `T`
//! only: LSNs fall along a chain, so the walk stops at the first member at or
//! before `T`, and never reads a row before it. (With `O > T` this is the
//! whole chain counting `O`; a chain that reaches back to `T` or before is
//! counted from the last member after `T`, so a redo after `T` that is
//! undone again after `T` nets out as well.)
//!
//! # Modes
//!
//! - [`UndoMode::Refuse`]: any live later row is a [`PlanError::Conflict`]
//!   listing them (ascending LSN); otherwise one step, `T`.
//! - [`UndoMode::Cascade`]: the live later rows, newest first, then `T`.
//! - [`UndoMode::Force`]: one step, `T`, applied to today's state.
//! - Rollback ([`StateStore::plan_rollback`]): every live row after the
//!   point, newest first (a cascade from the first change after it); no
//!   steps if there are none.
//!
//! A step's change is `invert(fields of the undone row)`; `None` when there is
//! nothing to undo: a rejected row, a change-less (kind `None`) row, a row
//! whose fields are empty, or a record without a row (an event without a
//! state change: then there are no later rows to check either). The predicted
//! states replay each step strictly forward from the state at the watermark,
//! exactly as `apply` will replay the record's `Fields`; a step that does not
//! replay is [`PlanError::DoesNotApply`]. In `Force` that is the expected
//! answer when today's state has moved on. In `Refuse` and `Cascade` it
//! cannot happen as long as every earlier undo of the resource was planned
//! without forcing past live later rows (each undo then restores exactly the
//! state before the row it undoes); a forced undo can leave changes that no
//! longer commute (an array insert undone under a later insert shifts its
//! index), and then a cascade over them is refused the same way.
//!
//! Compensating a compensation is allowed: its inverse redoes the original.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::StateError;
use crate::fields::{invert, replay, Direction, FieldChange};
use crate::input::{ChangeInput, ChangeKind, Watermark};
use crate::layout::{lsn_key, lsn_suffix, StoredField, StoredResult, HISTORY};
use crate::store::{read_lock, StateStore};

/// What to do about live later changes of the same resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UndoMode {
    /// Refuse ([`PlanError::Conflict`]) if there are any.
    Refuse,
    /// Undo them too, newest first, then the target.
    Cascade,
    /// Undo only the target, on today's state, if its inverse still applies.
    Force,
}

/// The records a compensation would append, and what they would do.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The store's watermark the plan was made at: the records are meant to
    /// be the next ones after it (`based_on.lsn + 1 + i` for step `i`). If
    /// anything else was appended since, plan again.
    pub based_on: Watermark,
    pub resource: String,
    /// The resource's state at `based_on`.
    pub state_before: Option<Value>,
    /// In append order: the newest undone first.
    pub steps: Vec<UndoStep>,
    /// The state after every step (`state_before` if there are none).
    pub state_after: Option<Value>,
}

/// One compensation record to append.
#[derive(Debug, Clone, PartialEq)]
pub struct UndoStep {
    /// The LSN this record compensates.
    pub undoes: u64,
    /// Of the undone row, for messages; empty when it has no row (an event
    /// without a state change: the caller has the event).
    pub actor: String,
    pub action: String,
    /// The inverse to carry as `ChangeInput::Fields`; `None`: nothing to undo
    /// (see the module doc), the record carries no change.
    pub change: Option<Vec<FieldChange>>,
    /// The predicted state after this step.
    pub state_after: Option<Value>,
}

impl UndoStep {
    /// The record's change: `Fields(change)` as text, or `None`.
    pub fn change_input(&self) -> Option<ChangeInput> {
        self.change.as_deref().map(ChangeInput::from_fields)
    }
}

/// A live later change that stands in the way of a `Refuse` undo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaterChange {
    pub lsn: u64,
    pub actor: String,
    pub action: String,
}

/// Why no plan was made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The target (or rollback point) lies beyond what the store has applied:
    /// wait for it to catch up and plan again.
    #[error("lsn {lsn} is beyond the state store's watermark {watermark}: plan again once the store has caught up")]
    NotApplied { lsn: u64, watermark: u64 },
    #[error("lsn {lsn} is already compensated by lsn {by}")]
    AlreadyCompensated { lsn: u64, by: u64 },
    /// `Refuse` mode: later changes of the same resource are still in effect.
    #[error(
        "lsn {lsn}: later changes of the same resource are not compensated: {}",
        list(later)
    )]
    Conflict { lsn: u64, later: Vec<LaterChange> },
    /// Undoing `lsn` does not replay on the state it would meet (strict
    /// replay failed); `reason` is the replay error.
    #[error("undoing lsn {lsn} does not apply to the state it would meet: {reason}")]
    DoesNotApply { lsn: u64, reason: String },
    #[error(transparent)]
    Store(#[from] StateError),
}

fn list(later: &[LaterChange]) -> String {
    later
        .iter()
        .map(|c| format!("lsn {} ({} {})", c.lsn, c.actor, c.action))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A history row as the planner needs it.
struct Row {
    lsn: u64,
    actor: String,
    action: String,
    kind: ChangeKind,
    /// `None`: rejected.
    applied: Option<Vec<StoredField>>,
    compensates: Option<u64>,
    compensated_by: Option<u64>,
}

impl StateStore {
    /// Plan the undo of record `lsn`, whose event named `resource` (the caller
    /// read it from the log). If the event had no state change there is no
    /// history row at `lsn`: the plan is one step with change `None` and no
    /// later rows are checked. Semantics: the module doc.
    pub fn plan_compensation(
        &self,
        lsn: u64,
        resource: &str,
        mode: UndoMode,
    ) -> Result<Plan, PlanError> {
        let _read = read_lock(&self.commit);
        let based_on = self.planned_at(lsn)?;
        if let Some(by) = self.read_compensator(lsn)? {
            return Err(PlanError::AlreadyCompensated { lsn, by });
        }
        let mut rows = self.rows_from(resource, lsn)?;
        let target = match rows.first() {
            Some(r) if r.lsn == lsn => Some(rows.remove(0)),
            _ => None,
        };
        let mut undo: Vec<&Row> = Vec::new();
        if let Some(target) = &target {
            if mode != UndoMode::Force {
                let live = live_rows(&rows, lsn);
                if mode == UndoMode::Refuse && !live.is_empty() {
                    let later = live
                        .iter()
                        .map(|r| LaterChange {
                            lsn: r.lsn,
                            actor: r.actor.clone(),
                            action: r.action.clone(),
                        })
                        .collect();
                    return Err(PlanError::Conflict { lsn, later });
                }
                undo.extend(live.into_iter().rev());
            }
            undo.push(target);
        }
        let mut steps = undo
            .into_iter()
            .map(|r| self.step(resource, r))
            .collect::<Result<Vec<_>, _>>()?;
        if target.is_none() {
            steps.push(UndoStep {
                undoes: lsn,
                actor: String::new(),
                action: String::new(),
                change: None,
                state_after: None,
            });
        }
        self.predict(based_on, resource, steps)
    }

    /// Plan a rollback of `resource` to its state right after `after_lsn`:
    /// undo every live row with a greater LSN, newest first (a cascade from
    /// the first change after that point; module doc). No steps if there is
    /// none. A point beyond the watermark, or an empty store, is
    /// [`PlanError::NotApplied`]. For a point in time, take `after_lsn` from
    /// [`StateStore::last_lsn_at_or_before_time`].
    pub fn plan_rollback(&self, resource: &str, after_lsn: u64) -> Result<Plan, PlanError> {
        let _read = read_lock(&self.commit);
        let based_on = self.planned_at(after_lsn)?;
        let rows = self.rows_from(resource, after_lsn.saturating_add(1))?;
        let steps = live_rows(&rows, after_lsn)
            .into_iter()
            .rev()
            .map(|r| self.step(resource, r))
            .collect::<Result<Vec<_>, _>>()?;
        self.predict(based_on, resource, steps)
    }

    /// The watermark to plan at, if it covers `lsn`.
    fn planned_at(&self, lsn: u64) -> Result<Watermark, PlanError> {
        match self.read_watermark()? {
            Some(w) if lsn <= w.lsn => Ok(w),
            w => Err(PlanError::NotApplied {
                lsn,
                watermark: w.map_or(0, |w| w.lsn),
            }),
        }
    }

    /// The resource's history rows with `lsn >= from`, with their compensators.
    fn rows_from(&self, resource: &str, from: u64) -> Result<Vec<Row>, StateError> {
        let range = self
            .db
            .range(lsn_key(HISTORY, resource, from)..=lsn_key(HISTORY, resource, u64::MAX));
        let mut rows = Vec::new();
        for kv in range {
            let (key, value) = kv.map_err(|e| self.sled_error("read history", e))?;
            let lsn = lsn_suffix(&key).unwrap_or(0);
            let entry = self.decode_entry(resource, lsn, &value)?;
            rows.push(Row {
                lsn,
                actor: entry.actor,
                action: entry.action,
                kind: entry.kind,
                applied: match entry.result {
                    StoredResult::Applied { fields } => Some(fields),
                    StoredResult::Rejected { .. } => None,
                },
                compensates: entry.compensation.map(|c| c.compensates),
                compensated_by: self.read_compensator(lsn)?,
            });
        }
        Ok(rows)
    }

    fn step(&self, resource: &str, row: &Row) -> Result<UndoStep, StateError> {
        let change = match &row.applied {
            Some(fields) if row.kind != ChangeKind::None && !fields.is_empty() => {
                let fields = self.load_fields(resource, row.lsn, fields.clone())?;
                Some(invert(&fields))
            }
            _ => None,
        };
        Ok(UndoStep {
            undoes: row.lsn,
            actor: row.actor.clone(),
            action: row.action.clone(),
            change,
            state_after: None,
        })
    }

    /// Replay the steps from the state at the watermark, as `apply` will.
    fn predict(
        &self,
        based_on: Watermark,
        resource: &str,
        mut steps: Vec<UndoStep>,
    ) -> Result<Plan, PlanError> {
        let (state_before, _) = self.state_at(resource, u64::MAX)?;
        let mut state = state_before.clone();
        for step in &mut steps {
            if let Some(change) = &step.change {
                state = replay(state, change, Direction::Forward).map_err(|e| {
                    PlanError::DoesNotApply {
                        lsn: step.undoes,
                        reason: e.to_string(),
                    }
                })?;
            }
            step.state_after = state.clone();
        }
        Ok(Plan {
            based_on,
            resource: resource.to_owned(),
            state_before,
            steps,
            state_after: state,
        })
    }
}

/// The live rows among `rows` (all after `point`, ascending), ascending.
fn live_rows(rows: &[Row], point: u64) -> Vec<&Row> {
    // Per row after the point: how many members its chain has after the
    // point. Rows come in ascending order and a compensation undoes an
    // earlier row, so the member it undoes is counted when it is reached.
    let mut members: HashMap<u64, u64> = HashMap::with_capacity(rows.len());
    let mut live = Vec::new();
    for row in rows {
        let n = match (&row.applied, row.compensates) {
            (Some(_), Some(undone)) if undone <= point => 1,
            // No row after the point: an event without a state change, the
            // origin (counted).
            (Some(_), Some(undone)) => members.get(&undone).map_or(2, |n| n + 1),
            // Rejected (it undid nothing), or not a compensation: an origin.
            _ => 1,
        };
        members.insert(row.lsn, n);
        if row.applied.is_some() && row.compensated_by.is_none() && n % 2 == 1 {
            live.push(row);
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(lsn: u64, compensates: Option<u64>, compensated_by: Option<u64>) -> Row {
        Row {
            lsn,
            actor: String::new(),
            action: String::new(),
            kind: ChangeKind::Fields,
            applied: Some(Vec::new()),
            compensates,
            compensated_by,
        }
    }

    fn live(rows: &[Row], point: u64) -> Vec<u64> {
        live_rows(rows, point).iter().map(|r| r.lsn).collect()
    }

    #[test]
    fn parity_rule() {
        // O (11), C undoes O (12): nets out after 10.
        let pair = [row(11, None, Some(12)), row(12, Some(11), None)];
        assert_eq!(live(&pair, 10), Vec::<u64>::new());
        // ... but C is a real change after 11 (it undoes something at 11).
        assert_eq!(live(&pair[1..], 11), [12]);
        // O, C, D (D undoes C): O is in effect again through D.
        let triple = [
            row(11, None, Some(12)),
            row(12, Some(11), Some(13)),
            row(13, Some(12), None),
        ];
        assert_eq!(live(&triple, 10), [13]);
        // A compensation of something at or before the point is live.
        assert_eq!(live(&[row(12, Some(5), None)], 10), [12]);
        // ... unless undone again after the point (a redo, undone): the
        // chain 13, 12 | 5 has two members after 10.
        let redo_undone = [row(12, Some(5), Some(13)), row(13, Some(12), None)];
        assert_eq!(live(&redo_undone, 10), Vec::<u64>::new());
        assert_eq!(live(&redo_undone[1..], 12), [13]);
        // Of an event without a row after the point: nets out.
        assert_eq!(live(&[row(12, Some(11), None)], 10), Vec::<u64>::new());
        // Rejected rows are never live, and end a chain as its origin.
        let mut rejected = row(11, None, None);
        rejected.applied = None;
        assert_eq!(live(&[rejected], 10), Vec::<u64>::new());
        let mut rejected_comp = row(11, Some(3), Some(12));
        rejected_comp.applied = None;
        assert_eq!(
            live(&[rejected_comp, row(12, Some(11), None)], 10),
            Vec::<u64>::new()
        );
    }
}
