//! `Compensate` and `Rollback`: undo by appending (DESIGN.md "Compensation").
//!
//! The state store plans (which changes to undo, their inverses, the state
//! they lead to: `trail_state::StateStore::plan_*`); this module finds the
//! target in the log, builds the compensation records and appends them as
//! one atomic batch. Three things keep it correct while producers keep
//! appending:
//!
//! - **The plan holds when the records land.** It is computed at the state
//!   store's watermark W, and the batch is appended with
//!   `only_if_unchanged(resource, W)`: the writer refuses it if any record
//!   about the resource got an LSN after W. Then the store catches up and
//!   the plan is made again (at most [`PLAN_ATTEMPTS_MAX`] times).
//! - **Once per record, for the log's life.** The record that compensates
//!   LSN T has the event id `trail:compensates:T` ([`compensation_event_id`]),
//!   and event ids are unique per log for its whole life: a second
//!   compensation of T cannot land, also after a restart or a race; the
//!   existing one is looked up by that id (the log's own index, not a
//!   follower) and returned. Producers cannot use the `trail:` prefix.
//! - **Bound to the exact record.** Each compensation names T and T's hash
//!   (body format 2), read from the log here; `trail verify` checks both.

use std::sync::Arc;

use prost::Message;
use tonic::Status;
use trail_index::DerivedLog;
use trail_log::{AppendLimits, EventInput, Log, LogError, Lsn, RecordKind, StoredRecord};
use trail_proto::keys::EventKeys;
use trail_proto::server_view::{CompensateResponse, Record};
use trail_proto::v1::{
    rollback_request, state_change, AutoVerifyResult, CompensateMode, CompensateRequest,
    CompensationNote, Event, FieldChange as FieldChangeProto, FieldChanges, Outcome, ResourceState,
    RollbackRequest, StateChange,
};
use trail_state::{FieldChange, Plan, PlanError, UndoMode};

use super::cache::OpenLog;
use super::query::{read_records_at, wait_for, wait_timeout};
use super::read::record_to_proto;
use super::state::state_status;
use super::LogService;
use crate::status;

/// The prefix of the event ids Trail gives the records it appends itself
/// (defined beside the check that keeps producers from using it).
pub use crate::validate::RESERVED_EVENT_ID_PREFIX;

/// Plans made for one request before it gives up with ABORTED: each retry
/// follows a record about the resource that landed between plan and append.
const PLAN_ATTEMPTS_MAX: usize = 5;

/// Later changes a refusal lists by name; the rest are counted.
const CONFLICTS_LISTED_MAX: usize = 20;

/// The event id of the record that compensates `lsn`.
#[must_use]
pub fn compensation_event_id(lsn: Lsn) -> String {
    format!("{RESERVED_EVENT_ID_PREFIX}compensates:{lsn}")
}

/// Who asks, why, and how: what every record of one request carries.
struct Ask {
    actor: String,
    reason: String,
    trace_id: String,
    dry_run: bool,
    auto_verify: bool,
}

/// What to undo.
enum Goal {
    /// One record (and, with cascade, the later changes in its way).
    Undo {
        target: Lsn,
        resource: String,
        mode: UndoMode,
    },
    /// Every live change of `resource` after `after`.
    Rollback { resource: String, after: Lsn },
}

impl Goal {
    fn resource(&self) -> &str {
        match self {
            Goal::Undo { resource, .. } | Goal::Rollback { resource, .. } => resource,
        }
    }

    fn mode_name(&self) -> &'static str {
        match self {
            Goal::Undo {
                mode: UndoMode::Refuse,
                ..
            } => "compensate",
            Goal::Undo {
                mode: UndoMode::Cascade,
                ..
            } => "cascade",
            Goal::Undo {
                mode: UndoMode::Force,
                ..
            } => "force",
            Goal::Rollback { .. } => "rollback",
        }
    }

    fn requested_lsn(&self) -> Lsn {
        match self {
            Goal::Undo { target, .. } => *target,
            Goal::Rollback { after, .. } => *after,
        }
    }
}

/// Serves one `Compensate`.
pub(super) async fn compensate(
    service: &LogService,
    request: CompensateRequest,
) -> Result<CompensateResponse, Status> {
    let CompensateRequest {
        log,
        lsn,
        event_id,
        expected_hash,
        actor,
        reason,
        mode,
        dry_run,
        auto_verify,
        trace_id,
    } = request;
    let ask = ask(service, actor, reason, trace_id, dry_run, auto_verify)?;
    let mode = match CompensateMode::try_from(mode) {
        Ok(CompensateMode::Refuse) => UndoMode::Refuse,
        Ok(CompensateMode::Cascade) => UndoMode::Cascade,
        Ok(CompensateMode::Force) => UndoMode::Force,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "mode: {mode} is not a known mode (refuse, cascade or force)"
            )))
        }
    };
    let open = service.existing_open_log(&log).await?;
    let target = match (lsn, event_id.is_empty()) {
        (0, true) => {
            return Err(Status::invalid_argument(
                "lsn or event_id: name the record to compensate",
            ))
        }
        (0, false) => find_event(&open.log, &event_id).await?,
        (lsn, true) => Lsn(lsn),
        (_, false) => {
            return Err(Status::invalid_argument(
                "lsn and event_id: give one, not both",
            ))
        }
    };
    let stored = read_record(service, &open.log, target).await?;
    if !expected_hash.is_empty() && expected_hash != stored.hash.0 {
        return Err(Status::failed_precondition(format!(
            "expected_hash: lsn {target} of log {} has hash {}, not {} (a receipt of another log, or of another record?)",
            open.log.name(),
            stored.hash,
            hex::encode(&expected_hash)
        )));
    }
    let resource = event_keys(&stored)?.resource;
    // Already undone? The log's own id index says, also after a restart.
    if let Some(existing) = open
        .log
        .find_event_id(&compensation_event_id(target))
        .await
        .map_err(|error| status::from_log_error(&error))?
    {
        return existing_compensation(service, &open, &resource, existing.lsn).await;
    }
    let goal = Goal::Undo {
        target,
        resource,
        mode,
    };
    run(service, &open, &goal, &ask).await
}

/// Serves one `Rollback`.
pub(super) async fn rollback(
    service: &LogService,
    request: RollbackRequest,
) -> Result<CompensateResponse, Status> {
    let RollbackRequest {
        log,
        resource,
        to,
        actor,
        reason,
        dry_run,
        auto_verify,
        trace_id,
    } = request;
    let ask = ask(service, actor, reason, trace_id, dry_run, auto_verify)?;
    let resource = super::state::resource_name(&resource, service)?.to_owned();
    let open = service.existing_open_log(&log).await?;
    let head = open.log.head().lsn;
    let after = match to {
        None => {
            return Err(Status::invalid_argument(
                "to: name the point to roll back to (to_lsn, to_event_id or to_unix_nanos)",
            ))
        }
        Some(rollback_request::To::ToLsn(lsn)) => {
            if lsn > head.0 {
                return Err(Status::not_found(format!(
                    "to_lsn: {lsn} is beyond the log's head {head}"
                )));
            }
            Lsn(lsn)
        }
        Some(rollback_request::To::ToEventId(event_id)) => find_event(&open.log, &event_id).await?,
        Some(rollback_request::To::ToUnixNanos(at)) => {
            let derived = Arc::clone(open.derived.running()?);
            caught_up(service, &derived, head).await?;
            let resource = resource.clone();
            let found = tokio::task::spawn_blocking(move || {
                derived.state().last_lsn_at_or_before_time(&resource, at)
            })
            .await
            .map_err(|error| Status::internal(format!("state read failed: {error}")))?
            .map_err(|error| state_status(&error))?;
            Lsn(found)
        }
    };
    run(service, &open, &Goal::Rollback { resource, after }, &ask).await
}

/// Checks the fields every request carries.
fn ask(
    service: &LogService,
    actor: String,
    reason: String,
    trace_id: String,
    dry_run: bool,
    auto_verify: bool,
) -> Result<Ask, Status> {
    let limits = &service.shared.limits;
    for (field, value, required, max, key) in [
        (
            "actor",
            &actor,
            true,
            limits.field_bytes_max,
            "field_bytes_max",
        ),
        (
            "reason",
            &reason,
            true,
            limits.reason_bytes_max,
            "reason_bytes_max",
        ),
        (
            "trace_id",
            &trace_id,
            false,
            limits.field_bytes_max,
            "field_bytes_max",
        ),
    ] {
        if required && value.trim().is_empty() {
            return Err(Status::invalid_argument(format!(
                "{field}: must not be empty; a compensation records who asked and why"
            )));
        }
        if value.len() > max {
            return Err(Status::invalid_argument(format!(
                "{field}: is {} bytes; the limit is {max} (limits.{key})",
                value.len()
            )));
        }
    }
    if dry_run && auto_verify {
        return Err(Status::invalid_argument(
            "dry_run and auto_verify: a dry run writes nothing to verify; ask for one",
        ));
    }
    Ok(Ask {
        actor,
        reason,
        trace_id,
        dry_run,
        auto_verify,
    })
}

/// Plans, builds and appends (or, in a dry run, only shows) the records.
async fn run(
    service: &LogService,
    open: &OpenLog,
    goal: &Goal,
    ask: &Ask,
) -> Result<CompensateResponse, Status> {
    let derived = Arc::clone(open.derived.running()?);
    let resource = goal.resource().to_owned();
    // A real run plans at whatever the state store has reached (once it has
    // the target): the append condition refuses the batch if a record about
    // the resource landed after that cut, and then it plans again from the
    // head. A dry run appends nothing, so nothing would catch a stale cut:
    // it plans at the head the log has now.
    let mut plan_from = if ask.dry_run {
        open.log.head().lsn
    } else {
        goal.requested_lsn()
    };
    for _ in 0..PLAN_ATTEMPTS_MAX {
        caught_up(service, &derived, plan_from).await?;
        plan_from = open.log.head().lsn;
        let plan = match make_plan(&derived, goal).await? {
            Ok(plan) => plan,
            Err(PlanError::AlreadyCompensated { by, .. }) => {
                return existing_compensation(service, open, &resource, Lsn(by)).await
            }
            Err(PlanError::NotApplied { .. }) => continue,
            Err(error) => return Err(plan_status(open.log.name().as_str(), error)),
        };
        let events = build_events(service, &open.log, &plan, goal, ask).await?;
        if ask.dry_run {
            return Ok(CompensateResponse {
                dry_run: true,
                already_compensated: false,
                records: events.iter().map(dry_run_record).collect(),
                state: Some(resource_state(&resource, plan.state_after.as_ref())),
                planned_at_lsn: plan.based_on.lsn,
                auto_verify: None,
            });
        }
        if events.is_empty() {
            // A rollback with nothing after its point.
            return Ok(CompensateResponse {
                dry_run: false,
                already_compensated: false,
                records: Vec::new(),
                state: Some(resource_state(&resource, plan.state_after.as_ref())),
                planned_at_lsn: plan.based_on.lsn,
                auto_verify: None,
            });
        }
        let limits = AppendLimits {
            events_per_request_max: service.shared.limits.compensation_records_max,
            event_bytes_max: service.shared.limits.event_bytes_max,
            event_id_bytes_max: service.shared.limits.event_id_bytes_max,
        };
        let append = open
            .log
            .prepare_with_limits(events, true, &limits)
            .map_err(|error| status::from_log_error(&error))?
            .only_if_unchanged(&resource, Lsn(plan.based_on.lsn));
        let landed = async { open.log.submit(append).await?.wait().await }.await;
        let receipts = match landed {
            Ok(receipts) => receipts,
            // A record about the resource landed after the plan's cut:
            // plan again from a store that has it.
            Err(LogError::ResourceChanged { .. }) => continue,
            Err(LogError::EventIdConflict { event_id, lsn }) => {
                if let Goal::Undo { target, .. } = goal {
                    if event_id == compensation_event_id(*target) {
                        // Compensated meanwhile by another request.
                        return existing_compensation(service, open, &resource, lsn).await;
                    }
                }
                // A change of the cascade was compensated meanwhile.
                continue;
            }
            Err(error) => return Err(status::from_log_error(&error)),
        };
        let (first, last) = match (receipts.first(), receipts.last()) {
            (Some(first), Some(last)) => (first.lsn, last.lsn),
            _ => return Err(Status::internal("an append answered no receipts")),
        };
        let landed: Vec<u64> = (first.0..=last.0).collect();
        let records = read_records_at(service, &open.log, &landed).await?;
        let auto_verify = if ask.auto_verify {
            Some(auto_verify(service, &derived, &resource, last, &plan).await?)
        } else {
            None
        };
        return Ok(CompensateResponse {
            dry_run: false,
            already_compensated: false,
            records: records.iter().map(record_to_proto).collect(),
            state: Some(resource_state(&resource, plan.state_after.as_ref())),
            planned_at_lsn: plan.based_on.lsn,
            auto_verify,
        });
    }
    Err(Status::aborted(format!(
        "resource {resource} of log {} kept changing while the compensation was planned ({PLAN_ATTEMPTS_MAX} attempts); nothing was appended, try again",
        open.log.name()
    )))
}

/// Waits (bounded by `limits.index_wait_ms_default`) until the state store
/// has taken in `lsn`.
async fn caught_up(service: &LogService, derived: &DerivedLog, lsn: Lsn) -> Result<(), Status> {
    let timeout = wait_timeout(0, &service.shared.limits)?;
    derived.want_state(lsn.0);
    wait_for(derived.state_progress(), lsn.0, timeout, "state store").await?;
    Ok(())
}

async fn make_plan(
    derived: &Arc<DerivedLog>,
    goal: &Goal,
) -> Result<Result<Plan, PlanError>, Status> {
    let derived = Arc::clone(derived);
    let (resource, undo) = match goal {
        Goal::Undo {
            target,
            resource,
            mode,
        } => (resource.clone(), Some((*target, *mode))),
        Goal::Rollback { resource, .. } => (resource.clone(), None),
    };
    let after = goal.requested_lsn();
    tokio::task::spawn_blocking(move || match undo {
        Some((target, mode)) => derived.state().plan_compensation(target.0, &resource, mode),
        None => derived.state().plan_rollback(&resource, after.0),
    })
    .await
    .map_err(|error| Status::internal(format!("planning failed: {error}")))
}

/// The status a plan that cannot be carried out answers with.
fn plan_status(log: &str, error: PlanError) -> Status {
    match error {
        PlanError::Conflict { lsn, later } => {
            let mut listed: Vec<String> = later
                .iter()
                .take(CONFLICTS_LISTED_MAX)
                .map(|change| format!("lsn {} by {} ({})", change.lsn, change.actor, change.action))
                .collect();
            if later.len() > CONFLICTS_LISTED_MAX {
                listed.push(format!("and {} more", later.len() - CONFLICTS_LISTED_MAX));
            }
            Status::failed_precondition(format!(
                "lsn {lsn} of log {log} has later changes to its resource that are not compensated: {}; compensate them first, cascade (undo them too, newest first) or force (apply the inverse to today's state)",
                listed.join(", ")
            ))
        }
        PlanError::DoesNotApply { lsn, reason } => Status::failed_precondition(format!(
            "the inverse of lsn {lsn} of log {log} no longer applies to today's state: {reason}; nothing was appended"
        )),
        PlanError::AlreadyCompensated { lsn, by } => Status::internal(format!(
            "lsn {lsn} is compensated by lsn {by} (should have been answered)"
        )),
        PlanError::NotApplied { lsn, watermark } => Status::unavailable(format!(
            "the state store has reached lsn {watermark}, not lsn {lsn} yet; try again"
        )),
        PlanError::Store(error) => state_status(&error),
    }
}

/// The events of a plan's steps, in append order.
async fn build_events(
    service: &LogService,
    log: &Arc<Log>,
    plan: &Plan,
    goal: &Goal,
    ask: &Ask,
) -> Result<Vec<EventInput>, Status> {
    let occurred_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
        });
    let action = match goal {
        Goal::Undo { .. } => "trail.compensate",
        Goal::Rollback { .. } => "trail.rollback",
    };
    // The hashes the compensations commit to, read from the log.
    let undone: Vec<u64> = plan.steps.iter().map(|step| step.undoes).collect();
    let targets = read_records_at(service, log, &undone).await?;
    let mut events = Vec::with_capacity(plan.steps.len());
    for (step, target) in plan.steps.iter().zip(&targets) {
        let undone = Lsn(step.undoes);
        let event_id = compensation_event_id(undone);
        let event = Event {
            event_id: event_id.clone(),
            actor: ask.actor.clone(),
            action: action.to_owned(),
            resource: plan.resource.clone(),
            trace_id: ask.trace_id.clone(),
            outcome: Outcome::Success as i32,
            occurred_at_unix_nanos: occurred_at,
            attributes: std::collections::BTreeMap::new(),
            payload: Vec::new(),
            change: step.change.as_ref().map(|fields| field_changes(fields)),
            compensation: Some(CompensationNote {
                reason: ask.reason.clone(),
                mode: goal.mode_name().to_owned(),
                requested_lsn: goal.requested_lsn().0,
            }),
        };
        events.push(
            EventInput {
                kind: RecordKind::Compensation {
                    compensates: undone,
                    compensates_hash: target.hash,
                },
                ..EventInput::new(event_id, event.encode_to_vec())
            }
            .about(&plan.resource),
        );
    }
    Ok(events)
}

fn field_changes(fields: &[FieldChange]) -> StateChange {
    StateChange {
        kind: Some(state_change::Kind::FieldChanges(FieldChanges {
            changes: fields
                .iter()
                .map(|field| FieldChangeProto {
                    path: field.path.clone(),
                    before_json: field.before.as_ref().map(ToString::to_string),
                    after_json: field.after.as_ref().map(ToString::to_string),
                })
                .collect(),
        })),
    }
}

/// A record a dry run would append: the event and kind as they would be
/// stored; what the writer assigns (LSN, time, hashes) unset.
fn dry_run_record(event: &EventInput) -> Record {
    let (compensates, compensates_hash) = match event.kind {
        RecordKind::Compensation {
            compensates,
            compensates_hash,
        } => (compensates.0, compensates_hash.0.to_vec()),
        RecordKind::Event | RecordKind::CompensationV1 { .. } => (0, Vec::new()),
    };
    Record {
        kind: trail_proto::v1::RecordKind::Compensation as i32,
        compensates,
        compensates_hash,
        event: event.encoded_event.clone(),
        ..Record::default()
    }
}

fn resource_state(resource: &str, state: Option<&serde_json::Value>) -> ResourceState {
    ResourceState {
        resource: resource.to_owned(),
        exists: state.is_some(),
        state_json: state.map(ToString::to_string).unwrap_or_default(),
    }
}

/// Reads the state back through the state store once it has the last
/// record, and compares it with the plan's prediction.
async fn auto_verify(
    service: &LogService,
    derived: &Arc<DerivedLog>,
    resource: &str,
    last: Lsn,
    plan: &Plan,
) -> Result<AutoVerifyResult, Status> {
    caught_up(service, derived, last).await?;
    let store = Arc::clone(derived);
    let name = resource.to_owned();
    let answer = tokio::task::spawn_blocking(move || store.state().state(&name, Some(last.0)))
        .await
        .map_err(|error| Status::internal(format!("state read failed: {error}")))?
        .map_err(|error| state_status(&error))?;
    same_as_predicted(
        resource,
        last,
        answer.state.as_ref(),
        plan.state_after.as_ref(),
    )?;
    Ok(AutoVerifyResult {
        matched: true,
        state_lsn: answer.watermark.map_or(last.0, |watermark| watermark.lsn),
    })
}

/// Auto-verify's comparison: INTERNAL with both states when they differ
/// (the records landed; the derived state disagrees with the plan).
fn same_as_predicted(
    resource: &str,
    last: Lsn,
    read_back: Option<&serde_json::Value>,
    predicted: Option<&serde_json::Value>,
) -> Result<(), Status> {
    if read_back == predicted {
        return Ok(());
    }
    let show = |state: Option<&serde_json::Value>| {
        state.map_or_else(|| "absent".to_owned(), ToString::to_string)
    };
    Err(Status::internal(format!(
        "auto-verify failed: the compensation landed (through lsn {last}), but the state of {resource} read back at lsn {last} is {} where the plan predicted {}",
        show(read_back),
        show(predicted)
    )))
}

/// The answer for a target that is already compensated (by `by`): that
/// record, and the resource's state now.
async fn existing_compensation(
    service: &LogService,
    open: &OpenLog,
    resource: &str,
    by: Lsn,
) -> Result<CompensateResponse, Status> {
    let record = read_record(service, &open.log, by).await?;
    let state = match open.derived.running() {
        Ok(derived) => {
            let store = Arc::clone(derived);
            let name = resource.to_owned();
            let answer = tokio::task::spawn_blocking(move || store.state().state(&name, None))
                .await
                .map_err(|error| Status::internal(format!("state read failed: {error}")))?
                .map_err(|error| state_status(&error))?;
            Some(resource_state(resource, answer.state.as_ref()))
        }
        Err(_) => None,
    };
    Ok(CompensateResponse {
        dry_run: false,
        already_compensated: true,
        records: vec![record_to_proto(&record)],
        state,
        planned_at_lsn: 0,
        auto_verify: None,
    })
}

/// The LSN of the event with `event_id`; NOT_FOUND naming the log.
async fn find_event(log: &Log, event_id: &str) -> Result<Lsn, Status> {
    match log.find_event_id(event_id).await {
        Ok(Some(receipt)) => Ok(receipt.lsn),
        Ok(None) => Err(Status::not_found(format!(
            "event_id: no event with id {event_id:?} in log {}",
            log.name()
        ))),
        Err(error) => Err(status::from_log_error(&error)),
    }
}

fn event_keys(stored: &StoredRecord) -> Result<EventKeys, Status> {
    EventKeys::decode(stored.record.event.as_slice()).map_err(|error| {
        Status::failed_precondition(format!(
            "lsn {}: its event does not decode ({error}), so its resource is unknown",
            stored.record.lsn
        ))
    })
}

/// One record, from local disk or (archived) through the archive.
async fn read_record(
    service: &LogService,
    log: &Arc<Log>,
    lsn: Lsn,
) -> Result<StoredRecord, Status> {
    let head = log.head().lsn;
    if lsn == Lsn::ZERO || lsn > head {
        return Err(Status::not_found(format!(
            "lsn: {lsn} is not in log {} (its head is {head})",
            log.name()
        )));
    }
    let mut records = read_records_at(service, log, &[lsn.0]).await?;
    records
        .pop()
        .ok_or_else(|| Status::internal(format!("the log returned no record at lsn {lsn}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use trail_state::LaterChange;

    #[test]
    fn auto_verify_shows_both_states_when_they_differ() {
        let read = serde_json::json!({"status": "paid"});
        let predicted = serde_json::json!({"status": "new"});
        assert!(same_as_predicted("order/1", Lsn(9), Some(&read), Some(&read)).is_ok());
        let status = same_as_predicted("order/1", Lsn(9), Some(&read), Some(&predicted))
            .expect_err("they differ");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(
            status.message(),
            r#"auto-verify failed: the compensation landed (through lsn 9), but the state of order/1 read back at lsn 9 is {"status":"paid"} where the plan predicted {"status":"new"}"#
        );
        let absent = same_as_predicted("order/1", Lsn(9), None, Some(&predicted))
            .expect_err("absent differs");
        assert!(absent.message().contains("read back at lsn 9 is absent"));
    }

    #[test]
    fn a_long_conflict_list_is_cut_and_counted() {
        let later = (1..=25)
            .map(|lsn| LaterChange {
                lsn: lsn + 1,
                actor: format!("a{lsn}"),
                action: "x".into(),
            })
            .collect();
        let status = plan_status("shop", PlanError::Conflict { lsn: 1, later });
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(
            status.message().contains("lsn 21 by a20 (x), and 5 more;"),
            "{}",
            status.message()
        );
        assert!(!status.message().contains("lsn 22 by"));
    }
}
